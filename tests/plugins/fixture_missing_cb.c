/*
 * fixture_missing_cb.c: a channel plugin without its mandatory open and stop
 * callbacks (and without the optional pause/resume, which is allowed). The
 * refusal must name both missing callbacks, in table order.
 */
#include <qmesh/channel.h>

static int x_start(void *st, const qmesh_channel_ctx_t *ctx) {
  (void)st, (void)ctx;
  return QMESH_OK;
}
static void x_close(void *st) { (void)st; }

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops, .start = x_start, .close = x_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_missing_cb",
  .version = "1.0.0",
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
