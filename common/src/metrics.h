/*
 * metrics.h: a Prometheus registry, one per service.
 *
 * Series are looked up once (qm_metrics_counter(...) returns a stable
 * handle) and then updated with atomic adds, so hot paths pay no lookup.
 * Rendering follows the Prometheus text exposition format 0.0.4, with HELP
 * and TYPE lines and a `service="<name>"` label added to every series.
 * Safe to update from any thread; lookups and rendering take a mutex.
 */
#ifndef QM_METRICS_H
#define QM_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct qm_metrics qm_metrics_t;
typedef struct qm_counter qm_counter_t;
typedef struct qm_gauge qm_gauge_t;
typedef struct qm_histogram qm_histogram_t;

qm_metrics_t *qm_metrics_new(const char *service);
void qm_metrics_destroy(qm_metrics_t **m);

/* `labels` is the inside of the braces, e.g. `type="evaluation.scored"`, or
 * NULL. The same name+labels always returns the same handle. `help` is used
 * the first time a name is seen. Names follow Prometheus rules (qmesh_...). */
qm_counter_t *qm_metrics_counter(qm_metrics_t *m, const char *name, const char *help,
                                 const char *labels);
qm_gauge_t *qm_metrics_gauge(qm_metrics_t *m, const char *name, const char *help,
                             const char *labels);
/* `bounds` are the upper bounds of the buckets, increasing (+Inf is added). */
qm_histogram_t *qm_metrics_histogram(qm_metrics_t *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds);

void qm_counter_add(qm_counter_t *c, uint64_t v);
uint64_t qm_counter_get(const qm_counter_t *c);
void qm_gauge_set(qm_gauge_t *g, double v);
void qm_gauge_add(qm_gauge_t *g, double v);
double qm_gauge_get(const qm_gauge_t *g);
void qm_histogram_observe(qm_histogram_t *h, double v);

/* The exposition text; malloc'd, *len set; the caller frees it. */
char *qm_metrics_render(qm_metrics_t *m, size_t *len);

#endif
