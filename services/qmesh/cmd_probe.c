/*
 * cmd_probe.c: `qmesh probe [--timeout MS] [--quiet] URL`, the health check
 * Compose runs inside each container (the image has no curl).
 *
 * One GET with a deadline covering connect, send and receive. Exit 0 on a
 * 2xx answer; 1 on any other answer or when the service cannot be reached,
 * with one line on stderr saying which (`probe URL: HTTP 503`, `probe URL:
 * connection refused`); 2 on a usage error, a malformed URL included.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "err.h"
#include "http.h"

#define PROBE_DEFAULT_TIMEOUT_MS 2000
#define PROBE_MAX_TIMEOUT_MS 600000

static void usage(FILE *out) {
  fprintf(out,
          "usage: qmesh probe [--timeout MS] [--quiet] URL\n"
          "\n"
          "Sends GET URL (http://HOST:PORT/PATH) and exits 0 when the answer is 2xx,\n"
          "1 on any other answer or when the service cannot be reached, 2 on a usage\n"
          "error.\n"
          "\n"
          "  --timeout MS  give up after MS milliseconds (default %d)\n"
          "  --quiet       print nothing, only set the exit code\n"
          "  --help        show this text\n",
          PROBE_DEFAULT_TIMEOUT_MS);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("qmesh probe: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n", stderr);
  usage(stderr);
  return 2;
}

static int parse_timeout(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > PROBE_MAX_TIMEOUT_MS) return -1;
  *out = (int)v;
  return 0;
}

int qm_cmd_probe(int argc, char **argv) {
  int timeout = PROBE_DEFAULT_TIMEOUT_MS, quiet = 0;
  const char *url = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      quiet = 1;
    } else if (strcmp(a, "--timeout") == 0 || strncmp(a, "--timeout=", 10) == 0) {
      const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v) return usage_error("%s needs a value in milliseconds", "--timeout");
      if (parse_timeout(v, &timeout) != 0)
        return usage_error("--timeout \"%s\": must be a whole number of milliseconds, 1..600000",
                           v);
    } else if (a[0] == '-' && a[1] != '\0') {
      return usage_error("unknown option \"%s\"", a);
    } else if (url) {
      return usage_error("one URL only (also got \"%s\")", a);
    } else {
      url = a;
    }
  }
  if (!url) return usage_error("missing URL");

  qm_error_t err = {0};
  int rc = qm_http_get(url, timeout, NULL, 0, &err);
  if (rc == QM_EINVAL) {
    fprintf(stderr, "qmesh probe: %s\n", err.msg);
    return 2;
  }
  if (rc < 0) {
    if (!quiet) fprintf(stderr, "probe %s\n", err.msg);
    return 1;
  }
  if (rc < 200 || rc > 299) {
    if (!quiet) fprintf(stderr, "probe %s: HTTP %d\n", url, rc);
    return 1;
  }
  if (!quiet) printf("probe %s: HTTP %d\n", url, rc);
  return 0;
}
