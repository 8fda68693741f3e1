/*
 * ingest.c: the ingest service: hosts the configured channel plugins, gives
 * them the core services of qmesh/channel.h (submit with group commit,
 * watched spool directories, HTTP routes, timers, the media store), applies
 * backpressure, and answers its own API (GET /v1/interactions/ID,
 * GET /v1/interactions/stats).
 *
 * Everything runs on ingest's loop thread. A submission joins the open
 * batch transaction; the batch commits when the operation that produced it
 * ends (a spool file parsed, an HTTP handler returned, a timer fired), and
 * only then is the file moved to done/ or the HTTP response sent. Plugin
 * threads that submit are queued and answered after their batch commits.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <qmesh/channel.h>

#include "cfgutil.h"
#include "ingest.h"
#include "loader.h"
#include "log.h"
#include "media.h"

#define CHANNELS_MAX 16
#define TIMERS_MAX 16
#define SPOOL_TICK_MS 200
#define SPOOL_BUDGET_MS 100

typedef struct ingest ingest_t;
typedef struct channel channel_t;

/* The context handed to a plugin: the public struct first, so the core can
 * find its channel from the pointer the plugin passes back. */
typedef struct chan_ctx {
  qmesh_channel_ctx_t pub;
  channel_t *ch;
} chan_ctx_t;

typedef struct chan_timer {
  uv_timer_t h;
  channel_t *ch;
  void (*fn)(void *state, const qmesh_channel_ctx_t *ctx);
} chan_timer_t;

typedef struct chan_route {
  channel_t *ch;
  qmesh_http_handler_fn fn;
} chan_route_t;

struct channel {
  ingest_t *ing;
  char name[64];
  qm_plugin_t *plugin;
  const qmesh_channel_ops_t *ops;
  void *state;
  chan_ctx_t ctx;
  int started, paused;
  /* The spool directory, when the plugin asked for one. */
  char spool[PATH_MAX];
  char suffixes[256];
  uv_timer_t spool_timer;
  int has_spool;
  /* Refusals seen while parsing the current spool file. */
  char file_reason[512];
  int file_refused;
  chan_timer_t timers[TIMERS_MAX];
  size_t n_timers;
  chan_route_t routes[8];
  size_t n_routes;
};

/* A submission from a plugin's own thread, waiting for its batch. */
typedef struct pending {
  struct pending *next;
  channel_t *ch;
  const char *json;
  size_t len;
  char *reason;
  size_t reasonlen;
  int rc, done;
} pending_t;

struct ingest {
  qm_service_t *svc;
  qm_bus_t *bus;
  ing_store_t st;
  qm_media_t *media;
  uint8_t hash_key[32];
  size_t max_doc;
  MDB_txn *txn;        /* the open batch, if any */
  size_t batch_n;
  channel_t channels[CHANNELS_MAX];
  size_t n_channels;
  uv_timer_t bp_timer; /* watches backpressure */
  int busy;
  pthread_t loop_thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pending_t *queue;
  uv_async_t wake;
  qm_counter_t *c_new, *c_rev, *c_same, *c_invalid, *c_busy;
  int open_handles;    /* freed when the last of its handles has closed */
  int bp_started;
};

static void handle_closed(uv_handle_t *h) {
  ingest_t *ing = h->data;
  if (--ing->open_handles == 0) free(ing);
}

/* Closes a handle whose data may point elsewhere: it is repointed to the
 * ingest struct, whose life it then holds. */
static void close_handle(ingest_t *ing, uv_handle_t *h) {
  h->data = ing;
  ing->open_handles++;
  uv_close(h, handle_closed);
}

/* ---- batches ------------------------------------------------------------ */

static int batch_begin(ingest_t *ing) {
  if (ing->txn) return 0;
  int rc = qm_bus_begin(ing->bus, &ing->txn);
  if (rc) ing->txn = NULL;
  ing->batch_n = 0;
  return rc;
}

/* Commits the open batch; returns 0 or the commit's error (the batch is
 * then gone: nothing of it was stored). */
static int batch_commit(ingest_t *ing) {
  if (!ing->txn) return 0;
  MDB_txn *txn = ing->txn;
  ing->txn = NULL;
  int rc = qm_bus_commit(ing->bus, txn);
  if (rc) qm_logf(QM_LOG_ERROR, "ingest.commit_failed", "error=%s n=%zu", qm_err_name(rc), ing->batch_n);
  return rc;
}

static void batch_abort(ingest_t *ing) {
  if (!ing->txn) return;
  qm_bus_abort(ing->bus, ing->txn);
  ing->txn = NULL;
}

static int intake_paused(ingest_t *ing) {
  qm_bus_stats_t st;
  qm_bus_stats(ing->bus, &st);
  return st.intake_paused;
}

/* Normalizes and applies one document in the open batch. */
static int submit_here(channel_t *ch, const char *json, size_t len, char *reason, size_t reasonlen) {
  ingest_t *ing = ch->ing;
  qm_error_t err;
  qm_interaction_t ix;
  if (intake_paused(ing)) {
    qm_counter_add(ing->c_busy, 1);
    if (reason && reasonlen) snprintf(reason, reasonlen, "busy: the outbox is over its high-water mark");
    return QMESH_BUSY;
  }
  qm_interaction_opts_t o = {.customer_hash_key = ing->hash_key, .max_document_bytes = ing->max_doc};
  if (qm_interaction_normalize(json, len, &o, &ix, &err) != 0) {
    qm_counter_add(ing->c_invalid, 1);
    if (reason && reasonlen) snprintf(reason, reasonlen, "%s", err.msg);
    qm_log(QM_LOG_WARN, "ingest.refused", "channel", ch->name, "reason", err.msg, NULL);
    return QMESH_INVALID;
  }
  int rc = batch_begin(ing);
  ing_outcome_t outcome = ING_UNCHANGED;
  uint32_t rev = 0;
  if (!rc) rc = ing_store_apply(&ing->st, ing->bus, ing->txn, &ix, qm_now_ms(), &outcome, &rev, &err);
  qm_interaction_free(&ix);
  if (rc) {
    /* A store error (a full map) loses the whole open batch: its callers
     * learn it when the commit they wait for fails. */
    batch_abort(ing);
    if (reason && reasonlen) snprintf(reason, reasonlen, "busy: %s", qm_strerror(rc));
    qm_counter_add(ing->c_busy, 1);
    return QMESH_BUSY;
  }
  ing->batch_n++;
  qm_counter_add(outcome == ING_STORED_NEW ? ing->c_new : outcome == ING_STORED_REVISION ? ing->c_rev : ing->c_same, 1);
  return QMESH_OK;
}

/* Submissions from plugin threads: queued, applied and committed as one
 * batch on the loop thread, then answered. */
static void on_wake(uv_async_t *a) {
  ingest_t *ing = a->data;
  pthread_mutex_lock(&ing->mu);
  pending_t *q = ing->queue;
  ing->queue = NULL;
  pthread_mutex_unlock(&ing->mu);
  if (!q) return;
  for (pending_t *p = q; p; p = p->next) p->rc = submit_here(p->ch, p->json, p->len, p->reason, p->reasonlen);
  int crc = batch_commit(ing);
  pthread_mutex_lock(&ing->mu);
  for (pending_t *p = q, *next; p; p = next) {
    next = p->next;
    if (crc && p->rc == QMESH_OK) p->rc = QMESH_BUSY;
    p->done = 1;
  }
  pthread_cond_broadcast(&ing->cv);
  pthread_mutex_unlock(&ing->mu);
}

static int ctx_submit(const qmesh_channel_ctx_t *pub, const char *json, size_t len, char *reason,
                      size_t reasonlen) {
  channel_t *ch = ((const chan_ctx_t *)pub)->ch;
  ingest_t *ing = ch->ing;
  if (!json) return QMESH_INVALID;
  if (pthread_equal(pthread_self(), ing->loop_thread)) {
    int rc = submit_here(ch, json, len, reason, reasonlen);
    if (rc == QMESH_INVALID) {
      ch->file_refused = 1;
      snprintf(ch->file_reason, sizeof ch->file_reason, "%s", reason ? reason : "refused");
    }
    return rc;
  }
  pending_t p = {.ch = ch, .json = json, .len = len, .reason = reason, .reasonlen = reasonlen};
  pthread_mutex_lock(&ing->mu);
  p.next = ing->queue;
  ing->queue = &p;
  uv_async_send(&ing->wake);
  while (!p.done) pthread_cond_wait(&ing->cv, &ing->mu);
  pthread_mutex_unlock(&ing->mu);
  return p.rc;
}

/* ---- spool directories --------------------------------------------------- */

static int has_suffix(const char *name, const char *suffixes) {
  if (!suffixes || !*suffixes) return 1;
  size_t n = strlen(name);
  const char *p = suffixes;
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len && len <= n && strncmp(name + n - len, p, len) == 0) return 1;
    p += len + (p[len] == ',');
  }
  return 0;
}

static int cmp_names(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static void move_to(channel_t *ch, const char *name, const char *sub, const char *reason) {
  char from[PATH_MAX + 256], to[PATH_MAX + 300];
  snprintf(from, sizeof from, "%s/%s", ch->spool, name);
  snprintf(to, sizeof to, "%s/%s/%s", ch->spool, sub, name);
  if (rename(from, to) != 0) {
    qm_log(QM_LOG_ERROR, "ingest.spool_move_failed", "file", from, "error", strerror(errno), NULL);
    return;
  }
  if (reason) {
    char rp[PATH_MAX + 310];
    snprintf(rp, sizeof rp, "%s.reason", to);
    FILE *f = fopen(rp, "w");
    if (f) {
      fprintf(f, "%s\n", reason);
      fclose(f);
    }
  }
}

/* Parses the waiting files in name order, one batch per file, for at most
 * SPOOL_BUDGET_MS per tick so the loop stays responsive. */
static void spool_tick(uv_timer_t *t) {
  channel_t *ch = t->data;
  ingest_t *ing = ch->ing;
  if (!ch->started || ch->paused || intake_paused(ing)) return;
  struct dirent **names = NULL;
  int n = scandir(ch->spool, &names, NULL, cmp_names);
  if (n < 0) return;
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < n; i++) {
    const char *name = names[i]->d_name;
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", ch->spool, name);
    struct stat sb;
    int eligible = name[0] != '.' && has_suffix(name, ch->suffixes) && stat(path, &sb) == 0 &&
                   S_ISREG(sb.st_mode);
    if (eligible && (uv_hrtime() - t0) / 1000000 < SPOOL_BUDGET_MS && !intake_paused(ing)) {
      ch->file_refused = 0;
      ch->file_reason[0] = '\0';
      int rc = ch->ops->parse_file(ch->state, path, &ch->ctx.pub);
      int crc = batch_commit(ing);
      if (crc) {
        /* Not stored: the file stays and is parsed again. */
      } else if (rc == QMESH_OK && !ch->file_refused) {
        move_to(ch, name, "done", NULL);
        qm_log(QM_LOG_INFO, "ingest.file_done", "channel", ch->name, "file", name, NULL);
      } else if (rc == QMESH_BUSY) {
        /* Busy part-way: what was accepted is stored; the rest comes on the
         * next tick, when the whole file is parsed again. */
      } else {
        const char *why = ch->file_refused ? ch->file_reason : "the plugin could not parse the file";
        move_to(ch, name, "failed", why);
        qm_log(QM_LOG_WARN, "ingest.file_failed", "channel", ch->name, "file", name, "reason", why, NULL);
      }
    }
    free(names[i]);
  }
  free(names);
}

static int make_dir(const char *p) { return mkdir(p, 0750) == 0 || errno == EEXIST ? 0 : -1; }

static int ctx_watch_dir(const qmesh_channel_ctx_t *pub, const char *dir, const char *suffixes) {
  channel_t *ch = ((const chan_ctx_t *)pub)->ch;
  if (!dir || !*dir || ch->has_spool || !ch->ops->parse_file) return QMESH_INVALID;
  char done[PATH_MAX + 8], failed[PATH_MAX + 8];
  if (dir[0] == '/') snprintf(ch->spool, sizeof ch->spool, "%s", dir);
  else qm_config_resolve(qm_service_config(ch->ing->svc), dir, ch->spool);
  snprintf(done, sizeof done, "%s/done", ch->spool);
  snprintf(failed, sizeof failed, "%s/failed", ch->spool);
  if (make_dir(ch->spool) || make_dir(done) || make_dir(failed)) {
    qm_log(QM_LOG_ERROR, "ingest.spool_unusable", "channel", ch->name, "dir", ch->spool, "error",
           strerror(errno), NULL);
    return QMESH_INVALID;
  }
  snprintf(ch->suffixes, sizeof ch->suffixes, "%s", suffixes ? suffixes : "");
  uv_timer_init(qm_service_loop(ch->ing->svc), &ch->spool_timer);
  ch->spool_timer.data = ch;
  uv_timer_start(&ch->spool_timer, spool_tick, 0, SPOOL_TICK_MS);
  ch->has_spool = 1;
  qm_log(QM_LOG_INFO, "ingest.spool_watching", "channel", ch->name, "dir", ch->spool, NULL);
  return QMESH_OK;
}

/* ---- HTTP routes and timers -------------------------------------------- */

static void route_handler(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  chan_route_t *r = ud;
  channel_t *ch = r->ch;
  ingest_t *ing = ch->ing;
  if (!ch->started || intake_paused(ing)) {
    qm_http_resp_text(resp, 503, "{\"error\": \"busy\"}\n");
    resp->content_type = "application/json";
    resp->retry_after = 1;
    return;
  }
  char method[16], path[512], query[1024];
  snprintf(method, sizeof method, "%.*s", (int)req->method_len, req->method);
  snprintf(path, sizeof path, "%.*s", (int)req->path_len, req->path);
  snprintf(query, sizeof query, "%.*s", (int)req->query_len, req->query);
  qmesh_http_request_t pr = {.struct_size = sizeof pr, .method = method, .path = path,
                             .query = query, .body = req->body, .body_len = req->body_len,
                             .content_type = ""};
  size_t cap = 64 << 10;
  char *out = calloc(1, cap);
  if (!out) {
    qm_http_resp_text(resp, 500, "{\"error\": \"out of memory\"}\n");
    return;
  }
  ch->file_refused = 0;
  int status = r->fn(ch->state, &ch->ctx.pub, &pr, out, cap);
  if (batch_commit(ing) != 0) {
    /* Nothing of this request was stored: say busy, not accepted. */
    status = 503;
    snprintf(out, cap, "{\"error\": \"busy\"}");
  }
  if (status < 100 || status > 599) status = 500;
  qm_http_resp_take(resp, status, "application/json", out, strnlen(out, cap));
  if (status == 503) resp->retry_after = 1;
}

static int ctx_http_route(const qmesh_channel_ctx_t *pub, const char *method, const char *path,
                          qmesh_http_handler_fn fn) {
  channel_t *ch = ((const chan_ctx_t *)pub)->ch;
  qm_http_t *http = qm_service_http(ch->ing->svc);
  if (!http) return QMESH_UNSUPPORTED;
  if (!method || !path || path[0] != '/' || !fn || ch->n_routes == 8) return QMESH_INVALID;
  chan_route_t *r = &ch->routes[ch->n_routes++];
  r->ch = ch;
  r->fn = fn;
  if (qm_http_route(http, method, path, route_handler, r) != 0) return QMESH_INVALID;
  qm_log(QM_LOG_INFO, "ingest.http_route", "channel", ch->name, "method", method, "path", path, NULL);
  return QMESH_OK;
}

static void timer_cb(uv_timer_t *t) {
  chan_timer_t *ct = t->data;
  if (!ct->ch->started) return;
  ct->fn(ct->ch->state, &ct->ch->ctx.pub);
  batch_commit(ct->ch->ing);
}

static int ctx_add_timer(const qmesh_channel_ctx_t *pub, uint32_t every_ms,
                         void (*fn)(void *state, const qmesh_channel_ctx_t *ctx)) {
  channel_t *ch = ((const chan_ctx_t *)pub)->ch;
  if (!fn || every_ms == 0 || ch->n_timers == TIMERS_MAX) return QMESH_INVALID;
  chan_timer_t *ct = &ch->timers[ch->n_timers++];
  ct->ch = ch;
  ct->fn = fn;
  uv_timer_init(qm_service_loop(ch->ing->svc), &ct->h);
  ct->h.data = ct;
  uv_timer_start(&ct->h, timer_cb, every_ms, every_ms);
  return QMESH_OK;
}

static int ctx_store_media(const qmesh_channel_ctx_t *pub, const char *path, char *ref, size_t reflen) {
  channel_t *ch = ((const chan_ctx_t *)pub)->ch;
  qm_error_t err;
  if (!path || !ref || reflen < 72) return QMESH_INVALID;
  if (qm_media_put_file(ch->ing->media, path, ref, reflen, &err) != 0) {
    qm_log(QM_LOG_WARN, "ingest.media_refused", "channel", ch->name, "file", path, "error", err.msg, NULL);
    return QMESH_INVALID;
  }
  return QMESH_OK;
}

/* ---- backpressure ---------------------------------------------------------- */

static void bp_tick(uv_timer_t *t) {
  ingest_t *ing = t->data;
  int busy = intake_paused(ing);
  if (busy == ing->busy) return;
  ing->busy = busy;
  qm_log(busy ? QM_LOG_WARN : QM_LOG_INFO, busy ? "ingest.paused" : "ingest.resumed", NULL);
  for (size_t i = 0; i < ing->n_channels; i++) {
    channel_t *ch = &ing->channels[i];
    if (!ch->started) continue;
    if (busy && ch->ops->pause && !ch->paused) ch->paused = ch->ops->pause(ch->state) == QMESH_OK;
    else if (!busy && ch->paused && ch->ops->resume) ch->paused = ch->ops->resume(ch->state) != QMESH_OK;
  }
}

/* ---- the API ----------------------------------------------------------------- */

static void h_interaction(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  ingest_t *ing = ud;
  MDB_txn *txn;
  if (qm_store_begin(qm_service_store(ing->svc), NULL, MDB_RDONLY, &txn) != 0) {
    qm_http_resp_text(resp, 500, "{\"error\": \"store\"}\n");
    return;
  }
  const char *prefix = "/v1/interactions/";
  size_t pl = strlen(prefix);
  char id[64];
  snprintf(id, sizeof id, "%.*s", (int)(req->path_len > pl ? req->path_len - pl : 0), req->path + pl);
  json_t *j;
  if (strcmp(id, "stats") == 0) {
    size_t n, r;
    ing_store_counts(&ing->st, txn, &n, &r);
    j = json_pack("{s:I,s:I}", "interactions", (json_int_t)n, "revisions", (json_int_t)r);
  } else {
    j = ing_store_get(&ing->st, txn, id);
  }
  mdb_txn_abort(txn);
  if (!j) {
    qm_http_resp_text(resp, 404, "{\"error\": \"no interaction %s\"}\n", id);
    resp->content_type = "application/json";
    return;
  }
  char *s = json_dumps(j, JSON_INDENT(2));
  json_decref(j);
  qm_http_resp_take(resp, 200, "application/json", s, strlen(s));
}

/* ---- configuration ------------------------------------------------------------ */

static int cfg_fail(qm_error_t *err, const char *file, const config_setting_t *s, const char *path,
                    const char *what) {
  return qm_error_set(err, QM_ECONFIG, "%s:%d: %s: %s", file, s ? config_setting_source_line(s) : 0,
                      path, what);
}

/* Refuses a member of `g` not in `valid`, naming it and the valid keys. */
static int check_keys(qm_error_t *err, const char *file, const config_setting_t *g,
                      const char *prefix, const char *const *valid) {
  const config_setting_t *m = g ? qm__cfg_unknown_member(g, valid) : NULL;
  if (!m) return 0;
  char path[160], what[512];
  snprintf(path, sizeof path, "%s.%s", prefix, config_setting_name(m));
  int w = snprintf(what, sizeof what, "unknown setting (valid: ");
  qm__join_names(what + w, sizeof what - (size_t)w - 1, valid, SIZE_MAX);
  strcat(what, ")");
  return cfg_fail(err, file, m, path, what);
}

static int load_hash_key(ingest_t *ing, const config_setting_t *g, const char *file, qm_error_t *err) {
  const char *hexkey = NULL;
  config_setting_t *k = g ? config_setting_get_member(g, "customer_hash_key") : NULL;
  if (k) hexkey = config_setting_get_string(k);
  if (hexkey && *hexkey) {
    size_t bin_len = 0;
    if (strlen(hexkey) != 64 ||
        sodium_hex2bin(ing->hash_key, 32, hexkey, 64, NULL, &bin_len, NULL) != 0 || bin_len != 32)
      return cfg_fail(err, file, k, "services.ingest.customer_hash_key", "must be 64 hex digits");
    return 0;
  }
  /* No key configured: one is made once and kept in the store, so hashes
   * stay stable across restarts of this installation. */
  qm_store_t *st = qm_service_store(ing->svc);
  MDB_dbi meta;
  MDB_txn *txn;
  int rc = qm_store_table(st, "meta", &meta, err);
  if (rc) return rc;
  rc = qm_store_begin(st, NULL, 0, &txn);
  if (rc) return qm_error_set(err, rc, "ingest: cannot read its key");
  MDB_val kk = {17, "customer_hash_key"}, v;
  if (mdb_get(txn, meta, &kk, &v) == 0 && v.mv_size == 32) {
    memcpy(ing->hash_key, v.mv_data, 32);
    mdb_txn_abort(txn);
    return 0;
  }
  randombytes_buf(ing->hash_key, 32);
  v.mv_size = 32;
  v.mv_data = ing->hash_key;
  rc = mdb_put(txn, meta, &kk, &v, 0);
  if (rc == 0) rc = mdb_txn_commit(txn);
  else mdb_txn_abort(txn);
  return rc ? qm_error_set(err, qm_store_err(rc), "ingest: cannot keep its key") : 0;
}

static int open_channel(ingest_t *ing, const config_setting_t *c, int idx, const char *file,
                        qm_error_t *err) {
  char path[96];
  snprintf(path, sizeof path, "services.ingest.channels.[%d]", idx);
  static const char *const keys[] = {"name", "plugin", "settings", "enabled", NULL};
  if (!config_setting_is_group(c)) return cfg_fail(err, file, c, path, "must be a group");
  int krc = check_keys(err, file, c, path, keys);
  if (krc) return krc;
  const char *name = NULL, *plugin = NULL;
  int enabled = 1;
  config_setting_t *m;
  if (!(m = config_setting_get_member(c, "name")) || !(name = config_setting_get_string(m)) || !*name)
    return cfg_fail(err, file, m ? m : c, path, "name: required string missing");
  if (!(m = config_setting_get_member(c, "plugin")) || !(plugin = config_setting_get_string(m)) || !*plugin)
    return cfg_fail(err, file, m ? m : c, path, "plugin: required string missing");
  if ((m = config_setting_get_member(c, "enabled"))) {
    if (config_setting_type(m) != CONFIG_TYPE_BOOL)
      return cfg_fail(err, file, m, path, "enabled: must be true or false");
    enabled = config_setting_get_bool(m);
  }
  for (size_t i = 0; i < ing->n_channels; i++)
    if (strcmp(ing->channels[i].name, name) == 0)
      return cfg_fail(err, file, c, path, "name: another channel has this name");
  if (!enabled) return 0;
  if (ing->n_channels == CHANNELS_MAX) return cfg_fail(err, file, c, path, "too many channels");
  channel_t *ch = &ing->channels[ing->n_channels];
  memset(ch, 0, sizeof *ch);
  ch->ing = ing;
  snprintf(ch->name, sizeof ch->name, "%s", name);
  char so[PATH_MAX + 64];
  qm_plugin_resolve(qm_service_config(ing->svc)->plugin_dir, plugin, so, sizeof so);
  int rc = qm_plugin_load(so, QMESH_KIND_CHANNEL, &ch->plugin, err);
  if (!rc) rc = qm_plugin_validate_settings(ch->plugin, config_setting_get_member(c, "settings"), file, err);
  if (rc) {
    qm_plugin_destroy(&ch->plugin);
    return rc;
  }
  ch->ops = qm_plugin_descriptor(ch->plugin)->ops;
  ch->ctx.ch = ch;
  ch->ctx.pub = (qmesh_channel_ctx_t){
    .struct_size = sizeof(qmesh_channel_ctx_t), .submit = ctx_submit, .watch_dir = ctx_watch_dir,
    .http_route = ctx_http_route, .add_timer = ctx_add_timer, .store_media = ctx_store_media,
    .name = ch->name};
  if (ch->ops->open(qm_plugin_host(ch->plugin), qm_plugin_settings(ch->plugin), &ch->state) != QMESH_OK) {
    qm_plugin_destroy(&ch->plugin);
    return qm_error_set(err, QM_EPLUGIN, "channel \"%s\": plugin %s refused to open (see its log)", name, plugin);
  }
  ing->n_channels++;
  if (ch->ops->start(ch->state, &ch->ctx.pub) != QMESH_OK)
    return qm_error_set(err, QM_EPLUGIN, "channel \"%s\": plugin %s failed to start (see its log)", name, plugin);
  ch->started = 1;
  qm_log(QM_LOG_INFO, "ingest.channel_started", "channel", name, "plugin", plugin, NULL);
  return 0;
}

static int ingest_init(qm_service_t *svc, qm_error_t *err) {
  ingest_t *ing = calloc(1, sizeof *ing);
  if (!ing) return qm_error_set(err, QM_ENOMEM, "out of memory");
  qm_service_set_data(svc, ing);
  ing->svc = svc;
  ing->bus = qm_service_bus(svc);
  ing->loop_thread = pthread_self();
  pthread_mutex_init(&ing->mu, NULL);
  pthread_cond_init(&ing->cv, NULL);
  uv_async_init(qm_service_loop(svc), &ing->wake, on_wake);
  ing->wake.data = ing;
  const qm_config_t *cfg = qm_service_config(svc);
  const config_setting_t *g = qm_service_cfg(svc)->setting;
  const char *file = cfg->path;
  static const char *const keys[] = {"bind", "connect", "http", "max_document_kb",
                                     "customer_hash_key", "media_dir", "media_keys_file",
                                     "channels", NULL};
  int rc = check_keys(err, file, g, "services.ingest", keys);
  if (rc) return rc;
  int max_kb = 4096;
  config_setting_t *m = g ? config_setting_get_member(g, "max_document_kb") : NULL;
  if (m && (config_setting_type(m) != CONFIG_TYPE_INT || (max_kb = config_setting_get_int(m)) < 1 || max_kb > 65536))
    return cfg_fail(err, file, m, "services.ingest.max_document_kb", "must be an integer from 1 to 65536");
  ing->max_doc = (size_t)max_kb << 10;
  rc = ing_store_open(&ing->st, qm_service_store(svc), err);
  if (!rc) rc = load_hash_key(ing, g, file, err);
  if (rc) return rc;
  char media_dir[PATH_MAX], keys_file[PATH_MAX] = "";
  if (snprintf(media_dir, sizeof media_dir, "%s/ingest/media", cfg->data_dir) >= (int)sizeof media_dir)
    return qm_error_set(err, QM_ECONFIG, "%s: data_dir is too long", file);
  const char *s;
  if (g && config_setting_lookup_string(g, "media_dir", &s) && *s) qm_config_resolve(cfg, s, media_dir);
  if (g && config_setting_lookup_string(g, "media_keys_file", &s) && *s) qm_config_resolve(cfg, s, keys_file);
  qm_media_opts_t mo = {.dir = media_dir, .keys_file = keys_file};
  rc = qm_media_open(&ing->media, &mo, err);
  if (rc) return rc;
  qm_metrics_t *mx = qm_service_metrics(svc);
  ing->c_new = qm_metrics_counter(mx, "qmesh_ingest_submissions_total", "Interaction documents submitted, by outcome.", "outcome=\"stored\"");
  ing->c_rev = qm_metrics_counter(mx, "qmesh_ingest_submissions_total", NULL, "outcome=\"revision\"");
  ing->c_same = qm_metrics_counter(mx, "qmesh_ingest_submissions_total", NULL, "outcome=\"unchanged\"");
  ing->c_invalid = qm_metrics_counter(mx, "qmesh_ingest_submissions_total", NULL, "outcome=\"invalid\"");
  ing->c_busy = qm_metrics_counter(mx, "qmesh_ingest_submissions_total", NULL, "outcome=\"busy\"");
  qm_http_t *http = qm_service_http(svc);
  if (http) qm_http_route(http, "GET", "/v1/interactions", h_interaction, ing);
  uv_timer_init(qm_service_loop(svc), &ing->bp_timer);
  ing->bp_timer.data = ing;
  uv_timer_start(&ing->bp_timer, bp_tick, 50, 50);
  ing->bp_started = 1;
  config_setting_t *chs = g ? config_setting_get_member(g, "channels") : NULL;
  if (chs && !config_setting_is_list(chs))
    return cfg_fail(err, file, chs, "services.ingest.channels", "must be a list ( {...}, ... )");
  for (int i = 0; chs && i < config_setting_length(chs); i++) {
    rc = open_channel(ing, config_setting_get_elem(chs, (unsigned)i), i, file, err);
    if (rc) return rc;
  }
  return 0;
}

/* Also runs after a failed init, so everything here copes with what init
 * did not get to. */
static void ingest_fini(qm_service_t *svc) {
  ingest_t *ing = qm_service_data(svc);
  if (!ing) return;
  for (size_t i = 0; i < ing->n_channels; i++) {
    channel_t *ch = &ing->channels[i];
    if (ch->started) ch->ops->stop(ch->state);
    ch->started = 0;
  }
  batch_commit(ing);
  for (size_t i = 0; i < ing->n_channels; i++) {
    channel_t *ch = &ing->channels[i];
    ch->ops->close(ch->state);
    qm_plugin_destroy(&ch->plugin);
    if (ch->has_spool) close_handle(ing, (uv_handle_t *)&ch->spool_timer);
    for (size_t t = 0; t < ch->n_timers; t++) close_handle(ing, (uv_handle_t *)&ch->timers[t].h);
  }
  qm_media_destroy(&ing->media);
  ing_store_close(&ing->st);
  pthread_mutex_destroy(&ing->mu);
  pthread_cond_destroy(&ing->cv);
  qm_service_set_data(svc, NULL);
  /* The struct is freed when its last handle has closed. */
  if (ing->bp_started) close_handle(ing, (uv_handle_t *)&ing->bp_timer);
  close_handle(ing, (uv_handle_t *)&ing->wake);
}

const qm_service_def_t qm_service_ingest = {
  .name = "ingest",
  .summary = "takes interactions from channel plugins, stores them once",
  .init = ingest_init,
  .fini = ingest_fini,
};
