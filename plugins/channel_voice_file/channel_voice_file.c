/*
 * channel_voice_file.c: brings call recordings in from files, one JSON
 * sidecar per recording.
 *
 * A recorder drops `call-0001.wav` (or .flac, or anything libsndfile reads)
 * and then `call-0001.json`, the sidecar: the interaction document's fields
 * (docs/protocol.md section 9) without `media`, plus
 *
 *   "audio": "call-0001.wav"                          the recording, relative
 *                                                     to the sidecar's folder;
 *                                                     default: same base name
 *                                                     with .wav, then .flac
 *   "layout": {"agent": "left", "customer": "right"}  who is on which channel
 *                                                     of a stereo recording
 *   "transcript": [ {speaker, ts_ms, text}, ... ]     the recorder's own
 *                                                     transcript, if any
 *
 * The spool is watched for ".json" only, so the sidecar is the trigger and
 * the recording must be complete when it appears. For each sidecar the
 * plugin opens the recording with libsndfile to learn its format, rate,
 * channels and length (refusing what is not audio, more than two channels,
 * a stereo call with no layout, a call longer than max_duration_s), hands
 * the file to the core's media store (ctx->store_media) and submits the
 * document with `media` = {ref, format, sample_rate, channels, duration_ms,
 * layout[, transcript]}. `ended_at` and `duration_ms` come from the audio
 * when the sidecar does not give them.
 *
 * Every refusal is one line through host->log naming the file and the
 * field, and parse_file returns QMESH_INVALID (the input will be refused
 * again as it is) or QMESH_ERR (it could not be read at all).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <sndfile.h>

#include <qmesh/channel.h>

#define REASON_MAX 512

/* Which side each speaker is on in a stereo recording; 0 = left, 1 = right. */
typedef struct layout {
  int set;
  int agent, customer;
} layout_t;

typedef struct voice {
  const qmesh_host_t *host;
  const char *spool_dir;     /* settings strings stay valid until close */
  const char *tenant;
  const char *default_queue;
  layout_t default_layout;
  int64_t max_duration_s;
} voice_t;

static const char *const sides[] = {"left", "right"};

/* ---- settings ---- */

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
  return s;
}

/* Parses "agent=left,customer=right"; "" means no default. */
static int parse_layout_setting(const char *text, layout_t *out) {
  memset(out, 0, sizeof *out);
  if (!text) return 0;
  char buf[256];
  if (strlen(text) >= sizeof buf) return -1;
  strcpy(buf, text);
  char *t = trim(buf);
  if (!*t) return 0;
  int agent = -1, customer = -1;
  char *save = NULL;
  for (char *part = strtok_r(t, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(part, '=');
    if (!eq) return -1;
    *eq = '\0';
    char *who = trim(part), *side = trim(eq + 1);
    int v = strcmp(side, "left") == 0 ? 0 : strcmp(side, "right") == 0 ? 1 : -1;
    if (v < 0) return -1;
    if (strcmp(who, "agent") == 0 && agent < 0) agent = v;
    else if (strcmp(who, "customer") == 0 && customer < 0) customer = v;
    else return -1;
  }
  if (agent < 0 || customer < 0 || agent == customer) return -1;
  out->set = 1;
  out->agent = agent;
  out->customer = customer;
  return 0;
}

static int v_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **state) {
  voice_t *v = calloc(1, sizeof *v);
  if (!v) return QMESH_NOMEM;
  v->host = host;
  v->spool_dir = host->get_string(settings, "spool_dir");
  v->tenant = host->get_string(settings, "tenant");
  v->default_queue = host->get_string(settings, "default_queue");
  v->max_duration_s = host->get_int(settings, "max_duration_s");
  const char *dl = host->get_string(settings, "default_layout");
  if (parse_layout_setting(dl, &v->default_layout) != 0) {
    host->log(host, QMESH_LOG_ERROR,
              "default_layout: cannot read \"%s\" (valid: agent=left,customer=right; agent=right,customer=left; "
              "or empty for none)",
              dl);
    free(v);
    return QMESH_INVALID;
  }
  if (v->max_duration_s < 1) {
    host->log(host, QMESH_LOG_ERROR, "max_duration_s: must be at least 1 (got %" PRId64 ")", v->max_duration_s);
    free(v);
    return QMESH_INVALID;
  }
  if (v->spool_dir && !*v->spool_dir) v->spool_dir = NULL;
  if (v->tenant && !*v->tenant) v->tenant = NULL;
  if (v->default_queue && !*v->default_queue) v->default_queue = NULL;
  *state = v;
  return QMESH_OK;
}

/* Whether the core's context has a member (it may be older than this
 * header). */
#define CTX_HAS(ctx, member) \
  ((ctx)->struct_size >= offsetof(qmesh_channel_ctx_t, member) + sizeof((ctx)->member) && (ctx)->member)

static int v_start(void *state, const qmesh_channel_ctx_t *ctx) {
  voice_t *v = state;
  if (!v->spool_dir) return QMESH_OK; /* import-only: parse_file does the work */
  if (!CTX_HAS(ctx, watch_dir)) {
    v->host->log(v->host, QMESH_LOG_ERROR, "spool_dir %s: this qmesh cannot watch directories for plugins",
                 v->spool_dir);
    return QMESH_UNSUPPORTED;
  }
  int rc = ctx->watch_dir(ctx, v->spool_dir, ".json");
  if (rc != QMESH_OK) v->host->log(v->host, QMESH_LOG_ERROR, "spool_dir %s: cannot watch it (%d)", v->spool_dir, rc);
  return rc;
}

static int v_stop(void *state) {
  (void)state;
  return QMESH_OK;
}

static void v_close(void *state) { free(state); }

/* ---- time ---- */

/* Parses RFC 3339 ("2026-11-20T14:03:11Z", fractions and offsets allowed)
 * into milliseconds since the epoch. */
static int parse_rfc3339(const char *s, int64_t *ms) {
  int y, mo, d, h, mi, sec, n = 0;
  if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19) return -1;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
  const char *p = s + n;
  int64_t frac = 0;
  if (*p == '.') {
    int digits = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, digits++)
      if (digits < 3) frac = frac * 10 + (*p - '0');
    if (!digits) return -1;
    for (; digits < 3; digits++) frac *= 10;
  }
  int64_t offset_s = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, k = 0;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5) return -1;
    offset_s = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
    p += 6;
  } else {
    return -1;
  }
  if (*p) return -1;
  struct tm tm = {0};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  time_t t = timegm(&tm);
  *ms = ((int64_t)t - offset_s) * 1000 + frac;
  return 0;
}

static void format_rfc3339(int64_t ms, char *out, size_t outlen) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
  if (ms % 1000) snprintf(out + n, outlen - n, ".%03dZ", (int)(ms % 1000));
  else snprintf(out + n, outlen - n, "Z");
}

/* ---- the sidecar ---- */

/* Reads the sidecar's layout object. */
static int read_layout(const json_t *j, layout_t *out, char *why, size_t whylen) {
  if (!json_is_object(j)) {
    snprintf(why, whylen, "layout: must be an object such as {\"agent\": \"left\", \"customer\": \"right\"}");
    return -1;
  }
  int got[2] = {-1, -1};
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)j, key, val) {
    int who = strcmp(key, "agent") == 0 ? 0 : strcmp(key, "customer") == 0 ? 1 : -1;
    if (who < 0) {
      snprintf(why, whylen, "layout.%.64s: unknown speaker (valid: agent, customer)", key);
      return -1;
    }
    const char *side = json_string_value(val);
    got[who] = !side ? -1 : strcmp(side, "left") == 0 ? 0 : strcmp(side, "right") == 0 ? 1 : -1;
    if (got[who] < 0) {
      snprintf(why, whylen, "layout.%s: must be left or right", key);
      return -1;
    }
  }
  if (got[0] < 0 || got[1] < 0) {
    snprintf(why, whylen, "layout: must place both agent and customer");
    return -1;
  }
  if (got[0] == got[1]) {
    snprintf(why, whylen, "layout: agent and customer must be on different channels");
    return -1;
  }
  out->set = 1;
  out->agent = got[0];
  out->customer = got[1];
  return 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The folder part of a path, "." when there is none. */
static void dir_of(const char *path, char *out, size_t outlen) {
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(out, outlen, ".");
  else if (slash == path) snprintf(out, outlen, "/");
  else snprintf(out, outlen, "%.*s", (int)(slash - path), path);
}

/* A sidecar may name its recording only inside its own folder: a dropped
 * file must not make ingest read arbitrary files of the host. */
static int audio_name_ok(const char *name) {
  if (!*name || name[0] == '/') return 0;
  for (const char *p = name; *p;) {
    size_t n = strcspn(p, "/");
    if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
    p += n;
    if (*p == '/') p++;
  }
  return 1;
}

/* A short format name for a libsndfile major format. */
static void format_name(int format, char *out, size_t outlen) {
  int major = format & SF_FORMAT_TYPEMASK;
  const char *name = NULL;
  switch (major) {
  case SF_FORMAT_WAV:
  case SF_FORMAT_WAVEX: name = "wav"; break;
  case SF_FORMAT_FLAC: name = "flac"; break;
  case SF_FORMAT_OGG: name = "ogg"; break;
  case SF_FORMAT_AIFF: name = "aiff"; break;
  case SF_FORMAT_AU: name = "au"; break;
  case SF_FORMAT_W64: name = "w64"; break;
  case SF_FORMAT_RF64: name = "rf64"; break;
  case SF_FORMAT_CAF: name = "caf"; break;
  default: break;
  }
  if (name) {
    snprintf(out, outlen, "%s", name);
    return;
  }
  SF_FORMAT_INFO fi = {.format = major};
  if (sf_command(NULL, SFC_GET_FORMAT_INFO, &fi, sizeof fi) == 0 && fi.extension) {
    snprintf(out, outlen, "%s", fi.extension);
    for (char *c = out; *c; c++)
      if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  } else {
    snprintf(out, outlen, "unknown");
  }
}

typedef struct audio_info {
  char format[32];
  int sample_rate;
  int channels;
  int64_t duration_ms;
} audio_info_t;

static int probe_audio(const char *path, const char *shown, audio_info_t *a, char *why, size_t whylen) {
  SF_INFO info;
  memset(&info, 0, sizeof info);
  SNDFILE *sf = sf_open(path, SFM_READ, &info);
  if (!sf) {
    snprintf(why, whylen, "%s: not a recording libsndfile can read (%s)", shown, sf_strerror(NULL));
    return -1;
  }
  format_name(info.format, a->format, sizeof a->format);
  sf_close(sf);
  if (info.samplerate <= 0) {
    snprintf(why, whylen, "%s: no sample rate", shown);
    return -1;
  }
  if (info.channels < 1 || info.channels > 2) {
    snprintf(why, whylen, "%s: %d channels; a recording has 1 (mono) or 2 (agent and customer)", shown,
             info.channels);
    return -1;
  }
  if (info.frames <= 0) {
    snprintf(why, whylen, "%s: contains no audio", shown);
    return -1;
  }
  a->sample_rate = info.samplerate;
  a->channels = info.channels;
  a->duration_ms = (int64_t)((info.frames * 1000 + info.samplerate / 2) / info.samplerate);
  return 0;
}

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* Does the work of parse_file; returns a QMESH_ code and, for a refusal,
 * the reason. */
static int parse_sidecar(voice_t *v, const char *path, const qmesh_channel_ctx_t *ctx, char *why, size_t whylen) {
  char sidecar[PATH_MAX], audio[PATH_MAX], dir[PATH_MAX];
  const char *given_audio = NULL;
  /* Given the recording itself (an import by hand), use the sidecar beside it. */
  if (!ends_with(path, ".json")) {
    const char *dot = strrchr(base_name(path), '.');
    size_t stem = dot ? (size_t)(dot - path) : strlen(path);
    if (stem + 6 > sizeof sidecar) {
      snprintf(why, whylen, "%s: name too long", path);
      return QMESH_INVALID;
    }
    snprintf(sidecar, sizeof sidecar, "%.*s.json", (int)stem, path);
    if (!file_exists(sidecar)) {
      snprintf(why, whylen, "%s: no sidecar %s beside the recording", path, base_name(sidecar));
      return file_exists(path) ? QMESH_INVALID : QMESH_ERR;
    }
    given_audio = path;
  } else {
    if (strlen(path) >= sizeof sidecar) {
      snprintf(why, whylen, "%s: name too long", path);
      return QMESH_INVALID;
    }
    snprintf(sidecar, sizeof sidecar, "%s", path);
  }
  const char *shown = base_name(sidecar);

  FILE *f = fopen(sidecar, "rb");
  if (!f) {
    snprintf(why, whylen, "%s: cannot open: %s", sidecar, strerror(errno));
    return QMESH_ERR;
  }
  json_error_t jerr;
  json_t *side = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
  fclose(f);
  if (!side) {
    snprintf(why, whylen, "%s:%d: not JSON: %s", shown, jerr.line, jerr.text);
    return QMESH_INVALID;
  }
  int rc = QMESH_INVALID;
  json_t *doc = NULL;
  char *text = NULL;
  if (!json_is_object(side)) {
    snprintf(why, whylen, "%s: must be a JSON object (the interaction document without media)", shown);
    goto out;
  }
  if (json_object_get(side, "media")) {
    snprintf(why, whylen, "%s: media: set by this plugin from the recording; leave it out of the sidecar", shown);
    goto out;
  }
  const json_t *jaudio = json_object_get(side, "audio");
  const json_t *jlayout = json_object_get(side, "layout");
  const json_t *jtranscript = json_object_get(side, "transcript");
  layout_t layout = {0, 0, 0};
  char reason[REASON_MAX];
  if (jlayout && read_layout(jlayout, &layout, reason, sizeof reason) != 0) {
    snprintf(why, whylen, "%s: %s", shown, reason);
    goto out;
  }
  if (jtranscript && !json_is_array(jtranscript)) {
    snprintf(why, whylen, "%s: transcript: must be an array of turns ({speaker, ts_ms, text})", shown);
    goto out;
  }

  /* The recording. */
  dir_of(sidecar, dir, sizeof dir);
  if (jaudio) {
    const char *name = json_string_value(jaudio);
    if (!name) {
      snprintf(why, whylen, "%s: audio: must be a file name", shown);
      goto out;
    }
    if (!audio_name_ok(name)) {
      snprintf(why, whylen, "%s: audio: must be a file name relative to the sidecar's folder, without '..' (got %.200s)",
               shown, name);
      goto out;
    }
    if ((size_t)snprintf(audio, sizeof audio, "%s/%s", dir, name) >= sizeof audio) {
      snprintf(why, whylen, "%s: audio: name too long", shown);
      goto out;
    }
    if (!file_exists(audio)) {
      snprintf(why, whylen, "%s: audio: %.200s is missing", shown, name);
      goto out;
    }
  } else if (given_audio) {
    snprintf(audio, sizeof audio, "%s", given_audio);
  } else {
    size_t stem = strlen(sidecar) - 5; /* without ".json" */
    snprintf(audio, sizeof audio, "%.*s.wav", (int)stem, sidecar);
    if (!file_exists(audio)) snprintf(audio, sizeof audio, "%.*s.flac", (int)stem, sidecar);
    if (!file_exists(audio)) {
      snprintf(why, whylen, "%s: no recording: neither %.*s.wav nor %.*s.flac exists, and no audio field names one",
               shown, (int)(strlen(shown) - 5), shown, (int)(strlen(shown) - 5), shown);
      goto out;
    }
  }
  audio_info_t a;
  if (probe_audio(audio, base_name(audio), &a, reason, sizeof reason) != 0) {
    snprintf(why, whylen, "%s: %s", shown, reason);
    goto out;
  }
  if (a.duration_ms > v->max_duration_s * 1000) {
    snprintf(why, whylen, "%s: %s is %" PRId64 ".%03d s long; max_duration_s is %" PRId64, shown, base_name(audio),
             a.duration_ms / 1000, (int)(a.duration_ms % 1000), v->max_duration_s);
    goto out;
  }
  if (a.channels == 2 && !layout.set) {
    if (!v->default_layout.set) {
      snprintf(why, whylen,
               "%s: layout: a stereo recording needs one (\"layout\": {\"agent\": \"left\", \"customer\": \"right\"}) "
               "and default_layout is empty",
               shown);
      goto out;
    }
    layout = v->default_layout;
  }
  if (a.channels == 1) layout.set = 0; /* one channel holds both speakers */

  /* The document: the sidecar's fields, defaults from the settings, media. */
  doc = json_deep_copy(side);
  if (!doc) {
    rc = QMESH_NOMEM;
    snprintf(why, whylen, "%s: out of memory", shown);
    goto out;
  }
  json_object_del(doc, "audio");
  json_object_del(doc, "layout");
  json_object_del(doc, "transcript");
  if (!json_object_get(doc, "channel")) json_object_set_new(doc, "channel", json_string("voice"));
  if (v->tenant && !json_object_get(doc, "tenant")) json_object_set_new(doc, "tenant", json_string(v->tenant));
  if (v->default_queue && !json_object_get(doc, "queue"))
    json_object_set_new(doc, "queue", json_string(v->default_queue));
  const json_t *jdur = json_object_get(doc, "duration_ms");
  const char *started = json_string_value(json_object_get(doc, "started_at"));
  int64_t start_ms;
  if (!json_object_get(doc, "ended_at") && started && parse_rfc3339(started, &start_ms) == 0) {
    int64_t dur = json_is_integer(jdur) ? (int64_t)json_integer_value(jdur) : a.duration_ms;
    char ended[40];
    format_rfc3339(start_ms + dur, ended, sizeof ended);
    json_object_set_new(doc, "ended_at", json_string(ended));
  }
  if (!jdur) json_object_set_new(doc, "duration_ms", json_integer(a.duration_ms));

  if (!CTX_HAS(ctx, store_media)) {
    rc = QMESH_UNSUPPORTED;
    snprintf(why, whylen, "%s: this qmesh has no media store for recordings", shown);
    goto out;
  }
  char ref[80] = "";
  int src = ctx->store_media(ctx, audio, ref, sizeof ref);
  if (src != QMESH_OK) {
    rc = src == QMESH_BUSY ? QMESH_BUSY : QMESH_ERR;
    snprintf(why, whylen, "%s: cannot store %s (%d)", shown, base_name(audio), src);
    goto out;
  }
  json_t *media = json_object();
  json_object_set_new(media, "ref", json_string(ref));
  json_object_set_new(media, "format", json_string(a.format));
  json_object_set_new(media, "sample_rate", json_integer(a.sample_rate));
  json_object_set_new(media, "channels", json_integer(a.channels));
  json_object_set_new(media, "duration_ms", json_integer(a.duration_ms));
  if (layout.set) {
    json_t *lj = json_object();
    json_object_set_new(lj, "agent", json_string(sides[layout.agent]));
    json_object_set_new(lj, "customer", json_string(sides[layout.customer]));
    json_object_set_new(media, "layout", lj);
  }
  if (jtranscript) json_object_set(media, "transcript", (json_t *)jtranscript);
  json_object_set_new(doc, "media", media);

  text = json_dumps(doc, JSON_COMPACT);
  if (!text) {
    rc = QMESH_NOMEM;
    snprintf(why, whylen, "%s: out of memory", shown);
    goto out;
  }
  char refused[REASON_MAX] = "";
  rc = ctx->submit(ctx, text, strlen(text), refused, sizeof refused);
  if (rc == QMESH_INVALID) snprintf(why, whylen, "%s: refused: %s", shown, refused);
  else if (rc == QMESH_BUSY) snprintf(why, whylen, "%s: the core is busy; offer it again later", shown);
  else if (rc != QMESH_OK) snprintf(why, whylen, "%s: submit failed (%d)", shown, rc);
out:
  free(text);
  json_decref(doc);
  json_decref(side);
  return rc;
}

static int v_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  voice_t *v = state;
  char why[REASON_MAX] = "";
  int rc = parse_sidecar(v, path, ctx, why, sizeof why);
  if (rc != QMESH_OK)
    v->host->log(v->host, rc == QMESH_BUSY ? QMESH_LOG_INFO : QMESH_LOG_WARN, "%s", why[0] ? why : path);
  return rc;
}

static const qmesh_setting_t settings[] = {
  {"spool_dir", QMESH_SETTING_STRING, NULL, "folder the recorder drops recordings and .json sidecars into", 0},
  {"tenant", QMESH_SETTING_STRING, NULL, "tenant for sidecars that name none", 0},
  {"default_queue", QMESH_SETTING_STRING, NULL, "queue for sidecars that name none", 0},
  {"default_layout", QMESH_SETTING_STRING, "agent=left,customer=right",
   "channels of a stereo recording whose sidecar has no layout (empty: refuse such recordings)", 0},
  {"max_duration_s", QMESH_SETTING_INT, "14400", "longest recording accepted, in seconds", 0},
  {0},
};

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops,
  .open = v_open,
  .start = v_start,
  .stop = v_stop,
  .close = v_close,
  .parse_file = v_parse_file,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "channel_voice_file",
  .version = "1.0.0",
  .description = "call recordings (WAV, FLAC, ...) with a JSON sidecar each",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
