/*
 * email_internal.h: what the files of the channel_email plugin share.
 *
 * mime_read.c turns RFC 5322 messages (one per .eml, many per mbox) into
 * em_message_t records with GMime; html_text.c turns an HTML body into plain
 * text; channel_email.c keeps the thread index, builds the interaction
 * documents and implements the plugin ABI. Nothing here is exported: the
 * plugin is built with -fvisibility=hidden and only qmesh_plugin_v1 is
 * visible.
 */
#ifndef QM_EMAIL_INTERNAL_H
#define QM_EMAIL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

/* Bounds on what one message may contribute. They keep a hostile message
 * from making documents that ingest would refuse or that eat memory. */
#define QM_EMAIL_MAX_DEPTH 32         /* MIME nesting levels walked */
#define QM_EMAIL_MAX_TEXT (64 * 1024) /* bytes of body text kept per message */
#define QM_EMAIL_MAX_ID 256           /* bytes of a message id (external_id limit) */
#define QM_EMAIL_MAX_SUBJECT 1000     /* bytes of a subject (ingest's limit) */
#define QM_EMAIL_MAX_ADDR 256         /* bytes of one address or display name */
#define QM_EMAIL_MAX_RCPT 100         /* To or Cc addresses kept per message */
#define QM_EMAIL_MAX_REFS 128         /* References entries kept per message */
#define QM_EMAIL_MAX_ATTACH 100       /* attachments listed per message */
#define QM_EMAIL_MAX_HEADER 1024      /* bytes of the agent-id and queue header values */

typedef struct em_attachment {
  char *filename;     /* "" when the part names none */
  char *content_type; /* "type/subtype", lower-case */
  int64_t size;       /* bytes of the decoded content */
} em_attachment_t;

/* One message as the plugin keeps it in its thread index. Every string is
 * valid UTF-8 without NUL bytes, owned by the record (g_free). */
typedef struct em_message {
  char *message_id;  /* without <>; generated ("noid-<hex>") when absent */
  char *in_reply_to; /* NULL when absent */
  char **refs;       /* References, oldest first */
  size_t nrefs;
  char *from_addr; /* lower-case, never empty */
  char *from_name; /* NULL when absent */
  char **to, **cc;
  size_t nto, ncc;
  int64_t date_ms; /* Unix time in milliseconds, UTC */
  char *subject;   /* "" when absent */
  char *text;      /* the body as plain text */
  char *agent_id;  /* value of the agent-id header, NULL when absent */
  char *queue;     /* value of the queue header, NULL when absent */
  em_attachment_t *att;
  size_t natt;
  uint64_t seq; /* arrival order in the plugin instance, for stable sorting */
} em_message_t;

void qm_email_message_free(em_message_t *m);

/* What mime_read.c needs from the plugin's settings. */
typedef struct em_read_opts {
  const char *agent_id_header; /* header names; NULL or "" to ignore */
  const char *queue_header;
  int64_t max_message_bytes;
  /* Reports a skipped message or a refused file; `level` is QMESH_LOG_*. */
  void (*log)(void *arg, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
  void *log_arg;
} em_read_opts_t;

/* Reads every message in the file at `path` (a single RFC 5322 message, or
 * an mbox when the file starts with a "From " line) and appends an
 * em_message_t for each usable one to `out` (whose free function must be
 * qm_email_message_free). Unusable messages (no valid Date, too large) are
 * skipped with a logged reason. Returns 0, or -1 when the file cannot be
 * opened or is refused as a whole (logged). */
int qm_email_read_file(const char *path, const em_read_opts_t *opts, GPtrArray *out);

/* Converts `len` bytes of HTML (UTF-8) into plain text: tags removed,
 * script, style and head content dropped, entities decoded, white space
 * collapsed, paragraph and line breaks kept. Returns a g_malloc'd string. */
char *qm_email_html_to_text(const char *html, size_t len);

/* Returns a g_malloc'd copy of `len` bytes as valid UTF-8 without NULs:
 * bytes that are not UTF-8 are read as windows-1252 when the whole text is
 * not UTF-8 (`guess_8bit`), else replaced by U+FFFD. The result is cut at a
 * character boundary to at most `max` bytes. */
char *qm_email_clean_utf8(const char *s, size_t len, int guess_8bit, size_t max);

#endif
