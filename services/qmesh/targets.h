/*
 * targets.h: the registry of services the qmesh binary can run (`--target`),
 * and the group names that stand for several of them.
 */
#ifndef QM_TARGETS_H
#define QM_TARGETS_H

#include <stddef.h>

#include "service.h"

extern const qm_service_def_t *const qm_targets[];

typedef struct qm_target_group {
  const char *name;
  const char *members; /* comma list */
  const char *summary;
} qm_target_group_t;

extern const qm_target_group_t qm_target_groups[];

const qm_service_def_t *qm_target_find(const char *name);

/* Expands a comma list of targets and groups into service definitions, each
 * once, in flow order. Returns the count, or -1 with the unknown name in
 * *bad. */
int qm_targets_expand(const char *list, const qm_service_def_t **out, size_t max, char *bad,
                      size_t badlen);

#endif
