/*
 * routes.h: the route table: which message types go to which services.
 *
 * A route file (libconfig) holds a list:
 *   routes = (
 *     { name = "voice-to-asr"; match = "interaction.received";
 *       when = { channel = ["voice"]; }; to = ["transcribe"]; },
 *     { name = "fallback"; match = "*"; default = true; to = ["reporting"]; }
 *   );
 *   extra_types = ["bench.msg"];   # optional: types beyond the built-in list
 * `match` is a glob on the type (fnmatch); `when` maps header fields to the
 * values any of which must be present (every field listed must match); a
 * message goes to the union of `to` over every matching non-default route,
 * or, when none matches, to the default routes' `to`. A table is immutable
 * once built: a reload builds a new one, fully validated, and the caller
 * swaps pointers, keeping the old table when the new one is refused.
 */
#ifndef QM_ROUTES_H
#define QM_ROUTES_H

#include <libconfig.h>
#include <stddef.h>
#include <stdio.h>

#include "envelope.h"
#include "err.h"

#define QM_ROUTE_DEST_MAX 32

typedef struct qm_routes qm_routes_t;

/* The built-in message types (docs/protocol.md), NULL-terminated. */
extern const char *const qm_known_types[];

/* Loads and validates a route file. `services` (n of them) are the names
 * that `to` may use. Errors: QM_ECONFIG with "FILE:LINE: routes.[2].to[0]:
 * unknown service \"x\" (valid: ingest, transcribe, ...)"; a `match` that
 * matches no known type is refused as unreachable. */
int qm_routes_load_file(const char *path, const char *const *services, size_t n,
                        qm_routes_t **out, qm_error_t *err);
/* The same from a string (tests). `name` stands for the file in messages. */
int qm_routes_load_string(const char *text, const char *name, const char *const *services,
                          size_t n, qm_routes_t **out, qm_error_t *err);
void qm_routes_destroy(qm_routes_t **r);

/* Destinations for a message: fills dests (names owned by the table, each
 * once, in route order) and returns their count; 0 means "no route". */
size_t qm_routes_match(const qm_routes_t *r, qm_str_t type, const qm_hdr_t *hdr, size_t nhdr,
                       const char **dests, size_t max);

/* Warnings that do not refuse a table: each known type no route takes. Calls
 * fn once per warning; returns the count. */
size_t qm_routes_warnings(const qm_routes_t *r, void (*fn)(void *ud, const char *msg), void *ud);

/* Human-readable table for `qmesh routes show`. */
void qm_routes_print(const qm_routes_t *r, FILE *out);
size_t qm_routes_count(const qm_routes_t *r);
const char *qm_routes_source(const qm_routes_t *r);

#endif
