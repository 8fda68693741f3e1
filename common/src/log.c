/* log.c: structured log lines (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = QM_LOG_INFO;
static atomic_int g_json = 0;
static atomic_int g_fd = 2;
static _Thread_local char t_service[32] = "qmesh";

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int qm_log_level_parse(const char *s) {
  for (int i = 0; i <= QM_LOG_OFF; i++)
    if (s && strcmp(s, level_names[i]) == 0) return i;
  return -1;
}

void qm_log_set_level(qm_log_level_t lvl) { atomic_store(&g_level, (int)lvl); }
qm_log_level_t qm_log_get_level(void) { return (qm_log_level_t)atomic_load(&g_level); }
void qm_log_set_json(int json) { atomic_store(&g_json, json ? 1 : 0); }
void qm_log_set_fd(int fd) { atomic_store(&g_fd, fd); }

void qm_log_set_service(const char *svc) {
  snprintf(t_service, sizeof t_service, "%s", svc ? svc : "qmesh");
}

const char *qm_log_service(void) { return t_service; }

/* A line buffer that never overflows: text past its end is cut and the line
 * still ends with a newline. */
typedef struct {
  char buf[4096];
  size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n) {
  size_t room = sizeof l->buf - 2 - l->len;
  if (n > room) n = room;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void puts_(line_t *l, const char *s) { put(l, s, strlen(s)); }

/* Writes a value, quoted and escaped when it holds spaces, quotes, '=' or
 * control characters (logfmt), always quoted in JSON. */
static void put_value(line_t *l, const char *v, int json) {
  if (!v) v = "";
  int quote = json || *v == '\0';
  for (const char *p = v; *p && !quote; p++)
    if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\') quote = 1;
  if (!quote) {
    puts_(l, v);
    return;
  }
  put(l, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      put(l, esc, 2);
    } else if (*p == '\n') {
      put(l, "\\n", 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      puts_(l, esc);
    } else {
      put(l, (const char *)p, 1);
    }
  }
  put(l, "\"", 1);
}

static void put_pair(line_t *l, const char *k, const char *v, int json, int first) {
  if (json) {
    if (!first) put(l, ",", 1);
    put(l, "\"", 1);
    puts_(l, k);
    put(l, "\":", 2);
  } else {
    if (!first) put(l, " ", 1);
    puts_(l, k);
    put(l, "=", 1);
  }
  put_value(l, v, json);
}

static void begin(line_t *l, qm_log_level_t lvl, const char *event, int json) {
  struct timeval tv;
  struct tm tm;
  char ts[40];
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));
  l->len = 0;
  if (json) put(l, "{", 1);
  put_pair(l, "ts", ts, json, 1);
  put_pair(l, "level", level_names[lvl], json, 0);
  put_pair(l, "svc", t_service, json, 0);
  put_pair(l, "event", event, json, 0);
}

static void finish(line_t *l, int json) {
  if (json) l->buf[l->len++] = '}';
  l->buf[l->len++] = '\n';
  ssize_t w = write(atomic_load(&g_fd), l->buf, l->len);
  (void)w;
}

void qm_log(qm_log_level_t lvl, const char *event, ...) {
  if ((int)lvl < atomic_load(&g_level) || lvl >= QM_LOG_OFF) return;
  int json = atomic_load(&g_json);
  line_t l;
  begin(&l, lvl, event, json);
  va_list ap;
  va_start(ap, event);
  for (;;) {
    const char *k = va_arg(ap, const char *);
    if (!k) break;
    const char *v = va_arg(ap, const char *);
    put_pair(&l, k, v, json, 0);
  }
  va_end(ap);
  finish(&l, json);
}

void qm_logf(qm_log_level_t lvl, const char *event, const char *fmt, ...) {
  if ((int)lvl < atomic_load(&g_level) || lvl >= QM_LOG_OFF) return;
  int json = atomic_load(&g_json);
  line_t l;
  char extra[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(extra, sizeof extra, fmt, ap);
  va_end(ap);
  begin(&l, lvl, event, json);
  if (extra[0]) {
    if (json) put_pair(&l, "detail", extra, 1, 0);
    else {
      put(&l, " ", 1);
      puts_(&l, extra);
    }
  }
  finish(&l, json);
}
