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
  /* The hostile inputs: this plugin submits each line as it is, so ingest's
   * normalization refuses what it submits and parse_file hands the refusal
   * back: a refusal of the whole file, which is the right answer. */
  assert_line(out, "parse_empty: ok (0 submissions)");
  assert_line(out, "parse_truncated_json: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_truncated_mime: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_long_line: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_binary: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_bad_utf8: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_deep_json: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_bad_mime: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "13 passed, 0 failed");
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

/* Whether some line of `out` starts with `prefix`. */
static int has_line_prefix(const char *out, const char *prefix) {
  for (const char *p = out; (p = strstr(p, prefix)) != NULL; p++)
    if (p == out || p[-1] == '\n') return 1;
  return 0;
}

#define assert_line_prefix(out, prefix)                                                          \
  do {                                                                                           \
    if (!has_line_prefix(out, prefix)) fail_msg("no line starting \"%s\" in:\n%s", prefix, out); \
  } while (0)

/* Whether this test, and so the qmesh it runs (same build flags), carries
 * AddressSanitizer and its leak checker. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

/* fixture_fragile_channel gets each hostile input wrong in its own way;
 * each mistake is one failed case with its reason, and the run goes on. */
static void test_channel_hostile_inputs(void **state) {
  (void)state;
  char dir[] = "/tmp/qmesh_test_samples_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char good[PATH_MAX], bad[PATH_MAX];
  snprintf(good, sizeof good, "%s/good.json", dir);
  snprintf(bad, sizeof bad, "%s/bad.json", dir);
  write_file(good, "{\"channel\": \"chat\", \"external_id\": \"conv-1\", \"agent\": {\"id\": \"a-1\"},\n"
                   " \"started_at\": \"2026-11-20T14:03:11Z\",\n"
                   " \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"Hello\"}]}\n");
  /* Valid JSON, but no agent: ingest would refuse it. */
  write_file(bad, "{\"channel\": \"chat\", \"external_id\": \"conv-2\", \"started_at\": \"2026-11-20T14:03:11Z\",\n"
                  " \"turns\": [{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"Hello\"}]}\n");

  char args[PATH_MAX * 3], out[16384];
  snprintf(args, sizeof args, "--timeout 2 --samples '%s' '%s'", dir, fixture("fixture_fragile_channel"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  /* start() set up a spool directory through the checker's context. */
  assert_line(out, "lifecycle: ok (0 submissions, 1 context service set up)");
  assert_line(out, "parse_truncated_json: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "parse_binary: FAIL: crashed with SIGSEGV (Segmentation fault)");
  assert_line(out, "parse_deep_json: FAIL: timed out after 2 s");
  assert_line_prefix(out, "parse_bad_utf8: FAIL: parse_file returned QMESH_OK but 1 submitted document failed to "
                          "normalize (first: ");
  assert_line(out, "parse_bad_mime: ok (refused with QMESH_INVALID after 1 invalid submission)");
  assert_line(out, "sample:good.json: ok (1 submission)");
  assert_line_prefix(out, "sample:bad.json: FAIL: 1 submitted document failed to normalize (first: agent");
  if (SANITIZED) {
    /* The allocation parse_file never frees on an empty file. */
    assert_line_prefix(out, "parse_empty: FAIL: leaked memory (LeakSanitizer exit status ");
    assert_line(out, "9 passed, 5 failed");
  } else {
    assert_line(out, "parse_empty: ok (0 submissions)");
    assert_line(out, "10 passed, 4 failed");
  }

  /* Samples are for channel plugins that parse files. */
  snprintf(args, sizeof args, "--samples '%s' '%s'", dir, fixture("fixture_rule"));
  assert_int_equal(run_check(out, sizeof out, args), 1);
  assert_line(out, "samples: FAIL: only a channel plugin with parse_file takes sample inputs");
  unlink(good);
  unlink(bad);
  rmdir(dir);
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
    cmocka_unit_test(test_channel_hostile_inputs),
    cmocka_unit_test(test_rule_cases),
    cmocka_unit_test(test_asr_cases),
    cmocka_unit_test(test_refusals_are_the_loaders),
    cmocka_unit_test(test_usage_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
