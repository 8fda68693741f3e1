/*
 * gen_envelope_corpus.c: writes the seed corpus for fuzz_envelope.
 *
 *   gen_envelope_corpus tests/fuzz/corpus/envelope
 *
 * The seeds are committed; run this again only to add seeds. Output is
 * deterministic (fixed ids and timestamps), so regenerating leaves git quiet
 * unless a seed really changed. Names say what each seed must do, and
 * fuzz_envelope_corpus checks it: "valid-*" decodes, "bad-<ENAME>-*" is
 * refused with that error. Valid seeds cover every MessagePack family inside
 * a body so that the fuzzer starts from inputs that reach deep into the
 * decoder; bad seeds put it next to each refusal.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "envelope.h"

static const char *g_dir;
static int g_failed;

static void put(const char *name, const char *data, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    g_failed = 1;
  }
}

static qm_str_t S(const char *s) {
  qm_str_t v = {s, strlen(s)};
  return v;
}

/* A fixed envelope, so seeds are the same on every run. */
static void base(qm_envelope_t *e) {
  memset(e, 0, sizeof *e);
  e->v = QM_ENVELOPE_VERSION;
  qm_id_parse(&e->id, "0190d6f2-3a4b-7001-8011-223344556677");
  e->ts = 1700000000000ull;
  e->type = S("interaction.received");
  e->src = S("ingest");
  e->key = S("int-0001");
}

static void put_env(const char *name, const qm_envelope_t *e) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  if (qm_envelope_encode(&sb, e) != 0) {
    fprintf(stderr, "%s: encode refused the seed\n", name);
    g_failed = 1;
  } else {
    put(name, sb.data, sb.size);
  }
  msgpack_sbuffer_destroy(&sb);
}

/* Packs the standard fields except `skip`, then `extra` raw bytes (one more
 * key and value) when given. Used for seeds the encoder would refuse. */
static void put_raw(const char *name, const char *skip, const char *extra, size_t extra_n,
                    int extra_fields) {
  static const char *keys[] = {"v", "id", "type", "src", "ts", "key", "body"};
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int n = 0;
  for (int i = 0; i < 7; i++) n += !(skip && strcmp(skip, keys[i]) == 0);
  msgpack_pack_map(&pk, (size_t)(n + extra_fields));
  qm_envelope_t e;
  base(&e);
  for (int i = 0; i < 7; i++) {
    if (skip && strcmp(skip, keys[i]) == 0) continue;
    msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
    switch (i) {
    case 0: msgpack_pack_uint8(&pk, 1); break;
    case 1: msgpack_pack_bin_with_body(&pk, e.id.b, 16); break;
    case 2: msgpack_pack_str_with_body(&pk, e.type.p, e.type.n); break;
    case 3: msgpack_pack_str_with_body(&pk, e.src.p, e.src.n); break;
    case 4: msgpack_pack_uint64(&pk, e.ts); break;
    case 5: msgpack_pack_str_with_body(&pk, e.key.p, e.key.n); break;
    case 6:
      msgpack_pack_map(&pk, 1);
      msgpack_pack_str_with_body(&pk, "lang", 4);
      msgpack_pack_str_with_body(&pk, "en", 2);
      break;
    }
  }
  if (extra_n) msgpack_sbuffer_write(&sb, extra, extra_n);
  put(name, sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

/* mkdir -p: the corpus folder may be new. */
static void mkdir_p(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0755);
      *p = '/';
    }
  }
  mkdir(path, 0755);
}

#define EXTRA(lit) lit, sizeof lit - 1

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  mkdir_p(g_dir);

  qm_envelope_t e;
  base(&e);
  put_env("valid-minimal.msgpack", &e);

  base(&e);
  e.hdr_count = 3;
  e.hdr[0].k = S("channel");
  e.hdr[0].v = S("voice");
  e.hdr[1].k = S("tenant");
  e.hdr[1].v = S("acme");
  e.hdr[2].k = S("queue");
  e.hdr[2].v = S("billing");
  put_env("valid-hdr.msgpack", &e);

  /* A body with every MessagePack family. */
  msgpack_sbuffer body;
  msgpack_sbuffer_init(&body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 7);
  msgpack_pack_str_with_body(&pk, "text", 4);
  msgpack_pack_str_with_body(&pk, "a transcript line that needs str8 framing", 42);
  msgpack_pack_str_with_body(&pk, "audio", 5);
  msgpack_pack_bin_with_body(&pk, "\x52\x49\x46\x46", 4);
  msgpack_pack_str_with_body(&pk, "nums", 4);
  msgpack_pack_array(&pk, 8);
  msgpack_pack_uint64(&pk, UINT64_MAX);
  msgpack_pack_int64(&pk, INT64_MIN);
  msgpack_pack_uint16(&pk, 300);
  msgpack_pack_int8(&pk, -100);
  msgpack_pack_double(&pk, 87.5);
  msgpack_pack_float(&pk, 0.25f);
  msgpack_pack_nil(&pk);
  msgpack_pack_false(&pk);
  msgpack_pack_str_with_body(&pk, "answers", 7);
  msgpack_pack_map(&pk, 2);
  msgpack_pack_str_with_body(&pk, "greeting", 8);
  msgpack_pack_true(&pk);
  msgpack_pack_str_with_body(&pk, "hold_s", 6);
  msgpack_pack_uint32(&pk, 70000);
  msgpack_pack_str_with_body(&pk, "at", 2);
  msgpack_pack_ext_with_body(&pk, "\x00\x00\x00\x00\x65\x5f\x3a\x00", 8, -1);
  msgpack_pack_str_with_body(&pk, "ext", 3);
  msgpack_pack_ext_with_body(&pk, "\x01\x02\x03", 3, 5);
  msgpack_pack_str_with_body(&pk, "empty", 5);
  msgpack_pack_array(&pk, 0);
  base(&e);
  e.type = S("evaluation.scored");
  e.src = S("autoscore");
  e.hdr_count = 1;
  e.hdr[0].k = S("channel");
  e.hdr[0].v = S("chat");
  e.body_packed = body.data;
  e.body_packed_len = body.size;
  put_env("valid-rich-body.msgpack", &e);

  /* Every length at its limit. */
  static char a[QM_KEY_MAX + 1];
  memset(a, 'a', sizeof a);
  base(&e);
  e.type.p = a;
  e.type.n = QM_TYPE_MAX;
  e.src.p = a;
  e.src.n = QM_NAME_MAX;
  e.key.p = a;
  e.key.n = QM_KEY_MAX;
  e.hdr_count = QM_HDR_MAX;
  static char names[QM_HDR_MAX][16];
  for (int i = 0; i < QM_HDR_MAX; i++) {
    snprintf(names[i], sizeof names[i], "h%02d", i);
    e.hdr[i].k = S(names[i]);
    e.hdr[i].v.p = a;
    e.hdr[i].v.n = QM_HDR_VALUE_MAX;
  }
  put_env("valid-limits.msgpack", &e);

  /* The deepest body the decoder accepts: envelope + body + 30 arrays. */
  msgpack_sbuffer_clear(&body);
  msgpack_sbuffer_write(&body, "\x81\xa1x", 3);
  for (int i = 0; i < 30; i++) msgpack_sbuffer_write(&body, "\x91", 1);
  msgpack_sbuffer_write(&body, "\x01", 1);
  base(&e);
  e.body_packed = body.data;
  e.body_packed_len = body.size;
  put_env("valid-nested-30.msgpack", &e);

  /* Refusals. */
  base(&e);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  qm_envelope_encode(&sb, &e);
  put("bad-ETRUNCATED-empty.msgpack", "", 0);
  put("bad-ETRUNCATED-half.msgpack", sb.data, sb.size / 2);
  put("bad-ETRUNCATED-last-byte.msgpack", sb.data, sb.size - 1);
  msgpack_sbuffer_write(&sb, "\x01\x02\x03", 3);
  put("bad-ETRAILING-3-bytes.msgpack", sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);

  put("bad-EDECODE-array.msgpack", "\x92\x01\x02", 3);
  put("bad-EDECODE-c1.msgpack", "\xc1", 1);
  put("bad-ETRUNCATED-map32-lie.msgpack", "\xdf\xff\xff\xff\xff", 5);
  put_raw("bad-EVERSION-7.msgpack", "v", EXTRA("\xa1v\x07"), 1);
  put_raw("bad-EMISSING-id.msgpack", "id", NULL, 0, 0);
  put_raw("bad-EMISSING-body.msgpack", "body", NULL, 0, 0);
  put_raw("bad-EFIELDTYPE-id-str.msgpack", "id", EXTRA("\xa2id\xa3" "abc"), 1);
  put_raw("bad-EFIELDTYPE-ts-zero.msgpack", "ts", EXTRA("\xa2ts\x00"), 1);
  put_raw("bad-EFIELDTYPE-type-upper.msgpack", "type", EXTRA("\xa4type\xa3" "Abc"), 1);
  put_raw("bad-EFIELDTYPE-hdr-int.msgpack", NULL, EXTRA("\xa3hdr\x81\xa7" "channel" "\x07"), 1);
  put_raw("bad-EDUPFIELD-type.msgpack", NULL, EXTRA("\xa4type\xa3" "abc"), 1);
  put_raw("bad-EDUPFIELD-hdr-key.msgpack", NULL,
          EXTRA("\xa3hdr\x82\xa1" "c" "\xa1" "x" "\xa1" "c" "\xa1" "y"), 1);
  put_raw("bad-EUNKNOWN-prio.msgpack", NULL, EXTRA("\xa4prio\x01"), 1);

  /* 40 nested arrays in the body. */
  msgpack_sbuffer_clear(&body);
  msgpack_sbuffer_write(&body, "\xa1x", 2);
  for (int i = 0; i < 40; i++) msgpack_sbuffer_write(&body, "\x91", 1);
  msgpack_sbuffer_write(&body, "\x01", 1);
  msgpack_sbuffer_init(&sb);
  msgpack_sbuffer_write(&sb, "\xa4" "body" "\x81", 6);
  msgpack_sbuffer_write(&sb, body.data, body.size);
  put_raw("bad-EDECODE-nested-40.msgpack", "body", sb.data, sb.size, 1);
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_destroy(&body);

  if (!g_failed) printf("seeds written to %s\n", g_dir);
  return g_failed;
}
