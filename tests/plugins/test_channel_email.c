/*
 * test_channel_email.c: the channel_email plugin (plugins/channel_email/),
 * loaded through the real loader as ingest loads it, fed crafted messages.
 *
 * Each test writes small messages into a temporary directory, calls
 * parse_file and looks at what the plugin submitted: the speaker of each
 * message, its text after MIME and charset decoding, the subject, the
 * attachments' metadata, the times in UTC, the agent, customer and queue,
 * and how messages group into threads (one submission per thread touched,
 * the same external_id as a thread grows across files). Every submitted
 * document must also pass qm_interaction_normalize, the check ingest runs,
 * so a document ingest would refuse fails here. Hostile inputs must not
 * crash and must end with the documented return code.
 *
 * The plugin is ${build}/plugins/channel_email.so, or the path in the
 * environment variable QM_EMAIL_PLUGIN.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <jansson.h>
#include <libconfig.h>

#include <qmesh/channel.h>

#include "interaction.h"
#include "loader.h"
#include "log.h"

#define SETTINGS                                                                                        \
  "agent_domains = [\"support.northwind.example\", \"Northwind.example\"];\n"                         \
  "default_queue = \"email-general\";\n"                                                               \
  "tenant = \"northwind\";\n"

/* One loaded plugin with an open instance and the submissions recorded. */
typedef struct fx {
  qmesh_channel_ctx_t ctx; /* first: submit finds the fixture from ctx */
  qm_plugin_t *p;
  config_t cfg;
  const qmesh_channel_ops_t *ops;
  void *st;
  json_t *docs;           /* every accepted submission, parsed */
  int refused;            /* submissions qm_interaction_normalize refused */
  char first_refusal[1100];
  int busy_after;         /* answer QMESH_BUSY once this many were accepted; -1 never */
  char dir[64];           /* temporary directory for the messages */
  char log_path[PATH_MAX];
  int log_fd;
} fx_t;

static int fx_submit(const qmesh_channel_ctx_t *ctx, const char *json, size_t len, char *reason,
                     size_t reasonlen) {
  fx_t *f = (fx_t *)ctx;
  if (f->busy_after >= 0 && json_array_size(f->docs) >= (size_t)f->busy_after) return QMESH_BUSY;
  qm_interaction_t ix;
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_interaction_normalize(json, len, NULL, &ix, &err) != 0) {
    if (!f->refused++) snprintf(f->first_refusal, sizeof f->first_refusal, "%s", err.msg);
    if (reason && reasonlen) snprintf(reason, reasonlen, "%s", err.msg);
    return QMESH_INVALID;
  }
  qm_interaction_free(&ix);
  json_t *doc = json_loadb(json, len, 0, NULL);
  json_array_append_new(f->docs, doc);
  return QMESH_OK;
}

static const char *plugin_path(void) {
  const char *env = getenv("QM_EMAIL_PLUGIN");
  return env && *env ? env : QMESH_BINARY_DIR "/plugins/channel_email.so";
}

/* Loads the plugin with `settings` and opens an instance; returns the
 * open's result. */
static int fx_open(fx_t *f, const char *settings) {
  qm_error_t err;
  qm_error_clear(&err);
  if (qm_plugin_load(plugin_path(), QMESH_KIND_CHANNEL, &f->p, &err) != 0) fail_msg("load: %s", err.msg);
  config_init(&f->cfg);
  assert_int_equal(config_read_string(&f->cfg, settings), CONFIG_TRUE);
  if (qm_plugin_validate_settings(f->p, config_root_setting(&f->cfg), "test.cfg", &err) != 0)
    fail_msg("settings: %s", err.msg);
  f->ops = qm_plugin_descriptor(f->p)->ops;
  return f->ops->open(qm_plugin_host(f->p), qm_plugin_settings(f->p), &f->st);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  f->ctx.struct_size = sizeof f->ctx;
  f->ctx.submit = fx_submit;
  f->ctx.name = "email";
  f->docs = json_array();
  f->busy_after = -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/qm_email_test_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  /* The plugin's log lines go to a file, so tests can read the reasons. */
  snprintf(f->log_path, sizeof f->log_path, "%s/log.txt", f->dir);
  f->log_fd = open(f->log_path, O_CREAT | O_RDWR | O_TRUNC, 0600);
  assert_true(f->log_fd >= 0);
  qm_log_set_fd(f->log_fd);
  qm_log_set_level(QM_LOG_DEBUG);
  *state = f;
  return fx_open(f, SETTINGS) == QMESH_OK ? 0 : -1;
}

static int teardown(void **state) {
  fx_t *f = *state;
  if (f->ops && f->st) f->ops->close(f->st);
  qm_plugin_destroy(&f->p);
  config_destroy(&f->cfg);
  json_decref(f->docs);
  qm_log_set_fd(2);
  close(f->log_fd);
  /* The directory holds only files this test wrote. */
  DIR *d = opendir(f->dir);
  if (d) {
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') {
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        unlink(p);
      }
    closedir(d);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

static const char *write_file(fx_t *f, const char *name, const char *data, size_t len) {
  static char paths[4][PATH_MAX];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, PATH_MAX, "%s/%s", f->dir, name);
  FILE *fp = fopen(p, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  fclose(fp);
  return p;
}

static int parse(fx_t *f, const char *name, const char *text) {
  return f->ops->parse_file(f->st, write_file(f, name, text, strlen(text)), &f->ctx);
}

static size_t ndocs(fx_t *f) { return json_array_size(f->docs); }

static json_t *doc(fx_t *f, size_t i) {
  json_t *d = json_array_get(f->docs, i);
  if (!d) fail_msg("no submission %zu (only %zu)", i, ndocs(f));
  return d;
}

/* A string at a dotted path with [n] indexes: "email.messages[1].text". */
static const char *str_at(json_t *v, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *tok = strtok(buf, "."); tok && v; tok = strtok(NULL, ".")) {
    char *br = strchr(tok, '[');
    if (br) *br = '\0';
    v = json_object_get(v, tok);
    while (br && v) {
      v = json_array_get(v, strtoul(br + 1, NULL, 10));
      br = strchr(br + 1, '[');
    }
  }
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static void assert_str(json_t *v, const char *path, const char *want) {
  const char *got = str_at(v, path);
  if (!got) {
    char *d = json_dumps(v, JSON_COMPACT);
    fail_msg("%s: missing in %s", path, d);
  }
  if (strcmp(got, want) != 0) fail_msg("%s: got \"%s\", want \"%s\"", path, got, want);
}

static size_t nmessages(json_t *d) { return json_array_size(json_object_get(json_object_get(d, "email"), "messages")); }

static int log_contains(fx_t *f, const char *needle) {
  FILE *fp = fopen(f->log_path, "r");
  assert_non_null(fp);
  char *line = NULL;
  size_t cap = 0;
  int found = 0;
  while (!found && getline(&line, &cap, fp) > 0) found = strstr(line, needle) != NULL;
  free(line);
  fclose(fp);
  return found;
}

static void assert_no_refusal(fx_t *f) {
  if (f->refused) fail_msg("%d documents refused by normalize, first: %s", f->refused, f->first_refusal);
}

/* ---- bodies ---- */

static void test_alternative_prefers_plain(void **state) {
  fx_t *f = *state;
  const char *m =
    "From: Ana Silva <Ana.Silva@Example.COM>\n"
    "To: help@support.northwind.example\n"
    "Subject: Where is my parcel?\n"
    "Date: Tue, 05 Mar 2024 10:15:00 +0100\n"
    "Message-ID: <alt-1@example.com>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative; boundary=\"b1\"\n"
    "\n"
    "--b1\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hello,\n"
    "my parcel has not arrived.   \n"
    "--b1\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<p>HTML version that must not be used</p>\n"
    "--b1--\n";
  assert_int_equal(parse(f, "alt.eml", m), QMESH_OK);
  assert_int_equal(ndocs(f), 1);
  json_t *d = doc(f, 0);
  assert_str(d, "channel", "email");
  assert_str(d, "external_id", "alt-1@example.com");
  assert_str(d, "tenant", "northwind");
  assert_str(d, "direction", "inbound");
  assert_str(d, "queue", "email-general");
  assert_str(d, "customer.id", "ana.silva@example.com");
  /* Nobody from the contact center has answered yet. */
  assert_str(d, "agent.id", "unassigned");
  assert_str(d, "started_at", "2024-03-05T09:15:00Z");
  assert_str(d, "email.subject", "Where is my parcel?");
  assert_str(d, "email.messages[0].speaker", "customer");
  assert_str(d, "email.messages[0].from", "ana.silva@example.com");
  assert_str(d, "email.messages[0].to[0]", "help@support.northwind.example");
  assert_str(d, "email.messages[0].text", "Hello,\nmy parcel has not arrived.");
  assert_int_equal(json_array_size(json_object_get(json_array_get(json_object_get(json_object_get(d, "email"), "messages"), 0), "attachments")), 0);
  assert_no_refusal(f);
}

static void test_html_only_becomes_text(void **state) {
  fx_t *f = *state;
  const char *m =
    "From: bob@example.org\n"
    "To: help@support.northwind.example\n"
    "Subject: html\n"
    "Date: Tue, 05 Mar 2024 10:15:00 +0000\n"
    "Message-ID: <html-1@example.org>\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<html><head><title>Ignored title</title><style>p { color: red; }</style></head>\n"
    "<body><!-- a comment <p>hidden</p> -->\n"
    "<p>Hello&nbsp;there,</p><p>Order &#35;123 &amp; the   refund\n"
    "<br>are late &mdash; &#x263A; &unknown; a &lt; b</p>\n"
    "<script type=\"text/javascript\">var x = '<p>no</p>';</script>\n"
    "<ul><li>one</li><li>two <b>bold</b></li></ul><div>Caf&eacute; <a href=\"x>y\">link</a></div></body></html>\n";
  assert_int_equal(parse(f, "html.eml", m), QMESH_OK);
  assert_str(doc(f, 0), "email.messages[0].text",
             "Hello there,\n\nOrder #123 & the refund\nare late \xE2\x80\x94 \xE2\x98\xBA &unknown; a < b\n\n"
             "- one\n- two bold\n\nCaf\xC3\xA9 link");
  assert_no_refusal(f);
}

static void test_transfer_encodings(void **state) {
  fx_t *f = *state;
  /* "Grüße aus München" in UTF-8, base64. */
  const char *b64 =
    "From: c@example.net\nTo: x@support.northwind.example\nSubject: b64\n"
    "Date: Wed, 06 Mar 2024 08:00:00 +0000\nMessage-ID: <b64@example.net>\n"
    "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    "R3LDvMOfZSBhdXMgTcO8bmNoZW4=\n";
  assert_int_equal(parse(f, "b64.eml", b64), QMESH_OK);
  assert_str(doc(f, 0), "email.messages[0].text", "Gr\xC3\xBC\xC3\x9F" "e aus M\xC3\xBCnchen");

  const char *qp =
    "From: c@example.net\r\nTo: x@support.northwind.example\r\nSubject: qp\r\n"
    "Date: Wed, 06 Mar 2024 08:00:00 +0000\r\nMessage-ID: <qp@example.net>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Caf=C3=A9 au lait, a soft=\r\n line break and a=3Dsign.\r\n";
  assert_int_equal(parse(f, "qp.eml", qp), QMESH_OK);
  assert_str(doc(f, 1), "email.messages[0].text", "Caf\xC3\xA9 au lait, a soft line break and a=sign.");
  assert_no_refusal(f);
}

static void test_charsets_and_encoded_words(void **state) {
  fx_t *f = *state;
  const char *latin1 =
    "From: =?ISO-8859-1?Q?Fran=E7ois_M=FCller?= <Francois@Example.FR>\n"
    "To: help@support.northwind.example\n"
    "Subject: =?ISO-8859-1?Q?R=E9clamation_urgente?=\n"
    "Date: Thu, 07 Mar 2024 12:00:00 -0500\n"
    "Message-ID: <latin1@example.fr>\n"
    "Content-Type: text/plain; charset=ISO-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n\n"
    "J'ai =E9t=E9 d=E9bit=E9 deux fois.\n";
  assert_int_equal(parse(f, "latin1.eml", latin1), QMESH_OK);
  json_t *d = doc(f, 0);
  assert_str(d, "email.subject", "R\xC3\xA9" "clamation urgente");
  assert_str(d, "email.messages[0].from", "francois@example.fr");
  assert_str(d, "email.messages[0].text", "J'ai \xC3\xA9t\xC3\xA9 d\xC3\xA9" "bit\xC3\xA9 deux fois.");
  assert_str(d, "started_at", "2024-03-07T17:00:00Z");

  /* windows-1252 in 8 bits: the euro sign and curly quotes live in the
   * range ISO-8859-1 leaves to control characters. The subject is an
   * encoded word in windows-1252 too. */
  const char *cp1252 =
    "From: shop@example.de\n"
    "To: help@support.northwind.example\n"
    "Subject: =?windows-1252?Q?=93Preis=94_=80_10?=\n"
    "Date: Thu, 07 Mar 2024 12:00:00 +0000\n"
    "Message-ID: <cp1252@example.de>\n"
    "Content-Type: text/plain; charset=windows-1252\n"
    "Content-Transfer-Encoding: 8bit\n\n"
    "Der \x93Preis\x94 war 10 \x80.\n";
  assert_int_equal(parse(f, "cp1252.eml", cp1252), QMESH_OK);
  d = doc(f, 1);
  assert_str(d, "email.subject", "\xE2\x80\x9CPreis\xE2\x80\x9D \xE2\x82\xAC 10");
  assert_str(d, "email.messages[0].text", "Der \xE2\x80\x9CPreis\xE2\x80\x9D war 10 \xE2\x82\xAC.");

  /* 8-bit text declaring no charset at all is read as windows-1252. */
  const char *nocharset =
    "From: shop@example.de\nTo: help@support.northwind.example\nSubject: none\n"
    "Date: Thu, 07 Mar 2024 12:00:00 +0000\nMessage-ID: <nocs@example.de>\n\n"
    "Stra\xDF" "e\n";
  assert_int_equal(parse(f, "nocs.eml", nocharset), QMESH_OK);
  assert_str(doc(f, 2), "email.messages[0].text", "Stra\xC3\x9F" "e");
  assert_no_refusal(f);
}

static void test_attachment_metadata(void **state) {
  fx_t *f = *state;
  /* 300 decoded bytes: 0..255 then 44 more, base64 over several lines. */
  unsigned char raw[300];
  for (int i = 0; i < 300; i++) raw[i] = (unsigned char)i;
  char *b64 = g_base64_encode(raw, sizeof raw);
  GString *m = g_string_new(
    "From: dana@support.northwind.example\n"
    "To: Ana <ana@example.com>, bob@example.org\n"
    "Cc: team@support.northwind.example\n"
    "Subject: Your invoice\n"
    "Date: Fri, 08 Mar 2024 09:30:00 +0000\n"
    "Message-ID: <att-1@support.northwind.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"mix\"\n\n"
    "--mix\nContent-Type: text/plain; charset=us-ascii\n\nPlease find the invoice attached.\n"
    "--mix\nContent-Type: application/pdf; name=\"invoice.pdf\"\n"
    "Content-Disposition: attachment; filename=\"invoice.pdf\"\n"
    "Content-Transfer-Encoding: base64\n\n");
  for (size_t i = 0; i < strlen(b64); i += 76) g_string_append_printf(m, "%.76s\n", b64 + i);
  g_string_append(m, "--mix\nContent-Type: image/png\nContent-Disposition: inline\nContent-Transfer-Encoding: base64\n\n"
                     "iVBORw0KGgo=\n--mix--\n");
  g_free(b64);
  assert_int_equal(parse(f, "att.eml", m->str), QMESH_OK);
  g_string_free(m, TRUE);
  json_t *d = doc(f, 0);
  json_t *msg = json_array_get(json_object_get(json_object_get(d, "email"), "messages"), 0);
  json_t *att = json_object_get(msg, "attachments");
  assert_int_equal(json_array_size(att), 2);
  assert_str(msg, "attachments[0].filename", "invoice.pdf");
  assert_str(msg, "attachments[0].content_type", "application/pdf");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(att, 0), "size")), 300);
  /* An unnamed inline image is still listed, without a file name. */
  assert_str(msg, "attachments[1].content_type", "image/png");
  assert_null(json_object_get(json_array_get(att, 1), "filename"));
  assert_int_equal(json_integer_value(json_object_get(json_array_get(att, 1), "size")), 8);
  assert_str(msg, "text", "Please find the invoice attached.");
  /* Sent by an agent to customers: outbound, the agent named by the local
   * part, the customer the first recipient outside the agent domains. */
  assert_str(d, "direction", "outbound");
  assert_str(d, "agent.id", "dana");
  assert_str(d, "customer.id", "ana@example.com");
  assert_str(msg, "speaker", "agent");
  assert_str(msg, "cc[0]", "team@support.northwind.example");
  assert_no_refusal(f);
}

/* ---- threads ---- */

static const char *thread_a =
  "From: Ana Silva <ana@example.com>\n"
  "To: help@support.northwind.example\n"
  "Subject: Charged twice\n"
  "Date: Mon, 11 Mar 2024 16:00:00 +0200\n"
  "Message-ID: <root-1@example.com>\n\n"
  "I was charged twice this month.\n";
static const char *thread_b =
  "From: Dana Reyes <dana.reyes@support.northwind.example>\n"
  "To: ana@example.com\n"
  "Subject: Re: Charged twice\n"
  "Date: Mon, 11 Mar 2024 15:30:00 +0000\n"
  "Message-ID: <reply-2@support.northwind.example>\n"
  "In-Reply-To: <root-1@example.com>\n"
  "References: <root-1@example.com>\n"
  "X-Northwind-Agent-Id: a-17\n"
  "X-Northwind-Queue: billing\n\n"
  "Sorry about that, I have refunded one charge.\n";
static const char *thread_c =
  "From: ana@example.com\n"
  "To: dana.reyes@support.northwind.example\n"
  "Subject: Re: Charged twice\n"
  "Date: Mon, 11 Mar 2024 17:45:10 +0000\n"
  "Message-ID: <reply-3@example.com>\n"
  "In-Reply-To: <reply-2@support.northwind.example>\n"
  "References: <root-1@example.com> <reply-2@support.northwind.example>\n\n"
  "Thanks!\n\n> Sorry about that, I have refunded one charge.\n";

static void test_thread_across_files(void **state) {
  fx_t *f = *state;
  assert_int_equal(parse(f, "1.eml", thread_a), QMESH_OK);
  assert_int_equal(parse(f, "2.eml", thread_b), QMESH_OK);
  assert_int_equal(parse(f, "3.eml", thread_c), QMESH_OK);
  assert_int_equal(ndocs(f), 3);
  for (size_t i = 0; i < 3; i++) {
    assert_str(doc(f, i), "external_id", "root-1@example.com");
    assert_int_equal(nmessages(doc(f, i)), i + 1);
  }
  json_t *d = doc(f, 2);
  assert_str(d, "direction", "inbound");
  assert_str(d, "agent.id", "a-17");
  assert_str(d, "agent.name", "Dana Reyes");
  assert_str(d, "queue", "billing");
  assert_str(d, "customer.id", "ana@example.com");
  assert_str(d, "email.subject", "Charged twice");
  /* 16:00 +0200 is 14:00 UTC; the thread ends with the last reply. */
  assert_str(d, "started_at", "2024-03-11T14:00:00Z");
  assert_str(d, "ended_at", "2024-03-11T17:45:10Z");
  assert_str(d, "email.messages[0].speaker", "customer");
  assert_str(d, "email.messages[1].speaker", "agent");
  assert_str(d, "email.messages[2].speaker", "customer");
  assert_str(d, "email.messages[1].in_reply_to", "root-1@example.com");
  assert_str(d, "email.messages[2].date", "2024-03-11T17:45:10Z");
  assert_str(d, "email.messages[2].text", "Thanks!\n\n> Sorry about that, I have refunded one charge.");
  /* Before the agent answered, the thread had no agent and no queue
   * header: the default queue applied. */
  assert_str(doc(f, 0), "agent.id", "unassigned");
  assert_str(doc(f, 0), "queue", "email-general");

  /* A file parsed again (after a crash, say) re-submits the same thread,
   * byte for byte, which ingest recognises as nothing new. */
  assert_int_equal(parse(f, "2-again.eml", thread_b), QMESH_OK);
  assert_int_equal(ndocs(f), 4);
  assert_true(json_equal(doc(f, 3), doc(f, 2)));
  assert_no_refusal(f);
}

static void test_thread_reply_before_root(void **state) {
  fx_t *f = *state;
  /* The last reply arrives first: its thread is already named by the
   * oldest id it references, so the name never changes. */
  assert_int_equal(parse(f, "3.eml", thread_c), QMESH_OK);
  assert_int_equal(parse(f, "1.eml", thread_a), QMESH_OK);
  assert_int_equal(ndocs(f), 2);
  assert_str(doc(f, 0), "external_id", "root-1@example.com");
  assert_str(doc(f, 1), "external_id", "root-1@example.com");
  assert_int_equal(nmessages(doc(f, 1)), 2);
  /* Sorted by date whatever the arrival order. */
  assert_str(doc(f, 1), "email.messages[0].message_id", "root-1@example.com");
  assert_no_refusal(f);
}

static void test_mbox_two_threads(void **state) {
  fx_t *f = *state;
  const char *mbox =
    "From ana@example.com Mon Mar 11 14:00:00 2024\n"
    "From: ana@example.com\nTo: help@support.northwind.example\nSubject: First\n"
    "Date: Mon, 11 Mar 2024 14:00:00 +0000\nMessage-ID: <t1@example.com>\n\n"
    "Thread one.\n>From the start, it was wrong.\n\n"
    "From bob@example.org Mon Mar 11 14:05:00 2024\n"
    "From: bob@example.org\nTo: help@support.northwind.example\nSubject: Second\n"
    "Date: Mon, 11 Mar 2024 14:05:00 +0000\nMessage-ID: <t2@example.org>\n\n"
    "Thread two.\n\n"
    "From sam@northwind.example Mon Mar 11 15:00:00 2024\n"
    "From: Sam <SAM@northwind.example>\nTo: ana@example.com\nSubject: Re: First\n"
    "Date: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <t1-r@northwind.example>\n"
    "In-Reply-To: <t1@example.com>\n\n"
    "Answer to thread one.\n";
  assert_int_equal(parse(f, "box.mbox", mbox), QMESH_OK);
  assert_int_equal(ndocs(f), 2);
  json_t *d1 = doc(f, 0), *d2 = doc(f, 1);
  assert_str(d1, "external_id", "t1@example.com");
  assert_int_equal(nmessages(d1), 2);
  assert_str(d1, "email.messages[1].speaker", "agent");
  /* No agent-id header: the local part of the agent's address. */
  assert_str(d1, "agent.id", "sam");
  assert_str(d1, "agent.name", "Sam");
  /* mboxrd's ">From " escape is undone. */
  assert_str(d1, "email.messages[0].text", "Thread one.\nFrom the start, it was wrong.");
  assert_str(d2, "external_id", "t2@example.org");
  assert_int_equal(nmessages(d2), 1);
  assert_str(d2, "email.messages[0].text", "Thread two.");
  assert_no_refusal(f);
}

static void test_busy_is_returned(void **state) {
  fx_t *f = *state;
  f->busy_after = 0;
  assert_int_equal(parse(f, "1.eml", thread_a), QMESH_BUSY);
  assert_int_equal(ndocs(f), 0);
  /* Offered again once the core has room: the thread goes through. */
  f->busy_after = -1;
  assert_int_equal(parse(f, "1.eml", thread_a), QMESH_OK);
  assert_int_equal(ndocs(f), 1);
}

/* ---- hostile input ---- */

static void test_hostile_inputs(void **state) {
  fx_t *f = *state;
  assert_int_equal(parse(f, "empty.eml", ""), QMESH_ERR);
  assert_true(log_contains(f, "the file is empty"));
  assert_int_equal(f->ops->parse_file(f->st, "/nonexistent/qm/x.eml", &f->ctx), QMESH_ERR);
  assert_int_equal(f->ops->parse_file(f->st, f->dir, &f->ctx), QMESH_ERR);

  /* Binary garbage, including NULs. */
  unsigned char junk[4096];
  unsigned int seed = 12345;
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(rand_r(&seed) >> 7);
  int rc = f->ops->parse_file(f->st, write_file(f, "junk.eml", (const char *)junk, sizeof junk), &f->ctx);
  assert_int_equal(rc, QMESH_ERR);

  /* No Date: nothing a document could be built from. */
  assert_int_equal(parse(f, "nodate.eml", "From: a@example.com\nSubject: x\n\nbody\n"), QMESH_ERR);
  assert_true(log_contains(f, "no valid Date header"));
  assert_int_equal(parse(f, "nofrom.eml", "Date: Mon, 11 Mar 2024 15:00:00 +0000\nSubject: x\n\nbody\n"), QMESH_ERR);
  assert_true(log_contains(f, "no From address"));
  assert_int_equal(parse(f, "old.eml", "From: a@example.com\nDate: Mon, 11 Mar 1985 15:00:00 +0000\n\nbody\n"),
                   QMESH_ERR);
  assert_int_equal(ndocs(f), 0);

  /* Truncated MIME: the boundary never closes and base64 stops mid-way. */
  const char *trunc =
    "From: a@example.com\nTo: b@support.northwind.example\nDate: Mon, 11 Mar 2024 15:00:00 +0000\n"
    "Message-ID: <trunc@example.com>\nContent-Type: multipart/mixed; boundary=zz\n\n"
    "--zz\nContent-Type: text/plain\n\nvisible text\n--zz\nContent-Type: application/zip; name=a.zip\n"
    "Content-Transfer-Encoding: base64\n\nUEsDBBQAAAAIA";
  assert_int_equal(parse(f, "trunc.eml", trunc), QMESH_OK);
  assert_str(doc(f, 0), "email.messages[0].text", "visible text");
  assert_str(doc(f, 0), "email.messages[0].attachments[0].filename", "a.zip");

  /* Invalid UTF-8 in headers, as raw 8-bit and inside an encoded word
   * that claims UTF-8: the document must still be valid UTF-8. */
  const char *badutf =
    "From: \xFF\xFE Weird \xC3 <weird@example.com>\nTo: b@support.northwind.example\n"
    "Subject: bad \xC3\x28 bytes =?utf-8?B?/w==?= \xED\xA0\x80 end\n"
    "Date: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <bad\xFFid@example.com>\n"
    "X-Northwind-Queue: q\xFF\n\nbody \xFF\xFE\n";
  assert_int_equal(parse(f, "badutf.eml", badutf), QMESH_OK);
  json_t *d = doc(f, 1);
  assert_non_null(str_at(d, "email.subject"));
  assert_true(g_utf8_validate(str_at(d, "email.subject"), -1, NULL));
  assert_true(g_utf8_validate(str_at(d, "external_id"), -1, NULL));

  /* MIME nested far deeper than the 32 levels read: the text at the bottom
   * is skipped, with a warning, and the top-level text is kept. */
  GString *deep = g_string_new("From: a@example.com\nTo: b@support.northwind.example\n"
                               "Date: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <deep@example.com>\n"
                               "Content-Type: multipart/mixed; boundary=b0\n\n"
                               "--b0\nContent-Type: text/plain\n\ntop text\n");
  for (int i = 0; i < 300; i++)
    g_string_append_printf(deep, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i, i + 1);
  g_string_append(deep, "--b300\nContent-Type: text/plain\n\nbottom text\n");
  for (int i = 300; i >= 0; i--) g_string_append_printf(deep, "--b%d--\n", i);
  assert_int_equal(parse(f, "deep.eml", deep->str), QMESH_OK);
  g_string_free(deep, TRUE);
  assert_str(doc(f, 2), "email.messages[0].text", "top text");
  assert_true(log_contains(f, "nested deeper than 32 levels"));

  /* A 1 MiB header line: the subject is cut to what ingest takes. */
  GString *huge = g_string_new("From: a@example.com\nTo: b@support.northwind.example\n"
                               "Date: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <huge@example.com>\nSubject: ");
  for (int i = 0; i < 1024 * 1024; i++) g_string_append_c(huge, (char)('a' + i % 26));
  g_string_append(huge, "\nX-Long: ");
  for (int i = 0; i < 100000; i++) g_string_append(huge, "<x@y> ");
  g_string_append(huge, "\n\nshort body\n");
  assert_int_equal(parse(f, "huge.eml", huge->str), QMESH_OK);
  g_string_free(huge, TRUE);
  assert_int_equal(strlen(str_at(doc(f, 3), "email.subject")), 1000);

  /* A line past 2 MiB is refused before GMime parses anything. */
  GString *longline = g_string_new("From: a@example.com\nTo: b@support.northwind.example\n"
                                   "Date: Mon, 11 Mar 2024 15:00:00 +0000\nSubject: x\nX-Junk: ");
  for (int i = 0; i < 3 * 1024 * 1024; i++) g_string_append_c(longline, 'j');
  g_string_append(longline, "\n\nbody\n");
  assert_int_equal(parse(f, "longline.eml", longline->str), QMESH_ERR);
  g_string_free(longline, TRUE);
  assert_true(log_contains(f, "longline.eml: refused: line 5 is longer than 2097152 bytes (RFC 5322 allows 998)"));

  /* A Message-ID too long for an external_id is replaced by its hash. */
  GString *longid = g_string_new("From: a@example.com\nTo: b@support.northwind.example\n"
                                 "Date: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <");
  for (int i = 0; i < 400; i++) g_string_append_c(longid, 'x');
  g_string_append(longid, "@example.com>\n\nbody\n");
  assert_int_equal(parse(f, "longid.eml", longid->str), QMESH_OK);
  g_string_free(longid, TRUE);
  assert_int_equal(strncmp(str_at(doc(f, 4), "external_id"), "sha256:", 7), 0);

  /* A reference cycle (each message claims the other as parent) must not
   * hang the thread index. */
  assert_int_equal(parse(f, "cyc1.eml",
                         "From: a@example.com\nDate: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <c1@x>\n"
                         "In-Reply-To: <c2@x>\n\none\n"),
                   QMESH_OK);
  assert_int_equal(parse(f, "cyc2.eml",
                         "From: a@example.com\nDate: Mon, 11 Mar 2024 15:01:00 +0000\nMessage-ID: <c2@x>\n"
                         "In-Reply-To: <c1@x>\n\ntwo\n"),
                   QMESH_OK);
  assert_int_equal(nmessages(doc(f, 6)), 2);
  assert_no_refusal(f);
}

static void test_max_message_kb(void **state) {
  fx_t *f = *state;
  f->ops->close(f->st);
  f->st = NULL;
  qm_plugin_destroy(&f->p);
  config_destroy(&f->cfg);
  assert_int_equal(fx_open(f, SETTINGS "max_message_kb = 1;\n"), QMESH_OK);
  GString *big = g_string_new("From: a@example.com\nDate: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <big@x>\n\n");
  for (int i = 0; i < 40; i++) g_string_append(big, "0123456789012345678901234567890123456789012345678901234567890\n");
  assert_int_equal(parse(f, "big.eml", big->str), QMESH_ERR);
  assert_true(log_contains(f, "is over max_message_kb (1 KiB)"));
  /* In an mbox only the large message is skipped. */
  GString *box = g_string_new("From a@example.com Mon Mar 11 15:00:00 2024\n");
  g_string_append(box, big->str);
  g_string_append(box, "\nFrom a@example.com Mon Mar 11 15:00:00 2024\n"
                       "From: a@example.com\nDate: Mon, 11 Mar 2024 15:00:00 +0000\nMessage-ID: <small@x>\n\nsmall\n");
  assert_int_equal(parse(f, "box.mbox", box->str), QMESH_OK);
  assert_int_equal(ndocs(f), 1);
  assert_str(doc(f, 0), "external_id", "small@x");
  g_string_free(big, TRUE);
  g_string_free(box, TRUE);
}

static void test_settings_refused(void **state) {
  fx_t *f = *state;
  f->ops->close(f->st);
  f->st = NULL;
  qm_plugin_destroy(&f->p);
  config_destroy(&f->cfg);
  assert_int_equal(fx_open(f, "agent_domains = [];\n"), QMESH_ERR);
  assert_true(log_contains(f, "agent_domains is empty"));
  assert_null(f->st);
  qm_plugin_destroy(&f->p);
  config_destroy(&f->cfg);
  assert_int_equal(fx_open(f, "agent_domains = [\"x.example\"];\ntenant = \"no spaces allowed\";\n"), QMESH_ERR);
  assert_true(log_contains(f, "tenant must be"));
  assert_null(f->st);
}

/* Every sample message under samples/email/ (when that folder exists)
 * parses, in name order through one instance so threads split over files
 * join, and every document submitted passes ingest's checks. */
static void test_samples(void **state) {
  fx_t *f = *state;
  const char *dir = QMESH_SOURCE_DIR "/samples/email";
  struct dirent **names = NULL;
  int n = scandir(dir, &names, NULL, alphasort);
  if (n < 0) {
    print_message("no %s: skipped\n", dir);
    skip();
  }
  int parsed = 0;
  for (int i = 0; i < n; i++) {
    const char *nm = names[i]->d_name;
    size_t l = strlen(nm);
    if (nm[0] != '.' && ((l > 4 && strcmp(nm + l - 4, ".eml") == 0) || (l > 5 && strcmp(nm + l - 5, ".mbox") == 0))) {
      char p[PATH_MAX];
      snprintf(p, sizeof p, "%s/%s", dir, nm);
      int rc = f->ops->parse_file(f->st, p, &f->ctx);
      if (rc != QMESH_OK) fail_msg("%s: parse_file returned %d", nm, rc);
      parsed++;
    }
    free(names[i]);
  }
  free(names);
  assert_no_refusal(f);
  if (!parsed) return;
  /* samples/README.md: 21 threads, 66 messages. The last revision of each
   * thread holds all its messages, whichever file they came in. */
  json_t *last = json_object();
  for (size_t i = 0; i < ndocs(f); i++) json_object_set(last, str_at(doc(f, i), "external_id"), doc(f, i));
  size_t msgs = 0;
  const char *id;
  json_t *d;
  json_object_foreach(last, id, d) {
    msgs += nmessages(d);
    /* Every thread an agent answered is attributed to a real agent id. */
    int answered = 0;
    json_t *m;
    size_t k;
    json_array_foreach(json_object_get(json_object_get(d, "email"), "messages"), k, m) answered |=
      strcmp(json_string_value(json_object_get(m, "speaker")), "agent") == 0;
    if (answered && strncmp(str_at(d, "agent.id"), "a-", 2) != 0)
      fail_msg("%s: answered by an agent but agent.id is %s", id, str_at(d, "agent.id"));
    assert_str(d, "tenant", "northwind");
  }
  print_message("samples/email: %d files, %zu submissions, %zu threads, %zu messages\n", parsed, ndocs(f),
                json_object_size(last), msgs);
  assert_int_equal(json_object_size(last), 21);
  assert_int_equal(msgs, 66);
  json_decref(last);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_alternative_prefers_plain, setup, teardown),
    cmocka_unit_test_setup_teardown(test_html_only_becomes_text, setup, teardown),
    cmocka_unit_test_setup_teardown(test_transfer_encodings, setup, teardown),
    cmocka_unit_test_setup_teardown(test_charsets_and_encoded_words, setup, teardown),
    cmocka_unit_test_setup_teardown(test_attachment_metadata, setup, teardown),
    cmocka_unit_test_setup_teardown(test_thread_across_files, setup, teardown),
    cmocka_unit_test_setup_teardown(test_thread_reply_before_root, setup, teardown),
    cmocka_unit_test_setup_teardown(test_mbox_two_threads, setup, teardown),
    cmocka_unit_test_setup_teardown(test_busy_is_returned, setup, teardown),
    cmocka_unit_test_setup_teardown(test_hostile_inputs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_max_message_kb, setup, teardown),
    cmocka_unit_test_setup_teardown(test_settings_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_samples, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
