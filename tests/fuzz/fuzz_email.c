/*
 * fuzz_email.c: fuzzes the channel_email plugin's parse path
 * (plugins/channel_email/) with arbitrary bytes as a message file.
 *
 * The plugin's sources are compiled into this program (so they carry the
 * fuzzer's coverage instrumentation) and driven through the descriptor
 * exactly as the core drives them: open with a small fake host whose
 * settings are the declared defaults plus an agent domain, parse_file on
 * the input, close. The input is handed over as a memfd, so both readings
 * of a file are reached: a single message, and an mbox when the bytes start
 * with "From ". Every document the plugin submits must pass
 * qm_interaction_normalize, the check ingest runs: the plugin promises to
 * submit only valid documents, and a refused one is a finding here.
 *
 * Built two ways:
 *  - with clang and -fsanitize=fuzzer as fuzz_email (libFuzzer's main);
 *  - with any compiler and -DQM_FUZZ_CORPUS_MAIN as fuzz_email_corpus,
 *    which replays every file of the given directories or files and checks
 *    that seeds named "valid-*" submit at least one document and seeds named
 *    "bad-*" submit none and fail.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <qmesh/channel.h>

#include "err.h"
#include "interaction.h"

/* Not assert(): release builds define NDEBUG, and these checks are the test. */
#define CHECK(c)                                                                         \
  do {                                                                                   \
    if (!(c)) {                                                                          \
      fprintf(stderr, "fuzz_email: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                                           \
    }                                                                                    \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const qmesh_plugin_t *qmesh_plugin_v1(void);

/* ---- a fake host: declared defaults, one agent domain ---- */

struct qmesh_settings {
  int unused;
};

static int g_verbose;
static int64_t g_max_kb = 64;

static void fake_log(const qmesh_host_t *host, int level, const char *fmt, ...) {
  (void)host;
  if (!g_verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "plugin log %d: ", level);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static const qmesh_setting_t *declared(const char *name) {
  for (const qmesh_setting_t *s = qmesh_plugin_v1()->settings; s && s->name; s++)
    if (strcmp(s->name, name) == 0) return s;
  CHECK(!"the plugin asked for a setting it does not declare");
  return NULL;
}

static const char *fake_get_string(const qmesh_settings_t *st, const char *name) {
  (void)st;
  return declared(name)->default_value;
}

static int64_t fake_get_int(const qmesh_settings_t *st, const char *name) {
  (void)st;
  const char *v = declared(name)->default_value;
  /* A small bound, so the size refusal is reachable too; the replay
   * driver can raise it (QM_FUZZ_MAX_KB) to replay a large input. */
  if (strcmp(name, "max_message_kb") == 0) return g_max_kb;
  return v ? strtoll(v, NULL, 10) : 0;
}

static double fake_get_float(const qmesh_settings_t *st, const char *name) {
  (void)st;
  (void)name;
  return 0;
}

static int fake_get_bool(const qmesh_settings_t *st, const char *name) {
  (void)st;
  (void)name;
  return 0;
}

static size_t fake_list_len(const qmesh_settings_t *st, const char *name) {
  (void)st;
  return strcmp(name, "agent_domains") == 0 ? 1 : 0;
}

static const char *fake_list_item(const qmesh_settings_t *st, const char *name, size_t i) {
  (void)st;
  return strcmp(name, "agent_domains") == 0 && i == 0 ? "support.northwind.example" : NULL;
}

static const qmesh_host_t host = {
  .struct_size = sizeof(qmesh_host_t),
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .log = fake_log,
  .get_string = fake_get_string,
  .get_int = fake_get_int,
  .get_float = fake_get_float,
  .get_bool = fake_get_bool,
  .get_list_len = fake_list_len,
  .get_list_item = fake_list_item,
};
static const qmesh_settings_t settings;

/* ---- the submit check ---- */

static int g_submitted;

static int fake_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                       size_t reasonlen) {
  (void)ctx;
  qm_interaction_t ix;
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_interaction_normalize(json, len, NULL, &ix, &err) != 0) {
    fprintf(stderr, "fuzz_email: submitted a document ingest refuses: %s\n%.*s\n", err.msg,
            (int)(len > 4000 ? 4000 : len), json);
    abort();
  }
  qm_interaction_free(&ix);
  g_submitted++;
  (void)reason;
  (void)reasonlen;
  return QMESH_OK;
}

static int g_last_rc;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const qmesh_plugin_t *p = qmesh_plugin_v1();
  const qmesh_channel_ops_t *ops = p->ops;
  qmesh_channel_ctx_t ctx = {.struct_size = sizeof ctx, .submit = fake_submit, .name = "email"};
  int fd = memfd_create("fuzz_email", MFD_CLOEXEC);
  CHECK(fd >= 0);
  for (size_t off = 0; off < size;) {
    ssize_t w = write(fd, data + off, size - off);
    CHECK(w > 0);
    off += (size_t)w;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  void *st = NULL;
  CHECK(ops->open(&host, &settings, &st) == QMESH_OK);
  g_submitted = 0;
  int rc = ops->parse_file(st, path, &ctx);
  CHECK(rc == QMESH_OK || rc == QMESH_ERR);
  /* OK exactly when something was submitted. */
  CHECK((rc == QMESH_OK) == (g_submitted > 0));
  /* Parsing the same file again through the same instance submits the
   * same threads again: the thread index must not lose or grow them. */
  int first = g_submitted;
  g_submitted = 0;
  CHECK(ops->parse_file(st, path, &ctx) == rc);
  CHECK(g_submitted == first);
  ops->close(st);
  close(fd);
  g_last_rc = rc;
  g_submitted = first;
  return 0;
}

#ifdef QM_FUZZ_CORPUS_MAIN
#include "replay_main.h"

static int g_files, g_wrong;

static void replay_one(const char *path, const char *name, const uint8_t *data, size_t n) {
  LLVMFuzzerTestOneInput(data, n);
  g_files++;
  if (strncmp(name, "valid-", 6) == 0 && (g_last_rc != QMESH_OK || g_submitted == 0)) {
    fprintf(stderr, "fuzz_email_corpus: %s: expected a submission, got rc %d\n", path, g_last_rc);
    g_wrong++;
  }
  if (strncmp(name, "bad-", 4) == 0 && (g_last_rc == QMESH_OK || g_submitted != 0)) {
    fprintf(stderr, "fuzz_email_corpus: %s: expected a refusal, got %d submissions\n", path, g_submitted);
    g_wrong++;
  }
}

int main(int argc, char **argv) {
  g_verbose = getenv("QM_FUZZ_VERBOSE") != NULL;
  if (getenv("QM_FUZZ_MAX_KB")) g_max_kb = strtoll(getenv("QM_FUZZ_MAX_KB"), NULL, 10);
  /* A file that cannot be read fails the run as a wrong seed would. */
  int rc = qm_replay_paths(argc, argv, replay_one) != 0;
  printf("fuzz_email_corpus: %d files replayed, %d wrong\n", g_files, g_wrong);
  return rc || g_wrong || !g_files ? 1 : 0;
}
#endif
