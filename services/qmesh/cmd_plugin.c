/*
 * cmd_plugin.c: `qmesh plugin check`, the conformance checker partners run.
 *
 * It loads a plugin exactly as a service does (loader.h: the same refusals,
 * word for word), prints what the plugin says it is, validates its settings
 * (a group from a file, or the declared defaults) and then runs the cases for
 * the plugin's kind. Each case runs in a forked child, as libuv's test runner
 * does, so that a plugin that crashes, hangs or calls exit is reported as a
 * failed case with the signal's name instead of taking the checker down; the
 * parent only ever sees one status byte and a one-line reason through a pipe.
 *
 * Cases are a table (`cases` below): a name, the kind it applies to, an
 * optional predicate (a case for an optional callback applies only when the
 * plugin has it), the function the child runs and, for the cases that feed
 * parse_file, the input file. Hostile inputs (empty, truncated, a 10 MB
 * line, random bytes, invalid UTF-8, 100k nested brackets, broken MIME) are
 * written once into a temporary directory before the cases run; the
 * partner's own sample inputs (--samples DIR) become one case per file.
 * Every document a channel submits in those cases goes through the same
 * normalization ingest applies (interaction.h).
 *
 * Under AddressSanitizer (a sanitized build, or QMESH_SANITIZED=1 in the
 * environment when only the plugin is instrumented) a child ends with exit()
 * rather than _exit(), so LeakSanitizer checks it, and a child that passed
 * its case but then exits non-zero is reported as leaking.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <qmesh/asr.h>
#include <qmesh/channel.h>
#include <qmesh/rule.h>

#include "cmd.h"
#include "interaction.h"
#include "loader.h"
#include "log.h"
#include "media.h"

#define DEFAULT_TIMEOUT_S 10

/* Whether this binary carries AddressSanitizer (and so LeakSanitizer). */
#if defined(__SANITIZE_ADDRESS__)
#define QM_CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QM_CHECK_ASAN 1
#endif
#endif
#ifndef QM_CHECK_ASAN
#define QM_CHECK_ASAN 0
#endif

/* What every case gets: the loaded plugin and the validated settings. */
typedef struct check {
  const qm_plugin_t *plugin;
  const qmesh_plugin_t *desc;
  const qmesh_host_t *host;
  const qmesh_settings_t *settings;
  const char *inputs_dir; /* the generated hostile inputs (NULL when none) */
  const char *input;      /* the current case's input file, a full path */
} check_t;

/* A case returns 0 when it passes and anything else when it fails, with a
 * one-line note: the reason for a failure, an observation for a pass. */
typedef int (*case_fn)(const check_t *c, char *note, size_t notelen);

typedef struct check_case {
  const char *name;
  int kind;
  int (*applies)(const check_t *c); /* NULL: always */
  case_fn run;
  const char *input; /* a file in check_t.inputs_dir, or a full path; NULL: none */
} check_case_t;

static int fail(char *note, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *note, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(note, len, fmt, ap);
  va_end(ap);
  return 1;
}

static const char *kind_name(uint32_t kind) {
  switch (kind) {
  case QMESH_KIND_CHANNEL: return "channel";
  case QMESH_KIND_RULE: return "rule";
  case QMESH_KIND_ASR: return "asr";
  }
  return "unknown";
}

/* Names a callback's return value; anything but these is a contract
 * violation in itself. */
static const char *rc_name(int rc) {
  switch (rc) {
  case QMESH_OK: return "QMESH_OK";
  case QMESH_ERR: return "QMESH_ERR";
  case QMESH_BUSY: return "QMESH_BUSY";
  case QMESH_INVALID: return "QMESH_INVALID";
  case QMESH_NOMEM: return "QMESH_NOMEM";
  case QMESH_UNSUPPORTED: return "QMESH_UNSUPPORTED";
  }
  return NULL;
}

/* "open returned QMESH_ERR" or "open returned 7 (not a QMESH_* code)". */
static int fail_rc(char *note, size_t len, const char *what, int rc) {
  const char *n = rc_name(rc);
  if (n) return fail(note, len, "%s returned %s", what, n);
  return fail(note, len, "%s returned %d (not a QMESH_* code)", what, rc);
}

/* ---- channel cases ---- */

/* A submit callback that records what it is given and when: the core's
 * contract is that submissions happen only between start and the return of
 * stop (or during parse_file), as JSON objects. The cases that feed
 * parse_file set `normalize`, and then a submission is accepted only when
 * ingest would accept it. */
typedef struct recorder {
  qmesh_channel_ctx_t ctx; /* first: the ctx pointer leads back here */
  pthread_mutex_t mu;
  int accepting;
  int normalize;
  int in_start; /* the context's services are for start(), not parse_file */
  int accepted;
  int invalid;
  int outside;
  int services; /* watch_dir, http_route and add_timer calls accepted */
  char first_invalid[200];
} recorder_t;

static int record_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                         size_t reasonlen) {
  recorder_t *r = (recorder_t *)ctx;
  char why[160] = "";
  if (!json && len) {
    snprintf(why, sizeof why, "NULL document of %zu bytes", len);
  } else if (r->normalize) {
    qm_interaction_t ix;
    qm_error_t err;
    memset(&ix, 0, sizeof ix);
    qm_error_clear(&err);
    if (qm_interaction_normalize(json ? json : "", len, NULL, &ix, &err)) snprintf(why, sizeof why, "%.150s", err.msg);
    qm_interaction_free(&ix);
  } else {
    json_error_t jerr;
    json_t *doc = json_loadb(json ? json : "", len, 0, &jerr);
    if (!doc) snprintf(why, sizeof why, "not JSON: %.140s", jerr.text);
    else if (!json_is_object(doc)) snprintf(why, sizeof why, "not a JSON object");
    json_decref(doc);
  }
  pthread_mutex_lock(&r->mu);
  if (!r->accepting) r->outside++;
  if (why[0]) {
    if (!r->invalid++) snprintf(r->first_invalid, sizeof r->first_invalid, "%s", why);
  } else {
    r->accepted++;
  }
  pthread_mutex_unlock(&r->mu);
  if (why[0]) {
    if (reason && reasonlen) snprintf(reason, reasonlen, "%s", why);
    return QMESH_INVALID;
  }
  return QMESH_OK;
}

/* The context's services. The checker runs no spool, listener or timer:
 * during start it checks the arguments and accepts them (so a plugin that
 * needs them can start), during parse_file it answers QMESH_UNSUPPORTED as
 * `qmesh channel parse` does. */
static int record_service(const qmesh_channel_ctx_t *ctx, int args_ok) {
  recorder_t *r = (recorder_t *)ctx;
  pthread_mutex_lock(&r->mu);
  int in_start = r->in_start;
  if (in_start && args_ok) r->services++;
  pthread_mutex_unlock(&r->mu);
  if (!in_start) return QMESH_UNSUPPORTED;
  return args_ok ? QMESH_OK : QMESH_INVALID;
}

static int record_watch_dir(const qmesh_channel_ctx_t *ctx, const char *dir, const char *suffixes) {
  (void)suffixes;
  return record_service(ctx, dir && *dir);
}

static int record_http_route(const qmesh_channel_ctx_t *ctx, const char *method, const char *path,
                             qmesh_http_handler_fn fn) {
  return record_service(ctx, method && *method && path && path[0] == '/' && fn);
}

static int record_add_timer(const qmesh_channel_ctx_t *ctx, uint32_t every_ms,
                            void (*fn)(void *state, const qmesh_channel_ctx_t *ctx)) {
  return record_service(ctx, every_ms > 0 && fn);
}

/* Computes the reference without storing, in start and parse_file alike. */
static int record_store_media(const qmesh_channel_ctx_t *ctx, const char *path, char *ref, size_t reflen) {
  (void)ctx;
  if (!path || !ref || reflen < QM_MEDIA_REF_LEN) return QMESH_INVALID;
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_ref_file(path, ref, reflen, &err);
  return rc == 0 ? QMESH_OK : rc == QM_EINVAL ? QMESH_INVALID : QMESH_ERR;
}

static void recorder_init(recorder_t *r) {
  memset(r, 0, sizeof *r);
  r->ctx.struct_size = sizeof r->ctx;
  r->ctx.submit = record_submit;
  r->ctx.watch_dir = record_watch_dir;
  r->ctx.http_route = record_http_route;
  r->ctx.add_timer = record_add_timer;
  r->ctx.store_media = record_store_media;
  r->ctx.name = "check";
  pthread_mutex_init(&r->mu, NULL);
}

static void recorder_in_start(recorder_t *r, int on) {
  pthread_mutex_lock(&r->mu);
  r->in_start = on;
  pthread_mutex_unlock(&r->mu);
}

static void recorder_accept(recorder_t *r, int on) {
  pthread_mutex_lock(&r->mu);
  r->accepting = on;
  pthread_mutex_unlock(&r->mu);
}

/* The verdict on what was recorded, once the plugin is closed. */
static int recorder_verdict(recorder_t *r, char *note, size_t len) {
  if (r->outside)
    return fail(note, len, "%d submission%s outside start..stop", r->outside, r->outside == 1 ? "" : "s");
  if (r->invalid)
    return fail(note, len, "%d submitted document%s refused (first: %s)", r->invalid, r->invalid == 1 ? "" : "s",
                r->first_invalid);
  if (r->services)
    snprintf(note, len, "%d submission%s, %d context service%s set up", r->accepted, r->accepted == 1 ? "" : "s",
             r->services, r->services == 1 ? "" : "s");
  else
    snprintf(note, len, "%d submission%s", r->accepted, r->accepted == 1 ? "" : "s");
  return 0;
}

static int channel_open_close(const check_t *c, char *note, size_t len) {
  const qmesh_channel_ops_t *ops = c->desc->ops;
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  ops->close(st);
  return 0;
}

static int channel_lifecycle(const check_t *c, char *note, size_t len) {
  const qmesh_channel_ops_t *ops = c->desc->ops;
  recorder_t r;
  recorder_init(&r);
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  recorder_accept(&r, 1);
  recorder_in_start(&r, 1);
  rc = ops->start(st, &r.ctx);
  recorder_in_start(&r, 0);
  if (rc != QMESH_OK) {
    ops->close(st);
    return fail_rc(note, len, "start", rc);
  }
  rc = ops->stop(st);
  recorder_accept(&r, 0);
  /* A plugin thread that outlives stop shows itself within this grace
   * period as a submission outside start..stop. */
  struct timespec grace = {0, 50 * 1000 * 1000};
  nanosleep(&grace, NULL);
  ops->close(st);
  if (rc != QMESH_OK) return fail_rc(note, len, "stop", rc);
  return recorder_verdict(&r, note, len);
}

static int has_pause(const check_t *c) { return ((const qmesh_channel_ops_t *)c->desc->ops)->pause != NULL; }

static int channel_pause_resume(const check_t *c, char *note, size_t len) {
  const qmesh_channel_ops_t *ops = c->desc->ops;
  recorder_t r;
  recorder_init(&r);
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  recorder_accept(&r, 1);
  const char *what = "start";
  recorder_in_start(&r, 1);
  rc = ops->start(st, &r.ctx);
  recorder_in_start(&r, 0);
  /* Twice, because a service pauses and resumes a channel many times. */
  for (int i = 0; i < 2 && rc == QMESH_OK; i++) {
    what = "pause";
    rc = ops->pause(st);
    if (rc == QMESH_OK) {
      what = "resume";
      rc = ops->resume(st);
    }
  }
  if (rc == QMESH_OK) {
    what = "stop";
    rc = ops->stop(st);
  } else {
    ops->stop(st);
  }
  recorder_accept(&r, 0);
  ops->close(st);
  if (rc != QMESH_OK) return fail_rc(note, len, what, rc);
  return recorder_verdict(&r, note, len);
}

static int has_parse_file(const check_t *c) {
  return ((const qmesh_channel_ops_t *)c->desc->ops)->parse_file != NULL;
}

static int channel_parse_missing_file(const check_t *c, char *note, size_t len) {
  const qmesh_channel_ops_t *ops = c->desc->ops;
  recorder_t r;
  recorder_init(&r);
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  recorder_accept(&r, 1);
  rc = ops->parse_file(st, "/nonexistent/qmesh-plugin-check/missing.json", &r.ctx);
  recorder_accept(&r, 0);
  ops->close(st);
  if (rc == QMESH_OK) return fail(note, len, "parse_file of a missing file returned QMESH_OK");
  if (!rc_name(rc)) return fail_rc(note, len, "parse_file", rc);
  if (r.accepted || r.invalid) return fail(note, len, "parse_file of a missing file submitted something");
  snprintf(note, len, "refused with %s", rc_name(rc));
  return 0;
}

/* Opens the plugin, runs parse_file on c->input with a normalizing
 * recorder and closes it. Returns parse_file's code, or 1 after filling
 * `note` when open failed. */
static int parse_input(const check_t *c, recorder_t *r, int *parse_rc, char *note, size_t len) {
  const qmesh_channel_ops_t *ops = c->desc->ops;
  recorder_init(r);
  r->normalize = 1;
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  recorder_accept(r, 1);
  *parse_rc = ops->parse_file(st, c->input, &r->ctx);
  recorder_accept(r, 0);
  ops->close(st);
  pthread_mutex_destroy(&r->mu);
  return 0;
}

/* A hostile input may be refused: parse_file returning an error is the
 * right answer to garbage. What fails the case is a crash, a hang (the
 * runner's timeout), a return value that is not a QMESH_* code, or claiming
 * success (QMESH_OK) for a file of which ingest refused a document: a file
 * the plugin reports as parsed must have produced only valid interactions.
 * Documents refused on the way to a refusal of the whole file are noted. */
static int channel_parse_hostile(const check_t *c, char *note, size_t len) {
  recorder_t r;
  int rc = QMESH_OK;
  if (parse_input(c, &r, &rc, note, len)) return 1;
  if (!rc_name(rc)) return fail_rc(note, len, "parse_file", rc);
  if (rc == QMESH_OK && r.invalid)
    return fail(note, len, "parse_file returned QMESH_OK but %d submitted document%s failed to normalize (first: %s)",
                r.invalid, r.invalid == 1 ? "" : "s", r.first_invalid);
  if (rc == QMESH_OK) snprintf(note, len, "%d submission%s", r.accepted, r.accepted == 1 ? "" : "s");
  else if (r.invalid) snprintf(note, len, "refused with %s after %d invalid submission%s", rc_name(rc), r.invalid,
                               r.invalid == 1 ? "" : "s");
  else snprintf(note, len, "refused with %s", rc_name(rc));
  return 0;
}

/* A sample input is the partner's own example of what the plugin takes:
 * it must parse (QMESH_OK), submit at least one interaction, and every
 * submission must be one ingest accepts. */
static int channel_parse_sample(const check_t *c, char *note, size_t len) {
  recorder_t r;
  int rc = QMESH_OK;
  if (parse_input(c, &r, &rc, note, len)) return 1;
  if (r.invalid)
    return fail(note, len, "%d submitted document%s failed to normalize (first: %s)", r.invalid,
                r.invalid == 1 ? "" : "s", r.first_invalid);
  if (rc != QMESH_OK) return fail_rc(note, len, "parse_file", rc);
  if (!r.accepted) return fail(note, len, "parse_file submitted nothing");
  snprintf(note, len, "%d submission%s", r.accepted, r.accepted == 1 ? "" : "s");
  return 0;
}

/* ---- hostile inputs ---- */

/* xorshift64*: the "random" bytes are the same on every run and machine, so
 * a failure can be reproduced from the case name alone. */
static uint64_t next_random(uint64_t *x) {
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 0x2545F4914F6CDD1DULL;
}

static int write_input(const char *dir, const char *name, const char *data, size_t n) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return -1;
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = n ? fwrite(data, 1, n, f) : 0;
  return (fclose(f) == 0 && w == n) ? 0 : -1;
}

#define LONG_LINE_BYTES (10u << 20)
#define BINARY_BYTES (256u << 10)
#define DEEP_JSON_DEPTH 100000u

/* Writes the hostile inputs into `dir`; their names are the `input` of the
 * parse_* rows of the case table. */
static int write_hostile_inputs(const char *dir) {
  static const char truncated_json[] =
    "{\"channel\": \"chat\", \"external_id\": \"conv-1\", \"agent\": {\"id\": \"a-1\"},\n"
    " \"started_at\": \"2026-11-20T14:03:11Z\", \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"te";
  static const char truncated_mime[] =
    "From: Customer <c@example.com>\r\nTo: support@example.com\r\nSubject: order 5512\r\n"
    "Message-ID: <m1@example.com>\r\nDate: Fri, 20 Nov 2026 14:03:11 +0000\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8sIG15IG9yZGVyIGhhcyBub3Qg";
  static const char bad_utf8[] =
    "{\"channel\": \"chat\", \"external_id\": \"conv-\xC3\x28\", \"agent\": {\"id\": \"a-\xFF\"},\n"
    " \"started_at\": \"2026-11-20T14:03:11Z\", \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0,\n"
    " \"text\": \"overlong \xC0\xAF surrogate \xED\xA0\x80 cut \xE2\x82\"}]}\n"
    "conversation_id,agent_id\nconv-\xF8\x88\x80\x80\x80,a-\x80\n";
  static const char bad_mime[] =
    "From: Customer <c@example.com>\r\nTo: support@example.com\r\nSubject: =?utf-8?B?broken?=\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"declared\"\r\n"
    "a header line without a colon\r\n\r\n--other\r\nContent-Type: text/plain\r\n\r\nnot in any part\r\n"
    "--declared\r\nContent-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--declared\r\n"
    "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=\r\n"
    "--declared-\r\n";
  size_t big = LONG_LINE_BYTES > BINARY_BYTES ? LONG_LINE_BYTES : BINARY_BYTES;
  if (big < DEEP_JSON_DEPTH) big = DEEP_JSON_DEPTH;
  char *buf = malloc(big);
  if (!buf) return -1;
  int rc = 0;
  rc |= write_input(dir, "empty", "", 0);
  rc |= write_input(dir, "truncated.json", truncated_json, sizeof truncated_json - 1);
  rc |= write_input(dir, "truncated.eml", truncated_mime, sizeof truncated_mime - 1);
  /* One line of 10 MB, without a line break: a JSON string that never
   * closes, so line readers, JSON parsers and CSV parsers all see it whole. */
  static const char head[] = "{\"text\": \"";
  memcpy(buf, head, sizeof head - 1);
  for (size_t i = sizeof head - 1; i < LONG_LINE_BYTES; i++) buf[i] = (char)('a' + i % 26);
  rc |= write_input(dir, "long-line.txt", buf, LONG_LINE_BYTES);
  uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (size_t i = 0; i < BINARY_BYTES; i += 8) {
    uint64_t v = next_random(&x);
    memcpy(buf + i, &v, 8);
  }
  rc |= write_input(dir, "binary.bin", buf, BINARY_BYTES);
  rc |= write_input(dir, "bad-utf8.json", bad_utf8, sizeof bad_utf8 - 1);
  memset(buf, '[', DEEP_JSON_DEPTH);
  rc |= write_input(dir, "deep.json", buf, DEEP_JSON_DEPTH);
  rc |= write_input(dir, "bad-boundary.eml", bad_mime, sizeof bad_mime - 1);
  free(buf);
  return rc;
}

static const char *const hostile_inputs[] = {
  "empty", "truncated.json", "truncated.eml", "long-line.txt", "binary.bin", "bad-utf8.json", "deep.json",
  "bad-boundary.eml", NULL,
};

static void remove_hostile_inputs(const char *dir) {
  char path[PATH_MAX];
  for (const char *const *n = hostile_inputs; *n; n++) {
    if (snprintf(path, sizeof path, "%s/%s", dir, *n) < (int)sizeof path) unlink(path);
  }
  rmdir(dir);
}

/* ---- rule cases ---- */

static int rule_compile_free(const check_t *c, char *note, size_t len) {
  const qmesh_rule_ops_t *ops = c->desc->ops;
  void *compiled = NULL;
  int rc = ops->compile(c->host, c->settings, &compiled);
  if (rc != QMESH_OK) return fail_rc(note, len, "compile", rc);
  ops->free_compiled(compiled);
  return 0;
}

/* Checks an answer against the contract in qmesh/rule.h. */
static int answer_ok(const qmesh_answer_t *a, const qmesh_interaction_view_t *v, char *note, size_t len) {
  if (a->struct_size != sizeof *a) return fail(note, len, "evaluate overwrote answer->struct_size");
  if (a->verdict != QMESH_VERDICT_NA && a->verdict != QMESH_VERDICT_PASS && a->verdict != QMESH_VERDICT_FAIL)
    return fail(note, len, "verdict %d is not a QMESH_VERDICT_* value", a->verdict);
  if (!isfinite(a->confidence) || a->confidence < 0.0 || a->confidence > 1.0)
    return fail(note, len, "confidence %g is outside 0..1", a->confidence);
  if (a->evidence_off > v->text_len || a->evidence_len > v->text_len - a->evidence_off)
    return fail(note, len, "evidence %zu+%zu lies outside the %zu-byte text", a->evidence_off, a->evidence_len,
                v->text_len);
  return 0;
}

static const char *verdict_name(int v) {
  return v == QMESH_VERDICT_PASS ? "pass" : v == QMESH_VERDICT_FAIL ? "fail" : "n/a";
}

/* Compiles, evaluates `text` twice (a retried evaluation must give the same
 * answer) and frees. */
static int rule_evaluate_text(const check_t *c, const char *text, char *note, size_t len) {
  const qmesh_rule_ops_t *ops = c->desc->ops;
  void *compiled = NULL;
  int rc = ops->compile(c->host, c->settings, &compiled);
  if (rc != QMESH_OK) return fail_rc(note, len, "compile", rc);
  qmesh_interaction_view_t view = {
    .struct_size = sizeof view,
    .id = "0190a0b0c0d0e0f0a1b2c3d4e5f60718",
    .channel = "chat",
    .text = text,
    .text_len = strlen(text),
  };
  qmesh_answer_t a[2];
  int result = 0;
  for (int i = 0; i < 2 && !result; i++) {
    memset(&a[i], 0, sizeof a[i]);
    a[i].struct_size = sizeof a[i];
    rc = ops->evaluate(compiled, &view, &a[i]);
    if (!rc_name(rc)) result = fail_rc(note, len, "evaluate", rc);
    else if (rc == QMESH_OK) result = answer_ok(&a[i], &view, note, len);
    else if (i == 0) snprintf(note, len, "no answer (%s)", rc_name(rc));
    if (!result && i == 1 && rc == QMESH_OK &&
        (a[0].verdict != a[1].verdict || a[0].confidence != a[1].confidence ||
         a[0].evidence_off != a[1].evidence_off || a[0].evidence_len != a[1].evidence_len))
      result = fail(note, len, "two evaluations of the same view gave different answers");
  }
  ops->free_compiled(compiled);
  if (!result && rc == QMESH_OK)
    snprintf(note, len, "verdict %s, confidence %.2f", verdict_name(a[0].verdict), a[0].confidence);
  return result;
}

static int rule_evaluate_empty(const check_t *c, char *note, size_t len) {
  return rule_evaluate_text(c, "", note, len);
}

static int rule_evaluate_small(const check_t *c, char *note, size_t len) {
  return rule_evaluate_text(c,
                            "Agent: Hello, thank you for calling Acme support, my name is Dana. "
                            "How can I help you today?\n"
                            "Customer: Hi, my order has not arrived yet.\n"
                            "Agent: I am sorry to hear that, let me check the tracking for you.",
                            note, len);
}

/* ---- asr cases ---- */

static int asr_open_close(const check_t *c, char *note, size_t len) {
  const qmesh_asr_ops_t *ops = c->desc->ops;
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) return fail_rc(note, len, "open", rc);
  ops->close(st);
  return 0;
}

/* Checks decoded words against the contract in qmesh/asr.h. */
static int words_ok(const qmesh_words_t *w, uint32_t duration_ms, char *note, size_t len) {
  if (w->count && !w->words) return fail(note, len, "%zu words but a NULL array", w->count);
  for (size_t i = 0; i < w->count; i++) {
    const qmesh_word_t *x = &w->words[i];
    if (!x->text) return fail(note, len, "word %zu has NULL text", i);
    if (x->start_ms > x->end_ms || x->end_ms > duration_ms)
      return fail(note, len, "word %zu spans %u..%u ms of %u ms of audio", i, x->start_ms, x->end_ms, duration_ms);
    if (!isfinite(x->confidence) || x->confidence < 0.0f || x->confidence > 1.0f)
      return fail(note, len, "word %zu has confidence %g outside 0..1", i, (double)x->confidence);
  }
  return 0;
}

static int asr_decode_silence(const check_t *c, char *note, size_t len) {
  const qmesh_asr_ops_t *ops = c->desc->ops;
  const int rate = 16000;
  int16_t *pcm = calloc((size_t)rate, sizeof *pcm);
  if (!pcm) return fail(note, len, "out of memory");
  void *st = NULL;
  int rc = ops->open(c->host, c->settings, &st);
  if (rc != QMESH_OK) {
    free(pcm);
    return fail_rc(note, len, "open", rc);
  }
  qmesh_words_t w = {.struct_size = sizeof w};
  rc = ops->decode(st, pcm, (size_t)rate, rate, &w);
  int result = 0;
  if (rc != QMESH_OK) {
    result = fail_rc(note, len, "decode of 1 s of silence", rc);
  } else {
    result = words_ok(&w, 1000, note, len);
    size_t count = w.count;
    ops->free_words(st, &w);
    if (!result && (w.words || w.count)) result = fail(note, len, "free_words did not zero the result");
    if (!result) snprintf(note, len, "%zu word%s", count, count == 1 ? "" : "s");
  }
  ops->close(st);
  free(pcm);
  return result;
}

static const check_case_t cases[] = {
  {"open_close", QMESH_KIND_CHANNEL, NULL, channel_open_close, NULL},
  {"lifecycle", QMESH_KIND_CHANNEL, NULL, channel_lifecycle, NULL},
  {"pause_resume", QMESH_KIND_CHANNEL, has_pause, channel_pause_resume, NULL},
  {"parse_missing_file", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_missing_file, NULL},
  {"parse_empty", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "empty"},
  {"parse_truncated_json", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "truncated.json"},
  {"parse_truncated_mime", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "truncated.eml"},
  {"parse_long_line", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "long-line.txt"},
  {"parse_binary", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "binary.bin"},
  {"parse_bad_utf8", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "bad-utf8.json"},
  {"parse_deep_json", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "deep.json"},
  {"parse_bad_mime", QMESH_KIND_CHANNEL, has_parse_file, channel_parse_hostile, "bad-boundary.eml"},
  {"compile_free", QMESH_KIND_RULE, NULL, rule_compile_free, NULL},
  {"evaluate_empty", QMESH_KIND_RULE, NULL, rule_evaluate_empty, NULL},
  {"evaluate_small", QMESH_KIND_RULE, NULL, rule_evaluate_small, NULL},
  {"open_close", QMESH_KIND_ASR, NULL, asr_open_close, NULL},
  {"decode_silence", QMESH_KIND_ASR, NULL, asr_decode_silence, NULL},
  {NULL, 0, NULL, NULL, NULL},
};

/* ---- running a case in a child ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether LeakSanitizer runs in this process at exit. */
static int leak_checked(void) {
  const char *env = getenv("QMESH_SANITIZED");
  return QM_CHECK_ASAN || (env && strcmp(env, "1") == 0);
}

static void child_run(int fd, const check_t *c, const check_case_t *k) {
  /* Default dispositions, so that a crash ends the child with its signal
   * even when a sanitizer runtime installed handlers that would turn it into
   * an exit status. */
  static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
  check_t cc = *c;
  char input[PATH_MAX];
  if (k->input) {
    if (k->input[0] == '/') snprintf(input, sizeof input, "%s", k->input);
    else snprintf(input, sizeof input, "%s/%s", c->inputs_dir ? c->inputs_dir : ".", k->input);
    cc.input = input;
  }
  /* A case that passes without an observation leaves the note empty. */
  char out[512] = "";
  int failed = k->run(&cc, out + 1, sizeof out - 1);
  out[0] = failed ? 'F' : 'P';
  ssize_t w = write(fd, out, 1 + strlen(out + 1));
  (void)w;
  fflush(NULL);
  /* exit() runs LeakSanitizer's check, which turns a leak into a non-zero
   * status; without a sanitizer _exit() keeps the parent's atexit handlers
   * and buffers out of the child. */
  if (leak_checked()) exit(0);
  _exit(0);
}

/* Runs one case in a child and writes "ok ..." or "FAIL: ..." into `line`.
 * Returns 0 when it passed. */
static int run_case(const check_t *c, const check_case_t *k, int timeout_s, char *line, size_t linelen) {
  int fds[2];
  if (pipe(fds)) return fail(line, linelen, "FAIL: pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return fail(line, linelen, "FAIL: fork: %s", strerror(errno));
  }
  if (pid == 0) {
    close(fds[0]);
    child_run(fds[1], c, k);
  }
  close(fds[1]);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);

  char msg[512];
  size_t got = 0;
  int status = 0, timed_out = 0;
  int64_t deadline = now_ms() + (int64_t)timeout_s * 1000;
  /* Poll the pipe and the child together: the child's exit, not the pipe's
   * EOF, ends the wait, because a plugin may have left a grandchild holding
   * the pipe open. */
  for (;;) {
    struct pollfd pfd = {fds[0], POLLIN, 0};
    poll(&pfd, 1, 20);
    for (;;) {
      ssize_t n = read(fds[0], msg + got, sizeof msg - 1 - got);
      if (n <= 0) break;
      got += (size_t)n;
    }
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (!timed_out && now_ms() > deadline) {
      timed_out = 1;
      kill(pid, SIGKILL);
    }
  }
  for (;;) {
    ssize_t n = read(fds[0], msg + got, sizeof msg - 1 - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fds[0]);
  msg[got] = '\0';

  if (timed_out) return fail(line, linelen, "FAIL: timed out after %d s", timeout_s);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) return fail(line, linelen, "FAIL: crashed with SIG%s (%s)", abbrev, strsignal(sig));
    return fail(line, linelen, "FAIL: killed by signal %d", sig);
  }
  if (got == 0 || (msg[0] != 'P' && msg[0] != 'F')) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return fail(line, linelen, "FAIL: exited with status %d before the case finished "
                "(the plugin called exit, or a sanitizer stopped it: see stderr)",
                code);
  }
  if (msg[0] == 'F') return fail(line, linelen, "FAIL: %s", msg[1] ? msg + 1 : "no reason given");
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    return fail(line, linelen, "FAIL: leaked memory (LeakSanitizer exit status %d at the end of the case: see stderr)",
                WEXITSTATUS(status));
  if (msg[1]) snprintf(line, linelen, "ok (%s)", msg + 1);
  else snprintf(line, linelen, "ok");
  return 0;
}

/* ---- the command ---- */

static void usage(FILE *f) {
  fputs("usage: qmesh plugin check [options] PATH\n"
        "\n"
        "Loads the plugin at PATH the way a qmesh service does (same refusals),\n"
        "validates its settings and runs the conformance cases for its kind, each\n"
        "in its own process, so a crash or a hang is reported, not suffered.\n"
        "Prints one line per case (ok, or FAIL: reason) and a summary line.\n"
        "Exit status: 0 every case passed, 1 the plugin was refused or a case\n"
        "failed, 2 usage error.\n"
        "\n"
        "options:\n"
        "  --settings FILE  validate the settings in FILE (its top-level group, or\n"
        "                   the one named by --group) instead of the declared defaults\n"
        "  --group PATH     the plugin's group inside FILE, e.g. channels.crm\n"
        "  --kind KIND      expect this kind: channel, rule or asr\n"
        "  --samples DIR    channel plugins: parse every file in DIR (one case each);\n"
        "                   each must parse and every submission must normalize\n"
        "  --timeout SEC    time limit per case (default 10)\n"
        "  -v, --verbose    show the plugin's own log lines (on stderr)\n"
        "  -h, --help       show this text\n",
        f);
}

static void print_settings_table(const qmesh_plugin_t *d) {
  static const char *const types[] = {"?", "string", "integer", "float", "bool", "string list"};
  for (const qmesh_setting_t *s = d->settings; s && s->name; s++) {
    const char *type = (s->type >= 1 && s->type <= 5) ? types[s->type] : types[0];
    printf("setting %s (%s", s->name, type);
    if (s->required) printf(", required");
    if (s->default_value) printf(", default \"%s\"", s->default_value);
    printf("): %s\n", s->help ? s->help : "");
  }
}

/* Regular files only, hidden ones skipped (editor and VCS leftovers). */
static int sample_filter(const struct dirent *e) { return e->d_name[0] != '.'; }

/* Runs one case per file in `dir`, in name order. Returns the number of
 * failures and adds to *passed. */
static int run_samples(const check_t *c, const char *dir, int timeout_s, int *passed) {
  struct dirent **names = NULL;
  int n = scandir(dir, &names, sample_filter, alphasort);
  if (n < 0) {
    printf("samples: FAIL: %s: %s\n", dir, strerror(errno));
    return 1;
  }
  int failed = 0, ran = 0;
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX], name[PATH_MAX + 8], line[600];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
      snprintf(name, sizeof name, "sample:%s", names[i]->d_name);
      check_case_t k = {name, QMESH_KIND_CHANNEL, NULL, channel_parse_sample, path};
      int rc = run_case(c, &k, timeout_s, line, sizeof line);
      printf("%s: %s\n", name, line);
      if (rc) failed++;
      else (*passed)++;
      ran++;
    }
    free(names[i]);
  }
  free(names);
  if (!ran) {
    printf("samples: FAIL: %s holds no sample file\n", dir);
    failed++;
  }
  return failed;
}

static int check_plugin(const char *path, int kind, const char *settings_file, const char *group_path,
                        const char *samples_dir, int timeout_s) {
  qm_plugin_t *p = NULL;
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_plugin_load(path, kind, &p, &err)) {
    printf("%s\n", err.msg);
    return 1;
  }
  const qmesh_plugin_t *d = qm_plugin_descriptor(p);
  printf("plugin: %s %s\n", d->name, d->version);
  printf("kind: %s\n", kind_name(d->kind));
  printf("abi: %u.%u (this qmesh speaks %d.%d)\n", d->abi_major, d->abi_minor, QMESH_ABI_MAJOR, QMESH_ABI_MINOR);
  printf("path: %s\n", qm_plugin_path(p));
  if (d->description) printf("description: %s\n", d->description);
  print_settings_table(d);

  int passed = 0, failed = 0;
  config_t cfg;
  config_init(&cfg);
  const config_setting_t *group = NULL;
  int settings_ok = 1;
  if (settings_file) {
    if (config_read_file(&cfg, settings_file) != CONFIG_TRUE) {
      if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
        printf("settings: FAIL: %s: cannot read: %s\n", settings_file, strerror(errno));
      else
        printf("settings: FAIL: %s:%d: %s\n", config_error_file(&cfg) ? config_error_file(&cfg) : settings_file,
               config_error_line(&cfg), config_error_text(&cfg));
      settings_ok = 0;
    } else {
      group = group_path ? config_lookup(&cfg, group_path) : config_root_setting(&cfg);
      if (!group) {
        printf("settings: FAIL: %s: no setting %s\n", settings_file, group_path);
        settings_ok = 0;
      }
    }
  }
  if (settings_ok) {
    if (qm_plugin_validate_settings(p, group, settings_file ? settings_file : "(defaults)", &err)) {
      printf("settings: FAIL: %s\n", err.msg);
      settings_ok = 0;
    } else {
      printf("settings: ok (%s)\n", settings_file ? settings_file : "defaults");
    }
  }
  if (!settings_ok) {
    failed++;
  } else {
    passed++;
    check_t c = {p, d, qm_plugin_host(p), qm_plugin_settings(p), NULL, NULL};
    int parses = d->kind == QMESH_KIND_CHANNEL && has_parse_file(&c);
    char dirbuf[PATH_MAX];
    if (parses) {
      const char *tmp = getenv("TMPDIR");
      snprintf(dirbuf, sizeof dirbuf, "%s/qmesh-plugin-check-XXXXXX", tmp && *tmp ? tmp : "/tmp");
      if (mkdtemp(dirbuf) && write_hostile_inputs(dirbuf) == 0) {
        c.inputs_dir = dirbuf;
      } else {
        printf("hostile inputs: FAIL: cannot write them under %s: %s\n", tmp && *tmp ? tmp : "/tmp", strerror(errno));
        failed++;
      }
    }
    for (const check_case_t *k = cases; k->name; k++) {
      if (k->kind != (int)d->kind || (k->applies && !k->applies(&c))) continue;
      if (k->input && !c.inputs_dir) continue;
      char line[600];
      int rc = run_case(&c, k, timeout_s, line, sizeof line);
      printf("%s: %s\n", k->name, line);
      if (rc) failed++;
      else passed++;
    }
    if (c.inputs_dir) remove_hostile_inputs(c.inputs_dir);
    if (samples_dir && !parses) {
      printf("samples: FAIL: only a channel plugin with parse_file takes sample inputs\n");
      failed++;
    } else if (samples_dir) {
      failed += run_samples(&c, samples_dir, timeout_s, &passed);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  config_destroy(&cfg);
  qm_plugin_destroy(&p);
  return failed ? 1 : 0;
}

int qm_cmd_plugin(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "check") != 0) {
    fprintf(stderr, "qmesh plugin: unknown command \"%s\" (valid: check)\n", argv[1]);
    return 2;
  }
  const char *settings_file = NULL, *group_path = NULL, *path = NULL, *samples_dir = NULL;
  int kind = 0, timeout_s = DEFAULT_TIMEOUT_S, verbose = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
      verbose = 1;
    } else if (strcmp(a, "--settings") == 0 || strcmp(a, "--group") == 0 || strcmp(a, "--kind") == 0 ||
               strcmp(a, "--timeout") == 0 || strcmp(a, "--samples") == 0) {
      if (!val) {
        fprintf(stderr, "qmesh plugin check: %s needs a value\n", a);
        return 2;
      }
      i++;
      if (strcmp(a, "--settings") == 0) {
        settings_file = val;
      } else if (strcmp(a, "--samples") == 0) {
        samples_dir = val;
      } else if (strcmp(a, "--group") == 0) {
        group_path = val;
      } else if (strcmp(a, "--kind") == 0) {
        kind = strcmp(val, "channel") == 0 ? QMESH_KIND_CHANNEL
               : strcmp(val, "rule") == 0  ? QMESH_KIND_RULE
               : strcmp(val, "asr") == 0   ? QMESH_KIND_ASR
                                           : -1;
        if (kind < 0) {
          fprintf(stderr, "qmesh plugin check: --kind %s: unknown kind (valid: channel, rule, asr)\n", val);
          return 2;
        }
      } else {
        char *end;
        long t = strtol(val, &end, 10);
        if (*end || t < 1 || t > 3600) {
          fprintf(stderr, "qmesh plugin check: --timeout %s: expected whole seconds from 1 to 3600\n", val);
          return 2;
        }
        timeout_s = (int)t;
      }
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "qmesh plugin check: unknown option %s (see --help)\n", a);
      return 2;
    } else if (path) {
      fprintf(stderr, "qmesh plugin check: one plugin at a time (got %s and %s)\n", path, a);
      return 2;
    } else {
      path = a;
    }
  }
  if (!path) {
    fprintf(stderr, "qmesh plugin check: no plugin given (see --help)\n");
    return 2;
  }
  if (group_path && !settings_file) {
    fprintf(stderr, "qmesh plugin check: --group needs --settings\n");
    return 2;
  }
  /* The report is on stdout. Log lines go to stderr: warnings and errors
   * (a plugin's own, or its misuse of the settings accessors) always, the
   * core's info lines (plugin.loaded) and the plugin's chatter with -v. */
  qm_log_level_t saved = qm_log_get_level();
  qm_log_set_level(verbose ? QM_LOG_DEBUG : QM_LOG_WARN);
  int rc = check_plugin(path, kind, settings_file, group_path, samples_dir, timeout_s);
  qm_log_set_level(saved);
  return rc;
}
