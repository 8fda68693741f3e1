/*
 * targets.c: the seven services as targets of the one binary (Loki/Mimir
 * style `-target`). Each owns its inbox, store and HTTP port; the services'
 * domain logic (handlers, tables, APIs) is registered here as it lands in
 * services/<name>/. Until then a service consumes what is routed to it and
 * counts it, so the mesh can already be deployed, routed and observed.
 */
#include "targets.h"

#include "ingest/ingest.h"

#include <stdio.h>
#include <string.h>

static const qm_service_def_t transcribe = {
  .name = "transcribe", .summary = "speech to text, speakers, call metrics, redaction"};
static const qm_service_def_t autoscore = {
  .name = "autoscore", .summary = "scores interactions against evaluation forms with rule plugins"};
static const qm_service_def_t policy = {
  .name = "policy", .summary = "review sampling, calibration, retention, real-time alerts"};
static const qm_service_def_t coaching = {
  .name = "coaching", .summary = "coaching sessions from findings, and their effect"};
static const qm_service_def_t recognition = {
  .name = "recognition", .summary = "badges, streaks, leaderboards, standout interactions"};
static const qm_service_def_t reporting = {
  .name = "reporting", .summary = "read models, the HTTP API and the web console"};

const qm_service_def_t *const qm_targets[] = {&qm_service_ingest, &transcribe, &autoscore, &policy,
                                              &coaching, &recognition, &reporting, NULL};

const qm_target_group_t qm_target_groups[] = {
  {"all", "ingest,transcribe,autoscore,policy,coaching,recognition,reporting",
   "the whole mesh in one process (inproc transport)"},
  {"scoring", "transcribe,autoscore", "the compute-heavy stages"},
  {"workflow", "policy,coaching,recognition", "what acts on scores"},
  {NULL, NULL, NULL},
};

const qm_service_def_t *qm_target_find(const char *name) {
  for (size_t i = 0; qm_targets[i]; i++)
    if (strcmp(qm_targets[i]->name, name) == 0) return qm_targets[i];
  return NULL;
}

static int add_name(const char *name, size_t n, int *want) {
  for (size_t g = 0; qm_target_groups[g].name; g++) {
    if (strlen(qm_target_groups[g].name) != n || strncmp(qm_target_groups[g].name, name, n) != 0)
      continue;
    const char *m = qm_target_groups[g].members;
    while (*m) {
      size_t len = strcspn(m, ",");
      if (add_name(m, len, want) != 0) return -1;
      m += len + (m[len] == ',');
    }
    return 0;
  }
  for (size_t i = 0; qm_targets[i]; i++) {
    if (strlen(qm_targets[i]->name) == n && strncmp(qm_targets[i]->name, name, n) == 0) {
      want[i] = 1;
      return 0;
    }
  }
  return -1;
}

int qm_targets_expand(const char *list, const qm_service_def_t **out, size_t max, char *bad,
                      size_t badlen) {
  int want[16] = {0};
  const char *p = list;
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len == 0 || add_name(p, len, want) != 0) {
      snprintf(bad, badlen, "%.*s", (int)len, p);
      return -1;
    }
    p += len + (p[len] == ',');
  }
  size_t n = 0;
  for (size_t i = 0; qm_targets[i] && n < max; i++)
    if (want[i]) out[n++] = qm_targets[i];
  return (int)n;
}
