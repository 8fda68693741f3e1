/*
 * channel_chat_json.c: the chat channel plugin. Chat transcripts arrive as
 * interaction documents (docs/protocol.md section 9, with `turns`), either
 * as files in a spool directory the core watches for us (one document per
 * .json file, or JSON Lines in a .jsonl file) or POSTed to an HTTP path on
 * ingest's listener (one document, a JSON array of documents, or JSON Lines
 * with Content-Type application/x-ndjson).
 *
 * The plugin does not validate the document format: ingest does, and its
 * reason comes back through submit. What the plugin owns is reading hostile
 * input safely before anything is parsed: a document longer than
 * `max_line_kb` is refused without being read into memory whole, nesting
 * deeper than 64 levels is refused by a scan before jansson sees it (jansson
 * itself allows 2048 and recurses to get there), invalid UTF-8 and duplicate
 * keys are refused by jansson. It fills `channel` ("chat" unless configured),
 * `tenant` and `queue` from its settings when a document leaves them out.
 *
 * Built as a partner builds a plugin: against common/include only, linked
 * with jansson, never with qmesh_common. The safe reading it shares with
 * channel_webhook is plugins/common/json_input.c, compiled into the plugin.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <qmesh/channel.h>

#include "json_input.h"

typedef struct chat {
  const qmesh_host_t *host;
  char *channel;
  char *tenant;        /* NULL: leave tenant to ingest's default */
  char *default_queue; /* NULL: no queue unless the document has one */
  char *spool_dir;     /* NULL or "": no spool */
  char *http_path;     /* NULL or "": no HTTP route */
  size_t max_doc;      /* bytes: one .json file or one line of JSON Lines */
  size_t max_body;     /* bytes: one HTTP request body */
  int paused;
} chat_t;

/* ---- documents ---- */

/* Fills what the settings supply and the document leaves out. Returns 0, or
 * -1 with `why` when the value is not an object. */
static int fill_defaults(const chat_t *c, json_t *doc, char *why, size_t whylen) {
  if (!json_is_object(doc)) {
    snprintf(why, whylen, "expected a JSON object (an interaction document)");
    return -1;
  }
  if (!json_object_get(doc, "channel")) json_object_set_new(doc, "channel", json_string(c->channel));
  if (c->tenant && !json_object_get(doc, "tenant")) json_object_set_new(doc, "tenant", json_string(c->tenant));
  if (c->default_queue && !json_object_get(doc, "queue"))
    json_object_set_new(doc, "queue", json_string(c->default_queue));
  return 0;
}

/* Completes and submits one parsed document. Returns a QMESH_* code; on
 * QMESH_INVALID `why` says why. */
static int submit_doc(const chat_t *c, const qmesh_channel_ctx_t *ctx, json_t *doc, char *why, size_t whylen) {
  if (fill_defaults(c, doc, why, whylen) != 0) return QMESH_INVALID;
  return qmp_submit_json(ctx, doc, c->max_doc, why, whylen);
}

/* Parses and submits one document given as text. */
static int submit_text(const chat_t *c, const qmesh_channel_ctx_t *ctx, const char *p, size_t n, char *why,
                       size_t whylen) {
  if (n > c->max_doc) {
    snprintf(why, whylen, "document of %zu bytes is larger than max_line_kb (%zu KiB)", n, c->max_doc / 1024);
    return QMESH_INVALID;
  }
  json_t *doc = qmp_load_json(p, n, QMP_MAX_DEPTH, why, whylen);
  if (!doc) return QMESH_INVALID;
  int rc = submit_doc(c, ctx, doc, why, whylen);
  json_decref(doc);
  return rc;
}

/* ---- files ---- */

/* Reads one line into buf (at most cap bytes, without the newline). Returns
 * 1 for a line, 0 at the end of the file, -1 for a line longer than cap (the
 * rest of it is left unread: the file is refused at that line anyway), -2 on
 * a read error. */
static int read_line(FILE *f, char *buf, size_t cap, size_t *len) {
  size_t n = 0;
  int ch;
  while ((ch = getc_unlocked(f)) != EOF) {
    if (ch == '\n') {
      *len = n;
      return 1;
    }
    if (n == cap) return -1;
    buf[n++] = (char)ch;
  }
  if (ferror(f)) return -2;
  *len = n;
  return n ? 1 : 0;
}

static int parse_lines(chat_t *c, const char *path, FILE *f, const qmesh_channel_ctx_t *ctx) {
  char *line = malloc(c->max_doc ? c->max_doc : 1);
  if (!line) return QMESH_NOMEM;
  char why[512];
  size_t lineno = 0, n = 0, submitted = 0;
  int rc = QMESH_OK, got;
  while ((got = read_line(f, line, c->max_doc, &n)) == 1) {
    lineno++;
    char *p = line;
    /* A byte-order mark is tolerated at the start of the file only. */
    if (lineno == 1) qmp_skip_bom(&p, &n);
    if (n && p[n - 1] == '\r') n--;
    if (qmp_is_blank(p, n)) continue;
    rc = submit_text(c, ctx, p, n, why, sizeof why);
    if (rc != QMESH_OK) break;
    submitted++;
  }
  free(line);
  if (got == -1) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s:%zu: line longer than max_line_kb (%zu KiB)", path, lineno + 1,
                 c->max_doc / 1024);
    return QMESH_ERR;
  }
  if (got == -2) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s:%zu: cannot read: %s", path, lineno + 1, strerror(errno));
    return QMESH_ERR;
  }
  if (rc == QMESH_BUSY) {
    /* Nothing is lost: the core offers the file again, and what was already
     * accepted is recognised and not stored twice. */
    c->host->log(c->host, QMESH_LOG_INFO, "%s:%zu: ingest is busy, file to be retried", path, lineno);
    return QMESH_BUSY;
  }
  if (rc != QMESH_OK) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s:%zu: %s", path, lineno, why);
    return rc == QMESH_NOMEM ? QMESH_NOMEM : QMESH_ERR;
  }
  c->host->log(c->host, QMESH_LOG_DEBUG, "%s: %zu documents submitted", path, submitted);
  return QMESH_OK;
}

static int parse_single(chat_t *c, const char *path, FILE *f, const qmesh_channel_ctx_t *ctx) {
  char *buf;
  size_t n;
  int got = qmp_read_capped(f, c->max_doc, &buf, &n);
  if (got == QMESH_NOMEM) return QMESH_NOMEM;
  if (got == QMP_READ_ERROR) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s: cannot read: %s", path, strerror(errno));
    return QMESH_ERR;
  }
  if (got == QMP_TOO_LARGE) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s: larger than max_line_kb (%zu KiB)", path, c->max_doc / 1024);
    return QMESH_ERR;
  }
  char *p = buf;
  qmp_skip_bom(&p, &n);
  char why[512];
  int rc = submit_text(c, ctx, p, n, why, sizeof why);
  free(buf);
  if (rc == QMESH_BUSY) {
    c->host->log(c->host, QMESH_LOG_INFO, "%s: ingest is busy, file to be retried", path);
    return QMESH_BUSY;
  }
  if (rc != QMESH_OK) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s:1: %s", path, why);
    return rc == QMESH_NOMEM ? QMESH_NOMEM : QMESH_ERR;
  }
  return QMESH_OK;
}

static int chat_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  chat_t *c = state;
  FILE *f = fopen(path, "rb");
  if (!f) {
    c->host->log(c->host, QMESH_LOG_WARN, "%s: cannot open: %s", path, strerror(errno));
    return QMESH_ERR;
  }
  int rc = qmp_is_jsonl_path(path) ? parse_lines(c, path, f, ctx) : parse_single(c, path, f, ctx);
  fclose(f);
  return rc;
}

/* ---- HTTP ---- */

static int chat_http(void *state, const qmesh_channel_ctx_t *ctx, const qmesh_http_request_t *req, char *resp,
                     size_t cap) {
  chat_t *c = state;
  int status = qmp_http_precheck(req, c->paused, c->max_body, resp, cap);
  if (status) return status;
  const char *body = req->body ? req->body : "";
  size_t len = req->body ? req->body_len : 0;
  char why[512];
  size_t accepted = 0;

  if (qmp_is_ndjson(req->content_type)) {
    size_t off = 0, n;
    const char *p;
    while (qmp_next_line(body, len, &off, &p, &n)) {
      if (qmp_is_blank(p, n)) continue;
      int rc = submit_text(c, ctx, p, n, why, sizeof why);
      if (rc != QMESH_OK) return qmp_reply_refused(resp, cap, rc, why, accepted);
      accepted++;
    }
    if (!accepted) {
      qmp_put_error(resp, cap, "empty body", 0);
      return 400;
    }
    return qmp_reply_accepted(resp, cap, accepted);
  }

  json_t *v = qmp_load_body(body, len, why, sizeof why);
  if (!v) {
    qmp_put_error(resp, cap, why, 0);
    return 400;
  }
  if (json_is_array(v)) {
    status = 0;
    for (size_t i = 0; i < json_array_size(v) && !status; i++) {
      int rc = submit_doc(c, ctx, json_array_get(v, i), why, sizeof why);
      if (rc != QMESH_OK) status = qmp_reply_refused(resp, cap, rc, why, i);
      else accepted++;
    }
    if (!status) status = qmp_reply_accepted(resp, cap, accepted);
  } else {
    int rc = submit_doc(c, ctx, v, why, sizeof why);
    status = rc == QMESH_OK ? qmp_reply_accepted(resp, cap, 1) : qmp_reply_refused(resp, cap, rc, why, 0);
  }
  json_decref(v);
  return status;
}

/* ---- lifecycle ---- */

static void chat_close(void *state) {
  chat_t *c = state;
  if (!c) return;
  free(c->channel);
  free(c->tenant);
  free(c->default_queue);
  free(c->spool_dir);
  free(c->http_path);
  free(c);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static int chat_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **state) {
  chat_t *c = calloc(1, sizeof *c);
  if (!c) return QMESH_NOMEM;
  c->host = host;
  const char *channel = host->get_string(settings, "channel");
  const char *tenant = host->get_string(settings, "tenant");
  const char *queue = host->get_string(settings, "default_queue");
  const char *spool = host->get_string(settings, "spool_dir");
  const char *http_path = host->get_string(settings, "http_path");
  c->channel = strdup(channel && *channel ? channel : "chat");
  c->tenant = dup_or_null(tenant);
  c->default_queue = dup_or_null(queue);
  c->spool_dir = dup_or_null(spool);
  c->http_path = dup_or_null(http_path);
  if (!c->channel || (tenant && !c->tenant) || (queue && !c->default_queue) || (spool && !c->spool_dir) ||
      (http_path && !c->http_path)) {
    chat_close(c);
    return QMESH_NOMEM;
  }
  if (qmp_kb_setting(host, settings, "max_line_kb", &c->max_doc) ||
      qmp_kb_setting(host, settings, "max_body_kb", &c->max_body)) {
    chat_close(c);
    return QMESH_ERR;
  }
  if (c->http_path && c->http_path[0] && c->http_path[0] != '/') {
    host->log(host, QMESH_LOG_ERROR, "http_path: \"%s\" must start with '/' (or be \"\" for no HTTP intake)",
              c->http_path);
    chat_close(c);
    return QMESH_ERR;
  }
  *state = c;
  return QMESH_OK;
}

static int chat_start(void *state, const qmesh_channel_ctx_t *ctx) {
  chat_t *c = state;
  c->paused = 0;
  if (c->spool_dir && c->spool_dir[0]) {
    int rc = QMP_CTX_HAS(ctx, watch_dir) ? ctx->watch_dir(ctx, c->spool_dir, ".json,.jsonl") : QMESH_UNSUPPORTED;
    if (rc == QMESH_UNSUPPORTED) {
      c->host->log(c->host, QMESH_LOG_WARN, "spool_dir %s: this core does not watch directories; not watched",
                   c->spool_dir);
    } else if (rc != QMESH_OK) {
      c->host->log(c->host, QMESH_LOG_ERROR, "spool_dir %s: cannot watch it", c->spool_dir);
      return QMESH_ERR;
    }
  }
  if (c->http_path && c->http_path[0]) return qmp_route_http(c->host, ctx, c->http_path, chat_http);
  return QMESH_OK;
}

/* Intake is driven by the core (directory scans, HTTP requests), which stops
 * taking files while paused; the plugin answers requests that still reach it
 * with 503 so that nothing is offered while the outbox drains. */
static int chat_pause(void *state) {
  ((chat_t *)state)->paused = 1;
  return QMESH_OK;
}

static int chat_resume(void *state) {
  ((chat_t *)state)->paused = 0;
  return QMESH_OK;
}

static int chat_stop(void *state) {
  ((chat_t *)state)->paused = 0;
  return QMESH_OK;
}

static const qmesh_setting_t chat_settings[] = {
  {"spool_dir", QMESH_SETTING_STRING, NULL, "directory watched for .json and .jsonl files (unset: no spool)", 0},
  {"http_path", QMESH_SETTING_STRING, "/v1/interactions", "path on ingest's listener taking POSTed documents (\"\": none)", 0},
  {"channel", QMESH_SETTING_STRING, "chat", "channel of documents that do not name one", 0},
  {"tenant", QMESH_SETTING_STRING, NULL, "tenant of documents that do not name one", 0},
  {"default_queue", QMESH_SETTING_STRING, NULL, "queue of documents that do not name one", 0},
  {"max_line_kb", QMESH_SETTING_INT, "4096", "largest document (one .json file or one JSON Lines line), KiB", 0},
  {"max_body_kb", QMESH_SETTING_INT, "8192", "largest HTTP request body, KiB (larger: 413)", 0},
  {0},
};

static const qmesh_channel_ops_t chat_ops = {
  .struct_size = sizeof chat_ops,
  .open = chat_open,
  .start = chat_start,
  .pause = chat_pause,
  .resume = chat_resume,
  .stop = chat_stop,
  .close = chat_close,
  .parse_file = chat_parse_file,
};

static const qmesh_plugin_t chat_plugin = {
  .struct_size = sizeof chat_plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "channel_chat_json",
  .version = "1.0.0",
  .description = "chat transcripts as interaction documents: .json/.jsonl spool files and HTTP POST",
  .settings = chat_settings,
  .ops = &chat_ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &chat_plugin; }
