/*
 * test_channel_voice.c: the channel_voice_file plugin, loaded through the
 * real loader and driven with a fake channel context whose store_media
 * puts files into a real media store (common/src/media.c) in a temporary
 * folder.
 *
 * Recordings are generated here with libsndfile (sine tones; WAV and FLAC;
 * mono, stereo and three channels; 8 and 16 kHz). The cases check what a
 * user of the plugin sees: the submitted document's media fields against
 * the file (the ref is the file's content hash and the store gives the
 * file's bytes back), fields derived from the audio, layouts, the vendor
 * transcript passed through, and every refusal with its exact log line and
 * nothing submitted or stored. When common/src/interaction.c is part of the
 * build (QM_TEST_NORMALIZE), every submitted document must also pass the
 * core's normalizer.
 */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libconfig.h>
#include <sndfile.h>

#include <qmesh/channel.h>

#include "loader.h"
#include "log.h"
#include "media.h"
#ifdef QM_TEST_NORMALIZE
#include "interaction.h"
#endif

#ifndef VOICE_PLUGIN
#define VOICE_PLUGIN QMESH_BINARY_DIR "/plugins/channel_voice_file.so"
#endif

static char root[64];
static char dir[256];  /* this case's spool folder */
static char mdir[256]; /* this case's media store */
static int case_no;
static int logfd = -1;
static qm_media_t *media;
static qm_plugin_t *plugin;
static const qmesh_channel_ops_t *ops;

/* ---- the fake context ---- */

typedef struct fake {
  qmesh_channel_ctx_t ctx; /* first: the ctx pointer leads back here */
  json_t *docs;            /* every accepted document */
  int submit_rc;           /* what submit answers */
  int store_calls;
  int watch_calls;
  char watched[512], suffixes[64];
} fake_t;

static int fake_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                       size_t reasonlen) {
  fake_t *f = (fake_t *)ctx;
  json_error_t jerr;
  json_t *doc = json_loadb(json, len, 0, &jerr);
  if (!doc || !json_is_object(doc)) fail_msg("submitted something that is not a JSON object: %.*s", (int)len, json);
#ifdef QM_TEST_NORMALIZE
  /* The core's own rules, with a clock fixed the day after the calls. */
  qm_interaction_opts_t o = {NULL, 0, 1795219200000ull /* 2026-11-21T00:00:00Z */};
  qm_interaction_t ix;
  memset(&ix, 0, sizeof ix);
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_interaction_normalize(json, len, &o, &ix, &err) != 0)
    fail_msg("the core refuses the document: %s\n%.*s", err.msg, (int)len, json);
  qm_interaction_free(&ix);
#endif
  if (f->submit_rc != QMESH_OK) {
    json_decref(doc);
    if (f->submit_rc == QMESH_INVALID && reason) snprintf(reason, reasonlen, "external_id: already taken");
    return f->submit_rc;
  }
  json_array_append_new(f->docs, doc);
  return QMESH_OK;
}

static int fake_store_media(const qmesh_channel_ctx_t *ctx, const char *path, char *ref, size_t reflen) {
  fake_t *f = (fake_t *)ctx;
  f->store_calls++;
  qm_error_t err;
  qm_error_clear(&err);
  return qm_media_put_file(media, path, ref, reflen, &err) == 0 ? QMESH_OK : QMESH_ERR;
}

static int fake_watch_dir(const qmesh_channel_ctx_t *ctx, const char *d, const char *suffixes) {
  fake_t *f = (fake_t *)ctx;
  f->watch_calls++;
  snprintf(f->watched, sizeof f->watched, "%s", d);
  snprintf(f->suffixes, sizeof f->suffixes, "%s", suffixes ? suffixes : "(null)");
  return QMESH_OK;
}

static void fake_init(fake_t *f) {
  memset(f, 0, sizeof *f);
  f->ctx.struct_size = sizeof f->ctx;
  f->ctx.submit = fake_submit;
  f->ctx.store_media = fake_store_media;
  f->ctx.watch_dir = fake_watch_dir;
  f->ctx.name = "voice";
  f->docs = json_array();
}

static void fake_free(fake_t *f) { json_decref(f->docs); }

/* ---- fixtures ---- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int group_setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/qm_test_voice.XXXXXX");
  if (!mkdtemp(root)) return -1;
  char logpath[128];
  snprintf(logpath, sizeof logpath, "%s/log", root);
  logfd = open(logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0) return -1;
  qm_log_set_json(1);
  qm_log_set_fd(logfd);
  qm_log_set_level(QM_LOG_DEBUG);
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_plugin_load(VOICE_PLUGIN, QMESH_KIND_CHANNEL, &plugin, &err) != 0) {
    fprintf(stderr, "cannot load %s: %s\n", VOICE_PLUGIN, err.msg);
    return -1;
  }
  ops = qm_plugin_descriptor(plugin)->ops;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  qm_plugin_destroy(&plugin);
  qm_log_set_fd(2);
  close(logfd);
  return nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int case_setup(void **state) {
  (void)state;
  case_no++;
  snprintf(dir, sizeof dir, "%s/spool%d", root, case_no);
  snprintf(mdir, sizeof mdir, "%s/media%d", root, case_no);
  if (mkdir(dir, 0700) != 0) return -1;
  qm_media_opts_t o = {mdir, NULL};
  if (qm_media_open(&media, &o, NULL) != 0) return -1;
  if (ftruncate(logfd, 0) != 0 || lseek(logfd, 0, SEEK_SET) != 0) return -1;
  return 0;
}

static int case_teardown(void **state) {
  (void)state;
  qm_media_destroy(&media);
  return 0;
}

static const char *path_in(const char *name) {
  static char buf[8][512];
  static int next;
  char *b = buf[next++ % 8];
  snprintf(b, 512, "%s/%s", dir, name);
  return b;
}

static const char *write_text(const char *name, const char *text) {
  const char *p = path_in(name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
  return p;
}

/* A recording of sine tones (another pitch on each channel). */
static void make_audio(const char *name, int major, int rate, int channels, double seconds) {
  SF_INFO info;
  memset(&info, 0, sizeof info);
  info.samplerate = rate;
  info.channels = channels;
  info.format = major | SF_FORMAT_PCM_16;
  SNDFILE *sf = sf_open(path_in(name), SFM_WRITE, &info);
  if (!sf) fail_msg("cannot write %s: %s", name, sf_strerror(NULL));
  sf_count_t frames = (sf_count_t)(rate * seconds);
  short *buf = malloc((size_t)frames * (size_t)channels * sizeof *buf);
  assert_non_null(buf);
  for (sf_count_t i = 0; i < frames; i++)
    for (int c = 0; c < channels; c++)
      buf[i * channels + c] = (short)(8000 * sin(2 * M_PI * (440.0 + 220.0 * c) * (double)i / rate));
  assert_int_equal(sf_writef_short(sf, buf, frames), frames);
  sf_close(sf);
  free(buf);
}

/* Opens an instance with settings given as libconfig text. */
static void *open_instance(const char *settings_text) {
  config_t cfg;
  config_init(&cfg);
  assert_int_equal(config_read_string(&cfg, settings_text), CONFIG_TRUE);
  qm_error_t err;
  qm_error_clear(&err);
  int rc = qm_plugin_validate_settings(plugin, config_root_setting(&cfg), "test.cfg", &err);
  config_destroy(&cfg);
  if (rc) fail_msg("settings: %s", err.msg);
  void *st = NULL;
  assert_int_equal(ops->open(qm_plugin_host(plugin), qm_plugin_settings(plugin), &st), QMESH_OK);
  return st;
}

/* The message of the last line the plugin logged ("" when none). */
static const char *last_plugin_msg(void) {
  static char msg[1024];
  msg[0] = '\0';
  off_t size = lseek(logfd, 0, SEEK_END);
  char *text = calloc(1, (size_t)size + 1);
  assert_non_null(text);
  assert_int_equal(pread(logfd, text, (size_t)size, 0), size);
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    json_t *j = json_loads(line, 0, NULL);
    if (!j) continue;
    if (strcmp(json_string_value(json_object_get(j, "event")) ?: "", "plugin.log") == 0)
      snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(j, "msg")) ?: "");
    json_decref(j);
  }
  free(text);
  return msg;
}

static size_t count_files(const char *d) {
  DIR *dd = opendir(d);
  if (!dd) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(dd))) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "tmp") == 0) continue;
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", d, e->d_name);
    struct stat st;
    if (stat(p, &st) != 0) continue;
    n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
  }
  closedir(dd);
  return n;
}

static const char *str_at(const json_t *doc, const char *path) {
  const json_t *v = doc;
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *k = strtok(buf, "."); k && v; k = strtok(NULL, ".")) v = json_object_get(v, k);
  return json_string_value(v);
}

static json_int_t int_at(const json_t *doc, const char *path) {
  const json_t *v = doc;
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *k = strtok(buf, "."); k && v; k = strtok(NULL, ".")) v = json_object_get(v, k);
  if (!json_is_integer(v)) fail_msg("%s: not an integer", path);
  return json_integer_value(v);
}

/* Parses a file expecting one accepted document, returned (borrowed from f). */
static json_t *parse_one(void *st, fake_t *f, const char *path) {
  int rc = ops->parse_file(st, path, &f->ctx);
  if (rc != QMESH_OK) fail_msg("parse_file %s: %d (%s)", path, rc, last_plugin_msg());
  assert_int_equal(json_array_size(f->docs), 1);
  return json_array_get(f->docs, 0);
}

/* Parses a file expecting a refusal with this exact log line and nothing
 * submitted or stored. */
static void expect_refusal(void *st, const char *path, int code, const char *msg) {
  fake_t f;
  fake_init(&f);
  size_t stored = count_files(mdir);
  assert_int_equal(ops->parse_file(st, path, &f.ctx), code);
  assert_string_equal(last_plugin_msg(), msg);
  assert_int_equal(json_array_size(f.docs), 0);
  assert_int_equal(f.store_calls, 0);
  assert_int_equal(count_files(mdir), stored);
  fake_free(&f);
}

static const char SIDECAR_FIELDS[] =
  "\"external_id\": \"call-0001\", \"tenant\": \"acme\", \"queue\": \"billing\", "
  "\"agent\": {\"id\": \"a-17\", \"name\": \"Dana Reyes\"}, \"customer\": {\"id\": \"cust-5512\"}, "
  "\"started_at\": \"2026-11-20T14:03:11Z\", \"direction\": \"inbound\", \"wrapup\": \"billing.refund\"";

static const char *sidecar(const char *name, const char *extra) {
  char text[4096];
  snprintf(text, sizeof text, "{\"channel\": \"voice\", %s%s%s}\n", SIDECAR_FIELDS, extra && *extra ? ", " : "",
           extra ? extra : "");
  return write_text(name, text);
}

/* ---- cases ---- */

static void test_stereo_wav(void **state) {
  (void)state;
  assert_int_equal(mkdir(path_in("rec"), 0700), 0);
  make_audio("rec/call-0001.wav", SF_FORMAT_WAV, 8000, 2, 2.5);
  const char *sc = sidecar("call-0001.json",
                           "\"audio\": \"rec/call-0001.wav\", \"layout\": {\"agent\": \"right\", \"customer\": \"left\"}");
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, sc);

  assert_string_equal(str_at(doc, "channel"), "voice");
  assert_string_equal(str_at(doc, "external_id"), "call-0001");
  assert_string_equal(str_at(doc, "tenant"), "acme");
  assert_string_equal(str_at(doc, "queue"), "billing");
  assert_string_equal(str_at(doc, "agent.id"), "a-17");
  assert_string_equal(str_at(doc, "customer.id"), "cust-5512");
  assert_string_equal(str_at(doc, "wrapup"), "billing.refund");
  assert_string_equal(str_at(doc, "direction"), "inbound");
  /* Derived from the audio: 20000 frames at 8 kHz. */
  assert_int_equal(int_at(doc, "duration_ms"), 2500);
  assert_string_equal(str_at(doc, "ended_at"), "2026-11-20T14:03:13.500Z");
  /* The sidecar's own plumbing is not part of the document. */
  assert_null(json_object_get(doc, "audio"));
  assert_null(json_object_get(doc, "layout"));
  assert_null(json_object_get(doc, "transcript"));

  json_t *m = json_object_get(doc, "media");
  assert_true(json_is_object(m));
  assert_int_equal(json_object_size(m), 6);
  char want[QM_MEDIA_REF_LEN];
  assert_int_equal(qm_media_ref_file(path_in("rec/call-0001.wav"), want, sizeof want, NULL), 0);
  assert_string_equal(str_at(m, "ref"), want);
  assert_string_equal(str_at(m, "format"), "wav");
  assert_int_equal(int_at(m, "sample_rate"), 8000);
  assert_int_equal(int_at(m, "channels"), 2);
  assert_int_equal(int_at(m, "duration_ms"), 2500);
  assert_string_equal(str_at(m, "layout.agent"), "right");
  assert_string_equal(str_at(m, "layout.customer"), "left");
  assert_int_equal(json_object_size(json_object_get(m, "layout")), 2);

  /* The store holds the recording's exact bytes under that ref. */
  assert_int_equal(f.store_calls, 1);
  uint8_t *data;
  size_t len;
  assert_int_equal(qm_media_get(media, want, &data, &len, NULL), 0);
  struct stat sst;
  assert_int_equal(stat(path_in("rec/call-0001.wav"), &sst), 0);
  assert_int_equal(len, (size_t)sst.st_size);
  FILE *wf = fopen(path_in("rec/call-0001.wav"), "rb");
  uint8_t *orig = malloc(len);
  assert_int_equal(fread(orig, 1, len, wf), len);
  fclose(wf);
  assert_memory_equal(data, orig, len);
  free(orig);
  free(data);

  /* Parsing it again submits the same document with the same ref and
   * stores nothing new. */
  char *first = json_dumps(doc, JSON_SORT_KEYS);
  json_array_clear(f.docs);
  json_t *again = parse_one(st, &f, sc);
  char *second = json_dumps(again, JSON_SORT_KEYS);
  assert_string_equal(first, second);
  free(first);
  free(second);
  assert_int_equal(count_files(mdir), 1);
  fake_free(&f);
  ops->close(st);
}

static void test_mono_flac_defaults(void **state) {
  (void)state;
  make_audio("call-0002.flac", SF_FORMAT_FLAC, 16000, 1, 1.25);
  /* No audio field (the same base name is found), no tenant or queue (the
   * settings fill them), and a layout that means nothing for mono. */
  write_text("call-0002.json",
             "{\"external_id\": \"call-0002\", \"agent\": {\"id\": \"a-3\"}, "
             "\"started_at\": \"2026-11-20T09:00:00+01:00\", "
             "\"layout\": {\"agent\": \"left\", \"customer\": \"right\"}}");
  void *st = open_instance("tenant = \"globex\";\ndefault_queue = \"support\";\n");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, path_in("call-0002.json"));
  assert_string_equal(str_at(doc, "channel"), "voice");
  assert_string_equal(str_at(doc, "tenant"), "globex");
  assert_string_equal(str_at(doc, "queue"), "support");
  assert_int_equal(int_at(doc, "duration_ms"), 1250);
  assert_string_equal(str_at(doc, "ended_at"), "2026-11-20T08:00:01.250Z");
  json_t *m = json_object_get(doc, "media");
  assert_string_equal(str_at(m, "format"), "flac");
  assert_int_equal(int_at(m, "sample_rate"), 16000);
  assert_int_equal(int_at(m, "channels"), 1);
  assert_int_equal(int_at(m, "duration_ms"), 1250);
  assert_null(json_object_get(m, "layout"));
  char want[QM_MEDIA_REF_LEN];
  assert_int_equal(qm_media_ref_file(path_in("call-0002.flac"), want, sizeof want, NULL), 0);
  assert_string_equal(str_at(m, "ref"), want);
  fake_free(&f);

  /* The sidecar's own tenant and queue win over the settings. */
  make_audio("call-0003.wav", SF_FORMAT_WAV, 8000, 1, 0.5);
  const char *sc = sidecar("call-0003.json", NULL);
  fake_init(&f);
  doc = parse_one(st, &f, sc);
  assert_string_equal(str_at(doc, "tenant"), "acme");
  assert_string_equal(str_at(doc, "queue"), "billing");
  fake_free(&f);
  ops->close(st);
}

static void test_layouts(void **state) {
  (void)state;
  make_audio("call.wav", SF_FORMAT_WAV, 8000, 2, 1.0);
  const char *sc = sidecar("call.json", NULL);

  /* No layout in the sidecar: the declared default. */
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, sc);
  assert_string_equal(str_at(doc, "media.layout.agent"), "left");
  assert_string_equal(str_at(doc, "media.layout.customer"), "right");
  fake_free(&f);
  ops->close(st);

  /* A configured default. */
  st = open_instance("default_layout = \" customer=left, agent=right \";\n");
  fake_init(&f);
  doc = parse_one(st, &f, sc);
  assert_string_equal(str_at(doc, "media.layout.agent"), "right");
  assert_string_equal(str_at(doc, "media.layout.customer"), "left");
  fake_free(&f);
  ops->close(st);

  /* No default: a stereo recording without a layout is refused. */
  st = open_instance("default_layout = \"\";\n");
  expect_refusal(st, sc, QMESH_INVALID,
                 "call.json: layout: a stereo recording needs one (\"layout\": {\"agent\": \"left\", "
                 "\"customer\": \"right\"}) and default_layout is empty");
  ops->close(st);

  /* A default that is not a layout refuses the instance. */
  const char *bad[] = {"agent=left", "agent=left,customer=left", "agent=up,customer=down", "boss=left,agent=right",
                       "agent=left,customer=right,agent=left"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char text[256];
    snprintf(text, sizeof text, "default_layout = \"%s\";\n", bad[i]);
    config_t cfg;
    config_init(&cfg);
    assert_int_equal(config_read_string(&cfg, text), CONFIG_TRUE);
    assert_int_equal(qm_plugin_validate_settings(plugin, config_root_setting(&cfg), "test.cfg", NULL), 0);
    config_destroy(&cfg);
    void *bst = (void *)0x1;
    assert_int_equal(ops->open(qm_plugin_host(plugin), qm_plugin_settings(plugin), &bst), QMESH_INVALID);
    char want[512];
    snprintf(want, sizeof want,
             "default_layout: cannot read \"%s\" (valid: agent=left,customer=right; agent=right,customer=left; or "
             "empty for none)",
             bad[i]);
    assert_string_equal(last_plugin_msg(), want);
  }
}

static void test_transcript_passed_through(void **state) {
  (void)state;
  make_audio("t.wav", SF_FORMAT_WAV, 8000, 2, 3.0);
  const char *turns =
    "[{\"speaker\": \"agent\", \"ts_ms\": 0, \"text\": \"Thanks for calling Acme, this is Dana.\"}, "
    "{\"speaker\": \"customer\", \"ts_ms\": 1800, \"text\": \"I was charged twice.\"}]";
  char extra[1024];
  snprintf(extra, sizeof extra, "\"transcript\": %s", turns);
  const char *sc = sidecar("t.json", extra);
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, sc);
  json_t *expected = json_loads(turns, 0, NULL);
  assert_non_null(expected);
  assert_true(json_equal(json_object_get(json_object_get(doc, "media"), "transcript"), expected));
  assert_null(json_object_get(doc, "transcript"));
  assert_null(json_object_get(doc, "turns"));
  json_decref(expected);
  fake_free(&f);
  ops->close(st);
}

static void test_sidecar_errors(void **state) {
  (void)state;
  make_audio("bad.wav", SF_FORMAT_WAV, 8000, 2, 1.0);
  void *st = open_instance("");
  struct {
    const char *text, *msg;
  } cases[] = {
    {"[1, 2]\n", "bad.json: must be a JSON object (the interaction document without media)"},
    {"{\"external_id\": \"x\", \"audio\": 5}", "bad.json: audio: must be a file name"},
    {"{\"audio\": \"/etc/passwd\"}",
     "bad.json: audio: must be a file name relative to the sidecar's folder, without '..' (got /etc/passwd)"},
    {"{\"audio\": \"sub/../../bad.wav\"}",
     "bad.json: audio: must be a file name relative to the sidecar's folder, without '..' (got sub/../../bad.wav)"},
    {"{\"audio\": \"\"}",
     "bad.json: audio: must be a file name relative to the sidecar's folder, without '..' (got )"},
    {"{\"media\": {\"ref\": \"sha256:00\"}}",
     "bad.json: media: set by this plugin from the recording; leave it out of the sidecar"},
    {"{\"layout\": {\"agent\": \"middle\", \"customer\": \"left\"}}", "bad.json: layout.agent: must be left or right"},
    {"{\"layout\": {\"agent\": \"left\", \"customer\": \"left\"}}",
     "bad.json: layout: agent and customer must be on different channels"},
    {"{\"layout\": {\"agent\": \"left\"}}", "bad.json: layout: must place both agent and customer"},
    {"{\"layout\": {\"supervisor\": \"left\"}}", "bad.json: layout.supervisor: unknown speaker (valid: agent, customer)"},
    {"{\"layout\": \"stereo\"}",
     "bad.json: layout: must be an object such as {\"agent\": \"left\", \"customer\": \"right\"}"},
    {"{\"transcript\": {\"text\": \"hello\"}}",
     "bad.json: transcript: must be an array of turns ({speaker, ts_ms, text})"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *p = write_text("bad.json", cases[i].text);
    expect_refusal(st, p, QMESH_INVALID, cases[i].msg);
  }
  /* Not JSON at all: the line and jansson's reason. */
  const char *p = write_text("bad.json", "{\n  \"external_id\": \"x\",\n  oops\n}\n");
  fake_t f;
  fake_init(&f);
  assert_int_equal(ops->parse_file(st, p, &f.ctx), QMESH_INVALID);
  const char *msg = last_plugin_msg();
  assert_true(strncmp(msg, "bad.json:3: not JSON: ", 22) == 0);
  assert_int_equal(json_array_size(f.docs), 0);
  fake_free(&f);
  ops->close(st);
}

static void test_missing_audio(void **state) {
  (void)state;
  void *st = open_instance("");
  const char *sc = sidecar("call-9.json", "\"audio\": \"gone.wav\"");
  expect_refusal(st, sc, QMESH_INVALID, "call-9.json: audio: gone.wav is missing");
  sc = sidecar("call-10.json", NULL);
  expect_refusal(st, sc, QMESH_INVALID,
                 "call-10.json: no recording: neither call-10.wav nor call-10.flac exists, and no audio field names "
                 "one");
  /* A missing sidecar is an error, not a refusal: there was nothing to read. */
  fake_t f;
  fake_init(&f);
  char want[600];
  snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path_in("nothing.json"));
  expect_refusal(st, path_in("nothing.json"), QMESH_ERR, want);
  fake_free(&f);
  ops->close(st);
}

static void test_not_audio(void **state) {
  (void)state;
  void *st = open_instance("");
  write_text("notes.wav", "This is a text file with a .wav name, not a recording.\n");
  const char *sc = sidecar("notes.json", "\"audio\": \"notes.wav\"");
  fake_t f;
  fake_init(&f);
  assert_int_equal(ops->parse_file(st, sc, &f.ctx), QMESH_INVALID);
  const char *msg = last_plugin_msg();
  const char *prefix = "notes.json: notes.wav: not a recording libsndfile can read (";
  if (strncmp(msg, prefix, strlen(prefix)) != 0) fail_msg("got: %s", msg);
  assert_int_equal(json_array_size(f.docs), 0);
  assert_int_equal(f.store_calls, 0);
  fake_free(&f);

  /* An empty recording (a header and no frames). */
  make_audio("empty.wav", SF_FORMAT_WAV, 8000, 1, 0.0);
  sc = sidecar("empty.json", "\"audio\": \"empty.wav\"");
  expect_refusal(st, sc, QMESH_INVALID, "empty.json: empty.wav: contains no audio");
  ops->close(st);
}

static void test_three_channels(void **state) {
  (void)state;
  make_audio("conf.wav", SF_FORMAT_WAV, 8000, 3, 0.5);
  const char *sc = sidecar("conf.json", NULL);
  void *st = open_instance("");
  expect_refusal(st, sc, QMESH_INVALID,
                 "conf.json: conf.wav: 3 channels; a recording has 1 (mono) or 2 (agent and customer)");
  ops->close(st);
}

static void test_max_duration(void **state) {
  (void)state;
  make_audio("long.wav", SF_FORMAT_WAV, 8000, 1, 2.5);
  const char *sc = sidecar("long.json", NULL);
  void *st = open_instance("max_duration_s = 2;\n");
  expect_refusal(st, sc, QMESH_INVALID, "long.json: long.wav is 2.500 s long; max_duration_s is 2");
  ops->close(st);
  st = open_instance("max_duration_s = 3;\n");
  fake_t f;
  fake_init(&f);
  parse_one(st, &f, sc);
  fake_free(&f);
  ops->close(st);
  /* Zero is not a limit. */
  config_t cfg;
  config_init(&cfg);
  assert_int_equal(config_read_string(&cfg, "max_duration_s = 0;\n"), CONFIG_TRUE);
  assert_int_equal(qm_plugin_validate_settings(plugin, config_root_setting(&cfg), "test.cfg", NULL), 0);
  config_destroy(&cfg);
  void *bst = NULL;
  assert_int_equal(ops->open(qm_plugin_host(plugin), qm_plugin_settings(plugin), &bst), QMESH_INVALID);
  assert_string_equal(last_plugin_msg(), "max_duration_s: must be at least 1 (got 0)");
}

static void test_given_the_recording(void **state) {
  (void)state;
  make_audio("c7.flac", SF_FORMAT_FLAC, 8000, 1, 1.0);
  sidecar("c7.json", NULL);
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, path_in("c7.flac"));
  assert_string_equal(str_at(doc, "media.format"), "flac");
  assert_string_equal(str_at(doc, "external_id"), "call-0001");
  fake_free(&f);
  /* A recording without a sidecar says which sidecar it looked for. */
  make_audio("lonely.wav", SF_FORMAT_WAV, 8000, 1, 0.5);
  char want[600];
  snprintf(want, sizeof want, "%s: no sidecar lonely.json beside the recording", path_in("lonely.wav"));
  expect_refusal(st, path_in("lonely.wav"), QMESH_INVALID, want);
  ops->close(st);
}

static void test_explicit_fields_kept(void **state) {
  (void)state;
  make_audio("k.wav", SF_FORMAT_WAV, 8000, 1, 2.0);
  const char *sc =
    sidecar("k.json", "\"ended_at\": \"2026-11-20T14:05:00Z\", \"duration_ms\": 109000, \"language\": \"de\"");
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  json_t *doc = parse_one(st, &f, sc);
  assert_string_equal(str_at(doc, "ended_at"), "2026-11-20T14:05:00Z");
  assert_int_equal(int_at(doc, "duration_ms"), 109000);
  assert_string_equal(str_at(doc, "language"), "de");
  assert_int_equal(int_at(doc, "media.duration_ms"), 2000); /* the audio's own */
  fake_free(&f);
  ops->close(st);
}

static void test_submit_answers(void **state) {
  (void)state;
  make_audio("b.wav", SF_FORMAT_WAV, 8000, 1, 0.5);
  const char *sc = sidecar("b.json", NULL);
  void *st = open_instance("");
  fake_t f;
  fake_init(&f);
  f.submit_rc = QMESH_BUSY;
  assert_int_equal(ops->parse_file(st, sc, &f.ctx), QMESH_BUSY);
  assert_string_equal(last_plugin_msg(), "b.json: the core is busy; offer it again later");
  f.submit_rc = QMESH_INVALID;
  assert_int_equal(ops->parse_file(st, sc, &f.ctx), QMESH_INVALID);
  assert_string_equal(last_plugin_msg(), "b.json: refused: external_id: already taken");
  /* Both times the recording was stored once. */
  assert_int_equal(f.store_calls, 2);
  assert_int_equal(count_files(mdir), 1);
  fake_free(&f);

  /* A core without a media store (an older minor): refused as unsupported. */
  fake_init(&f);
  f.ctx.struct_size = (uint32_t)offsetof(qmesh_channel_ctx_t, store_media);
  assert_int_equal(ops->parse_file(st, sc, &f.ctx), QMESH_UNSUPPORTED);
  assert_string_equal(last_plugin_msg(), "b.json: this qmesh has no media store for recordings");
  assert_int_equal(f.store_calls, 0);
  fake_free(&f);
  ops->close(st);
}

static void test_start_watches_spool(void **state) {
  (void)state;
  fake_t f;
  fake_init(&f);
  void *st = open_instance("");
  assert_int_equal(ops->start(st, &f.ctx), QMESH_OK);
  assert_int_equal(ops->stop(st), QMESH_OK);
  assert_int_equal(f.watch_calls, 0);
  ops->close(st);

  char text[600];
  snprintf(text, sizeof text, "spool_dir = \"%s\";\n", dir);
  st = open_instance(text);
  assert_int_equal(ops->start(st, &f.ctx), QMESH_OK);
  assert_int_equal(f.watch_calls, 1);
  assert_string_equal(f.watched, dir);
  assert_string_equal(f.suffixes, ".json");
  assert_int_equal(ops->stop(st), QMESH_OK);
  /* A core that cannot watch directories: start says so. */
  f.ctx.watch_dir = NULL;
  assert_int_equal(ops->start(st, &f.ctx), QMESH_UNSUPPORTED);
  ops->close(st);
  fake_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_stereo_wav, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_mono_flac_defaults, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_layouts, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_transcript_passed_through, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_sidecar_errors, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_missing_audio, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_not_audio, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_three_channels, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_max_duration, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_given_the_recording, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_explicit_fields_kept, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_submit_answers, case_setup, case_teardown),
    cmocka_unit_test_setup_teardown(test_start_watches_spool, case_setup, case_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
