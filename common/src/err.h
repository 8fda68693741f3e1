/*
 * err.h: qmesh's error codes.
 *
 * One table generates the enum, qm_strerror() and qm_err_name(), the way
 * libuv's UV_ERRNO_MAP does. Every qmesh function that can fail returns zero
 * on success or one of these negative codes. Functions that have more to say
 * than a code (a config file's line, a plugin's name) also fill a qm_error_t.
 */
#ifndef QM_ERR_H
#define QM_ERR_H

#include <stddef.h>

#define QM_ERRNO_MAP(XX)                                                    \
  XX(NOMEM,     -1,  "out of memory")                                     \
  XX(INVAL,     -2,  "invalid argument")                                  \
  XX(IO,        -3,  "input/output error")                                \
  XX(NOTFOUND,  -4,  "not found")                                         \
  XX(EXISTS,    -5,  "already exists")                                    \
  XX(MAPFULL,   -6,  "store is full (map_size reached)")                  \
  XX(STORE,     -7,  "store error")                                       \
  XX(DECODE,    -8,  "malformed message")                                 \
  XX(TRUNCATED, -9,  "message truncated")                                 \
  XX(TRAILING,  -10, "trailing bytes after message")                      \
  XX(TOOBIG,    -11, "message too large")                                 \
  XX(VERSION,   -12, "unsupported message version")                       \
  XX(FIELDTYPE, -13, "field has the wrong type")                          \
  XX(MISSING,   -14, "required field missing")                            \
  XX(UNKNOWN,   -15, "unknown field")                                     \
  XX(DUPFIELD,  -16, "field given twice")                                 \
  XX(CONFIG,    -17, "invalid configuration")                             \
  XX(NOROUTE,   -18, "no route")                                          \
  XX(BUSY,      -19, "busy, retry later")                                 \
  XX(ABI,       -20, "plugin ABI mismatch")                               \
  XX(PLUGIN,    -21, "plugin refused")                                    \
  XX(ZMQ,       -22, "messaging error")                                   \
  XX(AGAIN,     -23, "try again")                                         \
  XX(CLOSED,    -24, "closed")                                            \
  XX(REFUSED,   -25, "refused")                                           \
  XX(TIMEOUT,   -26, "timed out")                                         \
  XX(HTTP,      -27, "http error")                                        \
  XX(INTERNAL,  -28, "internal error")

typedef enum {
  QM_OK = 0,
#define QM__ERR_ENUM(name, code, text) QM_E##name = code,
  QM_ERRNO_MAP(QM__ERR_ENUM)
#undef QM__ERR_ENUM
} qm_errno_t;

/* A code plus the sentence a person needs: "configs/qmesh.cfg:12: bus.window:
 * must be between 1 and 1000000". */
typedef struct qm_error {
  int code;
  char msg[1024];
} qm_error_t;

const char *qm_strerror(int code);
const char *qm_err_name(int code);

/* Sets err (when non-NULL) and returns code, so callers can write
 * `return qm_error_set(err, QM_EINVAL, "...", ...);`. */
int qm_error_set(qm_error_t *err, int code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
void qm_error_clear(qm_error_t *err);

#endif
