/*
 * mime_read.c: reads e-mail files into message records for the
 * channel_email plugin, with GMime 3.
 *
 * A file is one RFC 5322 message (.eml), or an mbox (mboxo or mboxrd) when
 * it starts with a "From " line, whatever its name. Each message becomes an
 * em_message_t holding only what the interaction document needs: ids for
 * threading, addresses, the date, the subject, the body as plain UTF-8 text
 * and the attachments' metadata. GMime decodes base64 and quoted-printable,
 * RFC 2047 encoded words and body charsets; this file picks the body out of
 * the MIME tree (text/plain preferred, HTML converted when a message has no
 * plain text), and makes sure every string it keeps is valid UTF-8 of a
 * bounded length, whatever the input was.
 *
 * Every GMime object created here is released before the function that
 * created it returns; the only state left behind is GMime's own process-wide
 * tables (initialised once by channel_email.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include <qmesh/plugin.h>

#include "email_internal.h"

/* ---- strings ---- */

/* Cuts s (valid UTF-8) to at most max bytes at a character boundary. */
static void cut_utf8(GString *s, size_t max) {
  if (s->len <= max) return;
  size_t n = max;
  while (n > 0 && ((unsigned char)s->str[n] & 0xC0) == 0x80) n--;
  g_string_truncate(s, n);
}

char *qm_email_clean_utf8(const char *s, size_t len, int guess_8bit, size_t max) {
  if (!s) s = "", len = 0;
  GString *out = g_string_sized_new(len < max ? len + 1 : max + 1);
  if (g_utf8_validate(s, (gssize)len, NULL) || !guess_8bit) {
    /* Valid bytes are copied; each invalid byte becomes U+FFFD. NUL is
     * valid UTF-8 but not allowed in a C string or wanted in a document. */
    const char *p = s, *end = s + len;
    while (p < end && out->len <= max) {
      gunichar c = g_utf8_get_char_validated(p, (gssize)(end - p));
      if (c == (gunichar)-1 || c == (gunichar)-2) {
        g_string_append(out, "\xEF\xBF\xBD");
        p++;
        continue;
      }
      const char *next = g_utf8_next_char(p);
      if (c) g_string_append_len(out, p, next - p);
      p = next;
    }
  } else {
    /* Eight-bit text that is not UTF-8 was almost always written in a
     * Western code page; windows-1252 is a superset of ISO-8859-1 for every
     * printable character, so reading it so is right for both. */
    for (size_t i = 0; i < len && out->len <= max; i++) {
      unsigned char b = (unsigned char)s[i];
      static const uint16_t c1[32] = {
        0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
      };
      if (!b) continue;
      if (b < 0x80) g_string_append_c(out, (char)b);
      else if (b < 0xA0) g_string_append_unichar(out, c1[b - 0x80]);
      else g_string_append_unichar(out, b);
    }
  }
  cut_utf8(out, max);
  return g_string_free(out, FALSE);
}

/* A header-ish value: cleaned, white space trimmed, bounded; NULL for NULL
 * or empty. */
static char *clean_field(const char *s, size_t max) {
  if (!s) return NULL;
  char *c = qm_email_clean_utf8(s, strlen(s), 1, max);
  g_strstrip(c);
  if (!*c) {
    g_free(c);
    return NULL;
  }
  return c;
}

/* A message id: without <> and white space; an id too long for an
 * external_id is replaced by its SHA-256, so it stays unique and stable. */
static char *norm_id(const char *raw) {
  char *c = clean_field(raw, 64 * 1024);
  if (!c) return NULL;
  char *p = c;
  size_t n = strlen(p);
  if (*p == '<') p++, n--;
  if (n && p[n - 1] == '>') n--;
  char *id = g_strndup(p, n);
  g_free(c);
  g_strstrip(id);
  if (!*id) {
    g_free(id);
    return NULL;
  }
  if (strlen(id) > QM_EMAIL_MAX_ID) {
    char *h = g_compute_checksum_for_string(G_CHECKSUM_SHA256, id, -1);
    g_free(id);
    id = g_strconcat("sha256:", h, NULL);
    g_free(h);
  }
  return id;
}

static char *lower_addr(const char *addr) {
  char *c = clean_field(addr, QM_EMAIL_MAX_ADDR);
  if (!c) return NULL;
  /* ASCII only: lower-casing non-ASCII bytes one by one would break them. */
  for (char *p = c; *p; p++) *p = g_ascii_tolower(*p);
  return c;
}

/* ---- addresses ---- */

typedef struct addr_list {
  GPtrArray *addrs; /* char * */
  GPtrArray *names; /* char * or NULL, parallel */
} addr_list_t;

/* Appends the mailboxes of `list`, descending into groups once (a group
 * inside a group is not valid RFC 5322 and is skipped). */
static void collect_addrs(InternetAddressList *list, addr_list_t *out, size_t max, int in_group) {
  if (!list) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n && out->addrs->len < max; i++) {
    InternetAddress *ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
      char *a = lower_addr(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)));
      if (!a) continue;
      g_ptr_array_add(out->addrs, a);
      g_ptr_array_add(out->names, clean_field(internet_address_get_name(ia), QM_EMAIL_MAX_ADDR));
    } else if (INTERNET_ADDRESS_IS_GROUP(ia) && !in_group) {
      collect_addrs(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, max, 1);
    }
  }
}

static char **take_addrs(InternetAddressList *list, size_t *n) {
  addr_list_t l = {g_ptr_array_new(), g_ptr_array_new_with_free_func(g_free)};
  collect_addrs(list, &l, QM_EMAIL_MAX_RCPT, 0);
  g_ptr_array_free(l.names, TRUE);
  *n = l.addrs->len;
  g_ptr_array_add(l.addrs, NULL);
  return (char **)g_ptr_array_free(l.addrs, FALSE);
}

/* ---- body ---- */

typedef struct body {
  const em_read_opts_t *opts;
  GString *text;
  GArray *att; /* em_attachment_t */
  int too_deep;
} body_t;

static int64_t decoded_size(GMimePart *part) {
  GMimeDataWrapper *dw = g_mime_part_get_content(part);
  if (!dw) return 0;
  GMimeStream *null = g_mime_stream_null_new();
  g_mime_data_wrapper_write_to_stream(dw, null);
  int64_t n = GMIME_STREAM_NULL(null)->written;
  g_object_unref(null);
  return n < 0 ? 0 : n;
}

/* Whether s is "type/subtype" made of RFC 2045 token characters, short
 * enough for ingest (255 bytes). */
static int valid_mime_type(const char *s) {
  size_t n = strlen(s), slash = 0;
  if (n < 3 || n > 255) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '/') {
      if (slash++ || i == 0 || i == n - 1) return 0;
    } else if (c <= ' ' || c >= 127 || strchr("()<>@,;:\\\"[]?=", c)) {
      return 0;
    }
  }
  return slash == 1;
}

static void add_attachment(body_t *b, GMimeObject *obj, const char *filename, int64_t size) {
  if (b->att->len >= QM_EMAIL_MAX_ATTACH) return;
  GMimeContentType *ct = g_mime_object_get_content_type(obj);
  char *mt = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
  em_attachment_t a = {
    .filename = qm_email_clean_utf8(filename, filename ? strlen(filename) : 0, 1, QM_EMAIL_MAX_ADDR),
    .content_type = mt ? g_ascii_strdown(mt, -1) : NULL,
    .size = size,
  };
  /* A type that is not one (garbage, 8-bit bytes) says nothing useful. */
  if (!a.content_type || !valid_mime_type(a.content_type)) {
    g_free(a.content_type);
    a.content_type = g_strdup("application/octet-stream");
  }
  g_free(mt);
  g_array_append_val(b->att, a);
}

/* Appends a body part's text, separated from what came before. */
static void add_text(body_t *b, const char *text) {
  if (!text || !*text) return;
  if (b->text->len) g_string_append(b->text, "\n\n");
  g_string_append(b->text, text);
}

static int is_type(GMimeObject *obj, const char *type, const char *sub) {
  GMimeContentType *ct = g_mime_object_get_content_type(obj);
  return ct && g_mime_content_type_is_type(ct, type, sub);
}

static int is_attachment(GMimeObject *obj) {
  GMimeContentDisposition *d = g_mime_object_get_content_disposition(obj);
  if (d && g_mime_content_disposition_is_attachment(d)) return 1;
  /* A named part is a file even when marked inline (an inline image). */
  return GMIME_IS_PART(obj) && g_mime_part_get_filename(GMIME_PART(obj)) != NULL;
}

/* Whether this subtree has a text/plain body part (for alternatives). */
static int has_plain(GMimeObject *obj, int depth) {
  if (depth > QM_EMAIL_MAX_DEPTH) return 0;
  if (GMIME_IS_MULTIPART(obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n; i++)
      if (has_plain(g_mime_multipart_get_part(mp, i), depth + 1)) return 1;
    return 0;
  }
  return GMIME_IS_TEXT_PART(obj) && is_type(obj, "text", "plain") && !is_attachment(obj);
}

static char *part_text(GMimeTextPart *tp) {
  char *raw = g_mime_text_part_get_text(tp);
  if (!raw) return NULL;
  /* GMime converts from the declared charset to UTF-8; a part with no
   * charset, or a wrong one, can still hold 8-bit text, hence the guess. */
  char *t = qm_email_clean_utf8(raw, strlen(raw), 1, 4 * QM_EMAIL_MAX_TEXT);
  g_free(raw);
  return t;
}

static void walk(body_t *b, GMimeObject *obj, int depth) {
  if (depth > QM_EMAIL_MAX_DEPTH) {
    b->too_deep = 1;
    return;
  }
  if (GMIME_IS_MULTIPART(obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    if (is_type(obj, "multipart", "alternative")) {
      /* Alternatives say the same thing: read one, the plain text one when
       * there is one, else the last (the richest, by RFC 2046). */
      GMimeObject *pick = NULL;
      for (int i = 0; i < n && !pick; i++) {
        GMimeObject *c = g_mime_multipart_get_part(mp, i);
        if (has_plain(c, depth + 1)) pick = c;
      }
      if (!pick && n > 0) pick = g_mime_multipart_get_part(mp, n - 1);
      if (pick) walk(b, pick, depth + 1);
      return;
    }
    for (int i = 0; i < n; i++) walk(b, g_mime_multipart_get_part(mp, i), depth + 1);
    return;
  }
  if (GMIME_IS_MESSAGE_PART(obj)) {
    /* A forwarded message is listed, not read into this one's text. */
    GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
    GMimeStream *null = g_mime_stream_null_new();
    if (inner) g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, null);
    int64_t size = GMIME_STREAM_NULL(null)->written;
    g_object_unref(null);
    const char *fn = g_mime_object_get_content_disposition_parameter(obj, "filename");
    add_attachment(b, obj, fn ? fn : "", size);
    return;
  }
  if (!GMIME_IS_PART(obj)) return;
  GMimePart *part = GMIME_PART(obj);
  if (!is_attachment(obj) && GMIME_IS_TEXT_PART(obj) &&
      (is_type(obj, "text", "plain") || is_type(obj, "text", "html"))) {
    char *t = part_text(GMIME_TEXT_PART(obj));
    if (t && is_type(obj, "text", "html")) {
      char *plain = qm_email_html_to_text(t, strlen(t));
      g_free(t);
      t = plain;
    }
    add_text(b, t);
    g_free(t);
    return;
  }
  const char *fn = g_mime_part_get_filename(part);
  add_attachment(b, obj, fn ? fn : "", decoded_size(part));
}

/* CRLF and CR to LF, trailing white space off each line, at most one blank
 * line in a row, nothing leading or trailing; cut to the text bound. */
static char *tidy_text(const char *s, int mboxrd) {
  GString *out = g_string_sized_new(strlen(s) + 1);
  int blank_run = 0;
  const char *p = s;
  while (*p) {
    size_t n = strcspn(p, "\r\n");
    const char *line = p;
    size_t ln = n;
    /* mboxrd escaped body lines that start with ">*From " by adding one '>'
     * (GMime leaves them); undo it. */
    if (mboxrd && ln > 5 && line[0] == '>') {
      size_t k = 0;
      while (k < ln && line[k] == '>') k++;
      if (ln - k >= 5 && memcmp(line + k, "From ", 5) == 0) line++, ln--;
    }
    /* "-- " is the signature separator (RFC 3676); its space is kept. */
    int sig = ln == 3 && memcmp(line, "-- ", 3) == 0;
    while (!sig && ln && (line[ln - 1] == ' ' || line[ln - 1] == '\t')) ln--;
    if (ln == 0) {
      blank_run++;
    } else {
      if (out->len) g_string_append(out, blank_run ? "\n\n" : "\n");
      g_string_append_len(out, line, (gssize)ln);
      blank_run = 0;
    }
    p += n;
    if (*p == '\r' && p[1] == '\n') p += 2;
    else if (*p) p++;
  }
  cut_utf8(out, QM_EMAIL_MAX_TEXT);
  return g_string_free(out, FALSE);
}

/* ---- messages ---- */

void qm_email_message_free(em_message_t *m) {
  if (!m) return;
  g_free(m->message_id);
  g_free(m->in_reply_to);
  g_strfreev(m->refs);
  g_free(m->from_addr);
  g_free(m->from_name);
  g_strfreev(m->to);
  g_strfreev(m->cc);
  g_free(m->subject);
  g_free(m->text);
  g_free(m->agent_id);
  g_free(m->queue);
  for (size_t i = 0; i < m->natt; i++) {
    g_free(m->att[i].filename);
    g_free(m->att[i].content_type);
  }
  g_free(m->att);
  g_free(m);
}

static char *header(GMimeMessage *msg, const char *name, size_t max) {
  if (!name || !*name) return NULL;
  return clean_field(g_mime_object_get_header(GMIME_OBJECT(msg), name), max);
}

/* The References list, oldest first, at most QM_EMAIL_MAX_REFS entries:
 * the first (the thread's root) and the most recent ones. */
static char **read_refs(GMimeMessage *msg, size_t *n) {
  GPtrArray *out = g_ptr_array_new();
  const char *raw = g_mime_object_get_header(GMIME_OBJECT(msg), "References");
  GMimeReferences *refs = raw ? g_mime_references_parse(NULL, raw) : NULL;
  int len = refs ? g_mime_references_length(refs) : 0;
  for (int i = 0; i < len; i++) {
    if (i > 0 && len - i >= QM_EMAIL_MAX_REFS) continue;
    char *id = norm_id(g_mime_references_get_message_id(refs, i));
    if (id) g_ptr_array_add(out, id);
  }
  if (refs) g_mime_references_free(refs);
  *n = out->len;
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

/* Converts one parsed message; NULL (with the reason logged) when it has
 * nothing a document could be built from. `where` names it in logs. */
static em_message_t *convert(GMimeMessage *msg, const em_read_opts_t *opts, int mboxrd, const char *where) {
  GDateTime *dt = g_mime_message_get_date(msg);
  if (!dt) {
    opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: skipped: no valid Date header", where);
    return NULL;
  }
  int64_t ms = (int64_t)g_date_time_to_unix(dt) * 1000 + g_date_time_get_microsecond(dt) / 1000;
  /* Ingest refuses times before 1990 or more than a day ahead; saying so
   * here names the message, which ingest could not. */
  int64_t now_ms = g_get_real_time() / 1000;
  if (ms < INT64_C(631152000000) || ms > now_ms + INT64_C(86400000)) {
    char *d = g_date_time_format_iso8601(dt);
    opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: skipped: Date %s is before 1990 or in the future", where,
              d ? d : "?");
    g_free(d);
    return NULL;
  }

  em_message_t *m = g_new0(em_message_t, 1);
  m->date_ms = ms;
  m->message_id = norm_id(g_mime_message_get_message_id(msg));
  const char *irt = g_mime_object_get_header(GMIME_OBJECT(msg), "In-Reply-To");
  if (irt) {
    /* In-Reply-To may carry more than one id and comments; the first id is
     * the parent. */
    char *d = g_mime_utils_decode_message_id(irt);
    m->in_reply_to = norm_id(d);
    g_free(d);
  }
  m->refs = read_refs(msg, &m->nrefs);

  addr_list_t from = {g_ptr_array_new_with_free_func(g_free), g_ptr_array_new_with_free_func(g_free)};
  collect_addrs(g_mime_message_get_from(msg), &from, 1, 0);
  if (!from.addrs->len) collect_addrs(g_mime_message_get_sender(msg), &from, 1, 0);
  if (!from.addrs->len) {
    opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: skipped: no From address", where);
    g_ptr_array_free(from.addrs, TRUE);
    g_ptr_array_free(from.names, TRUE);
    qm_email_message_free(m);
    return NULL;
  }
  m->from_addr = g_strdup(from.addrs->pdata[0]);
  m->from_name = from.names->pdata[0] ? g_strdup(from.names->pdata[0]) : NULL;
  g_ptr_array_free(from.addrs, TRUE);
  g_ptr_array_free(from.names, TRUE);
  m->to = take_addrs(g_mime_message_get_to(msg), &m->nto);
  m->cc = take_addrs(g_mime_message_get_cc(msg), &m->ncc);

  m->subject = clean_field(g_mime_message_get_subject(msg), QM_EMAIL_MAX_SUBJECT);
  if (!m->subject) m->subject = g_strdup("");
  m->agent_id = header(msg, opts->agent_id_header, QM_EMAIL_MAX_HEADER);
  m->queue = header(msg, opts->queue_header, QM_EMAIL_MAX_HEADER);

  body_t b = {opts, g_string_new(NULL), g_array_new(FALSE, TRUE, sizeof(em_attachment_t)), 0};
  GMimeObject *top = g_mime_message_get_mime_part(msg);
  if (top) walk(&b, top, 0);
  if (b.too_deep)
    opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: MIME parts nested deeper than %d levels were skipped", where,
              QM_EMAIL_MAX_DEPTH);
  m->text = tidy_text(b.text->str, mboxrd);
  g_string_free(b.text, TRUE);
  m->natt = b.att->len;
  m->att = (em_attachment_t *)g_array_free(b.att, m->natt == 0);
  if (!m->natt) m->att = NULL;

  if (!m->message_id) {
    /* Without a Message-ID nothing can reply to it; a stable made-up id
     * keeps re-submissions of the same file idempotent. */
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    char date[32];
    g_snprintf(date, sizeof date, "%" G_GINT64_FORMAT, m->date_ms);
    const char *parts[] = {m->from_addr, date, m->subject, m->text};
    for (size_t i = 0; i < G_N_ELEMENTS(parts); i++) g_checksum_update(ck, (const guchar *)parts[i], -1);
    m->message_id = g_strdup_printf("noid-%.32s", g_checksum_get_string(ck));
    g_checksum_free(ck);
  }
  return m;
}

/* RFC 5322 limits a line to 998 bytes; real mail stays far below this. A
 * file with a line past it is refused before GMime sees it, since GMime's
 * header parser grows quadratically slow on a single multi-megabyte line. */
#define EM_LINE_MAX (2u << 20)

/* Returns the 1-based number of the first line longer than EM_LINE_MAX, or
 * 0 when there is none (or the file cannot be read: GMime reports that). */
static long long overlong_line(int fd) {
  char buf[1 << 16];
  long long line = 1;
  size_t len = 0;
  off_t off = 0;
  ssize_t n;
  while ((n = pread(fd, buf, sizeof buf, off)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == '\n') {
        line++;
        len = 0;
      } else if (++len > EM_LINE_MAX) {
        return line;
      }
    }
    off += n;
  }
  return 0;
}

int qm_email_read_file(const char *path, const em_read_opts_t *opts, GPtrArray *out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    opts->log(opts->log_arg, QMESH_LOG_ERROR, "%s: cannot open: %s", path, g_strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    opts->log(opts->log_arg, QMESH_LOG_ERROR, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  char head[5] = {0};
  ssize_t got = pread(fd, head, sizeof head, 0);
  int mbox = got == 5 && memcmp(head, "From ", 5) == 0;
  if (!mbox && st.st_size > opts->max_message_bytes) {
    opts->log(opts->log_arg, QMESH_LOG_ERROR, "%s: refused: message of %lld bytes is over max_message_kb (%lld KiB)",
              path, (long long)st.st_size, (long long)(opts->max_message_bytes / 1024));
    close(fd);
    return -1;
  }
  if (got <= 0) {
    opts->log(opts->log_arg, QMESH_LOG_ERROR, "%s: refused: the file is empty", path);
    close(fd);
    return -1;
  }
  long long bad_line = overlong_line(fd);
  if (bad_line) {
    opts->log(opts->log_arg, QMESH_LOG_ERROR,
              "%s: refused: line %lld is longer than %u bytes (RFC 5322 allows 998)", path, bad_line,
              EM_LINE_MAX);
    close(fd);
    return -1;
  }

  GMimeStream *stream = g_mime_stream_fs_new(fd); /* owns fd from here */
  GMimeParser *parser = g_mime_parser_new_with_stream(stream);
  g_object_unref(stream);
  g_mime_parser_set_format(parser, mbox ? GMIME_FORMAT_MBOX : GMIME_FORMAT_MESSAGE);
  int index = 0;
  gint64 last = -1;
  while (!g_mime_parser_eos(parser)) {
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    if (!msg) break;
    index++;
    gint64 start = mbox ? g_mime_parser_get_mbox_marker_offset(parser) : 0;
    gint64 pos = g_mime_parser_tell(parser);
    char where[64];
    if (mbox) g_snprintf(where, sizeof where, "message %d (byte %lld)", index, (long long)start);
    else g_snprintf(where, sizeof where, "message");
    char *label = g_strdup_printf("%s: %s", path, where);
    if (pos - start > opts->max_message_bytes) {
      opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: skipped: %lld bytes is over max_message_kb (%lld KiB)", label,
                (long long)(pos - start), (long long)(opts->max_message_bytes / 1024));
    } else {
      em_message_t *m = convert(msg, opts, mbox, label);
      if (m) g_ptr_array_add(out, m);
    }
    g_free(label);
    g_object_unref(msg);
    /* A parser that stops moving would loop forever on a broken mbox. */
    if (!mbox || pos <= last) break;
    last = pos;
  }
  g_object_unref(parser);
  if (index == 0)
    opts->log(opts->log_arg, QMESH_LOG_WARN, "%s: no message could be parsed%s", path,
              mbox ? " from the mbox" : "");
  return 0;
}
