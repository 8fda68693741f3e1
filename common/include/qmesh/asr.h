/*
 * qmesh/asr.h: speech recognizer plugins, which turn a call's audio into
 * words.
 *
 * The transcribe service hands an ASR plugin (descriptor kind QMESH_KIND_ASR)
 * the audio of one voice interaction as 16-bit signed mono PCM and gets back
 * the recognized words with their timing. Decoding runs on the core's worker
 * threads, off the service's event loop, and its result is committed together
 * with the `transcript.ready` message it produces.
 *
 * Lifecycle:
 *
 *   open(host, settings, &state)                  load the model
 *   decode(state, pcm, samples, rate, &words)     any number of times
 *   free_words(state, &words)                     after each successful decode
 *   close(state)                                  unload
 *
 * Mandatory callbacks: open, decode, free_words, close (all of them).
 *
 * Caveats
 *
 *   - Calls on one state never overlap: the core serializes them. To decode
 *     in parallel the core opens one state per worker thread, so keep shared
 *     read-only data (a model) in process-wide storage if it is large.
 *   - decode may take as long as it needs, but it must return: the core has
 *     no way to interrupt it.
 *   - qmesh_word_t is an array element and cannot grow within ABI major 1.
 *   - The core fills out->struct_size before the call; the words belong to
 *     the plugin until free_words, which must accept what decode returned,
 *     including zero words.
 */
#ifndef QMESH_ASR_H
#define QMESH_ASR_H

#include <qmesh/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One recognized word. */
typedef struct qmesh_word {
  /* The word in UTF-8, NUL-terminated; never NULL. */
  const char *text;
  /* Where it was said, in milliseconds from the start of the audio;
   * start_ms <= end_ms <= the audio's duration. */
  uint32_t start_ms;
  uint32_t end_ms;
  /* 0.0 to 1.0. */
  float confidence;
} qmesh_word_t;

/* A decode's result. The core zeroes it and sets struct_size; the plugin
 * fills the rest and frees it in free_words. */
typedef struct qmesh_words {
  uint32_t struct_size;
  /* `count` words in the order they were said; NULL when count is 0. */
  qmesh_word_t *words;
  size_t count;
} qmesh_words_t;

typedef struct qmesh_asr_ops {
  /* sizeof(qmesh_asr_ops_t) as the plugin was compiled. */
  uint32_t struct_size;
  /* Mandatory. Reads `settings`, loads the model, stores the instance in
   * *state. Returns QMESH_OK or an error after logging why. */
  int (*open)(const qmesh_host_t *host, const qmesh_settings_t *settings, void **state);
  /* Mandatory. Recognizes `samples` samples of 16-bit mono PCM at `rate` Hz
   * into `out`. Silence gives zero words and QMESH_OK. Returns QMESH_INVALID
   * for a sample rate it cannot handle, QMESH_ERR for other failures. */
  int (*decode)(void *state, const int16_t *pcm, size_t samples, int rate, qmesh_words_t *out);
  /* Mandatory. Frees what decode put in `words` and zeroes it. */
  void (*free_words)(void *state, qmesh_words_t *words);
  /* Mandatory. Frees the instance. */
  void (*close)(void *state);
} qmesh_asr_ops_t;

#ifdef __cplusplus
}
#endif

#endif
