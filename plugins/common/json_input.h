/*
 * json_input.h: reading hostile JSON input safely, shared by the plugins that
 * take interaction documents or partners' JSON (channel_chat_json,
 * channel_webhook).
 *
 * Each plugin is built as a partner builds one, against the partner headers
 * in common/include only and never linked with qmesh_common; json_input.c is
 * compiled into each plugin's shared object instead, and its functions are
 * hidden so that the entry point stays the only exported symbol.
 *
 * What it covers: size limits before anything is read whole or parsed, the
 * nesting-depth scan that runs before jansson recurses, JSON Lines
 * splitting, the `max_*_kb` settings, the HTTP route registration, and the
 * JSON answers of an HTTP handler with their escaping.
 *
 * Caveats: every message these functions write (the `why` of a refusal, the
 * HTTP answers, the log lines) is part of what partners and tests see; keep
 * them byte for byte.
 */
#ifndef QMESH_PLUGINS_JSON_INPUT_H
#define QMESH_PLUGINS_JSON_INPUT_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include <qmesh/channel.h>

#define QMP_HIDDEN __attribute__((visibility("hidden")))

/* Deepest nesting of arrays and objects a document may have. Interaction
 * documents need four or five levels; 64 leaves room for partners'
 * attributes while keeping every recursive walk over the value shallow. */
#define QMP_MAX_DEPTH 64

/* Bounds on the size settings, so that a typo cannot ask for a terabyte. */
#define QMP_MAX_KB (1024 * 1024)

/* Whether the core's context has the member `member` (a context from an
 * older core is shorter) and sets it. */
#define QMP_CTX_HAS(ctx, member)                                                                                \
  ((ctx)->struct_size >= offsetof(qmesh_channel_ctx_t, member) + sizeof((ctx)->member) && (ctx)->member)

/* What qmp_read_capped returns besides 0 and QMESH_NOMEM. */
#define QMP_READ_ERROR 1 /* the stream failed; errno says why */
#define QMP_TOO_LARGE 2  /* more than `max` bytes */

/* ---- safe JSON reading ---- */

/* Whether p[0..n) holds only white space. */
QMP_HIDDEN int qmp_is_blank(const char *p, size_t n);

/* Parses one JSON value, refusing nesting deeper than `depth_limit` (by a
 * scan before the parser runs) and duplicate keys: which one would win is
 * not obvious to the person who wrote the document. NULL with `why` filled
 * on refusal. */
QMP_HIDDEN json_t *qmp_load_json(const char *p, size_t n, int depth_limit, char *why, size_t whylen);

/* Parses a whole body holding one value or an array of values (allowed one
 * level more, as the array holds the documents). NULL with `why` filled on
 * refusal, "empty body" when it holds nothing but white space. */
QMP_HIDDEN json_t *qmp_load_body(const char *body, size_t len, char *why, size_t whylen);

/* Steps past a UTF-8 byte-order mark at *p, if there is one. */
QMP_HIDDEN void qmp_skip_bom(char **p, size_t *n);

/* The next line of JSON Lines in body[*off..len), without its "\n" or
 * "\r\n"; advances *off. Returns 1 for a line (blank ones included, so that
 * callers can count lines), 0 at the end. */
QMP_HIDDEN int qmp_next_line(const char *body, size_t len, size_t *off, const char **line, size_t *n);

/* Whether a file is JSON Lines by its name (.jsonl, .ndjson). */
QMP_HIDDEN int qmp_is_jsonl_path(const char *path);

/* Whether an HTTP Content-Type names JSON Lines. */
QMP_HIDDEN int qmp_is_ndjson(const char *content_type);

/* Reads the rest of f into a new buffer, at most `max` bytes: one byte more
 * is read to tell an oversized file from one exactly at the limit without
 * reading the rest. Returns 0 with *out (the caller frees it) and *n,
 * QMESH_NOMEM, QMP_READ_ERROR or QMP_TOO_LARGE with *out NULL. */
QMP_HIDDEN int qmp_read_capped(FILE *f, size_t max, char **out, size_t *n);

/* ---- submitting ---- */

/* Serialises a completed document and submits it, unless it is longer than
 * `max_doc` bytes. Returns a QMESH_* code; on QMESH_INVALID, QMESH_NOMEM
 * and refusals `why` says why. The document stays the caller's. */
QMP_HIDDEN int qmp_submit_json(const qmesh_channel_ctx_t *ctx, json_t *doc, size_t max_doc, char *why,
                               size_t whylen);

/* ---- settings and start ---- */

/* Reads a size setting in KiB (1 to QMP_MAX_KB) into bytes; -1, logged, when
 * out of range. */
QMP_HIDDEN int qmp_kb_setting(const qmesh_host_t *host, const qmesh_settings_t *settings, const char *name,
                              size_t *out);

/* Registers `fn` for POST `path` on ingest's listener. A core without an
 * HTTP listener for channels is logged and tolerated. Returns QMESH_OK or
 * QMESH_ERR. */
QMP_HIDDEN int qmp_route_http(const qmesh_host_t *host, const qmesh_channel_ctx_t *ctx, const char *path,
                              qmesh_http_handler_fn fn);

/* ---- HTTP answers ---- */

/* Writes `{"error":"<msg>"}` or `{"error":"<msg>","index":N}` (index >= 0)
 * into resp, escaping the message and cutting it (never the JSON around it)
 * to fit. Bytes that are not UTF-8 become '?', so the answer is always
 * valid JSON. */
QMP_HIDDEN void qmp_put_error(char *resp, size_t cap, const char *msg, long index);

/* `{"accepted":N}`, 202. */
QMP_HIDDEN int qmp_reply_accepted(char *resp, size_t cap, size_t n);

/* `{"error":"busy"}`, 503. */
QMP_HIDDEN int qmp_reply_busy(char *resp, size_t cap);

/* The answer for the document at `index` that was not accepted with `rc`:
 * 503 for busy, 400 with `why` for a refusal, 500 otherwise. */
QMP_HIDDEN int qmp_reply_refused(char *resp, size_t cap, int rc, const char *why, size_t index);

/* What every POST handler checks before reading the body: the method (405),
 * a paused plugin (503), the body size against `max_body` (413). Returns 0
 * to go on, or the status with the answer written. */
QMP_HIDDEN int qmp_http_precheck(const qmesh_http_request_t *req, int paused, size_t max_body, char *resp,
                                 size_t cap);

#endif
