/*
 * qmesh/channel.h: channel plugins, the adapters that bring interactions in.
 *
 * A channel plugin (descriptor kind QMESH_KIND_CHANNEL) connects qmesh to a
 * source of contact-center interactions (a recording drop folder, a chat
 * platform's webhook, a mailbox) and submits each interaction to the ingest
 * service as one JSON document. It never talks to the bus: the core hands it a
 * context whose submit callback either accepts the document (it is then
 * durably stored before submit returns), refuses it with a reason, or answers
 * "busy" when the core is applying backpressure.
 *
 * Lifecycle, as the core drives it (one instance per configured channel):
 *
 *   open(host, settings, &state)    read settings, allocate; no I/O yet
 *   start(state, ctx)               begin producing; may submit from now on
 *   pause(state) / resume(state)    optional: stop and restart intake while
 *                                   the core's outbox is above its high-water
 *                                   mark; may be called any number of times
 *   stop(state)                     stop producing; when it returns, no
 *                                   submit is in progress and none follows
 *   close(state)                    free everything
 *
 * start, pause, resume and stop are called from the core's thread for this
 * channel, never concurrently with each other. A plugin may run its own
 * threads between start and stop and call submit from any of them.
 *
 * parse_file is the one-shot form, for importing a file and for the
 * conformance checker: it reads one file and submits what it finds, on the
 * calling thread, between open and close, without start having been called.
 *
 * Mandatory callbacks: open, start, stop, close. Optional: pause and resume
 * (set both or neither; a plugin without them is stopped and started again
 * instead), parse_file. A plugin missing a mandatory callback is refused at
 * load with every missing name listed.
 *
 * Caveats
 *
 *   - submit returning QMESH_BUSY is not an error and nothing was stored: keep
 *     the interaction and offer it again later (or stop reading from the
 *     source until resume). Never drop it.
 *   - submit returning QMESH_INVALID means the document will be refused again
 *     as it is; `reason` says why. Report it through host->log and move on.
 *   - The JSON document is copied before submit returns; the buffer is yours.
 *   - This table grows at the end in later minors (sample inputs and
 *     acknowledgement callbacks are planned); always set struct_size.
 *   - The context's services (watch_dir, http_route, add_timer,
 *     store_media) run their callbacks on the core's thread, never
 *     concurrently with start, pause, resume or stop.
 */
#ifndef QMESH_CHANNEL_H
#define QMESH_CHANNEL_H

#include <qmesh/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qmesh_channel_ctx qmesh_channel_ctx_t;

/* An HTTP request routed to a push-style plugin (see http_route). Valid only
 * during the handler call. */
typedef struct qmesh_http_request {
  uint32_t struct_size;
  const char *method;     /* "POST", ... (NUL-terminated) */
  const char *path;       /* without the query (NUL-terminated) */
  const char *query;      /* after '?', "" when none (NUL-terminated) */
  const char *body;       /* the request body, body_len bytes, not NUL-terminated */
  size_t body_len;
  const char *content_type; /* "" when absent */
} qmesh_http_request_t;

/* Answers a request: returns the HTTP status and writes a response body
 * (JSON, NUL-terminated, cut to resp_cap) into resp. Returning 503 makes the
 * core add `Retry-After`. Runs on the core's thread; submit inside it is
 * durable before the response is sent. */
typedef int (*qmesh_http_handler_fn)(void *state, const qmesh_channel_ctx_t *ctx,
                                     const qmesh_http_request_t *req, char *resp, size_t resp_cap);

/* What the core gives a started channel. Filled by the core; read-only. */
struct qmesh_channel_ctx {
  /* sizeof(qmesh_channel_ctx_t) as the core was compiled. */
  uint32_t struct_size;
  /* Submits one interaction: `json` is `len` bytes of UTF-8 JSON (not
   * necessarily NUL-terminated), one object in the interaction document
   * format of docs/protocol.md ("The interaction document"). Returns
   * QMESH_OK (accepted), QMESH_BUSY (not stored: retry later) or
   * QMESH_INVALID (refused; a one-line reason is written to `reason`,
   * NUL-terminated and cut to `reasonlen` bytes, when reason is not NULL).
   *
   * Durability: submissions are group-committed. Called on the core's thread
   * (from parse_file, an HTTP handler or a timer), an accepted interaction is
   * durable before the core acts on the outcome: before the spool file is
   * moved to done/, before the HTTP response is sent, after the timer
   * callback returns. Called from a thread of the plugin's own, submit
   * returns only once the interaction is durable. Re-submitting the same
   * interaction (same channel, tenant and external_id, same content) is
   * accepted and stores nothing new. Thread-safe. */
  int (*submit)(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                size_t reasonlen);

  /* The services below are for start() (not parse_file); each returns
   * QMESH_OK, QMESH_INVALID (bad arguments, logged) or QMESH_UNSUPPORTED
   * (this core runs the plugin without them, e.g. `qmesh channel parse`).
   * What they set up ends at stop(). */

  /* Pull style: the core watches the spool directory `dir` (creating it and
   * its done/ and failed/ subdirectories) and calls parse_file for every
   * regular file there whose name ends with one of `suffixes` (comma list,
   * e.g. ".json,.jsonl"; NULL or "" for any). A file moves to done/ only
   * after everything it submitted has committed; to failed/, with a
   * FILE.reason beside it, when parse_file fails or refuses a document
   * (documents of the same file accepted before the refusal stay stored). A
   * file the core crashed in the middle of is parsed again after restart:
   * what it had submitted is recognised and not stored twice. Files are
   * taken in name order, one at a time, and not while paused. */
  int (*watch_dir)(const qmesh_channel_ctx_t *ctx, const char *dir, const char *suffixes);

  /* Push style: routes `method` requests for `path` (an exact path such as
   * "/v1/interactions") on ingest's HTTP listener to fn. While the core is
   * applying backpressure it answers 503 with Retry-After itself. */
  int (*http_route)(const qmesh_channel_ctx_t *ctx, const char *method, const char *path,
                    qmesh_http_handler_fn fn);

  /* Calls fn(state, ctx) every `every_ms` milliseconds on the core's thread
   * (at most 16 timers per channel). */
  int (*add_timer)(const qmesh_channel_ctx_t *ctx, uint32_t every_ms,
                   void (*fn)(void *state, const qmesh_channel_ctx_t *ctx));

  /* Copies the file at `path` into ingest's content-addressed media store
   * (named by its SHA-256, encrypted at rest when configured) and writes its
   * reference, "sha256:<64 hex>", into ref (at least 72 bytes). Storing the
   * same content twice stores it once. Available in parse_file too; under
   * `qmesh channel parse` it computes the reference without storing. */
  int (*store_media)(const qmesh_channel_ctx_t *ctx, const char *path, char *ref, size_t reflen);

  /* The channel instance's name from the configuration ("chat", "email"). */
  const char *name;
};

typedef struct qmesh_channel_ops {
  /* sizeof(qmesh_channel_ops_t) as the plugin was compiled. */
  uint32_t struct_size;
  /* Mandatory. Reads `settings`, allocates the instance and stores it in
   * *state (which may stay NULL if the plugin needs none). Keeps `host` for
   * logging. Returns QMESH_OK or an error after logging why. */
  int (*open)(const qmesh_host_t *host, const qmesh_settings_t *settings, void **state);
  /* Mandatory. Starts intake; `ctx` stays valid until stop returns. */
  int (*start)(void *state, const qmesh_channel_ctx_t *ctx);
  /* Optional, with resume. Stops taking new input without losing any. */
  int (*pause)(void *state);
  /* Optional, with pause. Takes input again. */
  int (*resume)(void *state);
  /* Mandatory. Stops intake; after it returns no submit runs or follows. */
  int (*stop)(void *state);
  /* Mandatory. Frees the instance. Called after stop, or after open when
   * start was never called; never fails. */
  void (*close)(void *state);
  /* Optional. Reads the file at `path` and submits each interaction in it
   * through `ctx`, on the calling thread, then returns QMESH_OK, or an error
   * (after logging why) when the file cannot be read or parsed. */
  int (*parse_file)(void *state, const char *path, const qmesh_channel_ctx_t *ctx);
} qmesh_channel_ops_t;

#ifdef __cplusplus
}
#endif

#endif
