# cmake/keysem_compile_fail_tests.cmake — included once from the top-level
# CMakeLists.txt, next to the header tests.
#
# Compile-fail tests (with KEYSEM_BUILD_TESTS): every tests/compile_fail/*.cpp
# is a program keysem must reject at compile time with one of its own
# static_asserts. The ctest test compile_fail.<name> runs the compiler with
# -fsyntax-only on it and passes when the output names keysem's diagnostic
# ("keysem: ... non-owning ..."): a failure for any other reason (a typo, a
# missing header) does not count, and neither does a clean compile.

# The command line below is GCC/Clang's; other compilers skip these tests.
if(KEYSEM_BUILD_TESTS AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    file(GLOB keysem_compile_fail_sources CONFIGURE_DEPENDS
        "${PROJECT_SOURCE_DIR}/tests/compile_fail/*.cpp")

    # As for the header tests: this build's flags, C++20, keysem's include
    # directory and Boost's (unless the compiler searches it anyway).
    string(TOUPPER "${CMAKE_BUILD_TYPE}" keysem_compile_fail_build_type)
    separate_arguments(keysem_compile_fail_flags NATIVE_COMMAND
        "${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_${keysem_compile_fail_build_type}}")
    list(APPEND keysem_compile_fail_flags
        ${CMAKE_CXX20_STANDARD_COMPILE_OPTION}
        "-I${PROJECT_SOURCE_DIR}/include")
    get_target_property(keysem_compile_fail_boost_dirs Boost::headers INTERFACE_INCLUDE_DIRECTORIES)
    foreach(dir IN LISTS keysem_compile_fail_boost_dirs)
        if(dir AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
            list(APPEND keysem_compile_fail_flags -isystem "${dir}")
        endif()
    endforeach()

    foreach(source IN LISTS keysem_compile_fail_sources)
        get_filename_component(name "${source}" NAME_WE)
        add_test(NAME compile_fail.${name}
            COMMAND "${CMAKE_CXX_COMPILER}" ${keysem_compile_fail_flags} -fsyntax-only "${source}")
        set_tests_properties(compile_fail.${name} PROPERTIES
            TIMEOUT 60
            LABELS compile_fail
            PASS_REGULAR_EXPRESSION "keysem: .*non-owning")
    endforeach()
endif()
