/*
 * json_input.c: the safe JSON reading and HTTP answers that channel_chat_json
 * and channel_webhook share (json_input.h). Compiled into each plugin, never
 * into qmesh_common: plugins are built against the partner headers only.
 */
#include "json_input.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- safe JSON reading ---- */

/* Whether the nesting of arrays and objects in `p` goes deeper than `limit`,
 * counting only brackets outside strings. The scan works on malformed input
 * too (it only counts), so it can run before the parser. */
static int depth_exceeds(const char *p, size_t n, int limit) {
  int depth = 0, in_string = 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (in_string) {
      if (c == '\\') i++; /* the escaped character cannot end the string */
      else if (c == '"') in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return 1;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return 0;
}

int qmp_is_blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isspace((unsigned char)p[i])) return 0;
  return 1;
}

json_t *qmp_load_json(const char *p, size_t n, int depth_limit, char *why, size_t whylen) {
  if (depth_exceeds(p, n, depth_limit)) {
    /* The limit a person can act on is the documents' own, also when an
     * array around them was allowed one level more. */
    snprintf(why, whylen, "nesting deeper than %d levels", QMP_MAX_DEPTH);
    return NULL;
  }
  json_error_t jerr;
  json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!v) snprintf(why, whylen, "invalid JSON at byte %d: %s", jerr.position, jerr.text);
  return v;
}

json_t *qmp_load_body(const char *body, size_t len, char *why, size_t whylen) {
  size_t lead = 0;
  while (lead < len && isspace((unsigned char)body[lead])) lead++;
  if (lead == len) {
    snprintf(why, whylen, "empty body");
    return NULL;
  }
  int is_array = body[lead] == '[';
  return qmp_load_json(body, len, QMP_MAX_DEPTH + is_array, why, whylen);
}

void qmp_skip_bom(char **p, size_t *n) {
  if (*n >= 3 && memcmp(*p, "\xEF\xBB\xBF", 3) == 0) {
    *p += 3;
    *n -= 3;
  }
}

int qmp_next_line(const char *body, size_t len, size_t *off, const char **line, size_t *n) {
  if (*off >= len) return 0;
  const char *p = body + *off;
  const char *nl = memchr(p, '\n', len - *off);
  size_t k = nl ? (size_t)(nl - p) : len - *off;
  *off += k + (nl ? 1 : 0);
  if (k && p[k - 1] == '\r') k--;
  *line = p;
  *n = k;
  return 1;
}

int qmp_is_jsonl_path(const char *path) {
  size_t n = strlen(path);
  return (n >= 6 && strcasecmp(path + n - 6, ".jsonl") == 0) || (n >= 7 && strcasecmp(path + n - 7, ".ndjson") == 0);
}

int qmp_is_ndjson(const char *content_type) {
  static const char *const types[] = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                                      "application/x-jsonlines", NULL};
  if (!content_type) return 0;
  while (*content_type == ' ') content_type++;
  size_t n = strcspn(content_type, "; ");
  for (int i = 0; types[i]; i++)
    if (strlen(types[i]) == n && strncasecmp(content_type, types[i], n) == 0) return 1;
  return 0;
}

int qmp_read_capped(FILE *f, size_t max, char **out, size_t *n) {
  size_t cap = max + 1, len = 0, got;
  *out = NULL;
  *n = 0;
  char *buf = malloc(cap);
  if (!buf) return QMESH_NOMEM;
  while (len < cap && (got = fread(buf + len, 1, cap - len, f)) > 0) len += got;
  if (ferror(f)) {
    int saved = errno; /* the caller reports it */
    free(buf);
    errno = saved;
    return QMP_READ_ERROR;
  }
  if (len > max) {
    free(buf);
    return QMP_TOO_LARGE;
  }
  *out = buf;
  *n = len;
  return 0;
}

/* ---- submitting ---- */

int qmp_submit_json(const qmesh_channel_ctx_t *ctx, json_t *doc, size_t max_doc, char *why, size_t whylen) {
  char *text = json_dumps(doc, JSON_COMPACT);
  if (!text) {
    snprintf(why, whylen, "out of memory");
    return QMESH_NOMEM;
  }
  size_t len = strlen(text);
  int rc;
  if (len > max_doc) {
    snprintf(why, whylen, "document of %zu bytes is larger than max_line_kb (%zu KiB)", len, max_doc / 1024);
    rc = QMESH_INVALID;
  } else {
    why[0] = '\0';
    rc = ctx->submit(ctx, text, len, why, whylen);
    if (rc == QMESH_INVALID && !why[0]) snprintf(why, whylen, "refused by ingest");
  }
  free(text);
  return rc;
}

/* ---- settings and start ---- */

int qmp_kb_setting(const qmesh_host_t *host, const qmesh_settings_t *settings, const char *name, size_t *out) {
  int64_t kb = host->get_int(settings, name);
  if (kb < 1 || kb > QMP_MAX_KB) {
    host->log(host, QMESH_LOG_ERROR, "%s: %lld is out of range (valid: 1 to %d)", name, (long long)kb, QMP_MAX_KB);
    return -1;
  }
  *out = (size_t)kb * 1024;
  return 0;
}

int qmp_route_http(const qmesh_host_t *host, const qmesh_channel_ctx_t *ctx, const char *path,
                   qmesh_http_handler_fn fn) {
  int rc = QMP_CTX_HAS(ctx, http_route) ? ctx->http_route(ctx, "POST", path, fn) : QMESH_UNSUPPORTED;
  if (rc == QMESH_UNSUPPORTED) {
    host->log(host, QMESH_LOG_WARN, "http_path %s: this core has no HTTP listener for channels; not served", path);
  } else if (rc != QMESH_OK) {
    host->log(host, QMESH_LOG_ERROR, "http_path %s: cannot route it", path);
    return QMESH_ERR;
  }
  return QMESH_OK;
}

/* ---- HTTP answers ---- */

void qmp_put_error(char *resp, size_t cap, const char *msg, long index) {
  char tail[48];
  if (index >= 0) snprintf(tail, sizeof tail, "\",\"index\":%ld}", index);
  else snprintf(tail, sizeof tail, "\"}");
  static const char head[] = "{\"error\":\"";
  size_t tl = strlen(tail), hl = sizeof head - 1;
  if (cap < hl + tl + 1) {
    if (cap) resp[0] = '\0';
    return;
  }
  memcpy(resp, head, hl);
  size_t o = hl, room = cap - tl - 1; /* o may grow up to room */
  const unsigned char *s = (const unsigned char *)msg;
  while (*s) {
    char esc[8];
    size_t el, adv = 1;
    unsigned char b = *s;
    if (b == '"' || b == '\\') {
      esc[0] = '\\';
      esc[1] = (char)b;
      el = 2;
    } else if (b < 0x20) {
      el = (size_t)snprintf(esc, sizeof esc, "\\u%04x", b);
    } else if (b < 0x80) {
      esc[0] = (char)b;
      el = 1;
    } else {
      size_t need = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 0;
      size_t k = 1;
      while (need && k < need && (s[k] & 0xC0) == 0x80) k++;
      if (need && k == need) {
        memcpy(esc, s, need);
        el = adv = need;
      } else {
        esc[0] = '?';
        el = 1;
      }
    }
    if (o + el > room) break;
    memcpy(resp + o, esc, el);
    o += el;
    s += adv;
  }
  memcpy(resp + o, tail, tl + 1);
}

int qmp_reply_accepted(char *resp, size_t cap, size_t n) {
  snprintf(resp, cap, "{\"accepted\":%zu}", n);
  return 202;
}

int qmp_reply_busy(char *resp, size_t cap) {
  snprintf(resp, cap, "{\"error\":\"busy\"}");
  return 503;
}

int qmp_reply_refused(char *resp, size_t cap, int rc, const char *why, size_t index) {
  if (rc == QMESH_BUSY) return qmp_reply_busy(resp, cap);
  if (rc == QMESH_INVALID) {
    qmp_put_error(resp, cap, why, (long)index);
    return 400;
  }
  qmp_put_error(resp, cap, rc == QMESH_NOMEM ? "out of memory" : "internal error", (long)index);
  return 500;
}

int qmp_http_precheck(const qmesh_http_request_t *req, int paused, size_t max_body, char *resp, size_t cap) {
  if (!req->method || strcmp(req->method, "POST") != 0) {
    qmp_put_error(resp, cap, "method not allowed (valid: POST)", -1);
    return 405;
  }
  if (paused) return qmp_reply_busy(resp, cap);
  if (req->body_len > max_body) {
    char msg[96];
    snprintf(msg, sizeof msg, "body larger than max_body_kb (%zu KiB)", max_body / 1024);
    qmp_put_error(resp, cap, msg, -1);
    return 413;
  }
  return 0;
}
