/*
 * fixture_major_field.c: exports the v1 entry point but its descriptor says
 * ABI 2.0 (a plugin whose build mixed headers). The loader believes the
 * descriptor's major and refuses it.
 */
#include <qmesh/channel.h>

static int m_open(const qmesh_host_t *h, const qmesh_settings_t *s, void **st) {
  (void)h, (void)s, (void)st;
  return QMESH_OK;
}
static int m_start(void *st, const qmesh_channel_ctx_t *ctx) {
  (void)st, (void)ctx;
  return QMESH_OK;
}
static int m_stop(void *st) {
  (void)st;
  return QMESH_OK;
}
static void m_close(void *st) { (void)st; }

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops, .open = m_open, .start = m_start, .stop = m_stop, .close = m_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = 2,
  .abi_minor = 0,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_major_field",
  .version = "1.0.0",
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
