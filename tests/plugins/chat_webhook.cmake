# The chat and webhook channel plugins (plugins/channel_chat_json,
# plugins/channel_webhook), included from tests/plugins/CMakeLists.txt.
#
# plugins.channel_chat_json and plugins.channel_webhook load the built plugin
# through the real loader and drive it with a fake channel context (cmocka,
# test_channel_chat.c and test_channel_webhook.c, which share the fake host and
# context in channel_harness.c). When the interaction
# validator (common/src/interaction.c) is part of qmesh_common, every document
# the plugins submit is also run through it, as ingest would.
# plugins.channel_chat_json_check and plugins.channel_webhook_check run
# `qmesh plugin check` on them, as a partner's CI would.

set(QMESH_CHAT_WEBHOOK_TESTS
  channel_chat_json test_channel_chat
  channel_webhook test_channel_webhook)
set(QMESH_CHAT_WEBHOOK_DEFS)
if(EXISTS ${PROJECT_SOURCE_DIR}/common/src/interaction.c)
  list(APPEND QMESH_CHAT_WEBHOOK_DEFS QM_HAVE_INTERACTION)
endif()

foreach(pair RANGE 0 2 2)
  list(GET QMESH_CHAT_WEBHOOK_TESTS ${pair} plugin)
  math(EXPR next "${pair} + 1")
  list(GET QMESH_CHAT_WEBHOOK_TESTS ${next} test)
  if(NOT TARGET ${plugin})
    message(STATUS "plugin ${plugin} not built: test plugins.${plugin} skipped")
    continue()
  endif()
  add_executable(plugins_${test} ${CMAKE_CURRENT_SOURCE_DIR}/${test}.c ${CMAKE_CURRENT_SOURCE_DIR}/channel_harness.c)
  set_target_properties(plugins_${test} PROPERTIES
    OUTPUT_NAME ${test}
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/plugins)
  target_link_libraries(plugins_${test} PRIVATE qmesh_common PkgConfig::CMOCKA PkgConfig::JANSSON PkgConfig::LIBCONFIG)
  target_compile_definitions(plugins_${test} PRIVATE
    QMESH_SOURCE_DIR="${PROJECT_SOURCE_DIR}" QMESH_BINARY_DIR="${CMAKE_BINARY_DIR}"
    QMESH_PLUGIN_PATH="$<TARGET_FILE:${plugin}>" ${QMESH_CHAT_WEBHOOK_DEFS})
  add_dependencies(plugins_${test} ${plugin})
  add_test(NAME plugins.${plugin} COMMAND plugins_${test})
  set_tests_properties(plugins.${plugin} PROPERTIES LABELS plugins TIMEOUT 120)
endforeach()

# The conformance checker, with the settings each plugin needs: chat_json
# runs on its defaults, the webhook needs a path and a mapping.
if(TARGET qmesh)
  set(QMESH_WEBHOOK_CHECK_CFG ${CMAKE_CURRENT_BINARY_DIR}/channel_webhook_check.cfg)
  file(WRITE ${QMESH_WEBHOOK_CHECK_CFG}
    "# Written by tests/plugins/chat_webhook.cmake for plugins.channel_webhook_check.\n"
    "http_path = \"/v1/webhook/acme\";\n"
    "tenant = \"acme\";\n"
    "map = [\"external_id=/conversation/id\", \"agent.id=/agent/email\", \"started_at=/conversation/started\",\n"
    "       \"turns=/messages\"];\n"
    "turn_map = [\"speaker=/from/role\", \"text=/body\", \"ts_ms=/offset_ms\"];\n"
    "speaker_values = [\"agent=operator,staff\", \"customer=visitor,user\"];\n"
    "started_at_format = \"unix_ms\";\n")
  if(TARGET channel_chat_json)
    add_test(NAME plugins.channel_chat_json_check
      COMMAND qmesh plugin check --kind channel $<TARGET_FILE:channel_chat_json>)
    set_tests_properties(plugins.channel_chat_json_check PROPERTIES LABELS plugins TIMEOUT 120)
  endif()
  if(TARGET channel_webhook)
    add_test(NAME plugins.channel_webhook_check
      COMMAND qmesh plugin check --kind channel --settings ${QMESH_WEBHOOK_CHECK_CFG} $<TARGET_FILE:channel_webhook>)
    set_tests_properties(plugins.channel_webhook_check PROPERTIES LABELS plugins TIMEOUT 120)
  endif()
endif()
