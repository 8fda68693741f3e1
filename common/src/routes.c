/*
 * routes.c: the route table (see routes.h).
 *
 * Loading does all the work that can be done once: the file is validated
 * completely (unknown keys, types, service names, patterns that can never
 * match), every destination is interned as a small index, and for every known
 * message type the routes whose `match` glob takes it are listed in advance.
 * Matching a message then costs one hash lookup of its type and, for the
 * routes that have a `when`, a comparison of a few header values; a type
 * whose candidate routes are all unconditional gets an answer computed at load
 * time. Types outside the known list (a table built with fewer extra_types
 * than a sender uses) fall back to fnmatch over every route, so the answer is
 * always the same, only slower.
 *
 * A table never changes once built, so any number of threads may match
 * against it; a reload builds a new table and the caller swaps pointers.
 */
#include "routes.h"
#include "cfgutil.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const qm_known_types[] = {
  "interaction.received", "transcript.ready",        "evaluation.scored",
  "evaluation.assigned",  "calibration.assigned",    "evaluation.submitted",
  "evaluation.completed", "evaluation.acknowledged", "evaluation.disputed",
  "alert.raised",         "coaching.requested",      "coaching.updated",
  "recognition.awarded",  "interaction.purge",       NULL,
};

/* Destinations are interned as bits of a 64-bit set, which bounds the
 * distinct services one table may name. */
#define DEST_SET_MAX 64
#define ROUTE_NAME_MAX 64

static const char *const root_keys[] = {"routes", "extra_types", NULL};
static const char *const route_keys[] = {"name", "match", "when", "to", "default", NULL};

typedef struct when_field {
  char *field;
  size_t field_len;
  size_t n_values;
  char **values;
  size_t *value_lens;
} when_field_t;

typedef struct route {
  char *name;
  char *match;
  unsigned line;
  int is_default;
  int literal; /* match has no glob character: compare bytes */
  size_t n_when;
  when_field_t *when;
  size_t n_to;
  uint8_t to[QM_ROUTE_DEST_MAX]; /* indices into qm_routes.dests */
} route_t;

/* What is known in advance about one message type. */
typedef struct type_entry {
  const char *type;
  size_t len;
  size_t n_cand;     /* non-default routes whose match takes this type */
  uint16_t *cand;
  size_t n_def;      /* default routes whose match takes this type */
  uint16_t *def;
  int fixed;         /* no candidate has a `when`: the answer below is final */
  size_t n_fixed;
  uint8_t fixed_dest[DEST_SET_MAX];
} type_entry_t;

struct qm_routes {
  char *source;
  size_t n_routes;
  route_t *routes;
  size_t n_dests;
  char *dests[DEST_SET_MAX];
  size_t n_types; /* built-in then extra */
  char **types;
  type_entry_t *entries;
  size_t hash_mask;
  int32_t *hash; /* index into entries, -1 when empty */
};

/* ---- errors ------------------------------------------------------------- */

typedef struct ctx {
  const char *file;
  const char *dir; /* where @include looks; NULL for a string */
  qm_error_t *err;
  char name_buf[4096];
  const char *const *services;
  size_t n_services;
} ctx_t;

static unsigned line_of(const config_setting_t *s) {
  unsigned l = s ? config_setting_source_line(s) : 0;
  return l ? l : 1;
}

/* libconfig records an @include'd file by the name written in the
 * directive, which it resolved against the include directory; resolve it the
 * same way so messages name the real file. */
static const char *source_name(ctx_t *c, const char *f) {
  if (!f) return c->file;
  if (strcmp(f, c->file) == 0 || f[0] == '/' || !c->dir || strcmp(c->dir, ".") == 0) return f;
  int w = snprintf(c->name_buf, sizeof c->name_buf, "%s/%s", c->dir, f);
  return w >= 0 && (size_t)w < sizeof c->name_buf ? c->name_buf : f;
}

__attribute__((format(printf, 4, 5))) static int fail(ctx_t *c, const config_setting_t *s,
                                                      const char *path, const char *fmt, ...) {
  char what[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qm_error_set(c->err, QM_ECONFIG, "%s:%u: %s: %s",
                      source_name(c, s ? config_setting_source_file(s) : NULL), line_of(s), path,
                      what);
}

static int nomem(ctx_t *c) { return qm_error_set(c->err, QM_ENOMEM, "%s: out of memory", c->file); }



static int in_list(const char *s, const char *const *names) {
  for (size_t i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0) return 1;
  return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static int has_glob(const char *p) { return strpbrk(p, "*?[\\") != NULL; }

static int type_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > QM_TYPE_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
          s[i] == '_' || s[i] == '-'))
      return 0;
  return 1;
}

static int route_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ROUTE_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return 0;
  return 1;
}

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ull;
  }
  return h;
}

static int route_takes_type(const route_t *r, const char *type) {
  if (r->literal) return strcmp(r->match, type) == 0;
  return fnmatch(r->match, type, 0) == 0;
}

/* ---- destroy ------------------------------------------------------------ */

void qm_routes_destroy(qm_routes_t **pr) {
  if (!pr || !*pr) return;
  qm_routes_t *r = *pr;
  for (size_t i = 0; i < r->n_routes; i++) {
    route_t *rt = &r->routes[i];
    free(rt->name);
    free(rt->match);
    for (size_t w = 0; w < rt->n_when; w++) {
      for (size_t v = 0; v < rt->when[w].n_values; v++) free(rt->when[w].values[v]);
      free(rt->when[w].values);
      free(rt->when[w].value_lens);
      free(rt->when[w].field);
    }
    free(rt->when);
  }
  free(r->routes);
  for (size_t i = 0; i < r->n_dests; i++) free(r->dests[i]);
  for (size_t i = 0; i < r->n_types; i++) free(r->types[i]);
  free(r->types);
  if (r->entries)
    for (size_t i = 0; i < r->n_types; i++) {
      free(r->entries[i].cand);
      free(r->entries[i].def);
    }
  free(r->entries);
  free(r->hash);
  free(r->source);
  free(r);
  *pr = NULL;
}

/* ---- loading ------------------------------------------------------------ */

static int add_type(ctx_t *c, qm_routes_t *r, const char *t) {
  for (size_t i = 0; i < r->n_types; i++)
    if (strcmp(r->types[i], t) == 0) return 0;
  char **nt = realloc(r->types, (r->n_types + 1) * sizeof *nt);
  if (!nt) return nomem(c);
  r->types = nt;
  if (!(r->types[r->n_types] = strdup(t))) return nomem(c);
  r->n_types++;
  return 0;
}

static int load_types(ctx_t *c, qm_routes_t *r, const config_setting_t *root) {
  int rc;
  for (size_t i = 0; qm_known_types[i]; i++)
    if ((rc = add_type(c, r, qm_known_types[i]))) return rc;
  const config_setting_t *x = config_setting_get_member(root, "extra_types");
  if (!x) return 0;
  if (!config_setting_is_array(x) && !config_setting_is_list(x))
    return fail(c, x, "extra_types", "must be a list of message types (got %s)", qm__cfg_type_name(x));
  int n = config_setting_length(x);
  for (int i = 0; i < n; i++) {
    const config_setting_t *e = config_setting_get_elem(x, (unsigned)i);
    char path[64];
    snprintf(path, sizeof path, "extra_types[%d]", i);
    if (config_setting_type(e) != CONFIG_TYPE_STRING)
      return fail(c, e, path, "must be a string (got %s)", qm__cfg_type_name(e));
    const char *t = config_setting_get_string(e);
    if (!type_name_ok(t))
      return fail(c, e, path,
                  "\"%s\" is not a message type (valid: 1 to %d of a-z, 0-9, '.', '_', '-')", t,
                  QM_TYPE_MAX);
    /* A type that is already known is accepted silently, so a deployment
     * that declared a type before it became built-in keeps loading. */
    if ((rc = add_type(c, r, t))) return rc;
  }
  return 0;
}

static int get_required_string(ctx_t *c, const config_setting_t *g, const char *rpath,
                               const char *key, const char *missing, const char **out) {
  const config_setting_t *s = config_setting_get_member(g, key);
  char path[96];
  snprintf(path, sizeof path, "%s.%s", rpath, key);
  if (!s) return fail(c, g, path, "missing (%s)", missing);
  if (config_setting_type(s) != CONFIG_TYPE_STRING)
    return fail(c, s, path, "must be a string (got %s)", qm__cfg_type_name(s));
  *out = config_setting_get_string(s);
  if (!**out) return fail(c, s, path, "must not be empty");
  return 0;
}

static int load_when(ctx_t *c, route_t *rt, const config_setting_t *w, const char *rpath) {
  char path[160];
  snprintf(path, sizeof path, "%s.when", rpath);
  if (!config_setting_is_group(w))
    return fail(c, w, path, "must be a group { field = [\"value\", ...]; } (got %s)",
                qm__cfg_type_name(w));
  int n = config_setting_length(w);
  if (n == 0) return fail(c, w, path, "must name at least one header field");
  if (!(rt->when = calloc((size_t)n, sizeof *rt->when))) return nomem(c);
  for (int i = 0; i < n; i++) {
    const config_setting_t *f = config_setting_get_elem(w, (unsigned)i);
    when_field_t *wf = &rt->when[rt->n_when++];
    char fpath[256];
    snprintf(fpath, sizeof fpath, "%s.%s", path, config_setting_name(f));
    if (!(wf->field = strdup(config_setting_name(f)))) return nomem(c);
    wf->field_len = strlen(wf->field);
    int nv;
    if (config_setting_type(f) == CONFIG_TYPE_STRING)
      nv = 1;
    else if (config_setting_is_array(f) || config_setting_is_list(f))
      nv = config_setting_length(f);
    else
      return fail(c, f, fpath, "must be a string or a list of strings (got %s)", qm__cfg_type_name(f));
    if (nv == 0) return fail(c, f, fpath, "must list at least one value");
    wf->values = calloc((size_t)nv, sizeof *wf->values);
    wf->value_lens = calloc((size_t)nv, sizeof *wf->value_lens);
    if (!wf->values || !wf->value_lens) return nomem(c);
    for (int v = 0; v < nv; v++) {
      const config_setting_t *e = f;
      if (config_setting_type(f) != CONFIG_TYPE_STRING) {
        e = config_setting_get_elem(f, (unsigned)v);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
          char epath[300];
          snprintf(epath, sizeof epath, "%s[%d]", fpath, v);
          return fail(c, e, epath, "must be a string (got %s)", qm__cfg_type_name(e));
        }
      }
      if (!(wf->values[v] = strdup(config_setting_get_string(e)))) return nomem(c);
      wf->value_lens[v] = strlen(wf->values[v]);
      wf->n_values++;
    }
  }
  return 0;
}

static int intern_dest(ctx_t *c, qm_routes_t *r, const config_setting_t *e, const char *path,
                       const char *svc, uint8_t *idx) {
  for (size_t i = 0; i < r->n_dests; i++)
    if (strcmp(r->dests[i], svc) == 0) {
      *idx = (uint8_t)i;
      return 0;
    }
  if (r->n_dests >= DEST_SET_MAX)
    return fail(c, e, path, "a table may name at most %d distinct services", DEST_SET_MAX);
  if (!(r->dests[r->n_dests] = strdup(svc))) return nomem(c);
  *idx = (uint8_t)r->n_dests++;
  return 0;
}

static int load_to(ctx_t *c, qm_routes_t *r, route_t *rt, const config_setting_t *g,
                   const char *rpath) {
  char path[160];
  snprintf(path, sizeof path, "%s.to", rpath);
  const config_setting_t *to = config_setting_get_member(g, "to");
  if (!to) return fail(c, g, path, "missing (a list of services)");
  if (!config_setting_is_array(to) && !config_setting_is_list(to))
    return fail(c, to, path, "must be a list of services (got %s)", qm__cfg_type_name(to));
  int n = config_setting_length(to);
  if (n == 0) return fail(c, to, path, "must list at least one service");
  if (n > QM_ROUTE_DEST_MAX)
    return fail(c, to, path, "lists %d services (at most %d)", n, QM_ROUTE_DEST_MAX);
  for (int i = 0; i < n; i++) {
    const config_setting_t *e = config_setting_get_elem(to, (unsigned)i);
    char epath[200];
    snprintf(epath, sizeof epath, "%s[%d]", path, i);
    if (config_setting_type(e) != CONFIG_TYPE_STRING)
      return fail(c, e, epath, "must be a string (got %s)", qm__cfg_type_name(e));
    const char *svc = config_setting_get_string(e);
    size_t k;
    for (k = 0; k < c->n_services; k++)
      if (c->services[k] && strcmp(c->services[k], svc) == 0) break;
    if (k == c->n_services) {
      char list[768];
      qm__join_names(list, sizeof list, c->services, c->n_services);
      return fail(c, e, epath, "unknown service \"%s\" (valid: %s)", svc, list);
    }
    uint8_t idx = 0;
    int rc = intern_dest(c, r, e, epath, svc, &idx);
    if (rc) return rc;
    for (size_t j = 0; j < rt->n_to; j++)
      if (rt->to[j] == idx) return fail(c, e, epath, "\"%s\" is listed twice", svc);
    rt->to[rt->n_to++] = idx;
  }
  return 0;
}

static int load_route(ctx_t *c, qm_routes_t *r, const config_setting_t *g, size_t index) {
  char rpath[48];
  snprintf(rpath, sizeof rpath, "routes.[%zu]", index);
  if (!config_setting_is_group(g))
    return fail(c, g, rpath, "must be a group { name = ...; match = ...; to = [...]; } (got %s)",
                qm__cfg_type_name(g));
  int n = config_setting_length(g);
  for (int i = 0; i < n; i++) {
    const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
    if (in_list(config_setting_name(m), route_keys)) continue;
    char path[200], list[128];
    snprintf(path, sizeof path, "%s.%s", rpath, config_setting_name(m));
    qm__join_names(list, sizeof list, route_keys, SIZE_MAX);
    return fail(c, m, path, "unknown setting (valid: %s)", list);
  }

  route_t *rt = &r->routes[r->n_routes++];
  rt->line = line_of(g);
  int rc;
  const char *name, *match;
  if ((rc = get_required_string(c, g, rpath, "name", "every route needs a unique name", &name)))
    return rc;
  const config_setting_t *ns = config_setting_get_member(g, "name");
  char path[96];
  snprintf(path, sizeof path, "%s.name", rpath);
  if (!route_name_ok(name))
    return fail(c, ns, path, "\"%s\" is not a route name (valid: 1 to %d of A-Z, a-z, 0-9, '.', "
                "'_', '-')", name, ROUTE_NAME_MAX);
  for (size_t i = 0; i + 1 < r->n_routes; i++)
    if (strcmp(r->routes[i].name, name) == 0)
      return fail(c, ns, path, "duplicate route name \"%s\" (first at line %u)", name,
                  r->routes[i].line);
  if (!(rt->name = strdup(name))) return nomem(c);

  if ((rc = get_required_string(c, g, rpath, "match",
                                "a message type or a glob such as \"evaluation.*\"", &match)))
    return rc;
  if (!(rt->match = strdup(match))) return nomem(c);
  rt->literal = !has_glob(match);
  size_t hits = 0;
  for (size_t i = 0; i < r->n_types; i++) hits += route_takes_type(rt, r->types[i]);
  if (hits == 0) {
    char list[700];
    qm__join_names(list, sizeof list, (const char *const *)r->types, r->n_types);
    snprintf(path, sizeof path, "%s.match", rpath);
    return fail(c, config_setting_get_member(g, "match"), path,
                "\"%s\" matches no known message type (known: %s)", match, list);
  }

  const config_setting_t *w = config_setting_get_member(g, "when");
  if (w && (rc = load_when(c, rt, w, rpath))) return rc;
  if ((rc = load_to(c, r, rt, g, rpath))) return rc;

  const config_setting_t *d = config_setting_get_member(g, "default");
  if (d) {
    snprintf(path, sizeof path, "%s.default", rpath);
    if (config_setting_type(d) != CONFIG_TYPE_BOOL)
      return fail(c, d, path, "must be true or false (got %s)", qm__cfg_type_name(d));
    rt->is_default = config_setting_get_bool(d);
  }
  return 0;
}

/* Adds a route's destinations to the output, each service once. */
static inline void add_dests(const qm_routes_t *r, const route_t *rt, uint64_t *seen,
                             const char **dests, size_t max, size_t *n) {
  for (size_t j = 0; j < rt->n_to; j++) {
    uint64_t bit = 1ull << rt->to[j];
    if (*seen & bit) continue;
    *seen |= bit;
    if (*n < max) dests[(*n)++] = r->dests[rt->to[j]];
  }
}

static int build_index(ctx_t *c, qm_routes_t *r) {
  if (!(r->entries = calloc(r->n_types, sizeof *r->entries))) return nomem(c);
  size_t cap = 16;
  while (cap < r->n_types * 2) cap <<= 1;
  if (!(r->hash = malloc(cap * sizeof *r->hash))) return nomem(c);
  for (size_t i = 0; i < cap; i++) r->hash[i] = -1;
  r->hash_mask = cap - 1;

  for (size_t t = 0; t < r->n_types; t++) {
    type_entry_t *e = &r->entries[t];
    e->type = r->types[t];
    e->len = strlen(e->type);
    if (r->n_routes) {
      e->cand = malloc(r->n_routes * sizeof *e->cand);
      e->def = malloc(r->n_routes * sizeof *e->def);
      if (!e->cand || !e->def) return nomem(c);
    }
    int conditional = 0;
    for (size_t i = 0; i < r->n_routes; i++) {
      const route_t *rt = &r->routes[i];
      if (!route_takes_type(rt, e->type)) continue;
      if (rt->is_default)
        e->def[e->n_def++] = (uint16_t)i;
      else
        e->cand[e->n_cand++] = (uint16_t)i;
      conditional |= rt->n_when > 0;
    }
    if (!conditional) {
      /* Every route that takes this type takes it whatever its headers, so
       * the answer is the same for every message of the type. */
      uint64_t seen = 0;
      size_t n = 0;
      const uint16_t *list = e->n_cand ? e->cand : e->def;
      size_t nl = e->n_cand ? e->n_cand : e->n_def;
      for (size_t i = 0; i < nl; i++) {
        const route_t *rt = &r->routes[list[i]];
        for (size_t j = 0; j < rt->n_to; j++) {
          if (seen & (1ull << rt->to[j])) continue;
          seen |= 1ull << rt->to[j];
          e->fixed_dest[n++] = rt->to[j];
        }
      }
      e->n_fixed = n;
      e->fixed = 1;
    }
    size_t h = hash_bytes(e->type, e->len) & r->hash_mask;
    while (r->hash[h] >= 0) h = (h + 1) & r->hash_mask;
    r->hash[h] = (int32_t)t;
  }
  return 0;
}

static int load_config(config_t *cf, const char *name, const char *dir,
                       const char *const *services, size_t n, qm_routes_t **out,
                       qm_error_t *err) {
  ctx_t c = {.file = name, .dir = dir, .err = err, .services = services, .n_services = n};
  qm_routes_t *r = calloc(1, sizeof *r);
  if (!r) return nomem(&c);
  int rc;
  if (!(r->source = strdup(name))) {
    rc = nomem(&c);
    goto fail;
  }
  const config_setting_t *root = config_root_setting(cf);
  int nroot = config_setting_length(root);
  for (int i = 0; i < nroot; i++) {
    const config_setting_t *m = config_setting_get_elem(root, (unsigned)i);
    if (in_list(config_setting_name(m), root_keys)) continue;
    char list[64];
    qm__join_names(list, sizeof list, root_keys, SIZE_MAX);
    rc = fail(&c, m, config_setting_name(m), "unknown setting (valid: %s)", list);
    goto fail;
  }
  if ((rc = load_types(&c, r, root))) goto fail;
  const config_setting_t *routes = config_setting_get_member(root, "routes");
  if (!routes) {
    rc = fail(&c, NULL, "routes",
              "missing (a list: routes = ( { name = \"...\"; match = \"...\"; to = [\"...\"]; } );)");
    goto fail;
  }
  if (!config_setting_is_list(routes)) {
    rc = fail(&c, routes, "routes", "must be a list ( { ... }, ... ) (got %s)",
              qm__cfg_type_name(routes));
    goto fail;
  }
  size_t nr = (size_t)config_setting_length(routes);
  if (nr > UINT16_MAX) {
    rc = fail(&c, routes, "routes", "too many routes (at most %d)", UINT16_MAX);
    goto fail;
  }
  if (nr && !(r->routes = calloc(nr, sizeof *r->routes))) {
    rc = nomem(&c);
    goto fail;
  }
  for (size_t i = 0; i < nr; i++)
    if ((rc = load_route(&c, r, config_setting_get_elem(routes, (unsigned)i), i))) goto fail;
  if ((rc = build_index(&c, r))) goto fail;
  *out = r;
  return 0;
fail:
  qm_routes_destroy(&r);
  return rc;
}

static int read_error(config_t *cf, const char *name, const char *dir, qm_error_t *err) {
  if (config_error_type(cf) == CONFIG_ERR_FILE_IO) {
    int e = errno;
    return qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", name,
                        e ? strerror(e) : "file I/O error");
  }
  ctx_t c = {.file = name, .dir = dir};
  return qm_error_set(err, QM_ECONFIG, "%s:%d: %s", source_name(&c, config_error_file(cf)),
                      config_error_line(cf), config_error_text(cf));
}

int qm_routes_load_file(const char *path, const char *const *services, size_t n,
                        qm_routes_t **out, qm_error_t *err) {
  *out = NULL;
  qm_error_clear(err);
  if (!path || !*path) return qm_error_set(err, QM_ECONFIG, "(none):1: routes: no file given");
  config_t cf;
  config_init(&cf);
  /* @include in a route file resolves against the file's own directory. */
  const char *slash = strrchr(path, '/');
  char dir[4096] = ".";
  if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
  config_set_include_dir(&cf, dir);
  int rc;
  /* libconfig says only "file I/O error"; stat first to say which. */
  struct stat st;
  errno = 0;
  if (stat(path, &st) != 0 || S_ISDIR(st.st_mode))
    rc = qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", path,
                      strerror(errno ? errno : EISDIR));
  else if (!config_read_file(&cf, path))
    rc = read_error(&cf, path, dir, err);
  else
    rc = load_config(&cf, path, dir, services, n, out, err);
  config_destroy(&cf);
  return rc;
}

int qm_routes_load_string(const char *text, const char *name, const char *const *services,
                          size_t n, qm_routes_t **out, qm_error_t *err) {
  *out = NULL;
  qm_error_clear(err);
  if (!name) name = "(string)";
  config_t cf;
  config_init(&cf);
  int rc;
  if (!config_read_string(&cf, text ? text : ""))
    rc = read_error(&cf, name, NULL, err);
  else
    rc = load_config(&cf, name, NULL, services, n, out, err);
  config_destroy(&cf);
  return rc;
}

/* ---- matching ----------------------------------------------------------- */

static inline int when_ok(const route_t *rt, const qm_hdr_t *hdr, size_t nhdr) {
  for (size_t w = 0; w < rt->n_when; w++) {
    const when_field_t *wf = &rt->when[w];
    const qm_hdr_t *h = NULL;
    for (size_t i = 0; i < nhdr; i++)
      if (hdr[i].k.n == wf->field_len && memcmp(hdr[i].k.p, wf->field, wf->field_len) == 0) {
        h = &hdr[i];
        break;
      }
    if (!h) return 0;
    size_t v;
    for (v = 0; v < wf->n_values; v++)
      if (h->v.n == wf->value_lens[v] && memcmp(h->v.p, wf->values[v], h->v.n) == 0) break;
    if (v == wf->n_values) return 0;
  }
  return 1;
}

static const type_entry_t *find_type(const qm_routes_t *r, qm_str_t type) {
  size_t h = hash_bytes(type.p, type.n) & r->hash_mask;
  for (;;) {
    int32_t i = r->hash[h];
    if (i < 0) return NULL;
    const type_entry_t *e = &r->entries[i];
    if (e->len == type.n && memcmp(e->type, type.p, type.n) == 0) return e;
    h = (h + 1) & r->hash_mask;
  }
}

size_t qm_routes_match(const qm_routes_t *r, qm_str_t type, const qm_hdr_t *hdr, size_t nhdr,
                       const char **dests, size_t max) {
  if (!r || !type.p || type.n == 0) return 0;
  uint64_t seen = 0;
  size_t n = 0;
  const type_entry_t *e = find_type(r, type);
  if (e) {
    if (e->fixed) {
      size_t k = e->n_fixed < max ? e->n_fixed : max;
      for (size_t i = 0; i < k; i++) dests[i] = r->dests[e->fixed_dest[i]];
      return k;
    }
    for (size_t i = 0; i < e->n_cand; i++) {
      const route_t *rt = &r->routes[e->cand[i]];
      if (when_ok(rt, hdr, nhdr)) add_dests(r, rt, &seen, dests, max, &n);
    }
    if (seen) return n;
    for (size_t i = 0; i < e->n_def; i++) {
      const route_t *rt = &r->routes[e->def[i]];
      if (when_ok(rt, hdr, nhdr)) add_dests(r, rt, &seen, dests, max, &n);
    }
    return n;
  }
  /* A type the table does not know: same rules, globs evaluated now. */
  if (type.n > QM_TYPE_MAX || memchr(type.p, '\0', type.n)) return 0;
  char t[QM_TYPE_MAX + 1];
  memcpy(t, type.p, type.n);
  t[type.n] = '\0';
  for (int pass = 0; pass < 2 && !seen; pass++)
    for (size_t i = 0; i < r->n_routes; i++) {
      const route_t *rt = &r->routes[i];
      if (rt->is_default != pass || !route_takes_type(rt, t) || !when_ok(rt, hdr, nhdr))
        continue;
      add_dests(r, rt, &seen, dests, max, &n);
    }
  return n;
}

/* ---- reporting ---------------------------------------------------------- */

size_t qm_routes_warnings(const qm_routes_t *r, void (*fn)(void *ud, const char *msg), void *ud) {
  if (!r) return 0;
  size_t count = 0;
  for (size_t t = 0; t < r->n_types; t++) {
    const type_entry_t *e = &r->entries[t];
    char msg[1024];
    if (e->n_cand + e->n_def == 0) {
      snprintf(msg, sizeof msg, "type \"%s\" is taken by no route", e->type);
    } else if (!e->fixed) {
      /* Conditional routes only: some header combination (at the least, no
       * headers at all) reaches no route. Routes without a `when` make the
       * entry fixed, so here every candidate has one. */
      int conditional_only = 1;
      for (size_t i = 0; i < e->n_cand && conditional_only; i++)
        conditional_only = r->routes[e->cand[i]].n_when > 0;
      for (size_t i = 0; i < e->n_def && conditional_only; i++)
        conditional_only = r->routes[e->def[i]].n_when > 0;
      if (!conditional_only) continue;
      size_t used = (size_t)snprintf(msg, sizeof msg,
                                     "type \"%s\" is taken only when its headers match a "
                                     "route's \"when\" (routes: ",
                                     e->type);
      for (size_t k = 0; k < e->n_cand + e->n_def && used < sizeof msg; k++) {
        uint16_t ri = k < e->n_cand ? e->cand[k] : e->def[k - e->n_cand];
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s", k ? ", " : "",
                                 r->routes[ri].name);
      }
      if (used < sizeof msg) snprintf(msg + used, sizeof msg - used, ")");
    } else {
      continue;
    }
    count++;
    if (fn) fn(ud, msg);
  }
  return count;
}

static void format_when(const route_t *rt, char *out, size_t outlen) {
  size_t used = 0;
  out[0] = '\0';
  if (rt->n_when == 0) {
    snprintf(out, outlen, "-");
    return;
  }
  for (size_t w = 0; w < rt->n_when && used < outlen; w++) {
    used += (size_t)snprintf(out + used, outlen - used, "%s%s=", w ? " " : "", rt->when[w].field);
    for (size_t v = 0; v < rt->when[w].n_values && used < outlen; v++)
      used += (size_t)snprintf(out + used, outlen - used, "%s%s", v ? "|" : "",
                               rt->when[w].values[v]);
  }
}

static void format_to(const qm_routes_t *r, const route_t *rt, char *out, size_t outlen) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < rt->n_to && used < outlen; i++)
    used += (size_t)snprintf(out + used, outlen - used, "%s%s", i ? "," : "",
                             r->dests[rt->to[i]]);
}

void qm_routes_print(const qm_routes_t *r, FILE *out) {
  if (!r || !out) return;
  int wn = 4, wm = 5, ww = 4, wt = 2;
  char when[1024], to[1024];
  for (size_t i = 0; i < r->n_routes; i++) {
    const route_t *rt = &r->routes[i];
    format_when(rt, when, sizeof when);
    format_to(r, rt, to, sizeof to);
    int l;
    if ((l = (int)strlen(rt->name)) > wn) wn = l;
    if ((l = (int)strlen(rt->match)) > wm) wm = l;
    if ((l = (int)strlen(when)) > ww) ww = l;
    if ((l = (int)strlen(to)) > wt) wt = l;
  }
  fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s\n", wn, "NAME", wm, "MATCH", ww, "WHEN", wt, "TO",
          "DEFAULT");
  for (size_t i = 0; i < r->n_routes; i++) {
    const route_t *rt = &r->routes[i];
    format_when(rt, when, sizeof when);
    format_to(r, rt, to, sizeof to);
    fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s\n", wn, rt->name, wm, rt->match, ww, when, wt, to,
            rt->is_default ? "yes" : "no");
  }
}

size_t qm_routes_count(const qm_routes_t *r) { return r ? r->n_routes : 0; }

const char *qm_routes_source(const qm_routes_t *r) { return r ? r->source : NULL; }
