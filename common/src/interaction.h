/*
 * interaction.h: validates and normalizes interaction documents (the JSON
 * objects channel plugins submit; docs/protocol.md section 9) into the
 * `interaction.received` body.
 *
 * Normalizing checks every rule of the document format and refuses with one
 * sentence naming the field ("turns[3].speaker: must be agent, customer, bot
 * or system"); it never crashes on any input. It computes the interaction id,
 * hashes the customer id, fills defaults and derived fields, and the content
 * hash that makes re-submissions idempotent.
 */
#ifndef QM_INTERACTION_H
#define QM_INTERACTION_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define QM_INTERACTION_ID_LEN 35 /* "ix-" + 32 hex */

typedef struct qm_interaction_opts {
  const uint8_t *customer_hash_key; /* 32 bytes; NULL hashes without a key */
  size_t max_document_bytes;        /* 0: 4 MiB */
  uint64_t now_ms;                  /* 0: the clock (for "not in the future") */
} qm_interaction_opts_t;

typedef struct qm_interaction {
  json_t *doc;                      /* the normalized document (owned) */
  char id[QM_INTERACTION_ID_LEN + 1];
  uint8_t content_hash[16];
  /* Routing attributes, pointing into doc. */
  const char *channel, *tenant, *queue, *direction, *language;
} qm_interaction_t;

/* Parses, validates and normalizes `len` bytes of JSON. On success fills
 * *out (free with qm_interaction_free); `revision` and `received_at` are not
 * set (the store sets them). QM_EINVAL with err->msg naming the field
 * otherwise. */
int qm_interaction_normalize(const char *json, size_t len, const qm_interaction_opts_t *opts,
                             qm_interaction_t *out, qm_error_t *err);
void qm_interaction_free(qm_interaction_t *ix);

/* An RFC 3339 UTC time as the normalizer writes it ("2026-11-20T14:03:11Z",
 * with ".mmm" only when the milliseconds are not zero). */
json_t *qm_time_json(int64_t ms);

/* Packs a JSON value as MessagePack (objects as maps, integers as ints). */
int qm_json_pack(msgpack_packer *pk, const json_t *v);

#endif
