/*
 * fixture_small_desc.c: a descriptor whose struct_size stops before `ops`,
 * as if built from a truncated or hand-rolled header. The loader must read
 * its name (which the size covers) and refuse it by size.
 */
#include <stddef.h>

#include <qmesh/plugin.h>

static const qmesh_plugin_t plugin = {
  .struct_size = offsetof(qmesh_plugin_t, ops),
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_small_desc",
  .version = "1.0.0",
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
