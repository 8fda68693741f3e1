/* test_interaction.c: validation and normalization of interaction documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "interaction.h"

static const char chat[] =
  "{\"channel\": \"chat\", \"external_id\": \"conv-1\", \"queue\": \"billing\","
  " \"agent\": {\"id\": \"a-17\", \"name\": \"Dana\"}, \"customer\": {\"id\": \"cust-9\", \"name\": \"Sam\"},"
  " \"started_at\": \"2026-11-20T14:03:11Z\", \"ended_at\": \"2026-11-20T15:03:11+01:00\","
  " \"outcomes\": {\"csat\": 4, \"fcr\": true}, \"attributes\": {\"vip\": true},"
  " \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"Hi, this is Dana.\"},"
  "            {\"speaker\": \"customer\", \"ts_ms\": 9000, \"text\": \"I was charged twice.\"}]}";

static const uint64_t NOW = 1795571437000ULL; /* 2026-11-25 */

static int norm(const char *doc, qm_interaction_t *ix, qm_error_t *err) {
  qm_interaction_opts_t o = {.now_ms = NOW};
  return qm_interaction_normalize(doc, strlen(doc), &o, ix, err);
}

static void test_valid_chat_normalizes(void **state) {
  (void)state;
  qm_interaction_t ix;
  qm_error_t err;
  assert_int_equal(norm(chat, &ix, &err), 0);
  json_t *d = ix.doc;
  assert_string_equal(json_string_value(json_object_get(d, "id")), ix.id);
  assert_int_equal(strlen(ix.id), QM_INTERACTION_ID_LEN);
  assert_memory_equal(ix.id, "ix-", 3);
  assert_string_equal(ix.tenant, "default");
  assert_string_equal(ix.direction, "inbound");
  assert_string_equal(ix.language, "en");
  assert_string_equal(ix.channel, "chat");
  assert_string_equal(ix.queue, "billing");
  /* Times in UTC; the duration derived from them (the offset is honoured). */
  assert_string_equal(json_string_value(json_object_get(d, "ended_at")), "2026-11-20T14:03:11Z");
  assert_int_equal(json_integer_value(json_object_get(d, "duration_ms")), 0);
  /* The customer is kept only as a hash. */
  json_t *cust = json_object_get(d, "customer");
  assert_null(json_object_get(cust, "id"));
  assert_null(json_object_get(cust, "name"));
  assert_int_equal(json_string_length(json_object_get(cust, "id_hash")), 32);
  char *dump = json_dumps(d, 0);
  assert_null(strstr(dump, "cust-9"));
  free(dump);
  qm_interaction_free(&ix);
}

static void test_ids_and_content_hashes(void **state) {
  (void)state;
  qm_interaction_t a, b, c;
  qm_error_t err;
  assert_int_equal(norm(chat, &a, &err), 0);
  /* Same content with keys in another order and another time zone: same id
   * and the same content hash (a re-submission is recognised). */
  const char *reordered =
    "{\"turns\": [{\"ts_ms\": 0, \"text\": \"Hi, this is Dana.\", \"speaker\": \"agent\"},"
    "            {\"text\": \"I was charged twice.\", \"speaker\": \"customer\", \"ts_ms\": 9000}],"
    " \"attributes\": {\"vip\": true}, \"outcomes\": {\"fcr\": true, \"csat\": 4},"
    " \"ended_at\": \"2026-11-20T14:03:11Z\", \"started_at\": \"2026-11-20T15:03:11+01:00\","
    " \"customer\": {\"id\": \"cust-9\"}, \"agent\": {\"name\": \"Dana\", \"id\": \"a-17\"},"
    " \"queue\": \"billing\", \"external_id\": \"conv-1\", \"channel\": \"chat\"}";
  assert_int_equal(norm(reordered, &b, &err), 0);
  assert_string_equal(a.id, b.id);
  assert_memory_equal(a.content_hash, b.content_hash, 16);
  /* Changed content: same id, another content hash (a new revision). */
  char *changed = strdup(chat);
  memcpy(strstr(changed, "charged twice"), "charged trice", 13);
  assert_int_equal(norm(changed, &c, &err), 0);
  assert_string_equal(a.id, c.id);
  assert_memory_not_equal(a.content_hash, c.content_hash, 16);
  free(changed);
  qm_interaction_free(&c);
  /* Another tenant is another interaction. */
  char *other = malloc(strlen(chat) + 40);
  sprintf(other, "{\"tenant\": \"acme\",%s", chat + 1);
  assert_int_equal(norm(other, &c, &err), 0);
  assert_string_not_equal(a.id, c.id);
  free(other);
  qm_interaction_free(&a);
  qm_interaction_free(&b);
  qm_interaction_free(&c);
}

static void refused(const char *doc, const char *want) {
  qm_interaction_t ix;
  qm_error_t err;
  int rc = norm(doc, &ix, &err);
  if (rc == 0) fail_msg("accepted: %s", doc);
  assert_int_equal(rc, QM_EINVAL);
  if (strcmp(err.msg, want) != 0) fail_msg("got:  %s\nwant: %s", err.msg, want);
  assert_null(ix.doc);
}

#define BASE "\"channel\": \"chat\", \"external_id\": \"x\", \"agent\": {\"id\": \"a\"}, \"started_at\": \"2026-11-20T14:03:11Z\""
#define TURN "\"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"hi\"}]"

static void test_refusals_name_the_field(void **state) {
  (void)state;
  refused("[1, 2]", "(document): must be a JSON object (got an array)");
  refused("{\"channel\": \"chat\"", "(document): not valid JSON: '}' expected near end of file at line 1 column 18");
  refused("{" BASE ", " TURN ", \"colour\": 1}", "colour: unknown field (valid: channel, external_id, tenant, direction, queue, agent, customer, started_at, ended_at, duration_ms, wrapup, language, outcomes, attributes, turns, email, media)");
  refused("{\"channel\": \"chat\", \"agent\": {\"id\": \"a\"}, \"started_at\": \"2026-11-20T14:03:11Z\", " TURN "}", "external_id: required field missing");
  refused("{\"channel\": \"Chat\", \"external_id\": \"x\", \"agent\": {\"id\": \"a\"}, \"started_at\": \"2026-11-20T14:03:11Z\", " TURN "}", "channel: character 'C' is not allowed");
  refused("{" BASE ", \"turns\": [{\"speaker\": \"robot\", \"ts_ms\": 0, \"text\": \"hi\"}]}", "turns[0].speaker: \"robot\" is not one of agent, customer, bot, system");
  refused("{" BASE ", \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 5, \"text\": \"a\"}, {\"speaker\": \"agent\", \"ts_ms\": 4, \"text\": \"b\"}]}", "turns[1].ts_ms: goes back in time (4 after 5)");
  refused("{" BASE ", \"turns\": []}", "turns: must hold at least one turn");
  refused("{\"channel\": \"chat\", \"external_id\": \"x\", \"agent\": {\"id\": \"a\"}, \"started_at\": \"2026-11-31T14:03:11Z\", " TURN "}", "started_at: \"2026-11-31T14:03:11Z\" is not an RFC 3339 time (e.g. 2026-11-20T14:03:11Z)");
  refused("{" BASE ", \"ended_at\": \"2026-11-20T14:03:10Z\", " TURN "}", "ended_at: is before started_at");
  refused("{\"channel\": \"chat\", \"external_id\": \"x\", \"agent\": {\"id\": \"a\"}, \"started_at\": \"2030-01-01T00:00:00Z\", " TURN "}", "started_at: is more than a day in the future");
  refused("{" BASE "}", "(document): needs one of turns, email or media");
  refused("{" BASE ", " TURN ", \"email\": {}}", "(document): holds more than one of turns, email and media");
  refused("{" BASE ", " TURN ", \"outcomes\": {\"csat\": 6}}", "outcomes.csat: must be between 1 and 5 (got 6)");
  refused("{" BASE ", " TURN ", \"direction\": \"sideways\"}", "direction: \"sideways\" is not one of inbound, outbound, internal");
  refused("{" BASE ", \"media\": {\"ref\": \"sha256:0000000000000000000000000000000000000000000000000000000000000000\", \"format\": \"wav\", \"sample_rate\": 16000, \"channels\": 2, \"duration_ms\": 1000}}", "media.layout: required for stereo audio (which channel is the agent)");
  refused("{" BASE ", \"media\": {\"ref\": \"md5:x\", \"format\": \"wav\", \"sample_rate\": 16000, \"channels\": 1, \"duration_ms\": 1000}}", "media.ref: must be 71 to 71 bytes (got 5)");
  refused("{" BASE ", \"email\": {\"subject\": \"s\", \"messages\": [{\"message_id\": \"m1\", \"from\": \"a@b\", \"to\": [\"c@d\"], \"date\": \"2026-11-20T14:03:11Z\", \"speaker\": \"customer\", \"text\": \"x\", \"attachments\": [{\"content_type\": \"application/pdf\", \"size\": -1}]}]}}", "email.messages[0].attachments[0].size: must be between 0 and 1099511627776 (got -1)");
  /* Invalid UTF-8 is refused, not repaired. */
  refused("{" BASE ", \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"caf\xe9\"}]}", "(document): not valid JSON: unable to decode byte 0xe9 near '\"caf' at line 1 column 155");
  refused("{\"channel\": \"chat\", \"channel\": \"chat\"}", "(document): not valid JSON: duplicate object key near '\"channel\"' at line 1 column 29");
}

static void test_size_limit_and_garbage(void **state) {
  (void)state;
  qm_interaction_t ix;
  qm_error_t err;
  qm_interaction_opts_t o = {.now_ms = NOW, .max_document_bytes = 100};
  assert_int_equal(qm_interaction_normalize(chat, strlen(chat), &o, &ix, &err), QM_EINVAL);
  assert_non_null(strstr(err.msg, "over the limit of 100"));
  /* Random bytes and deep nesting: refused, never a crash. */
  srand(7);
  char buf[512];
  for (int i = 0; i < 20000; i++) {
    size_t n = (size_t)(rand() % (int)sizeof buf);
    for (size_t k = 0; k < n; k++) buf[k] = (char)(rand() % 256);
    if (qm_interaction_normalize(buf, n, NULL, &ix, &err) == 0) qm_interaction_free(&ix);
  }
  size_t deep = 200000;
  char *nest = malloc(deep);
  memset(nest, '[', deep);
  assert_int_equal(qm_interaction_normalize(nest, deep, NULL, &ix, &err), QM_EINVAL);
  free(nest);
}

static void test_email_and_media_forms(void **state) {
  (void)state;
  qm_interaction_t ix;
  qm_error_t err;
  const char *email =
    "{\"channel\": \"email\", \"external_id\": \"<root@x>\", \"agent\": {\"id\": \"a-1\"},"
    " \"started_at\": \"2026-11-20T14:03:11Z\", \"email\": {\"subject\": \"Refund\", \"messages\": ["
    " {\"message_id\": \"<root@x>\", \"from\": \"sam@mail.example\", \"to\": [\"help@n.example\"],"
    "  \"date\": \"2026-11-20T14:03:11Z\", \"speaker\": \"customer\", \"text\": \"Hello\","
    "  \"attachments\": [{\"filename\": \"bill.pdf\", \"content_type\": \"application/pdf\", \"size\": 5120}]},"
    " {\"message_id\": \"<r1@n>\", \"in_reply_to\": \"<root@x>\", \"from\": \"dana@n.example\","
    "  \"to\": [\"sam@mail.example\"], \"cc\": [], \"date\": \"2026-11-20T16:00:00Z\", \"speaker\": \"agent\", \"text\": \"Hi Sam\"}]}}";
  assert_int_equal(norm(email, &ix, &err), 0);
  assert_int_equal(json_array_size(json_object_get(json_object_get(ix.doc, "email"), "messages")), 2);
  qm_interaction_free(&ix);
  const char *voice =
    "{\"channel\": \"voice\", \"external_id\": \"call-1\", \"agent\": {\"id\": \"a-1\"},"
    " \"started_at\": \"2026-11-20T14:03:11Z\", \"media\": {\"ref\": "
    "\"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", \"format\": \"wav\","
    " \"sample_rate\": 16000, \"channels\": 2, \"duration_ms\": 61000,"
    " \"layout\": {\"agent\": \"left\", \"customer\": \"right\"}}}";
  assert_int_equal(norm(voice, &ix, &err), 0);
  assert_string_equal(ix.channel, "voice");
  qm_interaction_free(&ix);
}

static void test_json_pack(void **state) {
  (void)state;
  json_t *v = json_pack("{s:i,s:[s,b,n],s:f}", "a", 1, "b", "x", 1, "c", 1.5);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  assert_int_equal(qm_json_pack(&pk, v), 0);
  msgpack_zone z;
  msgpack_zone_init(&z, 256);
  msgpack_object o;
  size_t off = 0;
  assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
  assert_int_equal(o.via.map.size, 3);
  assert_int_equal(o.via.map.ptr[1].val.via.array.size, 3);
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&sb);
  json_decref(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_valid_chat_normalizes),
    cmocka_unit_test(test_ids_and_content_hashes),
    cmocka_unit_test(test_refusals_name_the_field),
    cmocka_unit_test(test_size_limit_and_garbage),
    cmocka_unit_test(test_email_and_media_forms),
    cmocka_unit_test(test_json_pack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
