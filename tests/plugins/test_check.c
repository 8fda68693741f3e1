/*
 * test_check.c: `qmesh plugin check` against the fixture plugins, run as a
 * partner runs it: the real binary (${build}/qmesh, or $QMESH_BIN), its
 * stdout and its exit status.
 *
 * The report's lines are what partners read and what their CI greps, so the
 * interesting ones are compared whole: each case's verdict, the crash line
 * with its signal name, the summary, and the exit status (0 all passed, 1
 * refused or failed, 2 usage).
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define FIXTURES QMESH_BINARY_DIR "/tests/plugins/"

static const char *qmesh_bin(void) {
  const char *env = getenv("QMESH_BIN");
  return env && *env ? env : QMESH_BINARY_DIR "/qmesh";
}

static const char *fixture(const char *name) {
  static char buf[4][PATH_MAX];
  static int next;
  char *b = buf[next++ % 4];
  snprintf(b, PATH_MAX, "%s%s.so", FIXTURES, name);
  return b;
}

/* Runs `qmesh plugin check ARGS` with stderr discarded; returns the exit
 * status and the whole stdout in `out`. */
static int run_check(char *out, size_t outlen, const char *args) {
  char cmd[PATH_MAX * 3];
  snprintf(cmd, sizeof cmd, "'%s' plugin check %s 2>/dev/null", qmesh_bin(), args);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  size_t n = fread(out, 1, outlen - 1, f);
  out[n] = '\0';
  int status = pclose(f);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

/* Whether `line` is one whole line of `out`. */
static int has_line(const char *out, const char *line) {
  size_t n = strlen(line);
  for (const char *p = out; (p = strstr(p, line)) != NULL; p++)
    if ((p == out || p[-1] == '\n') && p[n] == '\n') return 1;
  return 0;
}

#define assert_line(out, line)                                                     \
  do {                                                                             \
    if (!has_line(out, line)) fail_msg("missing line \"%s\" in:\n%s", line, out); \
  } while (0)

static void test_good_channel_with_settings(void **state) {
  (void)state;
  char cfg[] = "/tmp/qmesh_test_check_XXXXXX";
  int fd = mkstemp(cfg);
  assert_true(fd >= 0);
  const char *text = "source = \"crm\";\ncount = 3;\ntags = [\"x\"];\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char args[PATH_MAX * 2], out[8192], line[PATH_MAX + 64];
  snprintf(args, sizeof args, "--kind channel --settings '%s' '%s'", cfg, fixture("fixture_good_channel"));
  assert_int_equal(run_check(out, sizeof out, args), 0);
  assert_line(out, "plugin: fixture_good_channel 1.0.0");
  assert_line(out, "kind: channel");
  assert_line(out, "abi: 1.0 (this qmesh speaks 1.0)");
  assert_line(out, "setting source (string, required): where the interactions come from");
  snprintf(line, sizeof line, "settings: ok (%s)", cfg);
  assert_line(out, line);
  assert_line(out, "open_close: ok");
  assert_line(out, "lifecycle: ok (3 submissions)");
  assert_line(out, "pause_resume: ok (3 submissions)");
  assert_line(out, "parse_missing_file: ok (refused with QMESH_ERR)");
  assert_line(out, "5 passed, 0 failed");
  unlink(cfg);
}

static void test_good_channel_settings_refused(void **state) {
  (void)state;
  char args[PATH_MAX * 2], out[8192];
  snprintf(args, sizeof args, "'%s'", fixture("fixture_good_channel"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_line(out, "settings: FAIL: (defaults): fixture_good_channel.source: required setting missing");
  assert_line(out, "0 passed, 1 failed");
  /* No case runs without valid settings. */
  assert_null(strstr(out, "open_close:"));
}

static void test_crash_is_reported_with_signal(void **state) {
  (void)state;
  char args[PATH_MAX * 2], out[8192];
  snprintf(args, sizeof args, "'%s'", fixture("fixture_crash"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_line(out, "settings: ok (defaults)");
  assert_line(out, "open_close: FAIL: crashed with SIGSEGV (Segmentation fault)");
  assert_line(out, "lifecycle: FAIL: crashed with SIGSEGV (Segmentation fault)");
  assert_line(out, "1 passed, 2 failed");
}

static void test_rule_cases(void **state) {
  (void)state;
  char args[PATH_MAX * 2], out[8192];
  snprintf(args, sizeof args, "--kind rule '%s'", fixture("fixture_rule"));
  assert_int_equal(run_check(out, sizeof out, args), 0);
  assert_line(out, "compile_free: ok");
  assert_line(out, "evaluate_empty: ok (verdict n/a, confidence 0.00)");
  assert_line(out, "evaluate_small: ok (verdict pass, confidence 1.00)");
  assert_line(out, "4 passed, 0 failed");

  snprintf(args, sizeof args, "'%s'", fixture("fixture_bad_evidence"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_line(out, "compile_free: ok");
  assert_line(out, "evaluate_empty: FAIL: evidence 0+10 lies outside the 0-byte text");
  assert_line(out, "evaluate_small: FAIL: evidence 203+10 lies outside the 203-byte text");
  assert_line(out, "2 passed, 2 failed");
}

static void test_asr_cases(void **state) {
  (void)state;
  char args[PATH_MAX * 2], out[8192];
  snprintf(args, sizeof args, "--kind asr '%s'", fixture("fixture_asr"));
  assert_int_equal(run_check(out, sizeof out, args), 0);
  assert_line(out, "open_close: ok");
  assert_line(out, "decode_silence: ok (0 words)");
  assert_line(out, "3 passed, 0 failed");
}

static void test_refusals_are_the_loaders(void **state) {
  (void)state;
  char args[PATH_MAX * 2], out[8192], expected[PATH_MAX + 128];
  snprintf(args, sizeof args, "'%s'", fixture("fixture_v2"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  snprintf(expected, sizeof expected, "plugin \"%s\": ABI 2.x but this qmesh speaks 1.0\n", fixture("fixture_v2"));
  assert_string_equal(out, expected);

  snprintf(args, sizeof args, "'%s'", fixture("fixture_missing_cb"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_string_equal(out, "plugin \"fixture_missing_cb\": missing mandatory callbacks: open, stop\n");

  snprintf(args, sizeof args, "--kind channel '%s'", fixture("fixture_rule"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_string_equal(out, "plugin \"fixture_rule\": is a rule plugin, expected a channel plugin\n");
}

static void test_usage_errors(void **state) {
  (void)state;
  char out[8192];
  assert_int_equal(run_check(out, sizeof out, ""), 2);
  assert_int_equal(run_check(out, sizeof out, "--kind voice x.so"), 2);
  assert_int_equal(run_check(out, sizeof out, "--timeout 0 x.so"), 2);
  assert_int_equal(run_check(out, sizeof out, "--group a x.so"), 2);
  assert_int_equal(run_check(out, sizeof out, "--help"), 0);
  assert_non_null(strstr(out, "usage: qmesh plugin check"));
}

int main(void) {
  if (access(qmesh_bin(), X_OK) != 0) {
    fprintf(stderr, "test_check: %s is not built\n", qmesh_bin());
    return 1;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_good_channel_with_settings),
    cmocka_unit_test(test_good_channel_settings_refused),
    cmocka_unit_test(test_crash_is_reported_with_signal),
    cmocka_unit_test(test_rule_cases),
    cmocka_unit_test(test_asr_cases),
    cmocka_unit_test(test_refusals_are_the_loaders),
    cmocka_unit_test(test_usage_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
