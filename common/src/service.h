/*
 * service.h: what every qmesh service is made of, and the process that runs
 * one or several of them.
 *
 * A service is a libuv loop on its own thread holding its store (one LMDB
 * environment under DATA_DIR/<name>), its bus (inbox, outbox, links), its
 * HTTP listener (/healthz, /readyz, /metrics, /v1/dead and its own API) and
 * its metrics. The runtime owns the process-wide pieces: the configuration,
 * the ZeroMQ context (shared, so `inproc://` works between services of one
 * process), signals (SIGTERM/SIGINT drain, SIGHUP reloads routes) and the
 * watch on the route file.
 */
#ifndef QM_SERVICE_H
#define QM_SERVICE_H

#include "bus.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "store.h"

typedef struct qm_service qm_service_t;
typedef struct qm_runtime qm_runtime_t;

typedef struct qm_service_def {
  const char *name;
  const char *summary;   /* one line for --list-targets */
  /* Opens the service's own tables and registers its HTTP handlers; runs on
   * the service's thread before it takes messages. May be NULL. */
  int (*init)(qm_service_t *svc, qm_error_t *err);
  /* Applies one message (see qm_bus_handler_fn); NULL consumes and counts. */
  qm_bus_handler_fn handle;
  void (*fini)(qm_service_t *svc);
} qm_service_def_t;

typedef struct qm_runtime_opts {
  qm_config_t *cfg;
  int inproc;            /* services talk over inproc:// (one process, --target=all) */
} qm_runtime_opts_t;

int qm_runtime_new(qm_runtime_t **out, const qm_runtime_opts_t *opts, qm_error_t *err);
int qm_runtime_add(qm_runtime_t *rt, const qm_service_def_t *def, qm_error_t *err);
/* Starts every service and blocks until a drain completes. Returns 0 after a
 * clean drain, non-zero when a service failed to start. */
int qm_runtime_run(qm_runtime_t *rt, qm_error_t *err);
/* Asks for a drain from any thread (as SIGTERM does). */
void qm_runtime_stop(qm_runtime_t *rt);
void qm_runtime_destroy(qm_runtime_t **rt);

/* For service code. */
const char *qm_service_name(const qm_service_t *svc);
qm_bus_t *qm_service_bus(qm_service_t *svc);
qm_store_t *qm_service_store(qm_service_t *svc);
qm_http_t *qm_service_http(qm_service_t *svc);
qm_metrics_t *qm_service_metrics(qm_service_t *svc);
uv_loop_t *qm_service_loop(qm_service_t *svc);
const qm_config_t *qm_service_config(const qm_service_t *svc);
const qm_service_cfg_t *qm_service_cfg(const qm_service_t *svc);
void *qm_service_data(qm_service_t *svc);
void qm_service_set_data(qm_service_t *svc, void *data);

/* Opens a store with the configured map size and sync mode. */
int qm_service_open_store(const qm_config_t *cfg, const char *name, qm_store_t **out,
                          qm_error_t *err);

#endif
