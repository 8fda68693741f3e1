/*
 * channel_harness.h: the fake host and channel context that
 * test_channel_chat.c and test_channel_webhook.c drive their plugin with
 * (channel_harness.c, compiled into both programs).
 *
 * The plugin is loaded from the build through the real loader and settings
 * validation. The fake context records every submission, refuses documents
 * whose external_id starts with "refuse-" (as ingest refuses a bad document,
 * with a reason) and answers "busy" once told to; its watch_dir and
 * http_route record what the plugin registers, so the tests call the
 * plugin's HTTP handler directly with crafted requests. The plugin's log
 * goes into g_log, because some of what an operator learns (the line number
 * of a refused JSON Lines line) reaches them only through it. When
 * common/src/interaction.c is part of the build (QM_HAVE_INTERACTION), the
 * fake submit also runs every document through the real validator, as
 * ingest would, except those whose external_id starts with "raw-".
 */
#ifndef QMESH_TESTS_CHANNEL_HARNESS_H
#define QMESH_TESTS_CHANNEL_HARNESS_H

#include <limits.h>
#include <stddef.h>

#include <jansson.h>
#include <libconfig.h>

#include <qmesh/channel.h>

#include "loader.h"

/* The plugin a test program drives; each program defines it. */
typedef struct channel_harness {
  const char *plugin_path; /* the built .so */
  const char *name;        /* the context's channel name, and the scratch directories' */
} channel_harness_t;

extern const channel_harness_t channel_harness;

/* Everything the plugin logged since the last inst_open, one line each. */
extern char g_log[1 << 16];

typedef struct fake {
  qmesh_channel_ctx_t ctx; /* first: the ctx pointer leads back here */
  json_t *docs;            /* every accepted document, parsed */
  int busy_after;          /* answer busy once this many are accepted; -1 never */
  int refused;
  int watch_calls, route_calls;
  char watch_dir[PATH_MAX], suffixes[64], method[16], path[256];
  qmesh_http_handler_fn handler;
} fake_t;

/* One loaded plugin and its instance. */
typedef struct inst {
  qm_plugin_t *plugin;
  config_t cfg;
  qmesh_host_t host; /* the loader's host with the log captured */
  const qmesh_channel_ops_t *ops;
  void *st;
  fake_t fake;
  char dir[64]; /* scratch directory for files */
} inst_t;

void fake_init(fake_t *f);

/* Loads the plugin, validates `settings` (libconfig text) and opens it;
 * returns open's result. */
int inst_open(inst_t *in, const char *settings);

/* Closes and unloads the plugin and removes the scratch directory. */
void inst_close(inst_t *in);

/* Writes a file into the scratch directory; the path returned is valid
 * until the next call. */
const char *write_file(inst_t *in, const char *name, const char *data, size_t len);

/* Starts the plugin and posts a body to the route it registered; checks
 * that the answer is one NUL-terminated JSON object and returns the status. */
int post(inst_t *in, const char *content_type, const char *body, size_t len, char *resp, size_t cap);

static inline size_t ndocs(inst_t *in) { return json_array_size(in->fake.docs); }
static inline json_t *doc(inst_t *in, size_t i) { return json_array_get(in->fake.docs, i); }
static inline const char *field(json_t *d, const char *k) { return json_string_value(json_object_get(d, k)); }

#endif
