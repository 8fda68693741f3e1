/*
 * fixture_good_channel.c: a well-formed channel plugin for the loader and
 * checker tests.
 *
 * It declares one setting of every type (one of them required) and reflects
 * the values it reads into what it submits, so a test can see that the
 * settings view carries given values and declared defaults through the host
 * API. start submits `count` small JSON documents synchronously; parse_file
 * submits each non-empty line of a file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qmesh/channel.h>

typedef struct state {
  const qmesh_host_t *host;
  char source[128];
  long long count;
  double ratio;
  int verbose;
  char tags[256];
  int paused;
} state_t;

static int g_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  state_t *s = calloc(1, sizeof *s);
  if (!s) return QMESH_NOMEM;
  s->host = host;
  const char *src = host->get_string(settings, "source");
  snprintf(s->source, sizeof s->source, "%s", src ? src : "(null)");
  s->count = (long long)host->get_int(settings, "count");
  s->ratio = host->get_float(settings, "ratio");
  s->verbose = host->get_bool(settings, "verbose");
  size_t n = host->get_list_len(settings, "tags"), used = 0;
  for (size_t i = 0; i < n && used < sizeof s->tags; i++) {
    int w = snprintf(s->tags + used, sizeof s->tags - used, "%s\"%s\"", i ? "," : "",
                     host->get_list_item(settings, "tags", i));
    if (w > 0) used += (size_t)w;
  }
  host->log(host, QMESH_LOG_INFO, "opened source=%s count=%lld", s->source, s->count);
  *out = s;
  return QMESH_OK;
}

static int g_start(void *state, const qmesh_channel_ctx_t *ctx) {
  state_t *s = state;
  for (long long i = 0; i < s->count; i++) {
    char json[512], reason[128];
    int n = snprintf(json, sizeof json,
                     "{\"n\":%lld,\"source\":\"%s\",\"ratio\":%g,\"verbose\":%s,\"tags\":[%s]}", i, s->source,
                     s->ratio, s->verbose ? "true" : "false", s->tags);
    int rc = ctx->submit(ctx, json, (size_t)n, reason, sizeof reason);
    if (rc != QMESH_OK) {
      s->host->log(s->host, QMESH_LOG_WARN, "submit refused (%d): %s", rc, rc == QMESH_INVALID ? reason : "busy");
      break;
    }
  }
  return QMESH_OK;
}

static int g_pause(void *state) {
  ((state_t *)state)->paused = 1;
  return QMESH_OK;
}

static int g_resume(void *state) {
  ((state_t *)state)->paused = 0;
  return QMESH_OK;
}

static int g_stop(void *state) {
  (void)state;
  return QMESH_OK;
}

static void g_close(void *state) { free(state); }

static int g_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  state_t *s = state;
  FILE *f = fopen(path, "r");
  if (!f) {
    s->host->log(s->host, QMESH_LOG_WARN, "cannot open %s", path);
    return QMESH_ERR;
  }
  char line[1024];
  int rc = QMESH_OK;
  while (rc == QMESH_OK && fgets(line, sizeof line, f)) {
    size_t n = strcspn(line, "\r\n");
    if (n) rc = ctx->submit(ctx, line, n, NULL, 0);
  }
  fclose(f);
  return rc;
}

static const qmesh_setting_t settings[] = {
  {"source", QMESH_SETTING_STRING, NULL, "where the interactions come from", 1},
  {"count", QMESH_SETTING_INT, "2", "how many sample interactions start submits", 0},
  {"ratio", QMESH_SETTING_FLOAT, "0.5", "a number echoed into each interaction", 0},
  {"verbose", QMESH_SETTING_BOOL, "false", "a flag echoed into each interaction", 0},
  {"tags", QMESH_SETTING_STRING_LIST, "a, b", "labels echoed into each interaction", 0},
  {0},
};

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops,
  .open = g_open,
  .start = g_start,
  .pause = g_pause,
  .resume = g_resume,
  .stop = g_stop,
  .close = g_close,
  .parse_file = g_parse_file,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "fixture_good_channel",
  .version = "1.0.0",
  .description = "submits a few sample interactions built from its settings",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
