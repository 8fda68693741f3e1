/*
 * test_media.c: the content-addressed media store (common/src/media.c).
 *
 * Round trips in both modes, checked against an independent SHA-256 and
 * against the bytes on disk (plaintext objects are the file itself;
 * encrypted ones carry the magic and key id and never the plaintext);
 * idempotent puts; key rotation end to end (old keys still decrypt until
 * rotation, then can be removed); every damaged object (each byte flipped,
 * truncation, a wrong key, plaintext edits) is an error naming the ref;
 * every refused keys file with its exact message; leftovers of crashed
 * writes, including a writer killed with SIGKILL at random points; and a
 * 5 MB object whose size on disk shows the 64 KiB chunking.
 */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "media.h"

#define CHUNK 65536u
#define OVERHEAD 17u /* secretstream ABYTES per chunk */
#define PREFIX 32u   /* "QMM1", key id, stream header */

static const char KEY1[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char KEY2[] = "f0e0d0c0b0a090807060504030201000ffeeddccbbaa99887766554433221100";
static const char KEY3[] = "5555555555555555555555555555555555555555555555555555555555555555";

static char root[64];
static int case_no;
static char dir[256]; /* this case's store */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int group_setup(void **state) {
  (void)state;
  qm_log_set_level(QM_LOG_ERROR);
  snprintf(root, sizeof root, "/tmp/qm_test_media.XXXXXX");
  return mkdtemp(root) ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  return nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Each case gets a fresh store directory. */
static int case_setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s/case%d", root, ++case_no);
  return mkdir(dir, 0700);
}

static const char *path_in(const char *name) {
  static char buf[8][512];
  static int next;
  char *b = buf[next++ % 8];
  snprintf(b, 512, "%s/%s", dir, name);
  return b;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (n) assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static const char *write_text(const char *name, const char *text) {
  const char *p = path_in(name);
  write_bytes(p, text, strlen(text));
  return p;
}

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)sz + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
  fclose(f);
  *n = (size_t)sz;
  return b;
}

/* Deterministic pseudo-random content, different for each seed. */
static uint8_t *make_content(size_t n, uint32_t seed) {
  uint8_t *b = malloc(n ? n : 1);
  assert_non_null(b);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b[i] = (uint8_t)x;
  }
  return b;
}

static void expected_ref(const uint8_t *data, size_t n, char *out) {
  uint8_t d[32];
  crypto_hash_sha256(d, data, n);
  strcpy(out, "sha256:");
  sodium_bin2hex(out + 7, 65, d, 32);
}

static const char *object_file(const char *store, const char *ref) {
  static char p[512];
  const char *hex = ref + 7;
  snprintf(p, sizeof p, "%s/%.2s/%.2s/%s", store, hex, hex + 2, hex);
  return p;
}

/* Counts the objects (files three levels down, outside tmp/). */
static size_t count_objects(const char *store) {
  size_t n = 0;
  DIR *d1 = opendir(store);
  assert_non_null(d1);
  struct dirent *a;
  while ((a = readdir(d1))) {
    if (a->d_name[0] == '.' || strcmp(a->d_name, "tmp") == 0) continue;
    char p1[512];
    snprintf(p1, sizeof p1, "%s/%s", store, a->d_name);
    DIR *d2 = opendir(p1);
    if (!d2) continue;
    struct dirent *b;
    while ((b = readdir(d2))) {
      if (b->d_name[0] == '.') continue;
      char p2[800];
      snprintf(p2, sizeof p2, "%s/%s", p1, b->d_name);
      DIR *d3 = opendir(p2);
      if (!d3) continue;
      struct dirent *c;
      while ((c = readdir(d3)))
        if (c->d_name[0] != '.') n++;
      closedir(d3);
    }
    closedir(d2);
  }
  closedir(d1);
  return n;
}

static size_t count_dir(const char *path) {
  DIR *d = opendir(path);
  assert_non_null(d);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static qm_media_t *open_store(const char *keys_file) {
  qm_media_opts_t o = {dir, keys_file};
  qm_media_t *m = NULL;
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_open(&m, &o, &err);
  if (rc) fail_msg("qm_media_open: %s", err.msg);
  assert_non_null(m);
  return m;
}

/* A keys file from (id, key, current) triples. */
static const char *keys_file(const char *name, int n, const uint32_t *ids, const char *const *keys, int current) {
  char text[2048];
  size_t used = (size_t)snprintf(text, sizeof text, "keys = (\n");
  for (int i = 0; i < n; i++)
    used += (size_t)snprintf(text + used, sizeof text - used, "  { id = %u; key = \"%s\";%s },\n", ids[i], keys[i],
                             ids[i] == (uint32_t)current ? " current = true;" : "");
  text[used - 2] = '\n'; /* no comma after the last entry */
  text[used - 1] = '\0';
  snprintf(text + strlen(text), sizeof text - strlen(text), ");\n");
  /* Its own ring, so the name outlives the path_in() calls that follow. */
  static char names[8][512];
  static int next;
  char *p = names[next++ % 8];
  snprintf(p, 512, "%s", write_text(name, text));
  chmod(p, 0600);
  return p;
}

static void put_bytes(qm_media_t *m, const char *name, const uint8_t *data, size_t n, char *ref) {
  const char *p = path_in(name);
  write_bytes(p, data, n);
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_put_file(m, p, ref, QM_MEDIA_REF_LEN, &err);
  if (rc) fail_msg("put %s: %s", name, err.msg);
}

static void expect_get(qm_media_t *m, const char *ref, const uint8_t *data, size_t n) {
  uint8_t *got = NULL;
  size_t len = 99;
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_get(m, ref, &got, &len, &err);
  if (rc) fail_msg("get %s: %s", ref, err.msg);
  assert_int_equal(len, n);
  if (n) assert_memory_equal(got, data, n);
  free(got);
}

static void expect_get_error(qm_media_t *m, const char *ref, int code, const char *what) {
  uint8_t *got = (uint8_t *)0x1;
  size_t len = 99;
  qm_error_t err;
  qm_error_clear(&err);
  assert_int_equal(qm_media_get(m, ref, &got, &len, &err), code);
  assert_null(got);
  assert_int_equal(len, 0);
  char expected[512];
  snprintf(expected, sizeof expected, "media %s: %s", ref, what);
  assert_string_equal(err.msg, expected);
}

/* ---- round trips ---- */

static void test_plaintext_round_trip(void **state) {
  (void)state;
  qm_media_t *m = open_store(NULL);
  size_t n = 100000;
  uint8_t *data = make_content(n, 1);
  char ref[QM_MEDIA_REF_LEN], want[QM_MEDIA_REF_LEN], computed[QM_MEDIA_REF_LEN];
  put_bytes(m, "a.bin", data, n, ref);
  expected_ref(data, n, want);
  assert_string_equal(ref, want);
  /* ref_file agrees and stores nothing. */
  write_bytes(path_in("other.bin"), "xyz", 3);
  assert_int_equal(qm_media_ref_file(path_in("other.bin"), computed, sizeof computed, NULL), 0);
  expected_ref((const uint8_t *)"xyz", 3, want);
  assert_string_equal(computed, want);
  assert_int_equal(count_objects(dir), 1);
  /* A plaintext object is the file itself, under DIR/ab/cd/<hex>. */
  size_t on_disk_len;
  uint8_t *on_disk = read_all(object_file(dir, ref), &on_disk_len);
  assert_int_equal(on_disk_len, n);
  assert_memory_equal(on_disk, data, n);
  free(on_disk);
  expect_get(m, ref, data, n);
  /* The source can go away: the store has its own copy. */
  unlink(path_in("a.bin"));
  expect_get(m, ref, data, n);
  free(data);
  qm_media_destroy(&m);
  assert_null(m);
  qm_media_destroy(&m); /* idempotent */
}

static void test_encrypted_round_trip(void **state) {
  (void)state;
  uint32_t ids[] = {7};
  const char *keys[] = {KEY1};
  qm_media_t *m = open_store(keys_file("keys.cfg", 1, ids, keys, 0));
  size_t n = 3000;
  uint8_t *data = make_content(n, 2);
  char ref[QM_MEDIA_REF_LEN], want[QM_MEDIA_REF_LEN];
  put_bytes(m, "a.bin", data, n, ref);
  expected_ref(data, n, want);
  assert_string_equal(ref, want); /* named by the plaintext, not the ciphertext */
  size_t len;
  uint8_t *on_disk = read_all(object_file(dir, ref), &len);
  assert_int_equal(len, PREFIX + n + OVERHEAD);
  assert_memory_equal(on_disk, "QMM1\0\0\0\7", 8);
  assert_null(memmem(on_disk, len, data, 32)); /* no plaintext at rest */
  free(on_disk);
  expect_get(m, ref, data, n);

  /* The empty file is an object too, in both modes. */
  char eref[QM_MEDIA_REF_LEN];
  put_bytes(m, "empty", NULL, 0, eref);
  expected_ref(NULL, 0, want);
  assert_string_equal(eref, want);
  expect_get(m, eref, NULL, 0);
  free(data);
  qm_media_destroy(&m);

  /* Reopened without keys, the encrypted object says why it cannot be read. */
  m = open_store(NULL);
  expect_get_error(m, ref, QM_EIO, "encrypted with key 7 but no keys file is configured");
  qm_media_destroy(&m);
}

static void test_idempotent_put(void **state) {
  (void)state;
  uint32_t ids[] = {1};
  const char *keys[] = {KEY1};
  qm_media_t *m = open_store(keys_file("keys.cfg", 1, ids, keys, 1));
  uint8_t *data = make_content(200000, 3);
  char r1[QM_MEDIA_REF_LEN], r2[QM_MEDIA_REF_LEN], r3[QM_MEDIA_REF_LEN];
  put_bytes(m, "a.bin", data, 200000, r1);
  struct stat st1, st2;
  assert_int_equal(stat(object_file(dir, r1), &st1), 0);
  put_bytes(m, "a.bin", data, 200000, r2);
  put_bytes(m, "copy.bin", data, 200000, r3); /* same content, another name */
  assert_string_equal(r1, r2);
  assert_string_equal(r1, r3);
  assert_int_equal(count_objects(dir), 1);
  /* Not rewritten: the same inode (a rewrite renames a new file in). */
  assert_int_equal(stat(object_file(dir, r1), &st2), 0);
  assert_int_equal(st1.st_ino, st2.st_ino);
  assert_int_equal(count_dir(path_in("tmp")), 0);
  /* Different content is a different object. */
  data[0] ^= 1;
  put_bytes(m, "b.bin", data, 200000, r2);
  assert_string_not_equal(r1, r2);
  assert_int_equal(count_objects(dir), 2);
  free(data);
  qm_media_destroy(&m);
}

/* A plaintext object that happens to begin with the magic is still read as
 * the plaintext it is. */
static void test_plaintext_that_looks_encrypted(void **state) {
  (void)state;
  qm_media_t *m = open_store(NULL);
  uint8_t data[200];
  memset(data, 'x', sizeof data);
  memcpy(data, "QMM1\0\0\0\1", 8);
  char ref[QM_MEDIA_REF_LEN];
  put_bytes(m, "tricky.bin", data, sizeof data, ref);
  expect_get(m, ref, data, sizeof data);
  qm_media_destroy(&m);
  /* Also with keys that include id 1: decryption fails, the content's hash
   * tells it is plaintext. */
  uint32_t ids[] = {1};
  const char *keys[] = {KEY1};
  m = open_store(keys_file("keys.cfg", 1, ids, keys, 1));
  expect_get(m, ref, data, sizeof data);
  qm_media_destroy(&m);
}

/* ---- rotation ---- */

typedef struct progress {
  size_t calls, last_done, total;
  int monotonic;
} progress_t;

static void on_progress(void *ud, size_t done, size_t total) {
  progress_t *p = ud;
  if (p->calls && done <= p->last_done) p->monotonic = 0;
  p->calls++;
  p->last_done = done;
  p->total = total;
}

static uint32_t object_key_id(const char *ref) {
  size_t len;
  uint8_t *b = read_all(object_file(dir, ref), &len);
  uint32_t id = 0;
  if (len >= 8 && memcmp(b, "QMM1", 4) == 0)
    id = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
  free(b);
  return id;
}

static void test_rotation(void **state) {
  (void)state;
  enum { N = 4 };
  uint8_t *data[N];
  size_t sizes[N] = {10, CHUNK, 3 * CHUNK + 5, 70000};
  char refs[N][QM_MEDIA_REF_LEN];
  for (int i = 0; i < N; i++) data[i] = make_content(sizes[i], 10 + (uint32_t)i);

  /* Object 0 is from the store's plaintext days. */
  qm_media_t *m = open_store(NULL);
  put_bytes(m, "0", data[0], sizes[0], refs[0]);
  qm_media_destroy(&m);

  uint32_t ids12[] = {1, 2};
  const char *keys12[] = {KEY1, KEY2};
  const char *only1 = keys_file("k1.cfg", 1, ids12, keys12, 1);
  const char *both_cur1 = keys_file("k12a.cfg", 2, ids12, keys12, 1);
  const char *both_cur2 = keys_file("k12b.cfg", 2, ids12, keys12, 2);
  uint32_t ids2[] = {2};
  const char *keys2[] = {KEY2};
  const char *only2 = keys_file("k2.cfg", 1, ids2, keys2, 2);

  m = open_store(only1);
  for (int i = 1; i < N; i++) put_bytes(m, "x", data[i], sizes[i], refs[i]);
  qm_media_destroy(&m);
  assert_int_equal(object_key_id(refs[0]), 0);
  for (int i = 1; i < N; i++) assert_int_equal(object_key_id(refs[i]), 1);

  /* Key 2 added but key 1 still current: nothing changes, all readable. */
  m = open_store(both_cur1);
  for (int i = 0; i < N; i++) expect_get(m, refs[i], data[i], sizes[i]);
  qm_media_destroy(&m);

  /* Removing key 1 before rotating strands its objects, with a clear error. */
  m = open_store(only2);
  char why[256];
  snprintf(why, sizeof why, "encrypted with key 1, which %s does not list", only2);
  expect_get_error(m, refs[1], QM_EIO, why);
  expect_get(m, refs[0], data[0], sizes[0]); /* plaintext needs no key */
  qm_media_destroy(&m);

  /* Key 2 current: new objects use it, old ones still decrypt with key 1. */
  m = open_store(both_cur2);
  for (int i = 0; i < N; i++) expect_get(m, refs[i], data[i], sizes[i]);
  char newref[QM_MEDIA_REF_LEN];
  uint8_t *fresh = make_content(500, 99);
  put_bytes(m, "new", fresh, 500, newref);
  assert_int_equal(object_key_id(newref), 2);

  progress_t pr = {0, 0, 0, 1};
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_media_rotate(m, on_progress, &pr, &err);
  if (rc) fail_msg("rotate: %s", err.msg);
  assert_int_equal(pr.total, N + 1);
  assert_int_equal(pr.calls, N + 1);
  assert_int_equal(pr.last_done, N + 1);
  assert_true(pr.monotonic);
  for (int i = 0; i < N; i++) assert_int_equal(object_key_id(refs[i]), 2);
  assert_int_equal(count_objects(dir), N + 1);
  assert_int_equal(count_dir(path_in("tmp")), 0);
  /* Rotating again is a no-op that still reports progress. */
  struct stat before, after;
  assert_int_equal(stat(object_file(dir, refs[2]), &before), 0);
  assert_int_equal(qm_media_rotate(m, NULL, NULL, &err), 0);
  assert_int_equal(stat(object_file(dir, refs[2]), &after), 0);
  assert_int_equal(before.st_ino, after.st_ino);
  qm_media_destroy(&m);

  /* Now key 1 can go. */
  m = open_store(only2);
  for (int i = 0; i < N; i++) expect_get(m, refs[i], data[i], sizes[i]);
  expect_get(m, newref, fresh, 500);
  qm_media_destroy(&m);

  /* Without a keys file there is nothing to rotate to. */
  m = open_store(NULL);
  assert_int_equal(qm_media_rotate(m, NULL, NULL, &err), QM_EINVAL);
  char expected[512];
  snprintf(expected, sizeof expected, "media %s: nothing to rotate to: no keys file is configured", dir);
  assert_string_equal(err.msg, expected);
  qm_media_destroy(&m);

  for (int i = 0; i < N; i++) free(data[i]);
  free(fresh);
}

/* A damaged object does not stop the rotation of the others. */
static void test_rotation_skips_damaged(void **state) {
  (void)state;
  uint32_t ids[] = {1, 2};
  const char *keys[] = {KEY1, KEY2};
  qm_media_t *m = open_store(keys_file("k1.cfg", 2, ids, keys, 1));
  uint8_t *a = make_content(1000, 1), *b = make_content(1000, 2);
  char ra[QM_MEDIA_REF_LEN], rb[QM_MEDIA_REF_LEN];
  put_bytes(m, "a", a, 1000, ra);
  put_bytes(m, "b", b, 1000, rb);
  qm_media_destroy(&m);
  /* Flip one ciphertext byte of b. */
  int fd = open(object_file(dir, rb), O_RDWR);
  assert_true(fd >= 0);
  uint8_t c;
  assert_int_equal(pread(fd, &c, 1, 500), 1);
  c ^= 0x40;
  assert_int_equal(pwrite(fd, &c, 1, 500), 1);
  close(fd);

  m = open_store(keys_file("k2.cfg", 2, ids, keys, 2));
  qm_error_t err;
  qm_error_clear(&err);
  assert_int_equal(qm_media_rotate(m, NULL, NULL, &err), QM_EIO);
  char expected[512];
  snprintf(expected, sizeof expected, "1 of 2 objects could not be re-encrypted (first: media %s: damaged or wrong key)",
           rb);
  assert_string_equal(err.msg, expected);
  assert_int_equal(object_key_id(ra), 2);
  assert_int_equal(object_key_id(rb), 1); /* left as it was */
  expect_get(m, ra, a, 1000);
  assert_int_equal(count_dir(path_in("tmp")), 0);
  qm_media_destroy(&m);
  free(a);
  free(b);
}

/* ---- damaged objects ---- */

static void test_wrong_key_and_tampering(void **state) {
  (void)state;
  uint32_t ids[] = {1};
  const char *k1[] = {KEY1}, *k3[] = {KEY3};
  const char *right = keys_file("right.cfg", 1, ids, k1, 1);
  const char *wrong = keys_file("wrong.cfg", 1, ids, k3, 1); /* same id, other key */
  qm_media_t *m = open_store(right);
  size_t n = 300;
  uint8_t *data = make_content(n, 5);
  char ref[QM_MEDIA_REF_LEN];
  put_bytes(m, "a", data, n, ref);
  qm_media_destroy(&m);

  m = open_store(wrong);
  expect_get_error(m, ref, QM_EIO, "damaged or wrong key");
  qm_media_destroy(&m);

  /* Every single flipped byte, header and tag included, is caught. The
   * object is restored between flips. */
  m = open_store(right);
  const char *obj = object_file(dir, ref);
  char objpath[512];
  snprintf(objpath, sizeof objpath, "%s", obj);
  size_t len;
  uint8_t *orig = read_all(objpath, &len);
  for (size_t i = 0; i < len; i++) {
    uint8_t *bad = malloc(len);
    memcpy(bad, orig, len);
    bad[i] ^= 0x01;
    write_bytes(objpath, bad, len);
    free(bad);
    uint8_t *got = NULL;
    size_t glen = 0;
    qm_error_t err;
    qm_error_clear(&err);
    int rc = qm_media_get(m, ref, &got, &glen, &err);
    if (rc != QM_EIO) fail_msg("byte %zu flipped: get returned %d", i, rc);
    assert_null(got);
    assert_non_null(strstr(err.msg, ref));
  }
  /* Truncated anywhere, appended to, or emptied. */
  size_t cuts[] = {0, 3, 8, PREFIX, PREFIX + 10, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    write_bytes(objpath, orig, cuts[i]);
    uint8_t *got = NULL;
    size_t glen = 0;
    assert_int_equal(qm_media_get(m, ref, &got, &glen, NULL), QM_EIO);
  }
  uint8_t *longer = malloc(len + 1);
  memcpy(longer, orig, len);
  longer[len] = 0;
  write_bytes(objpath, longer, len + 1);
  /* The last chunk is read to the end of the file, so the extra byte breaks
   * its authentication. */
  expect_get_error(m, ref, QM_EIO, "damaged or wrong key");
  free(longer);
  write_bytes(objpath, orig, len);
  expect_get(m, ref, data, n);
  free(orig);

  /* Another object's (valid) ciphertext under this name. */
  char other[QM_MEDIA_REF_LEN];
  uint8_t *od = make_content(n, 6);
  put_bytes(m, "b", od, n, other);
  size_t olen;
  uint8_t *ob = read_all(object_file(dir, other), &olen);
  write_bytes(objpath, ob, olen);
  expect_get_error(m, ref, QM_EIO, "damaged (content does not match its ref)");
  free(ob);
  free(od);
  qm_media_destroy(&m);

  /* Plaintext objects are checked against their name as well. */
  m = open_store(NULL);
  char pref[QM_MEDIA_REF_LEN];
  uint8_t *pd = make_content(n, 7);
  put_bytes(m, "p", pd, n, pref);
  free(pd);
  const char *pobj = object_file(dir, pref);
  int fd = open(pobj, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "Z", 1, 10), 1);
  close(fd);
  expect_get_error(m, pref, QM_EIO, "damaged (content does not match its ref)");

  /* Absent and malformed refs. */
  char absent[QM_MEDIA_REF_LEN];
  expected_ref((const uint8_t *)"never stored", 12, absent);
  expect_get_error(m, absent, QM_ENOTFOUND, "not found");
  expect_get_error(m, "sha256:abc", QM_EINVAL, "not a ref (sha256:<64 hex>)");
  char upper[QM_MEDIA_REF_LEN];
  snprintf(upper, sizeof upper, "sha256:%s", "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789");
  expect_get_error(m, upper, QM_EINVAL, "not a ref (sha256:<64 hex>)");
  expect_get_error(m, "md5:00", QM_EINVAL, "not a ref (sha256:<64 hex>)");
  qm_media_destroy(&m);
  free(data);
}

static void test_truncated_at_chunk_boundary(void **state) {
  (void)state;
  uint32_t ids[] = {1};
  const char *k1[] = {KEY1};
  qm_media_t *m = open_store(keys_file("k.cfg", 1, ids, k1, 1));
  size_t n = 2 * CHUNK + 100;
  uint8_t *data = make_content(n, 8);
  char ref[QM_MEDIA_REF_LEN];
  put_bytes(m, "a", data, n, ref);
  char objpath[512];
  snprintf(objpath, sizeof objpath, "%s", object_file(dir, ref));
  size_t len;
  uint8_t *orig = read_all(objpath, &len);
  assert_int_equal(len, PREFIX + n + 3 * OVERHEAD);
  /* Dropping the final chunk leaves two well-formed chunks: only the
   * missing FINAL tag shows the object is cut. */
  write_bytes(objpath, orig, PREFIX + 2 * (CHUNK + OVERHEAD));
  expect_get_error(m, ref, QM_EIO, "damaged (truncated)");
  /* Swapping the two full chunks is caught by authentication. */
  uint8_t *swapped = malloc(len);
  memcpy(swapped, orig, len);
  memcpy(swapped + PREFIX, orig + PREFIX + CHUNK + OVERHEAD, CHUNK + OVERHEAD);
  memcpy(swapped + PREFIX + CHUNK + OVERHEAD, orig + PREFIX, CHUNK + OVERHEAD);
  write_bytes(objpath, swapped, len);
  expect_get_error(m, ref, QM_EIO, "damaged or wrong key");
  free(swapped);
  free(orig);
  free(data);

  /* Exactly two chunks of content: the last full chunk carries FINAL, and
   * anything appended after it is refused. */
  n = 2 * CHUNK;
  data = make_content(n, 9);
  put_bytes(m, "b", data, n, ref);
  snprintf(objpath, sizeof objpath, "%s", object_file(dir, ref));
  orig = read_all(objpath, &len);
  assert_int_equal(len, PREFIX + n + 2 * OVERHEAD);
  uint8_t *longer = malloc(len + 40);
  memcpy(longer, orig, len);
  memset(longer + len, 0, 40);
  write_bytes(objpath, longer, len + 40);
  expect_get_error(m, ref, QM_EIO, "damaged (data after the final chunk)");
  write_bytes(objpath, orig, len);
  expect_get(m, ref, data, n);
  free(longer);
  free(orig);
  free(data);
  qm_media_destroy(&m);
}

/* ---- large objects ---- */

static void test_large_file_chunking(void **state) {
  (void)state;
  uint32_t ids[] = {3};
  const char *k[] = {KEY2};
  qm_media_t *m = open_store(keys_file("k.cfg", 1, ids, k, 3));
  size_t sizes[] = {5u * 1024 * 1024 + 123, 2 * CHUNK, CHUNK - 1};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    uint8_t *data = make_content(n, 20 + (uint32_t)i);
    char ref[QM_MEDIA_REF_LEN], want[QM_MEDIA_REF_LEN];
    put_bytes(m, "big", data, n, ref);
    expected_ref(data, n, want);
    assert_string_equal(ref, want);
    struct stat st;
    assert_int_equal(stat(object_file(dir, ref), &st), 0);
    size_t chunks = (n + CHUNK - 1) / CHUNK;
    assert_int_equal((size_t)st.st_size, PREFIX + n + chunks * OVERHEAD);
    expect_get(m, ref, data, n);
    free(data);
  }
  qm_media_destroy(&m);
}

/* ---- keys file errors ---- */

static void expect_keys_error(const char *text, const char *expected_tail) {
  const char *p = write_text("bad.cfg", text);
  qm_media_opts_t o = {dir, p};
  qm_media_t *m = (qm_media_t *)0x1;
  qm_error_t err;
  qm_error_clear(&err);
  assert_int_equal(qm_media_open(&m, &o, &err), QM_ECONFIG);
  assert_null(m);
  char expected[1024];
  snprintf(expected, sizeof expected, "%s%s", p, expected_tail);
  assert_string_equal(err.msg, expected);
}

static void test_keys_file_errors(void **state) {
  (void)state;
  char k1[200], k2[200];
  snprintf(k1, sizeof k1, "{ id = 1; key = \"%s\"; }", KEY1);
  snprintf(k2, sizeof k2, "{ id = 2; key = \"%s\"; current = true; }", KEY2);
  char text[2048];

  snprintf(text, sizeof text, "keys = (\n  %s,\n  { id = 2; key = \"00ff\"; current = true; }\n);\n", k1);
  expect_keys_error(text, ":3: keys.[1].key: must be 64 hex digits");
  snprintf(text, sizeof text, "keys = ( { id = 1; key = \"%.63sg\"; } );\n", KEY1);
  expect_keys_error(text, ":1: keys.[0].key: must be 64 hex digits");
  expect_keys_error("keys = ( { id = 1; key = 12; } );\n", ":1: keys.[0].key: must be 64 hex digits");
  expect_keys_error("keys = ( { id = 1; } );\n", ":1: keys.[0].key: missing (64 hex digits)");
  snprintf(text, sizeof text, "keys = ( { key = \"%s\"; } );\n", KEY1);
  expect_keys_error(text, ":1: keys.[0].id: missing (an integer from 1 to 4294967295)");
  snprintf(text, sizeof text, "keys = ( { id = 0; key = \"%s\"; } );\n", KEY1);
  expect_keys_error(text, ":1: keys.[0].id: must be between 1 and 4294967295");
  snprintf(text, sizeof text, "keys = ( { id = \"1\"; key = \"%s\"; } );\n", KEY1);
  expect_keys_error(text, ":1: keys.[0].id: must be an integer (got a string)");
  snprintf(text, sizeof text, "keys = (\n  %s,\n  { id = 1; key = \"%s\"; current = true; }\n);\n", k1, KEY2);
  expect_keys_error(text, ":3: keys.[1].id: key id 1 is already used by keys.[0]");
  snprintf(text, sizeof text, "keys = (\n  { id = 1; key = \"%s\"; current = true; },\n  %s\n);\n", KEY1, k2);
  expect_keys_error(text, ":3: keys.[1].current: only one key can be current (keys.[0] already is)");
  snprintf(text, sizeof text, "keys = (\n  %s,\n  { id = 2; key = \"%s\"; }\n);\n", k1, KEY2);
  expect_keys_error(text, ":1: keys: no key is marked current = true (it encrypts new objects)");
  snprintf(text, sizeof text, "keys = ( { id = 1; key = \"%s\"; current = 1; } );\n", KEY1);
  expect_keys_error(text, ":1: keys.[0].current: must be true or false (got an integer)");
  snprintf(text, sizeof text, "keys = (\n  { id = 1; kye = \"%s\"; }\n);\n", KEY1);
  expect_keys_error(text, ":2: keys.[0].kye: unknown setting (valid: id, key, current)");
  snprintf(text, sizeof text, "keys = ( %s );\nkey = 5;\n", k1);
  expect_keys_error(text, ":2: key: unknown setting (valid: keys)");
  expect_keys_error("# nothing here\n", ":1: keys: missing (keys = ( { id = 1; key = \"<64 hex>\"; current = true; } );)");
  expect_keys_error("keys = ();\n", ":1: keys: must list at least one key");
  expect_keys_error("keys = 5;\n", ":1: keys: must be a list ( { id = 1; key = \"<64 hex>\"; }, ... ) (got an integer)");
  expect_keys_error("keys = ( 5 );\n", ":1: keys.[0]: must be a group { id = 1; key = \"<64 hex>\"; } (got an integer)");
  expect_keys_error("keys = (\n  { id = ; }\n);\n", ":2: syntax error");

  /* A file that is not there, or a directory. */
  qm_media_opts_t o = {dir, "/nonexistent/keys.cfg"};
  qm_media_t *m = NULL;
  qm_error_t err;
  assert_int_equal(qm_media_open(&m, &o, &err), QM_ECONFIG);
  assert_string_equal(err.msg, "/nonexistent/keys.cfg:1: cannot read: No such file or directory");
  o.keys_file = dir;
  assert_int_equal(qm_media_open(&m, &o, &err), QM_ECONFIG);
  char expected[512];
  snprintf(expected, sizeof expected, "%s:1: cannot read: Is a directory", dir);
  assert_string_equal(err.msg, expected);
  assert_null(m);

  /* A good file with one key that is not marked current: it is current. */
  snprintf(text, sizeof text, "keys = ( %s );\n", k1);
  m = open_store(write_text("one.cfg", text));
  char ref[QM_MEDIA_REF_LEN];
  put_bytes(m, "a", (const uint8_t *)"hello", 5, ref);
  assert_int_equal(object_key_id(ref), 1);
  qm_media_destroy(&m);
  /* An empty keys_file string means no encryption. */
  m = open_store("");
  put_bytes(m, "b", (const uint8_t *)"hello!", 6, ref);
  assert_int_equal(object_key_id(ref), 0);
  qm_media_destroy(&m);
}

/* ---- crash safety ---- */

static void test_leftover_tmp_files(void **state) {
  (void)state;
  qm_media_t *m = open_store(NULL);
  char ref[QM_MEDIA_REF_LEN];
  put_bytes(m, "a", (const uint8_t *)"abc", 3, ref);
  qm_media_destroy(&m);
  /* Two leftovers of crashed writes: one old, one that could still be in
   * the hands of another writer. */
  const char *stale = path_in("tmp/0011223344556677");
  const char *recent = path_in("tmp/8899aabbccddeeff");
  write_bytes(stale, "partial", 7);
  write_bytes(recent, "partial", 7);
  struct timeval old[2];
  gettimeofday(&old[0], NULL);
  old[0].tv_sec -= 3600;
  old[1] = old[0];
  assert_int_equal(utimes(stale, old), 0);

  m = open_store(NULL);
  assert_int_equal(access(stale, F_OK), -1);
  assert_int_equal(access(recent, F_OK), 0);
  /* Neither is an object; the store works around them. */
  assert_int_equal(count_objects(dir), 1);
  expect_get(m, ref, (const uint8_t *)"abc", 3);
  put_bytes(m, "b", (const uint8_t *)"partial", 7, ref);
  expect_get(m, ref, (const uint8_t *)"partial", 7);
  assert_int_equal(count_dir(path_in("tmp")), 1);
  qm_media_destroy(&m);

  /* Rotation leaves tmp/ alone as well. */
  uint32_t ids[] = {1};
  const char *k1[] = {KEY1};
  m = open_store(keys_file("k.cfg", 1, ids, k1, 1));
  assert_int_equal(qm_media_rotate(m, NULL, NULL, NULL), 0);
  assert_int_equal(count_objects(dir), 2);
  assert_int_equal(access(recent, F_OK), 0);
  qm_media_destroy(&m);
}

/* A writer killed with SIGKILL at random points: every object that exists
 * afterwards is whole (get verifies it against its name), and nothing but
 * tmp/ holds partial files. */
static void test_killed_writer(void **state) {
  (void)state;
  uint32_t ids[] = {1};
  const char *k1[] = {KEY1};
  const char *kf = keys_file("k.cfg", 1, ids, k1, 1);
  enum { FILES = 40, SIZE = 300000 };
  for (uint32_t i = 0; i < FILES; i++) {
    char name[32];
    snprintf(name, sizeof name, "src%u", i);
    uint8_t *d = make_content(SIZE, 1000 + i);
    write_bytes(path_in(name), d, SIZE);
    free(d);
  }
  srand((unsigned)time(NULL));
  for (int round = 0; round < 6; round++) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      qm_media_t *cm = NULL;
      qm_media_opts_t o = {dir, kf};
      if (qm_media_open(&cm, &o, NULL)) _exit(3);
      for (int i = 0; i < FILES; i++) {
        char name[32], ref[QM_MEDIA_REF_LEN];
        snprintf(name, sizeof name, "src%d", (i * 7 + round * 13) % FILES);
        if (qm_media_put_file(cm, path_in(name), ref, sizeof ref, NULL)) _exit(4);
      }
      _exit(0);
    }
    struct timespec delay = {0, (long)(rand() % 40 + 1) * 1000000L};
    nanosleep(&delay, NULL);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) assert_int_equal(WEXITSTATUS(status), 0);
  }
  qm_media_t *m = open_store(kf);
  size_t whole = 0;
  for (uint32_t i = 0; i < FILES; i++) {
    uint8_t *d = make_content(SIZE, 1000 + i);
    char ref[QM_MEDIA_REF_LEN];
    expected_ref(d, SIZE, ref);
    if (access(object_file(dir, ref), F_OK) == 0) {
      expect_get(m, ref, d, SIZE);
      whole++;
    }
    free(d);
  }
  assert_int_equal(count_objects(dir), whole);
  /* Putting everything again completes the store. */
  for (uint32_t i = 0; i < FILES; i++) {
    char name[32], ref[QM_MEDIA_REF_LEN];
    snprintf(name, sizeof name, "src%u", i);
    assert_int_equal(qm_media_put_file(m, path_in(name), ref, sizeof ref, NULL), 0);
  }
  assert_int_equal(count_objects(dir), FILES);
  qm_media_destroy(&m);
}

static void test_put_errors(void **state) {
  (void)state;
  qm_media_t *m = open_store(NULL);
  char ref[QM_MEDIA_REF_LEN];
  qm_error_t err;
  assert_int_equal(qm_media_put_file(m, "/nonexistent/a.wav", ref, sizeof ref, &err), QM_ENOTFOUND);
  assert_string_equal(err.msg, "/nonexistent/a.wav: cannot open: No such file or directory");
  assert_int_equal(qm_media_put_file(m, dir, ref, sizeof ref, &err), QM_EINVAL);
  char expected[512];
  snprintf(expected, sizeof expected, "%s: not a regular file", dir);
  assert_string_equal(err.msg, expected);
  write_bytes(path_in("a"), "a", 1);
  assert_int_equal(qm_media_put_file(m, path_in("a"), ref, 71, &err), QM_EINVAL);
  assert_int_equal(qm_media_ref_file("/nonexistent/a.wav", ref, sizeof ref, &err), QM_ENOTFOUND);
  assert_int_equal(count_objects(dir), 0);
  qm_media_destroy(&m);

  /* A store directory that cannot be created. */
  qm_media_opts_t o = {"/proc/qm_media_test", NULL};
  assert_int_equal(qm_media_open(&m, &o, &err), QM_EIO);
  assert_null(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup(test_plaintext_round_trip, case_setup),
    cmocka_unit_test_setup(test_encrypted_round_trip, case_setup),
    cmocka_unit_test_setup(test_idempotent_put, case_setup),
    cmocka_unit_test_setup(test_plaintext_that_looks_encrypted, case_setup),
    cmocka_unit_test_setup(test_rotation, case_setup),
    cmocka_unit_test_setup(test_rotation_skips_damaged, case_setup),
    cmocka_unit_test_setup(test_wrong_key_and_tampering, case_setup),
    cmocka_unit_test_setup(test_truncated_at_chunk_boundary, case_setup),
    cmocka_unit_test_setup(test_large_file_chunking, case_setup),
    cmocka_unit_test_setup(test_keys_file_errors, case_setup),
    cmocka_unit_test_setup(test_leftover_tmp_files, case_setup),
    cmocka_unit_test_setup(test_killed_writer, case_setup),
    cmocka_unit_test_setup(test_put_errors, case_setup),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
