/*
 * test_bus.c: the bus in one process: a sender and a receiver bus on one
 * libuv loop over inproc://. The crash tests with separate processes are in
 * tests/integration/.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>
#include <zmq.h>

#include "bus.h"
#include "log.h"
#include "routes.h"
#include "store.h"

static const char *names[] = {"src", "dst", "ghost"};
static const char routes_text[] =
  "extra_types = [\"bench.msg\", \"bench.poison\", \"bench.orphan\", \"bench.ghost\"];\n"
  "routes = ( { name = \"msgs\"; match = \"bench.msg\"; to = [\"dst\"]; },\n"
  "           { name = \"poison\"; match = \"bench.poison\"; to = [\"dst\"]; },\n"
  "           { name = \"ghost\"; match = \"bench.ghost\"; to = [\"ghost\"]; } );\n";

typedef struct {
  uv_loop_t loop;
  void *zctx;
  char dir[256];
  qm_store_t *sst, *rst;
  qm_bus_t *sender, *receiver;
  MDB_dbi applied;
  unsigned long n_applied;
  uv_timer_t timeout;
  int timed_out;
  unsigned long want;
  uv_check_t check;
  int refuse_poison;    /* 1: the handler refuses bench.poison */
} fx_t;

static const char *resolve(void *ud, const char *name) {
  (void)ud;
  if (strcmp(name, "dst") == 0) return "inproc://test-dst";
  if (strcmp(name, "ghost") == 0) return "inproc://nobody-binds-this";
  return NULL;
}

static int apply(void *ud, qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg, const char *raw,
                 size_t len, qm_error_t *err) {
  (void)bus;
  (void)raw;
  (void)len;
  fx_t *f = ud;
  if (qm_str_eq(msg->type, "bench.poison") && f->refuse_poison) {
    /* Writes first, then refuses: the write must be discarded. */
    MDB_val k = {6, "poison"}, v = {1, "x"};
    mdb_put(txn, f->applied, &k, &v, 0);
    return qm_error_set(err, QM_EREFUSED, "poison refused by the test handler");
  }
  MDB_val k = {msg->key.n, (void *)msg->key.p}, v = {16, (void *)msg->id.b};
  int rc = mdb_put(txn, f->applied, &k, &v, MDB_NOOVERWRITE);
  if (rc == 0) f->n_applied++;
  return qm_store_err(rc);
}

static void on_timeout(uv_timer_t *t) {
  fx_t *f = t->data;
  f->timed_out = 1;
  uv_stop(&f->loop);
}

static void on_check(uv_check_t *c) {
  fx_t *f = c->data;
  if (f->n_applied >= f->want) uv_stop(&f->loop);
}

/* Runs the loop until `want` messages are applied or `ms` pass. Nothing
 * else wakes the loop: if the edge-triggered ZMQ_FD were mishandled, a burst
 * would stall here and the test would time out. */
static int run_until(fx_t *f, unsigned long want, unsigned ms) {
  f->want = want;
  f->timed_out = 0;
  uv_timer_start(&f->timeout, on_timeout, ms, 0);
  if (f->n_applied < want) uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&f->timeout);
  return !f->timed_out;
}

static void run_for(fx_t *f, unsigned ms) {
  f->want = ULONG_MAX;
  uv_timer_start(&f->timeout, on_timeout, ms, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&f->timeout);
}

static qm_bus_cfg_t bus_cfg(void) {
  qm_bus_cfg_t c = {.batch_max = 256, .window = 1000, .retransmit_ms = 200, .backoff_max_ms = 1000,
                    .outbox_high_water = 1000000, .outbox_low_water = 800000,
                    .peer_timeout_ms = 500, .heartbeat_ms = 500, .ack_flush_ms = 10};
  return c;
}

static void open_stores(fx_t *f, size_t map_size) {
  qm_error_t err;
  char d[300];
  qm_store_opts_t so = {.map_size = map_size, .sync = 0};
  snprintf(d, sizeof d, "%s/src", f->dir);
  assert_int_equal(qm_store_open(&f->sst, d, &so, &err), 0);
  snprintf(d, sizeof d, "%s/dst", f->dir);
  assert_int_equal(qm_store_open(&f->rst, d, &so, &err), 0);
  assert_int_equal(qm_store_table(f->rst, "applied", &f->applied, &err), 0);
}

static void start_buses(fx_t *f) {
  qm_error_t err;
  qm_routes_t *routes;
  assert_int_equal(qm_routes_load_string(routes_text, "test", names, 3, &routes, &err), 0);
  qm_bus_opts_t ro = {.name = "dst", .bind = "inproc://test-dst", .zmq_ctx = f->zctx,
                      .loop = &f->loop, .store = f->rst, .cfg = bus_cfg(), .resolve = resolve,
                      .handler = apply, .handler_ud = f};
  assert_int_equal(qm_bus_new(&f->receiver, &ro, &err), 0);
  qm_bus_opts_t so = {.name = "src", .zmq_ctx = f->zctx, .loop = &f->loop, .store = f->sst,
                      .cfg = bus_cfg(), .resolve = resolve, .routes = routes};
  assert_int_equal(qm_bus_new(&f->sender, &so, &err), 0);
}

static void stop_buses(fx_t *f) {
  qm_bus_destroy(&f->sender);
  qm_bus_destroy(&f->receiver);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int setup(void **state) {
  static fx_t f;
  memset(&f, 0, sizeof f);
  snprintf(f.dir, sizeof f.dir, "/tmp/qmesh-test-bus-XXXXXX");
  if (!mkdtemp(f.dir)) return -1;
  qm_log_set_level(QM_LOG_ERROR);
  uv_loop_init(&f.loop);
  f.zctx = zmq_ctx_new();
  uv_timer_init(&f.loop, &f.timeout);
  f.timeout.data = &f;
  uv_check_init(&f.loop, &f.check);
  f.check.data = &f;
  uv_check_start(&f.check, on_check);
  f.refuse_poison = 1;
  *state = &f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  stop_buses(f);
  uv_close((uv_handle_t *)&f->timeout, NULL);
  uv_close((uv_handle_t *)&f->check, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_loop_close(&f->loop);
  qm_store_destroy(&f->sst);
  qm_store_destroy(&f->rst);
  zmq_ctx_term(f->zctx);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  if (system(cmd) != 0) return -1;
  return 0;
}

static void emit_n(fx_t *f, const char *type, const char *prefix, unsigned long from,
                   unsigned long n) {
  MDB_txn *txn;
  qm_error_t err;
  assert_int_equal(qm_bus_begin(f->sender, &txn), 0);
  for (unsigned long i = from; i < from + n; i++) {
    char key[32];
    snprintf(key, sizeof key, "%s%lu", prefix, i);
    qm_envelope_t e;
    qm_envelope_init(&e);
    e.type = (qm_str_t){type, strlen(type)};
    e.src = (qm_str_t){"src", 3};
    e.key = (qm_str_t){key, strlen(key)};
    assert_true(qm_bus_emit(f->sender, txn, &e, &err) >= 0);
  }
  assert_int_equal(qm_bus_commit(f->sender, txn), 0);
}

static size_t dead_count(qm_bus_t *bus) {
  MDB_txn *txn;
  MDB_stat st;
  qm_store_begin(qm_bus_store(bus), NULL, MDB_RDONLY, &txn);
  mdb_stat(txn, qm_bus_dead_dbi(bus), &st);
  mdb_txn_abort(txn);
  return st.ms_entries;
}

static void test_burst_then_idle(void **state) {
  fx_t *f = *state;
  open_stores(f, 256u << 20);
  start_buses(f);
  emit_n(f, "bench.msg", "k", 0, 20000);
  assert_true(run_until(f, 20000, 10000));
  /* Idle, then a small burst: it must arrive without any other event. */
  run_for(f, 300);
  emit_n(f, "bench.msg", "k", 20000, 3);
  assert_true(run_until(f, 20003, 5000));
  run_for(f, 100);
  assert_int_equal(qm_bus_outbox_depth(f->sender, "dst"), 0);
  assert_int_equal(f->n_applied, 20003);
}

static void test_dead_letters(void **state) {
  fx_t *f = *state;
  open_stores(f, 64u << 20);
  start_buses(f);
  /* A message the handler refuses after writing: consumed into dead, its
   * write discarded, later messages still applied. */
  emit_n(f, "bench.poison", "p", 0, 1);
  emit_n(f, "bench.msg", "k", 0, 5);
  assert_true(run_until(f, 5, 5000));
  run_for(f, 50);
  assert_int_equal(dead_count(f->receiver), 1);
  MDB_txn *txn;
  MDB_val k = {6, "poison"}, v;
  qm_store_begin(f->rst, NULL, MDB_RDONLY, &txn);
  assert_int_equal(mdb_get(txn, f->applied, &k, &v), MDB_NOTFOUND);
  mdb_txn_abort(txn);
  /* No route: into the sender's own dead store. */
  emit_n(f, "bench.orphan", "o", 0, 2);
  assert_int_equal(dead_count(f->sender), 2);
  /* Bytes that are not an envelope: consumed into dead with the reason. */
  qm_error_t err;
  assert_int_equal(qm_bus_begin(f->sender, &txn), 0);
  assert_int_equal(qm_bus_send_to(f->sender, txn, "dst", "\xc1garbage", 8, &err), 0);
  assert_int_equal(qm_bus_commit(f->sender, txn), 0);
  emit_n(f, "bench.msg", "k", 5, 1);
  assert_true(run_until(f, 6, 5000));
  run_for(f, 50);
  assert_int_equal(dead_count(f->receiver), 2);
  assert_int_equal(qm_bus_outbox_depth(f->sender, "dst"), 0);
}

static int first_dead(qm_bus_t *bus, qm_id_t *id) {
  MDB_txn *txn;
  MDB_cursor *cur;
  MDB_val k, v;
  qm_store_begin(qm_bus_store(bus), NULL, MDB_RDONLY, &txn);
  mdb_cursor_open(txn, qm_bus_dead_dbi(bus), &cur);
  int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  if (rc == 0) memcpy(id->b, k.mv_data, 16);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}

static void test_dead_replay(void **state) {
  fx_t *f = *state;
  open_stores(f, 64u << 20);
  start_buses(f);
  qm_error_t err;
  qm_id_t id;
  /* Refused by the handler: replay while it still refuses keeps the entry
   * (same id, new reason); once the handler accepts, replay applies it and
   * removes it from dead. */
  emit_n(f, "bench.poison", "p", 0, 1);
  emit_n(f, "bench.msg", "k", 0, 1);
  assert_true(run_until(f, 1, 5000));
  run_for(f, 50);
  assert_int_equal(dead_count(f->receiver), 1);
  assert_int_equal(first_dead(f->receiver, &id), 0);
  assert_int_equal(qm_bus_dead_replay(f->receiver, &id, &err), QM_EREFUSED);
  assert_int_equal(dead_count(f->receiver), 1);
  f->refuse_poison = 0;
  unsigned long before = f->n_applied;
  assert_int_equal(qm_bus_dead_replay(f->receiver, &id, &err), 0);
  assert_int_equal(f->n_applied, before + 1);
  assert_int_equal(dead_count(f->receiver), 0);
  assert_int_equal(qm_bus_dead_replay(f->receiver, &id, &err), QM_ENOTFOUND);
  /* No route: replay under a table that now routes the type delivers it. */
  emit_n(f, "bench.orphan", "o", 0, 1);
  assert_int_equal(dead_count(f->sender), 1);
  assert_int_equal(first_dead(f->sender, &id), 0);
  assert_int_equal(qm_bus_dead_replay(f->sender, &id, &err), QM_ENOROUTE);
  assert_int_equal(dead_count(f->sender), 1);
  qm_routes_t *routes;
  const char *table =
    "extra_types = [\"bench.orphan\", \"bench.msg\"];\n"
    "routes = ( { name = \"orphans\"; match = \"bench.orphan\"; to = [\"dst\"]; },\n"
    "           { name = \"msgs\"; match = \"bench.msg\"; to = [\"dst\"]; } );\n";
  assert_int_equal(qm_routes_load_string(table, "test", names, 3, &routes, &err), 0);
  qm_bus_set_routes(f->sender, routes);
  before = f->n_applied;
  assert_int_equal(qm_bus_dead_replay(f->sender, &id, &err), 0);
  assert_int_equal(dead_count(f->sender), 0);
  assert_true(run_until(f, before + 1, 5000));
  /* Undecodable bytes keep their id across replays. */
  MDB_txn *txn;
  assert_int_equal(qm_bus_begin(f->sender, &txn), 0);
  assert_int_equal(qm_bus_send_to(f->sender, txn, "dst", "\xc1junk", 5, &err), 0);
  assert_int_equal(qm_bus_commit(f->sender, txn), 0);
  emit_n(f, "bench.msg", "k", 1, 1);
  assert_true(run_until(f, f->n_applied + 1, 5000));
  run_for(f, 50);
  assert_int_equal(first_dead(f->receiver, &id), 0);
  assert_int_equal(qm_bus_dead_replay(f->receiver, &id, &err), QM_EREFUSED);
  qm_id_t again;
  assert_int_equal(first_dead(f->receiver, &again), 0);
  assert_memory_equal(id.b, again.b, 16);
  assert_int_equal(dead_count(f->receiver), 1);
}

static int bp_events[2];

static void on_bp(void *ud, int paused) {
  (void)ud;
  bp_events[paused ? 1 : 0]++;
}

static void test_backpressure(void **state) {
  fx_t *f = *state;
  open_stores(f, 64u << 20);
  qm_error_t err;
  qm_routes_t *routes;
  assert_int_equal(qm_routes_load_string(routes_text, "test", names, 3, &routes, &err), 0);
  qm_bus_cfg_t c = bus_cfg();
  c.outbox_high_water = 100;
  c.outbox_low_water = 50;
  memset(bp_events, 0, sizeof bp_events);
  qm_bus_opts_t so = {.name = "src", .zmq_ctx = f->zctx, .loop = &f->loop, .store = f->sst,
                      .cfg = c, .resolve = resolve, .routes = routes, .on_backpressure = on_bp};
  assert_int_equal(qm_bus_new(&f->sender, &so, &err), 0);
  /* No receiver yet: the outbox fills past its mark and intake pauses;
   * nothing is dropped. */
  emit_n(f, "bench.msg", "k", 0, 150);
  qm_bus_stats_t st;
  qm_bus_stats(f->sender, &st);
  assert_int_equal(st.outbox_depth, 150);
  assert_int_equal(st.intake_paused, 1);
  assert_int_equal(bp_events[1], 1);
  run_for(f, 100);
  qm_bus_stats(f->sender, &st);
  assert_int_equal(st.intake_paused, 1);
  /* The receiver comes up: the outbox drains and intake resumes below the
   * low mark. */
  qm_bus_opts_t ro = {.name = "dst", .bind = "inproc://test-dst", .zmq_ctx = f->zctx,
                      .loop = &f->loop, .store = f->rst, .cfg = bus_cfg(), .resolve = resolve,
                      .handler = apply, .handler_ud = f};
  assert_int_equal(qm_bus_new(&f->receiver, &ro, &err), 0);
  assert_true(run_until(f, 150, 10000));
  run_for(f, 100);
  qm_bus_stats(f->sender, &st);
  assert_int_equal(st.outbox_depth, 0);
  assert_int_equal(st.intake_paused, 0);
  assert_int_equal(bp_events[0], 1);
}

static void test_unreachable_peer_keeps_messages(void **state) {
  fx_t *f = *state;
  open_stores(f, 64u << 20);
  start_buses(f);
  emit_n(f, "bench.ghost", "g", 0, 10);
  run_for(f, 800);
  qm_bus_stats_t st;
  qm_bus_stats(f->sender, &st);
  /* Nothing is dropped: the messages wait in the outbox and readiness
   * reports the unreachable destination. */
  assert_int_equal(qm_bus_outbox_depth(f->sender, "ghost"), 10);
  assert_true(st.peers_unreachable >= 1);
}

static void test_map_full_is_an_error_not_a_crash(void **state) {
  fx_t *f = *state;
  open_stores(f, 1u << 20); /* 1 MiB: fills quickly */
  start_buses(f);
  MDB_txn *txn;
  qm_error_t err;
  int rc = 0;
  /* Fill the sender's store until a commit reports the full map. */
  for (int round = 0; round < 100 && rc == 0; round++) {
    assert_int_equal(qm_bus_begin(f->sender, &txn), 0);
    for (int i = 0; i < 100 && rc >= 0; i++) {
      char key[32], body[2000];
      memset(body, 'b', sizeof body);
      snprintf(key, sizeof key, "f%d-%d", round, i);
      msgpack_sbuffer sb;
      msgpack_sbuffer_init(&sb);
      msgpack_packer pk;
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      msgpack_pack_map(&pk, 1);
      msgpack_pack_str_with_body(&pk, "b", 1);
      msgpack_pack_str_with_body(&pk, body, sizeof body);
      qm_envelope_t e;
      qm_envelope_init(&e);
      e.type = (qm_str_t){"bench.ghost", 11};
      e.src = (qm_str_t){"src", 3};
      e.key = (qm_str_t){key, strlen(key)};
      e.body_packed = sb.data;
      e.body_packed_len = sb.size;
      rc = qm_bus_emit(f->sender, txn, &e, &err);
      msgpack_sbuffer_destroy(&sb);
    }
    if (rc < 0) {
      qm_bus_abort(f->sender, txn);
    } else {
      rc = qm_bus_commit(f->sender, txn);
    }
  }
  assert_int_equal(rc, QM_EMAPFULL);
  /* What committed before is still there, and the bus still works. */
  assert_true(qm_bus_outbox_depth(f->sender, "ghost") > 0);
  qm_bus_stats_t st;
  qm_bus_stats(f->sender, &st);
  assert_int_equal(st.out_msgs > 0, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_burst_then_idle, setup, teardown),
    cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
    cmocka_unit_test_setup_teardown(test_dead_replay, setup, teardown),
    cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
    cmocka_unit_test_setup_teardown(test_unreachable_peer_keeps_messages, setup, teardown),
    cmocka_unit_test_setup_teardown(test_map_full_is_an_error_not_a_crash, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
