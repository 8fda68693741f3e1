/*
 * service.c: runs services, each on its own thread and libuv loop, and the
 * process around them: signals, route reloads, drain (see service.h).
 *
 * The main thread only waits for signals and file changes and forwards them
 * to the service threads through uv_async handles; everything a service owns
 * is touched only on that service's thread.
 */
#include "service.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "dead.h"
#include "log.h"

struct qm_service {
  qm_runtime_t *rt;
  const qm_service_def_t *def;
  const qm_service_cfg_t *scfg;
  uv_loop_t loop;
  uv_async_t async;
  uv_timer_t drain_timer;
  uv_timer_t status_timer;
  atomic_int want_drain, want_finish, want_reload;
  atomic_uint_least64_t depth;  /* outbox depth, published for the drain */
  uv_thread_t thread;
  uv_sem_t started;
  int start_rc;
  qm_error_t start_err;
  qm_store_t *store;
  qm_bus_t *bus;
  qm_http_t *http;
  qm_metrics_t *metrics;
  qm_counter_t *c_reload, *c_reload_fail;
  qm_gauge_t *g_ready;
  int draining;
  int running;
  size_t idx;          /* position in the config's services */
  int init_called;      /* fini runs after a failed init too */
  int timers_init;      /* drain_timer and status_timer exist */
  void *data;
};

struct qm_runtime {
  qm_runtime_opts_t o;
  void *zctx;
  qm_service_t *svcs[QM_SERVICES_MAX];
  size_t n;
  /* Endpoints by service name, as this process reaches them. */
  char bind[QM_SERVICES_MAX][256];
  char connect[QM_SERVICES_MAX][256];
  const char *names[QM_SERVICES_MAX];
  uv_loop_t loop;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_fs_event_t watch;
  uv_timer_t debounce;
  uv_async_t stop_async;
  uv_timer_t drain_check;
  uint64_t drain_deadline;
  uint64_t drain_started;
  int stopping;
};

const char *qm_service_name(const qm_service_t *svc) { return svc->def->name; }
qm_bus_t *qm_service_bus(qm_service_t *svc) { return svc->bus; }
qm_store_t *qm_service_store(qm_service_t *svc) { return svc->store; }
qm_http_t *qm_service_http(qm_service_t *svc) { return svc->http; }
qm_metrics_t *qm_service_metrics(qm_service_t *svc) { return svc->metrics; }
uv_loop_t *qm_service_loop(qm_service_t *svc) { return &svc->loop; }
const qm_config_t *qm_service_config(const qm_service_t *svc) { return svc->rt->o.cfg; }
const qm_service_cfg_t *qm_service_cfg(const qm_service_t *svc) { return svc->scfg; }
void *qm_service_data(qm_service_t *svc) { return svc->data; }
void qm_service_set_data(qm_service_t *svc, void *data) { svc->data = data; }

int qm_service_open_store(const qm_config_t *cfg, const char *name, qm_store_t **out,
                          qm_error_t *err) {
  char dir[PATH_MAX + QM_NAME_MAX + 2];
  snprintf(dir, sizeof dir, "%s/%s", cfg->data_dir, name);
  qm_store_opts_t so = {.map_size = cfg->store.map_size, .sync = cfg->store.sync};
  return qm_store_open(out, dir, &so, err);
}

static const char *resolve(void *ud, const char *name) {
  qm_runtime_t *rt = ud;
  for (size_t i = 0; i < rt->o.cfg->n_services; i++)
    if (strcmp(rt->o.cfg->services[i].name, name) == 0) return rt->connect[i];
  return NULL;
}

/* ---- HTTP: health, readiness, metrics, dead letters ------------------- */

static void h_healthz(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)ud;
  (void)req;
  qm_http_resp_text(resp, 200, "ok\n");
}

static void h_readyz(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)req;
  qm_service_t *svc = ud;
  qm_bus_stats_t st;
  qm_bus_stats(svc->bus, &st);
  const char *why = svc->draining               ? "draining"
                    : st.store_full             ? "store full"
                    : st.intake_paused          ? "outbox over its high-water mark"
                    : st.peers_unreachable > 0  ? "a destination is unreachable"
                                                : NULL;
  if (svc->g_ready) qm_gauge_set(svc->g_ready, why ? 0 : 1);
  if (why) {
    qm_http_resp_text(resp, 503, "not ready: %s\n", why);
    resp->retry_after = 1;
  } else {
    qm_http_resp_text(resp, 200, "ready\n");
  }
}

static void h_metrics(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)req;
  qm_service_t *svc = ud;
  qm_bus_stats_t st;
  qm_bus_stats(svc->bus, &st);
  size_t used = 0, map = 0;
  qm_store_usage(svc->store, &used, &map);
  qm_gauge_set(qm_metrics_gauge(svc->metrics, "qmesh_store_used_bytes",
                                "Bytes of the store's map in use.", NULL),
               (double)used);
  qm_gauge_set(qm_metrics_gauge(svc->metrics, "qmesh_store_map_bytes",
                                "The store's configured map size.", NULL),
               (double)map);
  qm_gauge_set(qm_metrics_gauge(svc->metrics, "qmesh_intake_paused",
                                "1 while intake is paused (backpressure or store full).", NULL),
               st.intake_paused);
  size_t len = 0;
  char *text = qm_metrics_render(svc->metrics, &len);
  qm_http_resp_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static void h_dead(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  qm_service_t *svc = ud;
  char idbuf[64], limbuf[16];
  int is_post = req->method_len == 4 && memcmp(req->method, "POST", 4) == 0;
  if (is_post) {
    /* POST /v1/dead/replay?id=ID (or id=all) */
    if (!qm_http_query(req, "id", idbuf, sizeof idbuf)) {
      qm_http_resp_text(resp, 400, "missing id parameter\n");
      return;
    }
    json_t *ids = qm_dead_ids(svc->store, qm_bus_dead_dbi(svc->bus),
                              strcmp(idbuf, "all") == 0 ? NULL : idbuf);
    json_t *results = json_array();
    size_t i;
    json_t *v;
    int failed = 0;
    json_array_foreach(ids, i, v) {
      qm_id_t id;
      qm_error_t err;
      qm_error_clear(&err);
      int rc = qm_id_parse(&id, json_string_value(v));
      if (rc == 0) rc = qm_bus_dead_replay(svc->bus, &id, &err);
      if (rc) failed++;
      json_array_append_new(results, json_pack("{s:s,s:s,s:s}", "id", json_string_value(v),
                                               "result", rc ? qm_err_name(rc) : "replayed",
                                               "detail", rc ? err.msg : ""));
    }
    json_decref(ids);
    char *body = json_dumps(results, JSON_INDENT(2));
    json_decref(results);
    qm_http_resp_take(resp, failed ? 409 : 200, "application/json", body, strlen(body));
    return;
  }
  long limit = 100;
  if (qm_http_query(req, "limit", limbuf, sizeof limbuf)) limit = strtol(limbuf, NULL, 10);
  const char *only = qm_http_query(req, "id", idbuf, sizeof idbuf) ? idbuf : NULL;
  json_t *list = qm_dead_list(svc->store, qm_bus_dead_dbi(svc->bus), only, (size_t)limit,
                              only != NULL);
  char *body = json_dumps(list, JSON_INDENT(2));
  json_decref(list);
  qm_http_resp_take(resp, 200, "application/json", body, strlen(body));
}

/* ---- one service's thread -------------------------------------------- */

static void reload_routes(qm_service_t *svc) {
  qm_error_t err;
  qm_routes_t *routes = NULL;
  qm_runtime_t *rt = svc->rt;
  int rc = qm_routes_load_file(rt->o.cfg->routes_file, rt->names, rt->o.cfg->n_services, &routes,
                               &err);
  if (rc) {
    qm_counter_add(svc->c_reload_fail, 1);
    qm_log(QM_LOG_ERROR, "route.reload_refused", "file", rt->o.cfg->routes_file, "error", err.msg,
           "kept", "previous table", NULL);
    return;
  }
  char n[24];
  snprintf(n, sizeof n, "%zu", qm_routes_count(routes));
  qm_bus_set_routes(svc->bus, routes);
  qm_counter_add(svc->c_reload, 1);
  qm_log(QM_LOG_INFO, "route.reloaded", "file", rt->o.cfg->routes_file, "routes", n, NULL);
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Releases what the service holds, each owner closing its own handles (the
 * HTTP listener closes in stages), after a drain or a failed start alike;
 * the loop then runs until they are closed. */
static void release(qm_service_t *svc) {
  if (svc->init_called && svc->def->fini) svc->def->fini(svc);
  qm_http_destroy(&svc->http);
  qm_bus_destroy(&svc->bus);
  if (svc->timers_init) {
    uv_close((uv_handle_t *)&svc->drain_timer, NULL);
    uv_close((uv_handle_t *)&svc->status_timer, NULL);
    svc->timers_init = 0;
  }
  if (!uv_is_closing((uv_handle_t *)&svc->async)) uv_close((uv_handle_t *)&svc->async, NULL);
}

static void finish_drain(uv_timer_t *t) { release(t->data); }

static void publish_status(uv_timer_t *t) {
  qm_service_t *svc = t->data;
  qm_bus_stats_t st;
  qm_bus_stats(svc->bus, &st);
  atomic_store(&svc->depth, st.outbox_depth);
}

static void async_cb(uv_async_t *a) {
  qm_service_t *svc = a->data;
  if (atomic_exchange(&svc->want_reload, 0) && !svc->draining) reload_routes(svc);
  if (atomic_exchange(&svc->want_drain, 0) && !svc->draining) {
    /* Draining: /readyz turns 503 so no new work is routed here, while the
     * bus keeps exchanging so that what is in flight settles. */
    svc->draining = 1;
    qm_log(QM_LOG_INFO, "service.draining", NULL);
  }
  if (atomic_exchange(&svc->want_finish, 0) && svc->bus && !uv_is_active((uv_handle_t *)&svc->drain_timer)) {
    /* No new batch is taken; the one in hand finished before this callback
     * ran and its acknowledgements are queued. A short grace lets them and
     * the last outbox sends reach the wire (sockets also linger). */
    svc->draining = 1;
    qm_bus_hold_intake(svc->bus, 1);
    uv_timer_start(&svc->drain_timer, finish_drain, 100, 0);
  }
}

static int service_start(qm_service_t *svc, qm_error_t *err) {
  qm_runtime_t *rt = svc->rt;
  const qm_config_t *cfg = rt->o.cfg;
  const char *name = svc->def->name;
  size_t idx = 0;
  while (idx < cfg->n_services && strcmp(cfg->services[idx].name, name) != 0) idx++;
  svc->idx = idx;
  svc->metrics = qm_metrics_new(name);
  if (!svc->metrics) return qm_error_set(err, QM_ENOMEM, "out of memory");
  svc->c_reload = qm_metrics_counter(svc->metrics, "qmesh_route_reloads_total",
                                     "Route tables reloaded and applied.", NULL);
  svc->c_reload_fail = qm_metrics_counter(svc->metrics, "qmesh_route_reload_failures_total",
                                          "Route reloads refused (the old table kept running).",
                                          NULL);
  svc->g_ready = qm_metrics_gauge(svc->metrics, "qmesh_ready", "1 when /readyz answers 200.", NULL);
  int rc = qm_service_open_store(cfg, name, &svc->store, err);
  if (rc) return rc;
  qm_routes_t *routes = NULL;
  rc = qm_routes_load_file(cfg->routes_file, rt->names, cfg->n_services, &routes, err);
  if (rc) return rc;
  qm_bus_opts_t bo = {
    .name = name,
    .bind = rt->bind[idx],
    /* In one process the services talk over inproc://; the configured
     * endpoint stays open for senders outside the process (tools, another
     * process's services). */
    .bind_also = rt->o.inproc ? svc->scfg->bind : NULL,
    .zmq_ctx = rt->zctx,
    .loop = &svc->loop,
    .store = svc->store,
    .cfg = cfg->bus,
    .resolve = resolve,
    .resolve_ud = rt,
    .routes = routes,
    .handler = svc->def->handle,
    .handler_ud = svc,
    .metrics = svc->metrics,
  };
  rc = qm_bus_new(&svc->bus, &bo, err);
  if (rc) return rc;
  uv_timer_init(&svc->loop, &svc->drain_timer);
  svc->drain_timer.data = svc;
  uv_timer_init(&svc->loop, &svc->status_timer);
  svc->status_timer.data = svc;
  atomic_store(&svc->depth, UINT64_MAX);
  uv_timer_start(&svc->status_timer, publish_status, 0, 20);
  svc->timers_init = 1;
  if (svc->scfg->http[0]) {
    rc = qm_http_new(&svc->http, &svc->loop, svc->scfg->http, err);
    if (rc) return rc;
    qm_http_route(svc->http, "GET", "/healthz", h_healthz, svc);
    qm_http_route(svc->http, "GET", "/readyz", h_readyz, svc);
    qm_http_route(svc->http, "GET", "/metrics", h_metrics, svc);
    qm_http_route(svc->http, "GET", "/v1/dead", h_dead, svc);
    qm_http_route(svc->http, "POST", "/v1/dead/replay", h_dead, svc);
  }
  if (svc->def->init) {
    svc->init_called = 1;
    rc = svc->def->init(svc, err);
    if (rc) return rc;
  }
  return 0;
}

static void service_thread(void *arg) {
  qm_service_t *svc = arg;
  qm_log_set_service(svc->def->name);
  qm_error_clear(&svc->start_err);
  svc->start_rc = service_start(svc, &svc->start_err);
  if (svc->start_rc == 0) {
    char port[16];
    snprintf(port, sizeof port, "%d", svc->http ? qm_http_port(svc->http) : 0);
    qm_log(QM_LOG_INFO, "service.started", "inbox", svc->rt->bind[svc->idx], "http", port, NULL);
    svc->running = 1;
  }
  uv_sem_post(&svc->started);
  if (svc->start_rc == 0) uv_run(&svc->loop, UV_RUN_DEFAULT);
  else release(svc);
  uv_run(&svc->loop, UV_RUN_DEFAULT);
  /* Anything a service left open is closed here, after the owners above
   * have finished their own closing. */
  uv_walk(&svc->loop, close_walk_cb, NULL);
  uv_run(&svc->loop, UV_RUN_DEFAULT);
  qm_store_destroy(&svc->store);
  qm_metrics_destroy(&svc->metrics);
  if (svc->running) qm_log(QM_LOG_INFO, "service.stopped", NULL);
}

/* ---- the runtime --------------------------------------------------------- */

int qm_runtime_new(qm_runtime_t **out, const qm_runtime_opts_t *opts, qm_error_t *err) {
  qm_runtime_t *rt = calloc(1, sizeof *rt);
  if (!rt) return qm_error_set(err, QM_ENOMEM, "out of memory");
  rt->o = *opts;
  rt->zctx = zmq_ctx_new();
  const qm_config_t *cfg = opts->cfg;
  for (size_t i = 0; i < cfg->n_services; i++) {
    rt->names[i] = cfg->services[i].name;
    if (opts->inproc) {
      snprintf(rt->bind[i], sizeof rt->bind[i], "inproc://qmesh.%s", cfg->services[i].name);
      snprintf(rt->connect[i], sizeof rt->connect[i], "%s", rt->bind[i]);
    } else {
      snprintf(rt->bind[i], sizeof rt->bind[i], "%s", cfg->services[i].bind);
      snprintf(rt->connect[i], sizeof rt->connect[i], "%s", cfg->services[i].connect);
    }
  }
  *out = rt;
  return 0;
}

int qm_runtime_add(qm_runtime_t *rt, const qm_service_def_t *def, qm_error_t *err) {
  const qm_service_cfg_t *scfg = qm_config_service(rt->o.cfg, def->name);
  if (!scfg)
    return qm_error_set(err, QM_ECONFIG, "%s: service \"%s\" is not configured under services",
                        rt->o.cfg->path, def->name);
  if (rt->n == QM_SERVICES_MAX) return qm_error_set(err, QM_EINVAL, "too many services");
  qm_service_t *svc = calloc(1, sizeof *svc);
  if (!svc) return qm_error_set(err, QM_ENOMEM, "out of memory");
  svc->rt = rt;
  svc->def = def;
  svc->scfg = scfg;
  rt->svcs[rt->n++] = svc;
  return 0;
}

enum { REQ_RELOAD, REQ_DRAIN, REQ_FINISH };

static void request_all(qm_runtime_t *rt, int what) {
  for (size_t i = 0; i < rt->n; i++) {
    qm_service_t *svc = rt->svcs[i];
    if (!svc->running) continue;
    atomic_store(what == REQ_DRAIN    ? &svc->want_drain
                 : what == REQ_FINISH ? &svc->want_finish
                                      : &svc->want_reload,
                 1);
    uv_async_send(&svc->async);
  }
}

/* The drain ends when every outbox of the process is empty (what was in
 * flight between its services has settled) or at the deadline; either way
 * nothing is lost, since outboxes are durable. */
static void on_drain_check(uv_timer_t *t) {
  qm_runtime_t *rt = t->data;
  uint64_t pending = 0;
  for (size_t i = 0; i < rt->n; i++)
    if (rt->svcs[i]->running) pending += atomic_load(&rt->svcs[i]->depth);
  uint64_t now = uv_now(&rt->loop);
  if (pending && now < rt->drain_deadline) return;
  char waited[24], left[24];
  snprintf(waited, sizeof waited, "%llu", (unsigned long long)(now - rt->drain_started));
  snprintf(left, sizeof left, "%llu", (unsigned long long)pending);
  qm_log(pending ? QM_LOG_WARN : QM_LOG_INFO, "runtime.drained", "waited_ms", waited,
         "outbox_left", left, NULL);
  uv_timer_stop(t);
  request_all(rt, REQ_FINISH);
  uv_stop(&rt->loop);
}

static void begin_stop(qm_runtime_t *rt) {
  if (rt->stopping) {
    qm_log(QM_LOG_WARN, "runtime.forced_exit", "reason", "second signal", NULL);
    _exit(1);
  }
  rt->stopping = 1;
  qm_log(QM_LOG_INFO, "runtime.draining", NULL);
  request_all(rt, REQ_DRAIN);
  uv_signal_stop(&rt->sig_hup);
  if (rt->watch.loop) uv_fs_event_stop(&rt->watch);
  uv_timer_stop(&rt->debounce);
  rt->drain_started = uv_now(&rt->loop);
  rt->drain_deadline = rt->drain_started + rt->o.cfg->bus.drain_timeout_ms;
  uv_timer_start(&rt->drain_check, on_drain_check, 0, 20);
}

static void on_signal(uv_signal_t *h, int signum) {
  qm_runtime_t *rt = h->data;
  if (signum == SIGHUP) {
    qm_log(QM_LOG_INFO, "route.reload_requested", "by", "SIGHUP", NULL);
    request_all(rt, REQ_RELOAD);
    return;
  }
  begin_stop(rt);
}

static void on_stop_async(uv_async_t *a) { begin_stop(a->data); }

static void on_debounce(uv_timer_t *t) {
  qm_runtime_t *rt = t->data;
  qm_log(QM_LOG_INFO, "route.reload_requested", "by", "file change", NULL);
  request_all(rt, REQ_RELOAD);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  qm_runtime_t *rt = h->data;
  if (status < 0) return;
  /* The directory is watched (editors and `mv` replace the file), so only
   * events for the route file's own name count. */
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", rt->o.cfg->routes_file);
  if (filename && strcmp(filename, basename(copy)) != 0) return;
  uv_timer_start(&rt->debounce, on_debounce, 200, 0);
}

int qm_runtime_run(qm_runtime_t *rt, qm_error_t *err) {
  uv_loop_init(&rt->loop);
  for (size_t i = 0; i < rt->n; i++) {
    qm_service_t *svc = rt->svcs[i];
    uv_loop_init(&svc->loop);
    uv_async_init(&svc->loop, &svc->async, async_cb);
    svc->async.data = svc;
    uv_sem_init(&svc->started, 0);
    uv_thread_create(&svc->thread, service_thread, svc);
  }
  int failed = 0;
  for (size_t i = 0; i < rt->n; i++) {
    qm_service_t *svc = rt->svcs[i];
    uv_sem_wait(&svc->started);
    if (svc->start_rc && !failed) {
      failed = svc->start_rc;
      qm_error_set(err, svc->start_rc, "%s: %s", svc->def->name, svc->start_err.msg);
    }
  }
  if (!failed) {
    uv_signal_init(&rt->loop, &rt->sig_term);
    uv_signal_init(&rt->loop, &rt->sig_int);
    uv_signal_init(&rt->loop, &rt->sig_hup);
    rt->sig_term.data = rt->sig_int.data = rt->sig_hup.data = rt;
    uv_signal_start(&rt->sig_term, on_signal, SIGTERM);
    uv_signal_start(&rt->sig_int, on_signal, SIGINT);
    uv_signal_start(&rt->sig_hup, on_signal, SIGHUP);
    uv_async_init(&rt->loop, &rt->stop_async, on_stop_async);
    rt->stop_async.data = rt;
    uv_timer_init(&rt->loop, &rt->debounce);
    rt->debounce.data = rt;
    uv_timer_init(&rt->loop, &rt->drain_check);
    rt->drain_check.data = rt;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", rt->o.cfg->routes_file);
    uv_fs_event_init(&rt->loop, &rt->watch);
    rt->watch.data = rt;
    if (uv_fs_event_start(&rt->watch, on_fs_event, dirname(dir), 0) != 0)
      qm_log(QM_LOG_WARN, "route.watch_unavailable", "dir", dir, "hint", "reload with SIGHUP",
             NULL);
    char n[16];
    snprintf(n, sizeof n, "%zu", rt->n);
    qm_log(QM_LOG_INFO, "runtime.ready", "services", n, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
  } else {
    request_all(rt, REQ_FINISH);
  }
  for (size_t i = 0; i < rt->n; i++) uv_thread_join(&rt->svcs[i]->thread);
  /* Second signals during the join end the process at once (begin_stop). */
  uv_signal_stop(&rt->sig_hup);
  uv_walk(&rt->loop, close_walk_cb, NULL);
  uv_run(&rt->loop, UV_RUN_DEFAULT);
  uv_loop_close(&rt->loop);
  if (!failed) qm_log(QM_LOG_INFO, "runtime.stopped", NULL);
  return failed;
}

void qm_runtime_stop(qm_runtime_t *rt) { uv_async_send(&rt->stop_async); }

void qm_runtime_destroy(qm_runtime_t **prt) {
  qm_runtime_t *rt = prt ? *prt : NULL;
  if (!rt) return;
  for (size_t i = 0; i < rt->n; i++) {
    qm_service_t *svc = rt->svcs[i];
    uv_loop_close(&svc->loop);
    uv_sem_destroy(&svc->started);
    free(svc);
  }
  zmq_ctx_term(rt->zctx);
  free(rt);
  *prt = NULL;
}
