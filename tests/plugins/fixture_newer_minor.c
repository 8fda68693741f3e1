/*
 * fixture_newer_minor.c: a channel plugin claiming ABI 1.3, newer than this
 * qmesh's 1.0; it may rely on callbacks the core would never call, so the
 * loader refuses it.
 */
#include <qmesh/channel.h>

static int n_open(const qmesh_host_t *h, const qmesh_settings_t *s, void **st) {
  (void)h, (void)s, (void)st;
  return QMESH_OK;
}
static int n_start(void *st, const qmesh_channel_ctx_t *ctx) {
  (void)st, (void)ctx;
  return QMESH_OK;
}
static int n_stop(void *st) {
  (void)st;
  return QMESH_OK;
}
static void n_close(void *st) { (void)st; }

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops, .open = n_open, .start = n_start, .stop = n_stop, .close = n_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = 1,
  .abi_minor = 3,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_newer_minor",
  .version = "1.0.0",
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
