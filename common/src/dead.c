/* dead.c: dead-letter entries as JSON (see dead.h). */
#include "dead.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "envelope.h"

static json_t *hex(const char *p, size_t n) {
  char *s = malloc(n * 2 + 1);
  if (!s) return json_null();
  for (size_t i = 0; i < n; i++) snprintf(s + 2 * i, 3, "%02x", (unsigned char)p[i]);
  s[n * 2] = '\0';
  json_t *j = json_string(s);
  free(s);
  return j ? j : json_null();
}

json_t *qm_msgpack_to_json(const void *vobj) {
  const msgpack_object *o = vobj;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: return json_null();
  case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
  case MSGPACK_OBJECT_STR: {
    json_t *s = json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    return s ? s : json_null();
  }
  case MSGPACK_OBJECT_BIN: return hex(o->via.bin.ptr, o->via.bin.size);
  case MSGPACK_OBJECT_EXT: return hex(o->via.ext.ptr, o->via.ext.size);
  case MSGPACK_OBJECT_ARRAY: {
    json_t *a = json_array();
    for (uint32_t i = 0; i < o->via.array.size; i++)
      json_array_append_new(a, qm_msgpack_to_json(&o->via.array.ptr[i]));
    return a;
  }
  case MSGPACK_OBJECT_MAP: {
    json_t *m = json_object();
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      char key[256];
      if (kv->key.type == MSGPACK_OBJECT_STR)
        snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
      else
        snprintf(key, sizeof key, "#%u", i);
      json_object_set_new(m, key, qm_msgpack_to_json(&kv->val));
    }
    return m;
  }
  }
  return json_null();
}

static json_t *entry(const MDB_val *k, const MDB_val *v, int detail) {
  char idbuf[37];
  qm_id_t id;
  memcpy(id.b, k->mv_data, 16);
  json_t *e = json_object();
  json_object_set_new(e, "id", json_string(qm_id_format(&id, idbuf)));
  msgpack_zone zone;
  msgpack_zone_init(&zone, 1024);
  msgpack_object o;
  size_t off = 0;
  if (msgpack_unpack(v->mv_data, v->mv_size, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS &&
      o.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < o.via.map.size; i++) {
      msgpack_object_kv *kv = &o.via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR) continue;
      char key[32];
      snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
      if (strcmp(key, "raw") != 0) {
        json_object_set_new(e, key, qm_msgpack_to_json(&kv->val));
        continue;
      }
      if (kv->val.type != MSGPACK_OBJECT_BIN) continue;
      json_object_set_new(e, "size", json_integer(kv->val.via.bin.size));
      msgpack_zone z2;
      msgpack_zone_init(&z2, 1024);
      qm_envelope_t env;
      int ok = qm_envelope_decode(kv->val.via.bin.ptr, kv->val.via.bin.size, 0, &z2, &env, NULL) == 0;
      if (ok) {
        json_object_set_new(e, "type", json_stringn(env.type.p, env.type.n));
        json_object_set_new(e, "key", json_stringn_nocheck(env.key.p, env.key.n));
      }
      if (detail && ok) {
        json_t *j = json_object();
        char eid[37];
        json_object_set_new(j, "id", json_string(qm_id_format(&env.id, eid)));
        json_object_set_new(j, "type", json_stringn(env.type.p, env.type.n));
        json_object_set_new(j, "src", json_stringn(env.src.p, env.src.n));
        json_object_set_new(j, "ts", json_integer((json_int_t)env.ts));
        json_object_set_new(j, "key", json_stringn_nocheck(env.key.p, env.key.n));
        json_t *h = json_object();
        for (size_t hi = 0; hi < env.hdr_count; hi++) {
          char hk[QM_HDR_VALUE_MAX + 1];
          snprintf(hk, sizeof hk, "%.*s", (int)env.hdr[hi].k.n, env.hdr[hi].k.p);
          json_object_set_new(h, hk, json_stringn_nocheck(env.hdr[hi].v.p, env.hdr[hi].v.n));
        }
        json_object_set_new(j, "hdr", h);
        json_object_set_new(j, "body", qm_msgpack_to_json(&env.body));
        json_object_set_new(e, "envelope", j);
      } else if (detail) {
        json_object_set_new(e, "raw_hex", hex(kv->val.via.bin.ptr, kv->val.via.bin.size));
      }
      msgpack_zone_destroy(&z2);
    }
  }
  msgpack_zone_destroy(&zone);
  return e;
}

static int scan(qm_store_t *st, MDB_dbi dead, const char *only, size_t limit,
                void (*fn)(void *ud, const MDB_val *k, const MDB_val *v), void *ud) {
  MDB_txn *txn;
  if (qm_store_begin(st, NULL, MDB_RDONLY, &txn) != 0) return -1;
  if (only) {
    qm_id_t id;
    if (qm_id_parse(&id, only) == 0) {
      MDB_val k = {16, id.b}, v;
      if (mdb_get(txn, dead, &k, &v) == 0) fn(ud, &k, &v);
    }
  } else {
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    mdb_cursor_open(txn, dead, &cur);
    while (n < limit && mdb_cursor_get(cur, &k, &v, n ? MDB_NEXT : MDB_FIRST) == 0) {
      if (k.mv_size == 16) fn(ud, &k, &v);
      n++;
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  return 0;
}

typedef struct {
  json_t *arr;
  int detail;
} list_ctx_t;

static void add_entry(void *ud, const MDB_val *k, const MDB_val *v) {
  list_ctx_t *c = ud;
  json_array_append_new(c->arr, entry(k, v, c->detail));
}

static void add_id(void *ud, const MDB_val *k, const MDB_val *v) {
  (void)v;
  qm_id_t id;
  char buf[37];
  memcpy(id.b, k->mv_data, 16);
  json_array_append_new(((list_ctx_t *)ud)->arr, json_string(qm_id_format(&id, buf)));
}

json_t *qm_dead_list(qm_store_t *st, MDB_dbi dead, const char *only, size_t limit, int detail) {
  list_ctx_t c = {json_array(), detail};
  scan(st, dead, only, limit ? limit : SIZE_MAX, add_entry, &c);
  return c.arr;
}

json_t *qm_dead_ids(qm_store_t *st, MDB_dbi dead, const char *only) {
  list_ctx_t c = {json_array(), 0};
  scan(st, dead, only, SIZE_MAX, add_id, &c);
  return c.arr;
}
