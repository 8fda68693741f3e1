/*
 * fuzz_envelope.c: fuzzing the envelope decoder (common/src/envelope.c).
 *
 * Every input must either be refused with one of the decode errors and a
 * message, or be accepted; an accepted envelope must re-encode, decode again
 * to the same fields and body, and re-encode to the same bytes a second time
 * (encoding is a function of the decoded envelope, so a stage that rebuilds
 * an envelope cannot drift). Violations abort, which is what libFuzzer and
 * the corpus replay both report as a failure.
 *
 * Built two ways (tests/fuzz/CMakeLists.txt):
 *  - with clang and -fsanitize=fuzzer,address,undefined as the libFuzzer
 *    target fuzz_envelope;
 *  - with any compiler and -DQM_FUZZ_CORPUS_MAIN as fuzz_envelope_corpus,
 *    which replays every file of the given directories or files. Seeds named
 *    "valid-*" must be accepted and "bad-<ENAME>-*" refused with that error
 *    (qm_err_name), so the replay also checks that the seed corpus still
 *    means what its names say.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

/* Not assert(): release builds define NDEBUG, and these checks are the test. */
#define CHECK(c)                                                                  \
  do {                                                                            \
    if (!(c)) {                                                                   \
      fprintf(stderr, "fuzz_envelope: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                                    \
    }                                                                             \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_decode_error(int rc) {
  switch (rc) {
  case QM_ETRUNCATED: case QM_EDECODE: case QM_ETRAILING: case QM_ETOOBIG: case QM_EVERSION:
  case QM_EFIELDTYPE: case QM_EMISSING: case QM_EUNKNOWN: case QM_EDUPFIELD:
    return 1;
  }
  return 0;
}

static int view_eq(qm_str_t a, qm_str_t b) {
  return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Bodies compare by their packed bytes: exact for every float, NaN included,
 * where msgpack_object_equal says NaN != NaN. */
static void check_same_body(msgpack_object a, msgpack_object b) {
  msgpack_sbuffer x, y;
  msgpack_packer px, py;
  msgpack_sbuffer_init(&x);
  msgpack_sbuffer_init(&y);
  msgpack_packer_init(&px, &x, msgpack_sbuffer_write);
  msgpack_packer_init(&py, &y, msgpack_sbuffer_write);
  CHECK(msgpack_pack_object(&px, a) == 0);
  CHECK(msgpack_pack_object(&py, b) == 0);
  CHECK(x.size == y.size);
  CHECK(x.size == 0 || memcmp(x.data, y.data, x.size) == 0);
  msgpack_sbuffer_destroy(&x);
  msgpack_sbuffer_destroy(&y);
}

static void check_same(const qm_envelope_t *a, const qm_envelope_t *b) {
  CHECK(a->v == b->v);
  CHECK(qm_id_cmp(&a->id, &b->id) == 0);
  CHECK(view_eq(a->type, b->type));
  CHECK(view_eq(a->src, b->src));
  CHECK(a->ts == b->ts);
  CHECK(view_eq(a->key, b->key));
  CHECK(a->hdr_count == b->hdr_count);
  for (size_t i = 0; i < a->hdr_count; i++) {
    CHECK(view_eq(a->hdr[i].k, b->hdr[i].k));
    CHECK(view_eq(a->hdr[i].v, b->hdr[i].v));
  }
  CHECK(a->body.type == MSGPACK_OBJECT_MAP && b->body.type == MSGPACK_OBJECT_MAP);
  check_same_body(a->body, b->body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  msgpack_zone z1, z2;
  msgpack_zone_init(&z1, 1024);
  msgpack_zone_init(&z2, 1024);
  qm_envelope_t e1, e2;
  qm_error_t err;
  int rc = qm_envelope_decode((const char *)data, size, 0, &z1, &e1, &err);
  if (rc != 0) {
    if (!is_decode_error(rc)) fprintf(stderr, "unexpected %s: %s\n", qm_err_name(rc), err.msg);
    CHECK(is_decode_error(rc));
    CHECK(err.code == rc);
    CHECK(err.msg[0] != '\0');
  } else {
    msgpack_sbuffer once, twice;
    msgpack_sbuffer_init(&once);
    msgpack_sbuffer_init(&twice);
    CHECK(qm_envelope_encode(&once, &e1) == 0);
    rc = qm_envelope_decode(once.data, once.size, 0, &z2, &e2, &err);
    if (rc != 0) fprintf(stderr, "re-decode failed: %s: %s\n", qm_err_name(rc), err.msg);
    CHECK(rc == 0);
    check_same(&e1, &e2);
    CHECK(qm_envelope_encode(&twice, &e2) == 0);
    CHECK(twice.size == once.size && memcmp(twice.data, once.data, once.size) == 0);
    msgpack_sbuffer_destroy(&once);
    msgpack_sbuffer_destroy(&twice);
  }
  msgpack_zone_destroy(&z1);
  msgpack_zone_destroy(&z2);
  return 0;
}

#ifdef QM_FUZZ_CORPUS_MAIN
#include "replay_main.h"

static int g_files, g_valid, g_bad, g_wrong;

/* Checks a seed against what its name promises. */
static void check_name(const char *name, const uint8_t *data, size_t n) {
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  qm_envelope_t e;
  qm_error_t err = {0};
  int rc = qm_envelope_decode((const char *)data, n, 0, &z, &e, &err);
  msgpack_zone_destroy(&z);
  if (strncmp(name, "valid-", 6) == 0) {
    g_valid++;
    if (rc != 0) {
      fprintf(stderr, "%s: expected to decode, got %s: %s\n", name, qm_err_name(rc), err.msg);
      g_wrong++;
    }
  } else if (strncmp(name, "bad-", 4) == 0) {
    g_bad++;
    const char *want = name + 4;
    size_t wn = strcspn(want, "-");
    const char *got = qm_err_name(rc);
    if (rc == 0 || strlen(got) != wn || strncmp(got, want, wn) != 0) {
      fprintf(stderr, "%s: expected %.*s, got %s: %s\n", name, (int)wn, want, got, err.msg);
      g_wrong++;
    }
  }
}

static void replay_one(const char *path, const char *name, const uint8_t *data, size_t n) {
  (void)path;
  LLVMFuzzerTestOneInput(data, n);
  check_name(name, data, n);
  g_files++;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  int rc = qm_replay_paths(argc, argv, replay_one) != 0;
  printf("fuzz_envelope_corpus: replayed %d files (%d valid-*, %d bad-*), %d not as named\n",
         g_files, g_valid, g_bad, g_wrong);
  /* An empty or missing corpus would make this test pass by testing nothing. */
  if (g_files == 0 || g_valid == 0 || g_bad == 0) {
    fprintf(stderr, "fuzz_envelope_corpus: corpus has no valid-* or no bad-* seeds\n");
    rc = 1;
  }
  return rc || g_wrong ? 1 : 0;
}
#endif
