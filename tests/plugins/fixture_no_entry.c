/*
 * fixture_no_entry.c: a shared object that is not a qmesh plugin: it exports
 * a function with a near-miss name, not `qmesh_plugin_v1`.
 */
#include <qmesh/plugin.h>

QMESH_EXPORT int qmesh_plugin(void);

QMESH_EXPORT int qmesh_plugin(void) { return 1; }
