/*
 * channel_csv.c: an out-of-tree qmesh channel plugin that imports chat
 * transcripts exported as CSV, one row per chat turn.
 *
 * It is the example partners copy: it is built against the installed SDK
 * headers only (pkg-config qmesh-plugin), links nothing of qmesh, and exports
 * only its entry point. The file format is RFC 4180 CSV (quoted fields may
 * hold the delimiter, doubled quotes and line breaks; rows end with CRLF or
 * LF) with this header, in this order:
 *
 *   conversation_id,agent_id,agent_name,queue,started_at,speaker,offset_ms,text
 *
 * Rows are grouped by conversation_id, wherever they appear in the file, and
 * each conversation becomes one interaction document (docs/protocol.md
 * section 9) with channel "chat", submitted through the context. The agent,
 * queue and start time come from the conversation's first row; turns are
 * ordered by offset_ms (rows with equal offsets keep their file order).
 *
 * Settings: tenant (written into every document), spool_dir (the directory
 * the core watches for *.csv files once the channel is started) and
 * delimiter (one character, "," by default; ";" is common in European
 * exports).
 *
 * parse_file reads the whole file into memory (at most 64 MiB, so a
 * runaway file is refused rather than exhausting the service) and parses it
 * in place: unquoting never makes a field longer, so every field is
 * rewritten over its own raw bytes and NUL-terminated there.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qmesh/channel.h>

#define CSV_MAX_FILE (64u << 20)
#define CSV_COLUMNS 8

enum { COL_CONV, COL_AGENT_ID, COL_AGENT_NAME, COL_QUEUE, COL_STARTED, COL_SPEAKER, COL_OFFSET, COL_TEXT };

static const char *const csv_header[CSV_COLUMNS] = {
  "conversation_id", "agent_id", "agent_name", "queue", "started_at", "speaker", "offset_ms", "text",
};

typedef struct csv_state {
  const qmesh_host_t *host;
  char *tenant;
  char *spool_dir;
  char delimiter;
} csv_state_t;

/* One parsed row: pointers into the file buffer, and where it started (for
 * error messages that name the line). */
typedef struct csv_row {
  char *f[CSV_COLUMNS];
  long long offset_ms;
  size_t line;
} csv_row_t;

/* A conversation: the indexes of its rows, in file order. */
typedef struct csv_conv {
  const char *id;
  size_t *rows;
  size_t n, cap;
} csv_conv_t;

/* A growable output buffer for the JSON documents. */
typedef struct buf {
  char *p;
  size_t len, cap;
  int oom;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

/* Appends `s` as a JSON string. Bytes >= 0x80 are copied as they are: the
 * core checks that they are UTF-8 and refuses the document otherwise, which
 * is the right outcome for a file in another encoding. */
static void buf_json_str(buf_t *b, const char *s) {
  buf_add(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"': buf_add(b, "\\\"", 2); break;
    case '\\': buf_add(b, "\\\\", 2); break;
    case '\n': buf_add(b, "\\n", 2); break;
    case '\r': buf_add(b, "\\r", 2); break;
    case '\t': buf_add(b, "\\t", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        buf_add(b, esc, 6);
      } else {
        buf_add(b, (const char *)p, 1);
      }
    }
  }
  buf_add(b, "\"", 1);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static void csv_close(void *state) {
  csv_state_t *s = state;
  if (!s) return;
  free(s->tenant);
  free(s->spool_dir);
  free(s);
}

static int csv_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  const char *delim = host->get_string(settings, "delimiter");
  if (!delim || strlen(delim) != 1 || *delim == '"' || *delim == '\r' || *delim == '\n') {
    host->log(host, QMESH_LOG_ERROR, "delimiter \"%s\": must be one character other than a quote or a line break",
              delim ? delim : "");
    return QMESH_INVALID;
  }
  csv_state_t *s = calloc(1, sizeof *s);
  if (!s) return QMESH_NOMEM;
  s->host = host;
  s->delimiter = *delim;
  const char *tenant = host->get_string(settings, "tenant");
  const char *spool = host->get_string(settings, "spool_dir");
  s->tenant = dup_str(tenant ? tenant : "default");
  s->spool_dir = dup_str(spool ? spool : "");
  if (!s->tenant || !s->spool_dir) {
    csv_close(s);
    return QMESH_NOMEM;
  }
  *out = s;
  return QMESH_OK;
}

/* Whether the core's context is new enough to have the member ending at
 * `end` (it may be an older qmesh than the headers we were built with). */
#define CTX_HAS(ctx, member) \
  ((ctx)->struct_size >= offsetof(qmesh_channel_ctx_t, member) + sizeof((ctx)->member) && (ctx)->member)

static int csv_start(void *state, const qmesh_channel_ctx_t *ctx) {
  csv_state_t *s = state;
  if (!s->spool_dir[0]) {
    s->host->log(s->host, QMESH_LOG_INFO, "no spool_dir: only explicit imports (parse_file)");
    return QMESH_OK;
  }
  if (!CTX_HAS(ctx, watch_dir)) {
    s->host->log(s->host, QMESH_LOG_ERROR, "this qmesh cannot watch a directory (needs ABI 1.0 with watch_dir)");
    return QMESH_UNSUPPORTED;
  }
  /* The core scans the directory, calls parse_file for each file and moves
   * it to done/ or failed/; there is nothing for the plugin to run itself. */
  return ctx->watch_dir(ctx, s->spool_dir, ".csv");
}

static int csv_stop(void *state) {
  (void)state;
  return QMESH_OK;
}

/* Reads the whole file, NUL-terminated. QMESH_ERR when it cannot be read,
 * QMESH_INVALID when it is larger than CSV_MAX_FILE. */
static int read_file(csv_state_t *s, const char *path, char **out, size_t *outlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    s->host->log(s->host, QMESH_LOG_WARN, "%s: cannot open: %s", path, strerror(errno));
    return QMESH_ERR;
  }
  size_t cap = 64 * 1024, len = 0;
  char *p = malloc(cap + 1);
  int rc = p ? QMESH_OK : QMESH_NOMEM;
  while (rc == QMESH_OK) {
    if (len == cap) {
      if (cap >= CSV_MAX_FILE) {
        s->host->log(s->host, QMESH_LOG_WARN, "%s: larger than %u MiB", path, CSV_MAX_FILE >> 20);
        rc = QMESH_INVALID;
        break;
      }
      cap *= 2;
      char *q = realloc(p, cap + 1);
      if (!q) {
        rc = QMESH_NOMEM;
        break;
      }
      p = q;
    }
    size_t n = fread(p + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      if (ferror(f)) {
        s->host->log(s->host, QMESH_LOG_WARN, "%s: read error", path);
        rc = QMESH_ERR;
      }
      break;
    }
  }
  fclose(f);
  if (rc != QMESH_OK) {
    free(p);
    return rc;
  }
  p[len] = '\0';
  *out = p;
  *outlen = len;
  return QMESH_OK;
}

/* Parses one record starting at *pos into fields[] (unquoted in place).
 * Returns the number of fields (which may exceed CSV_COLUMNS: only the count
 * is kept then), 0 at the end of the input, or -1 for a quoting error
 * (an unterminated quote, or text after a closing quote). *line advances
 * over every line break consumed, including those inside quotes. */
static int parse_record(char *data, size_t len, size_t *pos, char delim, char **fields, size_t *line) {
  size_t r = *pos;
  if (r >= len) return 0;
  int nf = 0;
  for (;;) {
    char *start = data + r, *w = start;
    if (r < len && data[r] == '"') {
      r++;
      for (;;) {
        if (r >= len) return -1;
        if (data[r] == '"') {
          if (r + 1 < len && data[r + 1] == '"') {
            *w++ = '"';
            r += 2;
            continue;
          }
          r++;
          break;
        }
        if (data[r] == '\n') (*line)++;
        *w++ = data[r++];
      }
      if (r < len && data[r] != delim && data[r] != '\n' && data[r] != '\r') return -1;
    } else {
      while (r < len && data[r] != delim && data[r] != '\n' && data[r] != '\r') {
        if (data[r] == '"') return -1;
        w++, r++;
      }
    }
    char end = r < len ? data[r] : '\n';
    *w = '\0';
    if (nf < CSV_COLUMNS) fields[nf] = start;
    nf++;
    if (end == delim) {
      r++;
      continue;
    }
    /* End of record: CRLF, LF, a lone CR or the end of the data. `end`
     * was read before the terminator may have been overwritten by the NUL. */
    if (r < len) {
      r++;
      if (end == '\r' && r < len && data[r] == '\n') r++;
    }
    (*line)++;
    *pos = r;
    return nf;
  }
}

static int parse_offset(const char *s, long long *out) {
  if (!*s) return -1;
  long long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (1LL << 40)) return -1;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return 0;
}

/* Builds the interaction document of one conversation into b. */
static void build_document(csv_state_t *s, const csv_row_t *rows, const csv_conv_t *c, buf_t *b) {
  const csv_row_t *first = &rows[c->rows[0]];
  b->len = 0;
  buf_str(b, "{\"channel\":\"chat\",\"external_id\":");
  buf_json_str(b, c->id);
  buf_str(b, ",\"tenant\":");
  buf_json_str(b, s->tenant);
  if (first->f[COL_QUEUE][0]) {
    buf_str(b, ",\"queue\":");
    buf_json_str(b, first->f[COL_QUEUE]);
  }
  buf_str(b, ",\"agent\":{\"id\":");
  buf_json_str(b, first->f[COL_AGENT_ID]);
  if (first->f[COL_AGENT_NAME][0]) {
    buf_str(b, ",\"name\":");
    buf_json_str(b, first->f[COL_AGENT_NAME]);
  }
  buf_str(b, "},\"started_at\":");
  buf_json_str(b, first->f[COL_STARTED]);
  buf_str(b, ",\"turns\":[");
  for (size_t i = 0; i < c->n; i++) {
    const csv_row_t *row = &rows[c->rows[i]];
    char num[32];
    buf_str(b, i ? ",{\"speaker\":" : "{\"speaker\":");
    buf_json_str(b, row->f[COL_SPEAKER]);
    snprintf(num, sizeof num, ",\"ts_ms\":%lld,\"text\":", row->offset_ms);
    buf_str(b, num);
    buf_json_str(b, row->f[COL_TEXT]);
    buf_str(b, "}");
  }
  buf_str(b, "]}");
}

/* Stable insertion sort of a conversation's rows by offset: conversations
 * are short and usually already in order, where this is linear. */
static void sort_turns(const csv_row_t *rows, csv_conv_t *c) {
  for (size_t i = 1; i < c->n; i++) {
    size_t v = c->rows[i], j = i;
    while (j > 0 && rows[c->rows[j - 1]].offset_ms > rows[v].offset_ms) {
      c->rows[j] = c->rows[j - 1];
      j--;
    }
    c->rows[j] = v;
  }
}

static int csv_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  csv_state_t *s = state;
  char *data = NULL;
  size_t len = 0;
  int rc = read_file(s, path, &data, &len);
  if (rc != QMESH_OK) return rc;

  csv_row_t *rows = NULL;
  csv_conv_t *convs = NULL;
  size_t nrows = 0, rowcap = 0, nconvs = 0, convcap = 0;
  buf_t b = {0};

  size_t pos = 0, line = 1;
  /* A UTF-8 byte order mark, as spreadsheet exports write it. */
  if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) pos = 3;
  char *fields[CSV_COLUMNS];
  int nf = parse_record(data, len, &pos, s->delimiter, fields, &line);
  if (nf != CSV_COLUMNS) {
    s->host->log(s->host, QMESH_LOG_WARN, "%s:1: expected the header %s,%s,%s,%s,%s,%s,%s,%s", path, csv_header[0],
                 csv_header[1], csv_header[2], csv_header[3], csv_header[4], csv_header[5], csv_header[6],
                 csv_header[7]);
    rc = QMESH_INVALID;
    goto out;
  }
  for (int i = 0; i < CSV_COLUMNS; i++) {
    if (strcmp(fields[i], csv_header[i]) != 0) {
      s->host->log(s->host, QMESH_LOG_WARN, "%s:1: column %d is \"%.40s\", expected \"%s\"", path, i + 1, fields[i],
                   csv_header[i]);
      rc = QMESH_INVALID;
      goto out;
    }
  }

  for (;;) {
    size_t at = line;
    nf = parse_record(data, len, &pos, s->delimiter, fields, &line);
    if (nf == 0) break;
    if (nf == 1 && fields[0][0] == '\0') continue; /* a blank line */
    if (nf < 0) {
      s->host->log(s->host, QMESH_LOG_WARN, "%s:%zu: unbalanced quotes", path, at);
      rc = QMESH_INVALID;
      goto out;
    }
    if (nf != CSV_COLUMNS) {
      s->host->log(s->host, QMESH_LOG_WARN, "%s:%zu: %d fields, expected %d", path, at, nf, CSV_COLUMNS);
      rc = QMESH_INVALID;
      goto out;
    }
    if (nrows == rowcap) {
      size_t cap = rowcap ? rowcap * 2 : 64;
      csv_row_t *p = realloc(rows, cap * sizeof *p);
      if (!p) {
        rc = QMESH_NOMEM;
        goto out;
      }
      rows = p;
      rowcap = cap;
    }
    csv_row_t *row = &rows[nrows];
    memcpy(row->f, fields, sizeof fields);
    row->line = at;
    if (!fields[COL_CONV][0]) {
      s->host->log(s->host, QMESH_LOG_WARN, "%s:%zu: conversation_id is empty", path, at);
      rc = QMESH_INVALID;
      goto out;
    }
    if (parse_offset(fields[COL_OFFSET], &row->offset_ms)) {
      s->host->log(s->host, QMESH_LOG_WARN, "%s:%zu: offset_ms \"%.40s\" is not a whole number of milliseconds",
                   path, at, fields[COL_OFFSET]);
      rc = QMESH_INVALID;
      goto out;
    }
    /* Rows of one conversation are usually adjacent, so the last
     * conversation is tried first; otherwise a linear search, which is fine
     * for exports of a few thousand conversations. */
    csv_conv_t *c = NULL;
    if (nconvs && strcmp(convs[nconvs - 1].id, fields[COL_CONV]) == 0) c = &convs[nconvs - 1];
    for (size_t i = 0; !c && i < nconvs; i++)
      if (strcmp(convs[i].id, fields[COL_CONV]) == 0) c = &convs[i];
    if (!c) {
      if (nconvs == convcap) {
        size_t cap = convcap ? convcap * 2 : 16;
        csv_conv_t *p = realloc(convs, cap * sizeof *p);
        if (!p) {
          rc = QMESH_NOMEM;
          goto out;
        }
        convs = p;
        convcap = cap;
      }
      c = &convs[nconvs++];
      memset(c, 0, sizeof *c);
      c->id = fields[COL_CONV];
    }
    if (c->n == c->cap) {
      size_t cap = c->cap ? c->cap * 2 : 8;
      size_t *p = realloc(c->rows, cap * sizeof *p);
      if (!p) {
        rc = QMESH_NOMEM;
        goto out;
      }
      c->rows = p;
      c->cap = cap;
    }
    c->rows[c->n++] = nrows++;
  }

  for (size_t i = 0; i < nconvs && rc == QMESH_OK; i++) {
    sort_turns(rows, &convs[i]);
    build_document(s, rows, &convs[i], &b);
    if (b.oom) {
      rc = QMESH_NOMEM;
      break;
    }
    char reason[256] = "";
    rc = ctx->submit(ctx, b.p, b.len, reason, sizeof reason);
    if (rc == QMESH_INVALID)
      s->host->log(s->host, QMESH_LOG_WARN, "%s:%zu: conversation %s refused: %s", path,
                   rows[convs[i].rows[0]].line, convs[i].id, reason);
    /* QMESH_BUSY is handed back as it is: the core offers the file again
     * later, and what was already accepted is recognised, not stored twice. */
  }
  if (rc == QMESH_OK && nconvs == 0) s->host->log(s->host, QMESH_LOG_INFO, "%s: no conversations", path);

out:
  for (size_t i = 0; i < nconvs; i++) free(convs[i].rows);
  free(convs);
  free(rows);
  free(b.p);
  free(data);
  return rc;
}

static const qmesh_setting_t csv_settings[] = {
  {"tenant", QMESH_SETTING_STRING, "default", "tenant written into every interaction", 0},
  {"spool_dir", QMESH_SETTING_STRING, "", "directory the core watches for *.csv files (\"\": imports only)", 0},
  {"delimiter", QMESH_SETTING_STRING, ",", "field separator, one character", 0},
  {0},
};

static const qmesh_channel_ops_t csv_ops = {
  .struct_size = sizeof csv_ops,
  .open = csv_open,
  .start = csv_start,
  .stop = csv_stop,
  .close = csv_close,
  .parse_file = csv_parse_file,
};

static const qmesh_plugin_t csv_plugin = {
  .struct_size = sizeof csv_plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "channel_csv",
  .version = "1.0.0",
  .description = "imports chat transcripts from CSV exports, one row per turn",
  .settings = csv_settings,
  .ops = &csv_ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &csv_plugin; }
