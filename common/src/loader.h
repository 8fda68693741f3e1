/*
 * loader.h: loads plugins through the ABI gate (common/include/qmesh/).
 *
 * A plugin is a shared object exporting `qmesh_plugin_v<MAJOR>`, a function
 * returning a const descriptor. The loader opens it RTLD_NOW|RTLD_LOCAL,
 * refuses it with a sentence naming the plugin and the reason (another ABI
 * major, a newer minor, a descriptor of the wrong size, another kind, a
 * missing mandatory callback, each named), and always closes a refused
 * plugin. Settings are validated against the plugin's declared table:
 * unknown or mistyped keys are refused with FILE:LINE and the valid keys.
 */
#ifndef QM_LOADER_H
#define QM_LOADER_H

#include <libconfig.h>
#include <stdio.h>

#include <qmesh/plugin.h>

#include "err.h"

typedef struct qm_plugin qm_plugin_t;

/* kind: QMESH_KIND_* or 0 for any. */
int qm_plugin_load(const char *path, int kind, qm_plugin_t **out, qm_error_t *err);
const qmesh_plugin_t *qm_plugin_descriptor(const qm_plugin_t *p);
const char *qm_plugin_path(const qm_plugin_t *p);
/* Validates `group` (may be NULL: all defaults) against the declared
 * settings. `file` names the config file in messages. */
int qm_plugin_validate_settings(const qm_plugin_t *p, const config_setting_t *group,
                                const char *file, qm_error_t *err);
/* The host API to hand to the plugin's open/compile callback; its log lines
 * name this plugin. Valid until qm_plugin_destroy. */
const qmesh_host_t *qm_plugin_host(const qm_plugin_t *p);
/* The settings view built by the last successful qm_plugin_validate_settings
 * (NULL before one succeeded), to hand to open/compile. A view replaced by a
 * later validation stays valid until qm_plugin_destroy, so an instance still
 * holding strings from it is safe. */
const qmesh_settings_t *qm_plugin_settings(const qm_plugin_t *p);
/* Closes the plugin; idempotent; nulls *p. */
void qm_plugin_destroy(qm_plugin_t **p);

/* Resolves a plugin name ("channel_chat_json") or path against a directory:
 * a name becomes DIR/NAME.so. */
void qm_plugin_resolve(const char *dir, const char *name_or_path, char *out, size_t outlen);

#endif
