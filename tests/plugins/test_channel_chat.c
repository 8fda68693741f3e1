/*
 * test_channel_chat.c: the channel_chat_json plugin, loaded from the build
 * (build/plugins/channel_chat_json.so) through the real loader and settings
 * validation, and driven with a fake channel context.
 *
 * The fake context (channel_harness.c, shared with test_channel_webhook.c)
 * records every submission, refuses documents whose external_id starts with
 * "refuse-" (as ingest refuses a bad document, with a reason) and answers
 * "busy" once told to; its watch_dir and http_route record what the plugin
 * registers, so the tests call the plugin's HTTP handler directly with
 * crafted requests. The plugin's log goes into a buffer, because the line
 * number of a refused JSON Lines line reaches the operator only through it.
 * When common/src/interaction.c is part of the build (QM_HAVE_INTERACTION),
 * the fake submit also runs every document through the real validator, as
 * ingest would.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
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

#ifndef QMESH_PLUGIN_PATH
#define QMESH_PLUGIN_PATH QMESH_BINARY_DIR "/plugins/channel_chat_json.so"
#endif

/* ---- the harness (channel_harness.c) ---- */

const channel_harness_t channel_harness = {QMESH_PLUGIN_PATH, "chat"};

static long resp_int(const char *resp, const char *key) {
  json_t *v = json_loads(resp, 0, NULL);
  json_t *x = json_object_get(v, key);
  assert_true(json_is_integer(x));
  long n = (long)json_integer_value(x);
  json_decref(v);
  return n;
}

/* A valid chat document; `extra` is spliced in before the turns. */
/* noinline: GCC 12 takes the string asprintf returns through a local for a
 * dangling pointer once this is inlined (-Wdangling-pointer). */
__attribute__((noinline)) static char *chat_doc(const char *xid, const char *extra) {
  char *s = NULL;
  assert_true(asprintf(&s,
                       "{\"external_id\": \"%s\", %s\"agent\": {\"id\": \"a-17\", \"name\": \"Dana Reyes\"}, "
                       "\"started_at\": \"2026-11-20T14:03:11Z\", \"turns\": ["
                       "{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"Hi, this is Dana.\"}, "
                       "{\"speaker\": \"customer\", \"ts_ms\": 9000, \"text\": \"I was charged twice — twice!\"}]}",
                       xid, extra ? extra : "") > 0);
  return s;
}

/* ---- files ---- */

static void test_single_document_file(void **state) {
  (void)state;
  inst_t in;
  assert_int_equal(inst_open(&in, "tenant = \"acme\"; default_queue = \"support\";"), QMESH_OK);
  char *d = chat_doc("conv-1", NULL);
  /* A byte-order mark, as some editors write, is tolerated. */
  char *withbom = NULL;
  assert_true(asprintf(&withbom, "\xEF\xBB\xBF%s\n", d) > 0);
  const char *path = write_file(&in, "one.json", withbom, strlen(withbom));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_OK);
  assert_int_equal(ndocs(&in), 1);
  json_t *got = doc(&in, 0);
  assert_string_equal(field(got, "external_id"), "conv-1");
  assert_string_equal(field(got, "channel"), "chat");
  assert_string_equal(field(got, "tenant"), "acme");
  assert_string_equal(field(got, "queue"), "support");
  assert_int_equal(json_array_size(json_object_get(got, "turns")), 2);
  assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(got, "turns"), 1), "text")),
                      "I was charged twice — twice!");
  free(d);
  free(withbom);

  /* What the document says wins over the settings. */
  d = chat_doc("conv-2", "\"channel\": \"sms\", \"tenant\": \"globex\", \"queue\": \"billing\", ");
  path = write_file(&in, "two.json", d, strlen(d));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_OK);
  assert_int_equal(ndocs(&in), 2);
  assert_string_equal(field(doc(&in, 1), "channel"), "sms");
  assert_string_equal(field(doc(&in, 1), "tenant"), "globex");
  assert_string_equal(field(doc(&in, 1), "queue"), "billing");
  free(d);

  /* A .json file holds one object: an array is refused. */
  path = write_file(&in, "arr.json", "[{\"external_id\":\"x\"}]", 21);
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_int_equal(ndocs(&in), 2);
  assert_non_null(strstr(g_log, "arr.json:1: expected a JSON object"));

  assert_int_equal(in.ops->parse_file(in.st, "/nonexistent/qm/x.json", &in.fake.ctx), QMESH_ERR);
  assert_non_null(strstr(g_log, "/nonexistent/qm/x.json: cannot open: No such file or directory"));
  inst_close(&in);
}

static void test_jsonl_bad_line(void **state) {
  (void)state;
  inst_t in;
  assert_int_equal(inst_open(&in, ""), QMESH_OK);
  char *a = chat_doc("conv-a", NULL), *b = chat_doc("conv-b", NULL), *c = chat_doc("conv-c", NULL);
  char *text = NULL;
  /* Line 3 is blank (skipped but counted), line 4 is broken JSON. */
  assert_true(asprintf(&text, "%s\r\n%s\n  \n{\"external_id\": \"conv-x\", \n%s\n", a, b, c) > 0);
  const char *path = write_file(&in, "day.jsonl", text, strlen(text));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  /* The documents before the bad line are stored, the one after is not. */
  assert_int_equal(ndocs(&in), 2);
  assert_string_equal(field(doc(&in, 0), "external_id"), "conv-a");
  assert_string_equal(field(doc(&in, 1), "external_id"), "conv-b");
  assert_non_null(strstr(g_log, "day.jsonl:4: invalid JSON at byte"));
  free(text);

  /* A line ingest refuses refuses the file too, and names the line. */
  g_log[0] = '\0';
  char *r = chat_doc("refuse-1", NULL);
  assert_true(asprintf(&text, "%s\n%s\n%s\n", c, r, a) > 0);
  path = write_file(&in, "day2.jsonl", text, strlen(text));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_int_equal(ndocs(&in), 3);
  assert_string_equal(field(doc(&in, 2), "external_id"), "conv-c");
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "%s:2: external_id: refused by the test\n", path);
  assert_string_equal(g_log, want);
  free(text);

  /* Busy is not a refusal: the file is to be offered again. */
  in.fake.busy_after = (int)ndocs(&in) + 1;
  assert_true(asprintf(&text, "%s\n%s\n", a, b) > 0);
  path = write_file(&in, "day3.jsonl", text, strlen(text));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_BUSY);
  assert_int_equal(ndocs(&in), 4);
  free(text);
  free(a);
  free(b);
  free(c);
  free(r);
  inst_close(&in);
}

static void test_ten_megabyte_line(void **state) {
  (void)state;
  inst_t in;
  assert_int_equal(inst_open(&in, "max_body_kb = 16384;"), QMESH_OK);
  char *a = chat_doc("conv-a", NULL);
  size_t big = 10u << 20;
  size_t alen = strlen(a);
  char *text = malloc(alen + 1 + big + 16);
  memcpy(text, a, alen);
  text[alen] = '\n';
  /* A syntactically valid document whose only problem is its size. */
  char *p = text + alen + 1;
  memcpy(p, "{\"a\":\"", 6);
  memset(p + 6, 'x', big);
  memcpy(p + 6 + big, "\"}\n", 3);
  size_t total = alen + 1 + big + 9;
  const char *path = write_file(&in, "big.jsonl", text, total);
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_int_equal(ndocs(&in), 1);
  assert_non_null(strstr(g_log, "big.jsonl:2: line longer than max_line_kb (4096 KiB)"));

  /* The same as one .json file. */
  path = write_file(&in, "big.json", p, big + 9);
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_non_null(strstr(g_log, "big.json: larger than max_line_kb (4096 KiB)"));

  /* And posted as JSON Lines within the body limit. */
  char resp[512];
  assert_int_equal(post(&in, "application/x-ndjson", text, total, resp, sizeof resp), 400);
  assert_int_equal(resp_int(resp, "index"), 1);
  assert_non_null(strstr(resp, "larger than max_line_kb (4096 KiB)"));
  assert_int_equal(ndocs(&in), 2);
  free(text);
  free(a);
  inst_close(&in);
}

/* ---- start ---- */

static void test_start_registers(void **state) {
  (void)state;
  inst_t in;
  assert_int_equal(inst_open(&in, "spool_dir = \"/var/spool/qmesh/chat\";"), QMESH_OK);
  assert_int_equal(in.ops->start(in.st, &in.fake.ctx), QMESH_OK);
  assert_int_equal(in.fake.watch_calls, 1);
  assert_string_equal(in.fake.watch_dir, "/var/spool/qmesh/chat");
  assert_string_equal(in.fake.suffixes, ".json,.jsonl");
  assert_int_equal(in.fake.route_calls, 1);
  assert_string_equal(in.fake.method, "POST");
  assert_string_equal(in.fake.path, "/v1/interactions");
  assert_int_equal(in.ops->stop(in.st), QMESH_OK);
  inst_close(&in);

  /* No spool and no HTTP path: nothing registered. */
  assert_int_equal(inst_open(&in, "http_path = \"\";"), QMESH_OK);
  assert_int_equal(in.ops->start(in.st, &in.fake.ctx), QMESH_OK);
  assert_int_equal(in.fake.watch_calls + in.fake.route_calls, 0);
  assert_int_equal(in.ops->stop(in.st), QMESH_OK);
  inst_close(&in);

  /* A core without the services (as `qmesh plugin check` runs plugins)
   * still starts the plugin, and says what it could not set up. */
  assert_int_equal(inst_open(&in, "spool_dir = \"/tmp/x\"; http_path = \"/v1/chat\";"), QMESH_OK);
  in.fake.ctx.watch_dir = NULL;
  in.fake.ctx.http_route = NULL;
  assert_int_equal(in.ops->start(in.st, &in.fake.ctx), QMESH_OK);
  assert_non_null(strstr(g_log, "spool_dir /tmp/x: this core does not watch directories"));
  assert_non_null(strstr(g_log, "http_path /v1/chat: this core has no HTTP listener"));
  assert_int_equal(in.ops->stop(in.st), QMESH_OK);
  inst_close(&in);
}

static void test_open_refuses_bad_settings(void **state) {
  (void)state;
  inst_t in;
  assert_int_equal(inst_open(&in, "max_line_kb = 0;"), QMESH_ERR);
  assert_string_equal(g_log, "max_line_kb: 0 is out of range (valid: 1 to 1048576)\n");
  assert_null(in.st);
  inst_close(&in);
  assert_int_equal(inst_open(&in, "http_path = \"v1/chat\";"), QMESH_ERR);
  assert_string_equal(g_log, "http_path: \"v1/chat\" must start with '/' (or be \"\" for no HTTP intake)\n");
  inst_close(&in);
}

/* ---- HTTP ---- */

static void test_http_single_and_array(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  assert_int_equal(inst_open(&in, "tenant = \"acme\";"), QMESH_OK);
  char *a = chat_doc("conv-a", NULL), *b = chat_doc("conv-b", NULL), *r = chat_doc("refuse-9", NULL);
  assert_int_equal(post(&in, "application/json", a, strlen(a), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":1}");
  assert_int_equal(ndocs(&in), 1);
  assert_string_equal(field(doc(&in, 0), "tenant"), "acme");

  char *arr = NULL;
  assert_true(asprintf(&arr, " [%s, %s, %s]", b, a, b) > 0);
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":3}");
  assert_int_equal(ndocs(&in), 4);
  free(arr);

  /* A refused document: the ones before it are accepted, its index said. */
  assert_true(asprintf(&arr, "[%s, %s, %s]", a, r, b) > 0);
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"external_id: refused by the test\",\"index\":1}");
  assert_int_equal(ndocs(&in), 5);
  free(arr);

  /* An element that is not an object. */
  assert_true(asprintf(&arr, "[%s, 42]", a) > 0);
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), resp, sizeof resp), 400);
  assert_int_equal(resp_int(resp, "index"), 1);
  free(arr);

  /* JSON Lines by content type, blank lines skipped. */
  char *lines = NULL;
  assert_true(asprintf(&lines, "%s\n\n%s\r\n", a, b) > 0);
  assert_int_equal(post(&in, "application/x-ndjson; charset=utf-8", lines, strlen(lines), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":2}");
  free(lines);
  assert_true(asprintf(&lines, "%s\n{oops\n%s\n", a, b) > 0);
  size_t before = ndocs(&in);
  assert_int_equal(post(&in, "application/x-ndjson", lines, strlen(lines), resp, sizeof resp), 400);
  assert_int_equal(resp_int(resp, "index"), 1);
  assert_int_equal(ndocs(&in), before + 1);
  free(lines);

  /* Garbage, emptiness, duplicate keys. */
  assert_int_equal(post(&in, "application/json", "not json", 8, resp, sizeof resp), 400);
  assert_int_equal(post(&in, "application/json", "  ", 2, resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"empty body\",\"index\":0}");
  const char *dup = "{\"external_id\": \"a\", \"external_id\": \"b\"}";
  assert_int_equal(post(&in, "application/json", dup, strlen(dup), resp, sizeof resp), 400);
  assert_non_null(strstr(resp, "duplicate object key"));

  /* A response buffer too small for the reason still holds valid JSON. */
  char small[40];
  assert_true(asprintf(&arr, "[%s]", r) > 0);
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), small, sizeof small), 400);
  assert_string_equal(small, "{\"error\":\"external_id: refu\",\"index\":0}");
  free(arr);
  free(a);
  free(b);
  free(r);
  inst_close(&in);
}

static void test_http_busy_and_oversize(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  assert_int_equal(inst_open(&in, "max_body_kb = 1;"), QMESH_OK);
  char *a = chat_doc("conv-a", NULL);
  char *arr = NULL;
  assert_true(asprintf(&arr, "[%s,%s]", a, a) > 0);
  in.fake.busy_after = 1;
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), resp, sizeof resp), 503);
  assert_string_equal(resp, "{\"error\":\"busy\"}");
  assert_int_equal(ndocs(&in), 1);
  in.fake.busy_after = -1;

  /* While paused the plugin takes nothing. */
  assert_int_equal(in.ops->pause(in.st), QMESH_OK);
  assert_int_equal(post(&in, "application/json", a, strlen(a), resp, sizeof resp), 503);
  assert_int_equal(in.ops->resume(in.st), QMESH_OK);
  assert_int_equal(post(&in, "application/json", a, strlen(a), resp, sizeof resp), 202);
  assert_int_equal(ndocs(&in), 2);

  char body[1025];
  memset(body, ' ', sizeof body);
  memcpy(body, a, strlen(a));
  assert_int_equal(post(&in, "application/json", body, 1024, resp, sizeof resp), 202);
  assert_int_equal(post(&in, "application/json", body, 1025, resp, sizeof resp), 413);
  assert_string_equal(resp, "{\"error\":\"body larger than max_body_kb (1 KiB)\"}");
  assert_int_equal(ndocs(&in), 3);

  /* Only POST is taken. */
  qmesh_http_request_t get = {.struct_size = sizeof get, .method = "GET", .path = "/v1/interactions",
                              .query = "", .body = "", .content_type = ""};
  assert_int_equal(in.fake.handler(in.st, &in.fake.ctx, &get, resp, sizeof resp), 405);
  free(arr);
  free(a);
  inst_close(&in);
}

/* Nesting deeper than the limit is refused by the scan, before jansson;
 * exactly at the limit it goes through. */
static void test_nesting_bomb(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  assert_int_equal(inst_open(&in, "max_line_kb = 8192; max_body_kb = 16384;"), QMESH_OK);
  /* 64 levels in all: the document plus 63 nested objects. */
  size_t cap = 1 << 20;
  char *deep = malloc(cap);
  strcpy(deep, "{\"external_id\":\"raw-deep\",\"attributes\":");
  for (int i = 0; i < 62; i++) strcat(deep, "{\"a\":");
  strcat(deep, "{\"s\":\"[[[[{{{{\"}");
  for (int i = 0; i < 62; i++) strcat(deep, "}");
  strcat(deep, "}");
  assert_int_equal(post(&in, "application/json", deep, strlen(deep), resp, sizeof resp), 202);
  assert_int_equal(ndocs(&in), 1);
  /* As one element of an array, it is still 64 deep as a document. */
  char *arr = NULL;
  assert_true(asprintf(&arr, "[%s]", deep) > 0);
  assert_int_equal(post(&in, "application/json", arr, strlen(arr), resp, sizeof resp), 202);
  free(arr);

  /* One level more is refused. */
  char *deeper = NULL;
  assert_true(asprintf(&deeper, "{\"x\":%s}", deep) > 0);
  assert_int_equal(post(&in, "application/json", deeper, strlen(deeper), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"nesting deeper than 64 levels\",\"index\":0}");
  free(deeper);

  /* A bomb: a million brackets, in a file and in a body. */
  size_t n = 1000000;
  char *bomb = malloc(n);
  memset(bomb, '[', n);
  const char *path = write_file(&in, "bomb.jsonl", bomb, n);
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_non_null(strstr(g_log, "bomb.jsonl:1: nesting deeper than 64 levels"));
  assert_int_equal(post(&in, "application/json", bomb, n, resp, sizeof resp), 400);
  assert_non_null(strstr(resp, "nesting deeper than 64 levels"));
  memset(bomb, '{', n);
  assert_int_equal(post(&in, "application/json", bomb, n, resp, sizeof resp), 400);
  assert_int_equal(ndocs(&in), 2);
  free(bomb);
  free(deep);
  inst_close(&in);
}

static void test_invalid_utf8(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  assert_int_equal(inst_open(&in, ""), QMESH_OK);
  char *a = chat_doc("conv-a", NULL);
  /* An overlong encoding of '/', a lone continuation byte and a surrogate. */
  static const char *const bad[] = {"\xC0\xAF", "\x80", "\xED\xA0\x80", "\xFF"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *d = chat_doc("conv-u", NULL);
    size_t off = strcspn(d, "H"); /* the first turn's "Hi," */
    char *text = NULL;
    assert_true(asprintf(&text, "%s\n%.*s%s%s\n", a, (int)off, d, bad[i], d + off) > 0);
    const char *path = write_file(&in, "utf8.jsonl", text, strlen(text));
    g_log[0] = '\0';
    size_t before = ndocs(&in);
    assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
    assert_int_equal(ndocs(&in), before + 1);
    assert_non_null(strstr(g_log, "utf8.jsonl:2: invalid JSON at byte"));
    const char *second = strchr(text, '\n') + 1;
    assert_int_equal(post(&in, "application/json", second, strlen(second), resp, sizeof resp), 400);
    /* The answer quotes jansson's reason, and stays valid UTF-8 JSON. */
    assert_non_null(strstr(resp, "invalid JSON at byte"));
    free(text);
    free(d);
  }
  free(a);
  inst_close(&in);
}

/* Every sample chat shipped in samples/chat/ is taken as it is. */
static void test_samples(void **state) {
  (void)state;
  const char *dir = QMESH_SOURCE_DIR "/samples/chat";
  DIR *d = opendir(dir);
  if (!d) skip();
  inst_t in;
  assert_int_equal(inst_open(&in, ""), QMESH_OK);
  int files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    int jsonl = n > 6 && strcmp(e->d_name + n - 6, ".jsonl") == 0;
    int json = n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
    if (!json && !jsonl) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    /* Count the documents the file holds, independently of the plugin. */
    size_t expect = 0;
    if (json) {
      expect = 1;
    } else {
      FILE *f = fopen(path, "r");
      assert_non_null(f);
      char *line = NULL;
      size_t cap = 0;
      ssize_t got;
      while ((got = getline(&line, &cap, f)) >= 0) {
        ssize_t k = 0;
        while (k < got && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n')) k++;
        if (k < got) expect++;
      }
      free(line);
      fclose(f);
    }
    size_t before = ndocs(&in);
    int rc = in.ops->parse_file(in.st, path, &in.fake.ctx);
    if (rc != QMESH_OK) fprintf(stderr, "%s: %s", path, g_log);
    assert_int_equal(rc, QMESH_OK);
    assert_int_equal(ndocs(&in) - before, expect);
    files++;
  }
  closedir(d);
  assert_true(files > 0);
  assert_int_equal(in.fake.refused, 0);
  inst_close(&in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_single_document_file),
    cmocka_unit_test(test_jsonl_bad_line),
    cmocka_unit_test(test_ten_megabyte_line),
    cmocka_unit_test(test_start_registers),
    cmocka_unit_test(test_open_refuses_bad_settings),
    cmocka_unit_test(test_http_single_and_array),
    cmocka_unit_test(test_http_busy_and_oversize),
    cmocka_unit_test(test_nesting_bomb),
    cmocka_unit_test(test_invalid_utf8),
    cmocka_unit_test(test_samples),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
