/*
 * dead.h: reading a service's dead-letter table, for `qmesh dead` and the
 * /v1/dead HTTP endpoint. Entries are written by the bus (bus.c).
 */
#ifndef QM_DEAD_H
#define QM_DEAD_H

#include <jansson.h>
#include <lmdb.h>
#include <stddef.h>

#include "store.h"

/* A JSON array of entries, oldest first: {id, kind, from, reason, at, size,
 * type?, key?}; with `detail`, each also carries `envelope` (the decoded
 * header fields and body as JSON) or `raw_hex` when it did not decode.
 * `only` (an id string) selects one entry. */
json_t *qm_dead_list(qm_store_t *st, MDB_dbi dead, const char *only, size_t limit, int detail);
/* The ids (as strings) of every entry, or just `only` when it exists. */
json_t *qm_dead_ids(qm_store_t *st, MDB_dbi dead, const char *only);
/* A MessagePack object as JSON (bin as hex strings). */
json_t *qm_msgpack_to_json(const void *obj);

#endif
