/*
 * fixture_crash.c: a channel plugin that loads cleanly and then dereferences
 * NULL in open. The loader accepts it (nothing is called at load); the
 * conformance checker must report the crash with its signal name instead of
 * dying with it.
 */
#include <stddef.h>

#include <qmesh/channel.h>

/* volatile so the compiler emits a real load and store at address zero
 * instead of proving the code unreachable. */
static int *volatile nowhere = NULL;

/* Not instrumented by UBSan, which would otherwise report the store and
 * exit in a sanitized build instead of letting the signal happen. */
__attribute__((no_sanitize("undefined")))
static int c_open(const qmesh_host_t *h, const qmesh_settings_t *s, void **st) {
  (void)h, (void)s, (void)st;
  *nowhere = 1;
  return QMESH_OK;
}
static int c_start(void *st, const qmesh_channel_ctx_t *ctx) {
  (void)st, (void)ctx;
  return QMESH_OK;
}
static int c_stop(void *st) {
  (void)st;
  return QMESH_OK;
}
static void c_close(void *st) { (void)st; }

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops, .open = c_open, .start = c_start, .stop = c_stop, .close = c_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_crash",
  .version = "1.0.0",
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
