/*
 * qmesh/plugin.h: the partner ABI every qmesh plugin is built against.
 *
 * A qmesh plugin is a shared object that the core opens with dlopen. It
 * exports exactly one symbol, the entry point, whose name carries the ABI
 * major version (`qmesh_plugin_v1` for this header). The entry point returns a
 * const descriptor (qmesh_plugin_t): the size of the descriptor as the plugin
 * was compiled, the ABI version, the kind of plugin, its name and version, the
 * settings it accepts and a pointer to its kind's table of callbacks (the
 * "ops": qmesh/channel.h, qmesh/rule.h, qmesh/asr.h).
 *
 * This header holds what the three kinds share: the version numbers, the
 * descriptor, result codes, the settings declaration, the read-only settings
 * view and the host API (logging and settings accessors) the core hands to
 * the plugin. Plugins include only the header of their kind, which includes
 * this one. docs/plugin-sdk.md walks through writing one; `qmesh plugin check
 * PATH` runs the conformance suite against a built plugin.
 *
 * A minimal plugin:
 *
 *   #include <qmesh/channel.h>
 *
 *   static const qmesh_setting_t settings[] = {
 *     {"dir", QMESH_SETTING_STRING, "/var/spool/qmesh", "directory to watch", 0},
 *     {0}
 *   };
 *   static const qmesh_channel_ops_t ops = {
 *     .struct_size = sizeof ops,
 *     .open = my_open, .start = my_start, .stop = my_stop, .close = my_close,
 *   };
 *   static const qmesh_plugin_t plugin = {
 *     .struct_size = sizeof plugin,
 *     .abi_major = QMESH_ABI_MAJOR, .abi_minor = QMESH_ABI_MINOR,
 *     .kind = QMESH_KIND_CHANNEL,
 *     .name = "channel_spool", .version = "1.0.0",
 *     .description = "reads interactions from a spool directory",
 *     .settings = settings, .ops = &ops,
 *   };
 *   QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
 *
 * Versioning promise
 *
 *   - The major version changes only when an existing field or callback
 *     changes meaning, type or position. A new major renames the entry point
 *     (`qmesh_plugin_v2`), so a qmesh refuses a plugin built for another major
 *     before it reads any of its tables, and says which major it was built for.
 *   - A minor version only adds: new fields and callbacks are appended at the
 *     end of a table, never inserted. Every table that can grow starts with
 *     `struct_size`, set by whoever fills the table to `sizeof` the table as it
 *     was compiled. A qmesh accepts a plugin whose minor is its own or older,
 *     reads only the part of a table that `struct_size` covers and treats
 *     anything past it as absent (NULL, zero). A plugin built for a newer minor
 *     than the running qmesh is refused, since it may rely on callbacks the
 *     core would never call.
 *   - The same holds in the other direction: tables the core fills for the
 *     plugin (qmesh_host_t, the kind's context and view structures) carry the
 *     core's `struct_size`, and a plugin built against an older header simply
 *     never looks past the part it knows.
 *
 * Caveats
 *
 *   - Arrays cannot grow per element. qmesh_setting_t (and the word array of
 *     qmesh/asr.h) are frozen for the whole major: a later minor that needs
 *     more per-setting information adds a separate table, it does not extend
 *     the element.
 *   - The descriptor, the settings table and the ops table must stay valid and
 *     unchanged for as long as the plugin is loaded: return pointers to static
 *     const data, not to anything built on the heap per call.
 *   - Export the entry point and nothing else. Build with
 *     `-fvisibility=hidden` and mark the entry point QMESH_EXPORT; the core
 *     opens plugins RTLD_LOCAL, so two plugins defining the same helper never
 *     clash, but a plugin that expects symbols from the qmesh binary fails to
 *     load ("undefined symbol"): everything a plugin may call in the core is
 *     reached through qmesh_host_t.
 *   - A plugin never sees the bus or the store. It gets read-only views and
 *     hands back results; the core owns delivery, retries and persistence.
 *   - Strings the core hands to a callback are valid only during that call
 *     unless the callback's documentation says otherwise; copy what you keep.
 *     Strings returned by the settings accessors are the exception: they stay
 *     valid until the plugin is closed.
 *   - A crash in a plugin takes the whole service down: there is no sandbox
 *     inside the process. `qmesh plugin check` runs every case in its own
 *     process precisely so that a crash is reported instead of hidden.
 *   - Callbacks must not call exit(), change signal dispositions, fork, or
 *     change process-wide state (locale, umask, working directory).
 *   - Settings are validated by the core against the declared table before
 *     the plugin is opened, so the accessors never fail on a declared name of
 *     the declared type. Asking for an undeclared name, or for a declared name
 *     with the accessor of another type, is a plugin bug: the core logs it and
 *     returns the zero value (NULL, 0, 0.0, false, empty list).
 */
#ifndef QMESH_PLUGIN_H
#define QMESH_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. A plugin copies these into its descriptor. */
#define QMESH_ABI_MAJOR 1
#define QMESH_ABI_MINOR 0

/* The entry point's name, as a string for dlsym; it carries the major. */
#define QMESH_PLUGIN_ENTRY "qmesh_plugin_v1"

/* Marks the entry point visible when everything else is built hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define QMESH_EXPORT __attribute__((visibility("default")))
#else
#define QMESH_EXPORT
#endif

/* printf-style checking of the host's log format, where the compiler has it. */
#if defined(__GNUC__) || defined(__clang__)
#define QMESH__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define QMESH__PRINTF(fmt, args)
#endif

/* What a plugin is; the descriptor's `kind` selects the type of `ops`. */
typedef enum qmesh_kind {
  QMESH_KIND_CHANNEL = 1, /* brings interactions in: qmesh/channel.h */
  QMESH_KIND_RULE = 2,    /* answers a form question about an interaction: qmesh/rule.h */
  QMESH_KIND_ASR = 3      /* turns audio into words: qmesh/asr.h */
} qmesh_kind_t;

/* Result codes returned by plugin callbacks and by the core's callbacks into
 * the plugin. Zero is success; everything else is negative. */
#define QMESH_OK 0           /* done */
#define QMESH_ERR -1         /* failed; the plugin should have logged why */
#define QMESH_BUSY -2        /* not now: the core is applying backpressure, retry later */
#define QMESH_INVALID -3     /* the input was refused and will be refused again */
#define QMESH_NOMEM -4       /* out of memory */
#define QMESH_UNSUPPORTED -5 /* the operation is not supported by this plugin */

/* Log levels for qmesh_host_t.log; the same scale as the core's log. */
#define QMESH_LOG_DEBUG 0
#define QMESH_LOG_INFO 1
#define QMESH_LOG_WARN 2
#define QMESH_LOG_ERROR 3

/* The type of a declared setting, and therefore of the value the core accepts
 * for it in the plugin's libconfig group. Zero is deliberately not a type, so
 * the zeroed terminator of a settings table is never mistaken for an entry. */
typedef enum qmesh_setting_type {
  QMESH_SETTING_STRING = 1,     /* key = "text"; */
  QMESH_SETTING_INT = 2,        /* key = 42;  (64-bit) */
  QMESH_SETTING_FLOAT = 3,      /* key = 0.5; (an integer is accepted too) */
  QMESH_SETTING_BOOL = 4,       /* key = true; */
  QMESH_SETTING_STRING_LIST = 5 /* key = ["a", "b"]; (an array or a list) */
} qmesh_setting_type_t;

/* One declared setting. A plugin's settings are an array of these terminated
 * by a zeroed entry ({0}); names are unique within the table and are made of
 * lower-case letters, digits and '_' (they are config keys a person types).
 *
 * `default_value` is text in the setting's type, parsed by the core when the
 * plugin loads: "42", "0.5", "true"/"false", and for a STRING_LIST the items
 * separated by commas ("json,txt"; "" is the empty list; items cannot contain
 * commas). NULL means no default: the accessors return the zero value when the
 * setting is not given. A default that does not parse refuses the plugin.
 *
 * `required` non-zero: the setting must be given in the configuration even if
 * it has a default. `help` is one line shown by `qmesh plugin check`. */
typedef struct qmesh_setting {
  const char *name;
  qmesh_setting_type_t type;
  const char *default_value;
  const char *help;
  int required;
} qmesh_setting_t;

/* The plugin's validated settings: its configuration group merged over the
 * declared defaults. Opaque and read-only; read it through qmesh_host_t. It
 * stays valid, and so do the strings the accessors return, until the plugin's
 * instance is closed. Safe to read from several threads at once. */
typedef struct qmesh_settings qmesh_settings_t;

typedef struct qmesh_host qmesh_host_t;

/* What the core offers a plugin. Passed to the kind's open/compile callback;
 * the plugin keeps the pointer for as long as it is open. All functions are
 * safe to call from any thread. */
struct qmesh_host {
  /* sizeof(qmesh_host_t) as the core was compiled; check it before using a
   * member added in a later minor than the one you build against. */
  uint32_t struct_size;
  /* The ABI the running core speaks (its minor may be newer than yours). */
  uint32_t abi_major;
  uint32_t abi_minor;

  /* Writes one structured log line attributed to this plugin, e.g.
   *   host->log(host, QMESH_LOG_WARN, "cannot open %s: %s", path, strerror(e));
   * `host` is the pointer the plugin was given, so the line names the plugin.
   * Messages longer than about 2 KiB are cut. */
  void (*log)(const qmesh_host_t *host, int level, const char *fmt, ...) QMESH__PRINTF(3, 4);

  /* Settings accessors. `name` must be declared in the plugin's table with
   * the matching type; otherwise they log the misuse and return the zero
   * value. A STRING setting with no default that was not given reads NULL. */
  const char *(*get_string)(const qmesh_settings_t *settings, const char *name);
  int64_t (*get_int)(const qmesh_settings_t *settings, const char *name);
  double (*get_float)(const qmesh_settings_t *settings, const char *name);
  /* 1 for true, 0 for false. */
  int (*get_bool)(const qmesh_settings_t *settings, const char *name);
  /* A STRING_LIST's length and its items, 0-based; an index past the end
   * reads NULL. */
  size_t (*get_list_len)(const qmesh_settings_t *settings, const char *name);
  const char *(*get_list_item)(const qmesh_settings_t *settings, const char *name, size_t i);
};

/* The descriptor the entry point returns. The first seven fields (through
 * `description`) keep their position in every ABI major, so a core can always
 * name the plugin it refuses. */
typedef struct qmesh_plugin {
  /* sizeof(qmesh_plugin_t) as the plugin was compiled. */
  uint32_t struct_size;
  /* QMESH_ABI_MAJOR and QMESH_ABI_MINOR as the plugin was compiled. */
  uint32_t abi_major;
  uint32_t abi_minor;
  /* A qmesh_kind_t. */
  uint32_t kind;
  /* Short unique name, conventionally <kind>_<what> ("channel_chat_json"):
   * letters, digits, '_', '-' and '.', at most 64 characters. It names the
   * plugin in logs, in refusals and in settings errors. */
  const char *name;
  /* The plugin's own version, free text ("1.4.2"). Required. */
  const char *version;
  /* One line for people; may be NULL. */
  const char *description;
  /* The declared settings, terminated by a zeroed entry; NULL when the plugin
   * takes none. At most 256 entries. */
  const qmesh_setting_t *settings;
  /* The kind's ops table: const qmesh_channel_ops_t *, qmesh_rule_ops_t * or
   * qmesh_asr_ops_t *. Required. */
  const void *ops;
} qmesh_plugin_t;

/* The entry point every plugin exports (under this exact name, visible):
 *
 *   QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void);
 *
 * It is called once per load, must not fail, allocate or have side effects,
 * and returns a pointer to static const data. */
typedef const qmesh_plugin_t *(*qmesh_plugin_entry_fn)(void);

/* Declared here so a plugin's definition is checked against this type and is
 * exported even if the definition forgets QMESH_EXPORT. The core never calls
 * it by name; it looks the symbol up with dlsym(QMESH_PLUGIN_ENTRY). */
QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif
