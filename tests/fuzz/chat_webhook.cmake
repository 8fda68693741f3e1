# Fuzzing the chat and webhook channel plugins, included from
# tests/fuzz/CMakeLists.txt and built the way fuzz_envelope is.
#
# fuzz.chat_json_corpus, fuzz.webhook_corpus (any compiler): replay the seeds
# in corpus/chat_json/ and corpus/webhook/ through the same checks the
# fuzzers run, and check that seeds named valid-* are accepted whole and
# bad-* are not.
# fuzz.chat_json, fuzz.webhook (need clang): run the libFuzzer targets for 15
# seconds over copies of the seeds kept in the build directory.
#
# The plugin's source is compiled into each program (it is reached only
# through its descriptor), so the code under test carries the fuzzer's
# instrumentation; neither links qmesh_common, as no plugin does. Both
# plugins compile plugins/common/json_input.c in, and so do their fuzzers.

foreach(which chat_json webhook)
  set(plugin channel_${which})
  set(harness ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_${which}.c)
  set(plugin_src ${PROJECT_SOURCE_DIR}/plugins/${plugin}/${plugin}.c
                 ${PROJECT_SOURCE_DIR}/plugins/common/json_input.c)
  set(corpus ${CMAKE_CURRENT_SOURCE_DIR}/corpus/${which})
  if(NOT EXISTS ${PROJECT_SOURCE_DIR}/plugins/${plugin}/${plugin}.c)
    continue()
  endif()

  add_executable(fuzz_${which}_corpus ${harness} ${plugin_src} ${CMAKE_CURRENT_SOURCE_DIR}/replay_main.c)
  target_compile_definitions(fuzz_${which}_corpus PRIVATE QM_FUZZ_CORPUS_MAIN)
  target_include_directories(fuzz_${which}_corpus PRIVATE ${PROJECT_SOURCE_DIR}/common/include
                             ${PROJECT_SOURCE_DIR}/plugins/common)
  target_link_libraries(fuzz_${which}_corpus PRIVATE PkgConfig::JANSSON m)
  set_target_properties(fuzz_${which}_corpus PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz.${which}_corpus COMMAND fuzz_${which}_corpus ${corpus})
  set_tests_properties(fuzz.${which}_corpus PROPERTIES LABELS fuzz TIMEOUT 60)

  set(fuzz_bin "")
  if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
    add_executable(fuzz_${which} ${harness} ${plugin_src})
    target_include_directories(fuzz_${which} PRIVATE ${PROJECT_SOURCE_DIR}/common/include
                             ${PROJECT_SOURCE_DIR}/plugins/common)
    target_compile_options(fuzz_${which} PRIVATE ${QMESH_FUZZ_FLAGS})
    target_link_options(fuzz_${which} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_${which} PRIVATE PkgConfig::JANSSON m)
    set_target_properties(fuzz_${which} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
    set(fuzz_bin $<TARGET_FILE:fuzz_${which}>)
  elseif(QMESH_CLANG)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/fuzz_${which})
    set(werror "")
    if(QMESH_WERROR)
      set(werror -Werror)
    endif()
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${QMESH_CLANG} -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter ${werror}
              ${QMESH_FUZZ_FLAGS} -I${PROJECT_SOURCE_DIR}/common/include
              -I${PROJECT_SOURCE_DIR}/plugins/common ${JANSSON_CFLAGS}
              ${harness} ${plugin_src}
              ${JANSSON_LDFLAGS} -lm
              -o ${out}
      DEPENDS ${harness} ${plugin_src} ${PROJECT_SOURCE_DIR}/plugins/common/json_input.h
              ${PROJECT_SOURCE_DIR}/common/include/qmesh/plugin.h
              ${PROJECT_SOURCE_DIR}/common/include/qmesh/channel.h
      COMMENT "Building libFuzzer target fuzz_${which} with ${QMESH_CLANG}"
      VERBATIM)
    add_custom_target(fuzz_${which} ALL DEPENDS ${out})
    set(fuzz_bin ${out})
  else()
    message(STATUS "clang not found: libFuzzer target fuzz_${which} and test fuzz.${which} skipped")
  endif()

  if(fuzz_bin)
    set(work ${CMAKE_CURRENT_BINARY_DIR}/corpus/${which})
    add_test(NAME fuzz.${which}
      COMMAND sh -c "mkdir -p \"$1\" && cp \"$2\"/* \"$1\"/ && exec \"$3\" -max_total_time=15 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=\"$4\"/ \"$1\""
              fuzz.${which} ${work} ${corpus} ${fuzz_bin} ${CMAKE_CURRENT_BINARY_DIR})
    set_tests_properties(fuzz.${which} PROPERTIES LABELS fuzz TIMEOUT 120)
  endif()
endforeach()
