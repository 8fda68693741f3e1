/*
 * test_http.c: the HTTP listener (routing, bodies, limits, keep-alive,
 * teardown with connections open) and the probe client, against a real
 * listener on 127.0.0.1 with a port the kernel picks.
 *
 * The listener's loop runs on a thread of its own, as a service's does; the
 * test thread is the client and makes every assertion (cmocka cannot fail a
 * test from another thread). Handlers only record what they saw.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "http.h"
#include "log.h"

/* ---- the server under test ---------------------------------------------- */

typedef struct server {
  uv_loop_t loop;
  uv_async_t stop;
  qm_http_t *http;
  int port;
  int stop_with_uv_stop; /* on_stop also calls uv_stop() */
  int stopped;
  atomic_int count_hits;
  atomic_int any_hits;
  atomic_int handler_calls;
  atomic_size_t last_body_len;
} server_t;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void h_hello(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  (void)req;
  atomic_fetch_add(&s->handler_calls, 1);
  qm_http_resp_text(resp, 200, "hello world\n");
}

static void h_count(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  (void)req;
  atomic_fetch_add(&s->handler_calls, 1);
  int n = atomic_fetch_add(&s->count_hits, 1) + 1;
  qm_http_resp_text(resp, 200, "%d", n);
}

/* Answers with the request's method, path and body, as octet-stream. */
static void h_echo(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  atomic_fetch_add(&s->handler_calls, 1);
  atomic_store(&s->last_body_len, req->body_len);
  char *b = malloc(req->body_len + 1);
  memcpy(b, req->body, req->body_len);
  qm_http_resp_take(resp, 200, "application/octet-stream", b, req->body_len);
}

static void h_len(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  atomic_fetch_add(&s->handler_calls, 1);
  atomic_store(&s->last_body_len, req->body_len);
  qm_http_resp_text(resp, 200, "%zu", req->body_len);
}

static void h_query(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  atomic_fetch_add(&s->handler_calls, 1);
  char name[64], empty[64], flag[64], missing[64], tiny[4];
  int rn = qm_http_query(req, "name", name, sizeof name);
  int re = qm_http_query(req, "empty", empty, sizeof empty);
  int rf = qm_http_query(req, "flag", flag, sizeof flag);
  int rm = qm_http_query(req, "missing", missing, sizeof missing);
  int rt = qm_http_query(req, "name", tiny, sizeof tiny);
  qm_http_resp_text(resp, 200, "path=%.*s name=%d:%s empty=%d:%s flag=%d:%s missing=%d tiny=%d",
                    (int)req->path_len, req->path, rn, rn == 1 ? name : "", re,
                    re == 1 ? empty : "", rf, rf == 1 ? flag : "", rm, rt);
}

static void h_busy(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  (void)req;
  atomic_fetch_add(&s->handler_calls, 1);
  qm_http_resp_text(resp, 503, "busy, retry later\n");
  resp->retry_after = 7;
}

static void h_api(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)ud;
  qm_http_resp_text(resp, 200, "api %.*s", (int)req->path_len, req->path);
}

static void h_api_v1(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)ud;
  qm_http_resp_text(resp, 200, "v1 %.*s", (int)req->path_len, req->path);
}

static void h_json(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  (void)ud;
  (void)req;
  char *b = strdup("{\"ok\":true}");
  qm_http_resp_take(resp, 201, "application/json", b, strlen(b));
}

static void h_any(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  atomic_fetch_add(&s->any_hits, 1);
  qm_http_resp_text(resp, 200, "any %.*s", (int)req->method_len, req->method);
}

static void h_quit(void *ud, const qm_http_req_t *req, qm_http_resp_t *resp) {
  server_t *s = ud;
  (void)req;
  qm_http_destroy(&s->http);
  qm_http_resp_text(resp, 200, "bye\n");
}

static void on_stop(uv_async_t *a) {
  server_t *s = a->data;
  qm_http_destroy(&s->http);
  uv_close((uv_handle_t *)a, NULL);
  if (s->stop_with_uv_stop) uv_stop(&s->loop);
}

/*
 * One thread runs every test's loop, one loop after another, and lives until
 * the program exits. h2o keeps per-thread caches of recycled memory chunks
 * (at most 16 per kind) in thread-local storage; a loop thread that exited
 * would leave them unreachable and LeakSanitizer would count them, while a
 * thread alive at exit keeps them reachable.
 */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int started;
  uv_loop_t *job; /* the loop to run next */
  int done;       /* the last job's loop has returned */
} runner = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *runner_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&runner.mu);
  for (;;) {
    while (!runner.job) pthread_cond_wait(&runner.cv, &runner.mu);
    uv_loop_t *loop = runner.job;
    pthread_mutex_unlock(&runner.mu);
    /* A uv_stop() ends a run early; run again until nothing is left. */
    while (uv_run(loop, UV_RUN_DEFAULT) != 0) {
    }
    pthread_mutex_lock(&runner.mu);
    runner.job = NULL;
    runner.done = 1;
    pthread_cond_broadcast(&runner.cv);
  }
  return NULL;
}

static void runner_start(uv_loop_t *loop) {
  pthread_mutex_lock(&runner.mu);
  if (!runner.started) {
    assert_int_equal(pthread_create(&runner.thread, NULL, runner_main, NULL), 0);
    runner.started = 1;
  }
  runner.job = loop;
  runner.done = 0;
  pthread_cond_broadcast(&runner.cv);
  pthread_mutex_unlock(&runner.mu);
}

/* Waits for the running loop to return. A loop that does not end within
 * ten seconds is a failed teardown; the process cannot go on safely with a
 * loop still running over memory the test would free, so it stops here. */
static void runner_wait(void) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&runner.mu);
  while (!runner.done) {
    if (pthread_cond_timedwait(&runner.cv, &runner.mu, &until) == ETIMEDOUT) {
      fprintf(stderr, "test_http: the listener's loop did not end within 10 s\n");
      abort();
    }
  }
  pthread_mutex_unlock(&runner.mu);
}

static int setup(void **state) {
  server_t *s = calloc(1, sizeof *s);
  qm_error_t err = {0};
  assert_int_equal(uv_loop_init(&s->loop), 0);
  assert_int_equal(uv_async_init(&s->loop, &s->stop, on_stop), 0);
  /* Only the listener keeps the loop alive, so the loop ending shows that
   * the listener has gone. */
  uv_unref((uv_handle_t *)&s->stop);
  s->stop.data = s;
  int rc = qm_http_new(&s->http, &s->loop, "127.0.0.1:0", &err);
  if (rc != 0) fail_msg("qm_http_new: %s", err.msg);
  s->port = qm_http_port(s->http);
  assert_true(s->port > 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/hello", h_hello, s), 0);
  assert_int_equal(qm_http_route(s->http, NULL, "/count", h_count, s), 0);
  assert_int_equal(qm_http_route(s->http, "POST", "/echo", h_echo, s), 0);
  assert_int_equal(qm_http_route(s->http, "POST", "/len", h_len, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/query", h_query, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/busy", h_busy, s), 0);
  assert_int_equal(qm_http_route(s->http, "POST", "/submit", h_echo, s), 0);
  assert_int_equal(qm_http_route(s->http, "PUT", "/submit", h_echo, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/api", h_api, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/api/v1", h_api_v1, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/json", h_json, s), 0);
  assert_int_equal(qm_http_route(s->http, NULL, "/any", h_any, s), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/quit", h_quit, s), 0);
  runner_start(&s->loop);
  *state = s;
  return 0;
}

/* Stops the listener from its own thread and waits for the loop to end;
 * returns how long that took. The loop must then close with nothing left. */
static int64_t stop_server(server_t *s) {
  int64_t t0 = now_ms();
  uv_async_send(&s->stop);
  runner_wait();
  int64_t took = now_ms() - t0;
  s->stopped = 1;
  assert_int_equal(uv_loop_close(&s->loop), 0);
  return took;
}

static int teardown(void **state) {
  server_t *s = *state;
  if (!s->stopped) stop_server(s);
  free(s);
  return 0;
}

/* ---- a raw HTTP/1.1 client, to see headers and keep-alive --------------- */

typedef struct rconn {
  int fd;
  char buf[1 << 16];
  size_t n;
} rconn_t;

typedef struct rresp {
  int status;
  char headers[8192];
  char *body;
  size_t body_len;
} rresp_t;

static rconn_t *rconnect(int port) {
  rconn_t *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(c->fd >= 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
  return c;
}

static void rclose(rconn_t *c) {
  if (c->fd >= 0) close(c->fd);
  free(c);
}

static void rsend(rconn_t *c, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    assert_true(n > 0);
    p += n;
    len -= (size_t)n;
  }
}

static void rsendf(rconn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rsendf(rconn_t *c, const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  rsend(c, buf, (size_t)n);
}

/* Reads more bytes; returns 0 at EOF (or reset), -1 on timeout. */
static int rfill(rconn_t *c) {
  assert_true(c->n < sizeof c->buf);
  ssize_t n = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -1;
  if (n <= 0) return 0;
  c->n += (size_t)n;
  return 1;
}

static const char *find_header(const rresp_t *r, const char *name) {
  static char val[512];
  size_t nl = strlen(name);
  for (const char *p = strstr(r->headers, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
    if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
      const char *v = p + 3 + nl;
      while (*v == ' ') v++;
      const char *e = strstr(v, "\r\n");
      size_t vl = e ? (size_t)(e - v) : strlen(v);
      if (vl >= sizeof val) vl = sizeof val - 1;
      memcpy(val, v, vl);
      val[vl] = '\0';
      return val;
    }
  }
  return NULL;
}

/* Reads one response (with a Content-Length body; none for HEAD). Returns 0
 * when the connection closed before any byte of it. */
static int rread(rconn_t *c, rresp_t *r, int head) {
  memset(r, 0, sizeof *r);
  char *end;
  while ((end = memmem(c->buf, c->n, "\r\n\r\n", 4)) == NULL) {
    int f = rfill(c);
    assert_int_not_equal(f, -1);
    if (f == 0) {
      assert_int_equal(c->n, 0);
      return 0;
    }
  }
  size_t hl = (size_t)(end - c->buf) + 4;
  assert_true(hl < sizeof r->headers);
  memcpy(r->headers, c->buf, hl);
  r->headers[hl] = '\0';
  assert_int_equal(sscanf(r->headers, "HTTP/1.%*d %d", &r->status), 1);
  const char *cl = find_header(r, "content-length");
  size_t blen = head || !cl ? 0 : strtoul(cl, NULL, 10);
  memmove(c->buf, c->buf + hl, c->n - hl);
  c->n -= hl;
  r->body = malloc(blen + 1);
  size_t got = 0;
  while (got < blen) {
    if (c->n == 0) assert_int_equal(rfill(c), 1);
    size_t take = c->n < blen - got ? c->n : blen - got;
    memcpy(r->body + got, c->buf, take);
    got += take;
    memmove(c->buf, c->buf + take, c->n - take);
    c->n -= take;
  }
  r->body[blen] = '\0';
  r->body_len = blen;
  return 1;
}

static void rresp_free(rresp_t *r) {
  free(r->body);
  r->body = NULL;
}

/* Waits until the server closes the connection: 1 when it did (EOF or
 * reset), 0 when it is still open after timeout_ms. */
static int closed_by_server(rconn_t *c, int timeout_ms) {
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (;;) {
    char b[4096];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    if (n == 0) return 1;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
  }
}

static char *url(const server_t *s, const char *path) {
  static char u[256];
  snprintf(u, sizeof u, "http://127.0.0.1:%d%s", s->port, path);
  return u;
}

/* ---- tests -------------------------------------------------------------- */

static void test_get_200_with_body(void **state) {
  server_t *s = *state;
  char body[256];
  qm_error_t err = {0};
  assert_int_equal(qm_http_get(url(s, "/hello"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "hello world\n");

  rconn_t *c = rconnect(s->port);
  rsendf(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  rresp_t r;
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  assert_string_equal(find_header(&r, "content-type"), "text/plain; charset=utf-8");
  assert_string_equal(find_header(&r, "content-length"), "12");
  assert_string_equal(r.body, "hello world\n");
  rresp_free(&r);

  /* A handler's own content type and status. */
  rsendf(c, "GET /json HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 201);
  assert_string_equal(find_header(&r, "content-type"), "application/json");
  assert_string_equal(r.body, "{\"ok\":true}");
  rresp_free(&r);

  /* HEAD takes the GET route: same length announced, no body sent. */
  rsendf(c, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(rread(c, &r, 1), 1);
  assert_int_equal(r.status, 200);
  assert_string_equal(find_header(&r, "content-length"), "12");
  rresp_free(&r);
  /* If a body had been sent it would be read as the next status line. */
  rsendf(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "hello world\n");
  rresp_free(&r);
  rclose(c);
}

static void test_not_found(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[64];
  assert_int_equal(qm_http_get(url(s, "/nope"), 2000, body, sizeof body, &err), 404);
  assert_string_equal(body, "not found\n");
  /* Prefixes match whole path segments. */
  assert_int_equal(qm_http_get(url(s, "/hellox"), 2000, NULL, 0, &err), 404);
  assert_int_equal(qm_http_get(url(s, "/"), 2000, NULL, 0, &err), 404);
  assert_int_equal(atomic_load(&s->handler_calls), 0);
}

static void test_method_not_allowed(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  assert_int_equal(qm_http_get(url(s, "/submit"), 2000, NULL, 0, &err), 405);
  assert_int_equal(qm_http_get(url(s, "/submit/deeper"), 2000, NULL, 0, &err), 405);

  rconn_t *c = rconnect(s->port);
  rsendf(c, "DELETE /submit HTTP/1.1\r\nHost: x\r\n\r\n");
  rresp_t r;
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 405);
  assert_string_equal(find_header(&r, "allow"), "POST, PUT");
  rresp_free(&r);
  /* POST to a GET-only path. */
  rsendf(c, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 405);
  assert_string_equal(find_header(&r, "allow"), "GET");
  rresp_free(&r);
  rclose(c);
  assert_int_equal(atomic_load(&s->handler_calls), 0);

  /* A route without a method takes every method. */
  for (int i = 0; i < 3; i++) {
    const char *m = i == 0 ? "GET" : i == 1 ? "PATCH" : "OPTIONS";
    c = rconnect(s->port);
    rsendf(c, "%s /any HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", m);
    assert_int_equal(rread(c, &r, 0), 1);
    assert_int_equal(r.status, 200);
    char want[32];
    snprintf(want, sizeof want, "any %s", m);
    assert_string_equal(r.body, want);
    rresp_free(&r);
    rclose(c);
  }
  assert_int_equal(atomic_load(&s->any_hits), 3);
}

static void test_longest_prefix(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[128];
  assert_int_equal(qm_http_get(url(s, "/api/v1/evaluations/7"), 2000, body, sizeof body, &err),
                   200);
  assert_string_equal(body, "v1 /api/v1/evaluations/7");
  assert_int_equal(qm_http_get(url(s, "/api/v2/x"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "api /api/v2/x");
  assert_int_equal(qm_http_get(url(s, "/api"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "api /api");
  assert_int_equal(qm_http_get(url(s, "/api/v1"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "v1 /api/v1");
  assert_int_equal(qm_http_get(url(s, "/api/v1x"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "api /api/v1x");
}

static void test_query(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[256];
  assert_int_equal(
    qm_http_get(url(s, "/query?flag&name=J%C3%B6rg+x%2By&empty=&other=1"), 2000, body,
                sizeof body, &err),
    200);
  assert_string_equal(body, "path=/query name=1:J\xc3\xb6rg x+y empty=1: flag=1: missing=0 tiny=0");
  /* The first occurrence wins; a broken escape stays as written. */
  assert_int_equal(qm_http_get(url(s, "/query?name=a%2&name=b"), 2000, body, sizeof body, &err),
                   200);
  assert_string_equal(body, "path=/query name=1:a%2 empty=0: flag=0: missing=0 tiny=1");
  /* No query at all. */
  assert_int_equal(qm_http_get(url(s, "/query"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "path=/query name=0: empty=0: flag=0: missing=0 tiny=0");
}

static void fill_pattern(char *p, size_t n, unsigned seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (char)(x & 0xff);
  }
}

static void test_post_body_intact(void **state) {
  server_t *s = *state;
  size_t n = 1024 * 1024 + 17;
  char *data = malloc(n);
  fill_pattern(data, n, 1);

  rconn_t *c = rconnect(s->port);
  rsendf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
  rsend(c, data, n);
  rresp_t r;
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, n);
  assert_memory_equal(r.body, data, n);
  assert_string_equal(find_header(&r, "content-type"), "application/octet-stream");
  rresp_free(&r);

  /* The same bytes in three chunks arrive as one body. */
  size_t parts[3] = {1000, 300000, n - 301000};
  rsendf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  size_t off = 0;
  for (int i = 0; i < 3; i++) {
    rsendf(c, "%zx\r\n", parts[i]);
    rsend(c, data + off, parts[i]);
    rsendf(c, "\r\n");
    off += parts[i];
  }
  rsendf(c, "0\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, n);
  assert_memory_equal(r.body, data, n);
  rresp_free(&r);

  /* An empty POST reaches the handler with an empty body. */
  rsendf(c, "POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "0");
  rresp_free(&r);
  rclose(c);
  free(data);
}

static void test_body_limit(void **state) {
  server_t *s = *state;
  const size_t limit = 8u * 1024 * 1024;

  /* One byte over: refused from the headers alone, before the handler. */
  rconn_t *c = rconnect(s->port);
  rsendf(c, "POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", limit + 1);
  rresp_t r;
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 413);
  rresp_free(&r);
  assert_int_equal(closed_by_server(c, 2000), 1);
  rclose(c);
  assert_int_equal(atomic_load(&s->handler_calls), 0);

  /* Exactly the limit is accepted whole. */
  char *data = malloc(limit);
  fill_pattern(data, limit, 2);
  c = rconnect(s->port);
  rsendf(c, "POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", limit);
  rsend(c, data, limit);
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 200);
  char want[32];
  snprintf(want, sizeof want, "%zu", limit);
  assert_string_equal(r.body, want);
  rresp_free(&r);
  rclose(c);
  free(data);
  assert_int_equal(atomic_load(&s->handler_calls), 1);
}

static void test_retry_after(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[64];
  assert_int_equal(qm_http_get(url(s, "/busy"), 2000, body, sizeof body, &err), 503);
  assert_string_equal(body, "busy, retry later\n");

  rconn_t *c = rconnect(s->port);
  rsendf(c, "GET /busy HTTP/1.1\r\nHost: x\r\n\r\n");
  rresp_t r;
  assert_int_equal(rread(c, &r, 0), 1);
  assert_int_equal(r.status, 503);
  assert_non_null(find_header(&r, "retry-after"));
  assert_string_equal(find_header(&r, "retry-after"), "7");
  rresp_free(&r);
  /* Only answers that ask for it carry the header. */
  rsendf(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_null(find_header(&r, "retry-after"));
  rresp_free(&r);
  rclose(c);
}

static void test_many_sequential(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[32], want[32];
  for (int i = 1; i <= 300; i++) {
    assert_int_equal(qm_http_get(url(s, "/count"), 2000, body, sizeof body, &err), 200);
    snprintf(want, sizeof want, "%d", i);
    assert_string_equal(body, want);
  }
  assert_int_equal(atomic_load(&s->count_hits), 300);
}

static void test_keep_alive(void **state) {
  server_t *s = *state;
  rconn_t *c = rconnect(s->port);
  rresp_t r;
  char want[32];
  for (int i = 1; i <= 20; i++) {
    rsendf(c, "GET /count HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(rread(c, &r, 0), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(find_header(&r, "connection"), "keep-alive");
    snprintf(want, sizeof want, "%d", i);
    assert_string_equal(r.body, want);
    rresp_free(&r);
  }
  /* Pipelined: three requests in one write, three answers in order. */
  rsendf(c, "GET /count HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  assert_int_equal(rread(c, &r, 0), 1);
  assert_string_equal(r.body, "21");
  rresp_free(&r);
  assert_int_equal(rread(c, &r, 0), 1);
  assert_string_equal(r.body, "hello world\n");
  rresp_free(&r);
  assert_int_equal(rread(c, &r, 0), 1);
  assert_string_equal(r.body, "22");
  assert_string_equal(find_header(&r, "connection"), "close");
  rresp_free(&r);
  assert_int_equal(closed_by_server(c, 2000), 1);
  rclose(c);
}

/* h2o would keep an idle keep-alive connection for 10 s; destroy must not
 * wait for that, and every client must see its connection closed. */
static void test_destroy_with_open_connections(void **state) {
  server_t *s = *state;
  rconn_t *idle = rconnect(s->port);
  rsendf(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  rresp_t r;
  assert_int_equal(rread(idle, &r, 0), 1);
  rresp_free(&r);
  rconn_t *partial = rconnect(s->port);
  rsendf(partial, "GET /hello HTTP/1.1\r\nHo");
  rconn_t *body_pending = rconnect(s->port);
  rsendf(body_pending, "POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
  rconn_t *silent = rconnect(s->port);
  usleep(100 * 1000); /* let the loop accept them all */

  int64_t took = stop_server(s);
  assert_true(took < 2000);
  assert_int_equal(closed_by_server(idle, 1000), 1);
  assert_int_equal(closed_by_server(partial, 1000), 1);
  assert_int_equal(closed_by_server(body_pending, 1000), 1);
  assert_int_equal(closed_by_server(silent, 1000), 1);
  rclose(idle);
  rclose(partial);
  rclose(body_pending);
  rclose(silent);
}

/* A uv_stop() in the same loop turn as the destroy must still stop the loop
 * (h2o runs the loop once inside its dispose), and running the loop again
 * afterwards finishes the teardown. */
static void test_destroy_then_uv_stop(void **state) {
  server_t *s = *state;
  rconn_t *idle = rconnect(s->port);
  rsendf(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  rresp_t r;
  assert_int_equal(rread(idle, &r, 0), 1);
  rresp_free(&r);
  s->stop_with_uv_stop = 1;
  assert_true(stop_server(s) < 2000);
  assert_int_equal(closed_by_server(idle, 1000), 1);
  rclose(idle);
}

/* A handler may destroy its own listener; the loop then ends by itself. */
static void test_destroy_from_handler(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  rconn_t *other = rconnect(s->port);
  int rc = qm_http_get(url(s, "/quit"), 2000, NULL, 0, &err);
  /* The answer is cut short by the teardown: no status, or the 200. */
  assert_true(rc == 200 || rc < 0);
  int64_t t0 = now_ms();
  runner_wait();
  s->stopped = 1;
  assert_true(now_ms() - t0 < 2000);
  assert_int_equal(closed_by_server(other, 1000), 1);
  rclose(other);
  /* The stop handle is all that is left. */
  uv_close((uv_handle_t *)&s->stop, NULL);
  assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&s->loop), 0);
}

/* ---- listener addresses, without a running server ----------------------- */

static void test_listen_addresses(void **state) {
  (void)state;
  uv_loop_t loop;
  qm_error_t err = {0};
  qm_http_t *h = NULL;
  assert_int_equal(uv_loop_init(&loop), 0);

  static const struct {
    const char *addr, *msg;
  } bad[] = {
    {"nonsense", "missing \":PORT\""},
    {"127.0.0.1:99999", "port must be a number 0..65535"},
    {"127.0.0.1:", "port must be a number 0..65535"},
    {"127.0.0.1:8o", "port must be a number 0..65535"},
    {"example.com:80", "\"example.com\" is not an IPv4 address"},
    {"[::1:80", "expected [IPv6]:PORT"},
    {"[nope]:80", "\"nope\" is not an IPv6 address"},
    {"", "empty address"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    qm_error_clear(&err);
    assert_int_equal(qm_http_new(&h, &loop, bad[i].addr, &err), QM_EINVAL);
    assert_null(h);
    if (!strstr(err.msg, bad[i].msg)) fail_msg("%s: got \"%s\"", bad[i].addr, err.msg);
  }

  /* localhost and an explicit port; then that port again is refused. */
  assert_int_equal(qm_http_new(&h, &loop, "localhost:0", &err), 0);
  int port = qm_http_port(h);
  assert_true(port > 0 && port < 65536);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  qm_http_t *h2 = NULL;
  assert_int_equal(qm_http_new(&h2, &loop, addr, &err), QM_EIO);
  assert_null(h2);
  assert_non_null(strstr(err.msg, "in use"));
  assert_non_null(strstr(err.msg, addr));

  /* Destroyed before the loop ever ran: one run finishes it. */
  qm_http_destroy(&h);
  assert_null(h);
  qm_http_destroy(&h); /* idempotent */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_ipv6_listener(void **state) {
  (void)state;
  int v6 = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int have_v6 = v6 >= 0 && bind(v6, (struct sockaddr *)&a6, sizeof a6) == 0;
  if (v6 >= 0) close(v6);
  if (!have_v6) skip();

  server_t *s = calloc(1, sizeof *s);
  qm_error_t err = {0};
  assert_int_equal(uv_loop_init(&s->loop), 0);
  assert_int_equal(uv_async_init(&s->loop, &s->stop, on_stop), 0);
  s->stop.data = s;
  assert_int_equal(qm_http_new(&s->http, &s->loop, "[::1]:0", &err), 0);
  assert_int_equal(qm_http_route(s->http, "GET", "/hello", h_hello, s), 0);
  char u[64];
  snprintf(u, sizeof u, "http://[::1]:%d/hello", qm_http_port(s->http));
  runner_start(&s->loop);
  char body[64];
  assert_int_equal(qm_http_get(u, 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "hello world\n");
  stop_server(s);
  free(s);
}

/* ---- the client's errors ------------------------------------------------ */

static void test_get_refused(void **state) {
  (void)state;
  /* A port that was just free: bind, learn it, close. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/healthz", ntohs(a.sin_port));
  qm_error_t err = {0};
  assert_int_equal(qm_http_get(u, 2000, NULL, 0, &err), QM_EREFUSED);
  char want[128];
  snprintf(want, sizeof want, "%s: connection refused", u);
  assert_string_equal(err.msg, want);
}

static void test_get_timeout(void **state) {
  (void)state;
  /* Listening, so the kernel completes the handshake, but never answering. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 4), 0);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/readyz", ntohs(a.sin_port));
  qm_error_t err = {0};
  int64_t t0 = now_ms();
  assert_int_equal(qm_http_get(u, 300, NULL, 0, &err), QM_ETIMEOUT);
  int64_t took = now_ms() - t0;
  close(fd);
  char want[128];
  snprintf(want, sizeof want, "%s: timed out after 300 ms", u);
  assert_string_equal(err.msg, want);
  assert_true(took >= 290);
  assert_true(took < 1500);
}

static void test_get_bad_url(void **state) {
  (void)state;
  static const char *const bad[] = {
    "ftp://127.0.0.1/x", "http://", "http:///path", "http://host:notaport/",
    "http://host:70000/", "http://host:0/", "127.0.0.1:80/healthz", "http://[::1/x",
    "http://h/pa th",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    qm_error_t err = {0};
    assert_int_equal(qm_http_get(bad[i], 100, NULL, 0, &err), QM_EINVAL);
    if (strncmp(err.msg, bad[i], strlen(bad[i])) != 0 || !strstr(err.msg, "bad URL"))
      fail_msg("%s: got \"%s\"", bad[i], err.msg);
  }
}

static void test_get_body_truncated(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[6];
  memset(body, 'Z', sizeof body);
  assert_int_equal(qm_http_get(url(s, "/hello"), 2000, body, sizeof body, &err), 200);
  assert_string_equal(body, "hello");
}

static void test_post_client(void **state) {
  server_t *s = *state;
  qm_error_t err = {0};
  char body[128];
  const char msg[] = "id=01HZX\0binary\nbytes";
  assert_int_equal(qm_http_post(url(s, "/echo"), 2000, msg, sizeof msg, body, sizeof body, &err),
                   200);
  assert_memory_equal(body, msg, sizeof msg);
  assert_int_equal(atomic_load(&s->last_body_len), sizeof msg);
  /* An empty body is a POST with Content-Length: 0. */
  assert_int_equal(qm_http_post(url(s, "/len"), 2000, "", 0, body, sizeof body, &err), 200);
  assert_string_equal(body, "0");
  assert_int_equal(qm_http_post(url(s, "/hello"), 2000, "x", 1, NULL, 0, &err), 405);
  /* Refused from its headers while the body is still being sent: the 413
   * is still what the caller learns. */
  size_t big = 9u * 1024 * 1024;
  char *data = calloc(1, big);
  int rc = qm_http_post(url(s, "/len"), 5000, data, big, body, sizeof body, &err);
  free(data);
  if (rc != 413) fail_msg("expected 413, got %d (%s)", rc, err.msg);
}

/* ---- `qmesh probe`, through the binary when it has been built ----------- */

static int run_probe(char *const argv[], char *errbuf, size_t errlen) {
  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(pipefd[1], 2);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1);
    close(pipefd[0]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(pipefd[1]);
  size_t n = 0;
  ssize_t k;
  while ((k = read(pipefd[0], errbuf + n, errlen - 1 - n)) > 0) n += (size_t)k;
  errbuf[n] = '\0';
  close(pipefd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_probe_command(void **state) {
  server_t *s = *state;
  const char *bin = QMESH_BINARY_DIR "/qmesh";
  struct stat st;
  if (stat(bin, &st) != 0) skip();
  char errbuf[2048], want[512];

  char *ok[] = {(char *)bin, "probe", url(s, "/hello"), NULL};
  assert_int_equal(run_probe(ok, errbuf, sizeof errbuf), 0);
  assert_string_equal(errbuf, "");

  char busy_url[256];
  snprintf(busy_url, sizeof busy_url, "%s", url(s, "/busy"));
  char *busy[] = {(char *)bin, "probe", "--timeout", "1000", busy_url, NULL};
  assert_int_equal(run_probe(busy, errbuf, sizeof errbuf), 1);
  snprintf(want, sizeof want, "probe %s: HTTP 503\n", busy_url);
  assert_string_equal(errbuf, want);

  char *quiet[] = {(char *)bin, "probe", "--quiet", busy_url, NULL};
  assert_int_equal(run_probe(quiet, errbuf, sizeof errbuf), 1);
  assert_string_equal(errbuf, "");

  char *missing[] = {(char *)bin, "probe", NULL};
  assert_int_equal(run_probe(missing, errbuf, sizeof errbuf), 2);
  assert_non_null(strstr(errbuf, "missing URL"));

  char *badopt[] = {(char *)bin, "probe", "--timeout", "soon", busy_url, NULL};
  assert_int_equal(run_probe(badopt, errbuf, sizeof errbuf), 2);
}

int main(void) {
  qm_log_set_level(QM_LOG_WARN);
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_get_200_with_body, setup, teardown),
    cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
    cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_longest_prefix, setup, teardown),
    cmocka_unit_test_setup_teardown(test_query, setup, teardown),
    cmocka_unit_test_setup_teardown(test_post_body_intact, setup, teardown),
    cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_after, setup, teardown),
    cmocka_unit_test_setup_teardown(test_many_sequential, setup, teardown),
    cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
    cmocka_unit_test_setup_teardown(test_get_body_truncated, setup, teardown),
    cmocka_unit_test_setup_teardown(test_post_client, setup, teardown),
    cmocka_unit_test_setup_teardown(test_destroy_with_open_connections, setup, teardown),
    cmocka_unit_test_setup_teardown(test_destroy_then_uv_stop, setup, teardown),
    cmocka_unit_test_setup_teardown(test_destroy_from_handler, setup, teardown),
    cmocka_unit_test_setup_teardown(test_probe_command, setup, teardown),
    cmocka_unit_test(test_listen_addresses),
    cmocka_unit_test(test_ipv6_listener),
    cmocka_unit_test(test_get_refused),
    cmocka_unit_test(test_get_timeout),
    cmocka_unit_test(test_get_bad_url),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
