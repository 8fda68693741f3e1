/* store.c: LMDB environments, tables and transactions (see store.h). */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct qm_store {
  MDB_env *env;
  MDB_dbi meta;
  uint64_t epoch;
  char dir[PATH_MAX];
};

int qm_store_err(int rc) {
  switch (rc) {
  case MDB_SUCCESS: return QM_OK;
  case MDB_NOTFOUND: return QM_ENOTFOUND;
  case MDB_KEYEXIST: return QM_EEXISTS;
  case MDB_MAP_FULL: return QM_EMAPFULL;
  case ENOMEM: return QM_ENOMEM;
  case EIO: return QM_EIO;
  case ENOSPC: return QM_EMAPFULL;
  default: return QM_ESTORE;
  }
}

/* mkdir -p */
static int make_dirs(const char *path) {
  char tmp[PATH_MAX];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof tmp) return -1;
  memcpy(tmp, path, n + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
  return 0;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int qm_store_open(qm_store_t **out, const char *dir, const qm_store_opts_t *opts, qm_error_t *err) {
  *out = NULL;
  if (make_dirs(dir) != 0)
    return qm_error_set(err, QM_EIO, "store %s: cannot create directory: %s", dir, strerror(errno));
  qm_store_t *st = calloc(1, sizeof *st);
  if (!st) return qm_error_set(err, QM_ENOMEM, "store %s: out of memory", dir);
  snprintf(st->dir, sizeof st->dir, "%s", dir);
  int rc = mdb_env_create(&st->env);
  if (rc == 0) rc = mdb_env_set_maxdbs(st->env, opts->max_tables ? opts->max_tables : 32);
  if (rc == 0) rc = mdb_env_set_mapsize(st->env, opts->map_size);
  if (rc == 0) rc = mdb_env_set_maxreaders(st->env, 256);
  /* MDB_NOTLS: read transactions are not tied to threads, so work on the
   * thread pool can read. */
  unsigned flags = MDB_NOTLS | (opts->sync ? 0 : MDB_NOSYNC);
  if (rc == 0) rc = mdb_env_open(st->env, dir, flags, 0640);
  if (rc != 0) {
    qm_error_set(err, qm_store_err(rc), "store %s: cannot open: %s", dir, mdb_strerror(rc));
    mdb_env_close(st->env);
    free(st);
    return err ? err->code : QM_ESTORE;
  }
  /* The epoch is written once, when the store is new. */
  MDB_txn *txn;
  rc = mdb_txn_begin(st->env, NULL, 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta);
  if (rc == 0) {
    MDB_val k = {5, "epoch"}, v;
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8) {
      st->epoch = qm_be64_get(v.mv_data);
    } else if (rc == MDB_NOTFOUND) {
      uint8_t buf[8];
      st->epoch = now_us();
      qm_be64_put(buf, st->epoch);
      v.mv_size = 8;
      v.mv_data = buf;
      rc = mdb_put(txn, st->meta, &k, &v, 0);
    } else if (rc == 0) {
      rc = MDB_CORRUPTED;
    }
  }
  if (rc == 0) {
    rc = mdb_txn_commit(txn);
  } else {
    mdb_txn_abort(txn);
  }
  if (rc != 0) {
    qm_error_set(err, qm_store_err(rc), "store %s: cannot initialise: %s", dir, mdb_strerror(rc));
    mdb_env_close(st->env);
    free(st);
    return err ? err->code : QM_ESTORE;
  }
  *out = st;
  return 0;
}

void qm_store_destroy(qm_store_t **pst) {
  qm_store_t *st = pst ? *pst : NULL;
  if (!st) return;
  mdb_env_close(st->env);
  free(st);
  *pst = NULL;
}

int qm_store_table(qm_store_t *st, const char *name, MDB_dbi *dbi, qm_error_t *err) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, name, MDB_CREATE, dbi);
  if (rc == 0) {
    rc = mdb_txn_commit(txn);
  } else {
    mdb_txn_abort(txn);
  }
  if (rc != 0)
    return qm_error_set(err, qm_store_err(rc), "store %s: table %s: %s", st->dir, name,
                        mdb_strerror(rc));
  return 0;
}

int qm_store_begin(qm_store_t *st, MDB_txn *parent, unsigned flags, MDB_txn **txn) {
  return qm_store_err(mdb_txn_begin(st->env, parent, flags, txn));
}

int qm_store_commit(qm_store_t *st, MDB_txn *txn) {
  (void)st;
  return qm_store_err(mdb_txn_commit(txn));
}

MDB_env *qm_store_env(qm_store_t *st) { return st->env; }
const char *qm_store_dir(const qm_store_t *st) { return st->dir; }
uint64_t qm_store_epoch(const qm_store_t *st) { return st->epoch; }

void qm_store_usage(qm_store_t *st, size_t *used, size_t *map_size) {
  MDB_envinfo info;
  MDB_stat stat;
  mdb_env_info(st->env, &info);
  mdb_env_stat(st->env, &stat);
  if (used) *used = (size_t)(info.me_last_pgno + 1) * stat.ms_psize;
  if (map_size) *map_size = info.me_mapsize;
}
