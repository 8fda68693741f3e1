/*
 * test_routes.c: the route table (common/src/routes.c).
 *
 * Matching is checked case by case (exact type, glob, `when` with one and
 * several fields, fan-out with duplicates, defaults, no route) and then
 * against a plain reference implementation of the documented rule over every
 * type and header combination, so the precomputed fast paths cannot drift
 * from the rule. Every refused table is checked with its exact message, and
 * the shipped configs/routes.cfg with the answers the architecture promises.
 */
#define _GNU_SOURCE /* open_memstream, nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fnmatch.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "routes.h"

static const char *const std7[] = {"ingest",   "transcribe",  "autoscore", "policy",
                                   "coaching", "recognition", "reporting"};

static char tmpdir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qm_test_routes.XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *write_file(const char *name, const char *text) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static qm_routes_t *load(const char *text) {
  qm_routes_t *r = NULL;
  qm_error_t err;
  int rc = qm_routes_load_string(text, "t.cfg", std7, 7, &r, &err);
  if (rc) fail_msg("unexpected refusal: %s", err.msg);
  assert_non_null(r);
  return r;
}

static qm_str_t S(const char *s) { return (qm_str_t){s, strlen(s)}; }

/* Matches and renders the destinations as "a,b,c" ("" for no route). */
static const char *match(const qm_routes_t *r, const char *type, const char *const *kv) {
  static char out[512];
  qm_hdr_t hdr[QM_HDR_MAX] = {0};
  size_t nh = 0;
  for (; kv && kv[2 * nh]; nh++) hdr[nh] = (qm_hdr_t){S(kv[2 * nh]), S(kv[2 * nh + 1])};
  const char *d[QM_ROUTE_DEST_MAX];
  size_t n = qm_routes_match(r, S(type), hdr, nh, d, QM_ROUTE_DEST_MAX);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i) strcat(out, ",");
    strcat(out, d[i]);
  }
  return out;
}

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_known_types(void **state) {
  (void)state;
  const char *want[] = {"interaction.received",    "transcript.ready",     "evaluation.scored",
                        "evaluation.assigned",     "calibration.assigned", "evaluation.submitted",
                        "evaluation.completed",    "evaluation.acknowledged",
                        "evaluation.disputed",     "alert.raised",         "coaching.requested",
                        "coaching.updated",        "recognition.awarded",  "interaction.purge"};
  size_t n = 0;
  while (qm_known_types[n]) n++;
  assert_int_equal(n, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < n; i++) assert_string_equal(qm_known_types[i], want[i]);
}

static void test_exact_and_glob(void **state) {
  (void)state;
  qm_routes_t *r = load("routes = (\n"
                        "  { name = \"exact\"; match = \"transcript.ready\"; to = [\"autoscore\"]; },\n"
                        "  { name = \"glob\"; match = \"evaluation.*\"; to = [\"policy\"]; },\n"
                        "  { name = \"one\"; match = \"alert.raise?\"; to = [\"reporting\"]; },\n"
                        "  { name = \"set\"; match = \"coaching.[r]*\"; to = [\"coaching\"]; }\n"
                        ");\n");
  assert_int_equal(qm_routes_count(r), 4);
  assert_string_equal(qm_routes_source(r), "t.cfg");
  assert_string_equal(match(r, "transcript.ready", NULL), "autoscore");
  assert_string_equal(match(r, "evaluation.scored", NULL), "policy");
  assert_string_equal(match(r, "evaluation.disputed", NULL), "policy");
  assert_string_equal(match(r, "alert.raised", NULL), "reporting");
  assert_string_equal(match(r, "coaching.requested", NULL), "coaching");
  assert_string_equal(match(r, "coaching.updated", NULL), "");
  /* No route: nothing at all. */
  assert_string_equal(match(r, "interaction.received", NULL), "");
  /* A type outside the known list still follows the globs. */
  assert_string_equal(match(r, "evaluation.reopened", NULL), "policy");
  assert_string_equal(match(r, "transcript.ready.v2", NULL), "");
  /* The type is a view, not a C string: only its n bytes count. */
  const char *d[4];
  assert_int_equal(qm_routes_match(r, (qm_str_t){"transcript.readyXYZ", 16}, NULL, 0, d, 4), 1);
  assert_string_equal(d[0], "autoscore");
  assert_int_equal(qm_routes_match(r, (qm_str_t){"", 0}, NULL, 0, d, 4), 0);
  assert_int_equal(qm_routes_match(NULL, S("transcript.ready"), NULL, 0, d, 4), 0);
  qm_routes_destroy(&r);
  assert_null(r);
  qm_routes_destroy(&r);
}

static void test_when(void **state) {
  (void)state;
  qm_routes_t *r =
    load("routes = (\n"
         "  { name = \"voice\"; match = \"interaction.received\";\n"
         "    when = { channel = [\"voice\"]; }; to = [\"transcribe\"]; },\n"
         "  { name = \"text\"; match = \"interaction.received\";\n"
         "    when = { channel = (\"chat\", \"email\"); }; to = [\"autoscore\"]; },\n"
         "  { name = \"vip\"; match = \"interaction.*\";\n"
         "    when = { tenant = \"acme\"; queue = [\"vip\", \"gold\"]; }; to = [\"coaching\"]; }\n"
         ");\n");
  assert_string_equal(match(r, "interaction.received", H("channel", "voice")), "transcribe");
  assert_string_equal(match(r, "interaction.received", H("channel", "chat")), "autoscore");
  assert_string_equal(match(r, "interaction.received", H("channel", "email")), "autoscore");
  assert_string_equal(match(r, "interaction.received", H("channel", "sms")), "");
  assert_string_equal(match(r, "interaction.received", NULL), "");
  /* Values compare whole: a prefix or a longer value is another value. */
  assert_string_equal(match(r, "interaction.received", H("channel", "voic")), "");
  assert_string_equal(match(r, "interaction.received", H("channel", "voices")), "");
  assert_string_equal(match(r, "interaction.received", H("channels", "voice")), "");
  /* Several fields: all must match, in any header order. */
  assert_string_equal(match(r, "interaction.purge", H("tenant", "acme", "queue", "gold")),
                      "coaching");
  assert_string_equal(match(r, "interaction.purge", H("queue", "vip", "x", "y", "tenant", "acme")),
                      "coaching");
  assert_string_equal(match(r, "interaction.purge", H("tenant", "acme")), "");
  assert_string_equal(match(r, "interaction.purge", H("tenant", "acme", "queue", "bronze")), "");
  assert_string_equal(match(r, "interaction.purge", H("tenant", "other", "queue", "vip")), "");
  assert_string_equal(
    match(r, "interaction.received", H("channel", "voice", "tenant", "acme", "queue", "vip")),
    "transcribe,coaching");
  qm_routes_destroy(&r);
}

static void test_fan_out_union(void **state) {
  (void)state;
  qm_routes_t *r = load(
    "routes = (\n"
    "  { name = \"a\"; match = \"evaluation.*\"; to = [\"policy\", \"reporting\"]; },\n"
    "  { name = \"b\"; match = \"evaluation.scored\"; to = [\"reporting\", \"coaching\"]; },\n"
    "  { name = \"c\"; match = \"*\"; when = { tenant = \"t\"; }; to = [\"policy\", \"ingest\"]; }\n"
    ");\n");
  /* In route order, each service once. */
  assert_string_equal(match(r, "evaluation.scored", NULL), "policy,reporting,coaching");
  assert_string_equal(match(r, "evaluation.scored", H("tenant", "t")),
                      "policy,reporting,coaching,ingest");
  assert_string_equal(match(r, "evaluation.completed", NULL), "policy,reporting");
  assert_string_equal(match(r, "alert.raised", H("tenant", "t")), "policy,ingest");

  /* The names belong to the table: the same pointers every time. */
  const char *d1[8], *d2[8];
  assert_int_equal(qm_routes_match(r, S("evaluation.scored"), NULL, 0, d1, 8), 3);
  qm_hdr_t h = {S("tenant"), S("t")};
  assert_int_equal(qm_routes_match(r, S("evaluation.scored"), &h, 1, d2, 8), 4);
  for (int i = 0; i < 3; i++) assert_ptr_equal(d1[i], d2[i]);
  /* max bounds what is written. */
  const char *d3[2] = {NULL, NULL};
  assert_int_equal(qm_routes_match(r, S("evaluation.scored"), &h, 1, d3, 1), 1);
  assert_string_equal(d3[0], "policy");
  assert_null(d3[1]);
  assert_int_equal(qm_routes_match(r, S("evaluation.scored"), NULL, 0, d3, 2), 2);
  qm_routes_destroy(&r);
}

static void test_default_only_when_nothing_else(void **state) {
  (void)state;
  qm_routes_t *r =
    load("routes = (\n"
         "  { name = \"fallback\"; match = \"*\"; default = true; to = [\"reporting\"]; },\n"
         "  { name = \"voice\"; match = \"interaction.received\";\n"
         "    when = { channel = \"voice\"; }; to = [\"transcribe\"]; },\n"
         "  { name = \"scored\"; match = \"evaluation.scored\"; to = [\"policy\"]; default = false; },\n"
         "  { name = \"acme-default\"; match = \"interaction.*\"; default = true;\n"
         "    when = { tenant = \"acme\"; }; to = [\"coaching\", \"reporting\"]; }\n"
         ");\n");
  assert_string_equal(match(r, "interaction.received", H("channel", "voice")), "transcribe");
  assert_string_equal(match(r, "interaction.received", H("channel", "voice", "tenant", "acme")),
                      "transcribe");
  assert_string_equal(match(r, "evaluation.scored", NULL), "policy");
  /* Nothing else matched: every matching default, united. */
  assert_string_equal(match(r, "interaction.received", H("channel", "chat")), "reporting");
  assert_string_equal(match(r, "interaction.received", H("tenant", "acme")),
                      "reporting,coaching");
  assert_string_equal(match(r, "alert.raised", H("tenant", "acme")), "reporting");
  assert_string_equal(match(r, "some.other", NULL), "reporting");
  assert_string_equal(match(r, "interaction.other", H("tenant", "acme")), "reporting,coaching");
  qm_routes_destroy(&r);

  /* A default whose match does not take the type does not apply. */
  r = load("routes = ( { name = \"d\"; match = \"alert.*\"; default = true; to = [\"reporting\"]; } );");
  assert_string_equal(match(r, "alert.raised", NULL), "reporting");
  assert_string_equal(match(r, "coaching.updated", NULL), "");
  qm_routes_destroy(&r);
}

/* ---- against a reference ------------------------------------------------ */

typedef struct {
  const char *match;
  const char *field1, *values1[3];
  const char *field2, *values2[3];
  const char *to[3];
  int is_default;
} ref_route_t;

static const ref_route_t ref_routes[] = {
  {"interaction.received", "channel", {"voice"}, NULL, {NULL}, {"transcribe"}, 0},
  {"interaction.received", "channel", {"chat", "email"}, NULL, {NULL}, {"autoscore"}, 0},
  {"interaction.*", NULL, {NULL}, NULL, {NULL}, {"policy", "reporting"}, 0},
  {"evaluation.*", "tenant", {"a", "b"}, "queue", {"q1"}, {"coaching", "policy"}, 0},
  {"evaluation.s*", NULL, {NULL}, NULL, {NULL}, {"recognition"}, 0},
  {"*.*ed", "queue", {"q2"}, NULL, {NULL}, {"ingest", "reporting"}, 0},
  {"*", NULL, {NULL}, NULL, {NULL}, {"reporting"}, 1},
  {"coaching.*", "tenant", {"b"}, NULL, {NULL}, {"coaching"}, 1},
  {"bench.*", "channel", {"voice", "chat"}, NULL, {NULL}, {"ingest"}, 0},
};
#define N_REF (sizeof ref_routes / sizeof ref_routes[0])

static int str_eq(qm_str_t s, const char *c) { return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0; }

static int ref_field_ok(const char *field, const char *const *values, const qm_hdr_t *h,
                        size_t nh) {
  if (!field) return 1;
  for (size_t i = 0; i < nh; i++) {
    if (!str_eq(h[i].k, field)) continue;
    for (size_t v = 0; v < 3 && values[v]; v++)
      if (str_eq(h[i].v, values[v])) return 1;
    return 0;
  }
  return 0;
}

static size_t ref_match(const char *type, const qm_hdr_t *h, size_t nh, const char **out) {
  size_t n = 0;
  for (int pass = 0; pass < 2 && n == 0; pass++)
    for (size_t i = 0; i < N_REF; i++) {
      const ref_route_t *rr = &ref_routes[i];
      if (rr->is_default != pass || fnmatch(rr->match, type, 0) != 0) continue;
      if (!ref_field_ok(rr->field1, rr->values1, h, nh) ||
          !ref_field_ok(rr->field2, rr->values2, h, nh))
        continue;
      for (size_t t = 0; t < 3 && rr->to[t]; t++) {
        size_t k;
        for (k = 0; k < n && strcmp(out[k], rr->to[t]) != 0; k++) {}
        if (k == n) out[n++] = rr->to[t];
      }
    }
  return n;
}

static void append_values(char *buf, const char *field, const char *const *values) {
  if (!field) return;
  strcat(buf, field);
  strcat(buf, " = [");
  for (size_t v = 0; v < 3 && values[v]; v++) {
    strcat(buf, v ? ", \"" : "\"");
    strcat(buf, values[v]);
    strcat(buf, "\"");
  }
  strcat(buf, "]; ");
}

static void test_matches_reference(void **state) {
  (void)state;
  static char text[8192];
  strcpy(text, "extra_types = [\"bench.msg\"];\nroutes = (\n");
  for (size_t i = 0; i < N_REF; i++) {
    const ref_route_t *rr = &ref_routes[i];
    char line[512];
    snprintf(line, sizeof line, "  { name = \"r%zu\"; match = \"%s\"; default = %s; ", i,
             rr->match, rr->is_default ? "true" : "false");
    strcat(text, line);
    if (rr->field1) {
      strcat(text, "when = { ");
      append_values(text, rr->field1, rr->values1);
      append_values(text, rr->field2, rr->values2);
      strcat(text, "}; ");
    }
    strcat(text, "to = [");
    for (size_t t = 0; t < 3 && rr->to[t]; t++) {
      strcat(text, t ? ", \"" : "\"");
      strcat(text, rr->to[t]);
      strcat(text, "\"");
    }
    strcat(text, i + 1 < N_REF ? "]; },\n" : "]; }\n");
  }
  strcat(text, ");\n");
  qm_routes_t *r = load(text);

  const char *types[32];
  size_t nt = 0;
  for (; qm_known_types[nt]; nt++) types[nt] = qm_known_types[nt];
  types[nt++] = "bench.msg";
  types[nt++] = "bench.other"; /* not declared: the slow path */
  types[nt++] = "zzz";
  const char *keys[] = {"channel", "tenant", "queue"};
  const char *vals[] = {NULL, "voice", "chat", "email", "a", "b", "q1", "q2"};
  size_t checked = 0, nonempty = 0, defaults = 0;
  for (size_t t = 0; t < nt; t++)
    for (size_t a = 0; a < 8; a++)
      for (size_t b = 0; b < 8; b++)
        for (size_t c = 0; c < 8; c++) {
          size_t pick[3] = {a, b, c};
          qm_hdr_t h[3];
          size_t nh = 0;
          for (size_t k = 0; k < 3; k++)
            if (vals[pick[k]]) h[nh++] = (qm_hdr_t){S(keys[k]), S(vals[pick[k]])};
          const char *got[QM_ROUTE_DEST_MAX], *want[QM_ROUTE_DEST_MAX];
          size_t ng = qm_routes_match(r, S(types[t]), h, nh, got, QM_ROUTE_DEST_MAX);
          size_t nw = ref_match(types[t], h, nh, want);
          if (ng != nw) fail_msg("%s: %zu destinations, reference %zu", types[t], ng, nw);
          for (size_t i = 0; i < ng; i++)
            if (strcmp(got[i], want[i]) != 0)
              fail_msg("%s: destination %zu is %s, reference %s", types[t], i, got[i], want[i]);
          checked++;
          nonempty += ng > 0;
          defaults += ng == 1 && strcmp(got[0], "reporting") == 0;
        }
  /* The comparison exercised every branch, not only empty answers. */
  assert_int_equal(checked, nt * 512);
  assert_true(nonempty > checked / 2);
  assert_true(defaults > 0);
  qm_routes_destroy(&r);
}

/* ---- the shipped table -------------------------------------------------- */

static void test_shipped_routes(void **state) {
  (void)state;
  qm_routes_t *r = NULL;
  qm_error_t err;
  const char *path = QMESH_SOURCE_DIR "/configs/routes.cfg";
  int rc = qm_routes_load_file(path, std7, 7, &r, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_string_equal(qm_routes_source(r), path);
  assert_int_equal(qm_routes_warnings(r, NULL, NULL), 0);
  assert_string_equal(match(r, "interaction.received", H("channel", "voice")),
                      "transcribe,policy,reporting");
  assert_string_equal(match(r, "interaction.received", H("channel", "chat")),
                      "autoscore,policy,reporting");
  assert_string_equal(match(r, "interaction.received", H("channel", "email")),
                      "autoscore,policy,reporting");
  assert_string_equal(match(r, "interaction.received", H("channel", "sms")), "policy,reporting");
  assert_string_equal(match(r, "transcript.ready", NULL), "autoscore,reporting");
  assert_string_equal(match(r, "evaluation.scored", NULL), "policy,coaching,recognition,reporting");
  assert_string_equal(match(r, "evaluation.completed", NULL),
                      "policy,coaching,recognition,reporting");
  assert_string_equal(match(r, "evaluation.assigned", NULL), "autoscore");
  assert_string_equal(match(r, "calibration.assigned", NULL), "autoscore");
  assert_string_equal(match(r, "evaluation.submitted", NULL), "autoscore");
  assert_string_equal(match(r, "evaluation.acknowledged", NULL), "autoscore");
  assert_string_equal(match(r, "evaluation.disputed", NULL), "autoscore");
  assert_string_equal(match(r, "alert.raised", NULL), "reporting");
  assert_string_equal(match(r, "coaching.requested", NULL), "coaching,reporting");
  assert_string_equal(match(r, "coaching.updated", NULL), "coaching,reporting");
  assert_string_equal(match(r, "recognition.awarded", NULL), "reporting");
  assert_string_equal(match(r, "interaction.purge", NULL),
                      "policy,reporting,ingest,transcribe,autoscore,coaching,recognition");
  qm_routes_destroy(&r);

  /* Without coaching among the services, the shipped table is refused. */
  rc = qm_routes_load_file(path, std7, 4, &r, &err);
  assert_int_equal(rc, QM_ECONFIG);
  assert_null(r);
  assert_non_null(strstr(err.msg, "unknown service \"reporting\" (valid: ingest, transcribe, "
                                   "autoscore, policy)"));
}

/* ---- refusals ----------------------------------------------------------- */

typedef struct {
  const char *text;
  const char *msg;
} bad_t;

#define KNOWN                                                                                \
  "interaction.received, transcript.ready, evaluation.scored, evaluation.assigned, "         \
  "calibration.assigned, evaluation.submitted, evaluation.completed, evaluation.acknowledged, " \
  "evaluation.disputed, alert.raised, coaching.requested, coaching.updated, "                \
  "recognition.awarded, interaction.purge"
#define STD7 "ingest, transcribe, autoscore, policy, coaching, recognition, reporting"
#define R(fields) "routes = ( { name = \"r\"; match = \"*\"; " fields " } );\n"

static const bad_t bad_tables[] = {
  {"routes = (\n  { name = \"r\"; match = ; to = [\"policy\"]; }\n);\n", "t.cfg:2: syntax error"},
  {"", "t.cfg:1: routes: missing (a list: routes = ( { name = \"...\"; match = \"...\"; to = "
       "[\"...\"]; } );)"},
  {"# a comment\nroute = ();\n", "t.cfg:2: route: unknown setting (valid: routes, extra_types)"},
  {"routes = { a = 1; };\n", "t.cfg:1: routes: must be a list ( { ... }, ... ) (got a group)"},
  {"routes = [\"a\"];\n", "t.cfg:1: routes: must be a list ( { ... }, ... ) (got an array)"},
  {"routes = (\n  \"voice\",\n  \"chat\"\n);\n",
   "t.cfg:2: routes.[0]: must be a group { name = ...; match = ...; to = [...]; } (got a "
   "string)"},
  {R("to = [\"policy\"]; destination = [\"x\"];"),
   "t.cfg:1: routes.[0].destination: unknown setting (valid: name, match, when, to, default)"},
  {"routes = ( { match = \"*\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].name: missing (every route needs a unique name)"},
  {"routes = ( { name = 1; match = \"*\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].name: must be a string (got an integer)"},
  {"routes = ( { name = \"\"; match = \"*\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].name: must not be empty"},
  {"routes = ( { name = \"voice to asr\"; match = \"*\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].name: \"voice to asr\" is not a route name (valid: 1 to 64 of A-Z, "
   "a-z, 0-9, '.', '_', '-')"},
  {"routes = (\n  { name = \"a\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"b\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"a\"; match = \"*\"; to = [\"policy\"]; }\n);\n",
   "t.cfg:4: routes.[2].name: duplicate route name \"a\" (first at line 2)"},
  {"routes = ( { name = \"r\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].match: missing (a message type or a glob such as \"evaluation.*\")"},
  {"routes = ( { name = \"r\"; match = [\"a\"]; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].match: must be a string (got an array)"},
  {"routes = (\n  { name = \"a\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"b\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"c\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"d\";\n    match = \"evalution.*\"; to = [\"policy\"]; }\n);\n",
   "t.cfg:6: routes.[3].match: \"evalution.*\" matches no known message type (known: " KNOWN
   ")"},
  {"routes = ( { name = \"r\"; match = \"Interaction.received\"; to = [\"policy\"]; } );\n",
   "t.cfg:1: routes.[0].match: \"Interaction.received\" matches no known message type (known: "
   KNOWN ")"},
  {"extra_types = [\"bench.msg\"];\nroutes = ( { name = \"r\"; match = \"bench\"; to = "
   "[\"policy\"]; } );\n",
   "t.cfg:2: routes.[0].match: \"bench\" matches no known message type (known: " KNOWN
   ", bench.msg)"},
  {R("to = [\"policy\"]; when = [\"voice\"];"),
   "t.cfg:1: routes.[0].when: must be a group { field = [\"value\", ...]; } (got an array)"},
  {R("to = [\"policy\"]; when = { };"), "t.cfg:1: routes.[0].when: must name at least one header field"},
  {R("to = [\"policy\"]; when = { channel = 1; };"),
   "t.cfg:1: routes.[0].when.channel: must be a string or a list of strings (got an integer)"},
  {R("to = [\"policy\"]; when = { channel = []; };"),
   "t.cfg:1: routes.[0].when.channel: must list at least one value"},
  {R("to = [\"policy\"]; when = { channel = (\"voice\", 2); };"),
   "t.cfg:1: routes.[0].when.channel[1]: must be a string (got an integer)"},
  {R("to = [\"policy\"]; when = { channel = [true]; };"),
   "t.cfg:1: routes.[0].when.channel[0]: must be a string (got a boolean)"},
  {"routes = ( { name = \"r\"; match = \"*\"; } );\n",
   "t.cfg:1: routes.[0].to: missing (a list of services)"},
  {R("to = \"policy\";"), "t.cfg:1: routes.[0].to: must be a list of services (got a string)"},
  {R("to = [];"), "t.cfg:1: routes.[0].to: must list at least one service"},
  {R("to = [1];"), "t.cfg:1: routes.[0].to[0]: must be a string (got an integer)"},
  {"routes = (\n  { name = \"a\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"b\"; match = \"*\"; to = [\"policy\"]; },\n"
   "  { name = \"c\"; match = \"*\";\n    to = [\"scoring\"]; }\n);\n",
   "t.cfg:5: routes.[2].to[0]: unknown service \"scoring\" (valid: " STD7 ")"},
  {R("to = [\"policy\",\n \"Policy\"];"),
   "t.cfg:2: routes.[0].to[1]: unknown service \"Policy\" (valid: " STD7 ")"},
  {R("to = [\"policy\", \"reporting\", \"policy\"];"),
   "t.cfg:1: routes.[0].to[2]: \"policy\" is listed twice"},
  {R("to = [\"policy\"]; default = \"yes\";"),
   "t.cfg:1: routes.[0].default: must be true or false (got a string)"},
  {R("to = [\"policy\"]; default = 1;"),
   "t.cfg:1: routes.[0].default: must be true or false (got an integer)"},
  {"extra_types = \"bench.msg\";\nroutes = ();\n",
   "t.cfg:1: extra_types: must be a list of message types (got a string)"},
  {"extra_types = [\"bench.msg\", \"Bench.Msg\"];\nroutes = ();\n",
   "t.cfg:1: extra_types[1]: \"Bench.Msg\" is not a message type (valid: 1 to 64 of a-z, 0-9, "
   "'.', '_', '-')"},
  {"extra_types = (\"bench.msg\", 3);\nroutes = ();\n",
   "t.cfg:1: extra_types[1]: must be a string (got an integer)"},
};

static void test_refusals(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_tables / sizeof bad_tables[0]; i++) {
    qm_routes_t *r = (qm_routes_t *)&r; /* must come back NULL */
    qm_error_t err;
    int rc = qm_routes_load_string(bad_tables[i].text, "t.cfg", std7, 7, &r, &err);
    if (rc != QM_ECONFIG || strcmp(err.msg, bad_tables[i].msg) != 0)
      fail_msg("case %zu:\n%s\n got (%d): %s\nwant: %s", i, bad_tables[i].text, rc, err.msg,
               bad_tables[i].msg);
    assert_int_equal(err.code, QM_ECONFIG);
    assert_null(r);
  }
}

static void test_file_errors(void **state) {
  (void)state;
  qm_routes_t *r = NULL;
  qm_error_t err;
  char want[512];
  const char *p = write_file("bad.cfg", "routes = (\n  { name = \"a\"; match = \"*\"; to = "
                                        "[\"scoring\"]; }\n);\n");
  assert_int_equal(qm_routes_load_file(p, std7, 7, &r, &err), QM_ECONFIG);
  snprintf(want, sizeof want, "%s:2: routes.[0].to[0]: unknown service \"scoring\" (valid: " STD7
           ")", p);
  assert_string_equal(err.msg, want);
  assert_null(r);

  p = write_file("syntax.cfg", "routes = (\n\n  { name = \"a\" = }\n);\n");
  assert_int_equal(qm_routes_load_file(p, std7, 7, &r, &err), QM_ECONFIG);
  snprintf(want, sizeof want, "%s:3: syntax error", p);
  assert_string_equal(err.msg, want);

  snprintf(want, sizeof want, "%s/none.cfg", tmpdir);
  assert_int_equal(qm_routes_load_file(want, std7, 7, &r, &err), QM_ECONFIG);
  strcat(want, ":1: cannot read: No such file or directory");
  assert_string_equal(err.msg, want);

  /* @include resolves against the route file's directory, and an error in
   * the included file names that file. */
  write_file("part.inc", "\n{ name = \"x\"; match = \"*\"; to = [\"nobody\"]; }\n");
  p = write_file("main.cfg", "routes = (\n@include \"part.inc\"\n);\n");
  assert_int_equal(qm_routes_load_file(p, std7, 7, &r, &err), QM_ECONFIG);
  snprintf(want, sizeof want, "%s/part.inc:2: routes.[0].to[0]: unknown service \"nobody\" "
           "(valid: " STD7 ")", tmpdir);
  assert_string_equal(err.msg, want);
}

static void test_custom_services(void **state) {
  (void)state;
  const char *svcs[] = {"src", "dst"};
  qm_routes_t *r = NULL;
  qm_error_t err;
  int rc = qm_routes_load_string(
    "extra_types = [\"bench.msg\"];\n"
    "routes = ( { name = \"bench\"; match = \"bench.msg\"; to = [\"dst\"]; } );\n",
    "b.cfg", svcs, 2, &r, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_string_equal(match(r, "bench.msg", NULL), "dst");
  qm_routes_destroy(&r);
  rc = qm_routes_load_string("routes = ( { name = \"x\"; match = \"*\"; to = [\"ingest\"]; } );",
                             "b.cfg", svcs, 2, &r, &err);
  assert_int_equal(rc, QM_ECONFIG);
  assert_string_equal(err.msg,
                      "b.cfg:1: routes.[0].to[0]: unknown service \"ingest\" (valid: src, dst)");
}

/* ---- warnings and printing ---------------------------------------------- */

typedef struct {
  char text[4096];
  size_t n;
} collect_t;

static void collect(void *ud, const char *msg) {
  collect_t *c = ud;
  strcat(c->text, msg);
  strcat(c->text, "\n");
  c->n++;
}

static void test_warnings(void **state) {
  (void)state;
  qm_routes_t *r =
    load("extra_types = [\"bench.msg\"];\n"
         "routes = (\n"
         "  { name = \"voice\"; match = \"interaction.received\"; when = { channel = \"voice\"; };"
         " to = [\"transcribe\"]; },\n"
         "  { name = \"chat\"; match = \"interaction.received\"; when = { channel = \"chat\"; };"
         " to = [\"autoscore\"]; },\n"
         "  { name = \"eval\"; match = \"evaluation.*\"; to = [\"policy\"]; },\n"
         "  { name = \"acme\"; match = \"coaching.*\"; when = { tenant = \"acme\"; }; to = "
         "[\"coaching\"]; },\n"
         "  { name = \"coach-default\"; match = \"coaching.updated\"; default = true; to = "
         "[\"reporting\"]; },\n"
         "  { name = \"purge\"; match = \"interaction.purge\"; default = true; to = "
         "[\"ingest\"]; },\n"
         "  { name = \"alert\"; match = \"alert.raised\"; to = [\"reporting\"]; }\n"
         ");\n");
  collect_t c = {{0}, 0};
  size_t n = qm_routes_warnings(r, collect, &c);
  assert_int_equal(n, c.n);
  assert_string_equal(
    c.text,
    "type \"interaction.received\" is taken only when its headers match a route's \"when\" "
    "(routes: voice, chat)\n"
    "type \"transcript.ready\" is taken by no route\n"
    "type \"calibration.assigned\" is taken by no route\n"
    "type \"coaching.requested\" is taken only when its headers match a route's \"when\" "
    "(routes: acme)\n"
    "type \"recognition.awarded\" is taken by no route\n"
    "type \"bench.msg\" is taken by no route\n");
  /* A NULL callback still counts. */
  assert_int_equal(qm_routes_warnings(r, NULL, NULL), 6);
  qm_routes_destroy(&r);

  r = load("routes = ( { name = \"all\"; match = \"*\"; to = [\"reporting\"]; } );");
  assert_int_equal(qm_routes_warnings(r, NULL, NULL), 0);
  qm_routes_destroy(&r);
  assert_int_equal(qm_routes_warnings(NULL, NULL, NULL), 0);
}

static void test_print(void **state) {
  (void)state;
  qm_routes_t *r =
    load("routes = (\n"
         "  { name = \"voice-to-asr\"; match = \"interaction.received\";\n"
         "    when = { channel = [\"voice\", \"phone\"]; tenant = \"acme\"; }; to = [\"transcribe\"]; },\n"
         "  { name = \"fallback\"; match = \"*\"; default = true; to = [\"policy\", \"reporting\"]; }\n"
         ");\n");
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  qm_routes_print(r, f);
  fclose(f);
  assert_string_equal(buf,
                      "NAME          MATCH                 WHEN                             TO  "
                      "              DEFAULT\n"
                      "voice-to-asr  interaction.received  channel=voice|phone tenant=acme  "
                      "transcribe        no\n"
                      "fallback      *                     -                                "
                      "policy,reporting  yes\n");
  free(buf);
  qm_routes_destroy(&r);
}

static void test_empty_table(void **state) {
  (void)state;
  qm_routes_t *r = load("routes = ();\n");
  assert_int_equal(qm_routes_count(r), 0);
  assert_string_equal(match(r, "interaction.received", NULL), "");
  assert_string_equal(match(r, "unknown.type", NULL), "");
  size_t known = 0;
  while (qm_known_types[known]) known++;
  assert_int_equal(qm_routes_warnings(r, NULL, NULL), known);
  qm_routes_destroy(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_known_types),
    cmocka_unit_test(test_exact_and_glob),
    cmocka_unit_test(test_when),
    cmocka_unit_test(test_fan_out_union),
    cmocka_unit_test(test_default_only_when_nothing_else),
    cmocka_unit_test(test_matches_reference),
    cmocka_unit_test(test_shipped_routes),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_file_errors),
    cmocka_unit_test(test_custom_services),
    cmocka_unit_test(test_warnings),
    cmocka_unit_test(test_print),
    cmocka_unit_test(test_empty_table),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
