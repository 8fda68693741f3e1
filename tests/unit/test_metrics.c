/*
 * test_metrics.c: the Prometheus registry: the exact exposition text a
 * scraper reads, stable handles, refusals, and updates from many threads
 * adding up exactly.
 */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "metrics.h"

static char *render(qm_metrics_t *m) {
  size_t len = 0;
  char *s = qm_metrics_render(m, &len);
  assert_non_null(s);
  assert_int_equal(len, strlen(s));
  return s;
}

static void test_render_exact(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("ingest");
  assert_non_null(m);
  qm_counter_t *msgs = qm_metrics_counter(m, "qmesh_messages_total", "Messages handled.", NULL);
  qm_gauge_t *depth = qm_metrics_gauge(m, "qmesh_outbox_depth", "Messages waiting.", NULL);
  /* Registered after the gauge, rendered with its family. */
  qm_counter_t *scored = qm_metrics_counter(m, "qmesh_messages_total", "ignored: not the first",
                                            "type=\"evaluation.scored\"");
  const double bounds[] = {0.25, 1, 2.5};
  qm_histogram_t *batch =
    qm_metrics_histogram(m, "qmesh_batch_seconds", "Batch time.", NULL, bounds, 3);
  assert_non_null(msgs);
  assert_non_null(depth);
  assert_non_null(scored);
  assert_non_null(batch);

  qm_counter_add(msgs, 1);
  qm_counter_add(msgs, 2);
  qm_counter_add(scored, 5);
  qm_gauge_set(depth, 10);
  qm_gauge_add(depth, 2.5);
  /* Bounds are inclusive: 0.25 and 2.5 land in their own buckets. */
  qm_histogram_observe(batch, 0.125);
  qm_histogram_observe(batch, 0.25);
  qm_histogram_observe(batch, 0.5);
  qm_histogram_observe(batch, 2.5);
  qm_histogram_observe(batch, 4);

  assert_int_equal(qm_counter_get(msgs), 3);
  assert_true(qm_gauge_get(depth) == 12.5);

  char *text = render(m);
  assert_string_equal(text,
                      "# HELP qmesh_messages_total Messages handled.\n"
                      "# TYPE qmesh_messages_total counter\n"
                      "qmesh_messages_total{service=\"ingest\"} 3\n"
                      "qmesh_messages_total{service=\"ingest\",type=\"evaluation.scored\"} 5\n"
                      "# HELP qmesh_outbox_depth Messages waiting.\n"
                      "# TYPE qmesh_outbox_depth gauge\n"
                      "qmesh_outbox_depth{service=\"ingest\"} 12.5\n"
                      "# HELP qmesh_batch_seconds Batch time.\n"
                      "# TYPE qmesh_batch_seconds histogram\n"
                      "qmesh_batch_seconds_bucket{service=\"ingest\",le=\"0.25\"} 2\n"
                      "qmesh_batch_seconds_bucket{service=\"ingest\",le=\"1\"} 3\n"
                      "qmesh_batch_seconds_bucket{service=\"ingest\",le=\"2.5\"} 4\n"
                      "qmesh_batch_seconds_bucket{service=\"ingest\",le=\"+Inf\"} 5\n"
                      "qmesh_batch_seconds_sum{service=\"ingest\"} 7.375\n"
                      "qmesh_batch_seconds_count{service=\"ingest\"} 5\n");
  free(text);
  qm_metrics_destroy(&m);
  assert_null(m);
  qm_metrics_destroy(&m); /* idempotent */
}

static void test_empty_registry(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("policy");
  char *text = render(m);
  assert_string_equal(text, "");
  free(text);
  qm_metrics_destroy(&m);
}

static void test_number_formats(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("s");
  qm_gauge_t *a = qm_metrics_gauge(m, "g", "", "k=\"a\"");
  qm_gauge_t *b = qm_metrics_gauge(m, "g", "", "k=\"b\"");
  qm_gauge_t *c = qm_metrics_gauge(m, "g", "", "k=\"c\"");
  qm_gauge_t *d = qm_metrics_gauge(m, "g", "", "k=\"d\"");
  qm_gauge_t *e = qm_metrics_gauge(m, "g", "", "k=\"e\"");
  qm_gauge_set(a, -3);
  qm_gauge_set(b, NAN);
  qm_gauge_set(c, INFINITY);
  qm_gauge_set(d, 0.1);
  qm_gauge_set(e, 1e21);
  const double bounds[] = {0.005, 0.01, 0.1, 1e3};
  qm_histogram_t *h = qm_metrics_histogram(m, "h", "", NULL, bounds, 4);
  qm_histogram_observe(h, 0.005);
  qm_histogram_observe(h, NAN);
  char *text = render(m);
  /* Empty help: no HELP line. Doubles in their shortest exact form. */
  assert_string_equal(text, "# TYPE g gauge\n"
                            "g{service=\"s\",k=\"a\"} -3\n"
                            "g{service=\"s\",k=\"b\"} NaN\n"
                            "g{service=\"s\",k=\"c\"} +Inf\n"
                            "g{service=\"s\",k=\"d\"} 0.1\n"
                            "g{service=\"s\",k=\"e\"} 1e+21\n"
                            "# TYPE h histogram\n"
                            "h_bucket{service=\"s\",le=\"0.005\"} 1\n"
                            "h_bucket{service=\"s\",le=\"0.01\"} 1\n"
                            "h_bucket{service=\"s\",le=\"0.1\"} 1\n"
                            "h_bucket{service=\"s\",le=\"1000\"} 1\n"
                            "h_bucket{service=\"s\",le=\"+Inf\"} 2\n"
                            "h_sum{service=\"s\"} NaN\n"
                            "h_count{service=\"s\"} 2\n");
  free(text);
  qm_metrics_destroy(&m);
}

static void test_histogram_without_bounds(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("s");
  qm_histogram_t *h = qm_metrics_histogram(m, "h", "All.", "x=\"1\"", NULL, 0);
  assert_non_null(h);
  qm_histogram_observe(h, 1.5);
  qm_histogram_observe(h, -0.5);
  char *text = render(m);
  assert_string_equal(text, "# HELP h All.\n"
                            "# TYPE h histogram\n"
                            "h_bucket{service=\"s\",x=\"1\",le=\"+Inf\"} 2\n"
                            "h_sum{service=\"s\",x=\"1\"} 1\n"
                            "h_count{service=\"s\",x=\"1\"} 2\n");
  free(text);
  qm_metrics_destroy(&m);
}

static void test_escaping(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("a\"b");
  /* Raw values; the registry escapes backslash, quote and newline. */
  qm_counter_t *c = qm_metrics_counter(m, "qmesh_files_total", "Files\nread from C:\\in.",
                                       "path=\"C:\\in\\x.wav\", note=\"say \"hi\"\nbye\"");
  assert_non_null(c);
  qm_counter_add(c, 1);
  char *text = render(m);
  assert_string_equal(text,
                      "# HELP qmesh_files_total Files\\nread from C:\\\\in.\n"
                      "# TYPE qmesh_files_total counter\n"
                      "qmesh_files_total{service=\"a\\\"b\",note=\"say \\\"hi\\\"\\nbye\","
                      "path=\"C:\\\\in\\\\x.wav\"} 1\n");
  free(text);
  qm_metrics_destroy(&m);
}

static void test_handles_stable(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("autoscore");
  const char *name = "qmesh_rules_total";
  qm_counter_t *a = qm_metrics_counter(m, name, "Rules run.", "rule=\"greeting\",form=\"f1\"");
  /* The same set in another order or spacing is the same series. */
  assert_ptr_equal(qm_metrics_counter(m, name, NULL, "form=\"f1\",rule=\"greeting\""), a);
  assert_ptr_equal(qm_metrics_counter(m, name, NULL, " form = \"f1\" , rule=\"greeting\" "), a);
  qm_counter_t *b = qm_metrics_counter(m, name, NULL, "rule=\"closing\",form=\"f1\"");
  assert_non_null(b);
  assert_ptr_not_equal(a, b);
  qm_counter_add(a, 7);

  /* Many more families and series: the tables grow, handles do not move. */
  qm_gauge_t *gauges[200];
  for (int i = 0; i < 200; i++) {
    char gname[64], labels[64];
    snprintf(gname, sizeof gname, "qmesh_g%d", i % 40);
    snprintf(labels, sizeof labels, "i=\"%d\"", i);
    gauges[i] = qm_metrics_gauge(m, gname, "A gauge.", labels);
    assert_non_null(gauges[i]);
    qm_gauge_set(gauges[i], i);
  }
  qm_counter_add(a, 1);
  qm_counter_add(b, 2);
  assert_ptr_equal(qm_metrics_counter(m, name, NULL, "rule=\"greeting\",form=\"f1\""), a);
  assert_int_equal(qm_counter_get(a), 8);
  for (int i = 0; i < 200; i++) {
    char gname[64], labels[64];
    snprintf(gname, sizeof gname, "qmesh_g%d", i % 40);
    snprintf(labels, sizeof labels, "i=\"%d\"", i);
    assert_ptr_equal(qm_metrics_gauge(m, gname, NULL, labels), gauges[i]);
    assert_true(qm_gauge_get(gauges[i]) == i);
  }
  char *text = render(m);
  assert_non_null(
    strstr(text, "qmesh_rules_total{service=\"autoscore\",form=\"f1\",rule=\"greeting\"} 8\n"
                 "qmesh_rules_total{service=\"autoscore\",form=\"f1\",rule=\"closing\"} 2\n"));
  assert_non_null(strstr(text, "qmesh_g3{service=\"autoscore\",i=\"3\"} 3\n"
                               "qmesh_g3{service=\"autoscore\",i=\"43\"} 43\n"));
  free(text);
  qm_metrics_destroy(&m);
}

/* Reads what was logged into the pipe so far. */
static void drain(int fd, char *buf, size_t cap) {
  size_t n = 0;
  ssize_t k;
  while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)k;
  buf[n] = '\0';
}

static void test_refusals(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  qm_log_set_fd(p[1]);
  qm_log_set_level(QM_LOG_WARN);

  qm_metrics_t *m = qm_metrics_new("coaching");
  qm_counter_t *ok = qm_metrics_counter(m, "qmesh_ok_total", "Fine.", NULL);
  assert_non_null(ok);
  const double bounds[] = {1, 2};
  const double unordered[] = {2, 1};
  const double with_inf[] = {1, INFINITY};
  assert_null(qm_metrics_counter(m, "9lives", "", NULL));
  assert_null(qm_metrics_counter(m, "qmesh-dash", "", NULL));
  assert_null(qm_metrics_counter(m, "", "", NULL));
  assert_null(qm_metrics_gauge(m, "qmesh_ok_total", "", NULL)); /* a counter already */
  assert_null(qm_metrics_counter(m, "qmesh_x_total", "", "service=\"other\""));
  assert_null(qm_metrics_counter(m, "qmesh_x_total", "", "a=\"1\",a=\"2\""));
  assert_null(qm_metrics_counter(m, "qmesh_x_total", "", "a=1"));
  assert_null(qm_metrics_counter(m, "qmesh_x_total", "", "a=\"open"));
  assert_null(qm_metrics_counter(m, "qmesh_x_total", "", "__name__=\"x\""));
  assert_null(qm_metrics_histogram(m, "qmesh_h", "", NULL, unordered, 2));
  assert_null(qm_metrics_histogram(m, "qmesh_h", "", NULL, with_inf, 2));
  assert_null(qm_metrics_histogram(m, "qmesh_h", "", "le=\"1\"", bounds, 2));
  qm_histogram_t *h = qm_metrics_histogram(m, "qmesh_h", "", NULL, bounds, 2);
  assert_non_null(h);
  assert_null(qm_metrics_counter(m, "qmesh_h_count", "", NULL)); /* collides with h's series */

  /* A refused handle is NULL and updating it does nothing. */
  qm_counter_add(NULL, 1);
  qm_gauge_set(NULL, 1);
  qm_gauge_add(NULL, 1);
  qm_histogram_observe(NULL, 1);
  assert_int_equal(qm_counter_get(NULL), 0);

  char text_log[8192];
  drain(p[0], text_log, sizeof text_log);
  assert_non_null(strstr(text_log, "metrics.refused"));
  assert_non_null(strstr(text_log, "name already registered as a counter"));
  assert_non_null(strstr(text_log, "histogram bounds must increase"));

  /* Nothing refused shows up in the exposition. */
  char *text = render(m);
  assert_string_equal(text, "# HELP qmesh_ok_total Fine.\n"
                            "# TYPE qmesh_ok_total counter\n"
                            "qmesh_ok_total{service=\"coaching\"} 0\n"
                            "# TYPE qmesh_h histogram\n"
                            "qmesh_h_bucket{service=\"coaching\",le=\"1\"} 0\n"
                            "qmesh_h_bucket{service=\"coaching\",le=\"2\"} 0\n"
                            "qmesh_h_bucket{service=\"coaching\",le=\"+Inf\"} 0\n"
                            "qmesh_h_sum{service=\"coaching\"} 0\n"
                            "qmesh_h_count{service=\"coaching\"} 0\n");
  free(text);
  qm_metrics_destroy(&m);
  qm_log_set_fd(2);
  close(p[0]);
  close(p[1]);
}

#define THREADS 8
#define ROUNDS 100000

typedef struct worker {
  qm_metrics_t *m;
  pthread_barrier_t *start;
  int index;
} worker_t;

/* Each thread looks its handles up itself (racing on first registration)
 * and then updates them, rendering now and then as a scraper would. */
static void *work(void *arg) {
  worker_t *w = arg;
  const double bounds[] = {0.5, 1, 2};
  pthread_barrier_wait(w->start);
  qm_counter_t *c = qm_metrics_counter(w->m, "qmesh_sent_total", "Sent.", "peer=\"reporting\"");
  qm_gauge_t *g = qm_metrics_gauge(w->m, "qmesh_inflight", "In flight.", NULL);
  qm_histogram_t *h = qm_metrics_histogram(w->m, "qmesh_rtt_seconds", "RTT.", NULL, bounds, 3);
  for (int i = 0; i < ROUNDS; i++) {
    qm_counter_add(c, 1);
    qm_gauge_add(g, 0.5);
    qm_histogram_observe(h, (i % 2) ? 1.0 : 3.0);
    if (i % 20000 == 0) {
      char *t = qm_metrics_render(w->m, NULL);
      free(t);
    }
  }
  return c;
}

static void test_concurrent_updates(void **state) {
  (void)state;
  qm_metrics_t *m = qm_metrics_new("transcribe");
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, THREADS);
  pthread_t th[THREADS];
  worker_t w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){.m = m, .start = &start, .index = i};
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  void *handles[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], &handles[i]);
  pthread_barrier_destroy(&start);
  for (int i = 1; i < THREADS; i++) assert_ptr_equal(handles[i], handles[0]);

  assert_int_equal(qm_counter_get(handles[0]), (uint64_t)THREADS * ROUNDS);
  char *text = render(m);
  /* 0.5 and 1.0/3.0 add exactly in binary, so the totals are exact. */
  char want[2048];
  snprintf(want, sizeof want,
           "# HELP qmesh_sent_total Sent.\n"
           "# TYPE qmesh_sent_total counter\n"
           "qmesh_sent_total{service=\"transcribe\",peer=\"reporting\"} %d\n"
           "# HELP qmesh_inflight In flight.\n"
           "# TYPE qmesh_inflight gauge\n"
           "qmesh_inflight{service=\"transcribe\"} %d\n"
           "# HELP qmesh_rtt_seconds RTT.\n"
           "# TYPE qmesh_rtt_seconds histogram\n"
           "qmesh_rtt_seconds_bucket{service=\"transcribe\",le=\"0.5\"} 0\n"
           "qmesh_rtt_seconds_bucket{service=\"transcribe\",le=\"1\"} %d\n"
           "qmesh_rtt_seconds_bucket{service=\"transcribe\",le=\"2\"} %d\n"
           "qmesh_rtt_seconds_bucket{service=\"transcribe\",le=\"+Inf\"} %d\n"
           "qmesh_rtt_seconds_sum{service=\"transcribe\"} %d\n"
           "qmesh_rtt_seconds_count{service=\"transcribe\"} %d\n",
           THREADS * ROUNDS, THREADS * ROUNDS / 2, THREADS * ROUNDS / 2, THREADS * ROUNDS / 2,
           THREADS * ROUNDS, THREADS * (ROUNDS / 2) * 4, THREADS * ROUNDS);
  assert_string_equal(text, want);
  free(text);
  qm_metrics_destroy(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_render_exact),
    cmocka_unit_test(test_empty_registry),
    cmocka_unit_test(test_number_formats),
    cmocka_unit_test(test_histogram_without_bounds),
    cmocka_unit_test(test_escaping),
    cmocka_unit_test(test_handles_stable),
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_concurrent_updates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
