/*
 * envelope.c: the envelope codec and message ids (see envelope.h).
 *
 * Every message on the bus passes through qm_envelope_decode at least once,
 * on bytes that came from the network or from a store, so the decoder is
 * written for hostile input first and speed second. It works in two steps:
 *
 *  1. qm__scan walks the raw MessagePack bytes without allocating. It finds
 *     where the first object ends (so truncation and trailing bytes get their
 *     own errors), refuses nesting msgpack-c cannot handle, and refuses any
 *     container whose declared element count exceeds the bytes that are left.
 *     That last rule matters: msgpack-c allocates a container's elements
 *     before reading them, so a five-byte "map of 4 billion entries" would
 *     otherwise ask the zone for 128 GiB. After the scan, everything
 *     msgpack_unpack allocates is bounded by a small multiple of `len`.
 *  2. msgpack_unpack builds the object tree in the caller's zone, and the
 *     field walk checks each key against the envelope schema.
 *
 * Ids follow the UUIDv7 layout (48-bit milliseconds, version 7, a 12-bit
 * per-thread counter, variant 10, 62 random bits); derived ids keep the
 * cause's milliseconds and use version 8 with BLAKE2b for the rest.
 */
#include "envelope.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* libmsgpackc is built with MSGPACK_EMBED_STACK_SIZE 32: it keeps at most 32
 * containers open and fails with a misleading "out of memory" when a 33rd
 * starts (even an empty one). The scan refuses the same inputs first, with a
 * message that says what is wrong. The top-level map and the body map count,
 * so a body can nest 30 more levels. */
#define QM__NEST_MAX 32

/* ---------------------------------------------------------------- ids -- */

static pthread_once_t g_sodium_once = PTHREAD_ONCE_INIT;
/* Bumped in a forked child so that its threads do not reuse random bytes
 * buffered by the parent (ids made in both processes would then differ only
 * by chance in the counter). */
static atomic_uint g_fork_gen = 1;

static void qm__after_fork_child(void) {
  atomic_fetch_add(&g_fork_gen, 1);
}

static void qm__sodium_init(void) {
  if (sodium_init() < 0) {
    /* Without a random source no id is unique; nothing sensible can run. */
    fputs("qmesh: sodium_init failed: no source of randomness\n", stderr);
    abort();
  }
  pthread_atfork(NULL, NULL, qm__after_fork_child);
}

/* randombytes_buf costs a system call (about 1 us here), which would cap id
 * creation near the bus's target rate, so each thread draws 512 bytes at a
 * time and hands out 8 per id. */
#define QM__RAND_BUF 512
static _Thread_local struct {
  unsigned gen;
  size_t used;
  uint8_t b[QM__RAND_BUF];
  uint64_t last_ms; /* milliseconds in this thread's previous id */
  uint32_t counter; /* 12-bit sequence within last_ms */
} t_ids;

static void qm__random8(uint8_t out[8]) {
  unsigned gen = atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
  if (t_ids.gen != gen || t_ids.used + 8 > QM__RAND_BUF) {
    randombytes_buf(t_ids.b, QM__RAND_BUF);
    t_ids.used = 0;
    t_ids.gen = gen;
  }
  memcpy(out, t_ids.b + t_ids.used, 8);
  sodium_memzero(t_ids.b + t_ids.used, 8);
  t_ids.used += 8;
}

uint64_t qm_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void qm__put_ms(qm_id_t *id, uint64_t ms) {
  for (int i = 0; i < 6; i++) id->b[i] = (uint8_t)(ms >> (40 - 8 * i));
}

void qm_id_new(qm_id_t *id) {
  pthread_once(&g_sodium_once, qm__sodium_init);
  uint64_t now = qm_now_ms() & 0xffffffffffffull;
  /* Within one thread ids only go up: a new millisecond restarts the counter,
   * the same millisecond (or a clock that stepped back) increments it, and a
   * counter that runs out borrows the next millisecond. The borrowed time is
   * paid back as soon as the clock catches up. */
  if (now > t_ids.last_ms) {
    t_ids.last_ms = now;
    t_ids.counter = 0;
  } else if (++t_ids.counter > 0xfff) {
    t_ids.last_ms++;
    t_ids.counter = 0;
  }
  uint8_t r[8];
  qm__random8(r);
  qm__put_ms(id, t_ids.last_ms);
  id->b[6] = (uint8_t)(0x70 | (t_ids.counter >> 8));
  id->b[7] = (uint8_t)(t_ids.counter & 0xff);
  id->b[8] = (uint8_t)(0x80 | (r[0] & 0x3f));
  memcpy(id->b + 9, r + 1, 7);
}

void qm_id_derive(qm_id_t *id, const qm_id_t *cause, const char *salt, size_t salt_len) {
  pthread_once(&g_sodium_once, qm__sodium_init);
  uint8_t h[16];
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, sizeof h);
  /* The cause id has a fixed length, so cause || salt is unambiguous. */
  crypto_generichash_update(&st, cause->b, sizeof cause->b);
  if (salt && salt_len) crypto_generichash_update(&st, (const unsigned char *)salt, salt_len);
  crypto_generichash_final(&st, h, sizeof h);
  qm_id_t out;
  memcpy(out.b, cause->b, 6);
  memcpy(out.b + 6, h, 10);
  out.b[6] = (uint8_t)(0x80 | (out.b[6] & 0x0f));
  out.b[8] = (uint8_t)(0x80 | (out.b[8] & 0x3f));
  *id = out; /* id may alias cause */
}

uint64_t qm_id_time_ms(const qm_id_t *id) {
  uint64_t ms = 0;
  for (int i = 0; i < 6; i++) ms = (ms << 8) | id->b[i];
  return ms;
}

char *qm_id_format(const qm_id_t *id, char buf[37]) {
  static const char hex[] = "0123456789abcdef";
  char *p = buf;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = hex[id->b[i] >> 4];
    *p++ = hex[id->b[i] & 0x0f];
  }
  *p = '\0';
  return buf;
}

static int qm__hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int qm_id_parse(qm_id_t *id, const char *s) {
  if (!id || !s) return QM_EINVAL;
  size_t n = strnlen(s, 37);
  int dashed = n == 36;
  if (!dashed && n != 32) return QM_EINVAL;
  qm_id_t out;
  size_t j = 0;
  for (int i = 0; i < 16; i++) {
    if (dashed && (i == 4 || i == 6 || i == 8 || i == 10)) {
      if (s[j++] != '-') return QM_EINVAL;
    }
    int hi = qm__hexval(s[j++]);
    int lo = qm__hexval(s[j++]);
    if (hi < 0 || lo < 0) return QM_EINVAL;
    out.b[i] = (uint8_t)(hi << 4 | lo);
  }
  *id = out;
  return 0;
}

int qm_id_cmp(const qm_id_t *a, const qm_id_t *b) {
  int c = memcmp(a->b, b->b, sizeof a->b);
  return (c > 0) - (c < 0);
}

/* -------------------------------------------------------------- views -- */

int qm_str_eq(qm_str_t s, const char *c) {
  size_t n = strlen(c);
  return s.n == n && (n == 0 || memcmp(s.p, c, n) == 0);
}

int qm_envelope_hdr(const qm_envelope_t *e, const char *k, qm_str_t *v) {
  if (!e || !k) return 0;
  size_t n = e->hdr_count <= QM_HDR_MAX ? e->hdr_count : QM_HDR_MAX;
  for (size_t i = 0; i < n; i++) {
    if (qm_str_eq(e->hdr[i].k, k)) {
      if (v) *v = e->hdr[i].v;
      return 1;
    }
  }
  return 0;
}

void qm_envelope_init(qm_envelope_t *e) {
  memset(e, 0, sizeof *e);
  e->v = QM_ENVELOPE_VERSION;
  qm_id_new(&e->id);
  e->ts = qm_now_ms();
}

/* --------------------------------------------------------------- scan -- */

/* Reads a big-endian unsigned integer of w bytes. */
static uint64_t qm__be(const uint8_t *p, size_t w) {
  uint64_t v = 0;
  for (size_t i = 0; i < w; i++) v = (v << 8) | p[i];
  return v;
}

typedef struct qm__scan_result {
  size_t end;    /* offset just after the first object */
  size_t at;     /* where a failure was found */
  int nest;      /* set when the failure is nesting, not a bad byte */
} qm__scan_result_t;

/* Finds the end of the first MessagePack object in p[0..len) without
 * allocating. Returns 0, QM_ETRUNCATED (the bytes stop inside the object, or
 * a container promises more elements than there are bytes left) or
 * QM_EDECODE (an invalid byte or nesting deeper than QM__NEST_MAX). */
static int qm__scan(const uint8_t *p, size_t len, qm__scan_result_t *r) {
  uint64_t left[QM__NEST_MAX + 1]; /* elements still to read per open level */
  int open = 0;                    /* containers currently open */
  uint64_t pending = 1;            /* elements promised and not yet started */
  size_t off = 0;
  left[0] = 1;
  memset(r, 0, sizeof *r);
  while (pending > 0) {
    while (left[open] == 0) open--;
    if (off >= len) goto truncated;
    left[open]--;
    pending--;
    uint8_t b = p[off];
    size_t head = 1;   /* header bytes including b */
    uint64_t skip = 0; /* payload bytes after the header */
    uint64_t items = 0;
    int container = 0;
    if (b <= 0x7f || b >= 0xe0) {
      /* positive and negative fixint */
    } else if (b >= 0xa0 && b <= 0xbf) {
      skip = b & 0x1f; /* fixstr, the most common element of a body */
    } else if (b <= 0x8f) {
      container = 1;
      items = 2u * (b & 0x0f);
    } else if (b <= 0x9f) {
      container = 1;
      items = b & 0x0f;
    } else {
      switch (b) {
      case 0xc0: case 0xc2: case 0xc3: break; /* nil, false, true */
      case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
      case 0xd9: case 0xda: case 0xdb: { /* str 8/16/32 */
        size_t w = (size_t)1 << (b >= 0xd9 ? b - 0xd9 : b - 0xc4);
        if (len - off < 1 + w) goto truncated;
        head = 1 + w;
        skip = qm__be(p + off + 1, w);
        break;
      }
      case 0xc7: case 0xc8: case 0xc9: { /* ext 8/16/32: length, type, data */
        size_t w = (size_t)1 << (b - 0xc7);
        if (len - off < 1 + w) goto truncated;
        head = 1 + w + 1;
        skip = qm__be(p + off + 1, w);
        break;
      }
      case 0xca: skip = 4; break;
      case 0xcb: skip = 8; break;
      case 0xcc: case 0xd0: skip = 1; break;
      case 0xcd: case 0xd1: skip = 2; break;
      case 0xce: case 0xd2: skip = 4; break;
      case 0xcf: case 0xd3: skip = 8; break;
      case 0xd4: skip = 2; break;  /* fixext 1 + type */
      case 0xd5: skip = 3; break;
      case 0xd6: skip = 5; break;
      case 0xd7: skip = 9; break;
      case 0xd8: skip = 17; break;
      case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        size_t w = (b & 1) ? 4 : 2;
        if (len - off < 1 + w) goto truncated;
        head = 1 + w;
        items = qm__be(p + off + 1, w);
        if (b >= 0xde) items *= 2;
        container = 1;
        break;
      }
      default: /* 0xc1 is never used */
        r->at = off;
        return QM_EDECODE;
      }
    }
    if (len - off < head) goto truncated;
    off += head;
    if (skip > len - off) goto truncated;
    off += (size_t)skip;
    if (container) {
      if (open >= QM__NEST_MAX) {
        r->at = off - head;
        r->nest = 1;
        return QM_EDECODE;
      }
      /* Every element takes at least one byte, so a count beyond the bytes
       * left can only be a truncated (or lying) message. */
      if (items > len - off || pending + items > len - off) goto truncated;
      if (items) {
        left[++open] = items;
        pending += items;
      }
    }
  }
  r->end = off;
  return 0;
truncated:
  r->at = len;
  return QM_ETRUNCATED;
}

/* ------------------------------------------------------------- encode -- */

static int qm__type_ok(qm_str_t t) {
  if (t.n < 1 || t.n > QM_TYPE_MAX || !t.p) return 0;
  for (size_t i = 0; i < t.n; i++) {
    char c = t.p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

static int qm__str_ok(qm_str_t s, size_t min, size_t max) {
  return s.n >= min && s.n <= max && (s.p || s.n == 0);
}

static int qm__view_eq(qm_str_t a, qm_str_t b) {
  return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static int qm__pack_str(msgpack_packer *pk, qm_str_t s) {
  int rc = msgpack_pack_str(pk, s.n);
  if (rc == 0 && s.n) rc = msgpack_pack_str_body(pk, s.p, s.n);
  return rc;
}

static int qm__pack_key(msgpack_packer *pk, const char *k, size_t n) {
  int rc = msgpack_pack_str(pk, n);
  return rc ? rc : msgpack_pack_str_body(pk, k, n);
}

#define QM__KEY(pk, lit) qm__pack_key(pk, lit, sizeof lit - 1)

int qm_envelope_encode(msgpack_sbuffer *sb, const qm_envelope_t *e) {
  if (!sb || !e) return QM_EINVAL;
  /* Encode refuses everything decode would refuse, so whatever one service
   * sends, every other service can read. */
  if (e->v != QM_ENVELOPE_VERSION || e->ts == 0) return QM_EINVAL;
  if (!qm__type_ok(e->type) || !qm__str_ok(e->src, 1, QM_NAME_MAX) ||
      !qm__str_ok(e->key, 0, QM_KEY_MAX) || e->hdr_count > QM_HDR_MAX)
    return QM_EINVAL;
  for (size_t i = 0; i < e->hdr_count; i++) {
    if (!qm__str_ok(e->hdr[i].k, 1, QM_NAME_MAX) || !qm__str_ok(e->hdr[i].v, 0, QM_HDR_VALUE_MAX))
      return QM_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (qm__view_eq(e->hdr[i].k, e->hdr[j].k)) return QM_EINVAL;
  }
  int packed_body = e->body_packed != NULL || e->body_packed_len != 0;
  if (packed_body) {
    qm__scan_result_t r;
    if (!e->body_packed || e->body_packed_len == 0) return QM_EINVAL;
    uint8_t b0 = (uint8_t)e->body_packed[0];
    if (!((b0 >= 0x80 && b0 <= 0x8f) || b0 == 0xde || b0 == 0xdf)) return QM_EINVAL;
    if (qm__scan((const uint8_t *)e->body_packed, e->body_packed_len, &r) != 0 ||
        r.end != e->body_packed_len)
      return QM_EINVAL;
  } else if (e->body.type != MSGPACK_OBJECT_MAP && e->body.type != MSGPACK_OBJECT_NIL) {
    return QM_EINVAL;
  }

  size_t start = sb->size;
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  int rc = msgpack_pack_map(&pk, e->hdr_count ? 8 : 7);
  rc = rc ? rc : QM__KEY(&pk, "v");
  rc = rc ? rc : msgpack_pack_uint32(&pk, e->v);
  rc = rc ? rc : QM__KEY(&pk, "id");
  rc = rc ? rc : msgpack_pack_bin(&pk, sizeof e->id.b);
  rc = rc ? rc : msgpack_pack_bin_body(&pk, e->id.b, sizeof e->id.b);
  rc = rc ? rc : QM__KEY(&pk, "type");
  rc = rc ? rc : qm__pack_str(&pk, e->type);
  rc = rc ? rc : QM__KEY(&pk, "src");
  rc = rc ? rc : qm__pack_str(&pk, e->src);
  rc = rc ? rc : QM__KEY(&pk, "ts");
  rc = rc ? rc : msgpack_pack_uint64(&pk, e->ts);
  rc = rc ? rc : QM__KEY(&pk, "key");
  rc = rc ? rc : qm__pack_str(&pk, e->key);
  if (e->hdr_count) {
    rc = rc ? rc : QM__KEY(&pk, "hdr");
    rc = rc ? rc : msgpack_pack_map(&pk, e->hdr_count);
    for (size_t i = 0; i < e->hdr_count && rc == 0; i++) {
      rc = qm__pack_str(&pk, e->hdr[i].k);
      rc = rc ? rc : qm__pack_str(&pk, e->hdr[i].v);
    }
  }
  rc = rc ? rc : QM__KEY(&pk, "body");
  if (packed_body)
    rc = rc ? rc : msgpack_sbuffer_write(sb, e->body_packed, e->body_packed_len);
  else if (e->body.type == MSGPACK_OBJECT_MAP)
    rc = rc ? rc : msgpack_pack_object(&pk, e->body);
  else
    rc = rc ? rc : msgpack_pack_map(&pk, 0);
  if (rc != 0) {
    /* The only way packing into an sbuffer fails is a failed realloc. Leave
     * the buffer as it was rather than holding half an envelope. */
    sb->size = start;
    return QM_ENOMEM;
  }
  return 0;
}

/* ------------------------------------------------------------- decode -- */

static const char *qm__kind(const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: return "nil";
  case MSGPACK_OBJECT_BOOLEAN: return "bool";
  case MSGPACK_OBJECT_POSITIVE_INTEGER: return "positive int";
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
  case MSGPACK_OBJECT_FLOAT32: return "float32";
  case MSGPACK_OBJECT_FLOAT64: return "float64";
  case MSGPACK_OBJECT_STR: return "str";
  case MSGPACK_OBJECT_ARRAY: return "array";
  case MSGPACK_OBJECT_MAP: return "map";
  case MSGPACK_OBJECT_BIN: return "bin";
  case MSGPACK_OBJECT_EXT: return "ext";
  }
  return "unknown";
}

/* Quotes a string from the wire for an error message: printable ASCII as is,
 * everything else as \xNN, and at most 40 bytes of it so the message stays a
 * readable line whatever the sender put there. */
static const char *qm__quote(char *buf, size_t cap, const char *p, size_t n) {
  size_t o = 0;
  size_t shown = n > 40 ? 40 : n;
  buf[o++] = '"';
  for (size_t i = 0; i < shown && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      buf[o++] = (char)c;
    } else {
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
  }
  buf[o++] = '"';
  if (shown < n && o + 4 < cap) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
  return buf;
}

enum { F_V, F_ID, F_TYPE, F_SRC, F_TS, F_KEY, F_HDR, F_BODY, F_COUNT };
static const char *const qm__fields[F_COUNT] = {"v", "id", "type", "src", "ts", "key", "hdr", "body"};

static int qm__field_index(const msgpack_object *k) {
  if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 || k->via.str.size > 4) return -1;
  /* Every message goes through here eight times: pick the candidate by its
   * first byte, then confirm it. */
  int f;
  switch (k->via.str.ptr[0]) {
  case 'v': f = F_V; break;
  case 'i': f = F_ID; break;
  case 't': f = k->via.str.size == 4 ? F_TYPE : F_TS; break;
  case 's': f = F_SRC; break;
  case 'k': f = F_KEY; break;
  case 'h': f = F_HDR; break;
  case 'b': f = F_BODY; break;
  default: return -1;
  }
  const char *name = qm__fields[f];
  size_t n = strlen(name);
  return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0 ? f : -1;
}

static qm_str_t qm__view(const msgpack_object *o) {
  qm_str_t s = {o->via.str.ptr, o->via.str.size};
  return s;
}

/* Checks a str field's type and length. */
static int qm__want_str(const msgpack_object *o, const char *name, size_t min, size_t max,
                        qm_str_t *out, qm_error_t *err) {
  if (o->type != MSGPACK_OBJECT_STR)
    return qm_error_set(err, QM_EFIELDTYPE, "field \"%s\": expected str, got %s", name, qm__kind(o));
  if (o->via.str.size < min)
    return qm_error_set(err, QM_EFIELDTYPE, "field \"%s\": empty, expected 1 to %zu bytes", name, max);
  if (o->via.str.size > max)
    return qm_error_set(err, QM_EFIELDTYPE, "field \"%s\": %u bytes, at most %zu", name,
                        o->via.str.size, max);
  *out = qm__view(o);
  return 0;
}

static int qm__decode_hdr(const msgpack_object *o, qm_envelope_t *out, qm_error_t *err) {
  char q[200];
  if (o->type != MSGPACK_OBJECT_MAP)
    return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": expected map, got %s", qm__kind(o));
  if (o->via.map.size > QM_HDR_MAX)
    return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": %u entries, at most %d",
                        o->via.map.size, QM_HDR_MAX);
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    const msgpack_object *k = &o->via.map.ptr[i].key;
    const msgpack_object *v = &o->via.map.ptr[i].val;
    if (k->type != MSGPACK_OBJECT_STR)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": key of type %s, expected str",
                          qm__kind(k));
#define QM__HDR_KEY qm__quote(q, sizeof q, k->via.str.ptr, k->via.str.size)
    if (k->via.str.size < 1 || k->via.str.size > QM_NAME_MAX)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": key %s is %u bytes, expected 1 to %d",
                          QM__HDR_KEY, k->via.str.size, QM_NAME_MAX);
    if (v->type != MSGPACK_OBJECT_STR)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": value of %s: expected str, got %s",
                          QM__HDR_KEY, qm__kind(v));
    if (v->via.str.size > QM_HDR_VALUE_MAX)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"hdr\": value of %s: %u bytes, at most %d",
                          QM__HDR_KEY, v->via.str.size, QM_HDR_VALUE_MAX);
    qm_str_t ks = qm__view(k);
    for (uint32_t j = 0; j < i; j++)
      if (qm__view_eq(out->hdr[j].k, ks))
        return qm_error_set(err, QM_EDUPFIELD, "field \"hdr\": key %s given twice", QM__HDR_KEY);
#undef QM__HDR_KEY
    out->hdr[i].k = ks;
    out->hdr[i].v = qm__view(v);
  }
  out->hdr_count = o->via.map.size;
  return 0;
}

static int qm__decode_field(int f, const msgpack_object *v, qm_envelope_t *out, qm_error_t *err) {
  switch (f) {
  case F_V:
    /* The version was checked before the walk; only its type is left. */
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"v\": expected positive int, got %s",
                          qm__kind(v));
    out->v = (uint32_t)v->via.u64;
    return 0;
  case F_ID:
    if (v->type != MSGPACK_OBJECT_BIN)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"id\": expected 16-byte bin, got %s",
                          qm__kind(v));
    if (v->via.bin.size != sizeof out->id.b)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"id\": expected 16-byte bin, got %u-byte bin",
                          v->via.bin.size);
    memcpy(out->id.b, v->via.bin.ptr, sizeof out->id.b);
    return 0;
  case F_TYPE: {
    int rc = qm__want_str(v, "type", 1, QM_TYPE_MAX, &out->type, err);
    if (rc) return rc;
    for (size_t i = 0; i < out->type.n; i++) {
      char c = out->type.p[i];
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        return qm_error_set(err, QM_EFIELDTYPE,
                            "field \"type\": byte 0x%02x at offset %zu not allowed (valid: a-z 0-9 . _ -)",
                            (unsigned char)c, i);
    }
    return 0;
  }
  case F_SRC:
    return qm__want_str(v, "src", 1, QM_NAME_MAX, &out->src, err);
  case F_TS:
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"ts\": expected positive int, got %s",
                          qm__kind(v));
    if (v->via.u64 == 0)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"ts\": expected positive int, got 0");
    out->ts = v->via.u64;
    return 0;
  case F_KEY:
    return qm__want_str(v, "key", 0, QM_KEY_MAX, &out->key, err);
  case F_HDR:
    return qm__decode_hdr(v, out, err);
  case F_BODY:
    if (v->type != MSGPACK_OBJECT_MAP)
      return qm_error_set(err, QM_EFIELDTYPE, "field \"body\": expected map, got %s", qm__kind(v));
    out->body = *v;
    return 0;
  }
  return qm_error_set(err, QM_EINTERNAL, "envelope field %d has no decoder", f);
}

int qm_envelope_decode(const char *buf, size_t len, size_t max_size, msgpack_zone *zone,
                       qm_envelope_t *out, qm_error_t *err) {
  if ((!buf && len) || !zone || !out)
    return qm_error_set(err, QM_EINVAL, "qm_envelope_decode: buffer, zone and output are required");
  memset(out, 0, sizeof *out);
  size_t max = max_size ? max_size : QM_ENVELOPE_MAX_DEFAULT;
  if (len > max)
    return qm_error_set(err, QM_ETOOBIG, "message of %zu bytes exceeds the limit of %zu bytes", len,
                        max);
  if (len == 0) return qm_error_set(err, QM_ETRUNCATED, "empty message");

  qm__scan_result_t r;
  int rc = qm__scan((const uint8_t *)buf, len, &r);
  if (rc == QM_ETRUNCATED)
    return qm_error_set(err, rc, "message truncated: %zu bytes end inside the envelope", len);
  if (rc == QM_EDECODE && r.nest)
    return qm_error_set(err, rc, "malformed envelope: nesting deeper than %d levels at byte %zu",
                        QM__NEST_MAX, r.at);
  if (rc == QM_EDECODE)
    return qm_error_set(err, rc, "malformed envelope: byte 0x%02x at offset %zu is not MessagePack",
                        (unsigned char)buf[r.at], r.at);
  if (r.end < len)
    return qm_error_set(err, QM_ETRAILING, "%zu trailing bytes after the envelope", len - r.end);

  msgpack_object top;
  size_t off = 0;
  switch (msgpack_unpack(buf, len, &off, zone, &top)) {
  case MSGPACK_UNPACK_SUCCESS: break;
  case MSGPACK_UNPACK_EXTRA_BYTES:
    return qm_error_set(err, QM_ETRAILING, "%zu trailing bytes after the envelope", len - off);
  case MSGPACK_UNPACK_CONTINUE:
    return qm_error_set(err, QM_ETRUNCATED, "message truncated: %zu bytes end inside the envelope",
                        len);
  case MSGPACK_UNPACK_NOMEM_ERROR:
    return qm_error_set(err, QM_ENOMEM, "out of memory decoding a %zu-byte envelope", len);
  default:
    return qm_error_set(err, QM_EDECODE, "malformed envelope: not valid MessagePack");
  }
  if (top.type != MSGPACK_OBJECT_MAP)
    return qm_error_set(err, QM_EDECODE, "envelope is not a map (got %s)", qm__kind(&top));

  const msgpack_object_kv *kv = top.via.map.ptr;
  uint32_t n = top.via.map.size;
  /* The version decides what every other key means, so it is judged first:
   * a newer sender's envelope is "unsupported version", not "unknown field". */
  for (uint32_t i = 0; i < n; i++) {
    if (qm__field_index(&kv[i].key) == F_V) {
      const msgpack_object *v = &kv[i].val;
      if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 != QM_ENVELOPE_VERSION)
        return qm_error_set(err, QM_EVERSION,
                            "unsupported envelope version %llu (this qmesh reads %d)",
                            (unsigned long long)v->via.u64, QM_ENVELOPE_VERSION);
      break;
    }
  }

  unsigned seen = 0;
  char q[200];
  for (uint32_t i = 0; i < n; i++) {
    int f = qm__field_index(&kv[i].key);
    if (f < 0) {
      if (kv[i].key.type == MSGPACK_OBJECT_STR)
        return qm_error_set(err, QM_EUNKNOWN, "unknown field %s",
                            qm__quote(q, sizeof q, kv[i].key.via.str.ptr, kv[i].key.via.str.size));
      return qm_error_set(err, QM_EUNKNOWN, "unknown field of type %s (field names are str)",
                          qm__kind(&kv[i].key));
    }
    if (seen & (1u << f))
      return qm_error_set(err, QM_EDUPFIELD, "field \"%s\" given twice", qm__fields[f]);
    seen |= 1u << f;
    rc = qm__decode_field(f, &kv[i].val, out, err);
    if (rc) return rc;
  }
  for (int f = 0; f < F_COUNT; f++) {
    if (f != F_HDR && !(seen & (1u << f)))
      return qm_error_set(err, QM_EMISSING, "missing field \"%s\"", qm__fields[f]);
  }
  qm_error_clear(err);
  return 0;
}
