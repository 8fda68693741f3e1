/*
 * media.h: ingest's content-addressed media store (recordings and other
 * binary content that channel plugins hand over through store_media).
 *
 * An object is named by the SHA-256 of its plaintext, so storing the same
 * recording twice stores it once and a reference ("sha256:<64 hex>") means
 * the same bytes wherever it travels. Objects live at DIR/ab/cd/<64 hex>
 * (two levels of fan-out on the first four hex digits, so no directory holds
 * more than a few thousand entries even with millions of recordings).
 *
 * Writes are crash-safe: an object is written to DIR/tmp/, fsynced, renamed
 * into place and its directory fsynced, so after a crash an object is either
 * there whole or not there at all. A leftover temporary file is never seen
 * as an object; qm_media_open removes the stale ones.
 *
 * With a keys file the store encrypts at rest: each object is a
 * libsodium secretstream (XChaCha20-Poly1305) in 64 KiB chunks,
 *
 *   "QMM1" | key id (4 bytes, big-endian) | stream header (24 bytes) |
 *   chunk ... | final chunk
 *
 * where every chunk but the last holds exactly 64 KiB of plaintext and the
 * last one carries the FINAL tag, so truncation and reordering are detected.
 * The keys file is libconfig:
 *
 *   keys = ( { id = 1; key = "<64 hex>"; },
 *            { id = 2; key = "<64 hex>"; current = true; } );
 *
 * The current key encrypts new objects; every listed key decrypts, so old
 * keys stay listed until qm_media_rotate has re-encrypted what they
 * protect. Without a keys file objects are stored as they are. The format of
 * each object is told by its magic, so a store moves from plaintext to
 * encrypted (or from one key to the next) with qm_media_rotate.
 *
 * Reading an object always checks its content against its name: a damaged,
 * truncated or swapped object is an error naming the ref, never a crash and
 * never wrong bytes.
 *
 * All functions are safe to call from several threads on one store.
 */
#ifndef QM_MEDIA_H
#define QM_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* "sha256:" + 64 hex digits + NUL. */
#define QM_MEDIA_REF_LEN 72

typedef struct qm_media qm_media_t;

typedef struct qm_media_opts {
  const char *dir;       /* the store's directory, e.g. DATA_DIR/ingest/media; created */
  const char *keys_file; /* NULL or "": no encryption at rest */
} qm_media_opts_t;

/* Opens (creating) the store and loads the keys file. A malformed keys file
 * is QM_ECONFIG with one line: "keys.cfg:3: keys.[1].key: must be 64 hex
 * digits". */
int qm_media_open(qm_media_t **out, const qm_media_opts_t *o, qm_error_t *err);
/* Closes the store and wipes the keys from memory; idempotent; nulls *m. */
void qm_media_destroy(qm_media_t **m);

/* Copies the regular file at `path` into the store and writes its ref into
 * `ref` (at least QM_MEDIA_REF_LEN bytes). Storing content that is already
 * there rewrites nothing and returns the same ref. A file that changes while
 * it is being copied is refused (QM_EIO) rather than stored under the wrong
 * name. */
int qm_media_put_file(qm_media_t *m, const char *path, char *ref, size_t reflen, qm_error_t *err);

/* Computes the ref of the file at `path` without storing anything. */
int qm_media_ref_file(const char *path, char *ref, size_t reflen, qm_error_t *err);

/* Reads the object `ref` back, decrypted and verified against its name,
 * into a malloc'd buffer (*data, *len; free it). QM_EINVAL for a malformed
 * ref, QM_ENOTFOUND when absent, QM_EIO with "media REF: damaged or wrong
 * key" (or a more precise reason) when the object cannot be trusted. */
int qm_media_get(qm_media_t *m, const char *ref, uint8_t **data, size_t *len, qm_error_t *err);

/* Re-encrypts every object that is not already under the current key
 * (plaintext objects included), one at a time, each replaced atomically, so
 * an interrupted rotation is simply run again. `progress` (may be NULL) is
 * called after each object with the number done and the total. Objects that
 * cannot be read are skipped and counted; the call then returns QM_EIO
 * naming the first of them, having rotated all the others. Needs a keys
 * file (QM_EINVAL otherwise). */
int qm_media_rotate(qm_media_t *m, void (*progress)(void *ud, size_t done, size_t total), void *ud,
                    qm_error_t *err);

#endif
