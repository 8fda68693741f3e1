/*
 * media.c: the content-addressed media store (see media.h for the layout,
 * the object format and the promises).
 *
 * Everything streams in 64 KiB pieces, so storing or rotating a four-hour
 * recording never holds more than two chunks in memory; only qm_media_get
 * hands back the whole content, because its callers want a buffer.
 */
#define _GNU_SOURCE
#include "media.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfgutil.h"
#include "log.h"

#define CHUNK (64u * 1024u)
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define HEADERBYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define KEYBYTES crypto_secretstream_xchacha20poly1305_KEYBYTES
#define MAGIC "QMM1"
#define PREFIX_LEN (4 + 4 + HEADERBYTES) /* magic, key id, stream header */
#define HEX_LEN 64

/* A temporary file older than this is a leftover of a crash and is removed
 * on open. Younger ones are left alone: another process sharing the store
 * (an import running beside ingest) may be writing it right now, and an
 * active writer keeps its file's mtime fresh. */
#define TMP_STALE_S 600

typedef struct media_key {
  uint32_t id;
  uint8_t key[KEYBYTES];
} media_key_t;

struct qm_media {
  /* Shorter than PATH_MAX so "/ab/cd/<64 hex>" always fits after it. */
  char dir[PATH_MAX - 128];
  char keys_file[PATH_MAX];
  media_key_t *keys; /* sodium_malloc'd: guarded, locked, wiped on free */
  size_t nkeys;
  const media_key_t *current; /* NULL: objects are stored as plaintext */
};

/* ---- small file helpers ---- */

static int read_full(int fd, void *buf, size_t n, size_t *got) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, (uint8_t *)buf + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  *got = done;
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, (const uint8_t *)buf + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)w;
  }
  return 0;
}

static int fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

/* Creates one directory level; when it is new, its entry in the parent is
 * made durable too, or a crash could lose a directory holding objects. */
static int make_dir(const char *path, const char *parent) {
  if (mkdir(path, 0750) == 0) return parent ? fsync_dir(parent) : 0;
  if (errno != EEXIST) return -1;
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

/* mkdir -p for the store's own directory. */
static int make_dirs(const char *path) {
  char tmp[PATH_MAX];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(tmp, path, n + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return make_dir(tmp, NULL);
}

static int is_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return 0;
  }
  return 1;
}

static int is_lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static void to_hex(const uint8_t *bin, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[bin[i] >> 4];
    out[2 * i + 1] = digits[bin[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Takes "sha256:<64 lower-case hex>" and returns the hex part, or NULL. Only
 * the canonical spelling is accepted so that one content has one name. */
static const char *ref_hex(const char *ref) {
  if (!ref || strncmp(ref, "sha256:", 7) != 0) return NULL;
  const char *hex = ref + 7;
  if (strlen(hex) != HEX_LEN || !is_lower_hex(hex, HEX_LEN)) return NULL;
  return hex;
}

static int write_ref(const uint8_t digest[32], char *ref, size_t reflen) {
  if (!ref || reflen < QM_MEDIA_REF_LEN) return -1;
  memcpy(ref, "sha256:", 7);
  to_hex(digest, 32, ref + 7);
  return 0;
}

static void object_dir(const qm_media_t *m, const char *hex, int levels, char *out, size_t outlen) {
  if (levels == 1) snprintf(out, outlen, "%s/%.2s", m->dir, hex);
  else snprintf(out, outlen, "%s/%.2s/%.2s", m->dir, hex, hex + 2);
}

static void object_path(const qm_media_t *m, const char *hex, char *out, size_t outlen) {
  snprintf(out, outlen, "%s/%.2s/%.2s/%s", m->dir, hex, hex + 2, hex);
}

static const media_key_t *find_key(const qm_media_t *m, uint32_t id) {
  for (size_t i = 0; i < m->nkeys; i++)
    if (m->keys[i].id == id) return &m->keys[i];
  return NULL;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* ---- the keys file ---- */

typedef struct keys_ctx {
  const char *file;
  qm_error_t *err;
} keys_ctx_t;

__attribute__((format(printf, 4, 5))) static int keys_fail(keys_ctx_t *c, const config_setting_t *s,
                                                           const char *path, const char *fmt, ...) {
  char what[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  unsigned line = s ? config_setting_source_line(s) : 0;
  /* The root group has no line of its own; what is missing at the top is
   * reported against the first line. */
  return qm_error_set(c->err, QM_ECONFIG, "%s:%u: %s: %s", c->file, line ? line : 1, path, what);
}

static int keys_check_members(keys_ctx_t *c, const config_setting_t *g, const char *prefix,
                              const char *const *valid, size_t nvalid) {
  for (int i = 0; i < config_setting_length(g); i++) {
    const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
    const char *name = config_setting_name(s);
    size_t k = 0;
    while (k < nvalid && strcmp(valid[k], name) != 0) k++;
    if (k < nvalid) continue;
    char list[256], path[300];
    qm__join_names(list, sizeof list, valid, nvalid);
    snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", name);
    return keys_fail(c, s, path, "unknown setting (valid: %s)", list);
  }
  return 0;
}

static int keys_read_one(keys_ctx_t *c, const config_setting_t *e, const char *path, media_key_t *k,
                         int *current) {
  static const char *const members[] = {"id", "key", "current"};
  char p[300];
  if (config_setting_type(e) != CONFIG_TYPE_GROUP)
    return keys_fail(c, e, path, "must be a group { id = 1; key = \"<64 hex>\"; } (got %s)",
                     qm__cfg_type_name(e));
  int rc = keys_check_members(c, e, path, members, 3);
  if (rc) return rc;

  snprintf(p, sizeof p, "%s.id", path);
  const config_setting_t *s = config_setting_get_member(e, "id");
  if (!s) return keys_fail(c, e, p, "missing (an integer from 1 to 4294967295)");
  if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
    return keys_fail(c, s, p, "must be an integer (got %s)", qm__cfg_type_name(s));
  long long id = config_setting_get_int64(s);
  if (id < 1 || id > (long long)UINT32_MAX) return keys_fail(c, s, p, "must be between 1 and 4294967295");
  k->id = (uint32_t)id;

  snprintf(p, sizeof p, "%s.key", path);
  s = config_setting_get_member(e, "key");
  if (!s) return keys_fail(c, e, p, "missing (64 hex digits)");
  const char *hex = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
  if (!hex || strlen(hex) != 2 * KEYBYTES || !is_hex(hex, 2 * KEYBYTES))
    return keys_fail(c, s, p, "must be 64 hex digits");
  size_t bin_len = 0;
  if (sodium_hex2bin(k->key, sizeof k->key, hex, strlen(hex), NULL, &bin_len, NULL) != 0 ||
      bin_len != sizeof k->key)
    return keys_fail(c, s, p, "must be 64 hex digits");
  /* The parsed copy lives in our own config object until config_destroy;
   * wipe it so the key is not left in freed heap memory. */
  sodium_memzero((char *)hex, strlen(hex));

  *current = 0;
  snprintf(p, sizeof p, "%s.current", path);
  s = config_setting_get_member(e, "current");
  if (s) {
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
      return keys_fail(c, s, p, "must be true or false (got %s)", qm__cfg_type_name(s));
    *current = config_setting_get_bool(s);
  }
  return 0;
}

static int keys_load(qm_media_t *m, const char *file, qm_error_t *err) {
  keys_ctx_t c = {file, err};
  struct stat st;
  errno = 0;
  if (stat(file, &st) != 0 || S_ISDIR(st.st_mode))
    return qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", file, strerror(errno ? errno : EISDIR));
  if (st.st_mode & 077)
    qm_log(QM_LOG_WARN, "media.keys_file_mode", "file", file, "hint",
           "the media keys file is readable by other users; chmod 600 it", NULL);

  config_t cfg;
  config_init(&cfg);
  int rc = 0;
  if (!config_read_file(&cfg, file)) {
    if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
      rc = qm_error_set(err, QM_ECONFIG, "%s:1: cannot read: %s", file, errno ? strerror(errno) : "file I/O error");
    else
      rc = qm_error_set(err, QM_ECONFIG, "%s:%d: %s", file, config_error_line(&cfg), config_error_text(&cfg));
    goto out;
  }
  const config_setting_t *root = config_root_setting(&cfg);
  static const char *const top[] = {"keys"};
  if ((rc = keys_check_members(&c, root, "", top, 1))) goto out;
  const config_setting_t *list = config_setting_get_member(root, "keys");
  if (!list) {
    rc = keys_fail(&c, root, "keys", "missing (keys = ( { id = 1; key = \"<64 hex>\"; current = true; } );)");
    goto out;
  }
  if (config_setting_type(list) != CONFIG_TYPE_LIST) {
    rc = keys_fail(&c, list, "keys", "must be a list ( { id = 1; key = \"<64 hex>\"; }, ... ) (got %s)",
                   qm__cfg_type_name(list));
    goto out;
  }
  size_t n = (size_t)config_setting_length(list);
  if (n == 0) {
    rc = keys_fail(&c, list, "keys", "must list at least one key");
    goto out;
  }
  m->keys = sodium_malloc(n * sizeof *m->keys);
  if (!m->keys) {
    rc = qm_error_set(err, QM_ENOMEM, "%s: out of memory", file);
    goto out;
  }
  m->nkeys = 0;
  size_t cur = n; /* index of the current key; n = none yet */
  for (size_t i = 0; i < n; i++) {
    const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
    char path[64];
    snprintf(path, sizeof path, "keys.[%zu]", i);
    int is_current = 0;
    if ((rc = keys_read_one(&c, e, path, &m->keys[i], &is_current))) goto out;
    m->nkeys = i + 1;
    for (size_t j = 0; j < i; j++) {
      if (m->keys[j].id != m->keys[i].id) continue;
      char p[80];
      snprintf(p, sizeof p, "%s.id", path);
      rc = keys_fail(&c, config_setting_get_member(e, "id"), p, "key id %u is already used by keys.[%zu]",
                     m->keys[i].id, j);
      goto out;
    }
    if (is_current) {
      if (cur != n) {
        char p[80];
        snprintf(p, sizeof p, "%s.current", path);
        rc = keys_fail(&c, config_setting_get_member(e, "current"), p,
                       "only one key can be current (keys.[%zu] already is)", cur);
        goto out;
      }
      cur = i;
    }
  }
  /* A single key is obviously the one to encrypt with; among several the
   * file must say, since guessing wrong would strand new objects on a key
   * the operator is about to retire. */
  if (cur == n && n == 1) cur = 0;
  if (cur == n) {
    rc = keys_fail(&c, list, "keys", "no key is marked current = true (it encrypts new objects)");
    goto out;
  }
  m->current = &m->keys[cur];
out:
  config_destroy(&cfg);
  return rc;
}

/* ---- open, destroy ---- */

/* Removes leftovers of crashed writes (see TMP_STALE_S). */
static void clean_tmp(const qm_media_t *m) {
  char tdir[PATH_MAX];
  snprintf(tdir, sizeof tdir, "%s/tmp", m->dir);
  DIR *d = opendir(tdir);
  if (!d) return;
  time_t now = time(NULL);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    struct stat st;
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (now - st.st_mtime < TMP_STALE_S) continue;
    if (unlinkat(dirfd(d), de->d_name, 0) == 0)
      qm_log(QM_LOG_INFO, "media.tmp_removed", "dir", tdir, "file", de->d_name, NULL);
  }
  closedir(d);
}

int qm_media_open(qm_media_t **out, const qm_media_opts_t *o, qm_error_t *err) {
  *out = NULL;
  if (!o || !o->dir || !*o->dir) return qm_error_set(err, QM_EINVAL, "media: no directory given");
  if (sodium_init() < 0) return qm_error_set(err, QM_EINTERNAL, "media: libsodium cannot initialise");
  qm_media_t *m = calloc(1, sizeof *m);
  if (!m) return qm_error_set(err, QM_ENOMEM, "media %s: out of memory", o->dir);
  int w = snprintf(m->dir, sizeof m->dir, "%s", o->dir);
  if (w < 0 || (size_t)w >= sizeof m->dir) {
    free(m);
    return qm_error_set(err, QM_EINVAL, "media %s: directory name too long", o->dir);
  }
  char tdir[PATH_MAX];
  snprintf(tdir, sizeof tdir, "%s/tmp", m->dir);
  if (make_dirs(m->dir) != 0 || make_dir(tdir, m->dir) != 0) {
    int e = errno;
    free(m);
    return qm_error_set(err, QM_EIO, "media %s: cannot create directory: %s", o->dir, strerror(e));
  }
  if (o->keys_file && *o->keys_file) {
    snprintf(m->keys_file, sizeof m->keys_file, "%s", o->keys_file);
    int rc = keys_load(m, o->keys_file, err);
    if (rc) {
      qm_media_destroy(&m);
      return rc;
    }
  }
  clean_tmp(m);
  *out = m;
  return 0;
}

void qm_media_destroy(qm_media_t **mp) {
  if (!mp || !*mp) return;
  qm_media_t *m = *mp;
  if (m->keys) sodium_free(m->keys); /* wipes before unmapping */
  free(m);
  *mp = NULL;
}

/* ---- writing an object ---- */

/* Writes plaintext as it arrives, raw or as a secretstream cut into
 * CHUNK-sized messages; `key` NULL means raw. */
typedef struct writer {
  int fd;
  const media_key_t *key;
  crypto_secretstream_xchacha20poly1305_state st;
  uint8_t *buf;  /* CHUNK bytes of pending plaintext */
  size_t used;
  uint8_t *cbuf; /* CHUNK + ABYTES */
} writer_t;

static int writer_begin(writer_t *w, int fd, const media_key_t *key) {
  memset(w, 0, sizeof *w);
  w->fd = fd;
  w->key = key;
  if (!key) return 0;
  w->buf = malloc(CHUNK);
  w->cbuf = malloc(CHUNK + ABYTES);
  if (!w->buf || !w->cbuf) {
    errno = ENOMEM;
    return -1;
  }
  uint8_t prefix[PREFIX_LEN];
  memcpy(prefix, MAGIC, 4);
  put_be32(prefix + 4, key->id);
  crypto_secretstream_xchacha20poly1305_init_push(&w->st, prefix + 8, key->key);
  return write_full(fd, prefix, sizeof prefix);
}

static int writer_flush(writer_t *w, unsigned char tag) {
  unsigned long long clen = 0;
  crypto_secretstream_xchacha20poly1305_push(&w->st, w->cbuf, &clen, w->buf, w->used, NULL, 0, tag);
  w->used = 0;
  return write_full(w->fd, w->cbuf, (size_t)clen);
}

static int writer_write(writer_t *w, const uint8_t *p, size_t n) {
  if (!w->key) return write_full(w->fd, p, n);
  while (n > 0) {
    /* A full buffer is flushed only once more data arrives, so the last
     * chunk, which carries FINAL, is never empty unless the object is. */
    if (w->used == CHUNK && writer_flush(w, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) != 0) return -1;
    size_t take = CHUNK - w->used < n ? CHUNK - w->used : n;
    memcpy(w->buf + w->used, p, take);
    w->used += take;
    p += take;
    n -= take;
  }
  return 0;
}

static int writer_finish(writer_t *w) {
  if (!w->key) return 0;
  return writer_flush(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
}

static void writer_free(writer_t *w) {
  if (w->buf) sodium_memzero(w->buf, CHUNK);
  free(w->buf);
  free(w->cbuf);
  sodium_memzero(&w->st, sizeof w->st);
  w->buf = w->cbuf = NULL;
}

/* Opens a new temporary file under DIR/tmp with a random name. */
static int tmp_create(const qm_media_t *m, char *path, size_t pathlen) {
  for (int attempt = 0; attempt < 8; attempt++) {
    uint8_t rnd[8];
    char hex[17];
    randombytes_buf(rnd, sizeof rnd);
    to_hex(rnd, sizeof rnd, hex);
    snprintf(path, pathlen, "%s/tmp/%s", m->dir, hex);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

/* Makes DIR/ab/cd exist, durably. */
static int make_object_dirs(const qm_media_t *m, const char *hex) {
  char d1[PATH_MAX], d2[PATH_MAX];
  object_dir(m, hex, 1, d1, sizeof d1);
  object_dir(m, hex, 2, d2, sizeof d2);
  if (make_dir(d1, m->dir) != 0) return -1;
  return make_dir(d2, d1);
}

/* Moves a finished, fsynced temporary file to its object name and makes the
 * rename durable. rename replaces atomically, so a reader sees the old
 * object or the new one, never a mix. */
static int tmp_commit(const qm_media_t *m, const char *tmp, const char *hex) {
  char final[PATH_MAX], d2[PATH_MAX];
  object_path(m, hex, final, sizeof final);
  object_dir(m, hex, 2, d2, sizeof d2);
  if (make_object_dirs(m, hex) != 0) return -1;
  if (rename(tmp, final) != 0) return -1;
  return fsync_dir(d2);
}

/* Streams fd (from its start) through SHA-256. */
static int hash_fd(int fd, uint8_t digest[32]) {
  uint8_t *buf = malloc(CHUNK);
  if (!buf) {
    errno = ENOMEM;
    return -1;
  }
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  int rc = 0;
  for (;;) {
    size_t got = 0;
    if (read_full(fd, buf, CHUNK, &got) != 0) {
      rc = -1;
      break;
    }
    crypto_hash_sha256_update(&hs, buf, got);
    if (got < CHUNK) break;
  }
  crypto_hash_sha256_final(&hs, digest);
  free(buf);
  return rc;
}

static int open_source(const char *path, qm_error_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return qm_error_set(err, e == ENOENT ? QM_ENOTFOUND : QM_EIO, "%s: cannot open: %s", path, strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return qm_error_set(err, QM_EINVAL, "%s: not a regular file", path);
  }
  return fd;
}

int qm_media_ref_file(const char *path, char *ref, size_t reflen, qm_error_t *err) {
  if (!path || !ref || reflen < QM_MEDIA_REF_LEN)
    return qm_error_set(err, QM_EINVAL, "media: a ref needs %d bytes", QM_MEDIA_REF_LEN);
  int fd = open_source(path, err);
  if (fd < 0) return fd;
  uint8_t digest[32];
  int rc = hash_fd(fd, digest);
  int e = errno;
  close(fd);
  if (rc != 0) return qm_error_set(err, QM_EIO, "%s: cannot read: %s", path, strerror(e));
  write_ref(digest, ref, reflen);
  return 0;
}

int qm_media_put_file(qm_media_t *m, const char *path, char *ref, size_t reflen, qm_error_t *err) {
  if (!m || !path || !ref || reflen < QM_MEDIA_REF_LEN)
    return qm_error_set(err, QM_EINVAL, "media: a ref needs %d bytes", QM_MEDIA_REF_LEN);
  int fd = open_source(path, err);
  if (fd < 0) return fd;

  /* First pass: the name. Content that is already stored costs one read
   * and no write. */
  uint8_t digest[32];
  char hex[HEX_LEN + 1], final[PATH_MAX], tmp[PATH_MAX] = "";
  if (hash_fd(fd, digest) != 0) {
    int e = errno;
    close(fd);
    return qm_error_set(err, QM_EIO, "%s: cannot read: %s", path, strerror(e));
  }
  to_hex(digest, 32, hex);
  object_path(m, hex, final, sizeof final);
  struct stat st;
  if (stat(final, &st) == 0) {
    close(fd);
    write_ref(digest, ref, reflen);
    return 0;
  }

  /* Second pass: the copy, hashed again so a file that changed in between
   * is refused instead of being stored under a name that is not its own. */
  int rc = 0;
  const char *what = "cannot write", *about = m->dir;
  writer_t w;
  memset(&w, 0, sizeof w);
  uint8_t *buf = malloc(CHUNK);
  int tfd = buf ? tmp_create(m, tmp, sizeof tmp) : -1;
  if (!buf) errno = ENOMEM;
  if (tfd < 0 || lseek(fd, 0, SEEK_SET) != 0 || writer_begin(&w, tfd, m->current) != 0) {
    rc = -1;
    goto done;
  }
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  for (;;) {
    size_t got = 0;
    if (read_full(fd, buf, CHUNK, &got) != 0) {
      what = "cannot read";
      about = path;
      rc = -1;
      goto done;
    }
    crypto_hash_sha256_update(&hs, buf, got);
    if (writer_write(&w, buf, got) != 0) {
      rc = -1;
      goto done;
    }
    if (got < CHUNK) break;
  }
  uint8_t again[32];
  crypto_hash_sha256_final(&hs, again);
  if (sodium_memcmp(again, digest, 32) != 0) {
    rc = qm_error_set(err, QM_EIO, "%s: changed while being stored; try again once it is complete", path);
    goto done;
  }
  if (writer_finish(&w) != 0 || fsync(tfd) != 0) {
    rc = -1;
    goto done;
  }
  close(tfd);
  tfd = -1;
  if (tmp_commit(m, tmp, hex) != 0) {
    rc = -1;
    goto done;
  }
  tmp[0] = '\0';
done:
  if (rc == -1) {
    int e = errno;
    rc = qm_error_set(err, QM_EIO, "media: %s %s: %s", what, about, strerror(e));
  }
  if (tfd >= 0) close(tfd);
  if (tmp[0]) unlink(tmp);
  writer_free(&w);
  if (buf) sodium_memzero(buf, CHUNK);
  free(buf);
  close(fd);
  if (rc == 0) write_ref(digest, ref, reflen);
  return rc;
}

/* ---- reading an object ---- */

/* Receives the plaintext of an object piece by piece. */
typedef int (*sink_fn)(void *ud, const uint8_t *p, size_t n);

#define STREAM_RAW_AFTER_ALL 1

/* Streams the object `hex` to sink, decrypting when it is encrypted, and
 * checks the plaintext against its name. `force_raw` reads it as plaintext
 * whatever its first bytes say. Returns 0, a negative error (err set), or
 * STREAM_RAW_AFTER_ALL when an object that looked encrypted turned out to be
 * plaintext that happens to begin with the magic: the caller resets its
 * sink and calls again with force_raw. */
static int stream_object(const qm_media_t *m, const char *ref, const char *hex, int force_raw, sink_fn sink,
                         void *ud, qm_error_t *err) {
  char path[PATH_MAX];
  object_path(m, hex, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return qm_error_set(err, QM_ENOTFOUND, "media %s: not found", ref);
    return qm_error_set(err, QM_EIO, "media %s: cannot open: %s", ref, strerror(e));
  }
  uint8_t *cbuf = malloc(CHUNK + ABYTES), *pbuf = malloc(CHUNK);
  crypto_hash_sha256_state hs;
  crypto_hash_sha256_init(&hs);
  crypto_secretstream_xchacha20poly1305_state st;
  int rc = 0, format_error = 0;
  size_t got = 0;
  if (!cbuf || !pbuf) {
    rc = qm_error_set(err, QM_ENOMEM, "media %s: out of memory", ref);
    goto out;
  }
  uint8_t prefix[PREFIX_LEN];
  if (read_full(fd, prefix, sizeof prefix, &got) != 0) goto io_error;
  if (!force_raw && got == sizeof prefix && memcmp(prefix, MAGIC, 4) == 0) {
    uint32_t id = get_be32(prefix + 4);
    const media_key_t *k = find_key(m, id);
    if (!k) {
      format_error = 1;
      if (!m->nkeys)
        rc = qm_error_set(err, QM_EIO, "media %s: encrypted with key %u but no keys file is configured", ref, id);
      else
        rc = qm_error_set(err, QM_EIO, "media %s: encrypted with key %u, which %s does not list", ref, id,
                          m->keys_file);
      goto out;
    }
    if (crypto_secretstream_xchacha20poly1305_init_pull(&st, prefix + 8, k->key) != 0) goto damaged;
    for (;;) {
      if (read_full(fd, cbuf, CHUNK + ABYTES, &got) != 0) goto io_error;
      if (got < ABYTES) goto truncated;
      unsigned long long plen = 0;
      unsigned char tag = 0;
      if (crypto_secretstream_xchacha20poly1305_pull(&st, pbuf, &plen, &tag, cbuf, got, NULL, 0) != 0)
        goto damaged;
      crypto_hash_sha256_update(&hs, pbuf, (size_t)plen);
      if ((rc = sink(ud, pbuf, (size_t)plen))) goto sink_error;
      if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
        uint8_t extra;
        if (read_full(fd, &extra, 1, &got) != 0) goto io_error;
        if (got) {
          format_error = 1;
          rc = qm_error_set(err, QM_EIO, "media %s: damaged (data after the final chunk)", ref);
          goto out;
        }
        break;
      }
      if (got < CHUNK + ABYTES) goto truncated;
    }
  } else {
    if (lseek(fd, 0, SEEK_SET) != 0) goto io_error;
    for (;;) {
      if (read_full(fd, pbuf, CHUNK, &got) != 0) goto io_error;
      crypto_hash_sha256_update(&hs, pbuf, got);
      if ((rc = sink(ud, pbuf, got))) goto sink_error;
      if (got < CHUNK) break;
    }
  }
  uint8_t digest[32];
  crypto_hash_sha256_final(&hs, digest);
  char have[HEX_LEN + 1];
  to_hex(digest, 32, have);
  if (strcmp(have, hex) != 0) {
    format_error = 1;
    rc = qm_error_set(err, QM_EIO, "media %s: damaged (content does not match its ref)", ref);
  }
  goto out;

damaged:
  format_error = 1;
  rc = qm_error_set(err, QM_EIO, "media %s: damaged or wrong key", ref);
  goto out;
truncated:
  format_error = 1;
  rc = qm_error_set(err, QM_EIO, "media %s: damaged (truncated)", ref);
  goto out;
sink_error:
  rc = qm_error_set(err, rc, "media %s: %s", ref, rc == QM_ENOMEM ? "out of memory" : strerror(errno));
  goto out;
io_error:
  rc = qm_error_set(err, QM_EIO, "media %s: cannot read: %s", ref, strerror(errno));
out:
  if (format_error && !force_raw) {
    /* Plaintext that begins with the magic is legal content. Its own hash
     * tells it apart: no encrypted object hashes to its plaintext's name. */
    uint8_t raw[32];
    char rawhex[HEX_LEN + 1];
    if (lseek(fd, 0, SEEK_SET) == 0 && hash_fd(fd, raw) == 0) {
      to_hex(raw, 32, rawhex);
      if (strcmp(rawhex, hex) == 0) rc = STREAM_RAW_AFTER_ALL;
    }
  }
  if (pbuf) sodium_memzero(pbuf, CHUNK);
  free(pbuf);
  free(cbuf);
  sodium_memzero(&st, sizeof st);
  close(fd);
  return rc;
}

typedef struct membuf {
  uint8_t *data;
  size_t len, cap;
} membuf_t;

static int membuf_sink(void *ud, const uint8_t *p, size_t n) {
  membuf_t *b = ud;
  if (n > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : CHUNK;
    while (n > cap - b->len) {
      if (cap > SIZE_MAX / 2) return QM_ENOMEM;
      cap *= 2;
    }
    uint8_t *d = realloc(b->data, cap);
    if (!d) return QM_ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int qm_media_get(qm_media_t *m, const char *ref, uint8_t **data, size_t *len, qm_error_t *err) {
  *data = NULL;
  *len = 0;
  const char *hex = ref_hex(ref);
  if (!m || !hex) return qm_error_set(err, QM_EINVAL, "media %s: not a ref (sha256:<64 hex>)", ref ? ref : "(null)");
  /* The plaintext is never larger than the object, so one allocation of the
   * object's size is enough. */
  char path[PATH_MAX];
  object_path(m, hex, path, sizeof path);
  struct stat st;
  membuf_t b = {NULL, 0, 0};
  if (stat(path, &st) == 0 && st.st_size > 0) {
    b.data = malloc((size_t)st.st_size);
    if (b.data) b.cap = (size_t)st.st_size;
  }
  int rc = stream_object(m, ref, hex, 0, membuf_sink, &b, err);
  if (rc == STREAM_RAW_AFTER_ALL) {
    b.len = 0;
    rc = stream_object(m, ref, hex, 1, membuf_sink, &b, err);
  }
  if (rc) {
    if (b.data) sodium_memzero(b.data, b.len);
    free(b.data);
    return rc;
  }
  if (!b.data) b.data = malloc(1); /* an empty object is a valid, empty buffer */
  if (!b.data) return qm_error_set(err, QM_ENOMEM, "media %s: out of memory", ref);
  *data = b.data;
  *len = b.len;
  return 0;
}

/* ---- rotation ---- */

typedef struct hexlist {
  char (*items)[HEX_LEN + 1];
  size_t n, cap;
} hexlist_t;

static int is_fan_name(const char *name) { return strlen(name) == 2 && is_lower_hex(name, 2); }

/* Lists every object name under DIR/ab/cd/; anything that is not an object
 * (tmp/, stray files) is skipped. */
static int list_objects(const qm_media_t *m, hexlist_t *out) {
  DIR *d1 = opendir(m->dir);
  if (!d1) return -1;
  struct dirent *a;
  int rc = 0;
  while (!rc && (a = readdir(d1))) {
    if (!is_fan_name(a->d_name)) continue;
    char p1[PATH_MAX];
    snprintf(p1, sizeof p1, "%s/%.2s", m->dir, a->d_name);
    DIR *d2 = opendir(p1);
    if (!d2) continue;
    struct dirent *b;
    while (!rc && (b = readdir(d2))) {
      if (!is_fan_name(b->d_name)) continue;
      char p2[PATH_MAX];
      snprintf(p2, sizeof p2, "%s/%.2s/%.2s", m->dir, a->d_name, b->d_name);
      DIR *d3 = opendir(p2);
      if (!d3) continue;
      struct dirent *c;
      while (!rc && (c = readdir(d3))) {
        const char *n = c->d_name;
        if (strlen(n) != HEX_LEN || !is_lower_hex(n, HEX_LEN) || memcmp(n, a->d_name, 2) != 0 ||
            memcmp(n + 2, b->d_name, 2) != 0)
          continue;
        if (out->n == out->cap) {
          size_t cap = out->cap ? out->cap * 2 : 256;
          void *items = realloc(out->items, cap * sizeof *out->items);
          if (!items) {
            errno = ENOMEM;
            rc = -1;
            break;
          }
          out->items = items;
          out->cap = cap;
        }
        memcpy(out->items[out->n++], n, HEX_LEN + 1);
      }
      closedir(d3);
    }
    closedir(d2);
  }
  closedir(d1);
  return rc;
}

/* Whether the object already is under the current key: its prefix says so.
 * Such objects are left as they are, which makes rotation resumable. */
static int under_current_key(const qm_media_t *m, const char *hex) {
  char path[PATH_MAX];
  object_path(m, hex, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint8_t prefix[8];
  size_t got = 0;
  int yes = read_full(fd, prefix, sizeof prefix, &got) == 0 && got == sizeof prefix &&
            memcmp(prefix, MAGIC, 4) == 0 && get_be32(prefix + 4) == m->current->id;
  close(fd);
  return yes;
}

static int writer_sink(void *ud, const uint8_t *p, size_t n) {
  return writer_write(ud, p, n) == 0 ? 0 : QM_EIO;
}

static int rotate_one(qm_media_t *m, const char *hex, qm_error_t *err) {
  char ref[QM_MEDIA_REF_LEN], tmp[PATH_MAX] = "";
  snprintf(ref, sizeof ref, "sha256:%s", hex);
  int rc = 0;
  for (int force_raw = 0; force_raw < 2; force_raw++) {
    writer_t w;
    int tfd = tmp_create(m, tmp, sizeof tmp);
    if (tfd < 0 || writer_begin(&w, tfd, m->current) != 0) {
      rc = qm_error_set(err, QM_EIO, "media %s: cannot write %s/tmp: %s", ref, m->dir, strerror(errno));
      if (tfd >= 0) writer_free(&w);
    } else {
      rc = stream_object(m, ref, hex, force_raw, writer_sink, &w, err);
      if (rc == 0 && (writer_finish(&w) != 0 || fsync(tfd) != 0))
        rc = qm_error_set(err, QM_EIO, "media %s: cannot write %s: %s", ref, tmp, strerror(errno));
      writer_free(&w);
    }
    if (tfd >= 0) close(tfd);
    if (rc == 0) {
      if (tmp_commit(m, tmp, hex) != 0)
        rc = qm_error_set(err, QM_EIO, "media %s: cannot replace: %s", ref, strerror(errno));
      else tmp[0] = '\0';
    }
    if (tmp[0]) unlink(tmp);
    tmp[0] = '\0';
    if (rc != STREAM_RAW_AFTER_ALL) break;
  }
  return rc;
}

int qm_media_rotate(qm_media_t *m, void (*progress)(void *ud, size_t done, size_t total), void *ud,
                    qm_error_t *err) {
  if (!m) return qm_error_set(err, QM_EINVAL, "media: no store");
  if (!m->current)
    return qm_error_set(err, QM_EINVAL, "media %s: nothing to rotate to: no keys file is configured", m->dir);
  hexlist_t list = {NULL, 0, 0};
  if (list_objects(m, &list) != 0) {
    int e = errno;
    free(list.items);
    return qm_error_set(err, QM_EIO, "media %s: cannot list objects: %s", m->dir, strerror(e));
  }
  size_t failed = 0, rotated = 0;
  qm_error_t first, one;
  qm_error_clear(&first);
  for (size_t i = 0; i < list.n; i++) {
    const char *hex = list.items[i];
    if (!under_current_key(m, hex)) {
      qm_error_clear(&one);
      int rc = rotate_one(m, hex, &one);
      if (rc == QM_ENOTFOUND) {
        /* Removed since it was listed: nothing to rotate. */
      } else if (rc) {
        qm_log(QM_LOG_WARN, "media.rotate_failed", "error", one.msg, NULL);
        if (!failed++) first = one;
      } else {
        rotated++;
      }
    }
    if (progress) progress(ud, i + 1, list.n);
  }
  char rotated_s[32], total_s[32], key_s[16];
  snprintf(rotated_s, sizeof rotated_s, "%zu", rotated);
  snprintf(total_s, sizeof total_s, "%zu", list.n);
  snprintf(key_s, sizeof key_s, "%u", m->current->id);
  qm_log(QM_LOG_INFO, "media.rotated", "dir", m->dir, "key", key_s, "rotated", rotated_s, "objects", total_s, NULL);
  size_t total = list.n;
  free(list.items);
  if (failed)
    return qm_error_set(err, QM_EIO, "%zu of %zu objects could not be re-encrypted (first: %s)", failed, total,
                        first.msg);
  return 0;
}
