/*
 * store.h: one LMDB environment per service.
 *
 * A service opens its environment once per process, names its tables at
 * start (LMDB's named databases), writes in one transaction per batch and
 * reads in short read transactions (a long reader pins pages and makes the
 * file grow). The map size comes from config; a full map is QM_EMAPFULL,
 * counted and logged by the caller, never a crash. Values are MessagePack.
 *
 * Every store has a `meta` table whose `epoch` entry is set when the
 * directory is first created: microseconds since the Unix epoch, so a wiped
 * and recreated store has a newer epoch (docs/protocol.md, section 2).
 */
#ifndef QM_STORE_H
#define QM_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct qm_store qm_store_t;

typedef struct qm_store_opts {
  size_t map_size;     /* bytes */
  int sync;            /* fsync each commit (0 = MDB_NOSYNC: for tests only) */
  unsigned max_tables; /* named tables (default 32) */
} qm_store_opts_t;

/* Opens (creating the directory and files when absent) the environment in
 * `dir`. */
int qm_store_open(qm_store_t **out, const char *dir, const qm_store_opts_t *opts, qm_error_t *err);
/* Closes the environment. Idempotent; nulls *st. */
void qm_store_destroy(qm_store_t **st);

/* Opens or creates a named table. Call before concurrent use. */
int qm_store_table(qm_store_t *st, const char *name, MDB_dbi *dbi, qm_error_t *err);

/* Begins a transaction (flags 0 or MDB_RDONLY; parent for a nested one). */
int qm_store_begin(qm_store_t *st, MDB_txn *parent, unsigned flags, MDB_txn **txn);
/* Commits; returns QM_EMAPFULL when the map is full, with the txn gone. */
int qm_store_commit(qm_store_t *st, MDB_txn *txn);

/* Maps an LMDB return code to a qmesh error code. */
int qm_store_err(int mdb_rc);

MDB_env *qm_store_env(qm_store_t *st);
const char *qm_store_dir(const qm_store_t *st);
uint64_t qm_store_epoch(const qm_store_t *st);
/* Bytes in use (last page number * page size) and the map size. */
void qm_store_usage(qm_store_t *st, size_t *used, size_t *map_size);

/* Big-endian helpers for sortable integer keys. */
static inline void qm_be64_put(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t qm_be64_get(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

#endif
