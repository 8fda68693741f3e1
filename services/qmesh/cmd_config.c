/*
 * cmd_config.c: `qmesh config check FILE`.
 *
 * Loads a configuration exactly as a starting service does, then its route
 * table with the configuration's service names, so one command answers "will
 * this start?" before anything is deployed. The answer is one line: the
 * summary on stdout (exit 0) or the first error on stderr (exit 1).
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "routes.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: qmesh config check FILE\n"
          "\n"
          "Validates a qmesh configuration file and the route table it names\n"
          "(routes_file), with the services the file defines. Prints\n"
          "\"FILE: ok (N services, M routes)\" and exits 0, or prints the first\n"
          "error as FILE:LINE: setting: what is wrong, and exits 1.\n"
          "Warnings about the route table go to stderr and do not fail the check.\n"
          "\n"
          "options:\n"
          "  -h, --help   show this help\n");
}

static void print_warning(void *ud, const char *msg) {
  (void)ud;
  fprintf(stderr, "warning: %s\n", msg);
}

static int check(const char *path) {
  /* static: qm_config_t holds several PATH_MAX buffers. */
  static qm_config_t cfg;
  qm_error_t err;
  if (qm_config_load(&cfg, path, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const char *names[QM_SERVICES_MAX];
  for (size_t i = 0; i < cfg.n_services; i++) names[i] = cfg.services[i].name;
  qm_routes_t *routes = NULL;
  if (qm_routes_load_file(cfg.routes_file, names, cfg.n_services, &routes, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    qm_config_free(&cfg);
    return 1;
  }
  qm_routes_warnings(routes, print_warning, NULL);
  printf("%s: ok (%zu service%s, %zu route%s)\n", path, cfg.n_services,
         cfg.n_services == 1 ? "" : "s", qm_routes_count(routes),
         qm_routes_count(routes) == 1 ? "" : "s");
  qm_routes_destroy(&routes);
  qm_config_free(&cfg);
  return 0;
}

int qm_cmd_config(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "check") != 0) {
    fprintf(stderr, "qmesh config: unknown subcommand \"%s\" (valid: check)\n", argv[1]);
    return 2;
  }
  if (argc != 3 || argv[2][0] == '-') {
    fprintf(stderr, "qmesh config check: expected exactly one FILE\n");
    usage(stderr);
    return 2;
  }
  return check(argv[2]);
}
