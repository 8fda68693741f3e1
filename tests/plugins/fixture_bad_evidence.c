/*
 * fixture_bad_evidence.c: a rule plugin that loads and runs without crashing
 * but breaks the answer contract: its evidence range points past the end of
 * the text. The conformance checker must catch it.
 */
#include <qmesh/rule.h>

static int e_compile(const qmesh_host_t *h, const qmesh_settings_t *s, void **out) {
  (void)h, (void)s;
  *out = NULL;
  return QMESH_OK;
}

static int e_evaluate(const void *c, const qmesh_interaction_view_t *view, qmesh_answer_t *out) {
  (void)c;
  out->verdict = QMESH_VERDICT_PASS;
  out->confidence = 1.0;
  out->evidence_off = view->text_len;
  out->evidence_len = 10;
  return QMESH_OK;
}

static void e_free(void *c) { (void)c; }

static const qmesh_rule_ops_t ops = {
  .struct_size = sizeof ops, .compile = e_compile, .evaluate = e_evaluate, .free_compiled = e_free,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_RULE,
  .name = "fixture_bad_evidence",
  .version = "1.0.0",
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
