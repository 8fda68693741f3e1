/*
 * http.h: each service's HTTP listener (libh2o, libuv build).
 *
 * A listener lives on one service's libuv loop and serves handlers that
 * answer synchronously. Handlers are matched by method (or NULL for any) and
 * path prefix, longest prefix first; unmatched paths get 404 and a method a
 * path does not take gets 405. Request bodies larger than max_body (default
 * 8 MiB) are refused with 413 before the handler runs.
 */
#ifndef QM_HTTP_H
#define QM_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "err.h"

typedef struct qm_http qm_http_t;

typedef struct qm_http_req {
  const char *method; size_t method_len;
  const char *path; size_t path_len;     /* without the query string */
  const char *query; size_t query_len;   /* after '?', may be empty */
  const char *body; size_t body_len;
  void *raw;                             /* h2o_req_t *, for headers */
} qm_http_req_t;

typedef struct qm_http_resp {
  int status;                 /* default 200 */
  const char *content_type;   /* default "text/plain; charset=utf-8" */
  char *body;                 /* malloc'd by the handler, freed by http.c */
  size_t body_len;
  int retry_after;            /* seconds; > 0 adds a Retry-After header */
} qm_http_resp_t;

typedef void (*qm_http_handler_fn)(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp);

/* Binds "HOST:PORT" (port 0 picks a free one) on `loop`. */
int qm_http_new(qm_http_t **out, uv_loop_t *loop, const char *listen, qm_error_t *err);
/* method NULL = any method. Register before or after start; not thread-safe:
 * call on the loop's thread. */
int qm_http_route(qm_http_t *h, const char *method, const char *prefix, qm_http_handler_fn fn,
                  void *ud);
int qm_http_port(const qm_http_t *h);
/* Stops listening and closes connections; the loop must run once more to
 * finish closing handles. Idempotent; nulls *h. */
void qm_http_destroy(qm_http_t **h);

/* Helpers for handlers. */
void qm_http_resp_text(qm_http_resp_t *r, int status, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* Takes ownership of body (malloc'd). */
void qm_http_resp_take(qm_http_resp_t *r, int status, const char *content_type, char *body,
                       size_t len);
/* A query parameter's value (URL-decoded into buf); returns 1 when present. */
int qm_http_query(const qm_http_req_t *req, const char *name, char *buf, size_t buflen);

/* Client used by `qmesh probe`: GET url (http://HOST:PORT/PATH), returns the
 * status code (> 0) or a negative error; body (up to bodylen-1, NUL
 * terminated) when body is non-NULL. Blocking, with a timeout. */
int qm_http_get(const char *url, int timeout_ms, char *body, size_t bodylen, qm_error_t *err);
/* The same for POST with a request body (used by `qmesh dead replay`). */
int qm_http_post(const char *url, int timeout_ms, const char *req_body, size_t req_len, char *body,
                 size_t bodylen, qm_error_t *err);

#endif
