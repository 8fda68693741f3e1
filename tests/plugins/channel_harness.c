/*
 * channel_harness.c: the fake host and channel context of the chat and
 * webhook plugin tests (channel_harness.h says what they record and refuse).
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libconfig.h>

#include <qmesh/channel.h>

#include "channel_harness.h"
#include "loader.h"
#ifdef QM_HAVE_INTERACTION
#include "interaction.h"
#endif

/* ---- captured log ---- */

char g_log[1 << 16];

static void capture_log(const qmesh_host_t *host, int level, const char *fmt, ...) {
  (void)host;
  (void)level;
  size_t used = strlen(g_log);
  if (used + 2 >= sizeof g_log) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_log + used, sizeof g_log - used - 1, fmt, ap);
  va_end(ap);
  strcat(g_log, "\n");
}

/* ---- fake context ---- */

static int fake_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason, size_t rlen) {
  fake_t *f = (fake_t *)ctx;
  json_error_t jerr;
  json_t *doc = json_loadb(json, len, 0, &jerr);
  /* The plugin must only ever hand over JSON objects. */
  assert_non_null(doc);
  assert_true(json_is_object(doc));
  const char *xid = json_string_value(json_object_get(doc, "external_id"));
  if (xid && strncmp(xid, "refuse-", 7) == 0) {
    snprintf(reason, rlen, "external_id: refused by the test");
    json_decref(doc);
    f->refused++;
    return QMESH_INVALID;
  }
  if (f->busy_after >= 0 && json_array_size(f->docs) >= (size_t)f->busy_after) {
    json_decref(doc);
    return QMESH_BUSY;
  }
#ifdef QM_HAVE_INTERACTION
  /* Documents named "raw-..." exercise the plugin's own limits with shapes
   * ingest would refuse; every other one must pass the real validator. */
  if (!xid || strncmp(xid, "raw-", 4) != 0) {
    qm_interaction_opts_t opts = {.now_ms = 1796083200000ULL}; /* 2026-12-01 */
    qm_interaction_t ix;
    qm_error_t err;
    qm_error_clear(&err);
    int rc = qm_interaction_normalize(json, len, &opts, &ix, &err);
    if (rc != 0) fprintf(stderr, "normalize refused %.*s: %s\n", (int)(len > 300 ? 300 : len), json, err.msg);
    assert_int_equal(rc, 0);
    qm_interaction_free(&ix);
  }
#endif
  json_array_append_new(f->docs, doc);
  return QMESH_OK;
}

static int fake_watch(const qmesh_channel_ctx_t *ctx, const char *dir, const char *suffixes) {
  fake_t *f = (fake_t *)ctx;
  f->watch_calls++;
  snprintf(f->watch_dir, sizeof f->watch_dir, "%s", dir);
  snprintf(f->suffixes, sizeof f->suffixes, "%s", suffixes ? suffixes : "");
  return QMESH_OK;
}

static int fake_route(const qmesh_channel_ctx_t *ctx, const char *method, const char *path, qmesh_http_handler_fn fn) {
  fake_t *f = (fake_t *)ctx;
  f->route_calls++;
  snprintf(f->method, sizeof f->method, "%s", method);
  snprintf(f->path, sizeof f->path, "%s", path);
  f->handler = fn;
  return QMESH_OK;
}

void fake_init(fake_t *f) {
  memset(f, 0, sizeof *f);
  f->ctx.struct_size = sizeof f->ctx;
  f->ctx.submit = fake_submit;
  f->ctx.watch_dir = fake_watch;
  f->ctx.http_route = fake_route;
  f->ctx.name = channel_harness.name;
  f->docs = json_array();
  f->busy_after = -1;
}

/* ---- the plugin instance ---- */

int inst_open(inst_t *in, const char *settings) {
  memset(in, 0, sizeof *in);
  g_log[0] = '\0';
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_plugin_load(channel_harness.plugin_path, QMESH_KIND_CHANNEL, &in->plugin, &err);
  if (rc != 0) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  config_init(&in->cfg);
  assert_int_equal(config_read_string(&in->cfg, settings), CONFIG_TRUE);
  rc = qm_plugin_validate_settings(in->plugin, config_root_setting(&in->cfg), "test.cfg", &err);
  if (rc != 0) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  in->host = *qm_plugin_host(in->plugin);
  in->host.log = capture_log;
  in->ops = qm_plugin_descriptor(in->plugin)->ops;
  fake_init(&in->fake);
  snprintf(in->dir, sizeof in->dir, "/tmp/qm-%s-XXXXXX", channel_harness.name);
  assert_non_null(mkdtemp(in->dir));
  return in->ops->open(&in->host, qm_plugin_settings(in->plugin), &in->st);
}

void inst_close(inst_t *in) {
  if (in->st) in->ops->close(in->st);
  in->st = NULL;
  json_decref(in->fake.docs);
  config_destroy(&in->cfg);
  qm_plugin_destroy(&in->plugin);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", in->dir);
  assert_int_equal(system(cmd), 0);
}

const char *write_file(inst_t *in, const char *name, const char *data, size_t len) {
  static char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", in->dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  return path;
}

int post(inst_t *in, const char *content_type, const char *body, size_t len, char *resp, size_t cap) {
  if (!in->fake.handler) assert_int_equal(in->ops->start(in->st, &in->fake.ctx), QMESH_OK);
  assert_non_null(in->fake.handler);
  qmesh_http_request_t req = {
    .struct_size = sizeof req, .method = "POST", .path = in->fake.path, .query = "",
    .body = body, .body_len = len, .content_type = content_type,
  };
  memset(resp, 'x', cap);
  int status = in->fake.handler(in->st, &in->fake.ctx, &req, resp, cap);
  /* Every answer is one JSON object, NUL-terminated inside the buffer. */
  assert_non_null(memchr(resp, '\0', cap));
  json_t *v = json_loads(resp, 0, NULL);
  if (!v) fprintf(stderr, "not JSON: %s\n", resp);
  assert_true(json_is_object(v));
  json_decref(v);
  return status;
}
