/*
 * cmd_routes.c: `qmesh routes check` and `qmesh routes show`.
 *
 * check validates a route file against a set of services (a configuration's,
 * or the standard seven) and prints the warnings that do not refuse a table
 * (a known type that no route takes); show prints a table as the services see
 * it. Both load the file with the same code a running service uses on reload.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "routes.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: qmesh routes check [--config CFG] [FILE]\n"
          "       qmesh routes show [--config CFG] [FILE]\n"
          "\n"
          "check  validates a route file: every route's keys, its match against the\n"
          "       known message types, its services. Services come from CFG when\n"
          "       given, else the standard seven. FILE defaults to CFG's routes_file.\n"
          "       Prints warnings, then \"FILE: ok (M routes)\"; exits 0, or 1 with\n"
          "       the error as FILE:LINE: setting: what is wrong.\n"
          "show   prints the table (name, match, when, to, default).\n"
          "\n"
          "options:\n"
          "  --config CFG   take services and the default FILE from this configuration\n"
          "  -h, --help     show this help\n");
}

static void print_warning(void *ud, const char *msg) {
  (void)ud;
  fprintf(stderr, "warning: %s\n", msg);
}

/* Loads the table named on the command line, with its services. */
static int load(const char *cfg_path, const char *file, qm_routes_t **out, const char **shown) {
  static qm_config_t cfg;
  qm_error_t err;
  const char *names[QM_SERVICES_MAX] = {0};
  size_t n = 0;
  if (cfg_path) {
    if (qm_config_load(&cfg, cfg_path, &err) != 0) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    for (size_t i = 0; i < cfg.n_services; i++) names[n++] = cfg.services[i].name;
    if (!file) file = cfg.routes_file;
  } else {
    for (size_t i = 0; qm_standard_services[i]; i++) names[n++] = qm_standard_services[i];
  }
  int rc = qm_routes_load_file(file, names, n, out, &err);
  if (rc != 0) fprintf(stderr, "%s\n", err.msg);
  /* The table copies the names it keeps, so the configuration can go. */
  if (cfg_path) qm_config_free(&cfg);
  *shown = qm_routes_source(*out);
  return rc != 0 ? 1 : 0;
}

int qm_cmd_routes(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *sub = argv[1];
  if (strcmp(sub, "check") != 0 && strcmp(sub, "show") != 0) {
    fprintf(stderr, "qmesh routes: unknown subcommand \"%s\" (valid: check, show)\n", sub);
    return 2;
  }
  const char *cfg_path = NULL, *file = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--config") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "qmesh routes %s: --config needs a file\n", sub);
        return 2;
      }
      cfg_path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      cfg_path = a + 9;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "qmesh routes %s: unknown option \"%s\" (valid: --config, --help)\n", sub,
              a);
      return 2;
    } else if (!file) {
      file = a;
    } else {
      fprintf(stderr, "qmesh routes %s: expected one FILE, got \"%s\" too\n", sub, a);
      return 2;
    }
  }
  if (!file && !cfg_path) {
    fprintf(stderr, "qmesh routes %s: give a route FILE or --config CFG\n", sub);
    usage(stderr);
    return 2;
  }
  if (cfg_path && !*cfg_path) {
    fprintf(stderr, "qmesh routes %s: --config needs a file\n", sub);
    return 2;
  }

  qm_routes_t *routes = NULL;
  const char *shown = NULL;
  int rc = load(cfg_path, file, &routes, &shown);
  if (rc != 0) return rc;
  if (strcmp(sub, "check") == 0) {
    qm_routes_warnings(routes, print_warning, NULL);
    printf("%s: ok (%zu route%s)\n", shown, qm_routes_count(routes),
           qm_routes_count(routes) == 1 ? "" : "s");
  } else {
    qm_routes_print(routes, stdout);
  }
  qm_routes_destroy(&routes);
  return 0;
}
