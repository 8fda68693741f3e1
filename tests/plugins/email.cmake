# plugins.channel_email: the e-mail channel plugin (plugins/channel_email/)
# loaded through the real loader and fed crafted messages; every document it
# submits must pass qm_interaction_normalize. plugins.channel_email_check
# runs `qmesh plugin check` on it with plugins/channel_email/check.cfg.
if(TARGET channel_email)
  pkg_check_modules(QM_EMAIL_GLIB REQUIRED IMPORTED_TARGET glib-2.0)
  add_executable(plugins_test_channel_email ${CMAKE_CURRENT_SOURCE_DIR}/test_channel_email.c)
  set_target_properties(plugins_test_channel_email PROPERTIES
    OUTPUT_NAME test_channel_email
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/plugins)
  target_link_libraries(plugins_test_channel_email PRIVATE qmesh_common PkgConfig::CMOCKA PkgConfig::QM_EMAIL_GLIB)
  target_compile_definitions(plugins_test_channel_email PRIVATE
    QMESH_SOURCE_DIR="${PROJECT_SOURCE_DIR}" QMESH_BINARY_DIR="${CMAKE_BINARY_DIR}")
  add_dependencies(plugins_test_channel_email channel_email)
  add_test(NAME plugins.channel_email COMMAND plugins_test_channel_email)
  set_tests_properties(plugins.channel_email PROPERTIES LABELS plugins TIMEOUT 120)

  if(TARGET qmesh)
    add_test(NAME plugins.channel_email_check
      COMMAND qmesh plugin check --settings ${PROJECT_SOURCE_DIR}/plugins/channel_email/check.cfg
              $<TARGET_FILE:channel_email>)
    set_tests_properties(plugins.channel_email_check PROPERTIES LABELS plugins TIMEOUT 120)
  endif()
endif()
