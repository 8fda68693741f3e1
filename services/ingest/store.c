/*
 * store.c: ingest's interaction records (see ingest.h). Kept apart from the
 * service wiring so the benchmark exercises exactly this code.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "dead.h"
#include "ingest.h"

#define REC_LEN 29

int ing_store_open(ing_store_t *s, qm_store_t *store, qm_error_t *err) {
  int rc = qm_store_table(store, "interactions", &s->ix, err);
  if (!rc) rc = qm_store_table(store, "interaction_revisions", &s->ix_rev, err);
  msgpack_sbuffer_init(&s->body);
  return rc;
}

void ing_store_close(ing_store_t *s) { msgpack_sbuffer_destroy(&s->body); }

static void rev_key(uint8_t *k, const char *id, uint32_t rev) {
  memcpy(k, id, QM_INTERACTION_ID_LEN);
  k[QM_INTERACTION_ID_LEN] = 0;
  k[QM_INTERACTION_ID_LEN + 1] = (uint8_t)(rev >> 24);
  k[QM_INTERACTION_ID_LEN + 2] = (uint8_t)(rev >> 16);
  k[QM_INTERACTION_ID_LEN + 3] = (uint8_t)(rev >> 8);
  k[QM_INTERACTION_ID_LEN + 4] = (uint8_t)rev;
}


int ing_store_apply(ing_store_t *s, qm_bus_t *bus, MDB_txn *txn, const qm_interaction_t *ix,
                    uint64_t now_ms, ing_outcome_t *outcome, uint32_t *revision, qm_error_t *err) {
  MDB_val k = {QM_INTERACTION_ID_LEN, (void *)ix->id}, v;
  uint32_t rev = 1;
  uint64_t first = now_ms;
  int rc = mdb_get(txn, s->ix, &k, &v);
  if (rc == 0 && v.mv_size == REC_LEN) {
    const uint8_t *p = v.mv_data;
    uint32_t cur = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (memcmp(p + 5, ix->content_hash, 16) == 0) {
      *outcome = ING_UNCHANGED;
      *revision = cur;
      return 0;
    }
    rev = cur + 1;
    first = qm_be64_get(p + 21);
  } else if (rc != MDB_NOTFOUND && rc != 0) {
    return qm_error_set(err, qm_store_err(rc), "interactions: %s", mdb_strerror(rc));
  }
  uint8_t rec[REC_LEN];
  rec[0] = 'I';
  rec[1] = (uint8_t)(rev >> 24);
  rec[2] = (uint8_t)(rev >> 16);
  rec[3] = (uint8_t)(rev >> 8);
  rec[4] = (uint8_t)rev;
  memcpy(rec + 5, ix->content_hash, 16);
  qm_be64_put(rec + 21, first);
  v.mv_size = REC_LEN;
  v.mv_data = rec;
  rc = mdb_put(txn, s->ix, &k, &v, 0);
  if (rc) return qm_error_set(err, qm_store_err(rc), "interactions: %s", mdb_strerror(rc));

  /* The body: the normalized document plus what ingest adds. */
  char hash_hex[33];
  sodium_bin2hex(hash_hex, sizeof hash_hex, ix->content_hash, sizeof ix->content_hash);
  json_t *body = json_copy(ix->doc);
  json_object_set_new(body, "revision", json_integer(rev));
  json_object_set_new(body, "content_hash", json_string(hash_hex));
  json_object_set_new(body, "received_at", qm_time_json((int64_t)first));
  s->body.size = 0;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &s->body, msgpack_sbuffer_write);
  rc = qm_json_pack(&pk, body);
  json_decref(body);
  if (rc) return qm_error_set(err, QM_EINVAL, "%s: cannot pack the body", ix->id);
  uint8_t rk[QM_INTERACTION_ID_LEN + 5];
  rev_key(rk, ix->id, rev);
  MDB_val kk = {sizeof rk, rk}, vv = {s->body.size, s->body.data};
  rc = mdb_put(txn, s->ix_rev, &kk, &vv, 0);
  if (rc) return qm_error_set(err, qm_store_err(rc), "interaction_revisions: %s", mdb_strerror(rc));

  /* The message id is derived from the interaction and its revision: the
   * cause carries the first receipt time (so ids stay roughly time-ordered)
   * and the interaction's hash. */
  qm_envelope_t e;
  qm_envelope_init(&e);
  qm_id_t cause;
  uint8_t tb[8];
  qm_be64_put(tb, first);
  memcpy(cause.b, tb + 2, 6);
  sodium_hex2bin(cause.b + 6, 10, ix->id + 3, 20, NULL, NULL, NULL);
  char salt[48];
  int sl = snprintf(salt, sizeof salt, "interaction.received/%u", rev);
  qm_id_derive(&e.id, &cause, salt, (size_t)sl);
  e.type = (qm_str_t){"interaction.received", 20};
  e.src = (qm_str_t){"ingest", 6};
  e.key = (qm_str_t){ix->id, QM_INTERACTION_ID_LEN};
  const char *hk[] = {"channel", "tenant", "queue", "direction", "language"};
  const char *hv[] = {ix->channel, ix->tenant, ix->queue, ix->direction, ix->language};
  for (int i = 0; i < 5; i++) {
    if (!hv[i] || !*hv[i]) continue;
    e.hdr[e.hdr_count].k = (qm_str_t){hk[i], strlen(hk[i])};
    e.hdr[e.hdr_count].v = (qm_str_t){hv[i], strlen(hv[i])};
    e.hdr_count++;
  }
  e.body_packed = s->body.data;
  e.body_packed_len = s->body.size;
  rc = qm_bus_emit(bus, txn, &e, err);
  if (rc < 0) return rc;
  *outcome = rev == 1 ? ING_STORED_NEW : ING_STORED_REVISION;
  *revision = rev;
  return 0;
}

void ing_store_counts(ing_store_t *s, MDB_txn *txn, size_t *interactions, size_t *revisions) {
  MDB_stat st;
  mdb_stat(txn, s->ix, &st);
  *interactions = st.ms_entries;
  mdb_stat(txn, s->ix_rev, &st);
  *revisions = st.ms_entries;
}

json_t *ing_store_get(ing_store_t *s, MDB_txn *txn, const char *id) {
  if (strlen(id) != QM_INTERACTION_ID_LEN) return NULL;
  MDB_val k = {QM_INTERACTION_ID_LEN, (void *)id}, v;
  if (mdb_get(txn, s->ix, &k, &v) != 0 || v.mv_size != REC_LEN) return NULL;
  const uint8_t *p = v.mv_data;
  uint32_t rev = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
  uint8_t rk[QM_INTERACTION_ID_LEN + 5];
  rev_key(rk, id, rev);
  MDB_val kk = {sizeof rk, rk};
  if (mdb_get(txn, s->ix_rev, &kk, &v) != 0) return NULL;
  msgpack_zone z;
  msgpack_zone_init(&z, 4096);
  msgpack_object o;
  size_t off = 0;
  json_t *j = NULL;
  if (msgpack_unpack(v.mv_data, v.mv_size, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS)
    j = qm_msgpack_to_json(&o);
  msgpack_zone_destroy(&z);
  return j;
}
