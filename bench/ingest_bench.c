/*
 * ingest_bench.c: interactions ingested and committed per second, through
 * the real path: a channel plugin's parse_file (channel_chat_json on a JSON
 * Lines file, channel_email on an mbox) submits each document, ingest
 * normalizes it, stores it once and appends interaction.received to its
 * outbox, 1,000 documents per transaction, every commit fsynced.
 *
 *   build/bench/ingest_bench [--chats N] [--emails N] [--dir DIR] [--plugins DIR]
 *
 * Last line: RESULT chats_per_s=N emails_per_s=N
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>

#include <qmesh/channel.h>

#include "bus.h"
#include "ingest/ingest.h"
#include "loader.h"
#include "log.h"
#include "routes.h"

#define PER_TXN 1000

static const char *names[] = {"ingest", "transcribe", "autoscore", "policy", "coaching", "recognition", "reporting"};

typedef struct {
  qm_bus_t *bus;
  ing_store_t st;
  MDB_txn *txn;
  size_t in_txn, stored, refused;
  uint8_t key[32];
} bench_t;

static bench_t B;

static const char *resolve(void *ud, const char *name) {
  (void)ud;
  (void)name;
  return "tcp://127.0.0.1:9"; /* nobody: the outbox keeps what is committed */
}

static void commit(void) {
  if (!B.txn) return;
  if (qm_bus_commit(B.bus, B.txn) != 0) {
    fprintf(stderr, "commit failed\n");
    exit(1);
  }
  B.txn = NULL;
  B.in_txn = 0;
}

static int submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason, size_t rl) {
  (void)ctx;
  qm_interaction_t ix;
  qm_error_t err;
  qm_interaction_opts_t o = {.customer_hash_key = B.key};
  if (qm_interaction_normalize(json, len, &o, &ix, &err) != 0) {
    if (reason) snprintf(reason, rl, "%s", err.msg);
    B.refused++;
    return QMESH_INVALID;
  }
  if (!B.txn && qm_bus_begin(B.bus, &B.txn) != 0) exit(1);
  ing_outcome_t out;
  uint32_t rev;
  if (ing_store_apply(&B.st, B.bus, B.txn, &ix, qm_now_ms(), &out, &rev, &err) != 0) {
    fprintf(stderr, "apply: %s\n", err.msg);
    exit(1);
  }
  qm_interaction_free(&ix);
  B.stored++;
  if (++B.in_txn == PER_TXN) commit();
  return QMESH_OK;
}

static int unsupported(void) { return QMESH_UNSUPPORTED; }

static double run_plugin(const char *so, const char *settings_text, const char *file, size_t expect) {
  qm_plugin_t *p;
  qm_error_t err;
  if (qm_plugin_load(so, QMESH_KIND_CHANNEL, &p, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  config_t c;
  config_init(&c);
  if (!config_read_string(&c, settings_text)) {
    fprintf(stderr, "bad settings\n");
    exit(1);
  }
  if (qm_plugin_validate_settings(p, config_lookup(&c, "settings"), "bench", &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  const qmesh_channel_ops_t *ops = qm_plugin_descriptor(p)->ops;
  void *state = NULL;
  if (ops->open(qm_plugin_host(p), qm_plugin_settings(p), &state) != QMESH_OK) exit(1);
  qmesh_channel_ctx_t ctx = {.struct_size = sizeof ctx, .submit = submit,
                             .watch_dir = (void *)unsupported, .http_route = (void *)unsupported,
                             .add_timer = (void *)unsupported, .store_media = (void *)unsupported,
                             .name = "bench"};
  size_t before = B.stored;
  double t0 = (double)uv_hrtime() / 1e9;
  int rc = ops->parse_file(state, file, &ctx);
  commit();
  double dt = (double)uv_hrtime() / 1e9 - t0;
  ops->close(state);
  qm_plugin_destroy(&p);
  config_destroy(&c);
  size_t n = B.stored - before;
  if (rc != QMESH_OK || n != expect) {
    fprintf(stderr, "%s: parsed %zu of %zu (rc %d, refused %zu)\n", so, n, expect, rc, B.refused);
    exit(1);
  }
  return (double)n / dt;
}

static void write_chats(const char *path, size_t n) {
  FILE *f = fopen(path, "w");
  if (!f) exit(1);
  for (size_t i = 0; i < n; i++) {
    fprintf(f, "{\"channel\":\"chat\",\"external_id\":\"bench-%zu\",\"tenant\":\"northwind\",\"queue\":\"billing\","
               "\"agent\":{\"id\":\"a-%zu\",\"name\":\"Agent %zu\",\"team\":\"Billing East\"},"
               "\"customer\":{\"id\":\"cust-%zu\"},\"started_at\":\"2026-11-20T14:03:11Z\","
               "\"ended_at\":\"2026-11-20T14:13:11Z\",\"wrapup\":\"billing.refund\",\"turns\":[",
            i, i % 40, i % 40, i);
    for (int t = 0; t < 20; t++)
      fprintf(f, "%s{\"speaker\":\"%s\",\"ts_ms\":%d,\"text\":\"%s\"}", t ? "," : "",
              t % 2 ? "customer" : "agent", t * 15000,
              t % 2 ? "I was charged twice for my plan this month and I would like a refund please."
                    : "I understand, let me check your account and the last two invoices for you.");
    fprintf(f, "]}\n");
  }
  fclose(f);
}

static void write_mbox(const char *path, size_t n) {
  FILE *f = fopen(path, "w");
  if (!f) exit(1);
  for (size_t i = 0; i < n; i++) {
    fprintf(f, "From sam%zu@mail.example Fri Nov 20 14:03:11 2026\n"
               "From: Sam Lee <sam%zu@mail.example>\nTo: help@support.northwind.example\n"
               "Subject: Double charge %zu\nDate: Fri, 20 Nov 2026 14:03:11 +0000\n"
               "Message-ID: <q%zu@mail.example>\nContent-Type: text/plain; charset=utf-8\n\n"
               "Hello, I was charged twice this month. Please refund one of the charges.\n\n"
               "From dana@support.northwind.example Fri Nov 20 15:03:11 2026\n"
               "From: Dana Reyes <dana@support.northwind.example>\nTo: sam%zu@mail.example\n"
               "Subject: Re: Double charge %zu\nDate: Fri, 20 Nov 2026 15:03:11 +0000\n"
               "Message-ID: <r%zu@support.northwind.example>\nIn-Reply-To: <q%zu@mail.example>\n"
               "References: <q%zu@mail.example>\nX-Northwind-Agent-Id: a-101\n"
               "Content-Type: text/plain; charset=utf-8\n\n"
               "Hi Sam, I am sorry about that. The refund is on its way.\n\n",
            i, i, i, i, i, i, i, i, i);
  }
  fclose(f);
}

int main(int argc, char **argv) {
  size_t chats = 100000, emails = 20000;
  const char *dir = "./ingest-bench-data";
  char plugins[4096];
  snprintf(plugins, sizeof plugins, "%s", argv[0]);
  char *slash = strrchr(plugins, '/');
  if (slash) snprintf(slash, sizeof plugins - (size_t)(slash - plugins), "/../plugins");
  else snprintf(plugins, sizeof plugins, "../plugins");
  static const struct option opts[] = {{"chats", required_argument, 0, 'c'}, {"emails", required_argument, 0, 'e'},
                                       {"dir", required_argument, 0, 'd'}, {"plugins", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'c': chats = strtoul(optarg, NULL, 10); break;
    case 'e': emails = strtoul(optarg, NULL, 10); break;
    case 'd': dir = optarg; break;
    case 'p': snprintf(plugins, sizeof plugins, "%s", optarg); break;
    default:
      fprintf(stderr, "usage: ingest_bench [--chats N] [--emails N] [--dir DIR] [--plugins DIR]\n");
      return c == 'h' ? 0 : 2;
    }
  }
  qm_log_set_level(QM_LOG_ERROR);
  char cmd[4200], path[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  if (system(cmd) != 0) return 1;
  printf("ingest_bench: %zu chats (20 turns each), %zu email threads (2 messages each), "
         "fsync on every commit, %d per transaction\n", chats, emails, PER_TXN);
  fflush(stdout);
  uv_loop_t loop;
  uv_loop_init(&loop);
  void *zctx = zmq_ctx_new();
  qm_store_t *st;
  qm_error_t err;
  qm_store_opts_t so = {.map_size = (size_t)16 << 30, .sync = 1};
  snprintf(path, sizeof path, "%s/ingest", dir);
  qm_routes_t *routes;
  char routes_path[4200];
  snprintf(routes_path, sizeof routes_path, "%s/configs/routes.cfg", QMESH_SOURCE_DIR);
  if (qm_store_open(&st, path, &so, &err) || ing_store_open(&B.st, st, &err) ||
      qm_routes_load_file(routes_path, names, 7, &routes, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  qm_bus_opts_t bo = {.name = "ingest", .zmq_ctx = zctx, .loop = &loop, .store = st,
                      .cfg = {.outbox_high_water = 100000000, .outbox_low_water = 90000000},
                      .resolve = resolve, .routes = routes};
  if (qm_bus_new(&B.bus, &bo, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  char chats_file[4200], mbox_file[4200], so_path[4300];
  snprintf(chats_file, sizeof chats_file, "%s/chats.jsonl", dir);
  snprintf(mbox_file, sizeof mbox_file, "%s/emails.mbox", dir);
  write_chats(chats_file, chats);
  write_mbox(mbox_file, emails);
  snprintf(so_path, sizeof so_path, "%s/channel_chat_json.so", plugins);
  double chat_rate = run_plugin(so_path, "settings = { tenant = \"northwind\"; max_line_kb = 64; };", chats_file, chats);
  printf("chats   %10.0f /s (%zu stored)\n", chat_rate, chats);
  fflush(stdout);
  snprintf(so_path, sizeof so_path, "%s/channel_email.so", plugins);
  double email_rate = run_plugin(so_path,
                                 "settings = { agent_domains = [\"support.northwind.example\"]; tenant = \"northwind\"; };",
                                 mbox_file, emails);
  printf("emails  %10.0f /s (%zu threads stored)\n", email_rate, emails);
  qm_bus_destroy(&B.bus);
  uv_run(&loop, UV_RUN_NOWAIT);
  ing_store_close(&B.st);
  qm_store_destroy(&st);
  zmq_ctx_term(zctx);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) return 1;
  printf("RESULT chats_per_s=%.0f emails_per_s=%.0f\n", chat_rate, email_rate);
  return 0;
}
