/*
 * fixture_fragile_channel.c: a channel plugin with the mistakes the
 * checker's parse_* cases exist to catch, one per hostile input, so
 * test_check.c can assert that each is reported with its exact line.
 *
 * parse_file reads the whole file and then, by content:
 *   - empty: leaks a small allocation and returns QMESH_OK (a leak only a
 *     sanitized checker sees);
 *   - holding a NUL byte (the random bytes): crashes with SIGSEGV;
 *   - starting with "[[[[" (the deep JSON): never returns (a hang);
 *   - holding a byte >= 0x80 (the invalid UTF-8): submits the bytes and
 *     returns QMESH_OK whatever submit answered, swallowing the refusal;
 *   - anything else: submits the bytes as one document and returns what
 *     submit answered, which is the correct behaviour.
 * start registers a spool directory through watch_dir and returns its
 * answer, so the lifecycle case shows the checker's context offers it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qmesh/channel.h>

static const qmesh_host_t *g_host;
/* volatile, so the compiler cannot drop the allocation it never frees. */
static void *volatile g_leak;

static int f_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  (void)settings;
  g_host = host;
  *out = NULL;
  return QMESH_OK;
}

static int f_start(void *state, const qmesh_channel_ctx_t *ctx) {
  (void)state;
  return ctx->watch_dir(ctx, "/tmp/qmesh-fixture-spool", ".json");
}

static int f_stop(void *state) {
  (void)state;
  return QMESH_OK;
}

static void f_close(void *state) { (void)state; }

static int f_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  (void)state;
  FILE *f = fopen(path, "rb");
  if (!f) {
    g_host->log(g_host, QMESH_LOG_WARN, "cannot open %s", path);
    return QMESH_ERR;
  }
  size_t cap = 16u << 20;
  char *data = malloc(cap);
  if (!data) {
    fclose(f);
    return QMESH_NOMEM;
  }
  size_t n = fread(data, 1, cap, f);
  fclose(f);
  if (n == 0) {
    free(data);
    /* The leak: reachable from nothing once the pointer is overwritten. */
    void *p = malloc(64);
    if (p) memset(p, 1, 64);
    g_leak = p;
    g_leak = NULL;
    return QMESH_OK;
  }
  if (memchr(data, '\0', n)) raise(SIGSEGV);
  if (n >= 4 && memcmp(data, "[[[[", 4) == 0)
    for (;;) sleep(1);
  int high = 0;
  for (size_t i = 0; i < n; i++) high |= (unsigned char)data[i] >= 0x80;
  int rc = ctx->submit(ctx, data, n, NULL, 0);
  free(data);
  return high ? QMESH_OK : rc;
}

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops,
  .open = f_open,
  .start = f_start,
  .stop = f_stop,
  .close = f_close,
  .parse_file = f_parse_file,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_fragile_channel",
  .version = "1.0.0",
  .description = "fails the hostile-input cases on purpose",
  .settings = NULL,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
