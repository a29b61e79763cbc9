# cmake/keysem_header_tests.cmake — included once from the top-level
# CMakeLists.txt, after the unit and stress tests.
#
# 1. Header tests (with KEYSEM_BUILD_TESTS): every installed header compiles
#    on its own. For each include/keysem/**.hpp a translation unit that
#    includes only that header is generated from tests/headers/, and the
#    ctest test header.<path> compiles it with -Wall -Wextra -Wpedantic
#    -Werror (whatever KEYSEM_WERROR says) plus this build's own flags.
#    The compiler is run directly, with -fsyntax-only: each test is
#    independent of the build tree's state and of the other tests, so
#    `ctest -j` runs them side by side.
#
# 2. Example scripts (with KEYSEM_BUILD_EXAMPLES): every
#    examples/<name>/<what>_test.sh becomes the ctest test
#    example.<name>.<what>, run with the path of keysem_example_<name> as its
#    argument. Exit status 77 means "skipped" (a tool such as curl is missing).

# The command line below is GCC/Clang's; other compilers skip these tests.
if(KEYSEM_BUILD_TESTS AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    file(GLOB_RECURSE keysem_installed_headers CONFIGURE_DEPENDS
        RELATIVE "${PROJECT_SOURCE_DIR}/include"
        "${PROJECT_SOURCE_DIR}/include/keysem/*.hpp")

    # The flags a consumer's build would add: this build's CMAKE_CXX_FLAGS
    # (sanitizers, BOOST_ASIO_DISABLE_STD_ATOMIC for TSan), the build type's
    # flags, C++20, keysem's include directory and Boost's (unless the
    # compiler searches it anyway: -isystem /usr/include breaks
    # #include_next in libstdc++).
    string(TOUPPER "${CMAKE_BUILD_TYPE}" keysem_build_type)
    separate_arguments(keysem_header_test_flags NATIVE_COMMAND
        "${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_${keysem_build_type}}")
    list(APPEND keysem_header_test_flags
        ${CMAKE_CXX20_STANDARD_COMPILE_OPTION}
        -Wall -Wextra -Wpedantic -Werror
        "-I${PROJECT_SOURCE_DIR}/include")
    get_target_property(keysem_boost_include_dirs Boost::headers INTERFACE_INCLUDE_DIRECTORIES)
    foreach(dir IN LISTS keysem_boost_include_dirs)
        if(dir AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
            list(APPEND keysem_header_test_flags -isystem "${dir}")
        endif()
    endforeach()

    foreach(KEYSEM_HEADER IN LISTS keysem_installed_headers)
        string(MAKE_C_IDENTIFIER "${KEYSEM_HEADER}" header_id)
        set(header_tu "${PROJECT_BINARY_DIR}/header_tests/${header_id}.cpp")
        configure_file("${PROJECT_SOURCE_DIR}/tests/headers/header_test.cpp.in" "${header_tu}" @ONLY)
        add_test(NAME header.${KEYSEM_HEADER}
            COMMAND "${CMAKE_CXX_COMPILER}" ${keysem_header_test_flags} -fsyntax-only "${header_tu}")
        set_tests_properties(header.${KEYSEM_HEADER} PROPERTIES TIMEOUT 60 LABELS header)
    endforeach()
endif()

if(KEYSEM_BUILD_EXAMPLES)
    find_program(KEYSEM_BASH bash REQUIRED)
    file(GLOB keysem_example_scripts CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/examples/*/*_test.sh")
    foreach(script IN LISTS keysem_example_scripts)
        get_filename_component(script_dir "${script}" DIRECTORY)
        get_filename_component(example_name "${script_dir}" NAME)
        get_filename_component(script_stem "${script}" NAME_WE)
        string(REGEX REPLACE "_test$" "" script_stem "${script_stem}")
        # Evaluated at generation time: the example target may be defined
        # further down the top-level CMakeLists.txt.
        add_test(NAME example.${example_name}.${script_stem}
            COMMAND "${KEYSEM_BASH}" "${script}" "$<TARGET_FILE:keysem_example_${example_name}>")
        set_tests_properties(example.${example_name}.${script_stem} PROPERTIES
            TIMEOUT 60 LABELS example SKIP_RETURN_CODE 77)
    endforeach()
endif()
