/*
 * config.c: reads configs/qmesh.cfg into a qm_config_t (see config.h).
 *
 * The file is parsed once with libconfig, then walked against a fixed schema:
 * every group's members are checked against the keys that group may hold, so
 * a misspelt key is an error naming the valid ones instead of a setting that
 * silently keeps its default. Values are checked for type and range before
 * they are copied, and every refusal is one line, `FILE:LINE: path: what is
 * wrong`, so `qmesh config check` and a starting service say the same thing.
 *
 * The one exception to "unknown keys are refused" is the inside of a service
 * group (`services.ingest = { ... }`): bind, connect and http are checked
 * here, and every other member belongs to that service (its channels, its
 * plugins), which validates them through qm_service_cfg_t.setting when it
 * starts. config.c cannot know those keys without depending on every service.
 */
#include "config.h"
#include "cfgutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

const char *const qm_standard_services[] = {
  "ingest", "transcribe", "autoscore", "policy", "coaching", "recognition", "reporting", NULL,
};

/* The standard services' ports are 7101.. (bus) and 8101.. (HTTP), in the
 * order of qm_standard_services. */
#define QM_BUS_PORT_BASE 7100
#define QM_HTTP_PORT_BASE 8100

#define DEFAULT_DATA_DIR "../data"
#define DEFAULT_ROUTES_FILE "routes.cfg"
#define DEFAULT_PLUGIN_DIR "../build/plugins"

/* Every ms setting shares one upper bound: an hour is longer than any sane
 * timeout and keeps the value far from overflowing a 32-bit millisecond sum. */
#define MS_MAX 3600000LL
#define WATER_MAX 1000000000000LL

static const char *const root_keys[] = {"data_dir", "routes_file", "plugin_dir", "log",
                                        "bus",      "store",       "services",   NULL};
static const char *const log_keys[] = {"level", "format", NULL};
static const char *const bus_keys[] = {"batch_max",         "window",           "retransmit_ms",
                                       "backoff_max_ms",    "outbox_high_water", "outbox_low_water",
                                       "peer_timeout_ms",   "heartbeat_ms",     "drain_timeout_ms",
                                       "ack_flush_ms",      "max_message_kb",   NULL};
static const char *const store_keys[] = {"map_size_mb", "sync", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", "off", NULL};
static const char *const format_names[] = {"logfmt", "json", NULL};

/* ---- error reporting ---------------------------------------------------- */

typedef struct ctx {
  const char *file;     /* the file as given, for settings without a source */
  const char *dir;      /* its directory, where @include looks */
  qm_error_t *err;
  char name_buf[PATH_MAX];
  /* One cached source file, for re-reading integer literals (see
   * fix_int_literal). */
  char *src_name;
  char *src_text;
} ctx_t;

/* libconfig records an @include'd file by the name written in the
 * directive, which it resolved against the include directory; resolve it the
 * same way so messages (and fix_int_literal) name the real file. */
static const char *source_name(ctx_t *c, const char *f) {
  if (!f) return c->file;
  if (strcmp(f, c->file) == 0 || f[0] == '/' || !c->dir || strcmp(c->dir, ".") == 0) return f;
  int w = snprintf(c->name_buf, sizeof c->name_buf, "%s/%s", c->dir, f);
  return w >= 0 && (size_t)w < sizeof c->name_buf ? c->name_buf : f;
}

static const char *setting_file(ctx_t *c, const config_setting_t *s) {
  return source_name(c, s ? config_setting_source_file(s) : NULL);
}

static unsigned setting_line(const config_setting_t *s) {
  unsigned line = s ? config_setting_source_line(s) : 0;
  /* The root group has no line of its own; a missing top-level setting is
   * reported against the file's first line. */
  return line ? line : 1;
}

__attribute__((format(printf, 4, 5))) static int fail(ctx_t *c, const config_setting_t *s,
                                                      const char *path, const char *fmt, ...) {
  char what[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qm_error_set(c->err, QM_ECONFIG, "%s:%u: %s: %s", setting_file(c, s), setting_line(s),
                      path, what);
}

/* Paths are for messages only: a cut one still names the setting. */
static void child_path(char *out, size_t outlen, const char *prefix, const char *name) {
  size_t used = 0;
  const char *parts[3] = {prefix && *prefix ? prefix : "", prefix && *prefix ? "." : "", name};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(parts[i]);
    if (n > outlen - 1 - used) n = outlen - 1 - used;
    memcpy(out + used, parts[i], n);
    used += n;
  }
  out[used] = '\0';
}

static int in_list(const char *s, const char *const *names) {
  for (size_t i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0) return (int)i;
  return -1;
}

/* Refuses any member of `group` not in `valid`. */
static int check_keys(ctx_t *c, const config_setting_t *group, const char *prefix,
                      const char *const *valid) {
  const config_setting_t *m = qm__cfg_unknown_member(group, valid);
  if (!m) return 0;
  char path[256], list[512];
  child_path(path, sizeof path, prefix, config_setting_name(m));
  qm__join_names(list, sizeof list, valid, SIZE_MAX);
  return fail(c, m, path, "unknown setting (valid: %s)", list);
}

/* ---- typed getters ------------------------------------------------------ */

static int get_group(ctx_t *c, const config_setting_t *parent, const char *key,
                     const config_setting_t **out) {
  const config_setting_t *s = config_setting_get_member(parent, key);
  *out = NULL;
  if (!s) return 0;
  if (!config_setting_is_group(s))
    return fail(c, s, key, "must be a group { ... } (got %s)", qm__cfg_type_name(s));
  *out = s;
  return 0;
}

static int get_string(ctx_t *c, const config_setting_t *parent, const char *prefix,
                      const char *key, const char **out) {
  const config_setting_t *s = config_setting_get_member(parent, key);
  if (!s) return 0;
  char path[256];
  child_path(path, sizeof path, prefix, key);
  if (config_setting_type(s) != CONFIG_TYPE_STRING)
    return fail(c, s, path, "must be a string (got %s)", qm__cfg_type_name(s));
  *out = config_setting_get_string(s);
  return 0;
}

static int get_bool(ctx_t *c, const config_setting_t *parent, const char *prefix,
                    const char *key, int *out) {
  const config_setting_t *s = config_setting_get_member(parent, key);
  if (!s) return 0;
  char path[256];
  child_path(path, sizeof path, prefix, key);
  if (config_setting_type(s) != CONFIG_TYPE_BOOL)
    return fail(c, s, path, "must be true or false (got %s)", qm__cfg_type_name(s));
  *out = config_setting_get_bool(s);
  return 0;
}

/* libconfig 1.5 reads an integer literal above 2^31-1 written without the L
 * suffix modulo 2^32, silently (10000000000 becomes 1410065408). To read what
 * the person wrote, the literal is found again on the setting's source line
 * and parsed as 64 bits; when it is not found there (value on another line,
 * a string source) libconfig's value stands. */
static const char *source_line_text(ctx_t *c, const config_setting_t *s, size_t *len) {
  if (!config_setting_source_file(s)) return NULL;
  const char *f = source_name(c, config_setting_source_file(s));
  unsigned line = config_setting_source_line(s);
  if (!line) return NULL;
  if (!c->src_name || strcmp(c->src_name, f) != 0) {
    free(c->src_name);
    free(c->src_text);
    c->src_name = c->src_text = NULL;
    FILE *fp = fopen(f, "rb");
    if (!fp) return NULL;
    size_t cap = 0, n = 0, got;
    char *buf = NULL;
    do {
      if (cap - n < 4096) {
        char *nb = realloc(buf, cap + 65536);
        if (!nb) break;
        buf = nb;
        cap += 65536;
      }
      got = fread(buf + n, 1, cap - n - 1, fp);
      n += got;
    } while (got > 0);
    fclose(fp);
    if (!buf) return NULL;
    buf[n] = '\0';
    c->src_name = strdup(f);
    c->src_text = buf;
    if (!c->src_name) return NULL;
  }
  const char *p = c->src_text;
  for (unsigned l = 1; l < line && p; l++) {
    p = strchr(p, '\n');
    if (p) p++;
  }
  if (!p) return NULL;
  const char *e = strchr(p, '\n');
  *len = e ? (size_t)(e - p) : strlen(p);
  return p;
}

static int is_name_char(int ch) { return isalnum(ch) || ch == '_' || ch == '-' || ch == '*'; }

static void fix_int_literal(ctx_t *c, const config_setting_t *s, long long *v) {
  size_t len = 0;
  const char *line = source_line_text(c, s, &len);
  const char *name = config_setting_name(s);
  if (!line || !name) return;
  size_t nl = strlen(name);
  for (size_t i = 0; i + nl <= len; i++) {
    if (memcmp(line + i, name, nl) != 0) continue;
    if (i > 0 && is_name_char((unsigned char)line[i - 1])) continue;
    size_t j = i + nl;
    while (j < len && (line[j] == ' ' || line[j] == '\t')) j++;
    if (j >= len || (line[j] != '=' && line[j] != ':')) continue;
    j++;
    while (j < len && (line[j] == ' ' || line[j] == '\t')) j++;
    char lit[64];
    size_t k = 0;
    while (j < len && k + 1 < sizeof lit &&
           (isxdigit((unsigned char)line[j]) || line[j] == 'x' || line[j] == 'X' ||
            line[j] == '-' || line[j] == '+'))
      lit[k++] = line[j++];
    lit[k] = '\0';
    if (k == 0) continue;
    char *end;
    long long parsed = strtoll(lit, &end, 0);
    if (*end != '\0') continue;
    /* The same name may appear twice on a line (two groups); the literal is
     * the one whose low 32 bits are what libconfig kept. strtoll clamps an
     * overflow to LLONG_MAX, which every range check then refuses. */
    if ((int32_t)(uint32_t)(unsigned long long)parsed != (int32_t)*v) continue;
    *v = parsed;
    return;
  }
}

static int get_int(ctx_t *c, const config_setting_t *parent, const char *prefix, const char *key,
                   long long lo, long long hi, long long *out) {
  const config_setting_t *s = config_setting_get_member(parent, key);
  if (!s) return 0;
  char path[256];
  child_path(path, sizeof path, prefix, key);
  long long v;
  if (config_setting_type(s) == CONFIG_TYPE_INT) {
    v = config_setting_get_int(s);
    fix_int_literal(c, s, &v);
  } else if (config_setting_type(s) == CONFIG_TYPE_INT64) {
    v = config_setting_get_int64(s);
  } else {
    return fail(c, s, path, "must be an integer (got %s)", qm__cfg_type_name(s));
  }
  if (v < lo || v > hi) return fail(c, s, path, "must be between %lld and %lld", lo, hi);
  *out = v;
  return 0;
}

/* ---- endpoints ---------------------------------------------------------- */

/* A host: a name or IPv4 address ([A-Za-z0-9._-]), an IPv6 address in
 * brackets, or (when allowed) the wildcard "*". */
static int host_ok(const char *h, size_t n, int allow_star) {
  if (n == 0) return 0;
  if (n == 1 && h[0] == '*') return allow_star;
  if (h[0] == '[') {
    if (n < 3 || h[n - 1] != ']') return 0;
    for (size_t i = 1; i + 1 < n; i++)
      if (!isxdigit((unsigned char)h[i]) && h[i] != ':' && h[i] != '.') return 0;
    return 1;
  }
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_') return 0;
  return 1;
}

static int port_ok(const char *p) {
  size_t n = strlen(p);
  if (n == 0 || n > 5) return 0;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)p[i])) return 0;
    v = v * 10 + (p[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

/* HOST:PORT, split at the last colon so bracketed IPv6 hosts work. */
static int hostport_ok(const char *s, int allow_star) {
  const char *colon = strrchr(s, ':');
  if (!colon) return 0;
  return host_ok(s, (size_t)(colon - s), allow_star) && port_ok(colon + 1);
}

static int endpoint_ok(const char *s, int allow_star) {
  if (strncmp(s, "tcp://", 6) == 0) return hostport_ok(s + 6, allow_star);
  if (strncmp(s, "ipc://", 6) == 0) return s[6] != '\0';
  if (strncmp(s, "inproc://", 9) == 0) return s[9] != '\0';
  return 0;
}

/* connect defaults to bind with a wildcard host made reachable. */
static int derive_connect(const char *bind, char *out, size_t outlen) {
  const char *hosts[] = {"tcp://0.0.0.0:", "tcp://*:", NULL};
  for (size_t i = 0; hosts[i]; i++) {
    size_t n = strlen(hosts[i]);
    if (strncmp(bind, hosts[i], n) == 0) {
      int w = snprintf(out, outlen, "tcp://127.0.0.1:%s", bind + n);
      return w >= 0 && (size_t)w < outlen;
    }
  }
  int w = snprintf(out, outlen, "%s", bind);
  return w >= 0 && (size_t)w < outlen;
}

static int service_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > QM_NAME_MAX || !(s[0] >= 'a' && s[0] <= 'z')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) return 0;
  return 1;
}

/* ---- defaults ----------------------------------------------------------- */

static void service_defaults(qm_service_cfg_t *s, const char *name, int std_index) {
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  if (std_index >= 0) {
    snprintf(s->bind, sizeof s->bind, "tcp://127.0.0.1:%d", QM_BUS_PORT_BASE + std_index + 1);
    memcpy(s->connect, s->bind, sizeof s->connect); /* same size; both NUL-terminated */
    snprintf(s->http, sizeof s->http, "127.0.0.1:%d", QM_HTTP_PORT_BASE + std_index + 1);
  }
}

void qm_config_resolve(const qm_config_t *cfg, const char *path, char out[PATH_MAX]) {
  int w;
  /* `out` is often a field of cfg itself: work from a copy of the
   * directory so the formatting never reads what it writes. */
  char dir[PATH_MAX];
  memcpy(dir, cfg->dir, sizeof dir);
  if (path[0] == '/' || dir[0] == '\0' || strcmp(dir, ".") == 0)
    w = snprintf(out, PATH_MAX, "%s", path);
  else if (strcmp(dir, "/") == 0)
    w = snprintf(out, PATH_MAX, "/%s", path);
  else
    w = snprintf(out, PATH_MAX, "%s/%s", dir, path);
  /* qm_config_load refuses paths that would not fit before resolving them;
   * another caller gets an empty path rather than a cut one that names a
   * different file. */
  if (w < 0 || w >= PATH_MAX) out[0] = '\0';
}

/* The bus settings' defaults: configs/qmesh.cfg documents each one. */
const qm_bus_cfg_t qm_bus_cfg_defaults = {
  .batch_max = 4096,
  .window = 10000,
  .retransmit_ms = 1000,
  .backoff_max_ms = 30000,
  .outbox_high_water = 1000000,
  .outbox_low_water = 800000,
  .peer_timeout_ms = 15000,
  .heartbeat_ms = 1000,
  .drain_timeout_ms = 10000,
  .ack_flush_ms = 20,
  .max_message_bytes = (size_t)4096 << 10,
};

void qm_config_defaults(qm_config_t *cfg) {
  /* The struct is ~40 KiB; zeroing it all keeps every unused service slot
   * and string tail clean for whoever prints or compares them. */
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->dir, sizeof cfg->dir, ".");
  qm_config_resolve(cfg, DEFAULT_DATA_DIR, cfg->data_dir);
  qm_config_resolve(cfg, DEFAULT_ROUTES_FILE, cfg->routes_file);
  qm_config_resolve(cfg, DEFAULT_PLUGIN_DIR, cfg->plugin_dir);
  cfg->log_level = QM_LOG_INFO;
  cfg->log_json = 0;
  cfg->bus = qm_bus_cfg_defaults;
  cfg->store.map_size = (size_t)1024 << 20;
  cfg->store.sync = 1;
  for (size_t i = 0; qm_standard_services[i]; i++)
    service_defaults(&cfg->services[i], qm_standard_services[i], (int)i);
  cfg->n_services = 7;
  cfg->raw_loaded = 0;
}

/* ---- sections ----------------------------------------------------------- */

static int load_path(ctx_t *c, qm_config_t *cfg, const config_setting_t *root, const char *key,
                     char out[PATH_MAX]) {
  const char *v = NULL;
  int rc = get_string(c, root, "", key, &v);
  if (rc || !v) return rc;
  const config_setting_t *s = config_setting_get_member(root, key);
  if (!*v) return fail(c, s, key, "must not be empty");
  if (strlen(cfg->dir) + 1 + strlen(v) >= PATH_MAX)
    return fail(c, s, key, "path too long (at most %d bytes once resolved)", PATH_MAX - 1);
  qm_config_resolve(cfg, v, out);
  return 0;
}

static int load_log(ctx_t *c, qm_config_t *cfg, const config_setting_t *root) {
  const config_setting_t *g;
  int rc = get_group(c, root, "log", &g);
  if (rc || !g) return rc;
  if ((rc = check_keys(c, g, "log", log_keys))) return rc;
  const char *v = NULL;
  char list[128];
  if ((rc = get_string(c, g, "log", "level", &v))) return rc;
  if (v) {
    int lvl = qm_log_level_parse(v);
    if (lvl < 0) {
      qm__join_names(list, sizeof list, level_names, SIZE_MAX);
      return fail(c, config_setting_get_member(g, "level"), "log.level",
                  "unknown level \"%s\" (valid: %s)", v, list);
    }
    cfg->log_level = lvl;
  }
  v = NULL;
  if ((rc = get_string(c, g, "log", "format", &v))) return rc;
  if (v) {
    int f = in_list(v, format_names);
    if (f < 0) {
      qm__join_names(list, sizeof list, format_names, SIZE_MAX);
      return fail(c, config_setting_get_member(g, "format"), "log.format",
                  "unknown format \"%s\" (valid: %s)", v, list);
    }
    cfg->log_json = f == 1;
  }
  return 0;
}

static int load_bus(ctx_t *c, qm_config_t *cfg, const config_setting_t *root) {
  const config_setting_t *g;
  int rc = get_group(c, root, "bus", &g);
  if (rc || !g) return rc;
  if ((rc = check_keys(c, g, "bus", bus_keys))) return rc;
  qm_bus_cfg_t *b = &cfg->bus;
  long long v;
#define U32(key, lo, hi)                                          \
  do {                                                            \
    v = b->key;                                                   \
    if ((rc = get_int(c, g, "bus", #key, lo, hi, &v))) return rc; \
    b->key = (uint32_t)v;                                         \
  } while (0)
  U32(batch_max, 1, 65536);
  U32(window, 1, 1000000);
  U32(retransmit_ms, 1, MS_MAX);
  U32(backoff_max_ms, 1, MS_MAX);
  U32(peer_timeout_ms, 1, MS_MAX);
  U32(heartbeat_ms, 1, MS_MAX);
  U32(drain_timeout_ms, 1, MS_MAX);
  U32(ack_flush_ms, 1, 60000);
#undef U32
  v = (long long)b->outbox_high_water;
  if ((rc = get_int(c, g, "bus", "outbox_high_water", 1, WATER_MAX, &v))) return rc;
  b->outbox_high_water = (uint64_t)v;
  v = (long long)b->outbox_low_water;
  if ((rc = get_int(c, g, "bus", "outbox_low_water", 0, WATER_MAX, &v))) return rc;
  b->outbox_low_water = (uint64_t)v;
  v = (long long)(b->max_message_bytes >> 10);
  if ((rc = get_int(c, g, "bus", "max_message_kb", 1, 1048576, &v))) return rc;
  b->max_message_bytes = (size_t)v << 10;

  /* Cross-field bounds, reported on the setting that has to change (the low
   * one when it is written, else the high one). */
  if (b->outbox_low_water >= b->outbox_high_water) {
    const config_setting_t *s = config_setting_get_member(g, "outbox_low_water");
    if (s)
      return fail(c, s, "bus.outbox_low_water",
                  "must be less than bus.outbox_high_water (%llu)",
                  (unsigned long long)b->outbox_high_water);
    return fail(c, config_setting_get_member(g, "outbox_high_water"), "bus.outbox_high_water",
                "must be greater than bus.outbox_low_water (%llu)",
                (unsigned long long)b->outbox_low_water);
  }
  if (b->backoff_max_ms < b->retransmit_ms) {
    const config_setting_t *s = config_setting_get_member(g, "backoff_max_ms");
    if (s)
      return fail(c, s, "bus.backoff_max_ms", "must not be less than bus.retransmit_ms (%u)",
                  b->retransmit_ms);
    return fail(c, config_setting_get_member(g, "retransmit_ms"), "bus.retransmit_ms",
                "must not be greater than bus.backoff_max_ms (%u)", b->backoff_max_ms);
  }
  return 0;
}

static int load_store(ctx_t *c, qm_config_t *cfg, const config_setting_t *root) {
  const config_setting_t *g;
  int rc = get_group(c, root, "store", &g);
  if (rc || !g) return rc;
  if ((rc = check_keys(c, g, "store", store_keys))) return rc;
  long long v = (long long)(cfg->store.map_size >> 20);
  if ((rc = get_int(c, g, "store", "map_size_mb", 1, 1048576, &v))) return rc;
  cfg->store.map_size = (size_t)v << 20;
  return get_bool(c, g, "store", "sync", &cfg->store.sync);
}

static int load_endpoint(ctx_t *c, const config_setting_t *sg, const char *prefix,
                         const char *key, int allow_star, char *out, size_t outlen) {
  const char *v = NULL;
  int rc = get_string(c, sg, prefix, key, &v);
  if (rc || !v) return rc;
  const config_setting_t *s = config_setting_get_member(sg, key);
  char path[256];
  child_path(path, sizeof path, prefix, key);
  if (strlen(v) >= outlen) return fail(c, s, path, "too long (at most %zu bytes)", outlen - 1);
  if (!endpoint_ok(v, allow_star)) {
    if (!allow_star && strncmp(v, "tcp://*:", 8) == 0)
      return fail(c, s, path, "\"%s\" cannot be connected to (use a host name or address)", v);
    return fail(c, s, path,
                "\"%s\" is not an endpoint (valid: tcp://HOST:PORT, ipc://PATH, inproc://NAME)",
                v);
  }
  snprintf(out, outlen, "%s", v);
  return 0;
}

static int load_service(ctx_t *c, qm_config_t *cfg, config_setting_t *sg) {
  const char *name = config_setting_name(sg);
  char prefix[256];
  child_path(prefix, sizeof prefix, "services", name);
  if (!service_name_ok(name))
    return fail(c, sg, prefix,
                "invalid service name \"%s\" (valid: a lower-case letter, then lower-case "
                "letters, digits or _, at most %d characters)",
                name, QM_NAME_MAX);
  if (!config_setting_is_group(sg))
    return fail(c, sg, prefix, "must be a group { bind = ...; } (got %s)", qm__cfg_type_name(sg));
  if (cfg->n_services >= QM_SERVICES_MAX)
    return fail(c, sg, prefix, "too many services (at most %d)", QM_SERVICES_MAX);

  int std_index = in_list(name, qm_standard_services);
  qm_service_cfg_t *svc = &cfg->services[cfg->n_services];
  service_defaults(svc, name, std_index);
  svc->setting = sg;

  int rc;
  if ((rc = load_endpoint(c, sg, prefix, "bind", 1, svc->bind, sizeof svc->bind))) return rc;
  if (!svc->bind[0]) {
    char list[256];
    qm__join_names(list, sizeof list, qm_standard_services, SIZE_MAX);
    char path[300];
    snprintf(path, sizeof path, "%s.bind", prefix);
    return fail(c, sg, path, "required for a service that is not one of the standard seven (%s)",
                list);
  }
  svc->connect[0] = '\0';
  if ((rc = load_endpoint(c, sg, prefix, "connect", 0, svc->connect, sizeof svc->connect)))
    return rc;
  if (!svc->connect[0] && !derive_connect(svc->bind, svc->connect, sizeof svc->connect)) {
    char path[300];
    snprintf(path, sizeof path, "%s.bind", prefix);
    return fail(c, config_setting_get_member(sg, "bind"), path,
                "too long to derive connect from (at most %zu bytes)", sizeof svc->connect - 1);
  }

  const char *http = NULL;
  if ((rc = get_string(c, sg, prefix, "http", &http))) return rc;
  if (http) {
    const config_setting_t *s = config_setting_get_member(sg, "http");
    char path[300];
    snprintf(path, sizeof path, "%s.http", prefix);
    if (strlen(http) >= sizeof svc->http)
      return fail(c, s, path, "too long (at most %zu bytes)", sizeof svc->http - 1);
    if (*http && !hostport_ok(http, 0))
      return fail(c, s, path, "\"%s\" is not HOST:PORT (valid: HOST:PORT, or \"\" to disable)",
                  http);
    snprintf(svc->http, sizeof svc->http, "%s", http);
  }

  /* Two services on one endpoint would fail only when the second binds; say
   * so now, naming both. */
  for (size_t i = 0; i < cfg->n_services; i++) {
    const qm_service_cfg_t *o = &cfg->services[i];
    char path[300];
    if (strcmp(o->bind, svc->bind) == 0) {
      const config_setting_t *s = config_setting_get_member(sg, "bind");
      snprintf(path, sizeof path, "%s.bind", prefix);
      return fail(c, s ? s : sg, path, "\"%s\" is already the bind of services.%s", svc->bind,
                  o->name);
    }
    if (svc->http[0] && strcmp(o->http, svc->http) == 0) {
      const config_setting_t *s = config_setting_get_member(sg, "http");
      snprintf(path, sizeof path, "%s.http", prefix);
      return fail(c, s ? s : sg, path, "\"%s\" is already the http of services.%s", svc->http,
                  o->name);
    }
  }
  cfg->n_services++;
  return 0;
}

static int load_services(ctx_t *c, qm_config_t *cfg, const config_setting_t *root) {
  const config_setting_t *g;
  int rc = get_group(c, root, "services", &g);
  if (rc || !g) return rc;
  int n = config_setting_length(g);
  if (n == 0) return fail(c, g, "services", "must define at least one service");
  /* A services group replaces the standard seven entirely, so a test or a
   * partial deployment lists exactly the services it runs. */
  cfg->n_services = 0;
  memset(cfg->services, 0, sizeof cfg->services);
  for (int i = 0; i < n; i++)
    if ((rc = load_service(c, cfg, config_setting_get_elem(g, (unsigned)i)))) return rc;
  return 0;
}

/* ---- load --------------------------------------------------------------- */

int qm_config_load(qm_config_t *cfg, const char *path, qm_error_t *err) {
  qm_config_defaults(cfg);
  qm_error_clear(err);
  ctx_t c = {.file = path, .dir = cfg->dir, .err = err};
  if (!path || !*path) return qm_error_set(err, QM_ECONFIG, "(none):1: config: no file given");
  if (strlen(path) >= sizeof cfg->path)
    return qm_error_set(err, QM_ECONFIG, "%.64s...: path too long", path);
  snprintf(cfg->path, sizeof cfg->path, "%s", path);
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(cfg->dir, sizeof cfg->dir, ".");
  else if (slash == path)
    snprintf(cfg->dir, sizeof cfg->dir, "/");
  else
    snprintf(cfg->dir, sizeof cfg->dir, "%.*s", (int)(slash - path), path);
  /* Relative defaults resolve against the file's directory, like values
   * written in it. */
  qm_config_resolve(cfg, DEFAULT_DATA_DIR, cfg->data_dir);
  qm_config_resolve(cfg, DEFAULT_ROUTES_FILE, cfg->routes_file);
  qm_config_resolve(cfg, DEFAULT_PLUGIN_DIR, cfg->plugin_dir);

  config_init(&cfg->raw);
  config_set_include_dir(&cfg->raw, cfg->dir);
  cfg->raw_loaded = 1;
  int rc;
  /* libconfig says only "file I/O error"; stat first to say which. */
  struct stat st;
  errno = 0;
  if (stat(path, &st) != 0 || S_ISDIR(st.st_mode)) {
    rc = qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", path,
                      strerror(errno ? errno : EISDIR));
    goto fail;
  }
  if (!config_read_file(&cfg->raw, path)) {
    if (config_error_type(&cfg->raw) == CONFIG_ERR_FILE_IO) {
      rc = qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", path,
                        errno ? strerror(errno) : "file I/O error");
    } else {
      rc = qm_error_set(err, QM_ECONFIG, "%s:%d: %s", source_name(&c, config_error_file(&cfg->raw)),
                        config_error_line(&cfg->raw),
                        config_error_text(&cfg->raw));
    }
    goto fail;
  }

  const config_setting_t *root = config_root_setting(&cfg->raw);
  if ((rc = check_keys(&c, root, "", root_keys))) goto fail;
  if ((rc = load_path(&c, cfg, root, "data_dir", cfg->data_dir))) goto fail;
  if ((rc = load_path(&c, cfg, root, "routes_file", cfg->routes_file))) goto fail;
  if ((rc = load_path(&c, cfg, root, "plugin_dir", cfg->plugin_dir))) goto fail;
  if ((rc = load_log(&c, cfg, root))) goto fail;
  if ((rc = load_bus(&c, cfg, root))) goto fail;
  if ((rc = load_store(&c, cfg, root))) goto fail;
  if ((rc = load_services(&c, cfg, root))) goto fail;
  free(c.src_name);
  free(c.src_text);
  return 0;

fail:
  free(c.src_name);
  free(c.src_text);
  /* A refused file leaves no tree behind, so qm_config_free stays safe and a
   * caller that ignores the error cannot follow a dangling setting. */
  qm_config_free(cfg);
  return rc;
}

void qm_config_free(qm_config_t *cfg) {
  if (!cfg) return;
  if (cfg->raw_loaded) {
    config_destroy(&cfg->raw);
    cfg->raw_loaded = 0;
  }
  for (size_t i = 0; i < cfg->n_services && i < QM_SERVICES_MAX; i++)
    cfg->services[i].setting = NULL;
}

const qm_service_cfg_t *qm_config_service(const qm_config_t *cfg, const char *name) {
  if (!cfg || !name) return NULL;
  for (size_t i = 0; i < cfg->n_services; i++)
    if (strcmp(cfg->services[i].name, name) == 0) return &cfg->services[i];
  return NULL;
}
