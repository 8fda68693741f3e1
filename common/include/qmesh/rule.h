/*
 * qmesh/rule.h: rule plugins, which answer one form question about one
 * interaction.
 *
 * An evaluation form (a file under configs/forms/) asks questions such as "did the
 * agent greet the customer?". A question can name a rule plugin and give it
 * settings; autoscore compiles the rule once per form version and then
 * evaluates it against every interaction the form applies to. The plugin sees
 * a read-only view of the interaction (its text: the chat or e-mail body, or
 * the transcript of a call) and fills in an answer: a verdict, a confidence,
 * and where in the text the evidence is. It never sees the bus or the store.
 *
 * Lifecycle:
 *
 *   compile(host, settings, &compiled)   once per form version: parse the
 *                                        settings, build whatever is costly
 *   evaluate(compiled, view, &answer)    any number of times, from any number
 *                                        of threads at once
 *   free_compiled(compiled)              when the form version is retired
 *
 * Mandatory callbacks: compile, evaluate, free_compiled (all of them).
 *
 * Caveats
 *
 *   - evaluate runs concurrently on the same `compiled` from several worker
 *     threads: treat it as read-only after compile returns, or lock.
 *   - evaluate must be deterministic: the same view and settings give the same
 *     answer, because a retried evaluation must not change a score.
 *   - The view's strings are valid only during the call. Evidence is given as
 *     a byte range of view->text, never as a pointer, so the plugin allocates
 *     nothing per answer and the core copies what it keeps.
 *   - The core fills answer->struct_size with the size of the answer it
 *     allocated; write no member that lies past it.
 */
#ifndef QMESH_RULE_H
#define QMESH_RULE_H

#include <qmesh/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The interaction as a rule sees it. Filled by the core; read-only. */
typedef struct qmesh_interaction_view {
  /* sizeof(qmesh_interaction_view_t) as the core was compiled. */
  uint32_t struct_size;
  /* The interaction's id, as text; never NULL (may be empty). */
  const char *id;
  /* The channel it came from ("voice", "chat", "email", ...); never NULL. */
  const char *channel;
  /* Its text in UTF-8, `text_len` bytes, NUL-terminated for convenience;
   * never NULL (empty when there is nothing to read). */
  const char *text;
  size_t text_len;
} qmesh_interaction_view_t;

/* A verdict. Zero is "does not apply", so an answer left untouched claims
 * nothing. */
#define QMESH_VERDICT_NA 0   /* the question does not apply to this interaction */
#define QMESH_VERDICT_PASS 1 /* the behaviour was observed */
#define QMESH_VERDICT_FAIL 2 /* the behaviour was looked for and not observed */

/* What a rule answers. The core zeroes it and sets struct_size before the
 * call; the plugin fills the rest. */
typedef struct qmesh_answer {
  uint32_t struct_size;
  /* A QMESH_VERDICT_* value. */
  int verdict;
  /* How sure the rule is, from 0.0 to 1.0. */
  double confidence;
  /* The evidence: `evidence_len` bytes of view->text starting at byte
   * `evidence_off`; both zero when there is none. Must lie within the text. */
  size_t evidence_off;
  size_t evidence_len;
} qmesh_answer_t;

typedef struct qmesh_rule_ops {
  /* sizeof(qmesh_rule_ops_t) as the plugin was compiled. */
  uint32_t struct_size;
  /* Mandatory. Builds the rule from `settings` into *compiled. Keeps `host`
   * if it wants to log later. Returns QMESH_OK, or QMESH_INVALID / QMESH_ERR
   * after logging why. */
  int (*compile)(const qmesh_host_t *host, const qmesh_settings_t *settings, void **compiled);
  /* Mandatory. Answers the question for `view` into `out`. Returns QMESH_OK,
   * or an error when no answer can be given (the core then records the
   * question as not scored, with the error). Thread-safe on one compiled. */
  int (*evaluate)(const void *compiled, const qmesh_interaction_view_t *view, qmesh_answer_t *out);
  /* Mandatory. Frees what compile built; `compiled` may be NULL. */
  void (*free_compiled)(void *compiled);
} qmesh_rule_ops_t;

#ifdef __cplusplus
}
#endif

#endif
