# cmake -P script: builds find_package/main.cpp with nothing but the flags
# from the installed keysem.pc, the way a Makefile user would.
#
# Inputs: PKG_CONFIG_EXECUTABLE, PC_DIR (installed .../pkgconfig), CXX,
#         SOURCE (main.cpp), BINARY (program to produce and run).

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc COMMAND_ECHO STDOUT)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc})")
    endif()
endfunction()

set(ENV{PKG_CONFIG_PATH} "${PC_DIR}:$ENV{PKG_CONFIG_PATH}")
# No --static on purpose: keysem is always static, so the plain query must
# already name xxHash.
execute_process(
    COMMAND "${PKG_CONFIG_EXECUTABLE}" --cflags --libs keysem
    OUTPUT_VARIABLE flags
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config cannot resolve keysem from ${PC_DIR}")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")

get_filename_component(binary_dir "${BINARY}" DIRECTORY)
file(MAKE_DIRECTORY "${binary_dir}")
# The .pc file cannot say "C++20", so the user passes it.
run("${CXX}" -std=c++20 "${SOURCE}" -o "${BINARY}" ${flags})
run("${BINARY}")
