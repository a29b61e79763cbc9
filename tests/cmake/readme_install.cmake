# cmake -P script: runs the README's "library only" install lines exactly as
# a user pastes them, then builds the find_package consumer against the
# prefix they installed to.
#
# The lines are read from README.md between `<!-- library-only-install -->`
# and `<!-- /library-only-install -->`, so the README and this test cannot
# drift apart. Each line runs through `sh -c` in a fresh copy of the source
# tree (the lines write build/lib inside it) with HOME pointing into the
# scratch folder, so a prefix under "$HOME" lands in the build tree too.
#
# Inputs: SOURCE_DIR (keysem's source tree), WORK_DIR (scratch folder, wiped
#         first), SH (a POSIX shell), GENERATOR and MAKE_PROGRAM (for the
#         consumer), CXX, CXX_FLAGS, EXE_LINKER_FLAGS, PREFIX_PATH (where
#         this build found Boost and xxHash, ';'-separated).

foreach(input SOURCE_DIR WORK_DIR SH)
    if(NOT ${input})
        message(FATAL_ERROR "readme_install.cmake: ${input} is not set")
    endif()
endforeach()

# --- the README's lines ---------------------------------------------------
file(READ "${SOURCE_DIR}/README.md" readme)
string(FIND "${readme}" "<!-- library-only-install -->" begin)
string(FIND "${readme}" "<!-- /library-only-install -->" end)
if(begin EQUAL -1 OR end EQUAL -1 OR end LESS begin)
    message(FATAL_ERROR "README.md has no <!-- library-only-install --> ... "
        "<!-- /library-only-install --> block")
endif()
math(EXPR length "${end} - ${begin}")
string(SUBSTRING "${readme}" ${begin} ${length} block)
# Semicolons would split the list below; the block is shell, not CMake.
string(REPLACE ";" "\\;" block "${block}")
string(REPLACE "\n" ";" block_lines "${block}")
set(commands "")
set(in_fence FALSE)
foreach(line IN LISTS block_lines)
    if(line MATCHES "^```")
        if(in_fence)
            set(in_fence FALSE)
        else()
            set(in_fence TRUE)
        endif()
    elseif(in_fence AND NOT line MATCHES "^[ \t]*(#.*)?$")
        list(APPEND commands "${line}")
    endif()
endforeach()
list(LENGTH commands command_count)
if(command_count EQUAL 0)
    message(FATAL_ERROR "the README's library-only-install block holds no command")
endif()

# --- a fresh user: a copy of the source tree and an empty HOME -----------
file(REMOVE_RECURSE "${WORK_DIR}")
set(source_copy "${WORK_DIR}/keysem")
set(home "${WORK_DIR}/home")
file(MAKE_DIRECTORY "${source_copy}" "${home}")
# Everything a clone has, minus .git and build trees. A build tree inside
# the source tree (this one, perhaps) must not be copied into itself.
file(GLOB entries LIST_DIRECTORIES true "${SOURCE_DIR}/*" "${SOURCE_DIR}/.*")
foreach(entry IN LISTS entries)
    get_filename_component(name "${entry}" NAME)
    string(FIND "${WORK_DIR}/" "${entry}/" contains_work_dir)
    if(name MATCHES "^(\\.|\\.\\.|\\.git|build.*)$" OR contains_work_dir EQUAL 0)
        continue()
    endif()
    file(COPY "${entry}" DESTINATION "${source_copy}")
endforeach()

set(ENV{HOME} "${home}")
# Only the environment says which compiler and where the dependencies are;
# the command lines stay the README's.
if(CXX)
    set(ENV{CXX} "${CXX}")
endif()
set(ENV{CXXFLAGS} "${CXX_FLAGS}")
set(ENV{LDFLAGS} "${EXE_LINKER_FLAGS}")
if(PREFIX_PATH)
    string(REPLACE ";" ":" env_prefix_path "${PREFIX_PATH}")
    set(ENV{CMAKE_PREFIX_PATH} "${env_prefix_path}")
endif()

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc COMMAND_ECHO STDOUT)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc})")
    endif()
endfunction()

# The prefix the README installs to, as the shell expands it. It must lie in
# the scratch folder: this test never installs anywhere else.
set(prefix "")
foreach(command IN LISTS commands)
    if(command MATCHES "cmake --install .* --prefix[ =]+(\"[^\"]*\"|'[^']*'|[^ ]+)")
        execute_process(COMMAND "${SH}" -c "printf '%s' ${CMAKE_MATCH_1}"
            OUTPUT_VARIABLE prefix RESULT_VARIABLE rc)
    endif()
endforeach()
if(NOT prefix)
    message(FATAL_ERROR "no `cmake --install ... --prefix <dir>` in the README's block")
endif()
string(FIND "${prefix}/" "${home}/" prefix_in_home)
if(NOT prefix_in_home EQUAL 0)
    message(FATAL_ERROR "the README installs to ${prefix}, outside \$HOME; "
        "this test only installs into a scratch HOME")
endif()

foreach(command IN LISTS commands)
    message(STATUS "README: ${command}")
    execute_process(COMMAND "${SH}" -c "${command}"
        WORKING_DIRECTORY "${source_copy}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "the README's line failed (${rc}): ${command}")
    endif()
endforeach()

# The library-only build must not have looked for the test and benchmark
# frameworks, nor turned warnings into errors.
file(GLOB caches "${source_copy}/build/*/CMakeCache.txt")
if(NOT caches)
    message(FATAL_ERROR "the README's lines left no build tree under build/")
endif()
foreach(cache IN LISTS caches)
    file(STRINGS "${cache}" unwanted REGEX "^(doctest_DIR|benchmark_DIR|KEYSEM_WERROR:BOOL=ON)")
    if(unwanted)
        message(FATAL_ERROR "${cache}: the library-only build needed ${unwanted}")
    endif()
endforeach()

# --- the find_package consumer against that prefix ------------------------
set(consumer_build "${WORK_DIR}/consumer")
set(consumer_prefix_path "${prefix}" ${PREFIX_PATH})
set(generator_args "")
if(GENERATOR)
    list(APPEND generator_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
    list(APPEND generator_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/cmake/find_package" -B "${consumer_build}"
    ${generator_args}
    "-DCMAKE_PREFIX_PATH=${consumer_prefix_path}"
    # Only the installed prefix may provide keysem.
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
run("${CMAKE_COMMAND}" --build "${consumer_build}")
file(STRINGS "${consumer_build}/CMakeCache.txt" keysem_dir REGEX "^keysem_DIR:")
string(FIND "${keysem_dir}" "${prefix}/" from_prefix)
if(from_prefix EQUAL -1)
    message(FATAL_ERROR "the consumer found keysem elsewhere: ${keysem_dir}")
endif()
run("${consumer_build}/keysem_consumer")
