/*
 * channel_webhook.c: a generic JSON webhook channel. A partner's system
 * POSTs its own JSON (a chat platform's "conversation closed" event, a CRM's
 * export) to a path on ingest's listener, and a field mapping written in the
 * configuration turns it into an interaction document (docs/protocol.md
 * section 9), so that connecting a new source needs no C.
 *
 * The mapping is a list of "target=source" entries: the target is a field of
 * the interaction document ("agent.id", "started_at", "turns"), the source a
 * JSON pointer (RFC 6901) into the posted object ("/agent/email"). The array
 * mapped to `turns` is mapped element by element with `turn_map` (pointers
 * relative to each element), and `speaker_values` translates the partner's
 * speaker names into agent/customer/bot/system. `started_at_format` converts
 * Unix times into RFC 3339. The whole mapping is checked at open(), so a typo
 * stops the service with a sentence instead of refusing every request.
 *
 * Like channel_chat_json it does not validate the document format (ingest
 * does and its reason goes back to the poster in the 400 answer), but it
 * reads hostile bodies safely: size limits before parsing, nesting deeper
 * than 64 levels refused by a scan before jansson recurses, invalid UTF-8
 * and duplicate keys refused by jansson. That reading code is shared with
 * channel_chat_json as plugins/common/json_input.c, compiled into each
 * plugin: each is built as a partner builds one, against the headers only.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include <qmesh/channel.h>

#include "json_input.h"

/* Tokens in one source pointer; deeper pointers could never match a
 * document that passed the nesting limit anyway. */
#define WH_MAX_TOKENS QMP_MAX_DEPTH

/* How a mapped value is carried into the document. */
typedef enum target_kind {
  TK_STRING, /* a string; an integer becomes its decimal text (partners' ids are often numbers) */
  TK_TIME,   /* converted per started_at_format */
  TK_TURNS,  /* an array, mapped element by element */
  TK_VALUE   /* copied as it is */
} target_kind_t;

typedef struct target_def {
  const char *name;
  target_kind_t kind;
  int required;
} target_def_t;

/* The document fields a mapping may fill. `channel` is not among them: it is
 * the configured channel's, not the poster's, to decide. */
static const target_def_t targets[] = {
  {"external_id", TK_STRING, 1}, {"tenant", TK_STRING, 0},    {"direction", TK_STRING, 0},
  {"queue", TK_STRING, 0},       {"agent.id", TK_STRING, 1},  {"agent.name", TK_STRING, 0},
  {"agent.team", TK_STRING, 0},  {"customer.id", TK_STRING, 0}, {"started_at", TK_TIME, 1},
  {"ended_at", TK_TIME, 0},      {"duration_ms", TK_VALUE, 0}, {"wrapup", TK_STRING, 0},
  {"language", TK_STRING, 0},    {"outcomes.csat", TK_VALUE, 0}, {"outcomes.nps", TK_VALUE, 0},
  {"outcomes.fcr", TK_VALUE, 0}, {"attributes", TK_VALUE, 0}, {"turns", TK_TURNS, 1},
  {NULL, TK_VALUE, 0},
};
static const char targets_valid[] =
  "external_id, tenant, direction, queue, agent.id, agent.name, agent.team, customer.id, started_at, ended_at, "
  "duration_ms, wrapup, language, outcomes.csat, outcomes.nps, outcomes.fcr, attributes, attributes.KEY, turns";

static const char *const turn_targets[] = {"speaker", "ts_ms", "text", NULL};
static const char *const speakers[] = {"agent", "customer", "bot", "system", NULL};

typedef enum time_format { TF_RFC3339, TF_UNIX_MS, TF_UNIX_S } time_format_t;

/* A parsed JSON pointer: its reference tokens, unescaped. */
typedef struct pointer {
  char *text; /* as configured, for messages */
  size_t n;
  char **tok;
} pointer_t;

typedef struct mapping {
  char *target;      /* "agent.id", "attributes.region" */
  target_kind_t kind;
  pointer_t src;
} mapping_t;

typedef struct speaker_value {
  char *from;
  const char *to; /* one of speakers[] */
} speaker_value_t;

typedef struct webhook {
  const qmesh_host_t *host;
  char *http_path;
  char *channel;
  char *tenant;
  time_format_t time_format;
  size_t max_doc, max_body;
  mapping_t *map;
  size_t nmap;
  pointer_t turn_src[3]; /* by turn_targets index; text is NULL when not mapped */
  int has_turn_map;
  speaker_value_t *sv;
  size_t nsv;
  int paused;
} webhook_t;

/* ---- pointers ---- */

static void pointer_free(pointer_t *p) {
  for (size_t i = 0; i < p->n && p->tok; i++) free(p->tok[i]);
  free(p->tok);
  free(p->text);
  memset(p, 0, sizeof *p);
}

/* Parses an RFC 6901 pointer: "" is the whole value, otherwise '/'-separated
 * tokens where "~0" is '~' and "~1" is '/'. Returns 0, -1 for bad syntax, -2
 * when out of memory. */
static int pointer_parse(const char *s, pointer_t *out) {
  memset(out, 0, sizeof *out);
  if (*s && *s != '/') return -1;
  size_t n = 0;
  for (const char *q = s; *q; q++)
    if (*q == '/') n++;
  if (n > WH_MAX_TOKENS) return -1;
  out->text = strdup(s);
  out->tok = calloc(n ? n : 1, sizeof *out->tok);
  if (!out->text || !out->tok) {
    pointer_free(out);
    return -2;
  }
  const char *q = s;
  while (*q == '/') {
    q++;
    size_t len = strcspn(q, "/");
    char *t = malloc(len + 1);
    if (!t) {
      pointer_free(out);
      return -2;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
      if (q[i] != '~') {
        t[o++] = q[i];
      } else if (i + 1 < len && (q[i + 1] == '0' || q[i + 1] == '1')) {
        t[o++] = q[i + 1] == '0' ? '~' : '/';
        i++;
      } else {
        free(t);
        pointer_free(out);
        return -1;
      }
    }
    t[o] = '\0';
    out->tok[out->n++] = t;
    q += len;
  }
  return 0;
}

/* The value the pointer designates inside v, or NULL. An array index is a
 * decimal number without leading zeros, as RFC 6901 says. */
static json_t *pointer_get(const pointer_t *p, json_t *v) {
  for (size_t i = 0; i < p->n && v; i++) {
    const char *t = p->tok[i];
    if (json_is_object(v)) {
      v = json_object_get(v, t);
    } else if (json_is_array(v)) {
      size_t len = strlen(t);
      if (!len || len > 18 || (len > 1 && t[0] == '0') || strspn(t, "0123456789") != len) return NULL;
      v = json_array_get(v, (size_t)strtoull(t, NULL, 10));
    } else {
      return NULL;
    }
  }
  return v;
}

/* ---- values ---- */

/* Writes a time in milliseconds since the epoch as RFC 3339 UTC, with
 * milliseconds only when there are some. */
static int format_time(long long ms_total, char *out, size_t outlen) {
  /* Year 9999 is the last RFC 3339 can write. */
  if (ms_total < 0 || ms_total > 253402300799999LL) return -1;
  time_t secs = (time_t)(ms_total / 1000);
  int ms = (int)(ms_total % 1000);
  struct tm tm;
  if (!gmtime_r(&secs, &tm)) return -1;
  size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!n) return -1;
  if (ms) snprintf(out + n, outlen - n, ".%03dZ", ms);
  else snprintf(out + n, outlen - n, "Z");
  return 0;
}

/* Converts a mapped time value into an RFC 3339 string per the configured
 * format. Returns a new reference or NULL with `why`. */
static json_t *convert_time(const webhook_t *w, const char *target, const pointer_t *src, json_t *v, char *why,
                            size_t whylen) {
  if (w->time_format == TF_RFC3339) return json_deep_copy(v);
  const char *unit = w->time_format == TF_UNIX_MS ? "unix_ms" : "unix_s";
  double scale = w->time_format == TF_UNIX_MS ? 1.0 : 1000.0;
  double x;
  if (json_is_integer(v)) {
    x = (double)json_integer_value(v);
  } else if (json_is_real(v)) {
    x = json_real_value(v);
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    x = strtod(s, &end);
    /* Digits and one optional fraction only: strtod alone would also take
     * "0x1f", "inf" and exponents, which no partner means as a time. */
    if (!*s || *end || errno || strspn(s, "0123456789.") != strlen(s)) x = NAN;
  } else {
    x = NAN;
  }
  x *= scale;
  char text[40];
  if (!isfinite(x) || x < 0 || x > 253402300799999.0 || format_time(llround(x), text, sizeof text) != 0) {
    snprintf(why, whylen, "%s: %s is not a %s time (started_at_format)", target, src->text, unit);
    return NULL;
  }
  return json_string(text);
}

static json_t *convert_string(json_t *v) {
  if (json_is_integer(v)) {
    char text[32];
    snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return json_string(text);
  }
  return json_deep_copy(v);
}

static const char *translate_speaker(const webhook_t *w, const char *s) {
  for (size_t i = 0; i < w->nsv; i++)
    if (strcasecmp(w->sv[i].from, s) == 0) return w->sv[i].to;
  return NULL;
}

/* Maps one element of the posted turns array. */
static json_t *map_turn(const webhook_t *w, json_t *el, size_t i, char *why, size_t whylen) {
  json_t *turn;
  if (!w->has_turn_map) {
    turn = json_deep_copy(el);
  } else {
    turn = json_object();
    for (int k = 0; turn && turn_targets[k]; k++) {
      json_t *v = pointer_get(&w->turn_src[k], el);
      if (!v || json_is_null(v)) {
        snprintf(why, whylen, "turns[%zu].%s: %s not found in the posted turn", i, turn_targets[k],
                 w->turn_src[k].text);
        json_decref(turn);
        return NULL;
      }
      json_object_set_new(turn, turn_targets[k], json_deep_copy(v));
    }
  }
  if (!turn) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  json_t *sp = json_object_get(turn, "speaker");
  if (json_is_string(sp)) {
    const char *to = translate_speaker(w, json_string_value(sp));
    if (to) json_object_set_new(turn, "speaker", json_string(to));
  }
  return turn;
}

static json_t *map_turns(const webhook_t *w, const pointer_t *src, json_t *v, char *why, size_t whylen) {
  if (!json_is_array(v)) {
    snprintf(why, whylen, "turns: %s is not an array", src->text);
    return NULL;
  }
  json_t *out = json_array();
  for (size_t i = 0; out && i < json_array_size(v); i++) {
    json_t *t = map_turn(w, json_array_get(v, i), i, why, whylen);
    if (!t) {
      json_decref(out);
      return NULL;
    }
    json_array_append_new(out, t);
  }
  if (!out) snprintf(why, whylen, "out of memory");
  return out;
}

/* Sets `value` at a dotted target ("agent.id": key "id" of object "agent",
 * created when missing; the part after the first dot is one key, so an
 * attribute's name may contain dots). Steals the reference. */
static int set_target(json_t *doc, const char *target, json_t *value) {
  const char *dot = strchr(target, '.');
  if (!dot) {
    /* Single attributes mapped before the whole `attributes` object keep
     * their values: the mapping's order must not matter. */
    json_t *had = json_object_get(doc, target);
    if (json_is_object(had) && json_is_object(value)) {
      int rc = json_object_update_missing(had, value);
      json_decref(value);
      return rc;
    }
    return json_object_set_new(doc, target, value);
  }
  char parent[32];
  size_t pl = (size_t)(dot - target);
  if (pl >= sizeof parent) {
    json_decref(value);
    return -1;
  }
  memcpy(parent, target, pl);
  parent[pl] = '\0';
  json_t *obj = json_object_get(doc, parent);
  if (!json_is_object(obj)) {
    /* A whole `attributes` object mapped as well as single attributes: the
     * single ones are added to it. Anything else there is replaced. */
    obj = json_object();
    if (json_object_set_new(doc, parent, obj) != 0) {
      json_decref(value);
      return -1;
    }
  }
  return json_object_set_new(obj, dot + 1, value);
}

/* Builds the interaction document from one posted payload. NULL with `why`
 * when a required source is missing or a value cannot be converted. */
static json_t *map_payload(const webhook_t *w, json_t *payload, char *why, size_t whylen) {
  if (!json_is_object(payload)) {
    snprintf(why, whylen, "expected a JSON object (one posted payload)");
    return NULL;
  }
  why[0] = '\0';
  json_t *doc = json_object();
  if (!doc || json_object_set_new(doc, "channel", json_string(w->channel)) != 0) goto nomem;
  for (size_t i = 0; i < w->nmap; i++) {
    const mapping_t *m = &w->map[i];
    json_t *v = pointer_get(&m->src, payload);
    if (!v || json_is_null(v)) {
      int required = 0;
      for (int k = 0; targets[k].name; k++)
        if (strcmp(targets[k].name, m->target) == 0) required = targets[k].required;
      if (required) {
        snprintf(why, whylen, "%s: %s not found in the posted object", m->target, m->src.text);
        json_decref(doc);
        return NULL;
      }
      continue;
    }
    json_t *out;
    switch (m->kind) {
    case TK_STRING: out = convert_string(v); break;
    case TK_TIME: out = convert_time(w, m->target, &m->src, v, why, whylen); break;
    case TK_TURNS: out = map_turns(w, &m->src, v, why, whylen); break;
    default: out = json_deep_copy(v); break;
    }
    if (!out) {
      json_decref(doc);
      if (!why[0]) snprintf(why, whylen, "out of memory");
      return NULL;
    }
    if (set_target(doc, m->target, out) != 0) goto nomem;
  }
  if (w->tenant && !json_object_get(doc, "tenant") && json_object_set_new(doc, "tenant", json_string(w->tenant)))
    goto nomem;
  return doc;
nomem:
  json_decref(doc);
  snprintf(why, whylen, "out of memory");
  return NULL;
}

/* Maps and submits one payload. Returns a QMESH_* code, `why` on refusal. */
static int submit_payload(const webhook_t *w, const qmesh_channel_ctx_t *ctx, json_t *payload, char *why,
                          size_t whylen) {
  json_t *doc = map_payload(w, payload, why, whylen);
  if (!doc) return strcmp(why, "out of memory") == 0 ? QMESH_NOMEM : QMESH_INVALID;
  int rc = qmp_submit_json(ctx, doc, w->max_doc, why, whylen);
  json_decref(doc);
  return rc;
}

static int submit_text(const webhook_t *w, const qmesh_channel_ctx_t *ctx, const char *p, size_t n, char *why,
                       size_t whylen) {
  if (n > w->max_doc) {
    snprintf(why, whylen, "payload of %zu bytes is larger than max_line_kb (%zu KiB)", n, w->max_doc / 1024);
    return QMESH_INVALID;
  }
  json_t *v = qmp_load_json(p, n, QMP_MAX_DEPTH, why, whylen);
  if (!v) return QMESH_INVALID;
  int rc = submit_payload(w, ctx, v, why, whylen);
  json_decref(v);
  return rc;
}

/* ---- one body: HTTP request or file ---- */

typedef struct outcome {
  int rc;          /* QMESH_OK or the code of the first payload not accepted */
  size_t accepted; /* payloads accepted, all before `index` */
  size_t index;    /* the payload refused */
  size_t line;     /* its line, for JSON Lines; 0 otherwise */
  char why[512];
} outcome_t;

/* Submits what a body holds: one payload, a JSON array of payloads, or (when
 * `lines`) JSON Lines. Stops at the first payload not accepted. */
static void intake(const webhook_t *w, const qmesh_channel_ctx_t *ctx, const char *body, size_t len, int lines,
                   outcome_t *o) {
  memset(o, 0, sizeof *o);
  if (lines) {
    size_t off = 0, lineno = 0, n;
    const char *p;
    while (qmp_next_line(body, len, &off, &p, &n)) {
      lineno++;
      if (qmp_is_blank(p, n)) continue;
      o->rc = submit_text(w, ctx, p, n, o->why, sizeof o->why);
      if (o->rc != QMESH_OK) {
        o->index = o->accepted;
        o->line = lineno;
        return;
      }
      o->accepted++;
    }
    if (!o->accepted) {
      o->rc = QMESH_INVALID;
      snprintf(o->why, sizeof o->why, "empty body");
    }
    return;
  }
  json_t *v = qmp_load_body(body, len, o->why, sizeof o->why);
  if (!v) {
    o->rc = QMESH_INVALID;
    return;
  }
  if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      o->rc = submit_payload(w, ctx, json_array_get(v, i), o->why, sizeof o->why);
      if (o->rc != QMESH_OK) {
        o->index = i;
        break;
      }
      o->accepted++;
    }
  } else {
    o->rc = submit_payload(w, ctx, v, o->why, sizeof o->why);
    if (o->rc == QMESH_OK) o->accepted = 1;
  }
  json_decref(v);
}

/* ---- HTTP ---- */

static int wh_http(void *state, const qmesh_channel_ctx_t *ctx, const qmesh_http_request_t *req, char *resp,
                   size_t cap) {
  webhook_t *w = state;
  int status = qmp_http_precheck(req, w->paused, w->max_body, resp, cap);
  if (status) return status;
  outcome_t o;
  intake(w, ctx, req->body ? req->body : "", req->body ? req->body_len : 0, qmp_is_ndjson(req->content_type), &o);
  if (o.rc == QMESH_OK) return qmp_reply_accepted(resp, cap, o.accepted);
  return qmp_reply_refused(resp, cap, o.rc, o.why, o.index);
}

/* ---- files ---- */

/* A file holds what one request body would: one payload, an array of them,
 * or JSON Lines when named .jsonl/.ndjson. It is read whole, up to
 * max_body_kb. */
static int wh_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  webhook_t *w = state;
  FILE *f = fopen(path, "rb");
  if (!f) {
    w->host->log(w->host, QMESH_LOG_WARN, "%s: cannot open: %s", path, strerror(errno));
    return QMESH_ERR;
  }
  char *buf;
  size_t n;
  int got = qmp_read_capped(f, w->max_body, &buf, &n);
  fclose(f);
  if (got == QMESH_NOMEM) return QMESH_NOMEM;
  if (got != 0) {
    if (got == QMP_READ_ERROR) w->host->log(w->host, QMESH_LOG_WARN, "%s: cannot read", path);
    else w->host->log(w->host, QMESH_LOG_WARN, "%s: larger than max_body_kb (%zu KiB)", path, w->max_body / 1024);
    return QMESH_ERR;
  }
  char *p = buf;
  qmp_skip_bom(&p, &n);
  outcome_t o;
  intake(w, ctx, p, n, qmp_is_jsonl_path(path), &o);
  free(buf);
  if (o.rc == QMESH_OK) return QMESH_OK;
  if (o.rc == QMESH_BUSY) {
    w->host->log(w->host, QMESH_LOG_INFO, "%s: ingest is busy, file to be retried", path);
    return QMESH_BUSY;
  }
  if (o.line) w->host->log(w->host, QMESH_LOG_WARN, "%s:%zu: %s", path, o.line, o.why);
  else w->host->log(w->host, QMESH_LOG_WARN, "%s: payload %zu: %s", path, o.index, o.why);
  return o.rc == QMESH_NOMEM ? QMESH_NOMEM : QMESH_ERR;
}

/* ---- configuration ---- */

static void wh_close(void *state) {
  webhook_t *w = state;
  if (!w) return;
  free(w->http_path);
  free(w->channel);
  free(w->tenant);
  for (size_t i = 0; i < w->nmap; i++) {
    free(w->map[i].target);
    pointer_free(&w->map[i].src);
  }
  free(w->map);
  for (int k = 0; k < 3; k++) pointer_free(&w->turn_src[k]);
  for (size_t i = 0; i < w->nsv; i++) free(w->sv[i].from);
  free(w->sv);
  free(w);
}

/* Copies s without the blanks around it. */
static char *trimmed(const char *s, size_t n) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  while (n && isspace((unsigned char)s[n - 1])) n--;
  return strndup(s, n);
}

/* Splits "target=source" into trimmed copies; -1 when there is no '='. */
static int split_entry(const char *item, char **left, char **right) {
  const char *eq = strchr(item, '=');
  *left = *right = NULL;
  if (!eq) return -1;
  *left = trimmed(item, (size_t)(eq - item));
  *right = trimmed(eq + 1, strlen(eq + 1));
  if (!*left || !*right) {
    free(*left);
    free(*right);
    *left = *right = NULL;
    return -2;
  }
  return 0;
}

/* An attribute key, as ingest accepts them: 1 to 64 bytes. */
static int valid_attribute_key(const char *k) { return *k && strlen(k) <= 64; }

static const target_def_t *find_target(const char *name) {
  for (int k = 0; targets[k].name; k++)
    if (strcmp(targets[k].name, name) == 0) return &targets[k];
  return NULL;
}

#define OPEN_FAIL(...)                                      \
  do {                                                      \
    host->log(host, QMESH_LOG_ERROR, __VA_ARGS__);          \
    rc = QMESH_ERR;                                         \
    goto out;                                               \
  } while (0)

static int load_map(webhook_t *w, const qmesh_host_t *host, const qmesh_settings_t *settings) {
  int rc = QMESH_OK;
  char *left = NULL, *right = NULL;
  size_t n = host->get_list_len(settings, "map");
  w->map = calloc(n ? n : 1, sizeof *w->map);
  if (!w->map) return QMESH_NOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *item = host->get_list_item(settings, "map", i);
    int s = split_entry(item ? item : "", &left, &right);
    if (s == -2) return QMESH_NOMEM;
    if (s != 0 || !*left)
      OPEN_FAIL("map[%zu]: \"%s\" is not target=source (e.g. \"agent.id=/agent/email\")", i, item ? item : "");
    const target_def_t *t = find_target(left);
    target_kind_t kind = t ? t->kind : TK_VALUE;
    if (!t && !(strncmp(left, "attributes.", 11) == 0 && valid_attribute_key(left + 11)))
      OPEN_FAIL("map[%zu]: unknown target \"%s\" (valid: %s)", i, left, targets_valid);
    for (size_t j = 0; j < w->nmap; j++)
      if (strcmp(w->map[j].target, left) == 0) OPEN_FAIL("map[%zu]: %s is mapped twice", i, left);
    mapping_t *m = &w->map[w->nmap];
    int p = pointer_parse(right, &m->src);
    if (p == -2) {
      rc = QMESH_NOMEM;
      goto out;
    }
    if (p != 0)
      OPEN_FAIL("map[%zu]: %s: source \"%s\" is not a JSON pointer (\"\" or /key/key..., with ~0 for '~' and ~1 "
                "for '/')",
                i, left, right);
    m->target = left;
    m->kind = kind;
    w->nmap++;
    left = NULL;
    free(right);
    right = NULL;
  }
  for (int k = 0; targets[k].name; k++) {
    if (!targets[k].required) continue;
    int found = 0;
    for (size_t j = 0; j < w->nmap && !found; j++) found = strcmp(w->map[j].target, targets[k].name) == 0;
    if (!found)
      OPEN_FAIL("map: no entry for %s (required: external_id, agent.id, started_at, turns)", targets[k].name);
  }
out:
  free(left);
  free(right);
  return rc;
}

static int load_turn_map(webhook_t *w, const qmesh_host_t *host, const qmesh_settings_t *settings) {
  int rc = QMESH_OK;
  char *left = NULL, *right = NULL;
  size_t n = host->get_list_len(settings, "turn_map");
  for (size_t i = 0; i < n; i++) {
    const char *item = host->get_list_item(settings, "turn_map", i);
    int s = split_entry(item ? item : "", &left, &right);
    if (s == -2) return QMESH_NOMEM;
    if (s != 0 || !*left)
      OPEN_FAIL("turn_map[%zu]: \"%s\" is not target=source (e.g. \"text=/body\")", i, item ? item : "");
    int k = 0;
    while (turn_targets[k] && strcmp(turn_targets[k], left) != 0) k++;
    if (!turn_targets[k]) OPEN_FAIL("turn_map[%zu]: unknown target \"%s\" (valid: speaker, ts_ms, text)", i, left);
    if (w->turn_src[k].text) OPEN_FAIL("turn_map[%zu]: %s is mapped twice", i, left);
    int p = pointer_parse(right, &w->turn_src[k]);
    if (p == -2) {
      rc = QMESH_NOMEM;
      goto out;
    }
    if (p != 0)
      OPEN_FAIL("turn_map[%zu]: %s: source \"%s\" is not a JSON pointer (\"\" or /key/key..., with ~0 for '~' and "
                "~1 for '/')",
                i, left, right);
    free(left);
    free(right);
    left = right = NULL;
  }
  w->has_turn_map = n > 0;
  for (int k = 0; n && turn_targets[k]; k++)
    if (!w->turn_src[k].text)
      OPEN_FAIL("turn_map: no entry for %s (a turn_map maps all of speaker, ts_ms, text)", turn_targets[k]);
out:
  free(left);
  free(right);
  return rc;
}

static int load_speakers(webhook_t *w, const qmesh_host_t *host, const qmesh_settings_t *settings) {
  int rc = QMESH_OK;
  char *left = NULL, *right = NULL;
  size_t n = host->get_list_len(settings, "speaker_values");
  for (size_t i = 0; i < n; i++) {
    const char *item = host->get_list_item(settings, "speaker_values", i);
    int s = split_entry(item ? item : "", &left, &right);
    if (s == -2) return QMESH_NOMEM;
    if (s != 0 || !*left || !*right)
      OPEN_FAIL("speaker_values[%zu]: \"%s\" is not speaker=value,value (e.g. \"agent=operator,staff\")", i,
                item ? item : "");
    int k = 0;
    while (speakers[k] && strcmp(speakers[k], left) != 0) k++;
    if (!speakers[k])
      OPEN_FAIL("speaker_values[%zu]: unknown speaker \"%s\" (valid: agent, customer, bot, system)", i, left);
    /* One entry per value, so a lookup is a flat scan. */
    for (char *save = NULL, *v = strtok_r(right, ",", &save); v; v = strtok_r(NULL, ",", &save)) {
      char *val = trimmed(v, strlen(v));
      if (!val) {
        rc = QMESH_NOMEM;
        goto out;
      }
      if (!*val) {
        free(val);
        continue;
      }
      if (translate_speaker(w, val)) {
        host->log(host, QMESH_LOG_ERROR, "speaker_values[%zu]: \"%s\" is listed twice", i, val);
        free(val);
        rc = QMESH_ERR;
        goto out;
      }
      speaker_value_t *grown = realloc(w->sv, (w->nsv + 1) * sizeof *grown);
      if (!grown) {
        free(val);
        rc = QMESH_NOMEM;
        goto out;
      }
      w->sv = grown;
      w->sv[w->nsv].from = val;
      w->sv[w->nsv].to = speakers[k];
      w->nsv++;
    }
    free(left);
    free(right);
    left = right = NULL;
  }
out:
  free(left);
  free(right);
  return rc;
}

static int wh_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **state) {
  webhook_t *w = calloc(1, sizeof *w);
  if (!w) return QMESH_NOMEM;
  w->host = host;
  int rc = QMESH_OK;
  const char *path = host->get_string(settings, "http_path");
  const char *channel = host->get_string(settings, "channel");
  const char *tenant = host->get_string(settings, "tenant");
  const char *fmt = host->get_string(settings, "started_at_format");
  if (!path || path[0] != '/') OPEN_FAIL("http_path: \"%s\" must be a path starting with '/'", path ? path : "");
  if (!fmt || strcmp(fmt, "rfc3339") == 0) w->time_format = TF_RFC3339;
  else if (strcmp(fmt, "unix_ms") == 0) w->time_format = TF_UNIX_MS;
  else if (strcmp(fmt, "unix_s") == 0) w->time_format = TF_UNIX_S;
  else OPEN_FAIL("started_at_format: \"%s\" is not a time format (valid: rfc3339, unix_ms, unix_s)", fmt);
  w->http_path = strdup(path);
  w->channel = strdup(channel && *channel ? channel : "webhook");
  w->tenant = tenant && *tenant ? strdup(tenant) : NULL;
  if (!w->http_path || !w->channel || (tenant && *tenant && !w->tenant)) {
    rc = QMESH_NOMEM;
    goto out;
  }
  if (qmp_kb_setting(host, settings, "max_line_kb", &w->max_doc) ||
      qmp_kb_setting(host, settings, "max_body_kb", &w->max_body)) {
    rc = QMESH_ERR;
    goto out;
  }
  if ((rc = load_map(w, host, settings)) != QMESH_OK) goto out;
  if ((rc = load_turn_map(w, host, settings)) != QMESH_OK) goto out;
  if ((rc = load_speakers(w, host, settings)) != QMESH_OK) goto out;
out:
  if (rc != QMESH_OK) {
    wh_close(w);
    return rc;
  }
  *state = w;
  return QMESH_OK;
}

/* ---- lifecycle ---- */

static int wh_start(void *state, const qmesh_channel_ctx_t *ctx) {
  webhook_t *w = state;
  w->paused = 0;
  return qmp_route_http(w->host, ctx, w->http_path, wh_http);
}

/* The core answers 503 itself while it applies backpressure; a request that
 * still reaches a paused plugin gets the same answer. */
static int wh_pause(void *state) {
  ((webhook_t *)state)->paused = 1;
  return QMESH_OK;
}

static int wh_resume(void *state) {
  ((webhook_t *)state)->paused = 0;
  return QMESH_OK;
}

static int wh_stop(void *state) {
  ((webhook_t *)state)->paused = 0;
  return QMESH_OK;
}

static const qmesh_setting_t wh_settings[] = {
  {"http_path", QMESH_SETTING_STRING, NULL, "path on ingest's listener the partner POSTs to, e.g. /v1/webhook/acme", 1},
  {"channel", QMESH_SETTING_STRING, "webhook", "channel of the documents", 0},
  {"tenant", QMESH_SETTING_STRING, NULL, "tenant when the mapping gives none", 0},
  {"map", QMESH_SETTING_STRING_LIST, NULL, "target=source: document field = JSON pointer into the posted object", 1},
  {"turn_map", QMESH_SETTING_STRING_LIST, "", "speaker=, ts_ms=, text= pointers into each element mapped to turns", 0},
  {"speaker_values", QMESH_SETTING_STRING_LIST, "", "speaker=value,value: the poster's speaker names", 0},
  {"started_at_format", QMESH_SETTING_STRING, "rfc3339", "times in the payload: rfc3339, unix_ms or unix_s", 0},
  {"max_line_kb", QMESH_SETTING_INT, "4096", "largest payload (one JSON Lines line or one document), KiB", 0},
  {"max_body_kb", QMESH_SETTING_INT, "8192", "largest HTTP request body or file, KiB (larger: 413)", 0},
  {0},
};

static const qmesh_channel_ops_t wh_ops = {
  .struct_size = sizeof wh_ops,
  .open = wh_open,
  .start = wh_start,
  .pause = wh_pause,
  .resume = wh_resume,
  .stop = wh_stop,
  .close = wh_close,
  .parse_file = wh_parse_file,
};

static const qmesh_plugin_t wh_plugin = {
  .struct_size = sizeof wh_plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "channel_webhook",
  .version = "1.0.0",
  .description = "partners' JSON posted over HTTP, mapped to interaction documents by configuration",
  .settings = wh_settings,
  .ops = &wh_ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &wh_plugin; }
