/*
 * test_config.c: configs/qmesh.cfg loading (common/src/config.c).
 *
 * Covers the defaults, the shipped configuration (which must spell out every
 * key with its default), custom service sets, and every kind of refusal with
 * its exact one-line message and line number, the way a person running
 * `qmesh config check` would read it.
 */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "routes.h"

static char tmpdir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qm_test_config.XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes `text` to tmpdir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static void assert_defaults_except_paths(const qm_config_t *cfg) {
  assert_int_equal(cfg->log_level, QM_LOG_INFO);
  assert_int_equal(cfg->log_json, 0);
  assert_int_equal(cfg->bus.batch_max, 4096);
  assert_int_equal(cfg->bus.window, 10000);
  assert_int_equal(cfg->bus.retransmit_ms, 1000);
  assert_int_equal(cfg->bus.backoff_max_ms, 30000);
  assert_int_equal(cfg->bus.outbox_high_water, 1000000);
  assert_int_equal(cfg->bus.outbox_low_water, 800000);
  assert_int_equal(cfg->bus.peer_timeout_ms, 15000);
  assert_int_equal(cfg->bus.heartbeat_ms, 1000);
  assert_int_equal(cfg->bus.drain_timeout_ms, 10000);
  assert_int_equal(cfg->bus.ack_flush_ms, 20);
  assert_int_equal(cfg->bus.max_message_bytes, 4u << 20);
  assert_int_equal(cfg->store.map_size, (size_t)1024 << 20);
  assert_int_equal(cfg->store.sync, 1);
  assert_int_equal(cfg->n_services, 7);
  for (size_t i = 0; i < 7; i++) {
    char bind[64], http[64];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%zu", 7101 + i);
    snprintf(http, sizeof http, "127.0.0.1:%zu", 8101 + i);
    assert_string_equal(cfg->services[i].name, qm_standard_services[i]);
    assert_string_equal(cfg->services[i].bind, bind);
    assert_string_equal(cfg->services[i].connect, bind);
    assert_string_equal(cfg->services[i].http, http);
  }
}

static void test_standard_services(void **state) {
  (void)state;
  const char *want[] = {"ingest",   "transcribe",  "autoscore", "policy",
                        "coaching", "recognition", "reporting"};
  size_t n = 0;
  while (qm_standard_services[n]) n++;
  assert_int_equal(n, 7);
  for (size_t i = 0; i < 7; i++) assert_string_equal(qm_standard_services[i], want[i]);
}

static void test_defaults(void **state) {
  (void)state;
  static qm_config_t cfg;
  memset(&cfg, 0xab, sizeof cfg);
  qm_config_defaults(&cfg);
  assert_defaults_except_paths(&cfg);
  assert_string_equal(cfg.data_dir, "../data");
  assert_string_equal(cfg.routes_file, "routes.cfg");
  assert_string_equal(cfg.plugin_dir, "../build/plugins");
  assert_int_equal(cfg.raw_loaded, 0);
  assert_null(cfg.services[0].setting);
  assert_ptr_equal(qm_config_service(&cfg, "policy"), &cfg.services[3]);
  assert_null(qm_config_service(&cfg, "scoring"));
  /* Freeing defaults (no tree) is harmless, and so is doing it twice. */
  qm_config_free(&cfg);
  qm_config_free(&cfg);
}

static void test_empty_file_is_defaults(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  const char *p = write_file("empty.cfg", "# nothing here\n");
  assert_int_equal(qm_config_load(&cfg, p, &err), 0);
  assert_defaults_except_paths(&cfg);
  char want[PATH_MAX + 32];
  assert_string_equal(cfg.path, p);
  assert_string_equal(cfg.dir, tmpdir);
  snprintf(want, sizeof want, "%s/../data", tmpdir);
  assert_string_equal(cfg.data_dir, want);
  snprintf(want, sizeof want, "%s/routes.cfg", tmpdir);
  assert_string_equal(cfg.routes_file, want);
  snprintf(want, sizeof want, "%s/../build/plugins", tmpdir);
  assert_string_equal(cfg.plugin_dir, want);
  assert_int_equal(cfg.raw_loaded, 1);
  qm_config_free(&cfg);
  assert_int_equal(cfg.raw_loaded, 0);
  qm_config_free(&cfg);
}

/* configs/qmesh.cfg documents itself: it must hold every key, and every value
 * must be the default, so reading it changes nothing. */
static void test_shipped_config(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  const char *path = QMESH_SOURCE_DIR "/configs/qmesh.cfg";
  int rc = qm_config_load(&cfg, path, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_defaults_except_paths(&cfg);
  assert_string_equal(cfg.data_dir, QMESH_SOURCE_DIR "/configs/../data");
  assert_string_equal(cfg.routes_file, QMESH_SOURCE_DIR "/configs/routes.cfg");
  assert_string_equal(cfg.plugin_dir, QMESH_SOURCE_DIR "/configs/../build/plugins");
  const char *keys[] = {"data_dir",
                        "routes_file",
                        "plugin_dir",
                        "log.level",
                        "log.format",
                        "bus.batch_max",
                        "bus.window",
                        "bus.retransmit_ms",
                        "bus.backoff_max_ms",
                        "bus.outbox_high_water",
                        "bus.outbox_low_water",
                        "bus.peer_timeout_ms",
                        "bus.heartbeat_ms",
                        "bus.drain_timeout_ms",
                        "bus.ack_flush_ms",
                        "bus.max_message_kb",
                        "store.map_size_mb",
                        "store.sync",
                        NULL};
  for (size_t i = 0; keys[i]; i++)
    if (!config_lookup(&cfg.raw, keys[i])) fail_msg("configs/qmesh.cfg lacks %s", keys[i]);
  for (size_t i = 0; i < cfg.n_services; i++) {
    assert_non_null(cfg.services[i].setting);
    assert_string_equal(config_setting_name(cfg.services[i].setting), cfg.services[i].name);
    assert_non_null(config_setting_get_member(cfg.services[i].setting, "bind"));
    assert_non_null(config_setting_get_member(cfg.services[i].setting, "connect"));
    assert_non_null(config_setting_get_member(cfg.services[i].setting, "http"));
  }

  /* Its route table loads with its services and leaves no type untaken. */
  const char *names[QM_SERVICES_MAX];
  for (size_t i = 0; i < cfg.n_services; i++) names[i] = cfg.services[i].name;
  qm_routes_t *r = NULL;
  rc = qm_routes_load_file(cfg.routes_file, names, cfg.n_services, &r, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_true(qm_routes_count(r) > 0);
  assert_int_equal(qm_routes_warnings(r, NULL, NULL), 0);
  qm_routes_destroy(&r);
  qm_config_free(&cfg);
}

static void test_every_value_read(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  const char *p = write_file("values.cfg",
                             "data_dir = \"/var/lib/qmesh\";\n"
                             "routes_file = \"tables/r.cfg\";\n"
                             "plugin_dir = \"/opt/qmesh/plugins\";\n"
                             "log = { level = \"warn\"; format = \"json\"; };\n"
                             "bus = { batch_max = 65536; window = 1; retransmit_ms = 250;\n"
                             "  backoff_max_ms = 250; outbox_high_water = 5000000000;\n"
                             "  outbox_low_water = 4000000000L; peer_timeout_ms = 5;\n"
                             "  heartbeat_ms = 6; drain_timeout_ms = 7; ack_flush_ms = 8;\n"
                             "  max_message_kb = 1; };\n"
                             "store = { map_size_mb = 2048; sync = false; };\n");
  int rc = qm_config_load(&cfg, p, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_string_equal(cfg.data_dir, "/var/lib/qmesh");
  char want[PATH_MAX + 32];
  snprintf(want, sizeof want, "%s/tables/r.cfg", tmpdir);
  assert_string_equal(cfg.routes_file, want);
  assert_string_equal(cfg.plugin_dir, "/opt/qmesh/plugins");
  assert_int_equal(cfg.log_level, QM_LOG_WARN);
  assert_int_equal(cfg.log_json, 1);
  assert_int_equal(cfg.bus.batch_max, 65536);
  assert_int_equal(cfg.bus.window, 1);
  assert_int_equal(cfg.bus.retransmit_ms, 250);
  assert_int_equal(cfg.bus.backoff_max_ms, 250);
  /* Above 2^31 without the L suffix: libconfig 1.5 alone would wrap it. */
  assert_int_equal(cfg.bus.outbox_high_water, 5000000000ull);
  assert_int_equal(cfg.bus.outbox_low_water, 4000000000ull);
  assert_int_equal(cfg.bus.peer_timeout_ms, 5);
  assert_int_equal(cfg.bus.heartbeat_ms, 6);
  assert_int_equal(cfg.bus.drain_timeout_ms, 7);
  assert_int_equal(cfg.bus.ack_flush_ms, 8);
  assert_int_equal(cfg.bus.max_message_bytes, 1024);
  assert_int_equal(cfg.store.map_size, (size_t)2048 << 20);
  assert_int_equal(cfg.store.sync, 0);
  assert_int_equal(cfg.n_services, 7);
  qm_config_free(&cfg);
}

static void test_custom_services_replace_standard(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  const char *p = write_file("svc.cfg",
                             "services = {\n"
                             "  src = { bind = \"tcp://*:7201\"; };\n"
                             "  dst = { bind = \"tcp://0.0.0.0:7202\"; http = \"0.0.0.0:8202\"; };\n"
                             "  far = { bind = \"tcp://[::]:7203\"; connect = \"tcp://far.example:7203\"; };\n"
                             "  local = { bind = \"ipc:///tmp/qm-local.sock\"; };\n"
                             "  mem = { bind = \"inproc://mem\"; http = \"\"; };\n"
                             "  ingest = { channels = ( { plugin = \"channel_wav\"; } ); };\n"
                             "};\n");
  int rc = qm_config_load(&cfg, p, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_int_equal(cfg.n_services, 6);
  const qm_service_cfg_t *s = qm_config_service(&cfg, "src");
  assert_non_null(s);
  assert_string_equal(s->bind, "tcp://*:7201");
  assert_string_equal(s->connect, "tcp://127.0.0.1:7201");
  assert_string_equal(s->http, "");
  s = qm_config_service(&cfg, "dst");
  assert_string_equal(s->connect, "tcp://127.0.0.1:7202");
  assert_string_equal(s->http, "0.0.0.0:8202");
  s = qm_config_service(&cfg, "far");
  assert_string_equal(s->bind, "tcp://[::]:7203");
  assert_string_equal(s->connect, "tcp://far.example:7203");
  s = qm_config_service(&cfg, "local");
  assert_string_equal(s->connect, "ipc:///tmp/qm-local.sock");
  s = qm_config_service(&cfg, "mem");
  assert_string_equal(s->connect, "inproc://mem");
  assert_string_equal(s->http, "");
  /* A standard name keeps its standard ports, and its own keys stay
   * reachable for the service to validate. */
  s = qm_config_service(&cfg, "ingest");
  assert_ptr_equal(s, &cfg.services[5]);
  assert_string_equal(s->bind, "tcp://127.0.0.1:7101");
  assert_string_equal(s->http, "127.0.0.1:8101");
  const char *plugin = NULL;
  assert_true(config_setting_lookup_string(config_setting_get_elem(
                                             config_setting_get_member(s->setting, "channels"), 0),
                                           "plugin", &plugin));
  assert_string_equal(plugin, "channel_wav");
  /* The standard seven are replaced, not merged. */
  assert_null(qm_config_service(&cfg, "policy"));
  qm_config_free(&cfg);
}

static void test_include_resolves_against_file_dir(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  write_file("bus.inc",
             "bus = { window = 77;\n  outbox_high_water = 6000000000; outbox_low_water = 1; };\n");
  const char *p = write_file("main.cfg", "@include \"bus.inc\"\nstore = { sync = false; };\n");
  /* From another working directory, @include still finds bus.inc. */
  char cwd[PATH_MAX];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir("/"), 0);
  int rc = qm_config_load(&cfg, p, &err);
  assert_int_equal(chdir(cwd), 0);
  if (rc) fail_msg("%s", err.msg);
  assert_int_equal(cfg.bus.window, 77);
  assert_int_equal(cfg.bus.outbox_high_water, 6000000000ull);
  assert_int_equal(cfg.store.sync, 0);
  qm_config_free(&cfg);

  /* An error inside the included file names that file and its line. */
  write_file("bad.inc", "\nbus = { window = 0; };\n");
  p = write_file("main2.cfg", "@include \"bad.inc\"\n");
  assert_int_equal(qm_config_load(&cfg, p, &err), QM_ECONFIG);
  char want[1024];
  snprintf(want, sizeof want, "%s/bad.inc:2: bus.window: must be between 1 and 1000000", tmpdir);
  assert_string_equal(err.msg, want);
  qm_config_free(&cfg);
}

typedef struct {
  const char *text;
  const char *msg; /* "%s" stands for the file's path */
} bad_t;

static const bad_t bad_configs[] = {
  /* syntax, as libconfig words it */
  {"bus = {\n  window = ;\n};\n", "%s:2: syntax error"},
  {"log = { level = \"info\"; };\nlog = { format = \"json\"; };\n",
   "%s:2: duplicate setting name"},
  /* unknown keys, with the valid ones */
  {"# top\ndatadir = \"x\";\n",
   "%s:2: datadir: unknown setting (valid: data_dir, routes_file, plugin_dir, log, bus, store, "
   "services)"},
  {"bus = {\n  batch_max = 1;\n  windw = 5;\n};\n",
   "%s:3: bus.windw: unknown setting (valid: batch_max, window, retransmit_ms, backoff_max_ms, "
   "outbox_high_water, outbox_low_water, peer_timeout_ms, heartbeat_ms, drain_timeout_ms, "
   "ack_flush_ms, max_message_kb)"},
  {"log = { colour = true; };\n", "%s:1: log.colour: unknown setting (valid: level, format)"},
  {"store = { mapsize = 1; };\n", "%s:1: store.mapsize: unknown setting (valid: map_size_mb, sync)"},
  /* types */
  {"data_dir = 5;\n", "%s:1: data_dir: must be a string (got an integer)"},
  {"routes_file = [\"a\"];\n", "%s:1: routes_file: must be a string (got an array)"},
  {"plugin_dir = \"\";\n", "%s:1: plugin_dir: must not be empty"},
  {"log = \"debug\";\n", "%s:1: log: must be a group { ... } (got a string)"},
  {"bus = ( 1 );\n", "%s:1: bus: must be a group { ... } (got a list)"},
  {"bus = { window = \"5\"; };\n", "%s:1: bus.window: must be an integer (got a string)"},
  {"bus = { window = 5.0; };\n", "%s:1: bus.window: must be an integer (got a float)"},
  {"bus = { outbox_high_water = true; };\n",
   "%s:1: bus.outbox_high_water: must be an integer (got a boolean)"},
  {"store = { sync = 1; };\n", "%s:1: store.sync: must be true or false (got an integer)"},
  {"store = { sync = \"yes\"; };\n", "%s:1: store.sync: must be true or false (got a string)"},
  {"log = { level = 1; };\n", "%s:1: log.level: must be a string (got an integer)"},
  /* ranges */
  {"bus = { batch_max = 0; };\n", "%s:1: bus.batch_max: must be between 1 and 65536"},
  {"bus = { batch_max = 65537; };\n", "%s:1: bus.batch_max: must be between 1 and 65536"},
  {"\n\nbus = { window = 1000001; };\n", "%s:3: bus.window: must be between 1 and 1000000"},
  {"bus = { window = -1; };\n", "%s:1: bus.window: must be between 1 and 1000000"},
  /* 4294967297 would wrap to 1 in libconfig 1.5: it must be refused, not read as 1. */
  {"bus = { window = 4294967297; };\n", "%s:1: bus.window: must be between 1 and 1000000"},
  {"bus = { retransmit_ms = 0; };\n", "%s:1: bus.retransmit_ms: must be between 1 and 3600000"},
  {"bus = { heartbeat_ms = 3600001; };\n",
   "%s:1: bus.heartbeat_ms: must be between 1 and 3600000"},
  {"bus = { ack_flush_ms = 60001; };\n", "%s:1: bus.ack_flush_ms: must be between 1 and 60000"},
  {"bus = { max_message_kb = 0; };\n", "%s:1: bus.max_message_kb: must be between 1 and 1048576"},
  {"bus = { outbox_high_water = 0; };\n",
   "%s:1: bus.outbox_high_water: must be between 1 and 1000000000000"},
  {"store = { map_size_mb = 0; };\n", "%s:1: store.map_size_mb: must be between 1 and 1048576"},
  {"store = { map_size_mb = 1048577; };\n",
   "%s:1: store.map_size_mb: must be between 1 and 1048576"},
  /* cross-field */
  {"bus = {\n  outbox_high_water = 100;\n  outbox_low_water = 100;\n};\n",
   "%s:3: bus.outbox_low_water: must be less than bus.outbox_high_water (100)"},
  {"bus = {\n  outbox_high_water = 500000;\n};\n",
   "%s:2: bus.outbox_high_water: must be greater than bus.outbox_low_water (800000)"},
  {"bus = { backoff_max_ms = 500; };\n",
   "%s:1: bus.backoff_max_ms: must not be less than bus.retransmit_ms (1000)"},
  {"bus = { retransmit_ms = 40000; };\n",
   "%s:1: bus.retransmit_ms: must not be greater than bus.backoff_max_ms (30000)"},
  /* log words */
  {"log = { level = \"verbose\"; };\n",
   "%s:1: log.level: unknown level \"verbose\" (valid: debug, info, warn, error, off)"},
  {"log = {\n  format = \"xml\";\n};\n",
   "%s:2: log.format: unknown format \"xml\" (valid: logfmt, json)"},
  /* services */
  {"services = 1;\n", "%s:1: services: must be a group { ... } (got an integer)"},
  {"services = {};\n", "%s:1: services: must define at least one service"},
  {"services = {\n  src = { http = \"127.0.0.1:9000\"; };\n};\n",
   "%s:2: services.src.bind: required for a service that is not one of the standard seven "
   "(ingest, transcribe, autoscore, policy, coaching, recognition, reporting)"},
  {"services = { src = \"tcp://*:1\"; };\n",
   "%s:1: services.src: must be a group { bind = ...; } (got a string)"},
  {"services = { Src = { bind = \"tcp://*:1\"; }; };\n",
   "%s:1: services.Src: invalid service name \"Src\" (valid: a lower-case letter, then "
   "lower-case letters, digits or _, at most 32 characters)"},
  {"services = { a-b = { bind = \"tcp://*:1\"; }; };\n",
   "%s:1: services.a-b: invalid service name \"a-b\" (valid: a lower-case letter, then "
   "lower-case letters, digits or _, at most 32 characters)"},
  {"services = { abcdefghijabcdefghijabcdefghijabc = { bind = \"tcp://*:1\"; }; };\n",
   "%s:1: services.abcdefghijabcdefghijabcdefghijabc: invalid service name "
   "\"abcdefghijabcdefghijabcdefghijabc\" (valid: a lower-case letter, then lower-case "
   "letters, digits or _, at most 32 characters)"},
  {"services = { src = { bind = 7101; }; };\n",
   "%s:1: services.src.bind: must be a string (got an integer)"},
  {"services = { src = { bind = \"tcp://localhost\"; }; };\n",
   "%s:1: services.src.bind: \"tcp://localhost\" is not an endpoint (valid: tcp://HOST:PORT, "
   "ipc://PATH, inproc://NAME)"},
  {"services = { src = { bind = \"tcp://localhost:0\"; }; };\n",
   "%s:1: services.src.bind: \"tcp://localhost:0\" is not an endpoint (valid: tcp://HOST:PORT, "
   "ipc://PATH, inproc://NAME)"},
  {"services = { src = { bind = \"tcp://localhost:65536\"; }; };\n",
   "%s:1: services.src.bind: \"tcp://localhost:65536\" is not an endpoint (valid: "
   "tcp://HOST:PORT, ipc://PATH, inproc://NAME)"},
  {"services = { src = { bind = \"udp://localhost:1\"; }; };\n",
   "%s:1: services.src.bind: \"udp://localhost:1\" is not an endpoint (valid: tcp://HOST:PORT, "
   "ipc://PATH, inproc://NAME)"},
  {"services = { src = { bind = \"inproc://\"; }; };\n",
   "%s:1: services.src.bind: \"inproc://\" is not an endpoint (valid: tcp://HOST:PORT, "
   "ipc://PATH, inproc://NAME)"},
  {"services = { src = { bind = \"tcp://*:1\"; connect = \"tcp://*:1\"; }; };\n",
   "%s:1: services.src.connect: \"tcp://*:1\" cannot be connected to (use a host name or "
   "address)"},
  {"services = {\n  ingest = {\n    http = \"8101\";\n  };\n};\n",
   "%s:3: services.ingest.http: \"8101\" is not HOST:PORT (valid: HOST:PORT, or \"\" to "
   "disable)"},
  {"services = { ingest = { http = \"host:port\"; }; };\n",
   "%s:1: services.ingest.http: \"host:port\" is not HOST:PORT (valid: HOST:PORT, or \"\" to "
   "disable)"},
  {"services = {\n  src = { bind = \"tcp://*:7000\"; };\n  dst = { bind = \"tcp://*:7000\"; };\n};\n",
   "%s:3: services.dst.bind: \"tcp://*:7000\" is already the bind of services.src"},
  {"services = {\n  src = { bind = \"tcp://*:7000\"; http = \"127.0.0.1:1\"; };\n"
   "  dst = { bind = \"tcp://*:7001\"; http = \"127.0.0.1:1\"; };\n};\n",
   "%s:3: services.dst.http: \"127.0.0.1:1\" is already the http of services.src"},
};

static void test_errors(void **state) {
  (void)state;
  static qm_config_t cfg;
  for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
    qm_error_t err;
    char name[32], want[1200];
    snprintf(name, sizeof name, "bad%zu.cfg", i);
    const char *p = write_file(name, bad_configs[i].text);
    snprintf(want, sizeof want, bad_configs[i].msg, p);
    int rc = qm_config_load(&cfg, p, &err);
    if (rc != QM_ECONFIG || strcmp(err.msg, want) != 0)
      fail_msg("case %zu (%s): rc %d\n got: %s\nwant: %s", i, bad_configs[i].text, rc, err.msg,
               want);
    assert_int_equal(err.code, QM_ECONFIG);
    /* A refused file leaves nothing to free twice. */
    assert_int_equal(cfg.raw_loaded, 0);
    qm_config_free(&cfg);
  }
}

static void test_too_many_services(void **state) {
  (void)state;
  static qm_config_t cfg;
  static char text[8192];
  size_t used = (size_t)snprintf(text, sizeof text, "services = {\n");
  for (int i = 0; i <= QM_SERVICES_MAX; i++)
    used += (size_t)snprintf(text + used, sizeof text - used,
                             "  s%d = { bind = \"tcp://127.0.0.1:%d\"; };\n", i, 9000 + i);
  snprintf(text + used, sizeof text - used, "};\n");
  const char *p = write_file("many.cfg", text);
  qm_error_t err;
  assert_int_equal(qm_config_load(&cfg, p, &err), QM_ECONFIG);
  char want[1024];
  snprintf(want, sizeof want, "%s:%d: services.s%d: too many services (at most %d)", p,
           QM_SERVICES_MAX + 2, QM_SERVICES_MAX, QM_SERVICES_MAX);
  assert_string_equal(err.msg, want);
}

static void test_unreadable(void **state) {
  (void)state;
  static qm_config_t cfg;
  qm_error_t err;
  char p[PATH_MAX + 32], want[PATH_MAX + 128];
  snprintf(p, sizeof p, "%s/missing.cfg", tmpdir);
  assert_int_equal(qm_config_load(&cfg, p, &err), QM_ECONFIG);
  snprintf(want, sizeof want, "%s:1: cannot read: No such file or directory", p);
  assert_string_equal(err.msg, want);
  assert_int_equal(qm_config_load(&cfg, tmpdir, &err), QM_ECONFIG);
  snprintf(want, sizeof want, "%s:1: cannot read: Is a directory", tmpdir);
  assert_string_equal(err.msg, want);
  qm_config_free(&cfg);
}

static void test_resolve(void **state) {
  (void)state;
  static qm_config_t cfg;
  char out[PATH_MAX];
  qm_config_defaults(&cfg);
  snprintf(cfg.dir, sizeof cfg.dir, "/etc/qmesh");
  qm_config_resolve(&cfg, "forms/a.cfg", out);
  assert_string_equal(out, "/etc/qmesh/forms/a.cfg");
  qm_config_resolve(&cfg, "/abs/b.cfg", out);
  assert_string_equal(out, "/abs/b.cfg");
  snprintf(cfg.dir, sizeof cfg.dir, "/");
  qm_config_resolve(&cfg, "c.cfg", out);
  assert_string_equal(out, "/c.cfg");
  snprintf(cfg.dir, sizeof cfg.dir, ".");
  qm_config_resolve(&cfg, "d.cfg", out);
  assert_string_equal(out, "d.cfg");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_standard_services),
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_empty_file_is_defaults),
    cmocka_unit_test(test_shipped_config),
    cmocka_unit_test(test_every_value_read),
    cmocka_unit_test(test_custom_services_replace_standard),
    cmocka_unit_test(test_include_resolves_against_file_dir),
    cmocka_unit_test(test_errors),
    cmocka_unit_test(test_too_many_services),
    cmocka_unit_test(test_unreadable),
    cmocka_unit_test(test_resolve),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
