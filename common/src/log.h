/*
 * log.h: one structured line per event.
 *
 * Lines are logfmt (or JSON when log.format = "json"):
 *   ts=2026-11-25T01:02:03.456Z level=info svc=ingest event=bus.peer_up peer=autoscore
 * The service name is per thread (qm_log_set_service), because in
 * `--target=all` every service runs on its own thread. Callers pass the event
 * name and then key/value pairs as a NULL-terminated list of strings:
 *   qm_log(QM_LOG_WARN, "route.reload_failed", "file", path, "error", msg, NULL);
 * Values are quoted and escaped as needed. Writes are one write(2) per line,
 * so lines from several threads never interleave.
 */
#ifndef QM_LOG_H
#define QM_LOG_H

typedef enum {
  QM_LOG_DEBUG = 0,
  QM_LOG_INFO = 1,
  QM_LOG_WARN = 2,
  QM_LOG_ERROR = 3,
  QM_LOG_OFF = 4
} qm_log_level_t;

/* Parses "debug", "info", "warn", "error", "off"; returns -1 otherwise. */
int qm_log_level_parse(const char *s);
void qm_log_set_level(qm_log_level_t lvl);
qm_log_level_t qm_log_get_level(void);
/* 0 = logfmt, 1 = json. */
void qm_log_set_json(int json);
/* Output file descriptor (default 2, stderr). */
void qm_log_set_fd(int fd);
void qm_log_set_service(const char *svc);
const char *qm_log_service(void);

void qm_log(qm_log_level_t lvl, const char *event, ...) __attribute__((sentinel));

/* Like qm_log but values are printf-formatted: pairs of key and a format,
 * e.g. qm_logf(QM_LOG_INFO, "bus.batch", "n=%u commit_us=%llu", n, us).
 * The formatted text is appended verbatim after the standard fields; keep it
 * in key=value form. */
void qm_logf(qm_log_level_t lvl, const char *event, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

#endif
