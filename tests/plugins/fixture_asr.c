/*
 * fixture_asr.c: a well-formed speech recognizer. It "recognizes" one word
 * per second of audio that is not silent (any sample louder than
 * `threshold`), so silence gives zero words as the ABI requires.
 */
#include <stdlib.h>
#include <string.h>

#include <qmesh/asr.h>

typedef struct state {
  int threshold;
} state_t;

static int a_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  state_t *s = calloc(1, sizeof *s);
  if (!s) return QMESH_NOMEM;
  s->threshold = (int)host->get_int(settings, "threshold");
  *out = s;
  return QMESH_OK;
}

static int a_decode(void *state, const int16_t *pcm, size_t samples, int rate, qmesh_words_t *out) {
  state_t *s = state;
  if (rate < 8000 || rate > 48000) return QMESH_INVALID;
  size_t seconds = samples / (size_t)rate, n = 0;
  out->words = seconds ? calloc(seconds, sizeof *out->words) : NULL;
  if (seconds && !out->words) return QMESH_NOMEM;
  for (size_t sec = 0; sec < seconds; sec++) {
    int loud = 0;
    for (size_t i = sec * (size_t)rate; i < (sec + 1) * (size_t)rate && !loud; i++)
      loud = abs(pcm[i]) > s->threshold;
    if (!loud) continue;
    out->words[n].text = "speech";
    out->words[n].start_ms = (uint32_t)(sec * 1000);
    out->words[n].end_ms = (uint32_t)(sec * 1000 + 1000);
    out->words[n].confidence = 0.9f;
    n++;
  }
  out->count = n;
  if (!n) {
    free(out->words);
    out->words = NULL;
  }
  return QMESH_OK;
}

static void a_free_words(void *state, qmesh_words_t *words) {
  (void)state;
  free(words->words);
  words->words = NULL;
  words->count = 0;
}

static void a_close(void *state) { free(state); }

static const qmesh_setting_t settings[] = {
  {"threshold", QMESH_SETTING_INT, "500", "sample amplitude above which audio counts as speech", 0},
  {0},
};

static const qmesh_asr_ops_t ops = {
  .struct_size = sizeof ops,
  .open = a_open,
  .decode = a_decode,
  .free_words = a_free_words,
  .close = a_close,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_ASR,
  .name = "fixture_asr",
  .version = "2.0.0",
  .description = "one word per loud second",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
