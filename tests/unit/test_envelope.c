/*
 * test_envelope.c: the envelope codec and message ids (common/src/envelope.c).
 *
 * Round trips, the id layout and ordering, and every way a received envelope
 * can be wrong, each with the error code and the sentence a person reading
 * the dead-letter store would see. Hostile inputs (every truncation, deep
 * nesting, lying lengths, random and mutated bytes) must come back as errors,
 * never as a crash; run under ASan/UBSan to make that claim mean something.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"

/* ------------------------------------------------------------ helpers -- */

static const qm_id_t k_id = {{0x01, 0x90, 0xd6, 0xf2, 0x3a, 0x4b, 0x70, 0x01, 0x80, 0x11, 0x22,
                              0x33, 0x44, 0x55, 0x66, 0x77}};

static qm_str_t S(const char *s) {
  qm_str_t v = {s, strlen(s)};
  return v;
}

typedef struct {
  msgpack_zone zone;
  qm_envelope_t env;
  qm_error_t err;
} dec_t;

static int decode(dec_t *d, const char *buf, size_t len, size_t max) {
  msgpack_zone_init(&d->zone, 2048);
  memset(&d->err, 0, sizeof d->err);
  int rc = qm_envelope_decode(buf, len, max, &d->zone, &d->env, &d->err);
  return rc;
}

static void dec_done(dec_t *d) { msgpack_zone_destroy(&d->zone); }

/* Decodes a private copy of exactly len bytes so that ASan sees any read
 * past the end, and checks code and message. */
static void expect_decode(const char *buf, size_t len, int code, const char *msg) {
  char *copy = malloc(len ? len : 1);
  assert_non_null(copy);
  memcpy(copy, buf, len);
  dec_t d;
  int rc = decode(&d, copy, len, 0);
  if (rc != code || (msg && strcmp(d.err.msg, msg) != 0))
    print_error("decode: got %s \"%s\", want %s \"%s\"\n", qm_err_name(rc), d.err.msg,
                qm_err_name(code), msg ? msg : "(any)");
  assert_int_equal(rc, code);
  if (msg) assert_string_equal(d.err.msg, msg);
  if (code == 0) assert_string_equal(d.err.msg, "");
  dec_done(&d);
  free(copy);
}

/* A hand-built envelope: each field's value is either raw MessagePack bytes
 * or a packing function, so a test can put anything at any key. */
typedef struct {
  const char *key;
  const char *raw;
  size_t raw_n;
  void (*fn)(msgpack_packer *pk);
} fld_t;

#define RAW(k, lit) {k, lit, sizeof lit - 1, NULL}
#define FN(k, f) {k, NULL, 0, f}

static void build(msgpack_sbuffer *sb, const fld_t *f, size_t n) {
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, n);
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_str_with_body(&pk, f[i].key, strlen(f[i].key));
    if (f[i].fn)
      f[i].fn(&pk);
    else
      msgpack_sbuffer_write(sb, f[i].raw, f[i].raw_n);
  }
}

static void p_id(msgpack_packer *pk) { msgpack_pack_bin_with_body(pk, k_id.b, 16); }

#define F_V RAW("v", "\x01")
#define F_ID FN("id", p_id)
#define F_TYPE RAW("type", "\xb4" "interaction.received")
#define F_SRC RAW("src", "\xa6" "ingest")
#define F_TS RAW("ts", "\xcf\x00\x00\x01\x8b\xcf\xe5\x68\x00") /* 1700000000000 */
#define F_KEY RAW("key", "\xa7" "call-42")
#define F_BODY RAW("body", "\x81\xa4" "lang" "\xa2" "en")
#define F_HDR RAW("hdr", "\x81\xa7" "channel" "\xa5" "voice")

static const fld_t k_std[] = {F_V, F_ID, F_TYPE, F_SRC, F_TS, F_KEY, F_BODY};
#define N_STD (sizeof k_std / sizeof k_std[0])

/* The standard envelope with field `key` replaced (or appended) by `with`. */
static void build_with(msgpack_sbuffer *sb, fld_t with) {
  fld_t f[N_STD + 1];
  size_t n = 0;
  int replaced = 0;
  for (size_t i = 0; i < N_STD; i++) {
    if (strcmp(k_std[i].key, with.key) == 0) {
      f[n++] = with;
      replaced = 1;
    } else {
      f[n++] = k_std[i];
    }
  }
  if (!replaced) f[n++] = with;
  build(sb, f, n);
}

/* A valid envelope whose body exercises every MessagePack family, so that
 * truncating or mutating it reaches every branch of the decoder. */
static void valid_rich(msgpack_sbuffer *sb) {
  msgpack_sbuffer body;
  msgpack_sbuffer_init(&body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 6);
  msgpack_pack_str_with_body(&pk, "s", 1);
  msgpack_pack_str_with_body(&pk, "a transcript line that needs str8 framing", 42);
  msgpack_pack_str_with_body(&pk, "b", 1);
  msgpack_pack_bin_with_body(&pk, "\x00\x01\x02", 3);
  msgpack_pack_str_with_body(&pk, "n", 1);
  msgpack_pack_array(&pk, 7);
  msgpack_pack_uint64(&pk, UINT64_MAX);
  msgpack_pack_int64(&pk, INT64_MIN);
  msgpack_pack_double(&pk, 1.5);
  msgpack_pack_float(&pk, 2.5f);
  msgpack_pack_nil(&pk);
  msgpack_pack_true(&pk);
  msgpack_pack_ext_with_body(&pk, "\x01\x02\x03\x04\x05", 5, 7);
  msgpack_pack_str_with_body(&pk, "m", 1);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str_with_body(&pk, "score", 5);
  msgpack_pack_int(&pk, -3);
  msgpack_pack_str_with_body(&pk, "e", 1);
  msgpack_pack_ext_with_body(&pk, "\x09", 1, -1);
  msgpack_pack_str_with_body(&pk, "w", 1);
  msgpack_pack_array(&pk, 0);

  qm_envelope_t e;
  qm_envelope_init(&e);
  e.id = k_id;
  e.ts = 1700000000000ull;
  e.type = S("interaction.received");
  e.src = S("ingest");
  e.key = S("call-42");
  e.hdr_count = 2;
  e.hdr[0].k = S("channel");
  e.hdr[0].v = S("voice");
  e.hdr[1].k = S("tenant");
  e.hdr[1].v = S("acme");
  e.body_packed = body.data;
  e.body_packed_len = body.size;
  msgpack_sbuffer_init(sb);
  assert_int_equal(qm_envelope_encode(sb, &e), 0);
  msgpack_sbuffer_destroy(&body);
}

static int str_view_eq(qm_str_t a, qm_str_t b) {
  return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Compares two decoded envelopes field by field; bodies by their packed
 * bytes, which is exact for floats where msgpack_object_equal is not. */
static void assert_env_equal(const qm_envelope_t *a, const qm_envelope_t *b) {
  assert_int_equal(a->v, b->v);
  assert_memory_equal(a->id.b, b->id.b, 16);
  assert_true(str_view_eq(a->type, b->type));
  assert_true(str_view_eq(a->src, b->src));
  assert_true(a->ts == b->ts);
  assert_true(str_view_eq(a->key, b->key));
  assert_int_equal(a->hdr_count, b->hdr_count);
  for (size_t i = 0; i < a->hdr_count; i++) {
    assert_true(str_view_eq(a->hdr[i].k, b->hdr[i].k));
    assert_true(str_view_eq(a->hdr[i].v, b->hdr[i].v));
  }
  msgpack_sbuffer x, y;
  msgpack_sbuffer_init(&x);
  msgpack_sbuffer_init(&y);
  msgpack_packer px, py;
  msgpack_packer_init(&px, &x, msgpack_sbuffer_write);
  msgpack_packer_init(&py, &y, msgpack_sbuffer_write);
  msgpack_pack_object(&px, a->body);
  msgpack_pack_object(&py, b->body);
  assert_int_equal(x.size, y.size);
  assert_memory_equal(x.data, y.data, x.size);
  msgpack_sbuffer_destroy(&x);
  msgpack_sbuffer_destroy(&y);
}

/* Top-level keys of a packed envelope, read with plain msgpack. */
static uint32_t top_keys(const char *buf, size_t len, char keys[][8]) {
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  msgpack_object o;
  size_t off = 0;
  assert_int_equal(msgpack_unpack(buf, len, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
  for (uint32_t i = 0; i < o.via.map.size; i++) {
    const msgpack_object *k = &o.via.map.ptr[i].key;
    assert_int_equal(k->type, MSGPACK_OBJECT_STR);
    assert_true(k->via.str.size < 8);
    memcpy(keys[i], k->via.str.ptr, k->via.str.size);
    keys[i][k->via.str.size] = '\0';
  }
  uint32_t n = o.via.map.size;
  msgpack_zone_destroy(&z);
  return n;
}

/* --------------------------------------------------------- round trips -- */

static void test_roundtrip_without_hdr(void **state) {
  (void)state;
  qm_envelope_t e;
  qm_envelope_init(&e);
  assert_int_equal(e.v, QM_ENVELOPE_VERSION);
  e.type = S("transcript.ready");
  e.src = S("transcribe");
  e.key = S("");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &e), 0);

  char keys[8][8];
  assert_int_equal(top_keys(sb.data, sb.size, keys), 7);
  const char *want[] = {"v", "id", "type", "src", "ts", "key", "body"};
  for (int i = 0; i < 7; i++) assert_string_equal(keys[i], want[i]);

  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  assert_int_equal(d.env.v, 1);
  assert_memory_equal(d.env.id.b, e.id.b, 16);
  assert_true(qm_str_eq(d.env.type, "transcript.ready"));
  assert_true(qm_str_eq(d.env.src, "transcribe"));
  assert_true(qm_str_eq(d.env.key, ""));
  assert_true(d.env.ts == e.ts);
  assert_int_equal(d.env.hdr_count, 0);
  assert_int_equal(d.env.body.type, MSGPACK_OBJECT_MAP);
  assert_int_equal(d.env.body.via.map.size, 0);
  assert_null(d.env.body_packed);
  /* Views point into the caller's buffer, which must outlive them. */
  assert_true(d.env.type.p >= sb.data && d.env.type.p + d.env.type.n <= sb.data + sb.size);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);
}

static void test_roundtrip_with_hdr(void **state) {
  (void)state;
  qm_envelope_t e;
  qm_envelope_init(&e);
  e.type = S("interaction.received");
  e.src = S("ingest");
  e.key = S("int-0001");
  e.hdr_count = 3;
  e.hdr[0].k = S("channel");
  e.hdr[0].v = S("voice");
  e.hdr[1].k = S("tenant");
  e.hdr[1].v = S("acme");
  e.hdr[2].k = S("queue");
  e.hdr[2].v = S("");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &e), 0);
  char keys[8][8];
  assert_int_equal(top_keys(sb.data, sb.size, keys), 8);
  assert_string_equal(keys[6], "hdr");
  assert_string_equal(keys[7], "body");

  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  assert_int_equal(d.env.hdr_count, 3);
  assert_true(qm_str_eq(d.env.hdr[0].k, "channel"));
  assert_true(qm_str_eq(d.env.hdr[0].v, "voice"));
  assert_true(qm_str_eq(d.env.hdr[2].k, "queue"));
  assert_true(qm_str_eq(d.env.hdr[2].v, ""));
  qm_str_t v = {0};
  assert_int_equal(qm_envelope_hdr(&d.env, "tenant", &v), 1);
  assert_true(qm_str_eq(v, "acme"));
  assert_int_equal(qm_envelope_hdr(&d.env, "queue", &v), 1);
  assert_int_equal(v.n, 0);
  assert_int_equal(qm_envelope_hdr(&d.env, "chan", &v), 0);
  assert_int_equal(qm_envelope_hdr(&d.env, "channelx", NULL), 0);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);
}

static void test_roundtrip_body_object(void **state) {
  (void)state;
  /* A body object as a service would hold it after decoding its own input. */
  msgpack_sbuffer src;
  msgpack_sbuffer_init(&src);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &src, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  msgpack_pack_str_with_body(&pk, "form", 4);
  msgpack_pack_str_with_body(&pk, "sales-v3", 8);
  msgpack_pack_str_with_body(&pk, "score", 5);
  msgpack_pack_double(&pk, 87.5);
  msgpack_pack_str_with_body(&pk, "answers", 7);
  msgpack_pack_array(&pk, 2);
  msgpack_pack_true(&pk);
  msgpack_pack_int(&pk, -2);
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  msgpack_object body;
  size_t off = 0;
  assert_int_equal(msgpack_unpack(src.data, src.size, &off, &z, &body), MSGPACK_UNPACK_SUCCESS);

  qm_envelope_t e;
  qm_envelope_init(&e);
  e.type = S("evaluation.scored");
  e.src = S("autoscore");
  e.key = S("eval-9");
  e.body = body;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &e), 0);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  assert_true(msgpack_object_equal(d.env.body, body));
  assert_int_equal(d.env.body.via.map.size, 3);
  /* Not equal to an empty map: the body really travelled. */
  assert_true(d.env.body.via.map.ptr[1].val.type == MSGPACK_OBJECT_FLOAT64);
  assert_true(d.env.body.via.map.ptr[1].val.via.f64 == 87.5);
  dec_done(&d);
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_destroy(&src);
}

static void test_roundtrip_body_packed(void **state) {
  (void)state;
  static const char body[] = "\x82\xa4" "lang" "\xa2" "en" "\xa5" "turns" "\x92\x01\x02";
  qm_envelope_t e;
  qm_envelope_init(&e);
  e.type = S("transcript.ready");
  e.src = S("transcribe");
  e.key = S("int-7");
  e.body_packed = body;
  e.body_packed_len = sizeof body - 1;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &e), 0);
  /* body is the last key, and its bytes go out verbatim. */
  assert_true(sb.size > sizeof body - 1);
  assert_memory_equal(sb.data + sb.size - (sizeof body - 1), body, sizeof body - 1);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  assert_int_equal(d.env.body.type, MSGPACK_OBJECT_MAP);
  assert_int_equal(d.env.body.via.map.size, 2);
  const msgpack_object *turns = &d.env.body.via.map.ptr[1].val;
  assert_int_equal(turns->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(turns->via.array.size, 2);
  assert_true(turns->via.array.ptr[1].via.u64 == 2);

  /* Re-encoding the decoded envelope gives the same bytes (what a stage that
   * rebuilds an envelope from a decoded one would send). */
  msgpack_sbuffer sb2;
  msgpack_sbuffer_init(&sb2);
  assert_int_equal(qm_envelope_encode(&sb2, &d.env), 0);
  assert_int_equal(sb2.size, sb.size);
  assert_memory_equal(sb2.data, sb.data, sb.size);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_destroy(&sb2);
}

static void test_encode_appends(void **state) {
  (void)state;
  qm_envelope_t a, b;
  qm_envelope_init(&a);
  qm_envelope_init(&b);
  a.type = S("alert.raised");
  a.src = S("policy");
  b.type = S("coaching.requested");
  b.src = S("policy");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &a), 0);
  size_t first = sb.size;
  assert_int_equal(qm_envelope_encode(&sb, &b), 0);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, first, 0), 0);
  assert_true(qm_str_eq(d.env.type, "alert.raised"));
  dec_done(&d);
  assert_int_equal(decode(&d, sb.data + first, sb.size - first, 0), 0);
  assert_true(qm_str_eq(d.env.type, "coaching.requested"));
  assert_int_equal(qm_id_cmp(&d.env.id, &b.id), 0);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);
}

/* Fills a valid envelope with field lengths at their limits. */
static char g_long[600];
static qm_str_t L(size_t n) {
  qm_str_t s = {g_long, n};
  return s;
}

static void test_encode_limits_accepted(void **state) {
  (void)state;
  memset(g_long, 'a', sizeof g_long);
  qm_envelope_t e;
  qm_envelope_init(&e);
  e.type = L(QM_TYPE_MAX);
  e.src = L(QM_NAME_MAX);
  e.key = L(QM_KEY_MAX);
  e.hdr_count = QM_HDR_MAX;
  static char names[QM_HDR_MAX][16];
  for (int i = 0; i < QM_HDR_MAX; i++) {
    snprintf(names[i], sizeof names[i], "h%d", i);
    e.hdr[i].k = S(names[i]);
    e.hdr[i].v = L(QM_HDR_VALUE_MAX);
  }
  e.hdr[0].k = L(QM_NAME_MAX);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(qm_envelope_encode(&sb, &e), 0);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  assert_int_equal(d.env.type.n, QM_TYPE_MAX);
  assert_int_equal(d.env.src.n, QM_NAME_MAX);
  assert_int_equal(d.env.key.n, QM_KEY_MAX);
  assert_int_equal(d.env.hdr_count, QM_HDR_MAX);
  assert_int_equal(d.env.hdr[15].v.n, QM_HDR_VALUE_MAX);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);
}

typedef void (*mutate_fn)(qm_envelope_t *e);
static void m_type_empty(qm_envelope_t *e) { e->type = S(""); }
static void m_type_long(qm_envelope_t *e) { e->type = L(QM_TYPE_MAX + 1); }
static void m_type_upper(qm_envelope_t *e) { e->type = S("Interaction.received"); }
static void m_type_space(qm_envelope_t *e) { e->type = S("interaction received"); }
static void m_type_slash(qm_envelope_t *e) { e->type = S("interaction/received"); }
static void m_type_null(qm_envelope_t *e) { e->type.p = NULL; }
static void m_src_empty(qm_envelope_t *e) { e->src = S(""); }
static void m_src_long(qm_envelope_t *e) { e->src = L(QM_NAME_MAX + 1); }
static void m_key_long(qm_envelope_t *e) { e->key = L(QM_KEY_MAX + 1); }
static void m_key_null(qm_envelope_t *e) {
  e->key.p = NULL;
  e->key.n = 3;
}
static void m_ts_zero(qm_envelope_t *e) { e->ts = 0; }
static void m_v_two(qm_envelope_t *e) { e->v = 2; }
static void m_v_zero(qm_envelope_t *e) { e->v = 0; }
static void m_hdr_count(qm_envelope_t *e) {
  e->hdr_count = QM_HDR_MAX + 1;
}
static void m_hdr_value_long(qm_envelope_t *e) {
  e->hdr_count = 1;
  e->hdr[0].k = S("channel");
  e->hdr[0].v = L(QM_HDR_VALUE_MAX + 1);
}
static void m_hdr_key_empty(qm_envelope_t *e) {
  e->hdr_count = 1;
  e->hdr[0].k = S("");
  e->hdr[0].v = S("voice");
}
static void m_hdr_key_long(qm_envelope_t *e) {
  e->hdr_count = 1;
  e->hdr[0].k = L(QM_NAME_MAX + 1);
  e->hdr[0].v = S("voice");
}
static void m_hdr_dup(qm_envelope_t *e) {
  e->hdr_count = 2;
  e->hdr[0].k = S("channel");
  e->hdr[0].v = S("voice");
  e->hdr[1].k = S("channel");
  e->hdr[1].v = S("chat");
}
static void m_body_array(qm_envelope_t *e) {
  e->body.type = MSGPACK_OBJECT_ARRAY;
  e->body.via.array.size = 0;
  e->body.via.array.ptr = NULL;
}
static void m_packed_array(qm_envelope_t *e) {
  e->body_packed = "\x91\x01";
  e->body_packed_len = 2;
}
static void m_packed_trailing(qm_envelope_t *e) {
  e->body_packed = "\x80\x01";
  e->body_packed_len = 2;
}
static void m_packed_truncated(qm_envelope_t *e) {
  e->body_packed = "\x81\xa4" "la";
  e->body_packed_len = 4;
}
static void m_packed_len_only(qm_envelope_t *e) { e->body_packed_len = 5; }
static void m_packed_ptr_only(qm_envelope_t *e) { e->body_packed = "\x80"; }
static void m_packed_deep(qm_envelope_t *e) {
  static char deep[64];
  deep[0] = (char)0x81;
  deep[1] = (char)0xa1;
  deep[2] = 'x';
  for (int i = 3; i < 63; i++) deep[i] = (char)0x91;
  deep[63] = 0x01;
  e->body_packed = deep;
  e->body_packed_len = sizeof deep;
}

static void test_encode_rejects(void **state) {
  (void)state;
  memset(g_long, 'a', sizeof g_long);
  static const struct {
    const char *name;
    mutate_fn fn;
  } cases[] = {
      {"type empty", m_type_empty},         {"type too long", m_type_long},
      {"type upper case", m_type_upper},    {"type with space", m_type_space},
      {"type with slash", m_type_slash},    {"type NULL pointer", m_type_null},
      {"src empty", m_src_empty},           {"src too long", m_src_long},
      {"key too long", m_key_long},         {"key NULL with length", m_key_null},
      {"ts zero", m_ts_zero},               {"v two", m_v_two},
      {"v zero (not initialised)", m_v_zero}, {"hdr count", m_hdr_count},
      {"hdr value too long", m_hdr_value_long}, {"hdr key empty", m_hdr_key_empty},
      {"hdr key too long", m_hdr_key_long}, {"hdr key twice", m_hdr_dup},
      {"body not a map", m_body_array},     {"body_packed an array", m_packed_array},
      {"body_packed trailing", m_packed_trailing},
      {"body_packed truncated", m_packed_truncated},
      {"body_packed_len without pointer", m_packed_len_only},
      {"body_packed without length", m_packed_ptr_only},
      {"body_packed too deep", m_packed_deep},
  };
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_sbuffer_write(&sb, "xyz", 3);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qm_envelope_t e;
    qm_envelope_init(&e);
    e.type = S("evaluation.completed");
    e.src = S("reporting");
    e.key = S("k");
    cases[i].fn(&e);
    int rc = qm_envelope_encode(&sb, &e);
    if (rc != QM_EINVAL) print_error("case \"%s\": got %s\n", cases[i].name, qm_err_name(rc));
    assert_int_equal(rc, QM_EINVAL);
    /* A refused envelope leaves nothing behind in the buffer. */
    assert_int_equal(sb.size, 3);
  }
  assert_int_equal(qm_envelope_encode(NULL, NULL), QM_EINVAL);
  msgpack_sbuffer_destroy(&sb);
}

/* ----------------------------------------------------------------- ids -- */

static void assert_v7(const qm_id_t *id) {
  assert_int_equal(id->b[6] >> 4, 7);
  assert_int_equal(id->b[8] >> 6, 2);
}

static void test_id_new_ordered(void **state) {
  (void)state;
  enum { N = 100000 };
  qm_id_t *ids = malloc(N * sizeof *ids);
  assert_non_null(ids);
  uint64_t before = qm_now_ms();
  for (int i = 0; i < N; i++) qm_id_new(&ids[i]);
  uint64_t after = qm_now_ms();
  for (int i = 0; i < N; i++) {
    assert_v7(&ids[i]);
    if (i > 0 && qm_id_cmp(&ids[i - 1], &ids[i]) >= 0) {
      char a[37], b[37];
      print_error("id %d not after id %d: %s then %s\n", i, i - 1, qm_id_format(&ids[i - 1], a),
                  qm_id_format(&ids[i], b));
      fail();
    }
  }
  /* The counter borrows at most one millisecond per 4096 ids. */
  assert_true(qm_id_time_ms(&ids[0]) >= before);
  assert_true(qm_id_time_ms(&ids[0]) <= after);
  assert_true(qm_id_time_ms(&ids[N - 1]) <= after + N / 4096 + 1);
  /* The random part really varies. */
  assert_memory_not_equal(ids[0].b + 9, ids[1].b + 9, 7);
  free(ids);
}

typedef struct {
  qm_id_t ids[25000];
  int ordered;
} thread_ids_t;

static void *make_ids(void *arg) {
  thread_ids_t *t = arg;
  t->ordered = 1;
  for (int i = 0; i < 25000; i++) {
    qm_id_new(&t->ids[i]);
    if (i > 0 && qm_id_cmp(&t->ids[i - 1], &t->ids[i]) >= 0) t->ordered = 0;
  }
  return NULL;
}

static int cmp_ids(const void *a, const void *b) { return qm_id_cmp(a, b); }

static void test_id_new_threads_unique(void **state) {
  (void)state;
  enum { T = 4 };
  thread_ids_t *t = calloc(T, sizeof *t);
  assert_non_null(t);
  pthread_t th[T];
  for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&th[i], NULL, make_ids, &t[i]), 0);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  qm_id_t *all = malloc(T * 25000 * sizeof *all);
  assert_non_null(all);
  for (int i = 0; i < T; i++) {
    assert_true(t[i].ordered);
    memcpy(all + i * 25000, t[i].ids, sizeof t[i].ids);
  }
  qsort(all, T * 25000, sizeof *all, cmp_ids);
  for (int i = 1; i < T * 25000; i++) assert_int_not_equal(qm_id_cmp(&all[i - 1], &all[i]), 0);
  free(all);
  free(t);
}

static void test_id_new_after_fork(void **state) {
  (void)state;
  /* Prime this thread's random buffer, then make one id on each side of a
   * fork: the child must not replay the parent's buffered random bytes. */
  qm_id_t prime, mine, child;
  qm_id_new(&prime);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    qm_id_t id;
    qm_id_new(&id);
    _exit(write(fds[1], id.b, 16) == 16 ? 0 : 1);
  }
  qm_id_new(&mine);
  assert_int_equal(read(fds[0], child.b, 16), 16);
  int status = 0;
  waitpid(pid, &status, 0);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fds[0]);
  close(fds[1]);
  assert_v7(&child);
  assert_memory_not_equal(mine.b + 9, child.b + 9, 7);
}

static void test_id_derive(void **state) {
  (void)state;
  qm_id_t cause, a, b, c, d, e, f;
  qm_id_new(&cause);
  qm_id_derive(&a, &cause, "evaluation.scored", 17);
  qm_id_derive(&b, &cause, "evaluation.scored", 17);
  qm_id_derive(&c, &cause, "alert.raised", 12);
  qm_id_derive(&d, &cause, NULL, 0);
  assert_int_equal(qm_id_cmp(&a, &b), 0);
  assert_int_not_equal(qm_id_cmp(&a, &c), 0);
  assert_int_not_equal(qm_id_cmp(&a, &d), 0);
  assert_int_not_equal(qm_id_cmp(&a, &cause), 0);
  /* Only the salt bytes given count, not what follows them. */
  qm_id_derive(&e, &cause, "evaluation.scoredXYZ", 17);
  assert_int_equal(qm_id_cmp(&a, &e), 0);
  /* A different cause gives a different id for the same type. */
  qm_id_t cause2 = cause;
  cause2.b[15] ^= 1;
  qm_id_derive(&f, &cause2, "evaluation.scored", 17);
  assert_int_not_equal(qm_id_cmp(&a, &f), 0);
  /* The derived id keeps the cause's time and says it is version 8. */
  assert_true(qm_id_time_ms(&a) == qm_id_time_ms(&cause));
  assert_memory_equal(a.b, cause.b, 6);
  assert_int_equal(a.b[6] >> 4, 8);
  assert_int_equal(a.b[8] >> 6, 2);
  /* Deriving in place gives the same as deriving into another id. */
  qm_id_t inplace = cause;
  qm_id_derive(&inplace, &inplace, "evaluation.scored", 17);
  assert_int_equal(qm_id_cmp(&inplace, &a), 0);
}

static void test_id_time_and_now(void **state) {
  (void)state;
  assert_true(qm_id_time_ms(&k_id) == 0x0190d6f23a4bull);
  uint64_t now = qm_now_ms();
  uint64_t wall = (uint64_t)time(NULL) * 1000u;
  assert_true(now + 2000 > wall && now < wall + 2000);
}

static void test_id_format_parse(void **state) {
  (void)state;
  char buf[37];
  assert_string_equal(qm_id_format(&k_id, buf), "0190d6f2-3a4b-7001-8011-223344556677");
  qm_id_t p;
  assert_int_equal(qm_id_parse(&p, "0190d6f2-3a4b-7001-8011-223344556677"), 0);
  assert_int_equal(qm_id_cmp(&p, &k_id), 0);
  memset(&p, 0, sizeof p);
  assert_int_equal(qm_id_parse(&p, "0190d6f23a4b70018011223344556677"), 0);
  assert_int_equal(qm_id_cmp(&p, &k_id), 0);
  memset(&p, 0, sizeof p);
  assert_int_equal(qm_id_parse(&p, "0190D6F2-3A4B-7001-8011-223344556677"), 0);
  assert_int_equal(qm_id_cmp(&p, &k_id), 0);

  for (int i = 0; i < 1000; i++) {
    qm_id_t id, back;
    qm_id_new(&id);
    qm_id_format(&id, buf);
    assert_int_equal(strlen(buf), 36);
    for (int j = 0; j < 36; j++) {
      if (j == 8 || j == 13 || j == 18 || j == 23)
        assert_int_equal(buf[j], '-');
      else
        assert_true((buf[j] >= '0' && buf[j] <= '9') || (buf[j] >= 'a' && buf[j] <= 'f'));
    }
    assert_int_equal(buf[14], '7');
    assert_int_equal(qm_id_parse(&back, buf), 0);
    assert_int_equal(qm_id_cmp(&back, &id), 0);
  }

  static const char *bad[] = {
      "",
      "0190d6f2-3a4b-7001-8011-22334455667",   /* 35 */
      "0190d6f2-3a4b-7001-8011-2233445566778", /* 37 */
      "0190d6f2-3a4b-7001-8011-22334455667g",
      "0190d6f23-a4b-7001-8011-223344556677",
      "0190d6f2_3a4b_7001_8011_223344556677",
      "0190d6f2-3a4b-7001-8011-22334455667 ",
      "0190d6f23a4b7001801122334455667",   /* 31 */
      "0190d6f23a4b700180112233445566778", /* 33 */
      "0190d6f23a4b7001801122334455667-",
      "{0190d6f2-3a4b-7001-8011-2233445566}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    qm_id_t untouched = k_id;
    if (qm_id_parse(&untouched, bad[i]) != QM_EINVAL) {
      print_error("parse accepted \"%s\"\n", bad[i]);
      fail();
    }
    assert_int_equal(qm_id_cmp(&untouched, &k_id), 0);
  }
  assert_int_equal(qm_id_parse(&p, NULL), QM_EINVAL);
}

static void test_str_eq(void **state) {
  (void)state;
  assert_true(qm_str_eq(S("abc"), "abc"));
  assert_false(qm_str_eq(S("abc"), "abcd"));
  assert_false(qm_str_eq(S("abcd"), "abc"));
  qm_str_t part = {"abcdef", 3};
  assert_true(qm_str_eq(part, "abc"));
  qm_str_t empty = {NULL, 0};
  assert_true(qm_str_eq(empty, ""));
  assert_false(qm_str_eq(empty, "a"));
}

/* ------------------------------------------------------ malformed input -- */

static void test_decode_not_a_map(void **state) {
  (void)state;
  expect_decode("\x92\x01\x02", 3, QM_EDECODE, "envelope is not a map (got array)");
  expect_decode("\xa2hi", 3, QM_EDECODE, "envelope is not a map (got str)");
  expect_decode("\x2a", 1, QM_EDECODE, "envelope is not a map (got positive int)");
  expect_decode("\xc0", 1, QM_EDECODE, "envelope is not a map (got nil)");
  expect_decode("\xc1", 1, QM_EDECODE,
                "malformed envelope: byte 0xc1 at offset 0 is not MessagePack");
  /* The zero-length map is a map, just an empty one. */
  expect_decode("\x80", 1, QM_EMISSING, "missing field \"v\"");
}

static void test_decode_invalid_byte_inside(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  build_with(&sb, (fld_t)RAW("body", "\x81\xa1x\xc1"));
  char msg[128];
  snprintf(msg, sizeof msg, "malformed envelope: byte 0xc1 at offset %zu is not MessagePack",
           sb.size - 1);
  expect_decode(sb.data, sb.size, QM_EDECODE, msg);
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_truncated_everywhere(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  valid_rich(&sb);
  expect_decode(sb.data, sb.size, 0, NULL);
  expect_decode(sb.data, 0, QM_ETRUNCATED, "empty message");
  for (size_t i = 1; i < sb.size; i++) {
    char msg[96];
    snprintf(msg, sizeof msg, "message truncated: %zu bytes end inside the envelope", i);
    expect_decode(sb.data, i, QM_ETRUNCATED, msg);
  }
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_trailing(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  valid_rich(&sb);
  size_t n = sb.size;
  msgpack_sbuffer_write(&sb, "\x01\x02\x03", 3);
  expect_decode(sb.data, sb.size, QM_ETRAILING, "3 trailing bytes after the envelope");
  /* Two envelopes in one frame are one too many. */
  msgpack_sbuffer_write(&sb, sb.data, n);
  char msg[64];
  snprintf(msg, sizeof msg, "%zu trailing bytes after the envelope", n + 3);
  expect_decode(sb.data, sb.size, QM_ETRAILING, msg);
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_oversize(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  valid_rich(&sb);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, sb.size), 0);
  dec_done(&d);
  assert_int_equal(decode(&d, sb.data, sb.size, sb.size - 1), QM_ETOOBIG);
  char msg[96];
  snprintf(msg, sizeof msg, "message of %zu bytes exceeds the limit of %zu bytes", sb.size,
           sb.size - 1);
  assert_string_equal(d.err.msg, msg);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);

  /* max_size 0 means 4 MiB. */
  size_t big = QM_ENVELOPE_MAX_DEFAULT + 1;
  char *buf = calloc(1, big);
  assert_non_null(buf);
  assert_int_equal(decode(&d, buf, big, 0), QM_ETOOBIG);
  assert_string_equal(d.err.msg, "message of 4194305 bytes exceeds the limit of 4194304 bytes");
  dec_done(&d);
  free(buf);
}

static void test_decode_version(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  build_with(&sb, (fld_t)RAW("v", "\x07"));
  expect_decode(sb.data, sb.size, QM_EVERSION,
                "unsupported envelope version 7 (this qmesh reads 1)");
  msgpack_sbuffer_destroy(&sb);
  build_with(&sb, (fld_t)RAW("v", "\x00"));
  expect_decode(sb.data, sb.size, QM_EVERSION,
                "unsupported envelope version 0 (this qmesh reads 1)");
  msgpack_sbuffer_destroy(&sb);
  build_with(&sb, (fld_t)RAW("v", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff"));
  expect_decode(sb.data, sb.size, QM_EVERSION,
                "unsupported envelope version 18446744073709551615 (this qmesh reads 1)");
  msgpack_sbuffer_destroy(&sb);

  /* A newer envelope with a field this version does not know is reported as
   * a version problem, wherever v sits in the map. */
  const fld_t newer[] = {RAW("prio", "\x01"), F_ID, F_TYPE, F_SRC, F_TS, F_KEY, F_BODY,
                         RAW("v", "\x02")};
  build(&sb, newer, 8);
  expect_decode(sb.data, sb.size, QM_EVERSION,
                "unsupported envelope version 2 (this qmesh reads 1)");
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_missing_each(void **state) {
  (void)state;
  for (size_t skip = 0; skip < N_STD; skip++) {
    fld_t f[N_STD];
    size_t n = 0;
    for (size_t i = 0; i < N_STD; i++)
      if (i != skip) f[n++] = k_std[i];
    msgpack_sbuffer sb;
    build(&sb, f, n);
    char msg[64];
    snprintf(msg, sizeof msg, "missing field \"%s\"", k_std[skip].key);
    expect_decode(sb.data, sb.size, QM_EMISSING, msg);
    msgpack_sbuffer_destroy(&sb);
  }
  /* hdr is the one optional field. */
  msgpack_sbuffer sb;
  build(&sb, k_std, N_STD);
  expect_decode(sb.data, sb.size, 0, NULL);
  msgpack_sbuffer_destroy(&sb);
  build_with(&sb, (fld_t)F_HDR);
  expect_decode(sb.data, sb.size, 0, NULL);
  msgpack_sbuffer_destroy(&sb);
}

static void p_id15(msgpack_packer *pk) { msgpack_pack_bin_with_body(pk, k_id.b, 15); }
static void p_id17(msgpack_packer *pk) {
  msgpack_pack_bin(pk, 17);
  msgpack_pack_bin_body(pk, "0123456789abcdefg", 17);
}
static void p_str_n(msgpack_packer *pk, size_t n) {
  memset(g_long, 'a', sizeof g_long);
  msgpack_pack_str_with_body(pk, g_long, n);
}
static void p_type65(msgpack_packer *pk) { p_str_n(pk, QM_TYPE_MAX + 1); }
static void p_src33(msgpack_packer *pk) { p_str_n(pk, QM_NAME_MAX + 1); }
static void p_key257(msgpack_packer *pk) { p_str_n(pk, QM_KEY_MAX + 1); }
static void p_hdr17(msgpack_packer *pk) {
  msgpack_pack_map(pk, QM_HDR_MAX + 1);
  for (int i = 0; i < QM_HDR_MAX + 1; i++) {
    char k[16];
    int n = snprintf(k, sizeof k, "h%d", i);
    msgpack_pack_str_with_body(pk, k, (size_t)n);
    msgpack_pack_str_with_body(pk, "x", 1);
  }
}
static void p_hdr_value257(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  msgpack_pack_str_with_body(pk, "channel", 7);
  p_str_n(pk, QM_HDR_VALUE_MAX + 1);
}
static void p_hdr_key33(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  p_str_n(pk, QM_NAME_MAX + 1);
  msgpack_pack_str_with_body(pk, "x", 1);
}

static void test_decode_wrong_types(void **state) {
  (void)state;
  static const struct {
    fld_t with;
    int code;
    const char *msg;
  } cases[] = {
      {RAW("v", "\xa3" "one"), QM_EFIELDTYPE, "field \"v\": expected positive int, got str"},
      {RAW("v", "\xff"), QM_EFIELDTYPE, "field \"v\": expected positive int, got negative int"},
      {RAW("v", "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"), QM_EFIELDTYPE,
       "field \"v\": expected positive int, got float64"},
      {RAW("id", "\xb0" "0123456789abcdef"), QM_EFIELDTYPE,
       "field \"id\": expected 16-byte bin, got str"},
      {FN("id", p_id15), QM_EFIELDTYPE, "field \"id\": expected 16-byte bin, got 15-byte bin"},
      {FN("id", p_id17), QM_EFIELDTYPE, "field \"id\": expected 16-byte bin, got 17-byte bin"},
      {RAW("id", "\xc0"), QM_EFIELDTYPE, "field \"id\": expected 16-byte bin, got nil"},
      {RAW("type", "\x05"), QM_EFIELDTYPE, "field \"type\": expected str, got positive int"},
      {RAW("type", "\xa0"), QM_EFIELDTYPE, "field \"type\": empty, expected 1 to 64 bytes"},
      {FN("type", p_type65), QM_EFIELDTYPE, "field \"type\": 65 bytes, at most 64"},
      {RAW("type", "\xab" "Interaction"), QM_EFIELDTYPE,
       "field \"type\": byte 0x49 at offset 0 not allowed (valid: a-z 0-9 . _ -)"},
      {RAW("type", "\xa3" "a b"), QM_EFIELDTYPE,
       "field \"type\": byte 0x20 at offset 1 not allowed (valid: a-z 0-9 . _ -)"},
      {RAW("type", "\xc4\x03" "abc"), QM_EFIELDTYPE, "field \"type\": expected str, got bin"},
      {RAW("src", "\xc3"), QM_EFIELDTYPE, "field \"src\": expected str, got bool"},
      {RAW("src", "\xa0"), QM_EFIELDTYPE, "field \"src\": empty, expected 1 to 32 bytes"},
      {FN("src", p_src33), QM_EFIELDTYPE, "field \"src\": 33 bytes, at most 32"},
      {RAW("ts", "\xa3" "now"), QM_EFIELDTYPE, "field \"ts\": expected positive int, got str"},
      {RAW("ts", "\x00"), QM_EFIELDTYPE, "field \"ts\": expected positive int, got 0"},
      {RAW("ts", "\xfb"), QM_EFIELDTYPE, "field \"ts\": expected positive int, got negative int"},
      {RAW("ts", "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"), QM_EFIELDTYPE,
       "field \"ts\": expected positive int, got float64"},
      {RAW("key", "\xc0"), QM_EFIELDTYPE, "field \"key\": expected str, got nil"},
      {RAW("key", "\x91\xa1" "k"), QM_EFIELDTYPE, "field \"key\": expected str, got array"},
      {FN("key", p_key257), QM_EFIELDTYPE, "field \"key\": 257 bytes, at most 256"},
      {RAW("body", "\x91\x01"), QM_EFIELDTYPE, "field \"body\": expected map, got array"},
      {RAW("body", "\xc0"), QM_EFIELDTYPE, "field \"body\": expected map, got nil"},
      {RAW("body", "\xd4\x01\x02"), QM_EFIELDTYPE, "field \"body\": expected map, got ext"},
      {RAW("hdr", "\x90"), QM_EFIELDTYPE, "field \"hdr\": expected map, got array"},
      {RAW("hdr", "\x81\xa7" "channel" "\x07"), QM_EFIELDTYPE,
       "field \"hdr\": value of \"channel\": expected str, got positive int"},
      {RAW("hdr", "\x81\xa7" "channel" "\x81\xa1" "x" "\xa1" "y"), QM_EFIELDTYPE,
       "field \"hdr\": value of \"channel\": expected str, got map"},
      {RAW("hdr", "\x81\x05\xa1" "x"), QM_EFIELDTYPE,
       "field \"hdr\": key of type positive int, expected str"},
      {RAW("hdr", "\x81\xa0\xa1" "x"), QM_EFIELDTYPE,
       "field \"hdr\": key \"\" is 0 bytes, expected 1 to 32"},
      {FN("hdr", p_hdr_key33), QM_EFIELDTYPE,
       "field \"hdr\": key \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 33 bytes, expected 1 to 32"},
      {FN("hdr", p_hdr17), QM_EFIELDTYPE, "field \"hdr\": 17 entries, at most 16"},
      {FN("hdr", p_hdr_value257), QM_EFIELDTYPE,
       "field \"hdr\": value of \"channel\": 257 bytes, at most 256"},
      {RAW("hdr", "\x82\xa7" "channel" "\xa5" "voice" "\xa7" "channel" "\xa4" "chat"),
       QM_EDUPFIELD, "field \"hdr\": key \"channel\" given twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    msgpack_sbuffer sb;
    build_with(&sb, cases[i].with);
    expect_decode(sb.data, sb.size, cases[i].code, cases[i].msg);
    msgpack_sbuffer_destroy(&sb);
  }
}

static void test_decode_unknown_key(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  build_with(&sb, (fld_t)RAW("prio", "\x01"));
  expect_decode(sb.data, sb.size, QM_EUNKNOWN, "unknown field \"prio\"");
  msgpack_sbuffer_destroy(&sb);
  /* Key text from the wire is escaped and cut short in the message. */
  build_with(&sb, (fld_t)RAW("\x01q\"", "\x01"));
  expect_decode(sb.data, sb.size, QM_EUNKNOWN, "unknown field \"\\x01q\\x22\"");
  msgpack_sbuffer_destroy(&sb);
  build_with(&sb, (fld_t)RAW("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "\x01"));
  expect_decode(sb.data, sb.size, QM_EUNKNOWN,
                "unknown field \"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\"...");
  msgpack_sbuffer_destroy(&sb);
  /* Close to a real name is still unknown. */
  build_with(&sb, (fld_t)RAW("Type", "\xa1" "x"));
  expect_decode(sb.data, sb.size, QM_EUNKNOWN, "unknown field \"Type\"");
  msgpack_sbuffer_destroy(&sb);
  /* A key that is not a string at all. */
  static const char intkey[] = "\x88\x05\x01";
  msgpack_sbuffer_init(&sb);
  msgpack_sbuffer_write(&sb, intkey, 3);
  msgpack_sbuffer full;
  build(&full, k_std, N_STD);
  msgpack_sbuffer_write(&sb, full.data + 1, full.size - 1); /* the 7 fields after the map header */
  expect_decode(sb.data, sb.size, QM_EUNKNOWN,
                "unknown field of type positive int (field names are str)");
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_destroy(&full);
}

static void test_decode_duplicate_key(void **state) {
  (void)state;
  static const char *names[] = {"v", "id", "type", "src", "ts", "key", "body"};
  for (size_t dup = 0; dup < N_STD; dup++) {
    fld_t f[N_STD + 1];
    memcpy(f, k_std, sizeof k_std);
    f[N_STD] = k_std[dup];
    msgpack_sbuffer sb;
    build(&sb, f, N_STD + 1);
    char msg[64];
    snprintf(msg, sizeof msg, "field \"%s\" given twice", names[dup]);
    expect_decode(sb.data, sb.size, QM_EDUPFIELD, msg);
    msgpack_sbuffer_destroy(&sb);
  }
  const fld_t two_hdr[] = {F_V, F_ID, F_TYPE, F_SRC, F_TS, F_KEY, F_HDR, F_BODY, F_HDR};
  msgpack_sbuffer sb;
  build(&sb, two_hdr, 9);
  expect_decode(sb.data, sb.size, QM_EDUPFIELD, "field \"hdr\" given twice");
  msgpack_sbuffer_destroy(&sb);
}

/* body = {"x": n nested one-element arrays around `inner`}. */
static void build_nested(msgpack_sbuffer *sb, size_t n, const char *inner, size_t inner_n) {
  msgpack_sbuffer body;
  msgpack_sbuffer_init(&body);
  msgpack_sbuffer_write(&body, "\x81\xa1x", 3);
  for (size_t i = 0; i < n; i++) msgpack_sbuffer_write(&body, "\x91", 1);
  msgpack_sbuffer_write(&body, inner, inner_n);
  /* Packed by hand: the encoder itself refuses bodies this deep. */
  msgpack_sbuffer head;
  build(&head, k_std, N_STD - 1); /* everything but body */
  head.data[0] = (char)0x87;
  msgpack_sbuffer_init(sb);
  msgpack_sbuffer_write(sb, head.data, head.size);
  msgpack_sbuffer_write(sb, "\xa4" "body", 5);
  msgpack_sbuffer_write(sb, body.data, body.size);
  msgpack_sbuffer_destroy(&head);
  msgpack_sbuffer_destroy(&body);
}

static void test_decode_deep_nesting(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  /* Envelope map + body map + 30 arrays = 32 open containers: the limit. */
  build_nested(&sb, 30, "\x01", 1);
  dec_t d;
  assert_int_equal(decode(&d, sb.data, sb.size, 0), 0);
  const msgpack_object *o = &d.env.body.via.map.ptr[0].val;
  int depth = 0;
  while (o->type == MSGPACK_OBJECT_ARRAY) {
    o = &o->via.array.ptr[0];
    depth++;
  }
  assert_int_equal(depth, 30);
  assert_true(o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == 1);
  dec_done(&d);
  msgpack_sbuffer_destroy(&sb);

  size_t body_at;
  build_nested(&sb, 31, "\x01", 1);
  body_at = sb.size - 1 - 31 - 3;
  char msg[128];
  snprintf(msg, sizeof msg, "malformed envelope: nesting deeper than 32 levels at byte %zu",
           body_at + 3 + 30);
  expect_decode(sb.data, sb.size, QM_EDECODE, msg);
  msgpack_sbuffer_destroy(&sb);

  /* Even an empty container one level too deep is refused (msgpack-c counts
   * it before it looks at its size). */
  build_nested(&sb, 30, "\x90", 1);
  expect_decode(sb.data, sb.size, QM_EDECODE, NULL);
  msgpack_sbuffer_destroy(&sb);

  /* 10000 levels: refused at level 33, without recursion or allocation. */
  build_nested(&sb, 10000, "\x01", 1);
  body_at = sb.size - 1 - 10000 - 3;
  snprintf(msg, sizeof msg, "malformed envelope: nesting deeper than 32 levels at byte %zu",
           body_at + 3 + 30);
  expect_decode(sb.data, sb.size, QM_EDECODE, msg);
  msgpack_sbuffer_destroy(&sb);

  /* Deep and truncated: truncation is only known at the end, so the depth
   * error comes first. */
  build_nested(&sb, 10000, "", 0);
  expect_decode(sb.data, sb.size, QM_EDECODE, NULL);
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_lying_lengths(void **state) {
  (void)state;
  /* A map that claims four billion entries in five bytes: msgpack-c would
   * allocate 128 GiB for it before reading one. */
  expect_decode("\xdf\xff\xff\xff\xff", 5, QM_ETRUNCATED,
                "message truncated: 5 bytes end inside the envelope");
  expect_decode("\xdd\x7f\xff\xff\xff\x01\x02", 7, QM_ETRUNCATED,
                "message truncated: 7 bytes end inside the envelope");
  expect_decode("\xdb\xff\xff\xff\xff" "abc", 8, QM_ETRUNCATED, NULL);
  expect_decode("\xc6\xff\xff\xff\xff", 5, QM_ETRUNCATED, NULL);
  expect_decode("\xc9\xff\xff\xff\xff\x01", 6, QM_ETRUNCATED, NULL);

  /* The same lie inside an otherwise valid envelope's body. */
  msgpack_sbuffer sb;
  build_with(&sb, (fld_t)RAW("body", "\x81\xa1" "x" "\xdd\x10\x00\x00\x00\x01\x01\x01"));
  expect_decode(sb.data, sb.size, QM_ETRUNCATED, NULL);
  msgpack_sbuffer_destroy(&sb);
  /* Containers whose promises each fit in the bytes left but together do
   * not: [[1, 1, 1], <missing>]. */
  build_with(&sb, (fld_t)RAW("body", "\x81\xa1" "x" "\x92\x93\x01\x01\x01"));
  expect_decode(sb.data, sb.size, QM_ETRUNCATED, NULL);
  msgpack_sbuffer_destroy(&sb);
}

static void test_decode_bad_arguments(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  valid_rich(&sb);
  qm_envelope_t e;
  qm_error_t err;
  assert_int_equal(qm_envelope_decode(sb.data, sb.size, 0, NULL, &e, &err), QM_EINVAL);
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  assert_int_equal(qm_envelope_decode(sb.data, sb.size, 0, &z, NULL, &err), QM_EINVAL);
  assert_int_equal(qm_envelope_decode(NULL, 10, 0, &z, &e, &err), QM_EINVAL);
  /* err is optional. */
  assert_int_equal(qm_envelope_decode(sb.data, sb.size - 1, 0, &z, &e, NULL), QM_ETRUNCATED);
  assert_int_equal(qm_envelope_decode(sb.data, sb.size, 0, &z, &e, NULL), 0);
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&sb);
}

/* --------------------------------------------------- random and mutated -- */

static uint64_t g_rng;
static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static int is_decode_error(int rc) {
  switch (rc) {
  case QM_ETRUNCATED: case QM_EDECODE: case QM_ETRAILING: case QM_EVERSION:
  case QM_EFIELDTYPE: case QM_EMISSING: case QM_EUNKNOWN: case QM_EDUPFIELD:
    return 1;
  }
  return 0;
}

/* Decodes buf; on success re-encodes, decodes again and compares. Returns 1
 * when the input was accepted. */
static int hostile(const char *buf, size_t len) {
  char *copy = malloc(len ? len : 1);
  assert_non_null(copy);
  memcpy(copy, buf, len);
  dec_t d;
  int rc = decode(&d, copy, len, 0);
  if (rc != 0) {
    if (!is_decode_error(rc)) print_error("unexpected %s: %s\n", qm_err_name(rc), d.err.msg);
    assert_true(is_decode_error(rc));
    assert_true(d.err.msg[0] != '\0');
  } else {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(qm_envelope_encode(&sb, &d.env), 0);
    dec_t d2;
    assert_int_equal(decode(&d2, sb.data, sb.size, 0), 0);
    assert_env_equal(&d.env, &d2.env);
    dec_done(&d2);
    msgpack_sbuffer_destroy(&sb);
  }
  dec_done(&d);
  free(copy);
  return rc == 0;
}

static void test_random_garbage(void **state) {
  (void)state;
  g_rng = 0x9e3779b97f4a7c15ull;
  char buf[512];
  for (int i = 0; i < 100000; i++) {
    size_t len = rnd() % sizeof buf;
    for (size_t j = 0; j < len; j++) buf[j] = (char)rnd();
    /* Half of them start as a map so the walk gets past the first byte. */
    if (len && (i & 1)) buf[0] = (char)(0x80 | (rnd() % 16));
    hostile(buf, len);
  }
}

static void test_mutated_envelopes(void **state) {
  (void)state;
  g_rng = 0x2545f4914f6cdd1dull;
  msgpack_sbuffer sb;
  valid_rich(&sb);
  char *buf = malloc(sb.size + 8);
  assert_non_null(buf);
  int accepted = 0;
  for (int i = 0; i < 100000; i++) {
    memcpy(buf, sb.data, sb.size);
    size_t len = sb.size;
    int edits = 1 + (int)(rnd() % 4);
    for (int k = 0; k < edits; k++) {
      size_t at = rnd() % len;
      switch (rnd() % 4) {
      case 0: buf[at] = (char)rnd(); break;
      case 1: buf[at] ^= (char)(1u << (rnd() % 8)); break;
      case 2: buf[at] = (char)(rnd() & 1 ? 0x00 : 0xff); break;
      case 3: if (len > 1) len = at ? at : 1; break;
      }
    }
    accepted += hostile(buf, len);
  }
  /* Some mutations land in the body or a string and keep it valid, which
   * is what exercises the re-encode path above. */
  assert_true(accepted > 100);
  free(buf);
  msgpack_sbuffer_destroy(&sb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_without_hdr),
      cmocka_unit_test(test_roundtrip_with_hdr),
      cmocka_unit_test(test_roundtrip_body_object),
      cmocka_unit_test(test_roundtrip_body_packed),
      cmocka_unit_test(test_encode_appends),
      cmocka_unit_test(test_encode_limits_accepted),
      cmocka_unit_test(test_encode_rejects),
      cmocka_unit_test(test_id_new_ordered),
      cmocka_unit_test(test_id_new_threads_unique),
      cmocka_unit_test(test_id_new_after_fork),
      cmocka_unit_test(test_id_derive),
      cmocka_unit_test(test_id_time_and_now),
      cmocka_unit_test(test_id_format_parse),
      cmocka_unit_test(test_str_eq),
      cmocka_unit_test(test_decode_not_a_map),
      cmocka_unit_test(test_decode_invalid_byte_inside),
      cmocka_unit_test(test_decode_truncated_everywhere),
      cmocka_unit_test(test_decode_trailing),
      cmocka_unit_test(test_decode_oversize),
      cmocka_unit_test(test_decode_version),
      cmocka_unit_test(test_decode_missing_each),
      cmocka_unit_test(test_decode_wrong_types),
      cmocka_unit_test(test_decode_unknown_key),
      cmocka_unit_test(test_decode_duplicate_key),
      cmocka_unit_test(test_decode_deep_nesting),
      cmocka_unit_test(test_decode_lying_lengths),
      cmocka_unit_test(test_decode_bad_arguments),
      cmocka_unit_test(test_random_garbage),
      cmocka_unit_test(test_mutated_envelopes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
