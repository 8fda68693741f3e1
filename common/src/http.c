/*
 * http.c: each service's HTTP listener (libh2o 2.2, libuv build) and the
 * small blocking client behind `qmesh probe`.
 *
 * A listener is one h2o configuration with one host and one handler at "/",
 * one h2o context on the service's libuv loop, and one uv_tcp_t that accepts
 * connections and hands them to h2o. The handler at "/" dispatches to the
 * routes registered with qm_http_route (see http.h for the matching rules).
 * Handlers answer synchronously: they fill a qm_http_resp_t and this file
 * sends it, so no request waits on its handler across loop turns.
 *
 * Only HTTP/1.x is spoken (upgrades to h2c are off): every service endpoint
 * is scraped or probed over plain HTTP/1, and HTTP/2's graceful shutdown
 * would add timers that outlive qm_http_destroy.
 *
 * Teardown is asynchronous because libuv handles close asynchronously:
 * qm_http_destroy closes the listener and shuts every open connection's
 * socket down with shutdown(2), which makes the read or write h2o has pending
 * on it fail on the next loop turn, so h2o closes the connection through its
 * own path. h2o 2.2's HTTP/1 code always has a read or a write pending on a
 * connection between loop turns, so every connection closes within a turn or
 * two; should one not, h2o's request timeout (10 s) still closes it, and
 * teardown waits for that. When the last connection handle has closed, the
 * h2o context is disposed and the memory freed; see finish() for the order
 * this needs.
 */
/* vasprintf, strncasecmp. */
#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <h2o.h>
#include <h2o/http1.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Request bodies above this are refused with 413 before any handler runs. */
#define QM_HTTP_MAX_BODY ((size_t)8 * 1024 * 1024)
#define QM_HTTP_BACKLOG 128
#define QM_HTTP_DEFAULT_TIMEOUT_MS 2000

typedef struct route {
  char *method; /* NULL = any */
  char *prefix;
  size_t prefix_len;
  qm_http_handler_fn fn;
  void *ud;
} route_t;

/* One accepted connection. The uv_tcp_t comes first so that h2o's close
 * callback, which only gets the handle, can find the whole record; h2o owns
 * the handle's data pointer. */
typedef struct conn {
  uv_tcp_t tcp;
  struct qm_http *http;
  struct conn *prev, *next;
} conn_t;

/* The h2o handler registered at "/": h2o allocates it inside the pathconf,
 * sized for this struct. */
typedef struct dispatcher {
  h2o_handler_t super;
  struct qm_http *http;
} dispatcher_t;

struct qm_http {
  uv_loop_t *loop;
  uv_tcp_t listener;
  /* Closed just before h2o_context_dispose; its close callback frees this
   * struct (see finish()). An idle handle that is never started. */
  uv_idle_t sentinel;
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept_ctx;
  int ctx_ready;
  int listener_closed;
  int closing;
  int port;
  size_t max_body;
  route_t *routes;
  size_t nroutes, cap_routes;
  conn_t *conns;
  size_t nconns;
  char listen[128];
};

/* ---- responses ---------------------------------------------------------- */

static const char *reason_of(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 413: return "Payload Too Large";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  }
  if (status >= 200 && status < 300) return "OK";
  if (status >= 400 && status < 500) return "Client Error";
  if (status >= 500 && status < 600) return "Server Error";
  return "Unknown";
}

void qm_http_resp_take(qm_http_resp_t *r, int status, const char *content_type, char *body,
                       size_t len) {
  if (!r) {
    free(body);
    return;
  }
  free(r->body);
  r->status = status;
  r->content_type = content_type;
  r->body = body;
  r->body_len = body ? len : 0;
}

void qm_http_resp_text(qm_http_resp_t *r, int status, const char *fmt, ...) {
  va_list ap;
  char *s = NULL;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0) {
    /* Out of memory: keep the status so the client still learns the
     * outcome, with an empty body. */
    s = NULL;
    n = 0;
  }
  qm_http_resp_take(r, status, "text/plain; charset=utf-8", s, (size_t)n);
}

static void free_owned_body(void *slot) { free(*(char **)slot); }

/* Sends resp on req and takes resp->body: h2o keeps a pointer to it until the
 * bytes are written, so it is freed with the request's memory pool. */
static void send_resp(h2o_req_t *req, qm_http_resp_t *resp) {
  static h2o_generator_t generator = {NULL, NULL};
  int status = resp->status > 0 ? resp->status : 200;
  if (status < 100 || status > 999) status = 500;
  const char *ct = resp->content_type ? resp->content_type : "text/plain; charset=utf-8";
  char *body = resp->body;
  size_t len = body ? resp->body_len : 0;

  resp->body = NULL;
  if (body) {
    char **slot = h2o_mem_alloc_shared(&req->pool, sizeof *slot, free_owned_body);
    *slot = body;
  }

  req->res.status = status;
  req->res.reason = reason_of(status);
  req->res.content_length = len;
  /* h2o keeps header pointers until the answer is written, a loop turn or
   * more from now, while resp->content_type need only outlive the handler's
   * call (it is usually a literal). */
  h2o_iovec_t ctv = h2o_strdup(&req->pool, ct, SIZE_MAX);
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctv.base, ctv.len);
  if (resp->retry_after > 0) {
    char *v = h2o_mem_alloc_pool(&req->pool, 24);
    int n = snprintf(v, 24, "%d", resp->retry_after);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, v, (size_t)n);
  }

  h2o_start_response(req, &generator);
  /* A HEAD answer carries the Content-Length of the GET answer, no body. */
  if (len == 0 || h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
  } else {
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
  }
}

static void send_simple(h2o_req_t *req, int status, const char *text) {
  qm_http_resp_t resp = {0};
  qm_http_resp_text(&resp, status, "%s\n", text);
  send_resp(req, &resp);
}

/* ---- routing ------------------------------------------------------------ */

static int method_is(const char *m, size_t mlen, const char *want) {
  return strlen(want) == mlen && memcmp(m, want, mlen) == 0;
}

/* HEAD is served by GET routes unless a route names HEAD itself. */
static int method_ok(const route_t *r, const char *m, size_t mlen) {
  if (!r->method || method_is(m, mlen, r->method)) return 1;
  return method_is(m, mlen, "HEAD") && strcmp(r->method, "GET") == 0;
}

/* A prefix matches at a segment boundary: "/metrics" takes "/metrics" and
 * "/metrics/x" but not "/metricsx"; a prefix ending in '/' takes everything
 * under it. */
static int prefix_ok(const route_t *r, const char *path, size_t len) {
  if (len < r->prefix_len || memcmp(path, r->prefix, r->prefix_len) != 0) return 0;
  if (len == r->prefix_len || r->prefix[r->prefix_len - 1] == '/') return 1;
  return path[r->prefix_len] == '/';
}

/* Lists the methods the path takes, for the Allow header of a 405. */
static h2o_iovec_t allowed_methods(qm_http_t *h, h2o_req_t *req, const char *path, size_t len) {
  size_t cap = 1, n = 0;
  for (size_t i = 0; i < h->nroutes; i++)
    if (h->routes[i].method) cap += strlen(h->routes[i].method) + 2;
  char *out = h2o_mem_alloc_pool(&req->pool, cap);
  out[0] = '\0';
  for (size_t i = 0; i < h->nroutes; i++) {
    const route_t *r = &h->routes[i];
    if (!r->method || !prefix_ok(r, path, len)) continue;
    size_t ml = strlen(r->method);
    int seen = 0;
    for (const char *p = out; (p = strstr(p, r->method)) != NULL; p += ml)
      if ((p == out || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) seen = 1;
    if (seen) continue;
    if (n) {
      memcpy(out + n, ", ", 2);
      n += 2;
    }
    memcpy(out + n, r->method, ml);
    n += ml;
    out[n] = '\0';
  }
  return h2o_iovec_init(out, n);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  qm_http_t *h = ((dispatcher_t *)self)->http;
  const char *path = req->path_normalized.base;
  size_t path_len = req->path_normalized.len;

  /* h2o refuses a declared Content-Length above the limit itself (see
   * max_request_entity_size); this catches anything that slipped past. */
  if (req->entity.base && req->entity.len > h->max_body) {
    char msg[96];
    snprintf(msg, sizeof msg, "request body too large (limit %zu bytes)", h->max_body);
    req->http1_is_persistent = 0;
    send_simple(req, 413, msg);
    return 0;
  }

  const route_t *best = NULL;
  int other_method = 0;
  for (size_t i = 0; i < h->nroutes; i++) {
    const route_t *r = &h->routes[i];
    if (!prefix_ok(r, path, path_len)) continue;
    if (!method_ok(r, req->method.base, req->method.len)) {
      other_method = 1;
      continue;
    }
    /* Longest prefix first; at equal length a route naming the method wins
     * over one taking any method, and otherwise the first registered. */
    if (!best || r->prefix_len > best->prefix_len ||
        (r->prefix_len == best->prefix_len && !best->method && r->method))
      best = r;
  }
  if (!best) {
    if (other_method) {
      h2o_iovec_t allow = allowed_methods(h, req, path, path_len);
      h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow.base, allow.len);
      send_simple(req, 405, "method not allowed");
    } else {
      send_simple(req, 404, "not found");
    }
    return 0;
  }

  qm_http_req_t qreq = {
    .method = req->method.base,
    .method_len = req->method.len,
    .path = path,
    .path_len = path_len,
    .query = "",
    .query_len = 0,
    .body = req->entity.base ? req->entity.base : "",
    .body_len = req->entity.base ? req->entity.len : 0,
    .raw = req,
  };
  if (req->query_at != SIZE_MAX && req->query_at < req->path.len) {
    qreq.query = req->path.base + req->query_at + 1;
    qreq.query_len = req->path.len - req->query_at - 1;
  }

  /* Copied out: the handler may register routes, which moves the table. */
  qm_http_handler_fn fn = best->fn;
  void *ud = best->ud;
  qm_http_resp_t resp = {.status = 200};
  fn(ud, &qreq, &resp);
  send_resp(req, &resp);
  return 0;
}

int qm_http_route(qm_http_t *h, const char *method, const char *prefix, qm_http_handler_fn fn,
                  void *ud) {
  if (!h || !prefix || prefix[0] != '/' || !fn) return QM_EINVAL;
  if (h->nroutes == h->cap_routes) {
    size_t cap = h->cap_routes ? h->cap_routes * 2 : 8;
    route_t *nr = realloc(h->routes, cap * sizeof *nr);
    if (!nr) return QM_ENOMEM;
    h->routes = nr;
    h->cap_routes = cap;
  }
  route_t r = {.fn = fn, .ud = ud, .prefix = strdup(prefix), .prefix_len = strlen(prefix)};
  if (method) r.method = strdup(method);
  if (!r.prefix || (method && !r.method)) {
    free(r.prefix);
    free(r.method);
    return QM_ENOMEM;
  }
  h->routes[h->nroutes++] = r;
  return QM_OK;
}

/* ---- connections and teardown ------------------------------------------- */

static void on_sentinel_closed(uv_handle_t *handle) {
  qm_http_t *h = (qm_http_t *)((char *)handle - offsetof(qm_http_t, sentinel));
  h2o_config_dispose(&h->config);
  for (size_t i = 0; i < h->nroutes; i++) {
    free(h->routes[i].method);
    free(h->routes[i].prefix);
  }
  free(h->routes);
  free(h);
}

/*
 * Runs once the listener and every connection handle have closed, from a
 * close callback. h2o_context_dispose (2.2) closes the context's timers with
 * uv_close(…, NULL), which gives no notice when they are done, and then runs
 * the loop once with UV_RUN_NOWAIT to finish those closes. The timers live
 * inside *h, so *h may only be freed after them. libuv finishes closing
 * handles in the reverse order of uv_close calls, so the sentinel is closed
 * first and its callback, which frees *h, comes after the timers whether the
 * nested run finishes them or a later turn of the caller's loop does.
 *
 * The nested run is safe here because a close callback runs outside libuv's
 * poll phase. It would also clear a uv_stop() the caller made earlier in
 * this loop turn, so that stop is repeated afterwards. Nothing may touch *h
 * after h2o_context_dispose returns.
 */
static void finish(qm_http_t *h) {
  uv_loop_t *loop = h->loop;
  int stopping = loop->stop_flag != 0;
  uv_close((uv_handle_t *)&h->sentinel, on_sentinel_closed);
  if (h->ctx_ready)
    h2o_context_dispose(&h->ctx);
  if (stopping) uv_stop(loop);
}

static void maybe_finish(qm_http_t *h) {
  if (h->closing && h->listener_closed && h->nconns == 0) finish(h);
}

static void on_conn_closed(uv_handle_t *handle) {
  conn_t *c = (conn_t *)handle;
  qm_http_t *h = c->http;
  if (c->prev) c->prev->next = c->next;
  else h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  h->nconns--;
  free(c);
  maybe_finish(h);
}

static void on_listener_closed(uv_handle_t *handle) {
  qm_http_t *h = (qm_http_t *)((char *)handle - offsetof(qm_http_t, listener));
  h->listener_closed = 1;
  maybe_finish(h);
}

static void on_connection(uv_stream_t *server, int status) {
  qm_http_t *h = (qm_http_t *)((char *)server - offsetof(qm_http_t, listener));
  if (status < 0) {
    /* EMFILE and friends: libuv keeps listening; the line makes running
     * out of descriptors visible. */
    qm_log(QM_LOG_WARN, "http.accept_failed", "listen", h->listen, "error", uv_strerror(status),
           NULL);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    qm_log(QM_LOG_ERROR, "http.accept_failed", "listen", h->listen, "error", "out of memory", NULL);
    return;
  }
  c->http = h;
  uv_tcp_init(h->loop, &c->tcp);
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  h->nconns++;
  int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
  if (rc != 0) {
    qm_log(QM_LOG_WARN, "http.accept_failed", "listen", h->listen, "error", uv_strerror(rc), NULL);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
  h2o_accept(&h->accept_ctx, sock);
}

void qm_http_destroy(qm_http_t **hp) {
  if (!hp || !*hp) return;
  qm_http_t *h = *hp;
  *hp = NULL;
  if (h->closing) return;
  h->closing = 1;
  /* Keep-alive is refused from here on, for requests still being read. */
  h->ctx.shutdown_requested = 1;
  uv_close((uv_handle_t *)&h->listener, on_listener_closed);
  /* An idle keep-alive connection would otherwise stay open until h2o's
   * request timeout (10 s). shutdown(2) makes its pending read see EOF, or
   * its pending write fail, on the next loop turn, and h2o then closes it
   * through its own path; on_conn_closed counts it down. Response bytes
   * not yet handed to the kernel at this moment are lost. */
  for (conn_t *c = h->conns; c; c = c->next) {
    uv_os_fd_t fd;
    if (uv_is_closing((uv_handle_t *)&c->tcp)) continue;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
  }
}

int qm_http_port(const qm_http_t *h) { return h ? h->port : QM_EINVAL; }

/* ---- listening ---------------------------------------------------------- */

static int parse_port(const char *s, size_t n, int *port) {
  if (n == 0 || n > 5) return -1;
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v > 65535) return -1;
  *port = v;
  return 0;
}

/* "HOST:PORT" with HOST an IPv4 address, "localhost", "0.0.0.0" (or empty
 * or "*" for all IPv4 interfaces), or a bracketed IPv6 address. Names other
 * than localhost are not resolved: a listener binds an interface, and a name
 * that resolves differently tomorrow is not one. */
static int parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen,
                        qm_error_t *err) {
  static const char valid[] = "valid: HOST:PORT with HOST an IPv4 address, [IPv6 address], "
                              "localhost or 0.0.0.0";
  char host[64];
  const char *colon;
  int port;
  memset(ss, 0, sizeof *ss);
  if (!addr || !*addr)
    return qm_error_set(err, QM_EINVAL, "http listen \"\": empty address (%s)", valid);
  if (addr[0] == '[') {
    const char *rb = strchr(addr, ']');
    if (!rb || rb[1] != ':')
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": expected [IPv6]:PORT (%s)", addr,
                          valid);
    size_t hl = (size_t)(rb - addr - 1);
    if (hl >= sizeof host)
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": host too long (%s)", addr, valid);
    memcpy(host, addr + 1, hl);
    host[hl] = '\0';
    colon = rb + 1;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": \"%s\" is not an IPv6 address (%s)",
                          addr, host, valid);
    a6->sin6_family = AF_INET6;
    *sslen = sizeof *a6;
  } else {
    colon = strrchr(addr, ':');
    if (!colon)
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": missing \":PORT\" (%s)", addr,
                          valid);
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": host too long (%s)", addr, valid);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    *sslen = sizeof *a4;
    if (hl == 0 || strcmp(host, "*") == 0) {
      a4->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
      a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
      return qm_error_set(err, QM_EINVAL, "http listen \"%s\": \"%s\" is not an IPv4 address (%s)",
                          addr, host, valid);
    }
  }
  if (parse_port(colon + 1, strlen(colon + 1), &port) != 0)
    return qm_error_set(err, QM_EINVAL, "http listen \"%s\": port must be a number 0..65535",
                        addr);
  if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  return QM_OK;
}

/* Binds and listens with plain system calls first, so that the common
 * failures (address in use, permission) leave no libuv handle behind to be
 * closed asynchronously. */
static int open_listener(const char *addr, int *fd_out, int *port_out, qm_error_t *err) {
  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  int rc = parse_listen(addr, &ss, &sslen, err);
  if (rc) return rc;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return qm_error_set(err, QM_EIO, "http listen %s: socket: %s", addr, strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, QM_HTTP_BACKLOG) != 0) {
    int e = errno;
    close(fd);
    return qm_error_set(err, QM_EIO, "http listen %s: %s", addr, strerror(e));
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
    int e = errno;
    close(fd);
    return qm_error_set(err, QM_EIO, "http listen %s: getsockname: %s", addr, strerror(e));
  }
  *port_out = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  *fd_out = fd;
  return QM_OK;
}

int qm_http_new(qm_http_t **out, uv_loop_t *loop, const char *addr, qm_error_t *err) {
  if (!out || !loop || !addr)
    return qm_error_set(err, QM_EINVAL, "qm_http_new: missing argument");
  *out = NULL;
  int fd = -1, port = 0;
  int rc = open_listener(addr, &fd, &port, err);
  if (rc) return rc;

  qm_http_t *h = calloc(1, sizeof *h);
  if (!h) {
    close(fd);
    return qm_error_set(err, QM_ENOMEM, "http listen %s: out of memory", addr);
  }
  h->loop = loop;
  h->port = port;
  h->max_body = QM_HTTP_MAX_BODY;
  snprintf(h->listen, sizeof h->listen, "%s", addr);

  h2o_config_init(&h->config);
  h->config.server_name = h2o_iovec_init(H2O_STRLIT("qmesh"));
  h->config.max_request_entity_size = h->max_body;
  h->config.http1.upgrade_to_http2 = 0;
  h2o_hostconf_t *host = h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")),
                                                  65535);
  h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
  dispatcher_t *d = (dispatcher_t *)h2o_create_handler(pathconf, sizeof *d);
  d->super.on_req = on_req;
  d->http = h;

  uv_idle_init(loop, &h->sentinel);
  uv_tcp_init(loop, &h->listener);
  int uvrc = uv_tcp_open(&h->listener, fd);
  if (uvrc != 0) {
    close(fd);
  } else {
    h2o_context_init(&h->ctx, loop, &h->config);
    h->ctx_ready = 1;
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;
    uvrc = uv_listen((uv_stream_t *)&h->listener, QM_HTTP_BACKLOG, on_connection);
  }
  if (uvrc != 0) {
    /* The handles exist now, so the memory goes the asynchronous way and
     * is freed when the loop next runs. */
    qm_http_t *tmp = h;
    qm_http_destroy(&tmp);
    return qm_error_set(err, QM_EIO, "http listen %s: %s", addr, uv_strerror(uvrc));
  }
  qm_logf(QM_LOG_INFO, "http.listening", "listen=%s port=%d", h->listen, h->port);
  *out = h;
  return QM_OK;
}

/* ---- query strings ------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes application/x-www-form-urlencoded text ('+' is a space, %XX a
 * byte; a '%' not followed by two hex digits stays as it is). Returns the
 * decoded length, or -1 when it does not fit in cap-1 bytes plus the NUL. */
static long url_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t o = 0;
  if (cap == 0) return -1;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    }
    if (o + 1 >= cap) return -1;
    out[o++] = c;
  }
  out[o] = '\0';
  return (long)o;
}

/* Returns 1 when `name` is present (its value, possibly empty, in buf) and 0
 * when it is absent. A value whose decoded form does not fit in buflen also
 * gives 0 (buf ""): callers test the result as a boolean, and a cut value
 * taken for the real one (an id prefix, say) would do the wrong thing, while
 * "missing" gets the request refused. A name given twice yields its first
 * value. */
int qm_http_query(const qm_http_req_t *req, const char *name, char *buf, size_t buflen) {
  if (!req || !name) return 0;
  const char *q = req->query, *end = req->query + req->query_len;
  if (!q) return 0;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *pend = amp ? amp : end;
    const char *eq = memchr(q, '=', (size_t)(pend - q));
    const char *kend = eq ? eq : pend;
    char key[256];
    if (url_decode(q, (size_t)(kend - q), key, sizeof key) >= 0 && strcmp(key, name) == 0) {
      const char *v = eq ? eq + 1 : pend;
      if (!buf || buflen == 0) return 1;
      if (url_decode(v, (size_t)(pend - v), buf, buflen) < 0) {
        buf[0] = '\0';
        return 0;
      }
      return 1;
    }
    q = amp ? amp + 1 : end;
  }
  return 0;
}

/* ---- the probe client --------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline: 1 ready, 0 timed out, -1
 * error (errno set). */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (rc > 0) return 1;
    if (rc == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

typedef struct url_parts {
  char host[256];
  char port[8];
  char authority[300];
  const char *path;
} url_parts_t;

/* http://HOST[:PORT][/PATH]; HOST a name, an IPv4 address or [IPv6]. */
static int parse_url(const char *url, url_parts_t *u) {
  static const char scheme[] = "http://";
  if (strncmp(url, scheme, sizeof scheme - 1) != 0) return -1;
  const char *a = url + sizeof scheme - 1;
  const char *slash = strchr(a, '/');
  const char *aend = slash ? slash : a + strlen(a);
  size_t alen = (size_t)(aend - a);
  if (alen == 0 || alen >= sizeof u->authority) return -1;
  memcpy(u->authority, a, alen);
  u->authority[alen] = '\0';
  u->path = slash ? slash : "/";
  for (const char *p = u->path; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == 0x7f) return -1;

  const char *hs = a, *he, *portp = NULL;
  if (*a == '[') {
    const char *rb = memchr(a, ']', alen);
    if (!rb) return -1;
    hs = a + 1;
    he = rb;
    if (rb + 1 < aend) {
      if (rb[1] != ':') return -1;
      portp = rb + 2;
    }
  } else {
    const char *colon = memchr(a, ':', alen);
    he = colon ? colon : aend;
    if (colon) portp = colon + 1;
  }
  size_t hl = (size_t)(he - hs);
  if (hl == 0 || hl >= sizeof u->host) return -1;
  memcpy(u->host, hs, hl);
  u->host[hl] = '\0';
  for (const char *p = u->host; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == '@' || *p == '/') return -1;
  int port = 80;
  if (portp && parse_port(portp, (size_t)(aend - portp), &port) != 0) return -1;
  if (port == 0) return -1;
  snprintf(u->port, sizeof u->port, "%d", port);
  return 0;
}

/* Connects to the first address that answers; -errno style failures come
 * back in *why. Returns the socket or -1. */
static int connect_any(const url_parts_t *u, int64_t deadline, int *why) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(u->host, u->port, &hints, &res);
  if (gai != 0) {
    *why = EHOSTUNREACH;
    return -2;
  }
  int fd = -1;
  *why = ECONNREFUSED;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      *why = errno;
      continue;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w == 0) {
        close(fd);
        freeaddrinfo(res);
        *why = ETIMEDOUT;
        return -1;
      }
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (w < 0) soerr = errno;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
      rc = soerr ? -1 : 0;
      errno = soerr;
    }
    if (rc == 0) break;
    *why = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

/* Finds the end of the header block; returns its length or 0. */
static size_t header_end(const char *b, size_t n) {
  for (size_t i = 0; i + 3 < n; i++)
    if (b[i] == '\r' && b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') return i + 4;
  return 0;
}

/* Content-Length from a header block, or -1 when absent. */
static long long content_length(const char *hdr, size_t n) {
  static const char name[] = "\r\ncontent-length:";
  for (size_t i = 0; i + sizeof name - 1 < n; i++) {
    if (strncasecmp(hdr + i, name, sizeof name - 1) != 0) continue;
    const char *p = hdr + i + sizeof name - 1;
    while (*p == ' ' || *p == '\t') p++;
    char *e;
    long long v = strtoll(p, &e, 10);
    return e == p || v < 0 ? -1 : v;
  }
  return -1;
}

/* Sends all of buf before the deadline: 0, or -1 with *e set (ETIMEDOUT or
 * the send error). */
static int send_all(int fd, const char *buf, size_t len, int64_t deadline, int *e) {
  for (size_t off = 0; off < len;) {
    ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w > 0) continue;
      *e = w == 0 ? ETIMEDOUT : errno;
      return -1;
    }
    *e = n < 0 ? errno : EPIPE;
    return -1;
  }
  return 0;
}

/* One HTTP/1.0 exchange: the connection closes after the answer, so there
 * is no chunked encoding to undo and EOF ends the body. The timeout covers
 * connecting, sending and receiving; name resolution (getaddrinfo) is not
 * under it, which only matters for names a resolver has to look up. */
static int request(const char *method, const char *url, int timeout_ms, const char *req_body,
                   size_t req_len, char *body, size_t bodylen, qm_error_t *err) {
  if (body && bodylen) body[0] = '\0';
  if (!url) return qm_error_set(err, QM_EINVAL, "(null): bad URL");
  if (timeout_ms <= 0) timeout_ms = QM_HTTP_DEFAULT_TIMEOUT_MS;
  url_parts_t u;
  if (parse_url(url, &u) != 0)
    return qm_error_set(err, QM_EINVAL, "%s: bad URL (expected http://HOST:PORT/PATH)", url);

  int64_t deadline = now_ms() + timeout_ms;
  int why = 0;
  int fd = connect_any(&u, deadline, &why);
  if (fd == -2)
    return qm_error_set(err, QM_ENOTFOUND, "%s: cannot resolve host \"%s\"", url, u.host);
  if (fd < 0) {
    if (why == ETIMEDOUT)
      return qm_error_set(err, QM_ETIMEOUT, "%s: timed out after %d ms", url, timeout_ms);
    if (why == ECONNREFUSED) return qm_error_set(err, QM_EREFUSED, "%s: connection refused", url);
    return qm_error_set(err, QM_EIO, "%s: connect: %s", url, strerror(why));
  }

  char req[4096];
  int rl;
  if (req_body)
    rl = snprintf(req, sizeof req,
                  "%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: qmesh\r\nAccept: */*\r\n"
                  "Connection: close\r\nContent-Length: %zu\r\n\r\n",
                  method, u.path, u.authority, req_len);
  else
    rl = snprintf(req, sizeof req,
                  "%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: qmesh\r\nAccept: */*\r\n"
                  "Connection: close\r\n\r\n",
                  method, u.path, u.authority);
  if (rl < 0 || (size_t)rl >= sizeof req) {
    close(fd);
    return qm_error_set(err, QM_EINVAL, "%s: bad URL (too long)", url);
  }
  int rc = QM_OK, send_errno = 0;
  if (send_all(fd, req, (size_t)rl, deadline, &send_errno) == 0 && req_body && req_len)
    send_all(fd, req_body, req_len, deadline, &send_errno);
  if (send_errno == ETIMEDOUT)
    rc = qm_error_set(err, QM_ETIMEOUT, "%s: timed out after %d ms", url, timeout_ms);
  /* Other send errors: a server may answer (413, say) and close before
   * taking the whole body, so its answer is still read; the send error is
   * reported only when no answer comes. */

  /* Reads the header block into hdr, then as much of the body as the
   * caller's buffer takes; stops at EOF, at Content-Length, or when the
   * buffer is full. */
  char hdr[16384 + 1]; /* NUL-terminated for sscanf and strtoll */
  size_t hn = 0, hlen = 0, bn = 0;
  long long clen = -1;
  int status = 0;
  while (rc == QM_OK) {
    char chunk[4096];
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_fd(fd, POLLIN, deadline);
      if (w > 0) continue;
      if (w == 0) rc = qm_error_set(err, QM_ETIMEOUT, "%s: timed out after %d ms", url, timeout_ms);
      else rc = qm_error_set(err, QM_EIO, "%s: recv: %s", url, strerror(errno));
      break;
    }
    if (n < 0) {
      rc = qm_error_set(err, errno == ECONNRESET ? QM_ECLOSED : QM_EIO, "%s: recv: %s", url,
                        strerror(errno));
      break;
    }
    const char *data = chunk;
    size_t dn = (size_t)n;
    if (!hlen) {
      size_t room = sizeof hdr - 1 - hn;
      size_t take = dn < room ? dn : room;
      memcpy(hdr + hn, chunk, take);
      hn += take;
      hdr[hn] = '\0';
      hlen = header_end(hdr, hn);
      if (!hlen) {
        if (n == 0) {
          rc = qm_error_set(err, QM_EHTTP, "%s: connection closed before a complete response", url);
        } else if (hn == sizeof hdr - 1) {
          rc = qm_error_set(err, QM_EHTTP, "%s: response headers larger than %zu bytes", url,
                            sizeof hdr - 1);
        }
        continue;
      }
      int maj = 0, mnr = 0;
      if (sscanf(hdr, "HTTP/%d.%d %3d", &maj, &mnr, &status) != 3 || status < 100 || status > 999) {
        status = 0;
        rc = qm_error_set(err, QM_EHTTP, "%s: malformed status line", url);
        break;
      }
      clen = content_length(hdr, hlen);
      /* Body bytes that arrived with the headers. */
      size_t consumed = hlen - (hn - take);
      data = chunk + consumed;
      dn = (size_t)n - consumed;
    }
    if (n == 0) break;
    if (body && bodylen > 1 && bn < bodylen - 1) {
      size_t room = bodylen - 1 - bn;
      size_t c = dn < room ? dn : room;
      memcpy(body + bn, data, c);
      bn += c;
      body[bn] = '\0';
    }
    /* Enough read: the whole declared body, or all the caller can take. */
    if (!body || bodylen <= 1 || bn >= bodylen - 1) break;
    if (clen >= 0 && (long long)bn >= clen) break;
  }
  close(fd);
  /* Once the status line is in, that is the answer, even if the body was
   * cut short (a server may reset a connection whose request it refused). */
  if (status > 0 && hlen) return status;
  if (rc != QM_OK && send_errno && send_errno != ETIMEDOUT)
    rc = qm_error_set(err, send_errno == ECONNRESET || send_errno == EPIPE ? QM_ECLOSED : QM_EIO,
                      "%s: send: %s", url, strerror(send_errno));
  return rc == QM_OK ? status : rc;
}

/* timeout_ms <= 0 means the default, 2000 ms. Error messages start with the
 * URL: "http://127.0.0.1:9101/readyz: connection refused". */
int qm_http_get(const char *url, int timeout_ms, char *body, size_t bodylen, qm_error_t *err) {
  return request("GET", url, timeout_ms, NULL, 0, body, bodylen, err);
}

int qm_http_post(const char *url, int timeout_ms, const char *req_body, size_t req_len, char *body,
                 size_t bodylen, qm_error_t *err) {
  return request("POST", url, timeout_ms, req_body ? req_body : "", req_body ? req_len : 0, body,
                 bodylen, err);
}
