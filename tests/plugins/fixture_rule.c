/*
 * fixture_rule.c: a well-formed rule plugin. It passes an interaction whose
 * text contains `phrase` (with that phrase as evidence), fails one that does
 * not, and says "does not apply" to an empty text. Loaded as a channel it is
 * the fixture for the wrong-kind refusal.
 */
#include <stdlib.h>
#include <string.h>

#include <qmesh/rule.h>

typedef struct compiled {
  char *phrase;
} compiled_t;

static int r_compile(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  const char *phrase = host->get_string(settings, "phrase");
  compiled_t *c = calloc(1, sizeof *c);
  if (!c) return QMESH_NOMEM;
  c->phrase = strdup(phrase ? phrase : "");
  if (!c->phrase) {
    free(c);
    return QMESH_NOMEM;
  }
  *out = c;
  return QMESH_OK;
}

static int r_evaluate(const void *compiled, const qmesh_interaction_view_t *view, qmesh_answer_t *out) {
  const compiled_t *c = compiled;
  if (view->text_len == 0 || !*c->phrase) {
    out->verdict = QMESH_VERDICT_NA;
    return QMESH_OK;
  }
  const char *hit = strstr(view->text, c->phrase);
  out->verdict = hit ? QMESH_VERDICT_PASS : QMESH_VERDICT_FAIL;
  out->confidence = 1.0;
  if (hit) {
    out->evidence_off = (size_t)(hit - view->text);
    out->evidence_len = strlen(c->phrase);
  }
  return QMESH_OK;
}

static void r_free(void *compiled) {
  compiled_t *c = compiled;
  if (c) free(c->phrase);
  free(c);
}

static const qmesh_setting_t settings[] = {
  {"phrase", QMESH_SETTING_STRING, "thank you", "the phrase the agent must say", 0},
  {0},
};

static const qmesh_rule_ops_t ops = {
  .struct_size = sizeof ops,
  .compile = r_compile,
  .evaluate = r_evaluate,
  .free_compiled = r_free,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_RULE,
  .name = "fixture_rule",
  .version = "0.3.1",
  .description = "passes when the text contains a phrase",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
