/*
 * envelope.h: the one message format every service speaks.
 *
 * An envelope is a MessagePack map with short keys (docs/protocol.md):
 *   v     uint    format version, QM_ENVELOPE_VERSION
 *   id    bin 16  time-ordered message id (qm_id_new / qm_id_derive)
 *   type  str     e.g. "interaction.received" (1..QM_TYPE_MAX bytes, [a-z0-9._-])
 *   src   str     the service that emitted it (1..QM_NAME_MAX bytes)
 *   ts    uint    milliseconds since the Unix epoch
 *   key   str     the record it concerns (0..QM_KEY_MAX bytes)
 *   hdr   map     optional; str -> str routing attributes (at most QM_HDR_MAX)
 *   body  map     the type's payload
 *
 * Decoding is strict: every field present with its type, nothing unknown,
 * nothing twice, no trailing bytes, no more than max_size bytes. A failure
 * returns a named error (err.h) and a sentence saying which field is wrong;
 * it never crashes on any input. The decoded envelope points into the
 * caller's buffer and into `zone`: both must outlive it. The bus only ever
 * forwards the packed bytes, so a stage that routes never re-encodes.
 */
#ifndef QM_ENVELOPE_H
#define QM_ENVELOPE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define QM_ENVELOPE_VERSION 1
#define QM_ENVELOPE_MAX_DEFAULT (4u << 20) /* 4 MiB */
#define QM_TYPE_MAX 64
#define QM_NAME_MAX 32
#define QM_KEY_MAX 256
#define QM_HDR_MAX 16
#define QM_HDR_VALUE_MAX 256

typedef struct qm_id {
  uint8_t b[16];
} qm_id_t;

/* A string view; not NUL-terminated. */
typedef struct qm_str {
  const char *p;
  size_t n;
} qm_str_t;

typedef struct qm_hdr {
  qm_str_t k, v;
} qm_hdr_t;

typedef struct qm_envelope {
  uint32_t v;
  qm_id_t id;
  qm_str_t type;
  qm_str_t src;
  uint64_t ts;
  qm_str_t key;
  size_t hdr_count;
  qm_hdr_t hdr[QM_HDR_MAX];
  /* Decoded body (a MAP object). On encode, body_packed/body_packed_len, when
   * set, are written as the body verbatim (they must hold one packed map);
   * otherwise body is packed; when both are unset the body is an empty map. */
  msgpack_object body;
  const char *body_packed;
  size_t body_packed_len;
} qm_envelope_t;

/* Ids: 48-bit milliseconds since the epoch, then a 12-bit counter that keeps
 * ids made in one millisecond by one thread increasing, then 62 random bits
 * (UUIDv7 layout, so they print as UUIDs). Sorting ids sorts by time. */
void qm_id_new(qm_id_t *id);
/* Deterministic id for a message derived from `cause`: the cause's timestamp
 * then a BLAKE2b hash of the cause id and `salt` (usually the new type), so a
 * retry anywhere produces the same id again. */
void qm_id_derive(qm_id_t *id, const qm_id_t *cause, const char *salt, size_t salt_len);
/* Milliseconds encoded in an id. */
uint64_t qm_id_time_ms(const qm_id_t *id);
/* 36 characters + NUL: 0190d6f2-...; returns buf. */
char *qm_id_format(const qm_id_t *id, char buf[37]);
/* Parses the 36-character form or 32 hex digits; QM_EINVAL otherwise. */
int qm_id_parse(qm_id_t *id, const char *s);
int qm_id_cmp(const qm_id_t *a, const qm_id_t *b);

uint64_t qm_now_ms(void);

/* Fills the defaults a new envelope needs: v, a fresh id, ts = now. */
void qm_envelope_init(qm_envelope_t *e);
/* Appends the packed envelope to sb. QM_EINVAL for fields out of bounds. */
int qm_envelope_encode(msgpack_sbuffer *sb, const qm_envelope_t *e);
/* Strict decode of exactly `len` bytes. max_size 0 means the default. */
int qm_envelope_decode(const char *buf, size_t len, size_t max_size, msgpack_zone *zone,
                       qm_envelope_t *out, qm_error_t *err);
/* Looks a header up; returns 1 and fills *v when present. */
int qm_envelope_hdr(const qm_envelope_t *e, const char *k, qm_str_t *v);

/* Convenience for tests and tools: compares a view with a C string. */
int qm_str_eq(qm_str_t s, const char *c);

#endif
