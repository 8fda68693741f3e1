/*
 * cmd_run.c: `qmesh run`: loads the configuration and runs the chosen
 * services until SIGTERM or SIGINT drains them.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "log.h"
#include "service.h"
#include "targets.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: qmesh run [--config FILE] [--target LIST] [--data-dir DIR] [--log-level L]\n"
          "       qmesh run --list-targets\n\n"
          "Runs services until SIGTERM or SIGINT, which drain them and exit 0.\n"
          "SIGHUP (or editing the route file) reloads the route table.\n\n"
          "  --config FILE    configuration (default configs/qmesh.cfg)\n"
          "  --target LIST    comma list of services and groups (default all); with\n"
          "                   `all` the services talk over inproc://, otherwise over\n"
          "                   the endpoints in the configuration\n"
          "  --data-dir DIR   overrides data_dir\n"
          "  --log-level L    overrides log.level (debug, info, warn, error)\n"
          "  --list-targets   prints every target and group\n");
}

static void list_targets(void) {
  printf("targets:\n");
  for (size_t i = 0; qm_targets[i]; i++)
    printf("  %-12s %s\n", qm_targets[i]->name, qm_targets[i]->summary);
  printf("groups:\n");
  for (size_t i = 0; qm_target_groups[i].name; i++)
    printf("  %-12s %s (%s)\n", qm_target_groups[i].name, qm_target_groups[i].summary,
           qm_target_groups[i].members);
}

int qm_cmd_run(int argc, char **argv) {
  const char *config = "configs/qmesh.cfg", *target = "all", *data_dir = NULL, *level = NULL;
  static const struct option opts[] = {
    {"config", required_argument, 0, 'c'},  {"target", required_argument, 0, 't'},
    {"data-dir", required_argument, 0, 'd'}, {"log-level", required_argument, 0, 'l'},
    {"list-targets", no_argument, 0, 'L'},   {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "c:t:d:l:h", opts, NULL)) != -1) {
    switch (c) {
    case 'c': config = optarg; break;
    case 't': target = optarg; break;
    case 'd': data_dir = optarg; break;
    case 'l': level = optarg; break;
    case 'L': list_targets(); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  const qm_service_def_t *defs[16];
  char bad[64];
  int n = qm_targets_expand(target, defs, 16, bad, sizeof bad);
  if (n <= 0) {
    fprintf(stderr, "qmesh run: unknown target \"%s\" (see qmesh run --list-targets)\n", bad);
    return 2;
  }
  static qm_config_t cfg;
  qm_error_t err;
  if (qm_config_load(&cfg, config, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  if (data_dir) snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", data_dir);
  qm_log_set_level((qm_log_level_t)cfg.log_level);
  qm_log_set_json(cfg.log_json);
  if (level) {
    int l = qm_log_level_parse(level);
    if (l < 0) {
      fprintf(stderr, "qmesh run: --log-level: \"%s\" (valid: debug, info, warn, error, off)\n",
              level);
      qm_config_free(&cfg);
      return 2;
    }
    qm_log_set_level((qm_log_level_t)l);
  }
  qm_runtime_t *rt = NULL;
  qm_runtime_opts_t ro = {.cfg = &cfg, .inproc = strcmp(target, "all") == 0};
  int rc = qm_runtime_new(&rt, &ro, &err);
  for (int i = 0; rc == 0 && i < n; i++) rc = qm_runtime_add(rt, defs[i], &err);
  if (rc == 0) {
    qm_log(QM_LOG_INFO, "runtime.starting", "config", config, "target", target, "data_dir",
           cfg.data_dir, NULL);
    rc = qm_runtime_run(rt, &err);
  }
  if (rc) {
    qm_log(QM_LOG_ERROR, "runtime.failed", "error", err.msg, NULL);
    fprintf(stderr, "qmesh run: %s\n", err.msg);
  }
  qm_runtime_destroy(&rt);
  qm_config_free(&cfg);
  return rc ? 1 : 0;
}
