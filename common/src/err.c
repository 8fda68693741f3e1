/* err.c: names and texts for the error table in err.h. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *qm_strerror(int code) {
  switch (code) {
  case QM_OK: return "success";
#define QM__ERR_TEXT(name, c, text) case c: return text;
  QM_ERRNO_MAP(QM__ERR_TEXT)
#undef QM__ERR_TEXT
  }
  return "unknown error";
}

const char *qm_err_name(int code) {
  switch (code) {
  case QM_OK: return "OK";
#define QM__ERR_NAME(name, c, text) case c: return "E" #name;
  QM_ERRNO_MAP(QM__ERR_NAME)
#undef QM__ERR_NAME
  }
  return "EUNKNOWNCODE";
}

int qm_error_set(qm_error_t *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

void qm_error_clear(qm_error_t *err) {
  if (err) {
    err->code = 0;
    err->msg[0] = '\0';
  }
}
