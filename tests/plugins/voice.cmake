# plugins.channel_voice_file: the voice recording plugin driven through the
# loader with a fake context whose store_media writes into a real media
# store; the test generates its recordings with libsndfile. When the core's
# document normalizer (common/src/interaction.c) is part of the build, every
# submitted document must also pass it. plugins.channel_voice_file_check runs
# `qmesh plugin check` on the built plugin.
pkg_check_modules(VOICE_TEST_SNDFILE REQUIRED IMPORTED_TARGET sndfile)

add_executable(plugins_test_channel_voice ${CMAKE_CURRENT_LIST_DIR}/test_channel_voice.c)
set_target_properties(plugins_test_channel_voice PROPERTIES
  OUTPUT_NAME test_channel_voice
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/plugins)
target_link_libraries(plugins_test_channel_voice PRIVATE
  qmesh_common PkgConfig::CMOCKA PkgConfig::VOICE_TEST_SNDFILE m)
target_compile_definitions(plugins_test_channel_voice PRIVATE
  QMESH_SOURCE_DIR="${PROJECT_SOURCE_DIR}" QMESH_BINARY_DIR="${CMAKE_BINARY_DIR}"
  VOICE_PLUGIN="$<TARGET_FILE:channel_voice_file>")
if(EXISTS ${PROJECT_SOURCE_DIR}/common/src/interaction.c)
  target_compile_definitions(plugins_test_channel_voice PRIVATE QM_TEST_NORMALIZE=1)
endif()
add_dependencies(plugins_test_channel_voice channel_voice_file)
add_test(NAME plugins.channel_voice_file COMMAND plugins_test_channel_voice)
set_tests_properties(plugins.channel_voice_file PROPERTIES LABELS plugins TIMEOUT 120)

if(TARGET qmesh)
  add_test(NAME plugins.channel_voice_file_check
    COMMAND qmesh plugin check --kind channel $<TARGET_FILE:channel_voice_file>)
  set_tests_properties(plugins.channel_voice_file_check PROPERTIES LABELS plugins TIMEOUT 120)
endif()
