/*
 * bus_bench.c: durable delivery between two services in separate processes
 * over tcp loopback, against the raw building blocks measured in the same
 * run on the same disk.
 *
 *   raw LMDB      puts of 200-byte values, 1,000 per transaction, fsync on
 *   raw ZeroMQ    PUSH/PULL of 200-byte messages, two processes, no durability
 *   durable       the qmesh bus: the sender appends to its outbox (one
 *                 transaction per batch), the receiver applies each message
 *                 to a table in one transaction per batch and acknowledges;
 *                 both fsync every commit. Throughput counts from the first
 *                 append to the last acknowledgement.
 *   steady        10,000 messages/s offered for a few seconds: latency from
 *                 the moment each message is due (its place in the steady
 *                 stream) to its acknowledgement, so waiting for a commit in
 *                 progress counts.
 *
 * The last line is
 *   RESULT durable_msgs_per_s=N raw_lmdb_batch_puts_per_s=N raw_zmq_msgs_per_s=N
 *          ratio_vs_lmdb=R p99_ack_ms=N
 * (one line). Raw LMDB and durable delivery are measured in alternating
 * rounds (--rounds K, default 3) and compared by their medians.
 * Options: --count N (durable messages per round, default 300000),
 * --rate R and --seconds S for the steady phase, --dir DIR for the stores
 * (default ./bus-bench-data, on the disk under test; removed afterwards).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>

#include "bus.h"
#include "log.h"
#include "routes.h"
#include "store.h"

#define BODY 200

static const char *g_dir = "./bus-bench-data";
static int g_port;

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static void rm_rf(const char *path) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", path);
}

static int free_port(void) {
  /* Bind port 0 through ZeroMQ and read the port back. */
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PULL);
  char ep[64];
  size_t len = sizeof ep;
  zmq_bind(s, "tcp://127.0.0.1:*");
  zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return atoi(strrchr(ep, ':') + 1);
}

/* ---- raw LMDB ------------------------------------------------------------ */

static double g_commit_p50, g_commit_p99;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#define ROUNDS_MAX 9

static double median(double *v, unsigned n) {
  double tmp[ROUNDS_MAX];
  memcpy(tmp, v, n * sizeof *v);
  qsort(tmp, n, sizeof *tmp, cmp_double);
  return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static double raw_lmdb(unsigned long n) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/raw-lmdb", g_dir);
  qm_store_t *st;
  qm_error_t err;
  qm_store_opts_t so = {.map_size = (size_t)4 << 30, .sync = 1};
  if (qm_store_open(&st, dir, &so, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  MDB_dbi dbi;
  qm_store_table(st, "t", &dbi, &err);
  char val[BODY];
  memset(val, 'v', sizeof val);
  double t0 = now_s();
  for (unsigned long i = 0; i < n;) {
    MDB_txn *txn;
    qm_store_begin(st, NULL, 0, &txn);
    for (int j = 0; j < 1000 && i < n; j++, i++) {
      uint8_t kb[8];
      qm_be64_put(kb, i);
      MDB_val k = {8, kb}, v = {sizeof val, val};
      mdb_put(txn, dbi, &k, &v, 0);
    }
    qm_store_commit(st, txn);
  }
  double rate = (double)n / (now_s() - t0);
  /* Latency of one small durable commit: the floor under any end-to-end
   * figure, since a message crosses two (the sender's outbox append and
   * the receiver's apply). */
  enum { SAMPLES = 1000 };
  static double lat[SAMPLES];
  for (int i = 0; i < SAMPLES; i++) {
    MDB_txn *txn;
    double t = now_s();
    qm_store_begin(st, NULL, 0, &txn);
    for (int j = 0; j < 10; j++) {
      uint8_t kb[8];
      qm_be64_put(kb, n + (unsigned long)i * 10 + (unsigned long)j);
      MDB_val k = {8, kb}, v = {sizeof val, val};
      mdb_put(txn, dbi, &k, &v, 0);
    }
    qm_store_commit(st, txn);
    lat[i] = (now_s() - t) * 1e3;
  }
  qsort(lat, SAMPLES, sizeof *lat, cmp_double);
  g_commit_p50 = lat[SAMPLES / 2];
  g_commit_p99 = lat[SAMPLES * 99 / 100];
  qm_store_destroy(&st);
  rm_rf(dir);
  return rate;
}

/* ---- raw ZeroMQ ---------------------------------------------------------- */

static double raw_zmq(unsigned long n) {
  int port = free_port();
  char ep[64];
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
  int fds[2];
  if (pipe(fds) != 0) exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PULL);
    zmq_bind(s, ep);
    char c = 'r';
    if (write(fds[1], &c, 1) != 1) _exit(1);
    char buf[BODY];
    for (unsigned long i = 0; i < n; i++) zmq_recv(s, buf, sizeof buf, 0);
    c = 'd';
    if (write(fds[1], &c, 1) != 1) _exit(1);
    zmq_close(s);
    zmq_ctx_term(ctx);
    _exit(0);
  }
  char c;
  if (read(fds[0], &c, 1) != 1) exit(1);
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PUSH);
  zmq_connect(s, ep);
  char buf[BODY];
  memset(buf, 'z', sizeof buf);
  double t0 = now_s();
  for (unsigned long i = 0; i < n; i++) zmq_send(s, buf, sizeof buf, 0);
  if (read(fds[0], &c, 1) != 1) exit(1);
  double rate = (double)n / (now_s() - t0);
  zmq_close(s);
  zmq_ctx_term(ctx);
  waitpid(pid, NULL, 0);
  close(fds[0]);
  close(fds[1]);
  return rate;
}

/* ---- the receiver service ----------------------------------------------- */

static const char *names[] = {"src", "dst"};
static const char routes_text[] =
  "extra_types = [\"bench.msg\"];\n"
  "routes = ( { name = \"bench\"; match = \"bench.*\"; to = [\"dst\"]; } );\n";

typedef struct {
  MDB_dbi applied;
} recv_state_t;

static int apply(void *ud, qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg, const char *raw,
                 size_t len, qm_error_t *err) {
  (void)bus;
  (void)raw;
  (void)len;
  (void)err;
  recv_state_t *rs = ud;
  MDB_val k = {16, (void *)msg->id.b}, v = {msg->key.n, (void *)msg->key.p};
  return qm_store_err(mdb_put(txn, rs->applied, &k, &v, 0));
}

static void on_term(uv_signal_t *h, int sig) {
  (void)sig;
  uv_stop(h->loop);
}

static const char *resolve(void *ud, const char *name) {
  return strcmp(name, "dst") == 0 ? (const char *)ud : NULL;
}

static pid_t start_receiver(const char *ep, const char *dir) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  qm_log_set_service("dst");
  qm_log_set_level(QM_LOG_WARN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  void *ctx = zmq_ctx_new();
  qm_store_t *st;
  qm_error_t err;
  qm_store_opts_t so = {.map_size = (size_t)8 << 30, .sync = !getenv("BUS_BENCH_NOSYNC")};
  recv_state_t rs;
  if (qm_store_open(&st, dir, &so, &err) || qm_store_table(st, "applied", &rs.applied, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    _exit(1);
  }
  qm_bus_t *bus;
  qm_bus_opts_t bo = {.name = "dst", .bind = ep, .zmq_ctx = ctx, .loop = &loop, .store = st,
                      .handler = apply, .handler_ud = &rs};
  if (qm_bus_new(&bus, &bo, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    _exit(1);
  }
  uv_signal_t sig;
  uv_signal_init(&loop, &sig);
  uv_signal_start(&sig, on_term, SIGTERM);
  uv_run(&loop, UV_RUN_DEFAULT);
  _exit(0);
}

/* ---- the sender service -------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  qm_bus_t *bus;
  qm_store_t *st;
  uv_timer_t timer;
  uv_check_t check;
  char payload[BODY];
  unsigned long total, produced;
  double rate;                /* steady mode: messages per second offered */
  double t_start, t_end;
  /* Steady mode: enqueue time per sequence, latencies collected. */
  double *lat;
  unsigned long n_lat;
  uint64_t seq_base;
  int steady;
} sender_t;

static void produce(sender_t *s, unsigned n) {
  MDB_txn *txn;
  if (qm_bus_begin(s->bus, &txn)) return;
  qm_error_t err;
  unsigned i;
  for (i = 0; i < n && s->produced < s->total; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%lu", s->produced);
    qm_envelope_t e;
    qm_envelope_init(&e);
    e.type = (qm_str_t){"bench.msg", 9};
    e.src = (qm_str_t){"src", 3};
    e.key = (qm_str_t){key, strlen(key)};
    /* The body: a map with one 200-byte string, packed once. */
    static char body[BODY + 16];
    static size_t body_len;
    if (!body_len) {
      msgpack_sbuffer sb;
      msgpack_sbuffer_init(&sb);
      msgpack_packer pk;
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      msgpack_pack_map(&pk, 1);
      msgpack_pack_str_with_body(&pk, "p", 1);
      msgpack_pack_str_with_body(&pk, s->payload, BODY - 8);
      memcpy(body, sb.data, sb.size);
      body_len = sb.size;
      msgpack_sbuffer_destroy(&sb);
    }
    e.body_packed = body;
    e.body_packed_len = body_len;
    if (qm_bus_emit(s->bus, txn, &e, &err) < 0) {
      fprintf(stderr, "emit: %s\n", err.msg);
      exit(1);
    }
    s->produced++;
  }
  if (qm_bus_commit(s->bus, txn)) {
    fprintf(stderr, "commit failed\n");
    exit(1);
  }
}

static void tick(uv_timer_t *t) {
  sender_t *s = t->data;
  if (s->steady) {
    /* Messages arrive at a steady rate whether or not the loop is busy
     * with a commit: everything due by now is enqueued in one transaction
     * (group commit), and each message's latency counts from its due time. */
    unsigned long due = (unsigned long)((now_s() - s->t_start) * s->rate);
    if (due > s->total) due = s->total;
    if (due > s->produced) produce(s, (unsigned)(due - s->produced));
    if (s->produced >= s->total) uv_timer_stop(t);
    return;
  }
  /* Throughput mode: keep the outbox fed without letting it grow without
   * bound: produce while fewer than 2 windows are unacknowledged. */
  uint64_t committed = 0, acked = 0;
  qm_bus_link_seqs(s->bus, "dst", &committed, &acked);
  if (s->produced < s->total && committed - acked < 40000) produce(s, 1024);
}

static void check(uv_check_t *c) {
  sender_t *s = c->data;
  uint64_t committed = 0, acked = 0;
  if (qm_bus_link_seqs(s->bus, "dst", &committed, &acked)) return;
  if (s->steady) {
    double t = now_s();
    while (s->seq_base + s->n_lat + 1 <= acked && s->n_lat < s->total) {
      s->lat[s->n_lat] = t - (s->t_start + (double)s->n_lat / s->rate);
      s->n_lat++;
    }
  } else if (s->produced < s->total && committed - acked < 40000) {
    produce(s, 1024);
  }
  if (s->produced >= s->total && acked == committed && acked >= s->seq_base + s->total) {
    s->t_end = now_s();
    uv_stop(&s->loop);
  }
}


static void close_open(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void run_sender(const char *ep, const char *dir, unsigned long total, unsigned rate,
                       double *throughput, double *p99_ms, double *p50_ms) {
  static sender_t s;
  memset(&s, 0, sizeof s);
  memset(s.payload, 'x', sizeof s.payload);
  uv_loop_init(&s.loop);
  void *ctx = zmq_ctx_new();
  qm_error_t err;
  qm_store_opts_t so = {.map_size = (size_t)8 << 30, .sync = !getenv("BUS_BENCH_NOSYNC")};
  if (qm_store_open(&s.st, dir, &so, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  qm_routes_t *routes;
  if (qm_routes_load_string(routes_text, "bench", names, 2, &routes, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  qm_bus_opts_t bo = {.name = "src", .zmq_ctx = ctx, .loop = &s.loop, .store = s.st,
                      .cfg = {.window = 20000, .retransmit_ms = 2000},
                      .resolve = resolve, .resolve_ud = (void *)ep, .routes = routes};
  if (qm_bus_new(&s.bus, &bo, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  s.total = total;
  s.steady = rate > 0;
  if (s.steady) {
    s.rate = rate;
    s.lat = calloc(total + 2, sizeof *s.lat);
    uint64_t committed = 0, acked = 0;
    qm_bus_link_seqs(s.bus, "dst", &committed, &acked);
    s.seq_base = committed;
  }
  uv_timer_init(&s.loop, &s.timer);
  s.timer.data = &s;
  uv_check_init(&s.loop, &s.check);
  s.check.data = &s;
  uv_check_start(&s.check, check);
  s.t_start = now_s();
  uv_timer_start(&s.timer, tick, 0, 1);
  uv_run(&s.loop, UV_RUN_DEFAULT);
  *throughput = (double)total / (s.t_end - s.t_start);
  if (s.steady && s.n_lat) {
    qsort(s.lat, s.n_lat, sizeof *s.lat, cmp_double);
    *p99_ms = s.lat[(size_t)((double)s.n_lat * 0.99)] * 1e3;
    *p50_ms = s.lat[s.n_lat / 2] * 1e3;
  }
  qm_bus_destroy(&s.bus);
  uv_walk(&s.loop, close_open, NULL);
  uv_run(&s.loop, UV_RUN_DEFAULT);
  uv_loop_close(&s.loop);
  zmq_ctx_term(ctx);
  qm_store_destroy(&s.st);
  free(s.lat);
}

int main(int argc, char **argv) {
  unsigned long count = 300000;
  unsigned rate = 10000, seconds = 5, rounds = 3;
  static const struct option opts[] = {{"count", required_argument, 0, 'n'},
                                       {"rate", required_argument, 0, 'r'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"dir", required_argument, 0, 'd'},
                                       {"rounds", required_argument, 0, 'R'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'n': count = strtoul(optarg, NULL, 10); break;
    case 'r': rate = (unsigned)strtoul(optarg, NULL, 10); break;
    case 's': seconds = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'd': g_dir = optarg; break;
    case 'R':
      rounds = (unsigned)strtoul(optarg, NULL, 10);
      if (rounds < 1 || rounds > ROUNDS_MAX) rounds = 3;
      break;
    default:
      fprintf(stderr, "usage: bus_bench [--count N] [--rounds K] [--rate R] [--seconds S] "
                      "[--dir DIR]\n");
      return c == 'h' ? 0 : 2;
    }
  }
  qm_log_set_level(QM_LOG_WARN);
  rm_rf(g_dir);
  printf("bus_bench: 200-byte bodies, fsync on every commit, data in %s\n", g_dir);
  fflush(stdout);

  double zmqr = raw_zmq(1000000);
  printf("raw ZeroMQ %10.0f msgs/s (PUSH/PULL, tcp loopback, no durability)\n", zmqr);
  fflush(stdout);

  g_port = free_port();
  char ep[64], rdir[4096], sdir[4096];
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", g_port);
  snprintf(rdir, sizeof rdir, "%s/dst", g_dir);
  snprintf(sdir, sizeof sdir, "%s/src", g_dir);
  pid_t rpid = start_receiver(ep, rdir);
  /* The disk's speed drifts from second to second, so raw LMDB and the
   * durable bus are measured in alternating rounds and compared by their
   * medians rather than one figure each taken at different moments. */
  double lmdb_r[ROUNDS_MAX], durable_r[ROUNDS_MAX], p99 = 0, p50 = 0, ignored = 0;
  for (unsigned r = 0; r < rounds; r++) {
    lmdb_r[r] = raw_lmdb(200000);
    printf("round %u: raw LMDB %10.0f puts/s (1,000 per transaction; one small commit p50 %.2f ms, "
           "p99 %.2f ms)\n", r + 1, lmdb_r[r], g_commit_p50, g_commit_p99);
    fflush(stdout);
    run_sender(ep, sdir, count, 0, &durable_r[r], &ignored, &ignored);
    printf("round %u: durable  %10.0f msgs/s (%lu messages: append, send, apply, commit, ack)\n",
           r + 1, durable_r[r], count);
    fflush(stdout);
  }
  double lmdb = median(lmdb_r, rounds), durable = median(durable_r, rounds);
  printf("median: raw LMDB %.0f puts/s, durable %.0f msgs/s\n", lmdb, durable);
  double steady = 0;
  run_sender(ep, sdir, (unsigned long)rate * seconds, rate, &steady, &p99, &p50);
  printf("steady     %u msgs/s for %u s: enqueue-to-ack p50 %.2f ms, p99 %.2f ms\n", rate, seconds,
         p50, p99);
  kill(rpid, SIGTERM);
  waitpid(rpid, NULL, 0);
  rm_rf(g_dir);
  printf("RESULT durable_msgs_per_s=%.0f raw_lmdb_batch_puts_per_s=%.0f raw_zmq_msgs_per_s=%.0f "
         "ratio_vs_lmdb=%.2f p99_ack_ms=%.2f p50_ack_ms=%.2f raw_commit_p99_ms=%.2f\n",
         durable, lmdb, zmqr, durable / lmdb, p99, p50, g_commit_p99);
  return 0;
}
