/*
 * test_channel_webhook.c: the channel_webhook plugin, loaded from the build
 * (build/plugins/channel_webhook.so) through the real loader and settings
 * validation, and driven with a fake channel context.
 *
 * What a partner relies on: a posted object is turned into the interaction
 * document the mapping describes (nested pointers, numbers as ids, speaker
 * names translated, Unix times as RFC 3339), a payload the mapping cannot
 * fill is answered 400 with the field named, and a mapping with a typo stops
 * the plugin at open with a sentence saying what is wrong. The fake context
 * is the one test_channel_chat.c uses (channel_harness.c): it records
 * submissions, refuses external ids starting with "refuse-", answers busy on
 * demand, records registrations, and runs the real validator when it is
 * built in (QM_HAVE_INTERACTION).
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
#define QMESH_PLUGIN_PATH QMESH_BINARY_DIR "/plugins/channel_webhook.so"
#endif

/* ---- the harness (channel_harness.c) ---- */

const channel_harness_t channel_harness = {QMESH_PLUGIN_PATH, "webhook"};

/* The settings of a partner whose platform posts "conversation closed"
 * events; `extra` adds or overrides settings. */
/* noinline: GCC 12 takes the string asprintf returns through a local for a
 * dangling pointer once this is inlined (-Wdangling-pointer). */
__attribute__((noinline)) static char *acme_settings(const char *extra) {
  char *s = NULL;
  assert_true(asprintf(&s,
                       "http_path = \"/v1/webhook/acme\";\n"
                       "tenant = \"acme\";\n"
                       "map = [\"external_id=/conversation/id\", \"agent.id=/agent/email\", "
                       "\"agent.name=/agent/name\", \"queue=/conversation/queue\", "
                       "\"started_at=/conversation/started\", \"ended_at=/conversation/ended\", "
                       "\"customer.id=/visitor/id\", \"turns=/messages\", \"attributes.region=/meta/region\", "
                       "\"attributes.a/b=/meta/a~1b/c~0d\", \"outcomes.csat=/survey/0/score\"];\n"
                       "turn_map = [\"speaker=/from/role\", \"text=/body\", \"ts_ms=/offset_ms\"];\n"
                       "speaker_values = [\"agent=operator, staff\", \"customer=visitor,user\"];\n"
                       "started_at_format = \"unix_ms\";\n%s",
                       extra ? extra : "") > 0);
  return s;
}

/* A posted event; `xid` is the conversation id as JSON (a number or a
 * string), `started` the start time as JSON. */
__attribute__((noinline)) static char *acme_event(const char *xid, const char *started) {
  char *s = NULL;
  assert_true(asprintf(&s,
                       "{\"event\": \"conversation.closed\",\n"
                       " \"conversation\": {\"id\": %s, \"queue\": \"billing\", \"started\": %s, "
                       "\"ended\": 1795183960500},\n"
                       " \"agent\": {\"email\": \"dana@acme.example\", \"name\": \"Dana Reyes\"},\n"
                       " \"visitor\": {\"id\": \"v-5512\", \"name\": \"not copied\"},\n"
                       " \"meta\": {\"region\": \"eu\", \"a/b\": {\"c~d\": \"escaped\"}},\n"
                       " \"survey\": [{\"score\": 4}],\n"
                       " \"messages\": [\n"
                       "  {\"from\": {\"role\": \"operator\"}, \"body\": \"Hi, this is Dana.\", \"offset_ms\": 0},\n"
                       "  {\"from\": {\"role\": \"Visitor\"}, \"body\": \"I was charged twice.\", \"offset_ms\": 9000},\n"
                       "  {\"from\": {\"role\": \"staff\"}, \"body\": \"Let me look.\", \"offset_ms\": 12000},\n"
                       "  {\"from\": {\"role\": \"bot\"}, \"body\": \"Rate us!\", \"offset_ms\": 20000}]}",
                       xid, started) > 0);
  return s;
}

static json_t *path_get(json_t *d, const char *a, const char *b) {
  json_t *o = json_object_get(d, a);
  return b ? json_object_get(o, b) : o;
}

/* ---- mapping ---- */

static void test_mapping(void **state) {
  (void)state;
  inst_t in;
  char *settings = acme_settings(NULL);
  assert_int_equal(inst_open(&in, settings), QMESH_OK);
  char *ev = acme_event("88121", "1795183391000");
  char resp[512];
  assert_int_equal(post(&in, "application/json", ev, strlen(ev), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":1}");
  assert_int_equal(ndocs(&in), 1);
  json_t *d = doc(&in, 0);
  assert_string_equal(field(d, "channel"), "webhook");
  assert_string_equal(field(d, "tenant"), "acme");
  /* A numeric id becomes its text: the document's ids are strings. */
  assert_string_equal(field(d, "external_id"), "88121");
  assert_string_equal(field(d, "queue"), "billing");
  assert_string_equal(json_string_value(path_get(d, "agent", "id")), "dana@acme.example");
  assert_string_equal(json_string_value(path_get(d, "agent", "name")), "Dana Reyes");
  assert_string_equal(json_string_value(path_get(d, "customer", "id")), "v-5512");
  assert_null(path_get(d, "customer", "name"));
  assert_string_equal(json_string_value(path_get(d, "attributes", "region")), "eu");
  assert_string_equal(json_string_value(path_get(d, "attributes", "a/b")), "escaped");
  assert_int_equal(json_integer_value(path_get(d, "outcomes", "csat")), 4);
  /* Unix milliseconds as RFC 3339, with the milliseconds only when any. */
  assert_string_equal(field(d, "started_at"), "2026-11-20T14:03:11Z");
  assert_string_equal(field(d, "ended_at"), "2026-11-20T14:12:40.500Z");
  assert_null(json_object_get(d, "event"));
  json_t *turns = json_object_get(d, "turns");
  assert_int_equal(json_array_size(turns), 4);
  static const char *const want_speaker[] = {"agent", "customer", "agent", "bot"};
  static const int want_ts[] = {0, 9000, 12000, 20000};
  for (size_t i = 0; i < 4; i++) {
    json_t *t = json_array_get(turns, i);
    assert_int_equal(json_object_size(t), 3);
    assert_string_equal(field(t, "speaker"), want_speaker[i]);
    assert_int_equal(json_integer_value(json_object_get(t, "ts_ms")), want_ts[i]);
  }
  assert_string_equal(field(json_array_get(turns, 1), "text"), "I was charged twice.");
  free(ev);

  /* A string holding Unix milliseconds is taken too. */
  ev = acme_event("\"conv-2\"", "\"1795183391250\"");
  assert_int_equal(post(&in, "application/json", ev, strlen(ev), resp, sizeof resp), 202);
  assert_string_equal(field(doc(&in, 1), "started_at"), "2026-11-20T14:03:11.250Z");
  assert_string_equal(field(doc(&in, 1), "external_id"), "conv-2");
  free(ev);

  /* A time that is not one is refused with the field and the pointer. */
  ev = acme_event("3", "\"yesterday\"");
  assert_int_equal(post(&in, "application/json", ev, strlen(ev), resp, sizeof resp), 400);
  assert_string_equal(resp,
                      "{\"error\":\"started_at: /conversation/started is not a unix_ms time (started_at_format)\","
                      "\"index\":0}");
  free(ev);
  ev = acme_event("3", "-5");
  assert_int_equal(post(&in, "application/json", ev, strlen(ev), resp, sizeof resp), 400);
  free(ev);

  /* A required source missing: named, nothing submitted. */
  const char *noagent = "{\"conversation\": {\"id\": 7, \"started\": 1795183391000}, \"messages\": []}";
  assert_int_equal(post(&in, "application/json", noagent, strlen(noagent), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"agent.id: /agent/email not found in the posted object\",\"index\":0}");
  /* A turn without its text. */
  const char *notext = "{\"conversation\": {\"id\": 7, \"started\": 1795183391000}, \"agent\": {\"email\": \"x\"}, "
                       "\"messages\": [{\"from\": {\"role\": \"user\"}, \"offset_ms\": 0}]}";
  assert_int_equal(post(&in, "application/json", notext, strlen(notext), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"turns[0].text: /body not found in the posted turn\",\"index\":0}");
  const char *notarray = "{\"conversation\": {\"id\": 7, \"started\": 1795183391000}, \"agent\": {\"email\": \"x\"}, "
                         "\"messages\": {}}";
  assert_int_equal(post(&in, "application/json", notarray, strlen(notarray), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"turns: /messages is not an array\",\"index\":0}");
  assert_int_equal(ndocs(&in), 2);
  free(settings);
  inst_close(&in);
}

static void test_time_formats(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  char *settings = acme_settings("started_at_format = \"unix_s\";");
  /* libconfig refuses a setting given twice, so the unix_ms line is blanked
   * out of the text. */
  char *fmt = strstr(settings, "started_at_format = \"unix_ms\";");
  memset(fmt, ' ', strlen("started_at_format = \"unix_ms\";"));
  assert_int_equal(inst_open(&in, settings), QMESH_OK);
  char *ev = acme_event("1", "1795183391.5");
  /* ended_at is in milliseconds in this event, which as seconds is far past
   * year 9999: refused, and said so. */
  assert_int_equal(post(&in, "application/json", ev, strlen(ev), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"ended_at: /conversation/ended is not a unix_s time (started_at_format)\","
                            "\"index\":0}");
  free(ev);
  const char *ok = "{\"conversation\": {\"id\": 1, \"started\": 1795183391.5}, \"agent\": {\"email\": \"x\"},"
                   " \"messages\": [{\"from\": {\"role\": \"user\"}, \"offset_ms\": 0, \"body\": \"hello\"}]}";
  assert_int_equal(post(&in, "application/json", ok, strlen(ok), resp, sizeof resp), 202);
  assert_string_equal(field(doc(&in, 0), "started_at"), "2026-11-20T14:03:11.500Z");
  assert_string_equal(field(json_array_get(json_object_get(doc(&in, 0), "turns"), 0), "speaker"), "customer");
  free(settings);
  inst_close(&in);

  /* rfc3339 (the default) passes the text through; no turn_map passes turns
   * through, still translating speakers. */
  assert_int_equal(inst_open(&in, "http_path = \"/h\"; channel = \"sms\";\n"
                                  "map = [\"external_id=/id\", \"agent.id=/agent\", \"started_at=/at\", "
                                  "\"turns=/turns\", \"tenant=/org\"];\n"
                                  "speaker_values = [\"agent=rep\"];"),
                   QMESH_OK);
  const char *plain = "{\"id\": \"s-1\", \"agent\": 17, \"at\": \"2026-11-20T14:03:11Z\", \"org\": \"globex\", "
                      "\"turns\": [{\"speaker\": \"REP\", \"ts_ms\": 0, \"text\": \"Hello\"}, "
                      "{\"speaker\": \"customer\", \"ts_ms\": 5, \"text\": \"Hi\"}]}";
  assert_int_equal(post(&in, "application/json", plain, strlen(plain), resp, sizeof resp), 202);
  json_t *d = doc(&in, 0);
  assert_string_equal(field(d, "channel"), "sms");
  assert_string_equal(field(d, "tenant"), "globex");
  assert_string_equal(field(d, "started_at"), "2026-11-20T14:03:11Z");
  assert_string_equal(json_string_value(path_get(d, "agent", "id")), "17");
  assert_string_equal(field(json_array_get(json_object_get(d, "turns"), 0), "speaker"), "agent");
  assert_string_equal(field(json_array_get(json_object_get(d, "turns"), 1), "speaker"), "customer");
  inst_close(&in);
}

/* Each broken mapping is refused at open with one sentence. */
static void test_bad_mapping_refused_at_open(void **state) {
  (void)state;
  static const char base[] = "http_path = \"/v1/webhook/x\";\n";
  static const char good_map[] =
    "map = [\"external_id=/id\", \"agent.id=/agent/id\", \"started_at=/at\", \"turns=/msgs\"];\n";
  static const struct {
    const char *settings;
    const char *log;
  } cases[] = {
    {"map = [\"external_id=/id\", \"agnt.id=/agent/id\", \"started_at=/at\", \"turns=/msgs\"];",
     "map[1]: unknown target \"agnt.id\" (valid: external_id, tenant, direction, queue, agent.id, agent.name, "
     "agent.team, customer.id, started_at, ended_at, duration_ms, wrapup, language, outcomes.csat, outcomes.nps, "
     "outcomes.fcr, attributes, attributes.KEY, turns)\n"},
    {"map = [\"external_id=/id\", \"agent.id=agent/id\", \"started_at=/at\", \"turns=/msgs\"];",
     "map[1]: agent.id: source \"agent/id\" is not a JSON pointer (\"\" or /key/key..., with ~0 for '~' and ~1 for "
     "'/')\n"},
    {"map = [\"external_id=/id~2\", \"agent.id=/agent/id\", \"started_at=/at\", \"turns=/msgs\"];",
     "map[0]: external_id: source \"/id~2\" is not a JSON pointer (\"\" or /key/key..., with ~0 for '~' and ~1 for "
     "'/')\n"},
    {"map = [\"external_id /id\"];", "map[0]: \"external_id /id\" is not target=source (e.g. \"agent.id=/agent/email\")\n"},
    {"map = [\"external_id=/id\", \"agent.id=/agent/id\", \"turns=/msgs\"];",
     "map: no entry for started_at (required: external_id, agent.id, started_at, turns)\n"},
    {"map = [\"external_id=/id\", \"external_id=/x\"];", "map[1]: external_id is mapped twice\n"},
    {"map = [\"channel=/ch\"];", NULL /* checked by prefix below */},
    {"turn_map = [\"speaker=/from\", \"body=/text\"];",
     "turn_map[1]: unknown target \"body\" (valid: speaker, ts_ms, text)\n"},
    {"turn_map = [\"speaker=/from\", \"text=/text\"];",
     "turn_map: no entry for ts_ms (a turn_map maps all of speaker, ts_ms, text)\n"},
    {"speaker_values = [\"agent=rep\", \"visitor=user\"];",
     "speaker_values[1]: unknown speaker \"visitor\" (valid: agent, customer, bot, system)\n"},
    {"speaker_values = [\"agent=rep\", \"customer=REP\"];", "speaker_values[1]: \"REP\" is listed twice\n"},
    {"started_at_format = \"epoch\";",
     "started_at_format: \"epoch\" is not a time format (valid: rfc3339, unix_ms, unix_s)\n"},
    {"max_body_kb = -1;", "max_body_kb: -1 is out of range (valid: 1 to 1048576)\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *settings = NULL;
    int has_map = strncmp(cases[i].settings, "map", 3) == 0;
    assert_true(asprintf(&settings, "%s%s%s\n", base, has_map ? "" : good_map, cases[i].settings) > 0);
    inst_t in;
    assert_int_equal(inst_open(&in, settings), QMESH_ERR);
    assert_null(in.st);
    if (cases[i].log) assert_string_equal(g_log, cases[i].log);
    else assert_non_null(strstr(g_log, "map[0]: unknown target \"channel\" (valid: "));
    free(settings);
    inst_close(&in);
  }
  /* http_path is required: the loader refuses its absence before open. */
  inst_t in;
  memset(&in, 0, sizeof in);
  qm_error_t err;
  qm_error_clear(&err);
  assert_int_equal(qm_plugin_load(QMESH_PLUGIN_PATH, QMESH_KIND_CHANNEL, &in.plugin, &err), 0);
  config_init(&in.cfg);
  assert_int_equal(config_read_string(&in.cfg, good_map), CONFIG_TRUE);
  assert_int_not_equal(qm_plugin_validate_settings(in.plugin, config_root_setting(&in.cfg), "w.cfg", &err), 0);
  assert_non_null(strstr(err.msg, "channel_webhook.http_path: required setting missing"));
  config_destroy(&in.cfg);
  qm_plugin_destroy(&in.plugin);
}

/* ---- intake ---- */

static void test_start_and_http(void **state) {
  (void)state;
  inst_t in;
  char resp[512];
  char *settings = acme_settings("max_body_kb = 8;");
  assert_int_equal(inst_open(&in, settings), QMESH_OK);
  assert_int_equal(in.ops->start(in.st, &in.fake.ctx), QMESH_OK);
  assert_int_equal(in.fake.route_calls, 1);
  assert_int_equal(in.fake.watch_calls, 0);
  assert_string_equal(in.fake.method, "POST");
  assert_string_equal(in.fake.path, "/v1/webhook/acme");

  char *a = acme_event("1", "1795183391000"), *b = acme_event("2", "1795183391000");
  char *r = acme_event("\"refuse-3\"", "1795183391000");
  char *body = NULL;
  assert_true(asprintf(&body, "[%s, %s]", a, b) > 0);
  assert_int_equal(post(&in, "application/json", body, strlen(body), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":2}");
  free(body);
  assert_true(asprintf(&body, "[%s, %s, %s]", a, r, b) > 0);
  assert_int_equal(post(&in, "application/json", body, strlen(body), resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"external_id: refused by the test\",\"index\":1}");
  assert_int_equal(ndocs(&in), 3);
  free(body);

  in.fake.busy_after = 4;
  assert_true(asprintf(&body, "[%s, %s]", a, b) > 0);
  assert_int_equal(post(&in, "application/json", body, strlen(body), resp, sizeof resp), 503);
  assert_string_equal(resp, "{\"error\":\"busy\"}");
  assert_int_equal(ndocs(&in), 4);
  in.fake.busy_after = -1;
  free(body);

  /* JSON Lines, one event per line (events are posted flattened). */
  json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
  char *la = json_dumps(ja, JSON_COMPACT), *lb = json_dumps(jb, JSON_COMPACT);
  assert_true(asprintf(&body, "%s\n\n%s\n", la, lb) > 0);
  assert_int_equal(post(&in, "application/x-ndjson", body, strlen(body), resp, sizeof resp), 202);
  assert_string_equal(resp, "{\"accepted\":2}");
  free(body);

  /* Over the body limit. */
  body = malloc(8 * 1024 + 1);
  memset(body, ' ', 8 * 1024 + 1);
  memcpy(body, la, strlen(la));
  assert_int_equal(post(&in, "application/json", body, 8 * 1024, resp, sizeof resp), 202);
  assert_int_equal(post(&in, "application/json", body, 8 * 1024 + 1, resp, sizeof resp), 413);
  assert_string_equal(resp, "{\"error\":\"body larger than max_body_kb (8 KiB)\"}");
  assert_int_equal(ndocs(&in), 7);
  free(body);

  /* A nesting bomb and invalid UTF-8. */
  body = malloc(4096);
  memset(body, '[', 4096);
  assert_int_equal(post(&in, "application/json", body, 4096, resp, sizeof resp), 400);
  assert_string_equal(resp, "{\"error\":\"nesting deeper than 64 levels\",\"index\":0}");
  free(body);
  char *bad = strdup(la);
  char *hi = strstr(bad, "Hi,");
  hi[0] = (char)0xC3; /* a lead byte followed by ASCII */
  assert_int_equal(post(&in, "application/json", bad, strlen(bad), resp, sizeof resp), 400);
  assert_non_null(strstr(resp, "invalid JSON at byte"));
  assert_int_equal(ndocs(&in), 7);
  free(bad);
  assert_int_equal(in.ops->stop(in.st), QMESH_OK);

  json_decref(ja);
  json_decref(jb);
  free(la);
  free(lb);
  free(a);
  free(b);
  free(r);
  free(settings);
  inst_close(&in);
}

static void test_parse_file(void **state) {
  (void)state;
  inst_t in;
  char *settings = acme_settings("max_body_kb = 16384; max_line_kb = 1024;");
  assert_int_equal(inst_open(&in, settings), QMESH_OK);
  char *a = acme_event("1", "1795183391000"), *b = acme_event("2", "1795183391000");
  const char *path = write_file(&in, "event.json", a, strlen(a));
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_OK);
  assert_int_equal(ndocs(&in), 1);
  assert_string_equal(field(doc(&in, 0), "external_id"), "1");

  /* JSON Lines: the refused line is named, those before it are stored. */
  json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
  char *la = json_dumps(ja, JSON_COMPACT), *lb = json_dumps(jb, JSON_COMPACT);
  char *text = NULL;
  assert_true(asprintf(&text, "%s\n\n{\"conversation\": {}}\n%s\n", la, lb) > 0);
  path = write_file(&in, "events.jsonl", text, strlen(text));
  g_log[0] = '\0';
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_int_equal(ndocs(&in), 2);
  char want[PATH_MAX + 128];
  snprintf(want, sizeof want, "%s:3: external_id: /conversation/id not found in the posted object\n", path);
  assert_string_equal(g_log, want);
  free(text);

  /* A 10 MB line is refused by its length. */
  size_t big = 10u << 20;
  size_t cap = strlen(la) + big + 64;
  text = malloc(cap);
  int n = snprintf(text, cap, "%s\n{\"conversation\":\"", la);
  memset(text + n, 'x', big);
  memcpy(text + n + big, "\"}\n", 3);
  path = write_file(&in, "big.jsonl", text, (size_t)n + big + 3);
  g_log[0] = '\0';
  assert_int_equal(in.ops->parse_file(in.st, path, &in.fake.ctx), QMESH_ERR);
  assert_non_null(strstr(g_log, "big.jsonl:2: payload of 10485779 bytes is larger than max_line_kb (1024 KiB)"));
  assert_int_equal(ndocs(&in), 3);
  free(text);

  assert_int_equal(in.ops->parse_file(in.st, "/nonexistent/w.json", &in.fake.ctx), QMESH_ERR);
  assert_int_equal(ndocs(&in), 3);
  json_decref(ja);
  json_decref(jb);
  free(la);
  free(lb);
  free(a);
  free(b);
  free(settings);
  inst_close(&in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_mapping),
    cmocka_unit_test(test_time_formats),
    cmocka_unit_test(test_bad_mapping_refused_at_open),
    cmocka_unit_test(test_start_and_http),
    cmocka_unit_test(test_parse_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
