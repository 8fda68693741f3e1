/*
 * main.c: the one qmesh binary. `qmesh COMMAND ...` dispatches to the
 * subcommands in cmd_*.c; `qmesh run --target=...` runs services.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"

static int cmd_version(int argc, char **argv) {
  (void)argc;
  (void)argv;
  printf("qmesh %s (plugin ABI 1.0, envelope v1)\n", QMESH_VERSION);
  return 0;
}

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} commands[] = {
  {"run", qm_cmd_run, "run one or several services (--target)"},
  {"config", qm_cmd_config, "check a configuration file"},
  {"routes", qm_cmd_routes, "check or show a route table"},
  {"dead", qm_cmd_dead, "list, show or replay dead letters"},
  {"probe", qm_cmd_probe, "GET a URL; exit 0 on a 2xx answer (health checks)"},
  {"plugin", qm_cmd_plugin, "check a plugin against the ABI and its conformance suite"},
  {"channel", qm_cmd_channel, "parse files with a channel plugin, print the normalized interactions"},
  {"version", cmd_version, "print the version"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: qmesh COMMAND [OPTIONS]\n\n"
               "qmesh scores every customer interaction against your scorecards and routes\n"
               "what it finds to coaching, recognition and compliance work.\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\n`qmesh COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) return cmd_version(0, NULL);
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "qmesh: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return 2;
}
