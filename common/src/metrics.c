/*
 * metrics.c: the Prometheus registry of one service (see metrics.h).
 *
 * A registry is a list of families (one per metric name, in the order the
 * names were first registered), each with its series (one per label set, in
 * the order they were first asked for). Lookups and rendering hold the
 * registry's mutex; updates go straight to the series through the handle
 * with atomic operations and never lock, so a hot path pays one atomic add.
 * Doubles (gauges, histogram sums) are kept as their 64-bit patterns and
 * changed with compare-and-swap, since C11 has no atomic add on doubles.
 *
 * Label sets are given as the inside of the braces with raw values:
 * `type="evaluation.scored",peer="autoscore"`. The registry escapes values
 * itself when rendering (backslash, double quote and newline, as the text
 * format requires), so callers must not escape them. A value ends at the
 * first double quote that is followed by a comma or the end of the string,
 * so a value cannot contain `",`. Label names are sorted, so the same set
 * written in another order is the same series.
 *
 * A registration that cannot be honoured (a bad name or label set, a name
 * already used by another metric type, histogram bounds that do not
 * increase) is logged and returns NULL; every update function accepts NULL
 * and does nothing, so a mistake costs a metric, never the service.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

struct qm_counter {
  _Atomic uint64_t value;
  char *labels; /* canonical, escaped: `a="1",b="2"`, or "" */
};

struct qm_gauge {
  _Atomic uint64_t bits; /* a double's bit pattern */
  char *labels;
};

struct qm_histogram {
  char *labels;
  size_t nbounds;
  double *bounds;
  _Atomic uint64_t *buckets; /* nbounds + 1, not cumulative; the last is +Inf */
  _Atomic uint64_t sum_bits;
};

typedef struct family {
  char *name;
  char *help; /* escaped for the HELP line */
  kind_t kind;
  void **series;
  size_t nseries, cap;
} family_t;

struct qm_metrics {
  char *service; /* escaped for a label value */
  pthread_mutex_t mu;
  family_t **fams;
  size_t nfams, cap;
};

/* ---- a growable text buffer --------------------------------------------- */

typedef struct buf {
  char *p;
  size_t len, cap;
  int oom;
} buf_t;

static void buf_reserve(buf_t *b, size_t more) {
  if (b->oom || b->len + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n) {
  buf_reserve(b, n);
  if (b->oom) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void buf_printf(buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  buf_reserve(b, (size_t)n);
  if (b->oom) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Escapes for a label value (quote_too) or a HELP text. */
static void buf_escaped(buf_t *b, const char *s, size_t n, int quote_too) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '\\') buf_put(b, "\\\\", 2);
    else if (c == '\n') buf_put(b, "\\n", 2);
    else if (c == '"' && quote_too) buf_put(b, "\\\"", 2);
    else buf_put(b, &c, 1);
  }
}

/* ---- numbers ------------------------------------------------------------ */

static double bits_to_double(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static uint64_t double_to_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static void atomic_add_double(_Atomic uint64_t *bits, double v) {
  uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(bits, &old, double_to_bits(bits_to_double(old) + v),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

/* The shortest text that reads back as the same double, in the forms the
 * text format accepts ("0.005", "1", "1e+21", "NaN", "+Inf"). */
static void fmt_double(char *out, size_t n, double v) {
  if (isnan(v)) {
    snprintf(out, n, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  /* Whole numbers print in full ("1000", not "1e+03") up to 1e15, below
   * which every integer is exact. */
  if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(out, n, "%.0f", v);
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(out, n, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}

/* ---- names and labels --------------------------------------------------- */

static int name_ok(const char *s) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++) {
    int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
    if (!alpha && !(p > s && *p >= '0' && *p <= '9')) return 0;
  }
  return 1;
}

typedef struct label {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} label_t;

static int label_cmp(const void *a, const void *b) {
  const label_t *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

/* Turns the caller's label text into the canonical form stored with the
 * series: sorted by name, values escaped. Returns NULL with *why set when
 * the text is not a label set this registry can render. */
static char *canonical_labels(const char *in, kind_t kind, const char **why) {
  label_t labels[32];
  size_t n = 0;
  const char *p = in ? in : "";
  for (;;) {
    p = skip_ws(p);
    if (!*p) break;
    if (n == sizeof labels / sizeof labels[0]) {
      *why = "more than 32 labels";
      return NULL;
    }
    label_t *l = &labels[n];
    l->name = p;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_')) {
      *why = "a label name must start with a letter or '_'";
      return NULL;
    }
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
           (*p >= '0' && *p <= '9'))
      p++;
    l->name_len = (size_t)(p - l->name);
    p = skip_ws(p);
    if (*p != '=') {
      *why = "expected name=\"value\"";
      return NULL;
    }
    p = skip_ws(p + 1);
    if (*p != '"') {
      *why = "a label value must be in double quotes";
      return NULL;
    }
    l->value = ++p;
    const char *rq = NULL;
    for (const char *q = p; (q = strchr(q, '"')) != NULL; q++) {
      const char *after = skip_ws(q + 1);
      if (*after == ',' || *after == '\0') {
        rq = q;
        break;
      }
    }
    if (!rq) {
      *why = "unterminated label value";
      return NULL;
    }
    l->value_len = (size_t)(rq - l->value);
    p = skip_ws(rq + 1);
    if (*p == ',') p++;
    if ((l->name_len == 7 && memcmp(l->name, "service", 7) == 0)) {
      *why = "the label \"service\" is added by the registry";
      return NULL;
    }
    if (l->name_len >= 2 && l->name[0] == '_' && l->name[1] == '_') {
      *why = "label names starting with \"__\" are reserved";
      return NULL;
    }
    if (kind == KIND_HISTOGRAM && l->name_len == 2 && memcmp(l->name, "le", 2) == 0) {
      *why = "the label \"le\" is reserved in histograms";
      return NULL;
    }
    n++;
  }
  qsort(labels, n, sizeof labels[0], label_cmp);
  buf_t b = {0};
  buf_puts(&b, "");
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && label_cmp(&labels[i - 1], &labels[i]) == 0) {
      free(b.p);
      *why = "a label name appears twice";
      return NULL;
    }
    if (i) buf_put(&b, ",", 1);
    buf_put(&b, labels[i].name, labels[i].name_len);
    buf_put(&b, "=\"", 2);
    buf_escaped(&b, labels[i].value, labels[i].value_len, 1);
    buf_put(&b, "\"", 1);
  }
  if (b.oom) {
    free(b.p);
    *why = "out of memory";
    return NULL;
  }
  return b.p;
}

/* ---- the registry ------------------------------------------------------- */

qm_metrics_t *qm_metrics_new(const char *service) {
  qm_metrics_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  buf_t b = {0};
  const char *svc = service ? service : "qmesh";
  buf_puts(&b, "");
  buf_escaped(&b, svc, strlen(svc), 1);
  if (b.oom) {
    free(b.p);
    free(m);
    return NULL;
  }
  m->service = b.p;
  pthread_mutex_init(&m->mu, NULL);
  return m;
}

static void series_free(kind_t kind, void *s) {
  if (kind == KIND_COUNTER) {
    free(((qm_counter_t *)s)->labels);
  } else if (kind == KIND_GAUGE) {
    free(((qm_gauge_t *)s)->labels);
  } else {
    qm_histogram_t *h = s;
    free(h->labels);
    free(h->bounds);
    free((void *)h->buckets);
  }
  free(s);
}

void qm_metrics_destroy(qm_metrics_t **mp) {
  if (!mp || !*mp) return;
  qm_metrics_t *m = *mp;
  *mp = NULL;
  for (size_t i = 0; i < m->nfams; i++) {
    family_t *f = m->fams[i];
    for (size_t j = 0; j < f->nseries; j++) series_free(f->kind, f->series[j]);
    free(f->series);
    free(f->name);
    free(f->help);
    free(f);
  }
  free(m->fams);
  free(m->service);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

static const char *series_labels(kind_t kind, const void *s) {
  if (kind == KIND_COUNTER) return ((const qm_counter_t *)s)->labels;
  if (kind == KIND_GAUGE) return ((const qm_gauge_t *)s)->labels;
  return ((const qm_histogram_t *)s)->labels;
}

static void refuse(const char *name, const char *labels, const char *why) {
  qm_log(QM_LOG_WARN, "metrics.refused", "name", name ? name : "(null)", "labels",
         labels ? labels : "", "error", why, NULL);
}

/* Finds or creates the family `name` of `kind` (with m->mu held). */
static family_t *family_get(qm_metrics_t *m, const char *name, const char *help, kind_t kind,
                            const char **why) {
  for (size_t i = 0; i < m->nfams; i++) {
    family_t *f = m->fams[i];
    if (strcmp(f->name, name) != 0) continue;
    if (f->kind != kind) {
      *why = f->kind == KIND_COUNTER ? "name already registered as a counter"
           : f->kind == KIND_GAUGE   ? "name already registered as a gauge"
                                     : "name already registered as a histogram";
      return NULL;
    }
    return f;
  }
  /* A histogram's series names must not collide with another family. */
  for (size_t i = 0; i < m->nfams; i++) {
    family_t *f = m->fams[i];
    size_t fl = strlen(f->name), nl = strlen(name);
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t k = 0; k < 3; k++) {
      size_t sl = strlen(suffixes[k]);
      if ((kind == KIND_HISTOGRAM && fl == nl + sl && strncmp(f->name, name, nl) == 0 &&
           strcmp(f->name + nl, suffixes[k]) == 0) ||
          (f->kind == KIND_HISTOGRAM && nl == fl + sl && strncmp(name, f->name, fl) == 0 &&
           strcmp(name + fl, suffixes[k]) == 0)) {
        *why = "name collides with a histogram's _bucket, _sum or _count series";
        return NULL;
      }
    }
  }
  if (m->nfams == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    family_t **nf = realloc(m->fams, cap * sizeof *nf);
    if (!nf) goto oom;
    m->fams = nf;
    m->cap = cap;
  }
  family_t *f = calloc(1, sizeof *f);
  if (!f) goto oom;
  buf_t hb = {0};
  buf_puts(&hb, "");
  if (help) buf_escaped(&hb, help, strlen(help), 0);
  f->name = strdup(name);
  f->help = hb.p;
  f->kind = kind;
  if (!f->name || hb.oom) {
    free(f->name);
    free(hb.p);
    free(f);
    goto oom;
  }
  m->fams[m->nfams++] = f;
  return f;
oom:
  *why = "out of memory";
  return NULL;
}

static int family_add(family_t *f, void *s) {
  if (f->nseries == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 4;
    void **ns = realloc(f->series, cap * sizeof *ns);
    if (!ns) return -1;
    f->series = ns;
    f->cap = cap;
  }
  f->series[f->nseries++] = s;
  return 0;
}

/* The common part of the three lookups: validates, finds the family and the
 * series with these labels. Returns the existing series, or NULL with *fam
 * and *canon set for the caller to create one, or NULL with *why set. */
static void *lookup(qm_metrics_t *m, const char *name, const char *help, const char *labels,
                    kind_t kind, family_t **fam, char **canon, const char **why) {
  *fam = NULL;
  *canon = NULL;
  if (!name_ok(name)) {
    *why = "a metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*";
    return NULL;
  }
  char *c = canonical_labels(labels, kind, why);
  if (!c) return NULL;
  family_t *f = family_get(m, name, help, kind, why);
  if (!f) {
    free(c);
    return NULL;
  }
  for (size_t i = 0; i < f->nseries; i++) {
    if (strcmp(series_labels(kind, f->series[i]), c) == 0) {
      free(c);
      return f->series[i];
    }
  }
  *fam = f;
  *canon = c;
  return NULL;
}

/* Counters and gauges share one layout, a 64-bit atomic (a count, or a
 * double's bit pattern, where 0.0 is all zero bits, so calloc initialises
 * both) followed by their labels; one routine finds or makes either. */
_Static_assert(offsetof(struct qm_counter, labels) == offsetof(struct qm_gauge, labels) &&
                 sizeof(struct qm_counter) == sizeof(struct qm_gauge),
               "counters and gauges share a layout");

static void *get_scalar(qm_metrics_t *m, const char *name, const char *help, const char *labels,
                        kind_t kind) {
  if (!m) return NULL;
  const char *why = NULL;
  family_t *f;
  char *canon;
  pthread_mutex_lock(&m->mu);
  qm_counter_t *c = lookup(m, name, help, labels, kind, &f, &canon, &why);
  if (!c && f) {
    c = calloc(1, sizeof *c);
    if (c) {
      c->labels = canon;
      canon = NULL;
      if (family_add(f, c) != 0) {
        series_free(kind, c);
        c = NULL;
      }
    }
    free(canon);
    if (!c) why = "out of memory";
  }
  pthread_mutex_unlock(&m->mu);
  if (!c) refuse(name, labels, why);
  return c;
}

qm_counter_t *qm_metrics_counter(qm_metrics_t *m, const char *name, const char *help,
                                 const char *labels) {
  return get_scalar(m, name, help, labels, KIND_COUNTER);
}

qm_gauge_t *qm_metrics_gauge(qm_metrics_t *m, const char *name, const char *help,
                             const char *labels) {
  return get_scalar(m, name, help, labels, KIND_GAUGE);
}

qm_histogram_t *qm_metrics_histogram(qm_metrics_t *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds) {
  if (!m) return NULL;
  const char *why = NULL;
  if (nbounds && !bounds) why = "bounds missing";
  for (size_t i = 0; !why && i < nbounds; i++) {
    if (!isfinite(bounds[i])) why = "histogram bounds must be finite (+Inf is added)";
    else if (i > 0 && !(bounds[i] > bounds[i - 1])) why = "histogram bounds must increase";
  }
  if (why) {
    refuse(name, labels, why);
    return NULL;
  }
  family_t *f;
  char *canon;
  pthread_mutex_lock(&m->mu);
  qm_histogram_t *h = lookup(m, name, help, labels, KIND_HISTOGRAM, &f, &canon, &why);
  if (!h && f) {
    h = calloc(1, sizeof *h);
    if (h) {
      h->labels = canon;
      canon = NULL;
      h->nbounds = nbounds;
      h->bounds = malloc((nbounds ? nbounds : 1) * sizeof *h->bounds);
      h->buckets = calloc(nbounds + 1, sizeof *h->buckets);
      atomic_init(&h->sum_bits, double_to_bits(0.0));
      if (!h->bounds || !h->buckets || family_add(f, h) != 0) {
        series_free(KIND_HISTOGRAM, h);
        h = NULL;
      } else {
        if (nbounds) memcpy(h->bounds, bounds, nbounds * sizeof *bounds);
        for (size_t i = 0; i <= nbounds; i++) atomic_init(&h->buckets[i], 0);
      }
    }
    free(canon);
    if (!h) why = "out of memory";
  }
  pthread_mutex_unlock(&m->mu);
  if (!h) refuse(name, labels, why);
  return h;
}

/* ---- updates ------------------------------------------------------------ */

void qm_counter_add(qm_counter_t *c, uint64_t v) {
  if (c) atomic_fetch_add_explicit(&c->value, v, memory_order_relaxed);
}

uint64_t qm_counter_get(const qm_counter_t *c) {
  return c ? atomic_load_explicit(&((qm_counter_t *)c)->value, memory_order_relaxed) : 0;
}

void qm_gauge_set(qm_gauge_t *g, double v) {
  if (g) atomic_store_explicit(&g->bits, double_to_bits(v), memory_order_relaxed);
}

void qm_gauge_add(qm_gauge_t *g, double v) {
  if (g) atomic_add_double(&g->bits, v);
}

double qm_gauge_get(const qm_gauge_t *g) {
  return g ? bits_to_double(atomic_load_explicit(&((qm_gauge_t *)g)->bits, memory_order_relaxed))
           : 0.0;
}

void qm_histogram_observe(qm_histogram_t *h, double v) {
  if (!h) return;
  /* The first bucket whose upper bound is >= v (bounds are inclusive); NaN
   * and values above every bound land in +Inf. */
  size_t lo = 0, hi = h->nbounds;
  if (isnan(v)) {
    lo = h->nbounds;
  } else {
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (h->bounds[mid] < v) lo = mid + 1;
      else hi = mid;
    }
  }
  atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
  atomic_add_double(&h->sum_bits, v);
}

/* ---- rendering ---------------------------------------------------------- */

/* `{service="svc",labels}` or with an extra label (le) at the end. */
static void put_labels(buf_t *b, const qm_metrics_t *m, const char *labels, const char *le) {
  buf_puts(b, "{service=\"");
  buf_puts(b, m->service);
  buf_puts(b, "\"");
  if (*labels) {
    buf_puts(b, ",");
    buf_puts(b, labels);
  }
  if (le) buf_printf(b, ",le=\"%s\"", le);
  buf_puts(b, "}");
}

char *qm_metrics_render(qm_metrics_t *m, size_t *len) {
  if (len) *len = 0;
  if (!m) return NULL;
  buf_t b = {0};
  buf_puts(&b, "");
  char num[64];
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->nfams; i++) {
    const family_t *f = m->fams[i];
    if (*f->help) buf_printf(&b, "# HELP %s %s\n", f->name, f->help);
    buf_printf(&b, "# TYPE %s %s\n", f->name, kind_names[f->kind]);
    for (size_t j = 0; j < f->nseries; j++) {
      if (f->kind == KIND_COUNTER) {
        const qm_counter_t *c = f->series[j];
        buf_puts(&b, f->name);
        put_labels(&b, m, c->labels, NULL);
        buf_printf(&b, " %" PRIu64 "\n", qm_counter_get(c));
      } else if (f->kind == KIND_GAUGE) {
        const qm_gauge_t *g = f->series[j];
        buf_puts(&b, f->name);
        put_labels(&b, m, g->labels, NULL);
        fmt_double(num, sizeof num, qm_gauge_get(g));
        buf_printf(&b, " %s\n", num);
      } else {
        qm_histogram_t *h = f->series[j];
        /* _count is the +Inf bucket, so the two always agree even while
         * other threads observe; _sum may be a few observations apart. */
        uint64_t cum = 0;
        for (size_t k = 0; k <= h->nbounds; k++) {
          cum += atomic_load_explicit(&h->buckets[k], memory_order_relaxed);
          if (k < h->nbounds) fmt_double(num, sizeof num, h->bounds[k]);
          else snprintf(num, sizeof num, "+Inf");
          buf_printf(&b, "%s_bucket", f->name);
          put_labels(&b, m, h->labels, num);
          buf_printf(&b, " %" PRIu64 "\n", cum);
        }
        fmt_double(num, sizeof num,
                   bits_to_double(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
        buf_printf(&b, "%s_sum", f->name);
        put_labels(&b, m, h->labels, NULL);
        buf_printf(&b, " %s\n", num);
        buf_printf(&b, "%s_count", f->name);
        put_labels(&b, m, h->labels, NULL);
        buf_printf(&b, " %" PRIu64 "\n", cum);
      }
    }
  }
  pthread_mutex_unlock(&m->mu);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  if (len) *len = b.len;
  return b.p;
}
