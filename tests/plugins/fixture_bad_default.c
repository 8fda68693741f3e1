/*
 * fixture_bad_default.c: a channel plugin whose settings table declares an
 * integer with the default "ten". The plugin's own mistake is refused at load,
 * not reported later as if the user's configuration were wrong.
 */
#include <qmesh/channel.h>

static int b_open(const qmesh_host_t *h, const qmesh_settings_t *s, void **st) {
  (void)h, (void)s, (void)st;
  return QMESH_OK;
}
static int b_start(void *st, const qmesh_channel_ctx_t *ctx) {
  (void)st, (void)ctx;
  return QMESH_OK;
}
static int b_stop(void *st) {
  (void)st;
  return QMESH_OK;
}
static void b_close(void *st) { (void)st; }

static const qmesh_setting_t settings[] = {
  {"batch", QMESH_SETTING_INT, "ten", "records per batch", 0},
  {0},
};

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops, .open = b_open, .start = b_start, .stop = b_stop, .close = b_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_bad_default",
  .version = "1.0.0",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
