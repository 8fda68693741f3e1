/*
 * ingest.h: the ingest service's store of interactions.
 *
 * ing_store_apply() is the heart of ingest: it takes a normalized
 * interaction and, inside the caller's write transaction, stores it once
 * (idempotent on its id and content hash; a changed content is a new
 * revision) and emits `interaction.received` through the bus, so the record
 * and the message commit together (docs/protocol.md section 9).
 */
#ifndef QM_INGEST_H
#define QM_INGEST_H

#include <lmdb.h>

#include "bus.h"
#include "interaction.h"
#include "service.h"

typedef struct ing_store {
  MDB_dbi ix;      /* id -> 'I' | revision (4) | content_hash (16) | first received_at (8) */
  MDB_dbi ix_rev;  /* id NUL revision (4) -> the interaction.received body (MessagePack) */
  msgpack_sbuffer body;
} ing_store_t;

typedef enum { ING_STORED_NEW = 0, ING_STORED_REVISION = 1, ING_UNCHANGED = 2 } ing_outcome_t;

int ing_store_open(ing_store_t *s, qm_store_t *store, qm_error_t *err);
void ing_store_close(ing_store_t *s);
/* Stores `ix` in txn and emits interaction.received when it is new or
 * changed; *outcome says which. Returns 0 or a negative error (the caller
 * aborts the transaction). */
int ing_store_apply(ing_store_t *s, qm_bus_t *bus, MDB_txn *txn, const qm_interaction_t *ix,
                    uint64_t now_ms, ing_outcome_t *outcome, uint32_t *revision, qm_error_t *err);
/* Counts interactions and revisions stored. */
void ing_store_counts(ing_store_t *s, MDB_txn *txn, size_t *interactions, size_t *revisions);
/* The current revision's body as JSON (NULL when unknown). */
json_t *ing_store_get(ing_store_t *s, MDB_txn *txn, const char *id);

extern const qm_service_def_t qm_service_ingest;

#endif
