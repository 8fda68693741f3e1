/*
 * plugin.c: the plugin loader, the one gate every plugin passes (loader.h).
 *
 * Loading is a sequence of refusals, each a sentence naming the plugin and
 * the reason: the file cannot be opened, it has no entry point (or one for
 * another ABI major), its descriptor is from a newer minor or too small, it is
 * another kind, it lacks a mandatory callback, its settings table is
 * malformed. The descriptor is read only after the entry point's name has
 * proved the major, and only as far as its struct_size says. A refused plugin
 * is always dlclose'd before the error returns, so a service that refuses a
 * plugin keeps none of its code mapped.
 *
 * This file also implements the two things the core hands to a plugin: the
 * settings view (qmesh_settings_t, the plugin's libconfig group merged over
 * its declared defaults, copied so it does not depend on the config tree's
 * lifetime) and the host API (logging through log.h, settings accessors).
 */
#define _GNU_SOURCE
#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qmesh/asr.h>
#include <qmesh/channel.h>
#include <qmesh/rule.h>

#include "log.h"

/* Longest plugin or setting name accepted; names end up in log lines and
 * config keys, where anything longer is a mistake. */
#define NAME_MAX_LEN 64
/* A settings table longer than this is almost certainly missing its zeroed
 * terminator; stop there rather than read past the plugin's data. */
#define SETTINGS_MAX 256

/* Table sizes as ABI 1.0 defined them: the smallest table any 1.x plugin can
 * have. Later minors grow the structs at the end; these numbers must then be
 * kept as they are (written against the last 1.0 member), never replaced by
 * sizeof. */
#define DESC_HEAD_SIZE offsetof(qmesh_plugin_t, settings)
#define DESC_MIN_SIZE (offsetof(qmesh_plugin_t, ops) + sizeof(const void *))
#define FNPTR_SIZE sizeof(void (*)(void))
#define CHANNEL_OPS_MIN_SIZE (offsetof(qmesh_channel_ops_t, parse_file) + FNPTR_SIZE)
#define RULE_OPS_MIN_SIZE (offsetof(qmesh_rule_ops_t, free_compiled) + FNPTR_SIZE)
#define ASR_OPS_MIN_SIZE (offsetof(qmesh_asr_ops_t, close) + FNPTR_SIZE)

/* One callback of an ops table, in table order, so that a refusal lists the
 * missing ones in the order a partner reads the header. */
typedef struct cb_decl {
  const char *name;
  size_t off;
  int mandatory;
} cb_decl_t;

static const cb_decl_t channel_cbs[] = {
  {"open", offsetof(qmesh_channel_ops_t, open), 1},
  {"start", offsetof(qmesh_channel_ops_t, start), 1},
  {"pause", offsetof(qmesh_channel_ops_t, pause), 0},
  {"resume", offsetof(qmesh_channel_ops_t, resume), 0},
  {"stop", offsetof(qmesh_channel_ops_t, stop), 1},
  {"close", offsetof(qmesh_channel_ops_t, close), 1},
  {"parse_file", offsetof(qmesh_channel_ops_t, parse_file), 0},
  {NULL, 0, 0},
};

static const cb_decl_t rule_cbs[] = {
  {"compile", offsetof(qmesh_rule_ops_t, compile), 1},
  {"evaluate", offsetof(qmesh_rule_ops_t, evaluate), 1},
  {"free_compiled", offsetof(qmesh_rule_ops_t, free_compiled), 1},
  {NULL, 0, 0},
};

static const cb_decl_t asr_cbs[] = {
  {"open", offsetof(qmesh_asr_ops_t, open), 1},
  {"decode", offsetof(qmesh_asr_ops_t, decode), 1},
  {"free_words", offsetof(qmesh_asr_ops_t, free_words), 1},
  {"close", offsetof(qmesh_asr_ops_t, close), 1},
  {NULL, 0, 0},
};

typedef struct kind_decl {
  const char *name;
  const char *article;
  size_t ops_min_size;
  const cb_decl_t *cbs;
} kind_decl_t;

/* Indexed by qmesh_kind_t. */
static const kind_decl_t kinds[] = {
  {NULL, NULL, 0, NULL},
  {"channel", "a", CHANNEL_OPS_MIN_SIZE, channel_cbs},
  {"rule", "a", RULE_OPS_MIN_SIZE, rule_cbs},
  {"asr", "an", ASR_OPS_MIN_SIZE, asr_cbs},
};
#define KIND_MAX 3

/* One setting's value in a view. */
typedef struct value {
  char *name;
  qmesh_setting_type_t type;
  int given;       /* set in the config group, not just defaulted */
  char *str;       /* STRING; NULL when neither given nor defaulted */
  int64_t i;       /* INT */
  double f;        /* FLOAT */
  int b;           /* BOOL */
  char **list;     /* STRING_LIST */
  size_t list_len;
} value_t;

struct qmesh_settings {
  char plugin_name[NAME_MAX_LEN + 1]; /* for logging a plugin's misuse */
  qmesh_settings_t *older;            /* views this one replaced, freed at destroy */
  size_t n;
  value_t v[];
};

struct qm_plugin {
  /* First member: the host pointer handed to the plugin is the plugin
   * itself, which is how a log line finds the plugin's name. */
  qmesh_host_t host;
  void *handle;
  const qmesh_plugin_t *desc;
  qmesh_settings_t *settings;
  char name[NAME_MAX_LEN + 1];
  char path[PATH_MAX];
};

/* ---- small parsers, shared by declared defaults and their checks ---- */

static int parse_int(const char *s, int64_t *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return -1;
  *out = (int64_t)v;
  return 0;
}

static int parse_float(const char *s, double *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

static int parse_bool(const char *s, int *out) {
  if (s && strcmp(s, "true") == 0) return *out = 1, 0;
  if (s && strcmp(s, "false") == 0) return *out = 0, 0;
  return -1;
}

static int name_char_ok(char c, int strict) {
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') return 1;
  if (strict) return 0;
  return (c >= 'A' && c <= 'Z') || c == '-' || c == '.';
}

/* Plugin names: letters, digits, '_', '-', '.'. Setting names (strict):
 * lower-case letters, digits, '_'. Both 1..64 characters. */
static int name_ok(const char *s, int strict) {
  if (!s || !*s) return 0;
  size_t n = 0;
  for (; s[n]; n++)
    if (n >= NAME_MAX_LEN || !name_char_ok(s[n], strict)) return 0;
  return 1;
}

static const char *type_name(qmesh_setting_type_t t) {
  switch (t) {
  case QMESH_SETTING_STRING: return "string";
  case QMESH_SETTING_INT: return "integer";
  case QMESH_SETTING_FLOAT: return "float";
  case QMESH_SETTING_BOOL: return "bool";
  case QMESH_SETTING_STRING_LIST: return "string list";
  }
  return "unknown";
}

/* What a config error says for a value of the wrong type. */
static const char *type_expected(qmesh_setting_type_t t) {
  switch (t) {
  case QMESH_SETTING_STRING: return "expected a string";
  case QMESH_SETTING_INT: return "expected an integer";
  case QMESH_SETTING_FLOAT: return "expected a number";
  case QMESH_SETTING_BOOL: return "expected true or false";
  case QMESH_SETTING_STRING_LIST: return "expected a list of strings";
  }
  return "expected a value";
}

/* ---- settings views ---- */

static void value_clear(value_t *v) {
  free(v->str);
  v->str = NULL;
  for (size_t i = 0; i < v->list_len; i++) free(v->list[i]);
  free(v->list);
  v->list = NULL;
  v->list_len = 0;
}

static void view_free_chain(qmesh_settings_t *s) {
  while (s) {
    qmesh_settings_t *older = s->older;
    for (size_t i = 0; i < s->n; i++) {
      value_clear(&s->v[i]);
      free(s->v[i].name);
    }
    free(s);
    s = older;
  }
}

static int list_push(value_t *v, const char *item, size_t len) {
  char **grown = realloc(v->list, (v->list_len + 1) * sizeof *grown);
  if (!grown) return QM_ENOMEM;
  v->list = grown;
  char *copy = strndup(item, len);
  if (!copy) return QM_ENOMEM;
  v->list[v->list_len++] = copy;
  return 0;
}

/* Splits a STRING_LIST default ("json, txt") at commas, trimming the spaces
 * around each item; "" is the empty list. */
static int list_from_default(value_t *v, const char *s) {
  if (!s) return 0;
  while (*s == ' ') s++;
  if (!*s) return 0;
  for (;;) {
    const char *comma = strchr(s, ',');
    const char *end = comma ? comma : s + strlen(s);
    const char *b = s, *e = end;
    while (b < e && *b == ' ') b++;
    while (e > b && e[-1] == ' ') e--;
    int rc = list_push(v, b, (size_t)(e - b));
    if (rc) return rc;
    if (!comma) return 0;
    s = comma + 1;
  }
}

/* Sets a value from its declared default, which load has already checked. */
static int value_default(value_t *v, const qmesh_setting_t *decl) {
  const char *d = decl->default_value;
  if (!d) return 0;
  switch (v->type) {
  case QMESH_SETTING_STRING:
    v->str = strdup(d);
    return v->str ? 0 : QM_ENOMEM;
  case QMESH_SETTING_INT: return parse_int(d, &v->i) ? QM_EINTERNAL : 0;
  case QMESH_SETTING_FLOAT: return parse_float(d, &v->f) ? QM_EINTERNAL : 0;
  case QMESH_SETTING_BOOL: return parse_bool(d, &v->b) ? QM_EINTERNAL : 0;
  case QMESH_SETTING_STRING_LIST: return list_from_default(v, d);
  }
  return QM_EINTERNAL;
}

/* Sets a value from a config setting. Returns 0, QM_ENOMEM, or 1 when the
 * setting has the wrong type. */
static int value_from_config(value_t *v, const config_setting_t *s) {
  int t = config_setting_type(s);
  value_clear(v);
  switch (v->type) {
  case QMESH_SETTING_STRING: {
    if (t != CONFIG_TYPE_STRING) return 1;
    v->str = strdup(config_setting_get_string(s));
    return v->str ? 0 : QM_ENOMEM;
  }
  case QMESH_SETTING_INT:
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) return 1;
    v->i = (int64_t)config_setting_get_int64(s);
    return 0;
  case QMESH_SETTING_FLOAT:
    /* An integer is a number too: `threshold = 1;` should not be refused. */
    if (t == CONFIG_TYPE_FLOAT) v->f = config_setting_get_float(s);
    else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) v->f = (double)config_setting_get_int64(s);
    else return 1;
    return 0;
  case QMESH_SETTING_BOOL:
    if (t != CONFIG_TYPE_BOOL) return 1;
    v->b = config_setting_get_bool(s) ? 1 : 0;
    return 0;
  case QMESH_SETTING_STRING_LIST: {
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) return 1;
    int n = config_setting_length(s);
    for (int i = 0; i < n; i++)
      if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) != CONFIG_TYPE_STRING) return 1;
    for (int i = 0; i < n; i++) {
      const char *item = config_setting_get_string_elem(s, i);
      int rc = list_push(v, item, strlen(item));
      if (rc) return rc;
    }
    return 0;
  }
  }
  return 1;
}

/* The file a setting came from: the caller's name for the file, unless the
 * setting was pulled in by an @include from another one. */
static const char *setting_file(const config_setting_t *s, const config_setting_t *group,
                                const char *file) {
  const char *src = config_setting_source_file(s);
  const char *group_src = group ? config_setting_source_file(group) : NULL;
  if (src && group_src && strcmp(src, group_src) != 0) return src;
  if (file) return file;
  return src ? src : "(settings)";
}

static size_t count_settings(const qmesh_plugin_t *d) {
  size_t n = 0;
  if (d->settings)
    while (d->settings[n].name) n++;
  return n;
}

int qm_plugin_validate_settings(const qm_plugin_t *p, const config_setting_t *group,
                                const char *file, qm_error_t *err) {
  if (!p) return qm_error_set(err, QM_EINVAL, "qm_plugin_validate_settings: no plugin");
  const qmesh_plugin_t *d = p->desc;
  const char *fname = file ? file : "(settings)";
  if (group && !config_setting_is_group(group)) {
    return qm_error_set(err, QM_ECONFIG, "%s:%d: %s: settings must be a group ({ key = value; ... })",
                        setting_file(group, NULL, file), config_setting_source_line(group), p->name);
  }

  size_t n = count_settings(d);
  qmesh_settings_t *view = calloc(1, sizeof *view + n * sizeof(value_t));
  if (!view) return qm_error_set(err, QM_ENOMEM, "plugin \"%s\": out of memory", p->name);
  snprintf(view->plugin_name, sizeof view->plugin_name, "%s", p->name);
  view->n = n;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    view->v[i].type = d->settings[i].type;
    view->v[i].name = strdup(d->settings[i].name);
    if (!view->v[i].name) rc = QM_ENOMEM;
    else rc = value_default(&view->v[i], &d->settings[i]);
  }
  if (rc) goto fail_nomem;

  int len = group ? config_setting_length(group) : 0;
  for (int k = 0; k < len; k++) {
    const config_setting_t *s = config_setting_get_elem(group, (unsigned)k);
    const char *key = config_setting_name(s);
    const char *where = setting_file(s, group, file);
    int line = config_setting_source_line(s);
    value_t *v = NULL;
    for (size_t i = 0; i < n && key; i++)
      if (strcmp(view->v[i].name, key) == 0) v = &view->v[i];
    if (!v) {
      char valid[768];
      size_t used = 0;
      valid[0] = '\0';
      for (size_t i = 0; i < n && used < sizeof valid; i++) {
        int w = snprintf(valid + used, sizeof valid - used, "%s%s", i ? ", " : "", d->settings[i].name);
        if (w > 0) used += (size_t)w;
      }
      rc = qm_error_set(err, QM_ECONFIG, "%s:%d: %s.%s: unknown setting (valid: %s)", where, line,
                        p->name, key ? key : "?", n ? valid : "none");
      goto fail;
    }
    int r = value_from_config(v, s);
    if (r == QM_ENOMEM) goto fail_nomem;
    if (r) {
      rc = qm_error_set(err, QM_ECONFIG, "%s:%d: %s.%s: %s", where, line, p->name, key,
                        type_expected(v->type));
      goto fail;
    }
    v->given = 1;
  }

  for (size_t i = 0; i < n; i++) {
    if (d->settings[i].required && !view->v[i].given) {
      rc = qm_error_set(err, QM_ECONFIG, "%s: %s.%s: required setting missing", fname, p->name,
                        d->settings[i].name);
      goto fail;
    }
  }

  /* The plugin struct is the caller's handle; the view chain is the only
   * part validation changes, and keeping older views alive is what makes
   * re-validation safe for an instance still reading the previous one. */
  qm_plugin_t *mp = (qm_plugin_t *)p;
  view->older = mp->settings;
  mp->settings = view;
  return 0;

fail_nomem:
  rc = qm_error_set(err, QM_ENOMEM, "plugin \"%s\": out of memory", p->name);
fail:
  view_free_chain(view);
  return rc;
}

/* ---- host API ---- */

static void host_log(const qmesh_host_t *host, int level, const char *fmt, ...) {
  qm_log_level_t lvl = level <= QMESH_LOG_DEBUG ? QM_LOG_DEBUG
                       : level == QMESH_LOG_INFO ? QM_LOG_INFO
                       : level == QMESH_LOG_WARN ? QM_LOG_WARN
                                                 : QM_LOG_ERROR;
  if ((int)lvl < (int)qm_log_get_level() || !fmt) return;
  const qm_plugin_t *p = (const qm_plugin_t *)host;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  qm_log(lvl, "plugin.log", "plugin", p ? p->name : "?", "msg", msg, NULL);
}

/* Finds a declared setting of the given type; anything else is the plugin's
 * bug, logged so that `qmesh plugin check` and a service's log show it. */
static const value_t *lookup(const qmesh_settings_t *s, const char *name, qmesh_setting_type_t type,
                             const char *accessor) {
  if (!s || !name) {
    qm_log(QM_LOG_WARN, "plugin.setting_misuse", "plugin", s ? s->plugin_name : "?", "accessor",
           accessor, "error", !s ? "no settings view" : "no setting name", NULL);
    return NULL;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (strcmp(s->v[i].name, name) != 0) continue;
    if (s->v[i].type == type) return &s->v[i];
    char why[128];
    snprintf(why, sizeof why, "declared as %s, read as %s", type_name(s->v[i].type), type_name(type));
    qm_log(QM_LOG_WARN, "plugin.setting_misuse", "plugin", s->plugin_name, "setting", name, "accessor",
           accessor, "error", why, NULL);
    return NULL;
  }
  qm_log(QM_LOG_WARN, "plugin.setting_misuse", "plugin", s->plugin_name, "setting", name, "accessor",
         accessor, "error", "not declared", NULL);
  return NULL;
}

static const char *host_get_string(const qmesh_settings_t *s, const char *name) {
  const value_t *v = lookup(s, name, QMESH_SETTING_STRING, "get_string");
  return v ? v->str : NULL;
}

static int64_t host_get_int(const qmesh_settings_t *s, const char *name) {
  const value_t *v = lookup(s, name, QMESH_SETTING_INT, "get_int");
  return v ? v->i : 0;
}

static double host_get_float(const qmesh_settings_t *s, const char *name) {
  const value_t *v = lookup(s, name, QMESH_SETTING_FLOAT, "get_float");
  return v ? v->f : 0.0;
}

static int host_get_bool(const qmesh_settings_t *s, const char *name) {
  const value_t *v = lookup(s, name, QMESH_SETTING_BOOL, "get_bool");
  return v ? v->b : 0;
}

static size_t host_get_list_len(const qmesh_settings_t *s, const char *name) {
  const value_t *v = lookup(s, name, QMESH_SETTING_STRING_LIST, "get_list_len");
  return v ? v->list_len : 0;
}

static const char *host_get_list_item(const qmesh_settings_t *s, const char *name, size_t i) {
  const value_t *v = lookup(s, name, QMESH_SETTING_STRING_LIST, "get_list_item");
  return v && i < v->list_len ? v->list[i] : NULL;
}

/* ---- loading ---- */

/* Refuses a plugin: fills err, then closes it. In that order, because the
 * message usually quotes the plugin's name, which lives in the plugin's own
 * mapped data. */
static int refuse(void *handle, qm_error_t *err, int code, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int refuse(void *handle, qm_error_t *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  if (handle) dlclose(handle);
  return code;
}

/* Checks the declared settings table: names, types, uniqueness, and that
 * every default parses, so that a plugin's own mistake is reported at load
 * rather than as a confusing config error later. Returns 0 or fills `why`. */
static int check_settings_table(const qmesh_setting_t *t, char *why, size_t whylen) {
  if (!t) return 0;
  for (size_t i = 0; t[i].name; i++) {
    const qmesh_setting_t *s = &t[i];
    if (i >= SETTINGS_MAX) {
      snprintf(why, whylen, "settings table has more than %d entries (is it terminated by {0}?)",
               SETTINGS_MAX);
      return -1;
    }
    if (!name_ok(s->name, 1)) {
      snprintf(why, whylen, "setting \"%.64s\" has an invalid name (lower-case letters, digits, '_', at most %d)",
               s->name, NAME_MAX_LEN);
      return -1;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(t[j].name, s->name) == 0) {
        snprintf(why, whylen, "setting \"%s\" is declared twice", s->name);
        return -1;
      }
    }
    int64_t iv;
    double fv;
    int bv;
    const char *d = s->default_value;
    switch (s->type) {
    case QMESH_SETTING_STRING:
    case QMESH_SETTING_STRING_LIST:
      break;
    case QMESH_SETTING_INT:
      if (d && parse_int(d, &iv)) {
        snprintf(why, whylen, "setting \"%s\": default \"%.64s\" is not an integer", s->name, d);
        return -1;
      }
      break;
    case QMESH_SETTING_FLOAT:
      if (d && parse_float(d, &fv)) {
        snprintf(why, whylen, "setting \"%s\": default \"%.64s\" is not a number", s->name, d);
        return -1;
      }
      break;
    case QMESH_SETTING_BOOL:
      if (d && parse_bool(d, &bv)) {
        snprintf(why, whylen, "setting \"%s\": default \"%.64s\" is not true or false", s->name, d);
        return -1;
      }
      break;
    default:
      snprintf(why, whylen, "setting \"%s\" has unknown type %d (valid: 1 string, 2 int, 3 float, 4 bool, 5 string list)",
               s->name, (int)s->type);
      return -1;
    }
  }
  return 0;
}

int qm_plugin_load(const char *path, int kind, qm_plugin_t **out, qm_error_t *err) {
  if (!out) return qm_error_set(err, QM_EINVAL, "qm_plugin_load: out is NULL");
  *out = NULL;
  if (!path || !*path) return qm_error_set(err, QM_EINVAL, "plugin path is empty");
  if (kind < 0 || kind > KIND_MAX)
    return qm_error_set(err, QM_EINVAL, "plugin \"%s\": unknown kind %d requested", path, kind);
  if (strlen(path) + 3 > PATH_MAX)
    return qm_error_set(err, QM_EINVAL, "plugin \"%.64s...\": path too long", path);

  /* dlopen searches the library path for a name without a slash; a plugin
   * given as "x.so" means the file in the current directory. */
  char open_path[PATH_MAX];
  snprintf(open_path, sizeof open_path, "%s%s", strchr(path, '/') ? "" : "./", path);

  dlerror();
  void *h = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    return qm_error_set(err, QM_EPLUGIN, "plugin \"%s\": cannot load: %s", path, e ? e : "unknown error");
  }

  void *sym = dlsym(h, QMESH_PLUGIN_ENTRY);
  if (!sym) {
    /* Another major's entry point is recognised by name alone: its
     * descriptor may have any layout, so it is not called. */
    for (int m = 2; m <= 9; m++) {
      char other[32];
      snprintf(other, sizeof other, "qmesh_plugin_v%d", m);
      if (dlsym(h, other))
        return refuse(h, err, QM_EABI, "plugin \"%s\": ABI %d.x but this qmesh speaks %d.%d", path, m,
                      QMESH_ABI_MAJOR, QMESH_ABI_MINOR);
    }
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": no entry point %s (not a qmesh plugin)", path,
                  QMESH_PLUGIN_ENTRY);
  }

  qmesh_plugin_entry_fn entry = (qmesh_plugin_entry_fn)sym;
  const qmesh_plugin_t *d = entry();
  if (!d)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": %s() returned no descriptor", path, QMESH_PLUGIN_ENTRY);
  if (d->struct_size < DESC_HEAD_SIZE)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": descriptor is %u bytes, expected at least %zu", path,
                  d->struct_size, DESC_MIN_SIZE);
  if (!name_ok(d->name, 0))
    return refuse(h, err, QM_EPLUGIN,
                  "plugin \"%s\": descriptor has no valid name (letters, digits, '_', '-', '.', at most %d)",
                  path, NAME_MAX_LEN);
  const char *name = d->name;
  if (d->abi_major != QMESH_ABI_MAJOR || d->abi_minor > QMESH_ABI_MINOR)
    return refuse(h, err, QM_EABI, "plugin \"%s\": ABI %u.%u but this qmesh speaks %d.%d", name, d->abi_major,
                  d->abi_minor, QMESH_ABI_MAJOR, QMESH_ABI_MINOR);
  if (d->struct_size < DESC_MIN_SIZE)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": descriptor is %u bytes, expected at least %zu", name,
                  d->struct_size, DESC_MIN_SIZE);
  if (!d->version || !*d->version)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": descriptor has no version", name);
  if (d->kind < 1 || d->kind > KIND_MAX)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": unknown kind %u (valid: 1 channel, 2 rule, 3 asr)", name,
                  d->kind);
  const kind_decl_t *k = &kinds[d->kind];
  if (kind && (int)d->kind != kind)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": is %s %s plugin, expected %s %s plugin", name, k->article,
                  k->name, kinds[kind].article, kinds[kind].name);
  if (!d->ops) return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": descriptor has no ops table", name);

  uint32_t ops_size;
  memcpy(&ops_size, d->ops, sizeof ops_size);
  if (ops_size < k->ops_min_size)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": %s ops table is %u bytes, expected at least %zu", name,
                  k->name, ops_size, k->ops_min_size);

  char missing[256] = "";
  size_t used = 0;
  for (const cb_decl_t *cb = k->cbs; cb->name; cb++) {
    void (*fn)(void) = NULL;
    memcpy(&fn, (const char *)d->ops + cb->off, sizeof fn);
    if (cb->mandatory && !fn) {
      int w = snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", cb->name);
      if (w > 0 && (size_t)w < sizeof missing - used) used += (size_t)w;
    }
  }
  if (used)
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": missing mandatory callbacks: %s", name, missing);
  if (d->kind == QMESH_KIND_CHANNEL) {
    const qmesh_channel_ops_t *ops = d->ops;
    if (!ops->pause != !ops->resume)
      return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": pause and resume go together, but only %s is set", name,
                    ops->pause ? "pause" : "resume");
  }

  char why[512];
  if (check_settings_table(d->settings, why, sizeof why))
    return refuse(h, err, QM_EPLUGIN, "plugin \"%s\": %s", name, why);

  qm_plugin_t *p = calloc(1, sizeof *p);
  if (!p) return refuse(h, err, QM_ENOMEM, "plugin \"%s\": out of memory", name);
  p->handle = h;
  p->desc = d;
  snprintf(p->name, sizeof p->name, "%s", name);
  snprintf(p->path, sizeof p->path, "%s", path);
  p->host.struct_size = sizeof p->host;
  p->host.abi_major = QMESH_ABI_MAJOR;
  p->host.abi_minor = QMESH_ABI_MINOR;
  p->host.log = host_log;
  p->host.get_string = host_get_string;
  p->host.get_int = host_get_int;
  p->host.get_float = host_get_float;
  p->host.get_bool = host_get_bool;
  p->host.get_list_len = host_get_list_len;
  p->host.get_list_item = host_get_list_item;

  char abi[32];
  snprintf(abi, sizeof abi, "%u.%u", d->abi_major, d->abi_minor);
  qm_log(QM_LOG_INFO, "plugin.loaded", "plugin", p->name, "version", d->version, "kind", k->name, "abi", abi,
         "path", path, NULL);
  *out = p;
  return 0;
}

const qmesh_plugin_t *qm_plugin_descriptor(const qm_plugin_t *p) { return p ? p->desc : NULL; }

const char *qm_plugin_path(const qm_plugin_t *p) { return p ? p->path : NULL; }

const qmesh_host_t *qm_plugin_host(const qm_plugin_t *p) { return p ? &p->host : NULL; }

const qmesh_settings_t *qm_plugin_settings(const qm_plugin_t *p) { return p ? p->settings : NULL; }

void qm_plugin_destroy(qm_plugin_t **pp) {
  if (!pp || !*pp) return;
  qm_plugin_t *p = *pp;
  view_free_chain(p->settings);
  if (p->handle) dlclose(p->handle);
  free(p);
  *pp = NULL;
}

void qm_plugin_resolve(const char *dir, const char *name_or_path, char *out, size_t outlen) {
  if (!out || !outlen) return;
  if (!name_or_path) name_or_path = "";
  if (strchr(name_or_path, '/')) {
    snprintf(out, outlen, "%s", name_or_path);
    return;
  }
  size_t n = strlen(name_or_path);
  int has_ext = n > 3 && strcmp(name_or_path + n - 3, ".so") == 0;
  snprintf(out, outlen, "%s/%s%s", dir && *dir ? dir : ".", name_or_path, has_ext ? "" : ".so");
}
