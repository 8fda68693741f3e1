/*
 * channel_email.c: the channel_email plugin, which brings e-mail threads in
 * as interactions (docs/protocol.md section 9, the `email` form).
 *
 * parse_file reads a .eml file or an mbox (mime_read.c) and adds its
 * messages to the instance's thread index; then every thread the file
 * touched is submitted whole, as one interaction whose external_id is the
 * thread root's Message-ID. A reply arriving in a later file therefore
 * re-submits its thread with one more message under the same external_id,
 * which ingest stores as a new revision. With `spool_dir` set, start() asks
 * the core to watch that directory for .eml and .mbox files and the core
 * calls parse_file for each.
 *
 * Threading. Each message links to its parent: the last id of its
 * References (In-Reply-To when it has none), and each References entry to
 * the one before it. A thread's root is found by following parent links up
 * from any message; when the root message itself was never seen, the top of
 * the chain is the oldest referenced id, which is still a stable name for
 * the thread. Links that would close a cycle are ignored.
 *
 * The index lives in memory only, holds at most QM_EMAIL_INDEX_MAX messages
 * (the threads seen longest ago are forgotten first) and is lost when the
 * instance closes: after a restart a reply to an older thread is submitted
 * with the messages seen since.
 *
 * GMime is initialised once per process (pthread_once) and never shut
 * down: g_mime_shutdown would free tables another instance of this plugin,
 * or another plugin using GMime, may still be using. For the same reason the
 * plugin is linked with -z nodelete (see CMakeLists.txt): GLib type
 * registrations cannot survive the library being unmapped and mapped again.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <gmime/gmime.h>
#include <jansson.h>

#include <qmesh/channel.h>

#include "email_internal.h"

/* Messages the thread index keeps before it forgets the oldest threads. */
#define QM_EMAIL_INDEX_MAX 20000
/* Messages one document may hold, and its size, as ingest accepts them. */
#define QM_EMAIL_THREAD_MAX 2000
#define QM_EMAIL_DOC_MAX (4000 * 1024)

typedef struct em_state {
  const qmesh_host_t *host;
  char **agent_domains; /* lower-case */
  size_t nagent_domains;
  char *agent_id_header, *queue_header, *default_queue, *tenant, *spool_dir;
  int64_t max_message_bytes;

  /* The thread index; parse_file is called one file at a time, the mutex
   * only makes a misbehaving caller safe. */
  pthread_mutex_t mu;
  GPtrArray *msgs;      /* em_message_t *, arrival order, owned */
  GHashTable *by_id;    /* message_id -> em_message_t * */
  GHashTable *parent;   /* id -> parent id (both owned) */
  uint64_t next_seq;
} em_state_t;

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void) { g_mime_init(); }

static void state_log(void *arg, int level, const char *fmt, ...) {
  em_state_t *s = arg;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  s->host->log(s->host, level, "%s", buf);
}

/* ---- settings ---- */

static char *dup_setting(const qmesh_host_t *host, const qmesh_settings_t *settings, const char *name) {
  const char *v = host->get_string(settings, name);
  return v && *v ? g_strdup(v) : NULL;
}

static int valid_tenant(const char *t) {
  size_t n = strlen(t);
  if (n < 1 || n > 64) return 0;
  for (const char *p = t; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-') return 0;
  return 1;
}

static void e_close(void *state);

static int e_open(const qmesh_host_t *host, const qmesh_settings_t *settings, void **out) {
  pthread_once(&gmime_once, gmime_init_once);
  em_state_t *s = g_new0(em_state_t, 1);
  s->host = host;
  pthread_mutex_init(&s->mu, NULL);
  s->msgs = g_ptr_array_new_with_free_func((GDestroyNotify)qm_email_message_free);
  s->by_id = g_hash_table_new(g_str_hash, g_str_equal);
  s->parent = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

  size_t n = host->get_list_len(settings, "agent_domains");
  s->agent_domains = g_new0(char *, n + 1);
  for (size_t i = 0; i < n; i++) {
    const char *d = host->get_list_item(settings, "agent_domains", i);
    char *c = g_ascii_strdown(d ? d : "", -1);
    g_strstrip(c);
    if (*c == '@') memmove(c, c + 1, strlen(c));
    if (!*c) {
      g_free(c);
      continue;
    }
    s->agent_domains[s->nagent_domains++] = c;
  }
  s->agent_id_header = dup_setting(host, settings, "agent_id_header");
  s->queue_header = dup_setting(host, settings, "queue_header");
  s->default_queue = dup_setting(host, settings, "default_queue");
  s->tenant = dup_setting(host, settings, "tenant");
  if (!s->tenant) s->tenant = g_strdup("default");
  s->spool_dir = dup_setting(host, settings, "spool_dir");
  int64_t kb = host->get_int(settings, "max_message_kb");
  s->max_message_bytes = kb * 1024;
  *out = s;

  const char *why = NULL;
  if (!s->nagent_domains) why = "agent_domains is empty: no message could be told to be from an agent";
  else if (!valid_tenant(s->tenant)) why = "tenant must be 1-64 of A-Z a-z 0-9 . _ -";
  else if (kb <= 0 || kb > INT64_C(1) << 30) why = "max_message_kb must be between 1 and 1073741824";
  else if (s->default_queue && strlen(s->default_queue) > 128) why = "default_queue is longer than 128 bytes";
  if (why) {
    host->log(host, QMESH_LOG_ERROR, "%s", why);
    e_close(s);
    *out = NULL;
    return QMESH_ERR;
  }
  return QMESH_OK;
}

static void e_close(void *state) {
  em_state_t *s = state;
  if (!s) return;
  g_hash_table_destroy(s->by_id);
  g_hash_table_destroy(s->parent);
  g_ptr_array_free(s->msgs, TRUE);
  g_strfreev(s->agent_domains);
  g_free(s->agent_id_header);
  g_free(s->queue_header);
  g_free(s->default_queue);
  g_free(s->tenant);
  g_free(s->spool_dir);
  pthread_mutex_destroy(&s->mu);
  g_free(s);
}

static int e_start(void *state, const qmesh_channel_ctx_t *ctx) {
  em_state_t *s = state;
  if (!s->spool_dir) return QMESH_OK;
  if (ctx->struct_size < offsetof(qmesh_channel_ctx_t, watch_dir) + sizeof ctx->watch_dir || !ctx->watch_dir) {
    s->host->log(s->host, QMESH_LOG_ERROR, "spool_dir is set but this qmesh cannot watch directories");
    return QMESH_UNSUPPORTED;
  }
  int rc = ctx->watch_dir(ctx, s->spool_dir, ".eml,.mbox");
  if (rc != QMESH_OK) s->host->log(s->host, QMESH_LOG_ERROR, "cannot watch spool_dir %s (%d)", s->spool_dir, rc);
  return rc;
}

static int e_stop(void *state) {
  (void)state;
  return QMESH_OK;
}

/* ---- the thread index ---- */

/* Follows parent links to the top. Links never form a cycle (set_parent
 * refuses those), and the walk is bounded anyway. */
static const char *root_of(em_state_t *s, const char *id) {
  for (int i = 0; i < 4096; i++) {
    const char *p = g_hash_table_lookup(s->parent, id);
    if (!p) break;
    id = p;
  }
  return id;
}

static void set_parent(em_state_t *s, const char *child, const char *parent, int override) {
  if (!child || !parent || strcmp(child, parent) == 0) return;
  if (!override && g_hash_table_contains(s->parent, child)) return;
  if (strcmp(root_of(s, parent), child) == 0) return; /* would close a cycle */
  g_hash_table_replace(s->parent, g_strdup(child), g_strdup(parent));
}

static void link_message(em_state_t *s, const em_message_t *m) {
  for (size_t i = 1; i < m->nrefs; i++) set_parent(s, m->refs[i], m->refs[i - 1], 0);
  const char *parent = m->nrefs ? m->refs[m->nrefs - 1] : NULL;
  if (m->in_reply_to) {
    /* In-Reply-To names the parent when References did not list it. */
    int listed = 0;
    for (size_t i = 0; i < m->nrefs && !listed; i++) listed = strcmp(m->refs[i], m->in_reply_to) == 0;
    if (!listed) {
      if (parent) set_parent(s, m->in_reply_to, parent, 0);
      parent = m->in_reply_to;
    }
  }
  /* The message's own headers are the authority on its parent. */
  set_parent(s, m->message_id, parent, 1);
}

/* Forgets whole threads, oldest first, until the index is under its bound
 * again, in one pass over the index. Parent links stay: they are small and
 * keep later replies attached to the right root. */
static void evict(em_state_t *s) {
  if (s->msgs->len <= QM_EMAIL_INDEX_MAX) return;
  guint n = s->msgs->len, excess = n - QM_EMAIL_INDEX_MAX;
  const char **roots = g_new(const char *, n);
  GHashTable *count = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < n; i++) {
    roots[i] = root_of(s, ((em_message_t *)s->msgs->pdata[i])->message_id);
    g_hash_table_insert(count, (gpointer)roots[i],
                        GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(count, roots[i])) + 1));
  }
  GHashTable *drop = g_hash_table_new(g_str_hash, g_str_equal);
  guint dropping = 0;
  for (guint i = 0; i < n && dropping < excess; i++) {
    if (g_hash_table_contains(drop, roots[i])) continue;
    g_hash_table_add(drop, (gpointer)roots[i]);
    dropping += GPOINTER_TO_UINT(g_hash_table_lookup(count, roots[i]));
  }
  /* Decide first, remove after: the root strings belong to the parent
   * table, which removal does not touch. */
  GPtrArray *keep = g_ptr_array_new_with_free_func((GDestroyNotify)qm_email_message_free);
  for (guint i = 0; i < n; i++) {
    em_message_t *m = s->msgs->pdata[i];
    s->msgs->pdata[i] = NULL;
    if (g_hash_table_contains(drop, roots[i])) {
      g_hash_table_remove(s->by_id, m->message_id);
      qm_email_message_free(m);
    } else {
      g_ptr_array_add(keep, m);
    }
  }
  g_ptr_array_free(s->msgs, TRUE);
  s->msgs = keep;
  g_hash_table_destroy(drop);
  g_hash_table_destroy(count);
  g_free(roots);
}

/* ---- documents ---- */

static const char *domain_of(const char *addr) {
  const char *at = strrchr(addr, '@');
  return at ? at + 1 : "";
}

static int is_agent(const em_state_t *s, const em_message_t *m) {
  const char *d = domain_of(m->from_addr);
  for (size_t i = 0; i < s->nagent_domains; i++)
    if (g_ascii_strcasecmp(d, s->agent_domains[i]) == 0) return 1;
  return 0;
}

static int is_agent_addr(const em_state_t *s, const char *addr) {
  const char *d = domain_of(addr);
  for (size_t i = 0; i < s->nagent_domains; i++)
    if (g_ascii_strcasecmp(d, s->agent_domains[i]) == 0) return 1;
  return 0;
}

static void rfc3339(int64_t ms, char *buf, size_t len) {
  GDateTime *dt = g_date_time_new_from_unix_utc(ms / 1000);
  char *f = dt ? g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S") : NULL;
  if (ms % 1000) g_snprintf(buf, len, "%s.%03dZ", f ? f : "1970-01-01T00:00:00", (int)(ms % 1000));
  else g_snprintf(buf, len, "%sZ", f ? f : "1970-01-01T00:00:00");
  g_free(f);
  if (dt) g_date_time_unref(dt);
}

/* A copy of s cut to at most max bytes at a character boundary. */
static json_t *jstr_cut(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  }
  return json_stringn(s, n);
}

static json_t *addr_array(char **a, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(a[i]));
  return arr;
}

static gint by_date(gconstpointer a, gconstpointer b) {
  const em_message_t *x = *(em_message_t *const *)a, *y = *(em_message_t *const *)b;
  if (x->date_ms != y->date_ms) return x->date_ms < y->date_ms ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Builds the interaction document of one thread (messages sorted by date,
 * at least one), each message's text cut to text_cap bytes. */
static json_t *thread_doc(const em_state_t *s, const char *root, GPtrArray *t, size_t text_cap) {
  const em_message_t *first = t->pdata[0], *last = t->pdata[t->len - 1];
  const em_message_t *first_agent = NULL, *first_customer = NULL;
  const char *agent_hdr = NULL, *queue = NULL;
  for (guint i = 0; i < t->len; i++) {
    const em_message_t *m = t->pdata[i];
    int agent = is_agent(s, m);
    if (agent && !first_agent) first_agent = m;
    if (!agent && !first_customer && *m->from_addr) first_customer = m;
    if (agent && m->agent_id && !agent_hdr) agent_hdr = m->agent_id;
    if (m->queue && !queue) queue = m->queue;
  }
  /* The agent-id header on a customer's message (a helpdesk assigning it)
   * still names the agent when no agent message carries one. */
  for (guint i = 0; i < t->len && !agent_hdr; i++) {
    const em_message_t *m = t->pdata[i];
    if (m->agent_id) agent_hdr = m->agent_id;
  }
  if (!queue) queue = s->default_queue;

  json_t *agent = json_object();
  if (agent_hdr) {
    json_object_set_new(agent, "id", jstr_cut(agent_hdr, 128));
  } else if (first_agent) {
    const char *at = strrchr(first_agent->from_addr, '@');
    size_t n = at ? (size_t)(at - first_agent->from_addr) : strlen(first_agent->from_addr);
    json_object_set_new(agent, "id", n ? json_stringn(first_agent->from_addr, n > 128 ? 128 : n)
                                       : json_string("unassigned"));
  } else {
    /* A thread no agent has answered yet still needs an agent id. */
    json_object_set_new(agent, "id", json_string("unassigned"));
  }
  if (first_agent && first_agent->from_name) json_object_set_new(agent, "name", jstr_cut(first_agent->from_name, 128));

  /* The customer: whoever wrote in; for an outbound thread nobody answered,
   * the first recipient outside the agent domains. */
  const char *customer = first_customer ? first_customer->from_addr : NULL;
  for (guint i = 0; i < t->len && !customer; i++) {
    const em_message_t *m = t->pdata[i];
    for (size_t k = 0; k < m->nto && !customer; k++)
      if (!is_agent_addr(s, m->to[k])) customer = m->to[k];
    for (size_t k = 0; k < m->ncc && !customer; k++)
      if (!is_agent_addr(s, m->cc[k])) customer = m->cc[k];
  }

  json_t *msgs = json_array();
  for (guint i = 0; i < t->len; i++) {
    const em_message_t *m = t->pdata[i];
    char date[48];
    rfc3339(m->date_ms, date, sizeof date);
    json_t *att = json_array();
    for (size_t k = 0; k < m->natt; k++) {
      json_t *a = json_pack("{s:s, s:I}", "content_type", m->att[k].content_type, "size", (json_int_t)m->att[k].size);
      if (a && *m->att[k].filename) json_object_set_new(a, "filename", json_string(m->att[k].filename));
      if (a) json_array_append_new(att, a);
    }
    json_t *jm = json_pack("{s:s, s:s, s:o, s:o, s:s, s:s, s:o, s:o}", "message_id", m->message_id, "from",
                           m->from_addr, "to", addr_array(m->to, m->nto), "cc", addr_array(m->cc, m->ncc), "date",
                           date, "speaker", is_agent(s, m) ? "agent" : "customer", "text",
                           jstr_cut(m->text, text_cap), "attachments", att);
    if (jm && m->in_reply_to) json_object_set_new(jm, "in_reply_to", json_string(m->in_reply_to));
    if (jm) json_array_append_new(msgs, jm);
  }

  char started[48], ended[48];
  rfc3339(first->date_ms, started, sizeof started);
  rfc3339(last->date_ms, ended, sizeof ended);
  json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:{s:s, s:o}}", "channel", "email", "external_id", root,
                          "tenant", s->tenant, "direction", is_agent(s, first) ? "outbound" : "inbound", "agent",
                          agent, "started_at", started, "ended_at", ended, "email", "subject", first->subject,
                          "messages", msgs);
  if (doc && queue) json_object_set_new(doc, "queue", jstr_cut(queue, 128));
  if (doc && customer) json_object_set_new(doc, "customer", json_pack("{s:o}", "id", jstr_cut(customer, 256)));
  return doc;
}

/* Submits one thread (messages in any order). Returns the submit result. */
static int submit_thread(em_state_t *s, const char *root, GPtrArray *t, const qmesh_channel_ctx_t *ctx) {
  g_ptr_array_sort(t, by_date);
  if (t->len > QM_EMAIL_THREAD_MAX) {
    /* Ingest takes at most 2000 messages a thread; the latest matter most
     * to whoever reviews it. */
    s->host->log(s->host, QMESH_LOG_WARN, "thread %s: %u messages, only the last %d are submitted", root, t->len,
                 QM_EMAIL_THREAD_MAX);
    g_ptr_array_remove_range(t, 0, t->len - QM_EMAIL_THREAD_MAX);
  }
  /* A long thread can outgrow ingest's document bound (4 MiB by default):
   * texts are then cut shorter, halving the cut until it fits. */
  char *json = NULL;
  for (size_t cap = QM_EMAIL_MAX_TEXT;; cap /= 2) {
    json_t *doc = thread_doc(s, root, t, cap);
    free(json);
    json = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!json || strlen(json) <= QM_EMAIL_DOC_MAX || cap < 512) break;
    if (cap == QM_EMAIL_MAX_TEXT)
      s->host->log(s->host, QMESH_LOG_WARN, "thread %s: document over %d bytes, texts are cut", root,
                   QM_EMAIL_DOC_MAX);
  }
  if (!json) {
    s->host->log(s->host, QMESH_LOG_ERROR, "thread %s: could not build its document", root);
    return QMESH_ERR;
  }
  char reason[256] = "";
  int rc = ctx->submit(ctx, json, strlen(json), reason, sizeof reason);
  if (rc == QMESH_INVALID)
    s->host->log(s->host, QMESH_LOG_WARN, "thread %s (%u messages) refused: %s", root, t->len, reason);
  else if (rc == QMESH_OK)
    s->host->log(s->host, QMESH_LOG_DEBUG, "thread %s submitted with %u messages", root, t->len);
  free(json);
  return rc;
}

static int e_parse_file(void *state, const char *path, const qmesh_channel_ctx_t *ctx) {
  em_state_t *s = state;
  em_read_opts_t opts = {
    .agent_id_header = s->agent_id_header,
    .queue_header = s->queue_header,
    .max_message_bytes = s->max_message_bytes,
    .log = state_log,
    .log_arg = s,
  };
  GPtrArray *fresh = g_ptr_array_new_with_free_func((GDestroyNotify)qm_email_message_free);
  if (qm_email_read_file(path, &opts, fresh) != 0) {
    g_ptr_array_free(fresh, TRUE);
    return QMESH_ERR;
  }
  if (!fresh->len) {
    s->host->log(s->host, QMESH_LOG_ERROR, "%s: refused: no usable message (see the lines above)", path);
    g_ptr_array_free(fresh, TRUE);
    return QMESH_ERR;
  }

  pthread_mutex_lock(&s->mu);
  /* Index the file's messages; one seen before (the same file parsed again
   * after a crash, or a copy) keeps its first version but still marks its
   * thread for submission, which is then idempotent. */
  GPtrArray *touched = g_ptr_array_new(); /* ids of the file's messages */
  for (guint i = 0; i < fresh->len; i++) {
    em_message_t *m = fresh->pdata[i];
    if (!g_hash_table_contains(s->by_id, m->message_id)) {
      fresh->pdata[i] = NULL;
      m->seq = s->next_seq++;
      g_ptr_array_add(s->msgs, m);
      g_hash_table_insert(s->by_id, m->message_id, m);
      link_message(s, m);
    }
    g_ptr_array_add(touched, g_strdup(m->message_id));
  }
  g_ptr_array_set_free_func(touched, g_free);
  g_ptr_array_free(fresh, TRUE);

  /* The roots are computed once everything is linked, so a file holding a
   * whole thread in any order submits it once. Threads go out in the order
   * the file first touched them. */
  GPtrArray *roots = g_ptr_array_new();                 /* root ids (in parent table or message) */
  GHashTable *threads = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                              (GDestroyNotify)g_ptr_array_unref); /* root -> messages */
  for (guint i = 0; i < touched->len; i++) {
    const char *r = root_of(s, touched->pdata[i]);
    if (g_hash_table_contains(threads, r)) continue;
    g_ptr_array_add(roots, (gpointer)r);
    g_hash_table_insert(threads, (gpointer)r, g_ptr_array_new());
  }
  for (guint i = 0; i < s->msgs->len; i++) {
    em_message_t *m = s->msgs->pdata[i];
    GPtrArray *t = g_hash_table_lookup(threads, root_of(s, m->message_id));
    if (t) g_ptr_array_add(t, m);
  }

  int rc = QMESH_OK;
  for (guint i = 0; i < roots->len; i++) {
    GPtrArray *t = g_hash_table_lookup(threads, roots->pdata[i]);
    int r = submit_thread(s, roots->pdata[i], t, ctx);
    if (r == QMESH_BUSY) {
      /* Nothing of this thread was stored; the core offers the file again
       * later and what was already accepted is recognised then. */
      rc = QMESH_BUSY;
      break;
    }
    if (r != QMESH_OK && rc == QMESH_OK) rc = r;
  }
  g_hash_table_destroy(threads);
  g_ptr_array_free(touched, TRUE);
  g_ptr_array_free(roots, TRUE);
  evict(s);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* ---- descriptor ---- */

static const qmesh_setting_t settings[] = {
  {"agent_domains", QMESH_SETTING_STRING_LIST, NULL,
   "mail domains of the contact center; a message from one of them is the agent's", 1},
  {"agent_id_header", QMESH_SETTING_STRING, "X-Northwind-Agent-Id",
   "header carrying the agent id (else the local part of the agent's address)", 0},
  {"queue_header", QMESH_SETTING_STRING, "X-Northwind-Queue", "header carrying the queue (else default_queue)", 0},
  {"default_queue", QMESH_SETTING_STRING, NULL, "queue of threads whose messages carry no queue header", 0},
  {"tenant", QMESH_SETTING_STRING, "default", "tenant of every interaction this channel submits", 0},
  {"spool_dir", QMESH_SETTING_STRING, NULL, "directory watched for .eml and .mbox files (none: parse only)", 0},
  {"max_message_kb", QMESH_SETTING_INT, "10240", "larger messages are refused (KiB)", 0},
  {0},
};

static const qmesh_channel_ops_t ops = {
  .struct_size = sizeof ops,
  .open = e_open,
  .start = e_start,
  .stop = e_stop,
  .close = e_close,
  .parse_file = e_parse_file,
};

static const qmesh_plugin_t plugin = {
  .struct_size = sizeof plugin,
  .abi_major = QMESH_ABI_MAJOR,
  .abi_minor = QMESH_ABI_MINOR,
  .kind = QMESH_KIND_CHANNEL,
  .name = "channel_email",
  .version = "1.0.0",
  .description = "reads e-mail threads from .eml and mbox files (GMime)",
  .settings = settings,
  .ops = &ops,
};

QMESH_EXPORT const qmesh_plugin_t *qmesh_plugin_v1(void) { return &plugin; }
