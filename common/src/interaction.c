/*
 * interaction.c: validation and normalization of interaction documents
 * (docs/protocol.md section 9; interface in interaction.h).
 *
 * The input is parsed with jansson (which refuses invalid UTF-8, duplicate
 * keys with JSON_REJECT_DUPLICATES, and nesting past its own depth limit),
 * then every field is checked and copied into a fresh document in a fixed
 * order, so what is stored and hashed never carries anything unchecked.
 */
#include "interaction.h"

#include <ctype.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cfgutil.h"
#include "envelope.h"

#define DOC_MAX_DEFAULT (4u << 20)
#define TEXT_MAX (64u << 10)
#define TURNS_MAX 20000
#define MESSAGES_MAX 2000
#define ATTR_MAX 64

typedef struct ctx {
  qm_error_t *err;
  uint64_t now_ms;
} ctx_t;

static int fail(ctx_t *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(ctx_t *c, const char *path, const char *fmt, ...) {
  char what[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qm_error_set(c->err, QM_EINVAL, "%s: %s", path, what);
}

static const char *kind_of(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "something else";
}

/* Refuses keys of `obj` outside `allowed` (NULL-terminated). */
static int only_keys(ctx_t *c, const char *path, const json_t *obj, const char *const *allowed) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    int ok = 0;
    for (size_t i = 0; allowed[i] && !ok; i++) ok = strcmp(k, allowed[i]) == 0;
    if (!ok) {
      char list[400];
      qm__join_names(list, sizeof list, allowed, SIZE_MAX);
      char p[300];
      snprintf(p, sizeof p, "%s%s%s", path, *path ? "." : "", k);
      return fail(c, p, "unknown field (valid: %s)", list);
    }
  }
  return 0;
}

static void sub(char *out, size_t n, const char *path, const char *key) {
  snprintf(out, n, "%s%s%s", path, *path ? "." : "", key);
}

/* A string field: present (when required), a string, 1..max bytes, and
 * (when `charset` is given) only of those characters. Copies it into dst. */
static int str_field(ctx_t *c, const char *path, const json_t *obj, const char *key, int required,
                     size_t min, size_t max, const char *charset, json_t *dst, const char **out) {
  char p[300];
  sub(p, sizeof p, path, key);
  json_t *v = json_object_get(obj, key);
  if (out) *out = NULL;
  if (!v) return required ? fail(c, p, "required field missing") : 0;
  if (!json_is_string(v)) return fail(c, p, "must be a string (got %s)", kind_of(v));
  size_t n = json_string_length(v);
  if (n < min || n > max) return fail(c, p, "must be %zu to %zu bytes (got %zu)", min, max, n);
  const char *s = json_string_value(v);
  if (strlen(s) != n) return fail(c, p, "must not contain NUL characters");
  if (charset)
    for (size_t i = 0; i < n; i++)
      if (!strchr(charset, s[i])) return fail(c, p, "character '%c' is not allowed", s[i]);
  if (dst) json_object_set_new(dst, key, json_stringn(s, n));
  if (out) *out = json_string_value(json_object_get(dst ? dst : obj, key));
  return 0;
}

static int one_of(ctx_t *c, const char *path, const char *s, const char *const *vals) {
  for (size_t i = 0; vals[i]; i++)
    if (strcmp(s, vals[i]) == 0) return 0;
  char list[200];
  qm__join_names(list, sizeof list, vals, SIZE_MAX);
  return fail(c, path, "\"%s\" is not one of %s", s, list);
}

static int int_field(ctx_t *c, const char *path, const json_t *obj, const char *key, int required,
                     json_int_t min, json_int_t max, json_t *dst, json_int_t *out) {
  char p[300];
  sub(p, sizeof p, path, key);
  json_t *v = json_object_get(obj, key);
  if (!v) return required ? fail(c, p, "required field missing") : 0;
  if (!json_is_integer(v)) return fail(c, p, "must be an integer (got %s)", kind_of(v));
  json_int_t n = json_integer_value(v);
  if (n < min || n > max)
    return fail(c, p, "must be between %lld and %lld (got %lld)", (long long)min, (long long)max,
                (long long)n);
  if (dst) json_object_set_new(dst, key, json_integer(n));
  if (out) *out = n;
  return 0;
}

/* RFC 3339 with a 'Z' or numeric offset and optional fraction; returns
 * milliseconds since the epoch in *ms, or -1. */
static int parse_time(const char *s, int64_t *ms) {
  int Y, M, D, h, m, sec, n = 0;
  if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 || n != 19)
    return -1;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
  const char *p = s + 19;
  int64_t frac_ms = 0;
  if (*p == '.') {
    p++;
    int digits = 0;
    int64_t scale = 100;
    while (isdigit((unsigned char)*p)) {
      if (digits < 3) frac_ms += (*p - '0') * scale, scale /= 10;
      digits++;
      p++;
    }
    if (!digits || digits > 9) return -1;
  }
  int offset_min = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, k = 0;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59) return -1;
    offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
    p += 6;
  } else {
    return -1;
  }
  if (*p) return -1;
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
  if (D > mdays[M - 1] || (M == 2 && D == 29 && !leap)) return -1;
  struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m,
                  .tm_sec = sec > 59 ? 59 : sec};
  int64_t t = (int64_t)timegm(&tm);
  *ms = (t - (int64_t)offset_min * 60) * 1000 + frac_ms;
  return 0;
}

json_t *qm_time_json(int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (ms % 1000) snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
  else snprintf(buf + n, sizeof buf - n, "Z");
  return json_string(buf);
}

static int time_field(ctx_t *c, const char *path, const json_t *obj, const char *key, int required,
                      json_t *dst, int64_t *out, int *present) {
  char p[300];
  sub(p, sizeof p, path, key);
  json_t *v = json_object_get(obj, key);
  *present = 0;
  if (!v) return required ? fail(c, p, "required field missing") : 0;
  if (!json_is_string(v)) return fail(c, p, "must be an RFC 3339 time string (got %s)", kind_of(v));
  int64_t ms;
  if (parse_time(json_string_value(v), &ms) != 0)
    return fail(c, p, "\"%.40s\" is not an RFC 3339 time (e.g. 2026-11-20T14:03:11Z)",
                json_string_value(v));
  if (ms < 631152000000LL) return fail(c, p, "is before 1990");
  if (ms > (int64_t)c->now_ms + 86400000LL) return fail(c, p, "is more than a day in the future");
  if (dst) json_object_set_new(dst, key, qm_time_json(ms));
  *out = ms;
  *present = 1;
  return 0;
}

static const char *const speakers[] = {"agent", "customer", "bot", "system", NULL};
static const char *const layout_sides[] = {"left", "right", NULL};

static int check_turns(ctx_t *c, const char *path, const json_t *arr, json_t **out) {
  if (!json_is_array(arr)) return fail(c, path, "must be an array (got %s)", kind_of(arr));
  size_t n = json_array_size(arr);
  if (n == 0) return fail(c, path, "must hold at least one turn");
  if (n > TURNS_MAX) return fail(c, path, "more than %d turns", TURNS_MAX);
  static const char *const keys[] = {"speaker", "ts_ms", "text", NULL};
  json_t *res = json_array();
  json_int_t last = 0;
  for (size_t i = 0; i < n; i++) {
    char p[300];
    snprintf(p, sizeof p, "%s[%zu]", path, i);
    json_t *t = json_array_get(arr, i), *o = json_object();
    const char *speaker;
    json_int_t ts = 0;
    int rc = json_is_object(t) ? 0 : fail(c, p, "must be an object (got %s)", kind_of(t));
    if (!rc) rc = only_keys(c, p, t, keys);
    if (!rc) rc = str_field(c, p, t, "speaker", 1, 1, 16, NULL, o, &speaker);
    if (!rc) {
      char sp[320];
      sub(sp, sizeof sp, p, "speaker");
      rc = one_of(c, sp, speaker, speakers);
    }
    if (!rc) rc = int_field(c, p, t, "ts_ms", 1, 0, 7LL * 86400000, o, &ts);
    if (!rc && ts < last) {
      char sp[320];
      sub(sp, sizeof sp, p, "ts_ms");
      rc = fail(c, sp, "goes back in time (%lld after %lld)", (long long)ts, (long long)last);
    }
    if (!rc) rc = str_field(c, p, t, "text", 1, 0, TEXT_MAX, NULL, o, NULL);
    if (rc) {
      json_decref(o);
      json_decref(res);
      return rc;
    }
    last = ts;
    json_array_append_new(res, o);
  }
  *out = res;
  return 0;
}

static int check_str_array(ctx_t *c, const char *path, const json_t *obj, const char *key,
                           int required, json_t *dst) {
  char p[300];
  sub(p, sizeof p, path, key);
  json_t *v = json_object_get(obj, key);
  if (!v) return required ? fail(c, p, "required field missing") : 0;
  if (!json_is_array(v)) return fail(c, p, "must be an array of strings (got %s)", kind_of(v));
  if (json_array_size(v) > 500) return fail(c, p, "more than 500 entries");
  json_t *a = json_array();
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *e = json_array_get(v, i);
    if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 512) {
      json_decref(a);
      char q[320];
      snprintf(q, sizeof q, "%s[%zu]", p, i);
      return fail(c, q, "must be a non-empty string of at most 512 bytes");
    }
    json_array_append(a, e);
  }
  json_object_set_new(dst, key, a);
  return 0;
}

static int check_email(ctx_t *c, const json_t *em, json_t **out, int64_t *first_ms) {
  const char *path = "email";
  if (!json_is_object(em)) return fail(c, path, "must be an object (got %s)", kind_of(em));
  static const char *const keys[] = {"subject", "messages", NULL};
  static const char *const mkeys[] = {"message_id", "in_reply_to", "from", "to", "cc", "date",
                                      "speaker", "text", "attachments", NULL};
  static const char *const akeys[] = {"filename", "content_type", "size", NULL};
  int rc = only_keys(c, path, em, keys);
  json_t *o = json_object();
  if (!rc) rc = str_field(c, path, em, "subject", 0, 0, 1000, NULL, o, NULL);
  json_t *msgs = json_object_get(em, "messages");
  if (!rc && !msgs) rc = fail(c, "email.messages", "required field missing");
  if (!rc && (!json_is_array(msgs) || json_array_size(msgs) == 0))
    rc = fail(c, "email.messages", "must be a non-empty array");
  if (!rc && json_array_size(msgs) > MESSAGES_MAX)
    rc = fail(c, "email.messages", "more than %d messages", MESSAGES_MAX);
  json_t *res = json_array();
  *first_ms = INT64_MAX;
  for (size_t i = 0; !rc && i < json_array_size(msgs); i++) {
    char p[300];
    snprintf(p, sizeof p, "email.messages[%zu]", i);
    json_t *m = json_array_get(msgs, i), *mo = json_object();
    json_array_append_new(res, mo);
    const char *speaker;
    int64_t ms;
    int present;
    rc = json_is_object(m) ? 0 : fail(c, p, "must be an object (got %s)", kind_of(m));
    if (!rc) rc = only_keys(c, p, m, mkeys);
    if (!rc) rc = str_field(c, p, m, "message_id", 1, 1, 998, NULL, mo, NULL);
    if (!rc) rc = str_field(c, p, m, "in_reply_to", 0, 1, 998, NULL, mo, NULL);
    if (!rc) rc = str_field(c, p, m, "from", 1, 1, 512, NULL, mo, NULL);
    if (!rc) rc = check_str_array(c, p, m, "to", 1, mo);
    if (!rc) rc = check_str_array(c, p, m, "cc", 0, mo);
    if (!rc) rc = time_field(c, p, m, "date", 1, mo, &ms, &present);
    if (!rc && ms < *first_ms) *first_ms = ms;
    if (!rc) rc = str_field(c, p, m, "speaker", 1, 1, 16, NULL, mo, &speaker);
    if (!rc) {
      char sp[320];
      sub(sp, sizeof sp, p, "speaker");
      rc = one_of(c, sp, speaker, speakers);
    }
    if (!rc) rc = str_field(c, p, m, "text", 1, 0, 1u << 20, NULL, mo, NULL);
    json_t *atts = json_object_get(m, "attachments");
    if (!rc && atts) {
      char ap[320];
      sub(ap, sizeof ap, p, "attachments");
      if (!json_is_array(atts) || json_array_size(atts) > 200) {
        rc = fail(c, ap, "must be an array of at most 200 attachments");
      } else {
        json_t *ares = json_array();
        json_object_set_new(mo, "attachments", ares);
        for (size_t k = 0; !rc && k < json_array_size(atts); k++) {
          char q[340];
          snprintf(q, sizeof q, "%s[%zu]", ap, k);
          json_t *a = json_array_get(atts, k), *ao = json_object();
          json_array_append_new(ares, ao);
          rc = json_is_object(a) ? 0 : fail(c, q, "must be an object");
          if (!rc) rc = only_keys(c, q, a, akeys);
          if (!rc) rc = str_field(c, q, a, "filename", 0, 0, 512, NULL, ao, NULL);
          if (!rc) rc = str_field(c, q, a, "content_type", 1, 1, 255, NULL, ao, NULL);
          if (!rc) rc = int_field(c, q, a, "size", 1, 0, (json_int_t)1 << 40, ao, NULL);
        }
      }
    }
  }
  if (rc) {
    json_decref(o);
    json_decref(res);
    return rc;
  }
  json_object_set_new(o, "messages", res);
  *out = o;
  return 0;
}

static int check_media(ctx_t *c, const json_t *md, json_t **out) {
  const char *path = "media";
  if (!json_is_object(md)) return fail(c, path, "must be an object (got %s)", kind_of(md));
  static const char *const keys[] = {"ref", "format", "sample_rate", "channels", "duration_ms",
                                     "layout", "transcript", NULL};
  json_t *o = json_object();
  const char *ref;
  json_int_t channels = 0;
  int rc = only_keys(c, path, md, keys);
  if (!rc) rc = str_field(c, path, md, "ref", 1, 71, 71, NULL, o, &ref);
  if (!rc && strncmp(ref, "sha256:", 7) != 0) rc = fail(c, "media.ref", "must be sha256:<64 hex>");
  for (int i = 7; !rc && i < 71; i++)
    if (!isxdigit((unsigned char)ref[i]) || isupper((unsigned char)ref[i]))
      rc = fail(c, "media.ref", "must be sha256:<64 lowercase hex>");
  if (!rc) rc = str_field(c, path, md, "format", 1, 1, 32, NULL, o, NULL);
  if (!rc) rc = int_field(c, path, md, "sample_rate", 1, 1000, 384000, o, NULL);
  if (!rc) rc = int_field(c, path, md, "channels", 1, 1, 2, o, &channels);
  if (!rc) rc = int_field(c, path, md, "duration_ms", 1, 0, 7LL * 86400000, o, NULL);
  json_t *lay = json_object_get(md, "layout");
  if (!rc && channels == 2 && !lay)
    rc = fail(c, "media.layout", "required for stereo audio (which channel is the agent)");
  if (!rc && lay) {
    static const char *const lkeys[] = {"agent", "customer", NULL};
    const char *a = NULL, *cu = NULL;
    json_t *lo = json_object();
    json_object_set_new(o, "layout", lo);
    rc = json_is_object(lay) ? 0 : fail(c, "media.layout", "must be an object");
    if (!rc) rc = only_keys(c, "media.layout", lay, lkeys);
    if (!rc) rc = str_field(c, "media.layout", lay, "agent", 1, 1, 8, NULL, lo, &a);
    if (!rc) rc = one_of(c, "media.layout.agent", a, layout_sides);
    if (!rc) rc = str_field(c, "media.layout", lay, "customer", 1, 1, 8, NULL, lo, &cu);
    if (!rc) rc = one_of(c, "media.layout.customer", cu, layout_sides);
    if (!rc && strcmp(a, cu) == 0)
      rc = fail(c, "media.layout", "agent and customer are on the same channel");
  }
  json_t *tr = json_object_get(md, "transcript");
  if (!rc && tr) {
    json_t *turns;
    rc = check_turns(c, "media.transcript", tr, &turns);
    if (!rc) json_object_set_new(o, "transcript", turns);
  }
  if (rc) {
    json_decref(o);
    return rc;
  }
  *out = o;
  return 0;
}

static int normalize(ctx_t *c, const json_t *in, const qm_interaction_opts_t *opts, json_t *o,
                     qm_interaction_t *ix) {
  static const char *const keys[] = {"channel", "external_id", "tenant", "direction", "queue",
                                     "agent", "customer", "started_at", "ended_at",
                                     "duration_ms", "wrapup", "language", "outcomes",
                                     "attributes", "turns", "email", "media", NULL};
  static const char *const directions[] = {"inbound", "outbound", "internal", NULL};
  const char *channel, *external_id, *tenant, *direction;
  int rc = json_is_object(in) ? 0 : fail(c, "(document)", "must be a JSON object (got %s)", kind_of(in));
  if (!rc) rc = only_keys(c, "", in, keys);
  if (!rc) rc = str_field(c, "", in, "channel", 1, 1, 32, "abcdefghijklmnopqrstuvwxyz0123456789_", o, &channel);
  if (!rc && !islower((unsigned char)channel[0])) rc = fail(c, "channel", "must start with a letter");
  if (!rc) rc = str_field(c, "", in, "external_id", 1, 1, 256, NULL, o, &external_id);
  if (!rc && !json_object_get(in, "tenant")) json_object_set_new(o, "tenant", json_string("default"));
  if (!rc) rc = str_field(c, "", in, "tenant", 0, 1, 64,
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", o, NULL);
  tenant = json_string_value(json_object_get(o, "tenant"));
  if (!rc && !json_object_get(in, "direction")) json_object_set_new(o, "direction", json_string("inbound"));
  if (!rc) rc = str_field(c, "", in, "direction", 0, 1, 16, NULL, o, NULL);
  direction = json_string_value(json_object_get(o, "direction"));
  if (!rc) rc = one_of(c, "direction", direction, directions);
  if (!rc) rc = str_field(c, "", in, "queue", 0, 0, 128, NULL, o, NULL);
  /* agent */
  json_t *agent = json_object_get(in, "agent");
  if (!rc && !agent) rc = fail(c, "agent", "required field missing");
  if (!rc && !json_is_object(agent)) rc = fail(c, "agent", "must be an object (got %s)", kind_of(agent));
  if (!rc) {
    static const char *const akeys[] = {"id", "name", "team", NULL};
    json_t *ao = json_object();
    json_object_set_new(o, "agent", ao);
    rc = only_keys(c, "agent", agent, akeys);
    if (!rc) rc = str_field(c, "agent", agent, "id", 1, 1, 128, NULL, ao, NULL);
    if (!rc) rc = str_field(c, "agent", agent, "name", 0, 0, 256, NULL, ao, NULL);
    if (!rc) rc = str_field(c, "agent", agent, "team", 0, 0, 128, NULL, ao, NULL);
  }
  /* customer: only a keyed hash of the id is kept */
  json_t *cust = json_object_get(in, "customer");
  if (!rc && cust) {
    static const char *const ckeys[] = {"id", "name", NULL};
    const char *cid;
    json_t *tmp = json_object();
    rc = json_is_object(cust) ? 0 : fail(c, "customer", "must be an object (got %s)", kind_of(cust));
    if (!rc) rc = only_keys(c, "customer", cust, ckeys);
    if (!rc) rc = str_field(c, "customer", cust, "id", 0, 1, 256, NULL, tmp, &cid);
    if (!rc) rc = str_field(c, "customer", cust, "name", 0, 0, 256, NULL, NULL, NULL);
    if (!rc && cid) {
      uint8_t h[16];
      char hx[33];
      crypto_generichash(h, sizeof h, (const uint8_t *)cid, strlen(cid), opts->customer_hash_key,
                         opts->customer_hash_key ? 32 : 0);
      sodium_bin2hex(hx, sizeof hx, h, sizeof h);
      json_object_set_new(o, "customer", json_pack("{s:s}", "id_hash", hx));
    }
    json_decref(tmp);
  }
  /* times */
  int64_t start = 0, end = 0;
  int has_start = 0, has_end = 0;
  json_int_t dur = -1;
  if (!rc) rc = time_field(c, "", in, "started_at", 1, o, &start, &has_start);
  if (!rc) rc = time_field(c, "", in, "ended_at", 0, o, &end, &has_end);
  if (!rc && has_end && end < start) rc = fail(c, "ended_at", "is before started_at");
  if (!rc) rc = int_field(c, "", in, "duration_ms", 0, 0, 7LL * 86400000, o, &dur);
  if (!rc && dur < 0 && has_end) json_object_set_new(o, "duration_ms", json_integer(end - start));
  if (!rc) rc = str_field(c, "", in, "wrapup", 0, 0, 128, NULL, o, NULL);
  if (!rc && !json_object_get(in, "language")) json_object_set_new(o, "language", json_string("en"));
  if (!rc) rc = str_field(c, "", in, "language", 0, 2, 35,
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-", o, NULL);
  /* outcomes */
  json_t *oc = json_object_get(in, "outcomes");
  if (!rc && oc) {
    static const char *const okeys[] = {"csat", "nps", "fcr", NULL};
    json_t *oo = json_object();
    json_object_set_new(o, "outcomes", oo);
    rc = json_is_object(oc) ? 0 : fail(c, "outcomes", "must be an object (got %s)", kind_of(oc));
    if (!rc) rc = only_keys(c, "outcomes", oc, okeys);
    if (!rc) rc = int_field(c, "outcomes", oc, "csat", 0, 1, 5, oo, NULL);
    if (!rc) rc = int_field(c, "outcomes", oc, "nps", 0, 0, 10, oo, NULL);
    json_t *fcr = json_object_get(oc, "fcr");
    if (!rc && fcr && !json_is_boolean(fcr)) rc = fail(c, "outcomes.fcr", "must be a boolean (got %s)", kind_of(fcr));
    if (!rc && fcr) json_object_set(oo, "fcr", fcr);
  }
  /* attributes */
  json_t *at = json_object_get(in, "attributes");
  if (!rc && at) {
    rc = json_is_object(at) ? 0 : fail(c, "attributes", "must be an object (got %s)", kind_of(at));
    if (!rc && json_object_size(at) > ATTR_MAX) rc = fail(c, "attributes", "more than %d entries", ATTR_MAX);
    json_t *ao = json_object();
    json_object_set_new(o, "attributes", ao);
    const char *k;
    json_t *v;
    json_object_foreach(at, k, v) {
      if (rc) break;
      char p[300];
      sub(p, sizeof p, "attributes", k);
      if (strlen(k) == 0 || strlen(k) > 64) rc = fail(c, p, "keys must be 1 to 64 bytes");
      else if (json_is_string(v) && json_string_length(v) > 1024) rc = fail(c, p, "longer than 1024 bytes");
      else if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
        rc = fail(c, p, "must be a string, number or boolean (got %s)", kind_of(v));
      else json_object_set(ao, k, v);
    }
  }
  /* content: exactly one of turns, email, media */
  json_t *turns = json_object_get(in, "turns"), *em = json_object_get(in, "email"),
         *md = json_object_get(in, "media");
  int forms = !!turns + !!em + !!md;
  if (!rc && forms != 1)
    rc = fail(c, "(document)", forms ? "holds more than one of turns, email and media"
                                     : "needs one of turns, email or media");
  json_t *content = NULL;
  int64_t first_mail = 0;
  if (!rc && turns) {
    rc = check_turns(c, "turns", turns, &content);
    if (!rc) json_object_set_new(o, "turns", content);
  }
  if (!rc && em) {
    rc = check_email(c, em, &content, &first_mail);
    if (!rc) json_object_set_new(o, "email", content);
  }
  if (!rc && md) {
    rc = check_media(c, md, &content);
    if (!rc) json_object_set_new(o, "media", content);
  }
  if (rc) return rc;
  (void)first_mail;
  /* id: the same interaction always gets the same id. */
  uint8_t h[16];
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, sizeof h);
  crypto_generichash_update(&st, (const uint8_t *)channel, strlen(channel) + 1);
  crypto_generichash_update(&st, (const uint8_t *)tenant, strlen(tenant) + 1);
  crypto_generichash_update(&st, (const uint8_t *)external_id, strlen(external_id));
  crypto_generichash_final(&st, h, sizeof h);
  memcpy(ix->id, "ix-", 3);
  sodium_bin2hex(ix->id + 3, sizeof ix->id - 3, h, sizeof h);
  json_object_set_new(o, "id", json_string(ix->id));
  return 0;
}

int qm_interaction_normalize(const char *json, size_t len, const qm_interaction_opts_t *opts,
                             qm_interaction_t *out, qm_error_t *err) {
  static const qm_interaction_opts_t defaults = {0};
  if (!opts) opts = &defaults;
  memset(out, 0, sizeof *out);
  qm_error_clear(err);
  if (sodium_init() < 0) return qm_error_set(err, QM_EINTERNAL, "libsodium failed to start");
  size_t max = opts->max_document_bytes ? opts->max_document_bytes : DOC_MAX_DEFAULT;
  if (len > max)
    return qm_error_set(err, QM_EINVAL, "(document): %zu bytes is over the limit of %zu", len, max);
  json_error_t je;
  json_t *in = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
  if (!in)
    return qm_error_set(err, QM_EINVAL, "(document): not valid JSON: %s at line %d column %d",
                        je.text, je.line, je.column);
  ctx_t c = {.err = err, .now_ms = opts->now_ms ? opts->now_ms : qm_now_ms()};
  json_t *o = json_object();
  int rc = normalize(&c, in, opts, o, out);
  json_decref(in);
  if (rc) {
    json_decref(o);
    memset(out, 0, sizeof *out);
    return rc;
  }
  char *canon = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  if (!canon) {
    json_decref(o);
    return qm_error_set(err, QM_ENOMEM, "out of memory");
  }
  crypto_generichash(out->content_hash, sizeof out->content_hash, (const uint8_t *)canon,
                     strlen(canon), NULL, 0);
  free(canon);
  out->doc = o;
  out->channel = json_string_value(json_object_get(o, "channel"));
  out->tenant = json_string_value(json_object_get(o, "tenant"));
  out->queue = json_string_value(json_object_get(o, "queue"));
  out->direction = json_string_value(json_object_get(o, "direction"));
  out->language = json_string_value(json_object_get(o, "language"));
  return 0;
}

void qm_interaction_free(qm_interaction_t *ix) {
  if (!ix) return;
  json_decref(ix->doc);
  memset(ix, 0, sizeof *ix);
}

int qm_json_pack(msgpack_packer *pk, const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    msgpack_pack_map(pk, json_object_size(v));
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
      msgpack_pack_str_with_body(pk, k, strlen(k));
      int rc = qm_json_pack(pk, x);
      if (rc) return rc;
    }
    return 0;
  }
  case JSON_ARRAY: {
    msgpack_pack_array(pk, json_array_size(v));
    for (size_t i = 0; i < json_array_size(v); i++) {
      int rc = qm_json_pack(pk, json_array_get(v, i));
      if (rc) return rc;
    }
    return 0;
  }
  case JSON_STRING: return msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
  case JSON_INTEGER: return msgpack_pack_int64(pk, json_integer_value(v));
  case JSON_REAL: return msgpack_pack_double(pk, json_real_value(v));
  case JSON_TRUE: return msgpack_pack_true(pk);
  case JSON_FALSE: return msgpack_pack_false(pk);
  case JSON_NULL: return msgpack_pack_nil(pk);
  }
  return QM_EINVAL;
}
