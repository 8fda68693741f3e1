/*
 * test_loader.c: the plugin loader against the fixture plugins in this
 * folder (built into ${build}/tests/plugins/).
 *
 * Every refusal is checked byte for byte, because the refusal text is what a
 * partner or an operator reads and docs/plugin-sdk.md promises it. A refused
 * plugin must leave nothing mapped, which is checked in /proc/self/maps. The
 * good fixtures then show the settings view end to end: the channel fixture
 * echoes the values it reads through the host API into what it submits.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <qmesh/asr.h>
#include <qmesh/channel.h>
#include <qmesh/rule.h>

#include "loader.h"
#include "log.h"

#define FIXTURES QMESH_BINARY_DIR "/tests/plugins/"

static const char *fixture(const char *name) {
  static char buf[8][PATH_MAX];
  static int next;
  char *b = buf[next++ % 8];
  snprintf(b, PATH_MAX, "%s%s.so", FIXTURES, name);
  return b;
}

/* Whether the file is mapped into this process, by its canonical path. */
static int is_mapped(const char *path) {
  char real[PATH_MAX];
  if (!realpath(path, real)) return 0;
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[PATH_MAX + 256];
  int found = 0;
  size_t rl = strlen(real);
  while (!found && fgets(line, sizeof line, f)) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    size_t ll = strlen(line);
    found = ll >= rl && strcmp(line + ll - rl, real) == 0;
  }
  fclose(f);
  return found;
}

/* Loads a fixture that must be refused and checks the exact text, the code,
 * that nothing is returned and that nothing stays mapped. */
static void expect_refusal(const char *path, int kind, int code, const char *expected) {
  qm_plugin_t *p = (qm_plugin_t *)0x1;
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_plugin_load(path, kind, &p, &err);
  assert_int_equal(rc, code);
  assert_int_equal(err.code, code);
  assert_null(p);
  assert_string_equal(err.msg, expected);
  assert_false(is_mapped(path));
}

static void test_refuses_missing_file(void **state) {
  (void)state;
  expect_refusal("/nonexistent/dir/plug.so", 0, QM_EPLUGIN,
                 "plugin \"/nonexistent/dir/plug.so\": cannot load: /nonexistent/dir/plug.so: "
                 "cannot open shared object file: No such file or directory");
}

static void test_refuses_non_elf(void **state) {
  (void)state;
  char path[] = "/tmp/qmesh_test_loader_XXXXXX.so";
  int fd = mkstemps(path, 3);
  assert_true(fd >= 0);
  /* Longer than an ELF header, or dlopen says "file too short" instead. */
  const char *text = "This is a text file that someone named like a plugin by mistake.\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char expected[PATH_MAX * 2 + 64];
  snprintf(expected, sizeof expected, "plugin \"%s\": cannot load: %s: invalid ELF header", path, path);
  expect_refusal(path, 0, QM_EPLUGIN, expected);
  unlink(path);
}

static void test_refuses_no_entry(void **state) {
  (void)state;
  const char *path = fixture("fixture_no_entry");
  char expected[PATH_MAX + 128];
  snprintf(expected, sizeof expected, "plugin \"%s\": no entry point qmesh_plugin_v1 (not a qmesh plugin)", path);
  expect_refusal(path, 0, QM_EPLUGIN, expected);
}

static void test_refuses_other_major_by_symbol(void **state) {
  (void)state;
  /* The v2 fixture aborts if its entry point is called, so passing this test
   * also proves the loader refused it by name alone. */
  const char *path = fixture("fixture_v2");
  char expected[PATH_MAX + 128];
  snprintf(expected, sizeof expected, "plugin \"%s\": ABI 2.x but this qmesh speaks 1.0", path);
  expect_refusal(path, QMESH_KIND_CHANNEL, QM_EABI, expected);
}

static void test_refuses_other_major_by_field(void **state) {
  (void)state;
  expect_refusal(fixture("fixture_major_field"), 0, QM_EABI,
                 "plugin \"fixture_major_field\": ABI 2.0 but this qmesh speaks 1.0");
}

static void test_refuses_newer_minor(void **state) {
  (void)state;
  expect_refusal(fixture("fixture_newer_minor"), QMESH_KIND_CHANNEL, QM_EABI,
                 "plugin \"fixture_newer_minor\": ABI 1.3 but this qmesh speaks 1.0");
}

static void test_refuses_small_descriptor(void **state) {
  (void)state;
  /* On LP64 the 1.0 descriptor is four uint32_t and five pointers. */
  char expected[256];
  snprintf(expected, sizeof expected, "plugin \"fixture_small_desc\": descriptor is %zu bytes, expected at least %zu",
           4 * sizeof(uint32_t) + 4 * sizeof(void *), 4 * sizeof(uint32_t) + 5 * sizeof(void *));
  expect_refusal(fixture("fixture_small_desc"), 0, QM_EPLUGIN, expected);
}

static void test_refuses_wrong_kind(void **state) {
  (void)state;
  expect_refusal(fixture("fixture_rule"), QMESH_KIND_CHANNEL, QM_EPLUGIN,
                 "plugin \"fixture_rule\": is a rule plugin, expected a channel plugin");
  expect_refusal(fixture("fixture_asr"), QMESH_KIND_CHANNEL, QM_EPLUGIN,
                 "plugin \"fixture_asr\": is an asr plugin, expected a channel plugin");
  expect_refusal(fixture("fixture_good_channel"), QMESH_KIND_ASR, QM_EPLUGIN,
                 "plugin \"fixture_good_channel\": is a channel plugin, expected an asr plugin");
}

static void test_refuses_missing_callbacks(void **state) {
  (void)state;
  expect_refusal(fixture("fixture_missing_cb"), QMESH_KIND_CHANNEL, QM_EPLUGIN,
                 "plugin \"fixture_missing_cb\": missing mandatory callbacks: open, stop");
}

static void test_refuses_bad_default(void **state) {
  (void)state;
  expect_refusal(fixture("fixture_bad_default"), 0, QM_EPLUGIN,
                 "plugin \"fixture_bad_default\": setting \"batch\": default \"ten\" is not an integer");
}

static void test_loads_good_plugins_and_unmaps_on_destroy(void **state) {
  (void)state;
  struct {
    const char *name;
    int kind;
    const char *version;
  } good[] = {
    {"fixture_good_channel", QMESH_KIND_CHANNEL, "1.0.0"},
    {"fixture_rule", QMESH_KIND_RULE, "0.3.1"},
    {"fixture_asr", QMESH_KIND_ASR, "2.0.0"},
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *path = fixture(good[i].name);
    for (int want = 0; want <= 1; want++) {
      qm_plugin_t *p = NULL;
      qm_error_t err;
      qm_error_clear(&err);
      assert_int_equal(qm_plugin_load(path, want ? good[i].kind : 0, &p, &err), 0);
      assert_non_null(p);
      const qmesh_plugin_t *d = qm_plugin_descriptor(p);
      assert_string_equal(d->name, good[i].name);
      assert_string_equal(d->version, good[i].version);
      assert_int_equal(d->kind, good[i].kind);
      assert_string_equal(qm_plugin_path(p), path);
      const qmesh_host_t *h = qm_plugin_host(p);
      assert_int_equal(h->struct_size, sizeof(qmesh_host_t));
      assert_int_equal(h->abi_major, QMESH_ABI_MAJOR);
      assert_null(qm_plugin_settings(p));
      assert_true(is_mapped(path));
      qm_plugin_destroy(&p);
      assert_null(p);
      qm_plugin_destroy(&p); /* idempotent */
      assert_false(is_mapped(path));
    }
  }
}

static void test_relative_path_is_not_searched(void **state) {
  (void)state;
  /* "x.so" without a slash means the file in the current directory, not a
   * library looked up along LD_LIBRARY_PATH. */
  char cwd[PATH_MAX];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(FIXTURES), 0);
  qm_plugin_t *p = NULL;
  qm_error_t err;
  int rc = qm_plugin_load("fixture_rule.so", QMESH_KIND_RULE, &p, &err);
  assert_int_equal(chdir(cwd), 0);
  assert_int_equal(rc, 0);
  assert_string_equal(qm_plugin_descriptor(p)->name, "fixture_rule");
  qm_plugin_destroy(&p);
}

/* ---- settings ---- */

typedef struct loaded {
  qm_plugin_t *p;
  config_t cfg;
} loaded_t;

static int setup_channel(void **state) {
  loaded_t *l = calloc(1, sizeof *l);
  qm_error_t err;
  if (qm_plugin_load(fixture("fixture_good_channel"), QMESH_KIND_CHANNEL, &l->p, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    free(l);
    return -1;
  }
  config_init(&l->cfg);
  *state = l;
  return 0;
}

static int teardown_channel(void **state) {
  loaded_t *l = *state;
  qm_plugin_destroy(&l->p);
  config_destroy(&l->cfg);
  free(l);
  return 0;
}

/* Parses `text` as a whole config file whose root is the settings group and
 * validates it as file "test.cfg". */
static int validate_text(loaded_t *l, const char *text, qm_error_t *err) {
  config_destroy(&l->cfg);
  config_init(&l->cfg);
  assert_int_equal(config_read_string(&l->cfg, text), CONFIG_TRUE);
  return qm_plugin_validate_settings(l->p, config_root_setting(&l->cfg), "test.cfg", err);
}

static void expect_config_error(loaded_t *l, const char *text, const char *expected) {
  qm_error_t err;
  qm_error_clear(&err);
  const qmesh_settings_t *before = qm_plugin_settings(l->p);
  assert_int_equal(validate_text(l, text, &err), QM_ECONFIG);
  assert_string_equal(err.msg, expected);
  /* A failed validation leaves the previous view in place. */
  assert_ptr_equal(qm_plugin_settings(l->p), before);
}

/* Records what a channel submits. */
typedef struct recorder {
  qmesh_channel_ctx_t ctx; /* first, so the ctx pointer leads back here */
  int n;
  char docs[8][512];
} recorder_t;

static int record_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                         size_t reasonlen) {
  (void)reason, (void)reasonlen;
  recorder_t *r = (recorder_t *)ctx;
  if (r->n >= 8) return QMESH_BUSY;
  snprintf(r->docs[r->n++], sizeof r->docs[0], "%.*s", (int)len, json);
  return QMESH_OK;
}

/* Opens, starts, stops and closes the channel fixture with the current view
 * and returns what it submitted. */
static void run_channel(loaded_t *l, recorder_t *r) {
  const qmesh_channel_ops_t *ops = qm_plugin_descriptor(l->p)->ops;
  memset(r, 0, sizeof *r);
  r->ctx.struct_size = sizeof r->ctx;
  r->ctx.submit = record_submit;
  void *st = NULL;
  assert_int_equal(ops->open(qm_plugin_host(l->p), qm_plugin_settings(l->p), &st), QMESH_OK);
  assert_int_equal(ops->start(st, &r->ctx), QMESH_OK);
  assert_int_equal(ops->stop(st), QMESH_OK);
  ops->close(st);
}

static void test_settings_defaults(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  assert_int_equal(validate_text(l, "source = \"crm\";\n", &err), 0);
  assert_non_null(qm_plugin_settings(l->p));
  recorder_t r;
  run_channel(l, &r);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.docs[0], "{\"n\":0,\"source\":\"crm\",\"ratio\":0.5,\"verbose\":false,\"tags\":[\"a\",\"b\"]}");
  assert_string_equal(r.docs[1], "{\"n\":1,\"source\":\"crm\",\"ratio\":0.5,\"verbose\":false,\"tags\":[\"a\",\"b\"]}");
}

static void test_settings_given_values(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  /* An integer is accepted for a float; an empty list and a ( ) list too. */
  assert_int_equal(validate_text(l,
                                 "source = \"pbx\";\ncount = 3;\nratio = 2;\nverbose = true;\n"
                                 "tags = (\"x\", \"y z\");\n",
                                 &err),
                   0);
  recorder_t r;
  run_channel(l, &r);
  assert_int_equal(r.n, 3);
  assert_string_equal(r.docs[2], "{\"n\":2,\"source\":\"pbx\",\"ratio\":2,\"verbose\":true,\"tags\":[\"x\",\"y z\"]}");

  assert_int_equal(validate_text(l, "source = \"s\";\ncount = 1;\nratio = 0.25;\ntags = [];\n", &err), 0);
  run_channel(l, &r);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.docs[0], "{\"n\":0,\"source\":\"s\",\"ratio\":0.25,\"verbose\":false,\"tags\":[]}");
}

static void test_settings_unknown_key(void **state) {
  loaded_t *l = *state;
  expect_config_error(l, "source = \"s\";\n\nbogus = 1;\n",
                      "test.cfg:3: fixture_good_channel.bogus: unknown setting "
                      "(valid: source, count, ratio, verbose, tags)");
}

static void test_settings_wrong_types(void **state) {
  loaded_t *l = *state;
  expect_config_error(l, "source = 5;\n", "test.cfg:1: fixture_good_channel.source: expected a string");
  expect_config_error(l, "source = \"s\";\ncount = \"3\";\n",
                      "test.cfg:2: fixture_good_channel.count: expected an integer");
  expect_config_error(l, "source = \"s\";\ncount = 2.5;\n",
                      "test.cfg:2: fixture_good_channel.count: expected an integer");
  expect_config_error(l, "source = \"s\";\n\nratio = \"half\";\n",
                      "test.cfg:3: fixture_good_channel.ratio: expected a number");
  expect_config_error(l, "verbose = 1;\nsource = \"s\";\n",
                      "test.cfg:1: fixture_good_channel.verbose: expected true or false");
  expect_config_error(l, "source = \"s\";\ntags = \"a\";\n",
                      "test.cfg:2: fixture_good_channel.tags: expected a list of strings");
  expect_config_error(l, "source = \"s\";\ntags = (\"a\", 1);\n",
                      "test.cfg:2: fixture_good_channel.tags: expected a list of strings");
  expect_config_error(l, "source = \"s\";\ntags = { a = \"b\"; };\n",
                      "test.cfg:2: fixture_good_channel.tags: expected a list of strings");
}

static void test_settings_required_missing(void **state) {
  loaded_t *l = *state;
  expect_config_error(l, "count = 4;\n", "test.cfg: fixture_good_channel.source: required setting missing");
  qm_error_t err;
  assert_int_equal(qm_plugin_validate_settings(l->p, NULL, "qmesh.cfg", &err), QM_ECONFIG);
  assert_string_equal(err.msg, "qmesh.cfg: fixture_good_channel.source: required setting missing");
  assert_null(qm_plugin_settings(l->p));
}

static void test_settings_not_a_group(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  config_destroy(&l->cfg);
  config_init(&l->cfg);
  assert_int_equal(config_read_string(&l->cfg, "a = 1;\nsettings = 5;\n"), CONFIG_TRUE);
  assert_int_equal(
    qm_plugin_validate_settings(l->p, config_lookup(&l->cfg, "settings"), "test.cfg", &err), QM_ECONFIG);
  assert_string_equal(err.msg,
                      "test.cfg:2: fixture_good_channel: settings must be a group ({ key = value; ... })");
}

static void test_settings_nested_group_in_file(void **state) {
  loaded_t *l = *state;
  char path[] = "/tmp/qmesh_test_settings_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *text = "# channels\n"
                     "channels = {\n"
                     "  crm = {\n"
                     "    source = \"crm\";\n"
                     "    count = 1;\n"
                     "    batch = 5;\n"
                     "  };\n"
                     "};\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  config_destroy(&l->cfg);
  config_init(&l->cfg);
  assert_int_equal(config_read_file(&l->cfg, path), CONFIG_TRUE);
  qm_error_t err;
  assert_int_equal(qm_plugin_validate_settings(l->p, config_lookup(&l->cfg, "channels.crm"), path, &err),
                   QM_ECONFIG);
  char expected[PATH_MAX + 256];
  snprintf(expected, sizeof expected,
           "%s:6: fixture_good_channel.batch: unknown setting (valid: source, count, ratio, verbose, tags)", path);
  assert_string_equal(err.msg, expected);
  unlink(path);
}

static void test_revalidation_keeps_old_view_alive(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  const qmesh_host_t *h = qm_plugin_host(l->p);
  assert_int_equal(validate_text(l, "source = \"first\";\n", &err), 0);
  const qmesh_settings_t *first = qm_plugin_settings(l->p);
  const char *s1 = h->get_string(first, "source");
  assert_int_equal(validate_text(l, "source = \"second\";\n", &err), 0);
  const qmesh_settings_t *second = qm_plugin_settings(l->p);
  assert_ptr_not_equal(first, second);
  /* An instance opened with the first view can still read it (under ASan a
   * freed view would be a reported use after free). */
  assert_string_equal(s1, "first");
  assert_string_equal(h->get_string(first, "source"), "first");
  assert_string_equal(h->get_string(second, "source"), "second");
}

/* Runs `fn` with log lines going into a pipe and returns what was logged. */
static void capture_log(void (*fn)(loaded_t *), loaded_t *l, char *out, size_t outlen) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  qm_log_set_fd(fds[1]);
  qm_log_set_level(QM_LOG_INFO);
  fn(l);
  qm_log_set_level(QM_LOG_WARN);
  qm_log_set_fd(2);
  ssize_t n = read(fds[0], out, outlen - 1);
  out[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  close(fds[1]);
}

static void run_channel_quietly(loaded_t *l) {
  recorder_t r;
  run_channel(l, &r);
}

static void misuse_accessors(loaded_t *l) {
  const qmesh_host_t *h = qm_plugin_host(l->p);
  const qmesh_settings_t *s = qm_plugin_settings(l->p);
  assert_int_equal(h->get_int(s, "nope"), 0);
  assert_null(h->get_string(s, "count"));
  assert_int_equal(h->get_list_len(s, "source"), 0);
  /* A correct call logs nothing; an index past the end is simply NULL. */
  assert_int_equal(h->get_int(s, "count"), 2);
  assert_string_equal(h->get_list_item(s, "tags", 1), "b");
  assert_null(h->get_list_item(s, "tags", 2));
}

static void test_host_log_names_the_plugin(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  assert_int_equal(validate_text(l, "source = \"web chat\";\n", &err), 0);
  char out[4096];
  capture_log(run_channel_quietly, l, out, sizeof out);
  assert_non_null(strstr(out, " level=info "));
  assert_non_null(strstr(out, " event=plugin.log plugin=fixture_good_channel msg=\"opened source=web chat count=2\"\n"));
}

static void test_accessor_misuse_is_logged(void **state) {
  loaded_t *l = *state;
  qm_error_t err;
  assert_int_equal(validate_text(l, "source = \"s\";\n", &err), 0);
  char out[8192];
  capture_log(misuse_accessors, l, out, sizeof out);
  assert_non_null(strstr(out, "event=plugin.setting_misuse plugin=fixture_good_channel setting=nope "
                              "accessor=get_int error=\"not declared\"\n"));
  assert_non_null(strstr(out, "event=plugin.setting_misuse plugin=fixture_good_channel setting=count "
                              "accessor=get_string error=\"declared as integer, read as string\"\n"));
  assert_non_null(strstr(out, "setting=source accessor=get_list_len error=\"declared as string, read as string list\"\n"));
  /* Exactly the three misuses, nothing for the correct calls. */
  int lines = 0;
  for (const char *c = out; *c; c++) lines += *c == '\n';
  assert_int_equal(lines, 3);
}

static void test_rule_and_asr_defaults(void **state) {
  (void)state;
  qm_plugin_t *p = NULL;
  qm_error_t err;
  assert_int_equal(qm_plugin_load(fixture("fixture_rule"), QMESH_KIND_RULE, &p, &err), 0);
  assert_int_equal(qm_plugin_validate_settings(p, NULL, NULL, &err), 0);
  const qmesh_rule_ops_t *rops = qm_plugin_descriptor(p)->ops;
  void *compiled = NULL;
  assert_int_equal(rops->compile(qm_plugin_host(p), qm_plugin_settings(p), &compiled), QMESH_OK);
  const char *text = "hello, thank you for calling";
  qmesh_interaction_view_t view = {sizeof view, "i1", "chat", text, strlen(text)};
  qmesh_answer_t ans = {.struct_size = sizeof ans};
  assert_int_equal(rops->evaluate(compiled, &view, &ans), QMESH_OK);
  assert_int_equal(ans.verdict, QMESH_VERDICT_PASS);
  assert_int_equal(ans.evidence_off, 7);
  assert_int_equal(ans.evidence_len, 9);
  rops->free_compiled(compiled);
  qm_plugin_destroy(&p);

  assert_int_equal(qm_plugin_load(fixture("fixture_asr"), QMESH_KIND_ASR, &p, &err), 0);
  assert_int_equal(qm_plugin_validate_settings(p, NULL, NULL, &err), 0);
  assert_int_equal(qm_plugin_host(p)->get_int(qm_plugin_settings(p), "threshold"), 500);
  qm_plugin_destroy(&p);
}

static void test_resolve(void **state) {
  (void)state;
  char out[PATH_MAX];
  qm_plugin_resolve("/opt/qmesh/plugins", "channel_chat_json", out, sizeof out);
  assert_string_equal(out, "/opt/qmesh/plugins/channel_chat_json.so");
  qm_plugin_resolve("/opt/qmesh/plugins", "channel_chat_json.so", out, sizeof out);
  assert_string_equal(out, "/opt/qmesh/plugins/channel_chat_json.so");
  qm_plugin_resolve("/opt/qmesh/plugins", "./mine/x.so", out, sizeof out);
  assert_string_equal(out, "./mine/x.so");
  qm_plugin_resolve("", "rule_keyword", out, sizeof out);
  assert_string_equal(out, "./rule_keyword.so");
  char small[8];
  qm_plugin_resolve("/a", "long_name", small, sizeof small);
  assert_string_equal(small, "/a/long");
}

int main(void) {
  /* Every load logs plugin.loaded at info; keep the test's output readable.
   * capture_log lowers the level where a test looks at the log. */
  qm_log_set_level(QM_LOG_WARN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refuses_missing_file),
    cmocka_unit_test(test_refuses_non_elf),
    cmocka_unit_test(test_refuses_no_entry),
    cmocka_unit_test(test_refuses_other_major_by_symbol),
    cmocka_unit_test(test_refuses_other_major_by_field),
    cmocka_unit_test(test_refuses_newer_minor),
    cmocka_unit_test(test_refuses_small_descriptor),
    cmocka_unit_test(test_refuses_wrong_kind),
    cmocka_unit_test(test_refuses_missing_callbacks),
    cmocka_unit_test(test_refuses_bad_default),
    cmocka_unit_test(test_loads_good_plugins_and_unmaps_on_destroy),
    cmocka_unit_test(test_relative_path_is_not_searched),
    cmocka_unit_test_setup_teardown(test_settings_defaults, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_given_values, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_unknown_key, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_wrong_types, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_required_missing, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_not_a_group, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_settings_nested_group_in_file, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_revalidation_keeps_old_view_alive, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_host_log_names_the_plugin, setup_channel, teardown_channel),
    cmocka_unit_test_setup_teardown(test_accessor_misuse_is_logged, setup_channel, teardown_channel),
    cmocka_unit_test(test_rule_and_asr_defaults),
    cmocka_unit_test(test_resolve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
