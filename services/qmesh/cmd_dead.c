/*
 * cmd_dead.c: `qmesh dead list|show|replay`: the dead-letter store of a
 * service. list and show read the service's store directly (LMDB allows it
 * while the service runs). replay goes through the running service's HTTP
 * API so its in-memory sequences stay right; when the service is not
 * running, it replays offline through the same bus code.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zmq.h>

#include "bus.h"
#include "cmd.h"
#include "config.h"
#include "dead.h"
#include "http.h"
#include "service.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: qmesh dead list   --service NAME [--config FILE] [--limit N] [--json]\n"
          "       qmesh dead show   --service NAME [--config FILE] ID\n"
          "       qmesh dead replay --service NAME [--config FILE] (ID | --all)\n\n"
          "Dead letters are messages a service could not accept (malformed, refused by\n"
          "its handler, or emitted with no route), kept with the reason. replay runs\n"
          "them again: through the running service when its HTTP port answers,\n"
          "otherwise offline against its store.\n");
}

static const char *resolve_cfg(void *ud, const char *name) {
  const qm_service_cfg_t *s = qm_config_service(ud, name);
  return s ? s->connect : NULL;
}

static int replay_offline(qm_config_t *cfg, const char *service, const char *id_or_all) {
  qm_error_t err;
  qm_store_t *st = NULL;
  if (qm_service_open_store(cfg, service, &st, &err) != 0) {
    fprintf(stderr, "qmesh dead replay: %s\n", err.msg);
    return 1;
  }
  qm_routes_t *routes = NULL;
  const char *names[QM_SERVICES_MAX];
  for (size_t i = 0; i < cfg->n_services; i++) names[i] = cfg->services[i].name;
  if (qm_routes_load_file(cfg->routes_file, names, cfg->n_services, &routes, &err) != 0) {
    fprintf(stderr, "qmesh dead replay: %s\n", err.msg);
    qm_store_destroy(&st);
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  void *zctx = zmq_ctx_new();
  qm_bus_t *bus = NULL;
  qm_bus_opts_t bo = {.name = service, .zmq_ctx = zctx, .loop = &loop, .store = st,
                      .cfg = cfg->bus, .resolve = resolve_cfg, .resolve_ud = cfg,
                      .routes = routes};
  int failed = 0;
  if (qm_bus_new(&bus, &bo, &err) != 0) {
    fprintf(stderr, "qmesh dead replay: %s\n", err.msg);
    failed = 1;
  } else {
    json_t *ids = qm_dead_ids(st, qm_bus_dead_dbi(bus), strcmp(id_or_all, "all") ? id_or_all : NULL);
    if (json_array_size(ids) == 0 && strcmp(id_or_all, "all") != 0) {
      fprintf(stderr, "qmesh dead replay: no dead message %s in %s\n", id_or_all, service);
      failed = 1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
      qm_id_t id;
      qm_id_parse(&id, json_string_value(v));
      if (qm_bus_dead_replay(bus, &id, &err) == 0) {
        printf("%s replayed\n", json_string_value(v));
      } else {
        printf("%s not replayed: %s\n", json_string_value(v), err.msg);
        failed = 1;
      }
    }
    json_decref(ids);
    qm_bus_destroy(&bus);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  zmq_ctx_term(zctx);
  qm_store_destroy(&st);
  return failed;
}

int qm_cmd_dead(int argc, char **argv) {
  const char *config = "configs/qmesh.cfg", *service = NULL;
  long limit = 100;
  int json = 0, all = 0;
  static const struct option opts[] = {
    {"config", required_argument, 0, 'c'}, {"service", required_argument, 0, 's'},
    {"limit", required_argument, 0, 'n'},  {"json", no_argument, 0, 'j'},
    {"all", no_argument, 0, 'a'},          {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *verb = argv[1];
  int c;
  optind = 2;
  while ((c = getopt_long(argc, argv, "c:s:n:jah", opts, NULL)) != -1) {
    switch (c) {
    case 'c': config = optarg; break;
    case 's': service = optarg; break;
    case 'n': limit = strtol(optarg, NULL, 10); break;
    case 'j': json = 1; break;
    case 'a': all = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  const char *id = optind < argc ? argv[optind] : NULL;
  int is_list = strcmp(verb, "list") == 0, is_show = strcmp(verb, "show") == 0,
      is_replay = strcmp(verb, "replay") == 0;
  if (!service || !(is_list || is_show || is_replay) || (is_show && !id) ||
      (is_replay && !id == !all)) {
    usage(stderr);
    return 2;
  }
  static qm_config_t cfg;
  qm_error_t err;
  if (qm_config_load(&cfg, config, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const qm_service_cfg_t *scfg = qm_config_service(&cfg, service);
  if (!scfg) {
    fprintf(stderr, "qmesh dead: no service \"%s\" in %s\n", service, config);
    qm_config_free(&cfg);
    return 1;
  }
  int rc = 0;
  if (is_replay) {
    char url[300], body[65536];
    int status = -1;
    if (scfg->http[0]) {
      snprintf(url, sizeof url, "http://%s/healthz", scfg->http);
      status = qm_http_get(url, 1000, NULL, 0, NULL);
    }
    if (status >= 200 && status < 300) {
      snprintf(url, sizeof url, "http://%s/v1/dead/replay?id=%s", scfg->http, all ? "all" : id);
      status = qm_http_post(url, 30000, "", 0, body, sizeof body, &err);
      if (status < 0) {
        fprintf(stderr, "qmesh dead replay: %s\n", err.msg);
        rc = 1;
      } else {
        fputs(body, stdout);
        rc = status == 200 ? 0 : 1;
      }
    } else {
      rc = replay_offline(&cfg, service, all ? "all" : id);
    }
    qm_config_free(&cfg);
    return rc;
  }
  qm_store_t *st = NULL;
  MDB_dbi dead;
  if (qm_service_open_store(&cfg, service, &st, &err) != 0 ||
      qm_store_table(st, "dead", &dead, &err) != 0) {
    fprintf(stderr, "qmesh dead: %s\n", err.msg);
    qm_store_destroy(&st);
    qm_config_free(&cfg);
    return 1;
  }
  json_t *list = qm_dead_list(st, dead, is_show ? id : NULL, (size_t)limit, is_show);
  if (is_show && json_array_size(list) == 0) {
    fprintf(stderr, "qmesh dead show: no dead message %s in %s\n", id, service);
    rc = 1;
  } else if (json || is_show) {
    char *s = json_dumps(is_show ? json_array_get(list, 0) : list, JSON_INDENT(2));
    puts(s);
    free(s);
  } else {
    size_t i;
    json_t *e;
    printf("%-36s  %-24s  %-12s  %s\n", "ID", "TYPE", "FROM", "REASON");
    json_array_foreach(list, i, e) {
      const char *type = json_string_value(json_object_get(e, "type"));
      printf("%-36s  %-24s  %-12s  %s\n", json_string_value(json_object_get(e, "id")),
             type ? type : "-", json_string_value(json_object_get(e, "from")),
             json_string_value(json_object_get(e, "reason")));
    }
    printf("%zu dead message%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
  }
  json_decref(list);
  qm_store_destroy(&st);
  qm_config_free(&cfg);
  return rc;
}
