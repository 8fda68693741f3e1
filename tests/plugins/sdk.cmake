# plugins.sdk_out_of_tree: the partner SDK as partners get it. The project is
# installed into a temporary prefix, examples/channel-csv is copied out of the
# tree and built there against that prefix only (pkg-config qmesh-plugin),
# with CMake and with make, and the result must pass `qmesh plugin check` and
# parse its sample with `qmesh channel parse`. See test_sdk_example.sh.
include(GNUInstallDirs)
if(TARGET qmesh)
  add_test(NAME plugins.sdk_out_of_tree
    COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_sdk_example.sh
      ${CMAKE_COMMAND} ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR} $<TARGET_FILE:qmesh> ${CMAKE_INSTALL_LIBDIR})
  set_tests_properties(plugins.sdk_out_of_tree PROPERTIES LABELS plugins TIMEOUT 300)
endif()
