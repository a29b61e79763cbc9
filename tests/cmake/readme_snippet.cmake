# cmake -P script: checks that a code block of README.md is, line for line,
# the code an example compiles, so the README shows only code that builds
# and runs.
#
# Inputs: README (README.md), MARKER (the block sits between
#         `<!-- MARKER -->` and `<!-- /MARKER -->`), SOURCE (the example's
#         main.cpp, where the same code sits between
#         "// The README's snippet, verbatim." and "// End of the README's snippet.").

function(extract text begin_marker end_marker out)
    string(FIND "${text}" "${begin_marker}" begin)
    string(FIND "${text}" "${end_marker}" end)
    if(begin EQUAL -1 OR end EQUAL -1 OR end LESS begin)
        message(FATAL_ERROR "no `${begin_marker}` ... `${end_marker}` in the file")
    endif()
    string(LENGTH "${begin_marker}" skip)
    math(EXPR begin "${begin} + ${skip}")
    math(EXPR length "${end} - ${begin}")
    string(SUBSTRING "${text}" ${begin} ${length} part)
    set(${out} "${part}" PARENT_SCOPE)
endfunction()

file(READ "${README}" readme)
extract("${readme}" "<!-- ${MARKER} -->" "<!-- /${MARKER} -->" block)
# Drop the Markdown fence lines.
string(REGEX REPLACE "\n```[a-z]*" "" block "${block}")
string(STRIP "${block}" block)

file(READ "${SOURCE}" source)
extract("${source}" "// The README's snippet, verbatim." "// End of the README's snippet." code)
string(STRIP "${code}" code)

if(NOT block STREQUAL code)
    file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/readme_${MARKER}.txt" "${block}\n")
    file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/source_${MARKER}.txt" "${code}\n")
    message(FATAL_ERROR "README.md's `${MARKER}` block differs from ${SOURCE}; compare "
        "readme_${MARKER}.txt and source_${MARKER}.txt in ${CMAKE_CURRENT_BINARY_DIR}")
endif()
message(STATUS "README.md's `${MARKER}` block is the code of ${SOURCE}")
