/*
 * fuzz_webhook.c: fuzzing the channel_webhook plugin (plugins/channel_webhook)
 * through its ABI, the way the core drives it, with a mapping that uses
 * every kind of target (strings, times in unix_ms, turns with a turn_map and
 * speaker translation, attributes, values).
 *
 * The plugin's source is compiled into the fuzzer (so it carries the
 * coverage instrumentation) and reached only through its descriptor, with a
 * fake host and a fake channel context. The first byte of an input chooses
 * the path ('0' + mode, modes 0-3: HTTP body as JSON, HTTP body as JSON
 * Lines, a .jsonl file, a .json file, each holding payloads as a partner
 * posts them; +4: the context answers "busy" after
 * the first document) and the rest is the body or the file. The limits are
 * small (max_line_kb = 1, max_body_kb = 2) so that inputs of fuzzer size
 * reach the size refusals.
 *
 * Every input must leave the contract intact: each submitted document is a
 * JSON object of at most max_line_kb bytes, at most 64 levels deep, with the
 * configured channel, only the fields the mapping can fill, string ids,
 * RFC 3339 times and turns of exactly speaker, ts_ms and text; the answer is 202, 400, 413 or 503 with a JSON object body
 * whose counts agree with what was submitted; parse_file returns a
 * QMESH_* code. Violations abort.
 *
 * Built two ways (tests/fuzz/chat_webhook.cmake): with clang and
 * -fsanitize=fuzzer as fuzz_webhook, and with any compiler and
 * -DQM_FUZZ_CORPUS_MAIN as fuzz_webhook_corpus, which replays files and
 * directories and checks that seeds named "valid-*" are accepted whole and
 * seeds named "bad-*" are not.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <qmesh/channel.h>

#define CHECK(c)                                                                              \
  do {                                                                                        \
    if (!(c)) {                                                                               \
      fprintf(stderr, "fuzz_webhook: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
      abort();                                                                                \
    }                                                                                         \
  } while (0)

#define MAX_DOC 1024
#define MAX_BODY 2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- fake host ---- */

static void host_log(const qmesh_host_t *host, int level, const char *fmt, ...) {
  (void)host;
  (void)level;
  (void)fmt;
}

static const char *get_string(const qmesh_settings_t *s, const char *name) {
  (void)s;
  if (strcmp(name, "http_path") == 0) return "/v1/webhook/acme";
  if (strcmp(name, "channel") == 0) return "webhook";
  if (strcmp(name, "tenant") == 0) return "acme";
  if (strcmp(name, "started_at_format") == 0) return "unix_ms";
  return NULL;
}

static int64_t get_int(const qmesh_settings_t *s, const char *name) {
  (void)s;
  if (strcmp(name, "max_line_kb") == 0) return MAX_DOC / 1024;
  if (strcmp(name, "max_body_kb") == 0) return MAX_BODY / 1024;
  return 0;
}

static double get_float(const qmesh_settings_t *s, const char *name) {
  (void)s;
  (void)name;
  return 0;
}

static int get_bool(const qmesh_settings_t *s, const char *name) {
  (void)s;
  (void)name;
  return 0;
}

static const char *const map[] = {
  "external_id=/conversation/id", "agent.id=/agent/email", "agent.name=/agent/name", "queue=/conversation/queue",
  "started_at=/conversation/started", "ended_at=/conversation/ended", "customer.id=/visitor/id",
  "turns=/messages", "attributes.region=/meta/region", "attributes=/attrs", "outcomes.csat=/survey/0/score",
  "duration_ms=/d", NULL};
static const char *const turn_map[] = {"speaker=/from/role", "text=/body", "ts_ms=/offset_ms", NULL};
static const char *const speaker_values[] = {"agent=operator,staff", "customer=visitor,user", NULL};

static const char *const *list_of(const char *name) {
  if (strcmp(name, "map") == 0) return map;
  if (strcmp(name, "turn_map") == 0) return turn_map;
  if (strcmp(name, "speaker_values") == 0) return speaker_values;
  return NULL;
}

static size_t get_list_len(const qmesh_settings_t *s, const char *name) {
  (void)s;
  const char *const *l = list_of(name);
  size_t n = 0;
  while (l && l[n]) n++;
  return n;
}

static const char *get_list_item(const qmesh_settings_t *s, const char *name, size_t i) {
  return i < get_list_len(s, name) ? list_of(name)[i] : NULL;
}

static const qmesh_host_t g_host = {
  .struct_size = sizeof g_host, .abi_major = QMESH_ABI_MAJOR, .abi_minor = QMESH_ABI_MINOR,
  .log = host_log, .get_string = get_string, .get_int = get_int, .get_float = get_float,
  .get_bool = get_bool, .get_list_len = get_list_len, .get_list_item = get_list_item,
};

/* ---- fake context ---- */

typedef struct fake {
  qmesh_channel_ctx_t ctx;
  size_t submitted;
  int busy_after_first;
  qmesh_http_handler_fn handler;
} fake_t;

static int depth_of(json_t *v) {
  int d = 0;
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
      int c = depth_of(x);
      if (c > d) d = c;
    }
    return d + 1;
  }
  if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
      int c = depth_of(x);
      if (c > d) d = c;
    }
    return d + 1;
  }
  return 0;
}

static int is_rfc3339(json_t *v) {
  const char *s = json_string_value(v);
  if (!s) return 0;
  size_t n = strlen(s);
  return (n == 20 || n == 24) && s[4] == '-' && s[10] == 'T' && s[n - 1] == 'Z';
}

/* The document holds only what the mapping can put there, converted. */
static void check_document(json_t *doc) {
  static const char *const allowed[] = {"channel", "tenant", "external_id", "agent", "queue", "started_at",
                                        "ended_at", "customer", "turns", "attributes", "outcomes",
                                        "duration_ms", NULL};
  const char *k;
  json_t *v;
  json_object_foreach(doc, k, v) {
    int ok = 0;
    for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(allowed[i], k) == 0;
    CHECK(ok);
  }
  CHECK(strcmp(json_string_value(json_object_get(doc, "channel")), "webhook") == 0);
  CHECK(json_is_string(json_object_get(doc, "tenant")));
  /* Required targets are present or the payload was refused before submit. */
  json_t *xid = json_object_get(doc, "external_id");
  CHECK(xid && !json_is_null(xid) && !json_is_integer(xid));
  json_t *aid = json_object_get(json_object_get(doc, "agent"), "id");
  CHECK(aid && !json_is_integer(aid));
  CHECK(is_rfc3339(json_object_get(doc, "started_at")));
  json_t *ended = json_object_get(doc, "ended_at");
  CHECK(!ended || is_rfc3339(ended));
  json_t *turns = json_object_get(doc, "turns");
  CHECK(json_is_array(turns));
  size_t i;
  json_array_foreach(turns, i, v) {
    CHECK(json_is_object(v) && json_object_size(v) == 3);
    CHECK(json_object_get(v, "speaker") && json_object_get(v, "ts_ms") && json_object_get(v, "text"));
    const char *sp = json_string_value(json_object_get(v, "speaker"));
    /* Translated names never survive translation. */
    CHECK(!sp || (strcasecmp(sp, "operator") && strcasecmp(sp, "staff") && strcasecmp(sp, "visitor") &&
                  strcasecmp(sp, "user")));
  }
}

static int fake_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason, size_t rlen) {
  fake_t *f = (fake_t *)ctx;
  CHECK(json != NULL);
  CHECK(len <= MAX_DOC);
  json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
  CHECK(json_is_object(doc));
  CHECK(depth_of(doc) <= 64);
  check_document(doc);
  int refuse = json_object_get(json_object_get(doc, "attributes"), "refuse") != NULL;
  json_decref(doc);
  if (refuse) {
    snprintf(reason, rlen, "refuse: \"refused\" \\ by the fuzzer \xC3\xA9");
    return QMESH_INVALID;
  }
  if (f->busy_after_first && f->submitted >= 1) return QMESH_BUSY;
  f->submitted++;
  return QMESH_OK;
}

static int fake_route(const qmesh_channel_ctx_t *ctx, const char *method, const char *path, qmesh_http_handler_fn fn) {
  (void)method;
  (void)path;
  ((fake_t *)ctx)->handler = fn;
  return QMESH_OK;
}

/* ---- the plugin, opened once ---- */

static const qmesh_channel_ops_t *g_ops;
static void *g_state;
static fake_t g_fake;
static char g_dir[64];

static void setup(void) {
  if (g_ops) return;
  const qmesh_plugin_t *p = qmesh_plugin_v1();
  CHECK(p && p->kind == QMESH_KIND_CHANNEL);
  g_ops = p->ops;
  CHECK(g_ops->open(&g_host, (const qmesh_settings_t *)&g_host, &g_state) == QMESH_OK);
  g_fake.ctx.struct_size = sizeof g_fake.ctx;
  g_fake.ctx.submit = fake_submit;
  g_fake.ctx.http_route = fake_route;
  g_fake.ctx.name = "webhook";
  CHECK(g_ops->start(g_state, &g_fake.ctx) == QMESH_OK);
  CHECK(g_fake.handler != NULL);
  snprintf(g_dir, sizeof g_dir, "/tmp/qm-fuzz-webhook-%d", (int)getpid());
  mkdir(g_dir, 0700);
}

static int is_qmesh_code(int rc) {
  return rc == QMESH_OK || rc == QMESH_ERR || rc == QMESH_BUSY || rc == QMESH_INVALID || rc == QMESH_NOMEM;
}

/* What the last input did, for the corpus replay's name check. */
static int g_accepted_all;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  g_accepted_all = 0;
  if (size < 1) return 0;
  int mode = (data[0] - '0') & 3;
  g_fake.busy_after_first = ((data[0] - '0') & 4) != 0;
  g_fake.submitted = 0;
  const char *body = (const char *)data + 1;
  size_t n = size - 1;
  if (mode <= 1) {
    qmesh_http_request_t req = {
      .struct_size = sizeof req, .method = "POST", .path = "/v1/webhook/acme", .query = "",
      .body = body, .body_len = n, .content_type = mode ? "application/x-ndjson" : "application/json",
    };
    char resp[256];
    memset(resp, 'x', sizeof resp);
    int status = g_fake.handler(g_state, &g_fake.ctx, &req, resp, sizeof resp);
    CHECK(memchr(resp, '\0', sizeof resp) != NULL);
    json_t *r = json_loads(resp, 0, NULL);
    CHECK(json_is_object(r));
    switch (status) {
    case 202:
      CHECK((size_t)json_integer_value(json_object_get(r, "accepted")) == g_fake.submitted);
      g_accepted_all = g_fake.submitted > 0;
      break;
    case 400:
      CHECK((size_t)json_integer_value(json_object_get(r, "index")) == g_fake.submitted);
      break;
    case 413:
      CHECK(n > MAX_BODY && g_fake.submitted == 0);
      break;
    case 503:
      CHECK(g_fake.busy_after_first);
      break;
    default:
      CHECK(!"unexpected status");
    }
    json_decref(r);
  } else {
    char path[128];
    snprintf(path, sizeof path, "%s/in%s", g_dir, mode == 2 ? ".jsonl" : ".json");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(body, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    int rc = g_ops->parse_file(g_state, path, &g_fake.ctx);
    CHECK(is_qmesh_code(rc));
    if (rc == QMESH_BUSY) CHECK(g_fake.busy_after_first);
    g_accepted_all = rc == QMESH_OK && g_fake.submitted > 0;
    unlink(path);
  }
  return 0;
}

#ifdef QM_FUZZ_CORPUS_MAIN
#include "replay_main.h"

static int g_files, g_wrong;

static void replay_one(const char *path, const char *name, const uint8_t *data, size_t n) {
  (void)path;
  LLVMFuzzerTestOneInput(data, n);
  g_files++;
  if (strncmp(name, "valid-", 6) == 0 && !g_accepted_all) {
    fprintf(stderr, "%s: expected to be accepted whole\n", name);
    g_wrong++;
  } else if (strncmp(name, "bad-", 4) == 0 && g_accepted_all) {
    fprintf(stderr, "%s: expected to be refused\n", name);
    g_wrong++;
  }
}

int main(int argc, char **argv) {
  int rc = qm_replay_paths(argc, argv, replay_one) != 0;
  if (g_ops) {
    g_ops->stop(g_state);
    g_ops->close(g_state);
  }
  rmdir(g_dir);
  printf("fuzz_webhook: %d inputs replayed, %d not as their names say\n", g_files, g_wrong);
  return rc || g_wrong || g_files == 0;
}
#endif
