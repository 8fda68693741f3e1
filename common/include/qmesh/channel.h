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
 */
#ifndef QMESH_CHANNEL_H
#define QMESH_CHANNEL_H

#include <qmesh/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qmesh_channel_ctx qmesh_channel_ctx_t;

/* What the core gives a started channel. Filled by the core; read-only. */
struct qmesh_channel_ctx {
  /* sizeof(qmesh_channel_ctx_t) as the core was compiled. */
  uint32_t struct_size;
  /* Submits one interaction: `json` is `len` bytes of UTF-8 JSON (not
   * necessarily NUL-terminated) describing it, a JSON object with the fields
   * of an `interaction.received` body (docs/protocol.md). Returns QMESH_OK
   * (stored durably), QMESH_BUSY (not stored: retry later) or QMESH_INVALID
   * (refused; a one-line reason is written to `reason`, NUL-terminated and
   * cut to `reasonlen` bytes, when reason is not NULL). Thread-safe. */
  int (*submit)(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                size_t reasonlen);
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
