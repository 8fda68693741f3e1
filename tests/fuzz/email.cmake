# Fuzzing the channel_email plugin's parse path (plugins/channel_email/).
#
# fuzz.email_corpus (any compiler): replays the committed seeds in
# corpus/email/ through the same checks the fuzzer runs; seeds named
# "valid-*" must submit a document, "bad-*" must submit none.
# fuzz.email (needs clang): runs the libFuzzer target for 15 seconds over a
# copy of the seeds kept in the build directory; a crash, or a document
# ingest would refuse, leaves its input next to the binary (crash-*).
#
# Both compile the plugin's sources into the program instead of loading the
# .so, so the code under test carries the fuzzer's instrumentation; the
# submitted documents are checked with common/src/interaction.c.

pkg_check_modules(QM_FUZZ_GMIME REQUIRED IMPORTED_TARGET gmime-3.0)
set(QMESH_EMAIL_DIR ${PROJECT_SOURCE_DIR}/plugins/channel_email)
set(QMESH_EMAIL_PLUGIN_SOURCES
  ${QMESH_EMAIL_DIR}/channel_email.c
  ${QMESH_EMAIL_DIR}/mime_read.c
  ${QMESH_EMAIL_DIR}/html_text.c)
set(QMESH_EMAIL_CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/email)

add_executable(fuzz_email_corpus fuzz_email.c replay_main.c ${QMESH_EMAIL_PLUGIN_SOURCES})
target_compile_definitions(fuzz_email_corpus PRIVATE QM_FUZZ_CORPUS_MAIN)
target_include_directories(fuzz_email_corpus PRIVATE ${QMESH_EMAIL_DIR})
target_link_libraries(fuzz_email_corpus PRIVATE qmesh_common PkgConfig::QM_FUZZ_GMIME PkgConfig::JANSSON)
set_target_properties(fuzz_email_corpus PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
add_test(NAME fuzz.email_corpus COMMAND fuzz_email_corpus ${QMESH_EMAIL_CORPUS})
set_tests_properties(fuzz.email_corpus PROPERTIES LABELS fuzz TIMEOUT 60)

set(QMESH_EMAIL_FUZZ_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_email.c
  ${QMESH_EMAIL_PLUGIN_SOURCES}
  ${QMESH_FUZZ_COMMON}/interaction.c
  ${QMESH_FUZZ_COMMON}/cfgutil.c
  ${QMESH_FUZZ_COMMON}/envelope.c
  ${QMESH_FUZZ_COMMON}/err.c)
set(QMESH_EMAIL_FUZZ_BIN "")

if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
  add_executable(fuzz_email ${QMESH_EMAIL_FUZZ_SOURCES})
  target_include_directories(fuzz_email PRIVATE ${QMESH_FUZZ_COMMON} ${PROJECT_SOURCE_DIR}/common/include)
  target_compile_options(fuzz_email PRIVATE ${QMESH_FUZZ_FLAGS})
  target_link_options(fuzz_email PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_email PRIVATE PkgConfig::QM_FUZZ_GMIME PkgConfig::JANSSON PkgConfig::MSGPACK
                        PkgConfig::SODIUM PkgConfig::LIBCONFIG Threads::Threads)
  set_target_properties(fuzz_email PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set(QMESH_EMAIL_FUZZ_BIN $<TARGET_FILE:fuzz_email>)
else()
  find_program(QMESH_CLANG NAMES clang clang-16 clang-15 clang-14)
  if(QMESH_CLANG)
    set(QMESH_EMAIL_FUZZ_OUT ${CMAKE_CURRENT_BINARY_DIR}/fuzz_email)
    set(QMESH_EMAIL_FUZZ_WERROR "")
    if(QMESH_WERROR)
      set(QMESH_EMAIL_FUZZ_WERROR -Werror)
    endif()
    add_custom_command(
      OUTPUT ${QMESH_EMAIL_FUZZ_OUT}
      COMMAND ${QMESH_CLANG} -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter
              ${QMESH_EMAIL_FUZZ_WERROR} ${QMESH_FUZZ_FLAGS}
              -I${QMESH_FUZZ_COMMON} -I${PROJECT_SOURCE_DIR}/common/include
              ${QM_FUZZ_GMIME_CFLAGS} ${JANSSON_CFLAGS} ${MSGPACK_CFLAGS} ${SODIUM_CFLAGS} ${LIBCONFIG_CFLAGS}
              ${QMESH_EMAIL_FUZZ_SOURCES}
              ${QM_FUZZ_GMIME_LDFLAGS} ${JANSSON_LDFLAGS} ${MSGPACK_LDFLAGS} ${SODIUM_LDFLAGS} ${LIBCONFIG_LDFLAGS} -lpthread
              -o ${QMESH_EMAIL_FUZZ_OUT}
      DEPENDS ${QMESH_EMAIL_FUZZ_SOURCES} ${QMESH_EMAIL_DIR}/email_internal.h
              ${QMESH_FUZZ_COMMON}/interaction.h ${QMESH_FUZZ_COMMON}/cfgutil.h ${QMESH_FUZZ_COMMON}/envelope.h ${QMESH_FUZZ_COMMON}/err.h
      COMMENT "Building libFuzzer target fuzz_email with ${QMESH_CLANG}"
      VERBATIM)
    add_custom_target(fuzz_email ALL DEPENDS ${QMESH_EMAIL_FUZZ_OUT})
    set(QMESH_EMAIL_FUZZ_BIN ${QMESH_EMAIL_FUZZ_OUT})
  else()
    message(STATUS "clang not found: libFuzzer target fuzz_email and test fuzz.email skipped")
  endif()
endif()

if(QMESH_EMAIL_FUZZ_BIN)
  set(QMESH_EMAIL_FUZZ_WORK ${CMAKE_CURRENT_BINARY_DIR}/corpus/email)
  add_test(NAME fuzz.email
    COMMAND sh -c "mkdir -p \"$1\" && cp \"$2\"/* \"$1\"/ && exec \"$3\" -max_total_time=15 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=\"$4\"/ \"$1\""
            fuzz.email ${QMESH_EMAIL_FUZZ_WORK} ${QMESH_EMAIL_CORPUS} ${QMESH_EMAIL_FUZZ_BIN} ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(fuzz.email PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
