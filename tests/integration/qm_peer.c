/*
 * qm_peer.c: a sender or receiver built on the bus alone, for the crash,
 * reload and drain tests (tests/integration/test_*.py) that kill it with SIGKILL
 * at random moments.
 *
 *   qm_peer send --dir D --peer dst=tcp://127.0.0.1:P --count N [--rate R]
 *                [--batch B] [--prefix m] [--body 200] [--routes FILE]
 *     Produces N messages (keys PREFIX000000001...), each production step
 *     committed with its outbox appends, so a killed sender resumes exactly
 *     where its last commit left it. Exits 0 once all N are produced and
 *     acknowledged (outbox empty). SIGHUP reloads --routes. With --garbage
 *     it sends N undecodable payloads to `dst` instead (dead-letter tests).
 *   qm_peer recv --dir D --bind tcp://127.0.0.1:P [--name dst] [--http H:P]
 *     Applies each message by inserting its key into table `applied`; a key
 *     seen twice increments the durable `dups` counter instead. Runs until
 *     SIGTERM (drain) or SIGKILL.
 *   qm_peer verify --dir D --count N [--first F] [--prefix m]
 *     Checks keys F..N (F defaults to 1), prints `applied=A missing=M dups=D`
 *     (A counts every key in the table) and exits 0 only for M=0 and D=0.
 *
 * The sender is named `src` and routes type bench.msg with its route table
 * (default: every bench.* message to `dst`).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zmq.h>

#include "bus.h"
#include "log.h"
#include "routes.h"
#include "store.h"

typedef struct {
  const char *mode, *dir, *bind, *name, *prefix, *routes_file;
  char peers[4][2][256];
  int n_peers;
  unsigned long long count, first;
  unsigned rate, batch, body;
  int garbage;
  uv_loop_t loop;
  qm_store_t *st;
  qm_bus_t *bus;
  MDB_dbi state, applied;
  uv_timer_t produce;
  uv_signal_t sigterm, sighup;
  unsigned long long produced;
  int done;
  char *payload;
} peer_t;

static const char *services[] = {"src", "dst", "dst2"};

static const char *resolve(void *ud, const char *name) {
  peer_t *p = ud;
  for (int i = 0; i < p->n_peers; i++)
    if (strcmp(p->peers[i][0], name) == 0) return p->peers[i][1];
  return NULL;
}

static const char default_routes[] =
  "extra_types = [\"bench.msg\", \"bench.other\"];\n"
  "routes = ( { name = \"bench\"; match = \"bench.*\"; to = [\"dst\"]; } );\n";

static qm_routes_t *load_routes(peer_t *p, qm_error_t *err) {
  qm_routes_t *r = NULL;
  int rc = p->routes_file
               ? qm_routes_load_file(p->routes_file, services, 3, &r, err)
               : qm_routes_load_string(default_routes, "builtin", services, 3, &r, err);
  return rc ? NULL : r;
}

static uint64_t get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key) {
  MDB_val k = {strlen(key), (void *)key}, v;
  if (mdb_get(txn, dbi, &k, &v) != 0 || v.mv_size != 8) return 0;
  return qm_be64_get(v.mv_data);
}

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t val) {
  uint8_t b[8];
  qm_be64_put(b, val);
  MDB_val k = {strlen(key), (void *)key}, v = {8, b};
  return mdb_put(txn, dbi, &k, &v, 0);
}

/* ---- sender --------------------------------------------------------- */

static void check_done(peer_t *p) {
  qm_bus_stats_t st;
  qm_bus_stats(p->bus, &st);
  if (p->produced >= p->count && st.outbox_depth == 0 && !p->done) {
    p->done = 1;
    printf("sent=%llu\n", p->produced);
    fflush(stdout);
    qm_bus_destroy(&p->bus);
    uv_close((uv_handle_t *)&p->produce, NULL);
    uv_close((uv_handle_t *)&p->sigterm, NULL);
    uv_close((uv_handle_t *)&p->sighup, NULL);
  }
}

static void produce_cb(uv_timer_t *t) {
  peer_t *p = t->data;
  if (p->done) return;
  qm_bus_stats_t st;
  qm_bus_stats(p->bus, &st);
  if (p->produced < p->count && !st.intake_paused) {
    unsigned n = p->rate ? (p->rate + 99) / 100 : p->batch; /* per 10 ms tick */
    MDB_txn *txn;
    if (qm_bus_begin(p->bus, &txn) == 0) {
      uint64_t next = get_u64(txn, p->state, "produced");
      qm_error_t err;
      int rc = 0;
      unsigned i;
      for (i = 0; i < n && next < p->count && rc >= 0; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s%09llu", p->prefix, (unsigned long long)next + 1);
        qm_envelope_t e;
        qm_envelope_init(&e);
        e.type = (qm_str_t){"bench.msg", 9};
        e.src = (qm_str_t){"src", 3};
        e.key = (qm_str_t){key, strlen(key)};
        /* A body map holding one string of `body` bytes. */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str_with_body(&pk, "p", 1);
        msgpack_pack_str_with_body(&pk, p->payload, p->body);
        e.body_packed = sb.data;
        e.body_packed_len = sb.size;
        if (p->garbage) {
          /* Bytes that are not an envelope, straight to `dst`. */
          static const char junk[] = "\xc1 this is not an envelope";
          rc = qm_bus_send_to(p->bus, txn, "dst", junk, sizeof junk - 1, &err);
        } else {
          rc = qm_bus_emit(p->bus, txn, &e, &err);
        }
        msgpack_sbuffer_destroy(&sb);
        next++;
      }
      if (rc >= 0) rc = put_u64(txn, p->state, "produced", next) ? -1 : 0;
      if (rc >= 0 && qm_bus_commit(p->bus, txn) == 0) p->produced = next;
      else if (rc < 0) qm_bus_abort(p->bus, txn);
    }
  }
  check_done(p);
}

/* ---- receiver ------------------------------------------------------- */

static int apply(void *ud, qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg, const char *raw,
                 size_t len, qm_error_t *err) {
  (void)bus;
  (void)raw;
  (void)len;
  peer_t *p = ud;
  if (qm_str_eq(msg->type, "bench.poison"))
    return qm_error_set(err, QM_EREFUSED, "poison message refused by the test handler");
  MDB_val k = {msg->key.n, (void *)msg->key.p}, v = {16, (void *)msg->id.b};
  int rc = mdb_put(txn, p->applied, &k, &v, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST) {
    rc = put_u64(txn, p->state, "dups", get_u64(txn, p->state, "dups") + 1);
  }
  return qm_store_err(rc);
}

static void on_term(uv_signal_t *h, int sig) {
  (void)sig;
  peer_t *p = h->data;
  qm_log(QM_LOG_INFO, "peer.draining", NULL);
  qm_bus_hold_intake(p->bus, 1);
  qm_bus_destroy(&p->bus);
  if (p->produce.loop) uv_close((uv_handle_t *)&p->produce, NULL);
  uv_close((uv_handle_t *)&p->sigterm, NULL);
  uv_close((uv_handle_t *)&p->sighup, NULL);
  p->done = 1;
}

static void on_hup(uv_signal_t *h, int sig) {
  (void)sig;
  peer_t *p = h->data;
  qm_error_t err;
  qm_routes_t *r = load_routes(p, &err);
  if (!r) {
    qm_log(QM_LOG_ERROR, "route.reload_refused", "error", err.msg, NULL);
    return;
  }
  qm_bus_set_routes(p->bus, r);
  /* The tests read `produced` to know which messages the new table took. */
  qm_logf(QM_LOG_INFO, "route.reloaded", "produced=%llu", p->produced);
}

static int verify(peer_t *p) {
  MDB_txn *txn;
  qm_store_begin(p->st, NULL, MDB_RDONLY, &txn);
  MDB_stat ms;
  mdb_stat(txn, p->applied, &ms);
  unsigned long long missing = 0;
  for (unsigned long long i = p->first ? p->first : 1; i <= p->count; i++) {
    char key[64];
    snprintf(key, sizeof key, "%s%09llu", p->prefix, i);
    MDB_val k = {strlen(key), key}, v;
    if (mdb_get(txn, p->applied, &k, &v) != 0) {
      if (missing < 5) fprintf(stderr, "missing %s\n", key);
      missing++;
    }
  }
  unsigned long long dups = get_u64(txn, p->state, "dups");
  mdb_txn_abort(txn);
  printf("applied=%llu missing=%llu dups=%llu\n", (unsigned long long)ms.ms_entries, missing, dups);
  return missing == 0 && dups == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  static peer_t p = {.name = NULL, .prefix = "m", .rate = 0, .batch = 1000, .body = 200};
  static const struct option opts[] = {
    {"dir", required_argument, 0, 'd'},   {"bind", required_argument, 0, 'b'},
    {"name", required_argument, 0, 'n'},  {"peer", required_argument, 0, 'p'},
    {"count", required_argument, 0, 'c'}, {"rate", required_argument, 0, 'r'},
    {"batch", required_argument, 0, 'B'}, {"prefix", required_argument, 0, 'P'},
    {"body", required_argument, 0, 'y'},  {"routes", required_argument, 0, 'R'},
    {"first", required_argument, 0, 'f'}, {"garbage", no_argument, 0, 'g'},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    fprintf(stderr, "usage: qm_peer send|recv|verify [options] (see the source header)\n");
    return 2;
  }
  p.mode = argv[1];
  optind = 2;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': p.dir = optarg; break;
    case 'b': p.bind = optarg; break;
    case 'n': p.name = optarg; break;
    case 'p': {
      char *eq = strchr(optarg, '=');
      if (!eq || p.n_peers == 4) return 2;
      snprintf(p.peers[p.n_peers][0], 256, "%.*s", (int)(eq - optarg), optarg);
      snprintf(p.peers[p.n_peers][1], 256, "%s", eq + 1);
      p.n_peers++;
      break;
    }
    case 'c': p.count = strtoull(optarg, NULL, 10); break;
    case 'f': p.first = strtoull(optarg, NULL, 10); break;
    case 'g': p.garbage = 1; break;
    case 'r': p.rate = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'B': p.batch = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'P': p.prefix = optarg; break;
    case 'y': p.body = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'R': p.routes_file = optarg; break;
    default: return 2;
    }
  }
  if (!p.dir) return 2;
  int sending = strcmp(p.mode, "send") == 0;
  if (!p.name) p.name = sending ? "src" : "dst";
  qm_log_set_service(p.name);
  qm_error_t err;
  qm_store_opts_t so = {.map_size = (size_t)4 << 30, .sync = getenv("QM_PEER_NOSYNC") ? 0 : 1};
  if (qm_store_open(&p.st, p.dir, &so, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  if (qm_store_table(p.st, "peer_state", &p.state, &err) != 0 ||
      qm_store_table(p.st, "applied", &p.applied, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  if (strcmp(p.mode, "verify") == 0) {
    int rc = verify(&p);
    qm_store_destroy(&p.st);
    return rc;
  }
  uv_loop_init(&p.loop);
  void *zctx = zmq_ctx_new();
  qm_bus_opts_t bo = {
    .name = p.name, .bind = p.bind, .zmq_ctx = zctx, .loop = &p.loop, .store = p.st,
    .cfg = {.batch_max = 1024, .window = 20000, .retransmit_ms = 500, .backoff_max_ms = 2000,
            .outbox_high_water = 400000, .outbox_low_water = 300000, .peer_timeout_ms = 5000,
            .heartbeat_ms = 500, .ack_flush_ms = 20},
    .resolve = resolve, .resolve_ud = &p, .routes = load_routes(&p, &err),
    .handler = sending ? NULL : apply, .handler_ud = &p};
  if (!bo.routes || qm_bus_new(&p.bus, &bo, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  uv_signal_init(&p.loop, &p.sigterm);
  uv_signal_init(&p.loop, &p.sighup);
  p.sigterm.data = p.sighup.data = &p;
  uv_signal_start(&p.sigterm, on_term, SIGTERM);
  uv_signal_start(&p.sighup, on_hup, SIGHUP);
  if (sending) {
    p.payload = malloc(p.body + 1);
    memset(p.payload, 'x', p.body);
    MDB_txn *txn;
    qm_store_begin(p.st, NULL, MDB_RDONLY, &txn);
    p.produced = get_u64(txn, p.state, "produced");
    mdb_txn_abort(txn);
    uv_timer_init(&p.loop, &p.produce);
    p.produce.data = &p;
    uv_timer_start(&p.produce, produce_cb, 0, p.rate ? 10 : 1);
  }
  qm_logf(QM_LOG_INFO, "peer.started", "mode=%s epoch=%llu", p.mode,
          (unsigned long long)qm_store_epoch(p.st));
  uv_run(&p.loop, UV_RUN_DEFAULT);
  uv_loop_close(&p.loop);
  zmq_ctx_term(zctx);
  qm_store_destroy(&p.st);
  free(p.payload);
  return 0;
}
