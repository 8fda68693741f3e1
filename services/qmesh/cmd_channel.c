/*
 * cmd_channel.c: `qmesh channel parse`, a channel plugin's parse_file run
 * by hand, without a mesh.
 *
 * Partners use it while writing a channel plugin, and operators use it to
 * see what a file would become before dropping it into a spool directory:
 * the plugin is loaded and its settings validated exactly as ingest does
 * (loader.h), each FILE is handed to parse_file, and every document the
 * plugin submits goes through the same normalization ingest applies
 * (interaction.h). Nothing is stored: each submission is printed as one JSON
 * line on stdout, the normalized interaction or the reason it was refused.
 * store_media computes the reference of a file without storing it, and the
 * services that only make sense in a running ingest (watch_dir, http_route,
 * add_timer) answer QMESH_UNSUPPORTED.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qmesh/channel.h>

#include "cmd.h"
#include "config.h"
#include "interaction.h"
#include "loader.h"
#include "log.h"
#include "media.h"

#define DEFAULT_CONFIG "configs/qmesh.cfg"

/* The context handed to the plugin: the ABI part first, so the pointer the
 * plugin gets back in submit leads here. */
typedef struct parse_ctx {
  qmesh_channel_ctx_t ctx;
  pthread_mutex_t mu; /* submit is thread-safe by contract; stdout lines must not interleave */
  const char *file;   /* the file being parsed */
  int accepted;
  int refused;
} parse_ctx_t;

/* Prints one result line: {"file": FILE, KEY: VALUE}. Takes `value`. */
static void print_line(const char *file, const char *key, json_t *value) {
  json_t *line = json_object();
  json_object_set_new(line, "file", json_string(file));
  json_object_set_new(line, key, value);
  char *s = json_dumps(line, JSON_COMPACT);
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
  }
  json_decref(line);
}

static int parse_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                        size_t reasonlen) {
  parse_ctx_t *pc = (parse_ctx_t *)ctx;
  qm_interaction_t ix;
  qm_error_t err;
  qm_error_clear(&err);
  memset(&ix, 0, sizeof ix);
  int rc;
  if (!json && len) rc = qm_error_set(&err, QM_EINVAL, "document is NULL but %zu bytes long", len);
  else rc = qm_interaction_normalize(json ? json : "", len, NULL, &ix, &err);
  pthread_mutex_lock(&pc->mu);
  if (rc == 0) {
    /* The content hash is what makes a re-submission a no-op in ingest;
     * showing it lets a partner check that re-exporting a file yields the
     * same interactions. */
    char hex[2 * sizeof ix.content_hash + 1];
    sodium_bin2hex(hex, sizeof hex, ix.content_hash, sizeof ix.content_hash);
    json_object_set_new(ix.doc, "content_hash", json_string(hex));
    print_line(pc->file, "interaction", json_incref(ix.doc));
    pc->accepted++;
  } else {
    print_line(pc->file, "refused", json_string(err.msg));
    pc->refused++;
  }
  fflush(stdout);
  pthread_mutex_unlock(&pc->mu);
  qm_interaction_free(&ix);
  if (rc == 0) return QMESH_OK;
  if (reason && reasonlen) snprintf(reason, reasonlen, "%s", err.msg);
  return QMESH_INVALID;
}

static int parse_watch_dir(const qmesh_channel_ctx_t *ctx, const char *dir, const char *suffixes) {
  (void)ctx, (void)dir, (void)suffixes;
  return QMESH_UNSUPPORTED;
}

static int parse_http_route(const qmesh_channel_ctx_t *ctx, const char *method, const char *path,
                            qmesh_http_handler_fn fn) {
  (void)ctx, (void)method, (void)path, (void)fn;
  return QMESH_UNSUPPORTED;
}

static int parse_add_timer(const qmesh_channel_ctx_t *ctx, uint32_t every_ms,
                           void (*fn)(void *state, const qmesh_channel_ctx_t *ctx)) {
  (void)ctx, (void)every_ms, (void)fn;
  return QMESH_UNSUPPORTED;
}

/* Computes the reference ingest would give the file, storing nothing. */
static int parse_store_media(const qmesh_channel_ctx_t *ctx, const char *path, char *ref, size_t reflen) {
  (void)ctx;
  if (!path || !ref || reflen < QM_MEDIA_REF_LEN) return QMESH_INVALID;
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_ref_file(path, ref, reflen, &err);
  if (rc == 0) return QMESH_OK;
  qm_log(QM_LOG_WARN, "channel.store_media_failed", "path", path, "error", err.msg, NULL);
  return rc == QM_EINVAL ? QMESH_INVALID : QMESH_ERR;
}

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

static void usage(FILE *f) {
  fputs("usage: qmesh channel parse --plugin NAME|PATH [options] FILE...\n"
        "\n"
        "Loads a channel plugin the way ingest does, hands each FILE to its\n"
        "parse_file and normalizes every interaction it submits as ingest would,\n"
        "storing nothing. Prints one JSON line per submission on stdout:\n"
        "  {\"file\": FILE, \"interaction\": {...}}  the normalized document, with id\n"
        "  {\"file\": FILE, \"refused\": \"reason\"}   a document ingest would refuse\n"
        "  {\"file\": FILE, \"error\": \"...\"}        parse_file failed on the file\n"
        "The plugin's own log lines and a summary go to stderr.\n"
        "Exit status: 0 every file parsed and every document normalized, 1 the\n"
        "plugin or its settings were refused or anything failed, 2 usage error.\n"
        "\n"
        "options:\n"
        "  --plugin NAME|PATH  the plugin; a NAME (no '/') is looked up as\n"
        "                      NAME.so in the configuration's plugin_dir\n"
        "  --config FILE       the configuration giving plugin_dir (default\n"
        "                      " DEFAULT_CONFIG " when it exists)\n"
        "  --settings FILE     the plugin's settings: the top-level group of FILE,\n"
        "                      or the group named by --group (as `qmesh plugin check`)\n"
        "  --group PATH        the plugin's group inside FILE, e.g. channels.chat\n"
        "  -v, --verbose       show the plugin's info and debug log lines\n"
        "  -h, --help          show this text\n",
        f);
}

/* Finds the plugin: a path as given, a name in the configuration's
 * plugin_dir. Returns 0, or 1 after printing why the configuration is
 * refused. */
static int resolve_plugin(const char *plugin, const char *config_file, char *out, size_t outlen) {
  if (strchr(plugin, '/')) {
    snprintf(out, outlen, "%s", plugin);
    return 0;
  }
  qm_config_t *cfg = calloc(1, sizeof *cfg);
  if (!cfg) {
    fprintf(stderr, "qmesh channel parse: out of memory\n");
    return 1;
  }
  int rc = 0;
  qm_error_t err;
  qm_error_clear(&err);
  if (!config_file && access(DEFAULT_CONFIG, F_OK) == 0) config_file = DEFAULT_CONFIG;
  if (config_file) {
    if (qm_config_load(cfg, config_file, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      rc = 1;
    }
  } else {
    qm_config_defaults(cfg);
  }
  if (!rc) qm_plugin_resolve(cfg->plugin_dir, plugin, out, outlen);
  qm_config_free(cfg);
  free(cfg);
  return rc;
}

/* Reads and validates the settings the way `qmesh plugin check` does.
 * Returns 0 or 1 after printing the one-line reason. */
static int load_settings(qm_plugin_t *p, const char *settings_file, const char *group_path) {
  config_t cfg;
  config_init(&cfg);
  const config_setting_t *group = NULL;
  int rc = 0;
  qm_error_t err;
  qm_error_clear(&err);
  if (settings_file) {
    if (config_read_file(&cfg, settings_file) != CONFIG_TRUE) {
      if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
        fprintf(stderr, "%s: cannot read\n", settings_file);
      else
        fprintf(stderr, "%s:%d: %s\n", config_error_file(&cfg) ? config_error_file(&cfg) : settings_file,
                config_error_line(&cfg), config_error_text(&cfg));
      rc = 1;
    } else {
      group = group_path ? config_lookup(&cfg, group_path) : config_root_setting(&cfg);
      if (!group) {
        fprintf(stderr, "%s: no setting %s\n", settings_file, group_path);
        rc = 1;
      }
    }
  }
  if (!rc && qm_plugin_validate_settings(p, group, settings_file ? settings_file : "(defaults)", &err)) {
    fprintf(stderr, "%s\n", err.msg);
    rc = 1;
  }
  config_destroy(&cfg);
  return rc;
}

static int parse_files(const char *plugin_path, const char *settings_file, const char *group_path,
                       char **files, int nfiles) {
  qm_plugin_t *p = NULL;
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_plugin_load(plugin_path, QMESH_KIND_CHANNEL, &p, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const qmesh_plugin_t *d = qm_plugin_descriptor(p);
  const qmesh_channel_ops_t *ops = d->ops;
  if (!ops->parse_file) {
    fprintf(stderr, "plugin \"%s\": has no parse_file, so it cannot parse files\n", d->name);
    qm_plugin_destroy(&p);
    return 1;
  }
  if (load_settings(p, settings_file, group_path)) {
    qm_plugin_destroy(&p);
    return 1;
  }
  void *st = NULL;
  int rc = ops->open(qm_plugin_host(p), qm_plugin_settings(p), &st);
  if (rc != QMESH_OK) {
    const char *n = rc_name(rc);
    fprintf(stderr, "plugin \"%s\": open returned %s%s\n", d->name, n ? n : "an unknown code",
            n ? "" : " (not a QMESH_* code)");
    qm_plugin_destroy(&p);
    return 1;
  }

  parse_ctx_t pc;
  memset(&pc, 0, sizeof pc);
  pc.ctx.struct_size = sizeof pc.ctx;
  pc.ctx.submit = parse_submit;
  pc.ctx.watch_dir = parse_watch_dir;
  pc.ctx.http_route = parse_http_route;
  pc.ctx.add_timer = parse_add_timer;
  pc.ctx.store_media = parse_store_media;
  pc.ctx.name = "parse";
  pthread_mutex_init(&pc.mu, NULL);

  int failed_files = 0;
  for (int i = 0; i < nfiles; i++) {
    pc.file = files[i];
    rc = ops->parse_file(st, files[i], &pc.ctx);
    if (rc != QMESH_OK) {
      const char *n = rc_name(rc);
      char msg[128];
      if (n) snprintf(msg, sizeof msg, "parse_file returned %s", n);
      else snprintf(msg, sizeof msg, "parse_file returned %d (not a QMESH_* code)", rc);
      pthread_mutex_lock(&pc.mu);
      print_line(files[i], "error", json_string(msg));
      fflush(stdout);
      pthread_mutex_unlock(&pc.mu);
      failed_files++;
    }
  }
  ops->close(st);
  pthread_mutex_destroy(&pc.mu);
  fprintf(stderr, "qmesh channel parse: %d file%s, %d interaction%s, %d refused, %d file%s failed\n", nfiles,
          nfiles == 1 ? "" : "s", pc.accepted, pc.accepted == 1 ? "" : "s", pc.refused, failed_files,
          failed_files == 1 ? "" : "s");
  qm_plugin_destroy(&p);
  return failed_files || pc.refused ? 1 : 0;
}

int qm_cmd_channel(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "parse") != 0) {
    fprintf(stderr, "qmesh channel: unknown command \"%s\" (valid: parse)\n", argv[1]);
    return 2;
  }
  const char *plugin = NULL, *config_file = NULL, *settings_file = NULL, *group_path = NULL;
  int verbose = 0, nfiles = 0;
  char **files = calloc((size_t)argc, sizeof *files);
  if (!files) return 1;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      free(files);
      return 0;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
      verbose = 1;
    } else if (strcmp(a, "--plugin") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--settings") == 0 ||
               strcmp(a, "--group") == 0) {
      if (!val) {
        fprintf(stderr, "qmesh channel parse: %s needs a value\n", a);
        free(files);
        return 2;
      }
      i++;
      if (strcmp(a, "--plugin") == 0) plugin = val;
      else if (strcmp(a, "--config") == 0) config_file = val;
      else if (strcmp(a, "--settings") == 0) settings_file = val;
      else group_path = val;
    } else if (strcmp(a, "--") == 0) {
      while (++i < argc) files[nfiles++] = argv[i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "qmesh channel parse: unknown option %s (see --help)\n", a);
      free(files);
      return 2;
    } else {
      files[nfiles++] = argv[i];
    }
  }
  const char *problem = !plugin                          ? "no plugin given (--plugin NAME|PATH)"
                        : !nfiles                        ? "no file to parse"
                        : group_path && !settings_file ? "--group needs --settings"
                                                         : NULL;
  if (problem) {
    fprintf(stderr, "qmesh channel parse: %s (see --help)\n", problem);
    free(files);
    return 2;
  }
  /* Log lines go to stderr so that stdout stays one JSON document per line:
   * warnings and errors always, the plugin's chatter with -v. */
  qm_log_level_t saved = qm_log_get_level();
  qm_log_set_level(verbose ? QM_LOG_DEBUG : QM_LOG_WARN);
  char path[PATH_MAX];
  int rc = resolve_plugin(plugin, config_file, path, sizeof path);
  if (!rc) rc = parse_files(path, settings_file, group_path, files, nfiles);
  qm_log_set_level(saved);
  free(files);
  return rc;
}
