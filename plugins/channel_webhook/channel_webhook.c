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
 * and duplicate keys refused by jansson. The reading code is a copy of
 * channel_chat_json's because each plugin is built as a partner builds one,
 * self-contained against the headers.
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

#define WH_MAX_DEPTH 64
#define WH_MAX_KB (1024 * 1024)
/* Tokens in one source pointer; deeper pointers could never match a
 * document that passed the nesting limit anyway. */
#define WH_MAX_TOKENS WH_MAX_DEPTH

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

/* ---- safe JSON reading (as in channel_chat_json) ---- */

static int depth_exceeds(const char *p, size_t n, int limit) {
  int depth = 0, in_string = 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (in_string) {
      if (c == '\\') i++;
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

static int is_blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isspace((unsigned char)p[i])) return 0;
  return 1;
}

static json_t *load_json(const char *p, size_t n, int depth_limit, char *why, size_t whylen) {
  if (depth_exceeds(p, n, depth_limit)) {
    snprintf(why, whylen, "nesting deeper than %d levels", WH_MAX_DEPTH);
    return NULL;
  }
  json_error_t jerr;
  json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!v) snprintf(why, whylen, "invalid JSON at byte %d: %s", jerr.position, jerr.text);
  return v;
}

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
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (!text) {
    snprintf(why, whylen, "out of memory");
    return QMESH_NOMEM;
  }
  size_t len = strlen(text);
  int rc;
  if (len > w->max_doc) {
    snprintf(why, whylen, "document of %zu bytes is larger than max_line_kb (%zu KiB)", len, w->max_doc / 1024);
    rc = QMESH_INVALID;
  } else {
    why[0] = '\0';
    rc = ctx->submit(ctx, text, len, why, whylen);
    if (rc == QMESH_INVALID && !why[0]) snprintf(why, whylen, "refused by ingest");
  }
  free(text);
  return rc;
}

static int submit_text(const webhook_t *w, const qmesh_channel_ctx_t *ctx, const char *p, size_t n, char *why,
                       size_t whylen) {
  if (n > w->max_doc) {
    snprintf(why, whylen, "payload of %zu bytes is larger than max_line_kb (%zu KiB)", n, w->max_doc / 1024);
    return QMESH_INVALID;
  }
  json_t *v = load_json(p, n, WH_MAX_DEPTH, why, whylen);
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
    size_t off = 0, lineno = 0;
    while (off < len) {
      const char *nl = memchr(body + off, '\n', len - off);
      size_t n = nl ? (size_t)(nl - (body + off)) : len - off;
      const char *p = body + off;
      off += n + (nl ? 1 : 0);
      lineno++;
      if (n && p[n - 1] == '\r') n--;
      if (is_blank(p, n)) continue;
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
  size_t lead = 0;
  while (lead < len && isspace((unsigned char)body[lead])) lead++;
  if (lead == len) {
    o->rc = QMESH_INVALID;
    snprintf(o->why, sizeof o->why, "empty body");
    return;
  }
  int is_array = body[lead] == '[';
  json_t *v = load_json(body, len, WH_MAX_DEPTH + is_array, o->why, sizeof o->why);
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

/* Writes `{"error":"<msg>"}` or `{"error":"<msg>","index":N}`, escaping the
 * message and cutting it (never the JSON around it) to fit; bytes that are
 * not UTF-8 become '?', so the answer is always valid JSON. */
static void put_error(char *resp, size_t cap, const char *msg, long index) {
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
  size_t o = hl, room = cap - tl - 1;
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

static int is_ndjson(const char *content_type) {
  static const char *const types[] = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                                      "application/x-jsonlines", NULL};
  if (!content_type) return 0;
  while (*content_type == ' ') content_type++;
  size_t n = strcspn(content_type, "; ");
  for (int i = 0; types[i]; i++)
    if (strlen(types[i]) == n && strncasecmp(content_type, types[i], n) == 0) return 1;
  return 0;
}

static int wh_http(void *state, const qmesh_channel_ctx_t *ctx, const qmesh_http_request_t *req, char *resp,
                   size_t cap) {
  webhook_t *w = state;
  if (!req->method || strcmp(req->method, "POST") != 0) {
    put_error(resp, cap, "method not allowed (valid: POST)", -1);
    return 405;
  }
  if (w->paused) {
    snprintf(resp, cap, "{\"error\":\"busy\"}");
    return 503;
  }
  if (req->body_len > w->max_body) {
    char msg[96];
    snprintf(msg, sizeof msg, "body larger than max_body_kb (%zu KiB)", w->max_body / 1024);
    put_error(resp, cap, msg, -1);
    return 413;
  }
  outcome_t o;
  intake(w, ctx, req->body ? req->body : "", req->body ? req->body_len : 0, is_ndjson(req->content_type), &o);
  switch (o.rc) {
  case QMESH_OK: snprintf(resp, cap, "{\"accepted\":%zu}", o.accepted); return 202;
  case QMESH_BUSY: snprintf(resp, cap, "{\"error\":\"busy\"}"); return 503;
  case QMESH_INVALID: put_error(resp, cap, o.why, (long)o.index); return 400;
  default: put_error(resp, cap, o.rc == QMESH_NOMEM ? "out of memory" : "internal error", (long)o.index); return 500;
  }
}

/* ---- files ---- */

static int is_jsonl_path(const char *path) {
  size_t n = strlen(path);
  return (n >= 6 && strcasecmp(path + n - 6, ".jsonl") == 0) || (n >= 7 && strcasecmp(path + n - 7, ".ndjson") == 0);
}

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
  size_t cap = w->max_body + 1, n = 0, got;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return QMESH_NOMEM;
  }
  while (n < cap && (got = fread(buf + n, 1, cap - n, f)) > 0) n += got;
  int bad = ferror(f);
  fclose(f);
  if (bad || n > w->max_body) {
    if (bad) w->host->log(w->host, QMESH_LOG_WARN, "%s: cannot read", path);
    else w->host->log(w->host, QMESH_LOG_WARN, "%s: larger than max_body_kb (%zu KiB)", path, w->max_body / 1024);
    free(buf);
    return QMESH_ERR;
  }
  char *p = buf;
  if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
    p += 3;
    n -= 3;
  }
  outcome_t o;
  intake(w, ctx, p, n, is_jsonl_path(path), &o);
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

static int kb_setting(const qmesh_host_t *host, const qmesh_settings_t *settings, const char *name, size_t *out) {
  int64_t kb = host->get_int(settings, name);
  if (kb < 1 || kb > WH_MAX_KB) {
    host->log(host, QMESH_LOG_ERROR, "%s: %lld is out of range (valid: 1 to %d)", name, (long long)kb, WH_MAX_KB);
    return -1;
  }
  *out = (size_t)kb * 1024;
  return 0;
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
  if (kb_setting(host, settings, "max_line_kb", &w->max_doc) || kb_setting(host, settings, "max_body_kb", &w->max_body)) {
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

#define CTX_HAS(ctx, member)                                                                                    \
  ((ctx)->struct_size >= offsetof(qmesh_channel_ctx_t, member) + sizeof((ctx)->member) && (ctx)->member)

static int wh_start(void *state, const qmesh_channel_ctx_t *ctx) {
  webhook_t *w = state;
  w->paused = 0;
  int rc = CTX_HAS(ctx, http_route) ? ctx->http_route(ctx, "POST", w->http_path, wh_http) : QMESH_UNSUPPORTED;
  if (rc == QMESH_UNSUPPORTED) {
    w->host->log(w->host, QMESH_LOG_WARN, "http_path %s: this core has no HTTP listener for channels; not served",
                 w->http_path);
  } else if (rc != QMESH_OK) {
    w->host->log(w->host, QMESH_LOG_ERROR, "http_path %s: cannot route it", w->http_path);
    return QMESH_ERR;
  }
  return QMESH_OK;
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
