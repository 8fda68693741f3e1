/*
 * bus.c: the durable outbox, the sender's window and go-back retransmit, and
 * the receiver's batch-commit-acknowledge cycle (docs/protocol.md).
 *
 * How it fits on the loop: every ZeroMQ socket is watched through its
 * ZMQ_FD with a uv_poll. That descriptor is edge-triggered: it signals a
 * change, not a level, and any zmq_send or zmq_recv may consume the signal.
 * So after every send and receive the code asks ZMQ_EVENTS again and keeps
 * going while the socket says it has input, and when it stops early because
 * a batch budget ran out it arms a uv_idle to continue on the next turn
 * rather than waiting for a signal that will not come.
 *
 * Sequence bookkeeping per destination link (all in memory, rebuilt from the
 * outbox and link_out at start):
 *   acked <= sent <= committed < next
 *   next       the sequence the next append in the open transaction gets
 *   committed  the highest sequence whose append has committed
 *   sent       the highest sequence handed to ZeroMQ
 *   acked      the highest sequence the receiver confirmed
 *   persisted  entries up to here are deleted from the outbox
 */
#include "bus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

#define LINKS_MAX QM_SERVICES_MAX
#define HDR_DATA_LEN 29
#define FRAME_MSGS_MAX 256
#define FRAME_BYTES_MAX (256u << 10)
#define HDR_ACK_LEN 17
#define TYPES_MAX 64

typedef struct link_out {
  char dest[QM_NAME_MAX + 1];
  size_t dest_len;
  void *sock;
  uv_os_sock_t fd;
  uv_poll_t poll;
  int poll_active;
  uint64_t next, committed, sent, acked, persisted, persisting;
  uint64_t last_progress_ms; /* last ack progress or go-back: times retransmits */
  uint64_t stalled_since_ms; /* last ack progress or idle: times reachability */
  uint32_t backoff_ms;
  /* The segment being built in the open transaction: messages
   * pend_first.. as `'S' count(4) [len(4) envelope]...`. */
  msgpack_sbuffer pend;
  uint32_t pend_count;
  uint64_t pend_first;
  qm_gauge_t *depth_gauge;
  struct qm_bus *bus;
} link_out_t;

typedef struct link_in {
  char src[QM_NAME_MAX + 1];
  uint64_t epoch, wm;         /* committed watermark */
  uint64_t t_epoch, t_wm;     /* tentative, inside the open batch */
  int dirty;                  /* t_* differ from the stored entry */
  int need_ack;
  int gap_reported;
} link_in_t;

typedef struct type_counters {
  char type[QM_TYPE_MAX + 1];
  qm_counter_t *in, *out, *dead;
} type_counters_t;

/* One received DATA frame: the sender's routing id, the header and the
 * payload holding `count` length-prefixed envelopes. */
typedef struct batch_msg {
  zmq_msg_t id, hdr, body;
} batch_msg_t;

/* One message of a received batch, pointing into its frame. */
typedef struct batch_item {
  size_t frame;           /* index into the batch's frames */
  uint64_t seq;
  const char *p;
  size_t n;
  type_counters_t *tc;
  int applied;
} batch_item_t;

struct qm_bus {
  char name[QM_NAME_MAX + 1];
  qm_bus_opts_t o;
  qm_store_t *store;
  MDB_dbi outbox, link_out_db, link_in_db, dead;
  uint64_t epoch;

  void *inbox;
  uv_os_sock_t inbox_fd;
  uv_poll_t inbox_poll;
  int inbox_poll_active;
  uv_idle_t idle;       /* continues draining after a budget ran out */
  int idle_active;
  uv_timer_t tick;      /* retransmits, ack flushes, intake resume */

  link_out_t *out[LINKS_MAX];
  size_t n_out;
  link_in_t in[LINKS_MAX];
  size_t n_in;

  MDB_txn *txn;         /* the open write transaction, if any */
  uint64_t last_flush_ms;

  batch_msg_t *batch;
  msgpack_sbuffer sbuf;
  msgpack_sbuffer frame;  /* the DATA frame being assembled */
  msgpack_zone zone;
  batch_item_t *items;    /* messages of the received batch */
  size_t n_items;

  int hold;             /* intake held by the owner */
  int bp_paused;        /* intake paused by backpressure */
  int full;             /* the store was full at the last commit */
  uint64_t full_retry_ms;
  int closing;
  int in_child;         /* inside a handler's nested transaction */
  int open_handles;     /* freed when the last of its handles has closed */

  qm_bus_stats_t st;
  type_counters_t types[TYPES_MAX];
  size_t n_types;
  qm_counter_t *c_dup, *c_retx, *c_epoch, *c_full, *c_bad, *c_stale;
  qm_histogram_t *h_batch, *h_commit;
};

static void pump(link_out_t *l);
static void idle_cb(uv_idle_t *h);
static void inbox_service(qm_bus_t *bus);
static void out_service(link_out_t *l);
static void update_intake(qm_bus_t *bus);

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

static int sock_has(void *sock, int what) {
  int ev = 0;
  size_t len = sizeof ev;
  if (zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) != 0) return 0;
  return (ev & what) != 0;
}

static type_counters_t *type_counters(qm_bus_t *bus, qm_str_t type) {
  for (size_t i = 0; i < bus->n_types; i++)
    if (strlen(bus->types[i].type) == type.n && memcmp(bus->types[i].type, type.p, type.n) == 0)
      return &bus->types[i];
  if (!bus->o.metrics) return NULL;
  size_t i = bus->n_types < TYPES_MAX ? bus->n_types++ : TYPES_MAX - 1;
  type_counters_t *t = &bus->types[i];
  if (i == TYPES_MAX - 1) {
    /* Past the cap every further type shares one series so a stream of
     * bogus types cannot grow the registry without bound. */
    snprintf(t->type, sizeof t->type, "other");
  } else {
    size_t n = type.n < QM_TYPE_MAX ? type.n : QM_TYPE_MAX;
    memcpy(t->type, type.p, n);
    t->type[n] = '\0';
  }
  char labels[128];
  snprintf(labels, sizeof labels, "type=\"%s\"", t->type);
  t->in = qm_metrics_counter(bus->o.metrics, "qmesh_messages_in_total",
                             "Messages received and applied, by type.", labels);
  t->out = qm_metrics_counter(bus->o.metrics, "qmesh_messages_out_total",
                              "Messages appended to the outbox, by type (once per destination).",
                              labels);
  t->dead = qm_metrics_counter(bus->o.metrics, "qmesh_messages_dead_total",
                               "Messages consumed into the dead store, by type.", labels);
  return t;
}

static void count(qm_counter_t *c, uint64_t n) {
  if (c) qm_counter_add(c, n);
}

static size_t outbox_key(uint8_t *key, const char *dest, size_t dest_len, uint64_t seq) {
  memcpy(key, dest, dest_len);
  key[dest_len] = 0;
  qm_be64_put(key + dest_len + 1, seq);
  return dest_len + 9;
}

/* Outbox records are segments: every message one transaction appends for
 * one destination, under the key of its first sequence, as
 *   'S' | count (4) | count x (length (4) | envelope)
 * which is also the payload layout of a DATA frame. One put per
 * transaction and destination, one delete once all of it is acknowledged:
 * the B-tree work is per batch, not per message. A segment is closed early
 * at SEG_MSGS_MAX messages or SEG_BYTES_MAX bytes so records stay modest. */
#define SEG_HDR 5
#define SEG_MSGS_MAX 4096
#define SEG_BYTES_MAX (1u << 20)

typedef struct seg_iter {
  const uint8_t *p, *end;
  uint32_t left;
} seg_iter_t;

static int seg_open(seg_iter_t *it, const MDB_val *v, uint32_t *count) {
  const uint8_t *p = v->mv_data;
  if (v->mv_size < SEG_HDR || p[0] != 'S') return -1;
  it->left = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
  it->p = p + SEG_HDR;
  it->end = p + v->mv_size;
  if (count) *count = it->left;
  return it->left ? 0 : -1;
}

/* 1 with the next message, 0 at the end, -1 for a damaged record. */
static int seg_next(seg_iter_t *it, const char **msg, size_t *len) {
  if (!it->left) return it->p == it->end ? 0 : -1;
  if (it->end - it->p < 4) return -1;
  size_t n = (size_t)it->p[0] << 24 | (size_t)it->p[1] << 16 | (size_t)it->p[2] << 8 | it->p[3];
  if ((size_t)(it->end - it->p - 4) < n) return -1;
  *msg = (const char *)it->p + 4;
  *len = n;
  it->p += 4 + n;
  it->left--;
  return 1;
}

static int own_key(const link_out_t *l, const MDB_val *k) {
  const uint8_t *kp = k->mv_data;
  return k->mv_size == l->dest_len + 9 && memcmp(kp, l->dest, l->dest_len) == 0 &&
         kp[l->dest_len] == 0;
}

static uint64_t key_seq(const link_out_t *l, const MDB_val *k) {
  return qm_be64_get((const uint8_t *)k->mv_data + l->dest_len + 1);
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Writes the pending segment of a link as one record. */
static int seg_write(qm_bus_t *bus, MDB_txn *txn, link_out_t *l) {
  if (!l->pend_count) return 0;
  uint8_t *hdr = (uint8_t *)l->pend.data;
  hdr[0] = 'S';
  put_u32(hdr + 1, l->pend_count);
  uint8_t key[QM_NAME_MAX + 10];
  MDB_val k = {outbox_key(key, l->dest, l->dest_len, l->pend_first), key};
  MDB_val v = {l->pend.size, l->pend.data};
  int rc = mdb_put(txn, bus->outbox, &k, &v, 0);
  l->pend_count = 0;
  l->pend.size = 0;
  return rc;
}

static void pend_discard(qm_bus_t *bus) {
  for (size_t i = 0; i < bus->n_out; i++) {
    bus->out[i]->pend_count = 0;
    bus->out[i]->pend.size = 0;
    bus->out[i]->next = bus->out[i]->committed + 1;
  }
}

static uint64_t depth_of(const link_out_t *l) { return l->committed - l->acked; }

static uint64_t total_depth(const qm_bus_t *bus) {
  uint64_t d = 0;
  for (size_t i = 0; i < bus->n_out; i++) d += depth_of(bus->out[i]);
  return d;
}

/* ---- destination links ------------------------------------------------ */

static void out_poll_cb(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  out_service(h->data);
}

static int link_connect(qm_bus_t *bus, link_out_t *l, qm_error_t *err) {
  const char *ep = bus->o.resolve ? bus->o.resolve(bus->o.resolve_ud, l->dest) : NULL;
  if (!ep)
    return qm_error_set(err, QM_ENOROUTE, "destination \"%s\" is not a known service", l->dest);
  l->sock = zmq_socket(bus->o.zmq_ctx, ZMQ_DEALER);
  if (!l->sock) return qm_error_set(err, QM_EZMQ, "zmq_socket: %s", zmq_strerror(errno));
  int one = 1, linger = 200, hwm = (int)(bus->o.cfg.window * 2 + 1000);
  int ivl = (int)bus->o.cfg.heartbeat_ms, tmo = (int)bus->o.cfg.heartbeat_ms * 3;
  zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, bus->name, strlen(bus->name));
  zmq_setsockopt(l->sock, ZMQ_IMMEDIATE, &one, sizeof one);
  zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
  zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_TIMEOUT, &tmo, sizeof tmo);
  if (zmq_connect(l->sock, ep) != 0) {
    int e = errno;
    zmq_close(l->sock);
    l->sock = NULL;
    return qm_error_set(err, QM_EZMQ, "connect %s (%s): %s", l->dest, ep, zmq_strerror(e));
  }
  size_t len = sizeof l->fd;
  zmq_getsockopt(l->sock, ZMQ_FD, &l->fd, &len);
  uv_poll_init_socket(bus->o.loop, &l->poll, l->fd);
  l->poll.data = l;
  uv_poll_start(&l->poll, UV_READABLE, out_poll_cb);
  l->poll_active = 1;
  return 0;
}

static link_out_t *link_find(qm_bus_t *bus, const char *dest, size_t n) {
  for (size_t i = 0; i < bus->n_out; i++)
    if (bus->out[i]->dest_len == n && memcmp(bus->out[i]->dest, dest, n) == 0) return bus->out[i];
  return NULL;
}

static link_out_t *link_get(qm_bus_t *bus, const char *dest, size_t n, qm_error_t *err) {
  link_out_t *l = link_find(bus, dest, n);
  if (l) return l;
  if (n == 0 || n > QM_NAME_MAX) {
    qm_error_set(err, QM_EINVAL, "destination name of %zu bytes", n);
    return NULL;
  }
  if (bus->n_out == LINKS_MAX) {
    qm_error_set(err, QM_EINVAL, "more than %d destinations", LINKS_MAX);
    return NULL;
  }
  l = calloc(1, sizeof *l);
  if (!l) {
    qm_error_set(err, QM_ENOMEM, "out of memory");
    return NULL;
  }
  memcpy(l->dest, dest, n);
  l->dest_len = n;
  l->bus = bus;
  l->next = 1;
  msgpack_sbuffer_init(&l->pend);
  l->backoff_ms = bus->o.cfg.retransmit_ms;
  l->last_progress_ms = l->stalled_since_ms = mono_ms();
  if (link_connect(bus, l, err) != 0) {
    free(l);
    return NULL;
  }
  if (bus->o.metrics) {
    char labels[96];
    snprintf(labels, sizeof labels, "dest=\"%s\"", l->dest);
    l->depth_gauge = qm_metrics_gauge(bus->o.metrics, "qmesh_outbox_depth",
                                      "Messages committed to the outbox and not yet acknowledged.",
                                      labels);
  }
  bus->out[bus->n_out++] = l;
  return l;
}

/* Rebuilds each destination's sequences from link_out (acknowledged and
 * deleted up to) and the outbox (what is still there). */
static int links_load(qm_bus_t *bus, qm_error_t *err) {
  MDB_txn *txn;
  int rc = qm_store_begin(bus->store, NULL, MDB_RDONLY, &txn);
  if (rc) return qm_error_set(err, rc, "%s: cannot read links", bus->name);
  MDB_cursor *cur;
  MDB_val k, v;
  char dests[LINKS_MAX][QM_NAME_MAX + 1];
  uint64_t acked[LINKS_MAX];
  size_t nd = 0;
  mdb_cursor_open(txn, bus->link_out_db, &cur);
  while (nd < LINKS_MAX && mdb_cursor_get(cur, &k, &v, nd ? MDB_NEXT : MDB_FIRST) == 0) {
    if (k.mv_size > QM_NAME_MAX || v.mv_size != 8) continue;
    memcpy(dests[nd], k.mv_data, k.mv_size);
    dests[nd][k.mv_size] = 0;
    acked[nd++] = qm_be64_get(v.mv_data);
  }
  mdb_cursor_close(cur);
  /* Destinations present only in the outbox (never acknowledged yet). */
  mdb_cursor_open(txn, bus->outbox, &cur);
  int op = MDB_FIRST;
  while (nd < LINKS_MAX && mdb_cursor_get(cur, &k, &v, op) == 0) {
    op = MDB_NEXT;
    const char *kp = k.mv_data;
    size_t dl = strnlen(kp, k.mv_size);
    if (dl + 9 != k.mv_size) continue;
    int seen = 0;
    for (size_t i = 0; i < nd; i++)
      if (strlen(dests[i]) == dl && memcmp(dests[i], kp, dl) == 0) seen = 1;
    if (!seen) {
      memcpy(dests[nd], kp, dl);
      dests[nd][dl] = 0;
      acked[nd++] = 0;
    }
    /* Skip to the next destination: the key after dest\xff... */
    uint8_t skip[QM_NAME_MAX + 10];
    memcpy(skip, kp, dl);
    memset(skip + dl, 0xff, 9);
    MDB_val sk = {dl + 9, skip};
    if (mdb_cursor_get(cur, &sk, &v, MDB_SET_RANGE) != 0) break;
    op = MDB_GET_CURRENT;
  }
  for (size_t i = 0; i < nd; i++) {
    link_out_t *l = link_get(bus, dests[i], strlen(dests[i]), err);
    if (!l) {
      mdb_cursor_close(cur);
      mdb_txn_abort(txn);
      return err ? err->code : QM_EINVAL;
    }
    uint64_t last = acked[i];
    uint8_t key[QM_NAME_MAX + 10];
    size_t kl = outbox_key(key, l->dest, l->dest_len, UINT64_MAX);
    MDB_val sk = {kl, key};
    /* The last entry of this destination: seek past it and step back. */
    int r = mdb_cursor_get(cur, &sk, &v, MDB_SET_RANGE);
    r = r == 0 ? mdb_cursor_get(cur, &sk, &v, MDB_PREV) : mdb_cursor_get(cur, &sk, &v, MDB_LAST);
    seg_iter_t it;
    uint32_t n;
    if (r == 0 && own_key(l, &sk) && seg_open(&it, &v, &n) == 0) {
      uint64_t s = key_seq(l, &sk) + n - 1;
      if (s > last) last = s;
    }
    l->acked = l->persisted = l->sent = acked[i];
    l->committed = last;
    l->next = last + 1;
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return 0;
}

/* Sends what is committed and inside the window, in one short read
 * transaction. Stops at EAGAIN (peer not connected or its queue full): the
 * tick timer tries again. */
static int frame_flush(link_out_t *l, uint8_t *hdr, uint32_t count) {
  qm_bus_t *bus = l->bus;
  qm_be64_put(hdr + 9, l->sent + 1);
  hdr[25] = (uint8_t)(count >> 24);
  hdr[26] = (uint8_t)(count >> 16);
  hdr[27] = (uint8_t)(count >> 8);
  hdr[28] = (uint8_t)count;
  if (zmq_send(l->sock, hdr, HDR_DATA_LEN, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    return -1;
  }
  zmq_send(l->sock, bus->frame.data, bus->frame.size, ZMQ_DONTWAIT);
  l->sent += count;
  return 0;
}

/* Positions the cursor on the segment holding `seq`; 0 on success. */
static int seg_seek(link_out_t *l, MDB_cursor *cur, uint64_t seq, MDB_val *k, MDB_val *v) {
  uint8_t key[QM_NAME_MAX + 10];
  MDB_val sk = {outbox_key(key, l->dest, l->dest_len, seq), key};
  int r = mdb_cursor_get(cur, &sk, v, MDB_SET_RANGE);
  if (r == 0 && own_key(l, &sk) && key_seq(l, &sk) == seq) {
    *k = sk;
    return 0;
  }
  /* Not the first of a segment: it is inside the one before. */
  r = r == 0 ? mdb_cursor_get(cur, &sk, v, MDB_PREV) : mdb_cursor_get(cur, &sk, v, MDB_LAST);
  if (r != 0 || !own_key(l, &sk) || key_seq(l, &sk) > seq) return -1;
  *k = sk;
  return 0;
}

static void pump(link_out_t *l) {
  qm_bus_t *bus = l->bus;
  if (!l->sock || bus->closing) return;
  uint64_t limit = l->acked + bus->o.cfg.window;
  if (limit > l->committed) limit = l->committed;
  if (l->sent >= limit) return;
  MDB_txn *txn;
  if (qm_store_begin(bus->store, NULL, MDB_RDONLY, &txn) != 0) return;
  MDB_cursor *cur;
  mdb_cursor_open(txn, bus->outbox, &cur);
  MDB_val k, v;
  uint64_t expect = l->sent + 1;
  int r = seg_seek(l, cur, expect, &k, &v);
  uint8_t hdr[HDR_DATA_LEN];
  hdr[0] = 'D';
  qm_be64_put(hdr + 1, bus->epoch);
  qm_be64_put(hdr + 17, l->acked + 1);
  uint32_t count = 0;
  bus->frame.size = 0;
  int stop = 0;
  while (r == 0 && !stop && expect <= limit && own_key(l, &k)) {
    uint64_t seq = key_seq(l, &k);
    seg_iter_t it;
    const char *msg;
    size_t len;
    int got = 0;
    if (seq > expect || seg_open(&it, &v, NULL) != 0) {
      /* A segment is missing or damaged below `committed`: this cannot
       * happen unless the store was edited behind our back. Say so and
       * stop rather than send out of order. */
      qm_logf(QM_LOG_ERROR, "bus.outbox_gap", "dest=%s expected=%llu found=%llu", l->dest,
              (unsigned long long)expect, (unsigned long long)seq);
      break;
    }
    while (expect <= limit && (got = seg_next(&it, &msg, &len)) == 1) {
      if (seq++ < expect) continue; /* acknowledged part of a segment */
      /* One frame carries consecutive messages, up to FRAME_MSGS_MAX or
       * FRAME_BYTES_MAX bytes, so ZeroMQ's per-message cost is paid once
       * per frame, not once per message. */
      if (count && (count == FRAME_MSGS_MAX || bus->frame.size + len + 4 > FRAME_BYTES_MAX)) {
        if (frame_flush(l, hdr, count) != 0) {
          stop = 1;
          count = 0;
          break;
        }
        count = 0;
        bus->frame.size = 0;
      }
      uint8_t lb[4];
      put_u32(lb, (uint32_t)len);
      msgpack_sbuffer_write(&bus->frame, (const char *)lb, 4);
      msgpack_sbuffer_write(&bus->frame, msg, len);
      count++;
      expect++;
    }
    if (got < 0) {
      qm_logf(QM_LOG_ERROR, "bus.outbox_damaged", "dest=%s seq=%llu", l->dest,
              (unsigned long long)seq);
      break;
    }
    r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (count) frame_flush(l, hdr, count);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
}

static void handle_ack(link_out_t *l, const uint8_t *buf, size_t n) {
  qm_bus_t *bus = l->bus;
  if (n != HDR_ACK_LEN || (buf[0] != 'A' && buf[0] != 'G')) {
    count(bus->c_bad, 1);
    return;
  }
  if (qm_be64_get(buf + 1) != bus->epoch) return; /* meant for an earlier incarnation */
  uint64_t seq = qm_be64_get(buf + 9);
  if (seq > l->committed) seq = l->committed;
  if (seq > l->acked) {
    l->acked = seq;
    l->last_progress_ms = l->stalled_since_ms = mono_ms();
    l->backoff_ms = bus->o.cfg.retransmit_ms;
  }
  if (l->sent < l->acked) l->sent = l->acked;
  if (buf[0] == 'G' && l->sent > seq) {
    /* The receiver lost something after `seq`: go back now. */
    l->sent = l->acked;
    bus->st.retransmits++;
    count(bus->c_retx, 1);
  }
}

/* Reads every acknowledgement waiting on a DEALER, then sends what the
 * window allows, and repeats while ZeroMQ reports input: the descriptor is
 * edge-triggered and a send may have consumed the signal for an ack that
 * arrived meanwhile, so ZMQ_EVENTS is asked again after every send. */
static void out_service(link_out_t *l) {
  qm_bus_t *bus = l->bus;
  for (int rounds = 0; l->sock && rounds < 64; rounds++) {
    uint8_t buf[32];
    for (;;) {
      int n = zmq_recv(l->sock, buf, sizeof buf, ZMQ_DONTWAIT);
      if (n < 0) break;
      handle_ack(l, buf, (size_t)n);
    }
    pump(l);
    if (!sock_has(l->sock, ZMQ_POLLIN)) break;
  }
  if (bus->bp_paused) update_intake(bus);
  if (l->depth_gauge) qm_gauge_set(l->depth_gauge, (double)depth_of(l));
}

/* ---- transactions and the outbox --------------------------------------- */

/* Deletes the segments whose every message is acknowledged, inside txn. A
 * partly acknowledged segment stays until the rest is; go-back skips its
 * acknowledged part. */
static int flush_acks(qm_bus_t *bus, MDB_txn *txn) {
  for (size_t i = 0; i < bus->n_out; i++) {
    link_out_t *l = bus->out[i];
    l->persisting = l->persisted;
    if (l->acked <= l->persisted) continue;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, bus->outbox, &cur);
    if (rc) return qm_store_err(rc);
    uint8_t key[QM_NAME_MAX + 10];
    MDB_val k = {outbox_key(key, l->dest, l->dest_len, 0), key}, v;
    uint64_t done = l->persisted;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && own_key(l, &k)) {
      seg_iter_t it;
      uint32_t n = 1;
      if (seg_open(&it, &v, &n) != 0) n = 1;
      uint64_t last = key_seq(l, &k) + n - 1;
      if (last > l->acked) break;
      rc = mdb_cursor_del(cur, 0);
      if (rc) break;
      done = last;
      rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
      if (rc == MDB_NOTFOUND || rc == EINVAL) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return qm_store_err(rc);
    if (done == l->persisted) continue;
    uint8_t val[8];
    qm_be64_put(val, done);
    MDB_val lk = {l->dest_len, l->dest}, lv = {8, val};
    rc = mdb_put(txn, bus->link_out_db, &lk, &lv, 0);
    if (rc) return qm_store_err(rc);
    l->persisting = done;
  }
  bus->last_flush_ms = mono_ms();
  return 0;
}

int qm_bus_begin(qm_bus_t *bus, MDB_txn **txn) {
  if (bus->txn) return QM_EINVAL;
  int rc = qm_store_begin(bus->store, NULL, 0, txn);
  if (rc) return rc;
  pend_discard(bus);
  rc = flush_acks(bus, *txn);
  if (rc) {
    mdb_txn_abort(*txn);
    *txn = NULL;
    return rc;
  }
  bus->txn = *txn;
  return 0;
}

static void after_commit(qm_bus_t *bus) {
  uint64_t old_committed[LINKS_MAX];
  for (size_t i = 0; i < bus->n_out; i++) {
    link_out_t *l = bus->out[i];
    old_committed[i] = l->committed;
    l->committed = l->next - 1;
    l->persisted = l->persisting;
    if (l->sent == l->acked && l->committed > l->sent) l->last_progress_ms = mono_ms();
    if (l->acked == old_committed[i] && l->committed > l->acked) l->stalled_since_ms = mono_ms();
    out_service(l);
    if (l->depth_gauge) qm_gauge_set(l->depth_gauge, (double)depth_of(l));
  }
  update_intake(bus);
}

int qm_bus_commit(qm_bus_t *bus, MDB_txn *txn) {
  uint64_t t0 = uv_hrtime();
  bus->txn = NULL;
  int rc = 0;
  for (size_t i = 0; i < bus->n_out && rc == 0; i++) rc = qm_store_err(seg_write(bus, txn, bus->out[i]));
  if (rc == 0) {
    rc = qm_store_commit(bus->store, txn);
  } else {
    mdb_txn_abort(txn);
  }
  if (bus->h_commit) qm_histogram_observe(bus->h_commit, (double)(uv_hrtime() - t0) / 1e9);
  if (rc == 0) {
    if (bus->full) {
      bus->full = 0;
      qm_log(QM_LOG_INFO, "store.room_again", NULL);
    }
    after_commit(bus);
    return 0;
  }
  pend_discard(bus);
  if (rc == QM_EMAPFULL) {
    if (!bus->full)
      qm_log(QM_LOG_ERROR, "store.full", "dir", qm_store_dir(bus->store), "hint",
             "raise store.map_size_mb or free space; intake is paused", NULL);
    bus->full = 1;
    bus->full_retry_ms = mono_ms() + 1000;
    count(bus->c_full, 1);
    update_intake(bus);
  }
  return rc;
}

void qm_bus_abort(qm_bus_t *bus, MDB_txn *txn) {
  bus->txn = NULL;
  mdb_txn_abort(txn);
  pend_discard(bus);
}

static int store_fail(qm_bus_t *bus, int mdb_rc, qm_error_t *err, const char *what) {
  int rc = qm_store_err(mdb_rc);
  if (rc == QM_EMAPFULL) count(bus->c_full, 1);
  return qm_error_set(err, rc, "%s: %s", what, mdb_strerror(mdb_rc));
}

int qm_bus_send_to(qm_bus_t *bus, MDB_txn *txn, const char *dest, const char *raw, size_t len,
                   qm_error_t *err) {
  link_out_t *l = link_get(bus, dest, strlen(dest), err);
  if (!l) return err ? err->code : QM_EINVAL;
  if (len > UINT32_MAX) return qm_error_set(err, QM_ETOOBIG, "message of %zu bytes", len);
  if (l->next <= l->committed) l->next = l->committed + 1;
  /* Close a full segment early, except inside a handler's nested
   * transaction, whose appends must stay in memory so that a refusal can
   * take them back. */
  if (l->pend_count && !bus->in_child &&
      (l->pend_count >= SEG_MSGS_MAX || l->pend.size + len + 4 > SEG_BYTES_MAX)) {
    int rc = seg_write(bus, txn, l);
    if (rc) return store_fail(bus, rc, err, "outbox append");
  }
  if (!l->pend_count) {
    l->pend_first = l->next;
    l->pend.size = 0;
    static const char zero[SEG_HDR];
    msgpack_sbuffer_write(&l->pend, zero, SEG_HDR);
  }
  uint8_t lb[4];
  put_u32(lb, (uint32_t)len);
  msgpack_sbuffer_write(&l->pend, (const char *)lb, 4);
  msgpack_sbuffer_write(&l->pend, raw, len);
  l->pend_count++;
  l->next++;
  (void)txn;
  return 0;
}

int qm_bus_dead_put(qm_bus_t *bus, MDB_txn *txn, const qm_id_t *id, const char *kind,
                    const char *from, const char *reason, const char *raw, size_t len) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  const char *keys[] = {"kind", "from", "reason"};
  const char *vals[] = {kind, from ? from : "", reason ? reason : ""};
  msgpack_pack_map(&pk, 5);
  for (int i = 0; i < 3; i++) {
    msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
    msgpack_pack_str_with_body(&pk, vals[i], strlen(vals[i]));
  }
  msgpack_pack_str_with_body(&pk, "at", 2);
  msgpack_pack_uint64(&pk, qm_now_ms());
  msgpack_pack_str_with_body(&pk, "raw", 3);
  msgpack_pack_bin_with_body(&pk, raw, len);
  MDB_val k = {16, (void *)id->b}, v = {sb.size, sb.data};
  int rc = mdb_put(txn, bus->dead, &k, &v, 0);
  msgpack_sbuffer_destroy(&sb);
  if (rc == 0) bus->st.dead_msgs++;
  return qm_store_err(rc);
}

int qm_bus_emit(qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg, qm_error_t *err) {
  bus->sbuf.size = 0;
  int rc = qm_envelope_encode(&bus->sbuf, msg);
  if (rc) return qm_error_set(err, rc, "cannot encode %.*s message", (int)msg->type.n, msg->type.p);
  const char *dests[QM_ROUTE_DEST_MAX];
  size_t n = bus->o.routes ? qm_routes_match(bus->o.routes, msg->type, msg->hdr, msg->hdr_count,
                                             dests, QM_ROUTE_DEST_MAX)
                           : 0;
  type_counters_t *tc = type_counters(bus, msg->type);
  if (n == 0) {
    rc = qm_bus_dead_put(bus, txn, &msg->id, "noroute", bus->name, "no route", bus->sbuf.data,
                         bus->sbuf.size);
    if (rc) return qm_error_set(err, rc, "dead store: %s", qm_strerror(rc));
    if (tc) count(tc->dead, 1);
    char idbuf[37];
    qm_log(QM_LOG_WARN, "bus.no_route", "id", qm_id_format(&msg->id, idbuf), "type",
           tc ? tc->type : "", NULL);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    rc = qm_bus_send_to(bus, txn, dests[i], bus->sbuf.data, bus->sbuf.size, err);
    if (rc) return rc;
  }
  if (tc) count(tc->out, n);
  bus->st.out_msgs += n;
  return (int)n;
}

/* ---- receiving ------------------------------------------------------- */

static link_in_t *link_in_get(qm_bus_t *bus, MDB_txn *txn, const char *src, size_t n) {
  for (size_t i = 0; i < bus->n_in; i++)
    if (strlen(bus->in[i].src) == n && memcmp(bus->in[i].src, src, n) == 0) return &bus->in[i];
  if (bus->n_in == LINKS_MAX || n == 0 || n > QM_NAME_MAX) return NULL;
  link_in_t *li = &bus->in[bus->n_in++];
  memset(li, 0, sizeof *li);
  memcpy(li->src, src, n);
  MDB_val k = {n, (void *)src}, v;
  if (mdb_get(txn, bus->link_in_db, &k, &v) == 0 && v.mv_size == 16) {
    li->epoch = qm_be64_get(v.mv_data);
    li->wm = qm_be64_get((const uint8_t *)v.mv_data + 8);
  }
  li->t_epoch = li->epoch;
  li->t_wm = li->wm;
  return li;
}

static void send_ack(qm_bus_t *bus, link_in_t *li, char kind) {
  uint8_t buf[HDR_ACK_LEN];
  buf[0] = (uint8_t)kind;
  qm_be64_put(buf + 1, li->epoch);
  qm_be64_put(buf + 9, li->wm);
  /* ROUTER_MANDATORY: an unknown or gone peer fails with EHOSTUNREACH; the
   * sender will retransmit and be acknowledged then. */
  if (zmq_send(bus->inbox, li->src, strlen(li->src), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
    zmq_send(bus->inbox, buf, sizeof buf, ZMQ_DONTWAIT);
}

/* Decodes and applies one accepted message. In the fast pass the handler
 * runs directly in the batch transaction; if it refuses a message, the pass
 * returns APPLY_RETRY and the batch is redone carefully, each message in a
 * nested transaction so a refusal discards only that message's writes.
 * Returns APPLY_OK, APPLY_DEAD (consumed into `dead`), APPLY_RETRY, or a
 * negative store error that aborts the batch. */
enum { APPLY_OK = 0, APPLY_DEAD = 1, APPLY_RETRY = 2 };

static int apply_one(qm_bus_t *bus, MDB_txn *txn, const char *from, const char *raw, size_t len,
                     int careful, const qm_id_t *dead_id, type_counters_t **tc_out) {
  qm_error_t err;
  qm_envelope_t env;
  qm_error_clear(&err);
  msgpack_zone_clear(&bus->zone);
  *tc_out = NULL;
  int rc = qm_envelope_decode(raw, len, bus->o.cfg.max_message_bytes, &bus->zone, &env, &err);
  if (rc) {
    /* An undecodable message has no id of its own: it gets a fresh one, or
     * keeps the one it was filed under when it is replayed. */
    qm_id_t id;
    if (dead_id) id = *dead_id;
    else qm_id_new(&id);
    char reason[1100];
    snprintf(reason, sizeof reason, "%s: %s", qm_err_name(rc), err.msg);
    rc = qm_bus_dead_put(bus, txn, &id, "in", from, reason, raw, len);
    if (rc) return rc;
    count(bus->c_bad, 1);
    qm_log(QM_LOG_WARN, "bus.dead", "from", from, "reason", reason, NULL);
    return APPLY_DEAD;
  }
  type_counters_t *tc = *tc_out = type_counters(bus, env.type);
  if (!bus->o.handler) return APPLY_OK;
  if (!careful) {
    rc = bus->o.handler(bus->o.handler_ud, bus, txn, &env, raw, len, &err);
    if (rc == 0) return APPLY_OK;
    return rc == QM_EMAPFULL || rc == QM_ESTORE ? rc : APPLY_RETRY;
  }
  struct {
    uint64_t next;
    uint32_t count;
    size_t size;
  } saved[LINKS_MAX];
  size_t n_out_before = bus->n_out;
  for (size_t i = 0; i < bus->n_out; i++) {
    saved[i].next = bus->out[i]->next;
    saved[i].count = bus->out[i]->pend_count;
    saved[i].size = bus->out[i]->pend.size;
  }
  MDB_txn *child;
  rc = qm_store_begin(bus->store, txn, 0, &child);
  if (rc) return rc;
  bus->txn = child;
  bus->in_child = 1;
  rc = bus->o.handler(bus->o.handler_ud, bus, child, &env, raw, len, &err);
  bus->in_child = 0;
  bus->txn = txn;
  if (rc == 0) {
    rc = qm_store_commit(bus->store, child);
    return rc ? rc : APPLY_OK;
  }
  mdb_txn_abort(child);
  /* Undo the handler's appends: they are still in memory (no segment is
   * closed inside a nested transaction). Links it created keep existing
   * with nothing pending. */
  for (size_t i = 0; i < bus->n_out; i++) {
    link_out_t *l = bus->out[i];
    if (i < n_out_before) {
      l->next = saved[i].next;
      l->pend_count = saved[i].count;
      l->pend.size = saved[i].size;
    } else {
      l->next = l->committed + 1;
      l->pend_count = 0;
      l->pend.size = 0;
    }
  }
  if (rc == QM_EMAPFULL) return rc;
  char reason[1100];
  snprintf(reason, sizeof reason, "%s: %s", qm_err_name(rc), err.msg[0] ? err.msg : qm_strerror(rc));
  rc = qm_bus_dead_put(bus, txn, &env.id, "in", from, reason, raw, len);
  if (rc) return rc;
  if (tc) count(tc->dead, 1);
  char idbuf[37];
  qm_log(QM_LOG_WARN, "bus.dead", "id", qm_id_format(&env.id, idbuf), "from", from, "reason",
         reason, NULL);
  return APPLY_DEAD;
}

/* Splits one DATA frame into batch items; returns 0, or -1 when the frame
 * is malformed (then it adds nothing). */
static int frame_items(qm_bus_t *bus, size_t frame) {
  batch_msg_t *m = &bus->batch[frame];
  const uint8_t *h = zmq_msg_data(&m->hdr);
  if (zmq_msg_size(&m->hdr) != HDR_DATA_LEN || h[0] != 'D') return -1;
  if (zmq_msg_size(&m->id) == 0 || zmq_msg_size(&m->id) > QM_NAME_MAX) return -1;
  uint32_t count = (uint32_t)h[25] << 24 | (uint32_t)h[26] << 16 | (uint32_t)h[27] << 8 | h[28];
  if (count == 0 || count > FRAME_MSGS_MAX) return -1;
  const char *p = zmq_msg_data(&m->body), *end = p + zmq_msg_size(&m->body);
  size_t first = bus->n_items;
  uint64_t seq = qm_be64_get(h + 9);
  for (uint32_t i = 0; i < count; i++) {
    if (end - p < 4) goto bad;
    const uint8_t *lp = (const uint8_t *)p;
    size_t n = (size_t)lp[0] << 24 | (size_t)lp[1] << 16 | (size_t)lp[2] << 8 | lp[3];
    p += 4;
    if ((size_t)(end - p) < n) goto bad;
    batch_item_t *it = &bus->items[bus->n_items++];
    it->frame = frame;
    it->seq = seq + i;
    it->p = p;
    it->n = n;
    p += n;
  }
  if (p == end) return 0;
bad:
  bus->n_items = first;
  return -1;
}

/* Receives DATA frames until batch_max messages are in hand or nothing is
 * waiting; returns the number of frames. */
static size_t receive_batch(qm_bus_t *bus) {
  size_t n = 0;
  bus->n_items = 0;
  while (bus->n_items < bus->o.cfg.batch_max && n < bus->o.cfg.batch_max) {
    batch_msg_t *m = &bus->batch[n];
    zmq_msg_init(&m->id);
    if (zmq_msg_recv(&m->id, bus->inbox, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m->id);
      break;
    }
    zmq_msg_init(&m->hdr);
    zmq_msg_init(&m->body);
    if (zmq_msg_more(&m->id)) zmq_msg_recv(&m->hdr, bus->inbox, 0);
    if (zmq_msg_more(&m->hdr)) zmq_msg_recv(&m->body, bus->inbox, 0);
    int extra_frames = 0;
    while (zmq_msg_more(&m->body)) {
      zmq_msg_t extra;
      zmq_msg_init(&extra);
      zmq_msg_recv(&extra, bus->inbox, 0);
      zmq_msg_close(&extra);
      extra_frames = 1;
    }
    n++;
    if (extra_frames || frame_items(bus, n - 1) != 0) {
      count(bus->c_bad, 1);
      qm_logf(QM_LOG_WARN, "bus.bad_frame", "from_len=%zu hdr_len=%zu body_len=%zu",
              zmq_msg_size(&m->id), zmq_msg_size(&m->hdr), zmq_msg_size(&m->body));
    }
  }
  return n;
}

static void close_batch(qm_bus_t *bus, size_t n) {
  for (size_t i = 0; i < n; i++) {
    zmq_msg_close(&bus->batch[i].id);
    zmq_msg_close(&bus->batch[i].hdr);
    zmq_msg_close(&bus->batch[i].body);
  }
  bus->n_items = 0;
}

static void reset_tentative(qm_bus_t *bus) {
  for (size_t i = 0; i < bus->n_in; i++) {
    link_in_t *li = &bus->in[i];
    li->t_epoch = li->epoch;
    li->t_wm = li->wm;
    li->dirty = 0;
    li->need_ack = 0;
  }
}

/* One pass over the batch in `txn`: the watermark rule of
 * docs/protocol.md section 4 for each message, then the handler. */
static int batch_pass(qm_bus_t *bus, MDB_txn *txn, int careful) {
  for (size_t i = 0; i < bus->n_items; i++) {
    batch_item_t *it = &bus->items[i];
    batch_msg_t *m = &bus->batch[it->frame];
    const uint8_t *h = zmq_msg_data(&m->hdr);
    it->applied = 0;
    it->tc = NULL;
    link_in_t *li = link_in_get(bus, txn, zmq_msg_data(&m->id), zmq_msg_size(&m->id));
    if (!li) {
      count(bus->c_bad, 1);
      continue;
    }
    uint64_t epoch = qm_be64_get(h + 1), base = qm_be64_get(h + 17);
    if (epoch > li->t_epoch) {
      if (li->t_epoch) {
        qm_logf(QM_LOG_WARN, "bus.epoch_reset", "from=%s old_epoch=%llu new_epoch=%llu", li->src,
                (unsigned long long)li->t_epoch, (unsigned long long)epoch);
        bus->st.epoch_resets++;
        count(bus->c_epoch, 1);
      }
      li->t_epoch = epoch;
      li->t_wm = base ? base - 1 : 0;
      li->dirty = 1;
      li->gap_reported = 0;
    } else if (epoch < li->t_epoch) {
      count(bus->c_stale, 1);
      continue;
    }
    if (it->seq <= li->t_wm) {
      bus->st.dup_msgs++;
      count(bus->c_dup, 1);
      if (!li->need_ack) li->need_ack = 'A';
      continue;
    }
    if (it->seq > li->t_wm + 1) {
      if (!li->gap_reported) li->need_ack = 'G';
      continue;
    }
    int rc = apply_one(bus, txn, li->src, it->p, it->n, careful, NULL, &it->tc);
    if (rc < 0 || rc == APPLY_RETRY) return rc;
    it->applied = rc == APPLY_OK;
    li->t_wm = it->seq;
    li->dirty = 1;
    li->gap_reported = 0;
    li->need_ack = 'A';
  }
  for (size_t i = 0; i < bus->n_in; i++) {
    link_in_t *li = &bus->in[i];
    if (!li->dirty) continue;
    uint8_t val[16];
    qm_be64_put(val, li->t_epoch);
    qm_be64_put(val + 8, li->t_wm);
    MDB_val k = {strlen(li->src), li->src}, v = {16, val};
    int rc = qm_store_err(mdb_put(txn, bus->link_in_db, &k, &v, 0));
    if (rc) return rc;
  }
  return 0;
}

/* Processes the received batch in one transaction: one commit (one fsync),
 * then one cumulative acknowledgement per source. */
static void process_batch(qm_bus_t *bus) {
  MDB_txn *txn;
  int rc = 0;
  for (int careful = 0; careful < 2; careful++) {
    rc = qm_bus_begin(bus, &txn);
    if (rc) break;
    rc = batch_pass(bus, txn, careful);
    if (rc == 0) {
      rc = qm_bus_commit(bus, txn);
      break;
    }
    qm_bus_abort(bus, txn);
    reset_tentative(bus);
    if (rc != APPLY_RETRY) break;
  }
  if (rc) {
    /* Nothing of the batch happened: acknowledge nothing; the senders go
     * back after their timeout. */
    reset_tentative(bus);
    if (rc == QM_EMAPFULL) {
      bus->full = 1;
      bus->full_retry_ms = mono_ms() + 1000;
      update_intake(bus);
    } else {
      qm_logf(QM_LOG_ERROR, "bus.batch_failed", "error=%s n=%zu", qm_err_name(rc), bus->n_items);
    }
    return;
  }
  bus->st.batches++;
  if (bus->h_batch) qm_histogram_observe(bus->h_batch, (double)bus->n_items);
  for (size_t i = 0; i < bus->n_items; i++) {
    batch_item_t *it = &bus->items[i];
    if (!it->applied) continue;
    bus->st.in_msgs++;
    if (it->tc) count(it->tc->in, 1);
  }
  for (size_t i = 0; i < bus->n_in; i++) {
    link_in_t *li = &bus->in[i];
    li->epoch = li->t_epoch;
    li->wm = li->t_wm;
    li->dirty = 0;
    if (li->need_ack) {
      if (li->need_ack == 'G') li->gap_reported = 1;
      send_ack(bus, li, (char)li->need_ack);
      li->need_ack = 0;
    }
  }
}

static int intake_open(const qm_bus_t *bus) {
  return bus->inbox && !bus->hold && !bus->bp_paused && !bus->full && !bus->closing;
}

/* Drains the inbox one batch at a time; stops after a few batches per turn
 * so timers and HTTP get the loop, and arms the idle handle to continue. */
static void inbox_service(qm_bus_t *bus) {
  for (int turn = 0; turn < 4; turn++) {
    if (!intake_open(bus)) break;
    size_t n = receive_batch(bus);
    if (n == 0) break;
    if (bus->n_items) process_batch(bus);
    close_batch(bus, n);
  }
  int more = intake_open(bus) && sock_has(bus->inbox, ZMQ_POLLIN);
  if (more && !bus->idle_active) {
    uv_idle_start(&bus->idle, idle_cb);
    bus->idle_active = 1;
  }
  if (!more && bus->idle_active) {
    uv_idle_stop(&bus->idle);
    bus->idle_active = 0;
  }
}

static void idle_cb(uv_idle_t *h) {
  qm_bus_t *bus = h->data;
  inbox_service(bus);
}

static void inbox_poll_cb(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  inbox_service(h->data);
}

static void update_intake(qm_bus_t *bus) {
  uint64_t depth = total_depth(bus);
  bus->st.outbox_depth = depth;
  int was = bus->bp_paused;
  if (!was && depth > bus->o.cfg.outbox_high_water) bus->bp_paused = 1;
  else if (was && depth <= bus->o.cfg.outbox_low_water) bus->bp_paused = 0;
  if (was != bus->bp_paused) {
    qm_logf(bus->bp_paused ? QM_LOG_WARN : QM_LOG_INFO,
            bus->bp_paused ? "bus.backpressure_on" : "bus.backpressure_off", "outbox_depth=%llu",
            (unsigned long long)depth);
    if (bus->o.on_backpressure) bus->o.on_backpressure(bus->o.backpressure_ud, bus->bp_paused);
    if (!bus->bp_paused && bus->inbox) inbox_service(bus);
  }
}

static void tick_cb(uv_timer_t *h) {
  qm_bus_t *bus = h->data;
  uint64_t now = mono_ms();
  int unreachable = 0;
  for (size_t i = 0; i < bus->n_out; i++) {
    link_out_t *l = bus->out[i];
    if (l->committed > l->acked) {
      if (now - l->last_progress_ms >= l->backoff_ms) {
        /* No progress: go back to the last acknowledged message. */
        if (l->sent > l->acked) {
                bus->st.retransmits++;
          count(bus->c_retx, 1);
        }
        l->sent = l->acked;
        uint64_t next = (uint64_t)l->backoff_ms * 2;
        if (next > bus->o.cfg.backoff_max_ms) next = bus->o.cfg.backoff_max_ms;
        /* Jitter of up to a quarter so restarted peers are not hit in
         * lockstep by every sender. */
        next -= next / 4 * (uint64_t)(rand() % 100) / 100;
        l->backoff_ms = (uint32_t)(next ? next : 1);
        l->last_progress_ms = now;
      }
      if (now - l->stalled_since_ms > bus->o.cfg.peer_timeout_ms) unreachable++;
      out_service(l);
    } else {
      l->last_progress_ms = l->stalled_since_ms = now;
      l->backoff_ms = bus->o.cfg.retransmit_ms;
    }
  }
  bus->st.peers_unreachable = unreachable;
  /* Acknowledged entries not yet deleted by a piggybacked flush. */
  int pending = 0;
  for (size_t i = 0; i < bus->n_out; i++)
    if (bus->out[i]->acked > bus->out[i]->persisted) pending = 1;
  if (pending && !bus->txn && now - bus->last_flush_ms >= bus->o.cfg.ack_flush_ms) {
    MDB_txn *txn;
    if (qm_bus_begin(bus, &txn) == 0) qm_bus_commit(bus, txn);
  }
  if (bus->full && now >= bus->full_retry_ms) {
    bus->full = 0; /* try again; a failing commit sets it back */
    update_intake(bus);
  }
  if (bus->inbox && intake_open(bus)) inbox_service(bus);
}

/* ---- life cycle --------------------------------------------------------- */

int qm_bus_new(qm_bus_t **out, const qm_bus_opts_t *o, qm_error_t *err) {
  *out = NULL;
  qm_bus_t *bus = calloc(1, sizeof *bus);
  if (!bus) return qm_error_set(err, QM_ENOMEM, "out of memory");
  bus->o = *o;
  snprintf(bus->name, sizeof bus->name, "%s", o->name);
  bus->store = o->store;
  bus->epoch = qm_store_epoch(o->store);
  /* Settings left at zero take the configuration's defaults. */
  const qm_bus_cfg_t *d = &qm_bus_cfg_defaults;
  qm_bus_cfg_t *c = &bus->o.cfg;
  if (!c->batch_max) c->batch_max = d->batch_max;
  if (!c->window) c->window = d->window;
  if (!c->retransmit_ms) c->retransmit_ms = d->retransmit_ms;
  if (!c->backoff_max_ms) c->backoff_max_ms = d->backoff_max_ms;
  if (!c->outbox_high_water) c->outbox_high_water = d->outbox_high_water;
  if (c->outbox_low_water >= c->outbox_high_water) c->outbox_low_water = c->outbox_high_water * 4 / 5;
  if (!c->peer_timeout_ms) c->peer_timeout_ms = d->peer_timeout_ms;
  if (!c->heartbeat_ms) c->heartbeat_ms = d->heartbeat_ms;
  if (!c->ack_flush_ms) c->ack_flush_ms = d->ack_flush_ms;
  if (!c->max_message_bytes) c->max_message_bytes = d->max_message_bytes;
  msgpack_sbuffer_init(&bus->sbuf);
  msgpack_zone_init(&bus->zone, 4096);
  msgpack_sbuffer_init(&bus->frame);
  bus->batch = calloc(bus->o.cfg.batch_max, sizeof *bus->batch);
  /* The last frame of a batch may overshoot batch_max by one frame. */
  bus->items = calloc(bus->o.cfg.batch_max + FRAME_MSGS_MAX, sizeof *bus->items);
  if (!bus->batch || !bus->items) {
    qm_bus_destroy(&bus);
    return qm_error_set(err, QM_ENOMEM, "out of memory");
  }
  int rc = 0;
  if (!rc) rc = qm_store_table(bus->store, "outbox", &bus->outbox, err);
  if (!rc) rc = qm_store_table(bus->store, "link_out", &bus->link_out_db, err);
  if (!rc) rc = qm_store_table(bus->store, "link_in", &bus->link_in_db, err);
  if (!rc) rc = qm_store_table(bus->store, "dead", &bus->dead, err);
  if (rc) {
    qm_bus_destroy(&bus);
    return rc;
  }
  if (o->metrics) {
    qm_metrics_t *m = o->metrics;
    static const double batch_bounds[] = {1, 4, 16, 64, 256, 1024, 4096};
    static const double commit_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                           0.005,  0.01,    0.025,  0.05,  0.1, 0.5};
    bus->c_dup = qm_metrics_counter(m, "qmesh_messages_duplicate_total",
                                    "Messages received again and skipped by the watermark.", NULL);
    bus->c_retx = qm_metrics_counter(m, "qmesh_retransmits_total",
                                     "Go-back retransmissions started by a sender.", NULL);
    bus->c_epoch = qm_metrics_counter(m, "qmesh_epoch_resets_total",
                                      "Watermark resets because a sender's store was recreated.",
                                      NULL);
    bus->c_full = qm_metrics_counter(m, "qmesh_store_full_total",
                                     "Commits refused because the store map is full.", NULL);
    bus->c_bad = qm_metrics_counter(m, "qmesh_frames_malformed_total",
                                    "Frames or envelopes that could not be decoded.", NULL);
    bus->c_stale = qm_metrics_counter(m, "qmesh_frames_stale_epoch_total",
                                      "Frames from an older incarnation of a sender, dropped.",
                                      NULL);
    bus->h_batch = qm_metrics_histogram(m, "qmesh_batch_size", "Messages per received batch.",
                                        NULL, batch_bounds, sizeof batch_bounds / sizeof *batch_bounds);
    bus->h_commit = qm_metrics_histogram(m, "qmesh_commit_seconds", "LMDB commit latency.", NULL,
                                         commit_bounds, sizeof commit_bounds / sizeof *commit_bounds);
  }
  rc = links_load(bus, err);
  if (rc) {
    qm_bus_destroy(&bus);
    return rc;
  }
  uv_timer_init(o->loop, &bus->tick);
  bus->tick.data = bus;
  uint64_t every = bus->o.cfg.ack_flush_ms < 50 ? bus->o.cfg.ack_flush_ms : 50;
  uv_timer_start(&bus->tick, tick_cb, every, every);
  uv_idle_init(o->loop, &bus->idle);
  bus->idle.data = bus;
  if (o->bind) {
    bus->inbox = zmq_socket(o->zmq_ctx, ZMQ_ROUTER);
    int one = 1, linger = 200, hwm = 100000;
    zmq_setsockopt(bus->inbox, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(bus->inbox, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(bus->inbox, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(bus->inbox, ZMQ_RCVHWM, &hwm, sizeof hwm);
    int ivl = (int)bus->o.cfg.heartbeat_ms, tmo = ivl * 3;
    zmq_setsockopt(bus->inbox, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(bus->inbox, ZMQ_HEARTBEAT_TIMEOUT, &tmo, sizeof tmo);
    const char *eps[2] = {o->bind, o->bind_also};
    for (int i = 0; i < 2; i++) {
      if (!eps[i] || !eps[i][0] || zmq_bind(bus->inbox, eps[i]) == 0) continue;
      int e = errno;
      qm_error_set(err, QM_EZMQ, "%s: cannot bind inbox %s: %s", bus->name, eps[i],
                   zmq_strerror(e));
      qm_bus_destroy(&bus);
      return QM_EZMQ;
    }
    size_t len = sizeof bus->inbox_fd;
    zmq_getsockopt(bus->inbox, ZMQ_FD, &bus->inbox_fd, &len);
    uv_poll_init_socket(o->loop, &bus->inbox_poll, bus->inbox_fd);
    bus->inbox_poll.data = bus;
    uv_poll_start(&bus->inbox_poll, UV_READABLE, inbox_poll_cb);
    bus->inbox_poll_active = 1;
  }
  for (size_t i = 0; i < bus->n_out; i++) out_service(bus->out[i]);
  update_intake(bus);
  *out = bus;
  return 0;
}

static void bus_handle_closed(uv_handle_t *h) {
  qm_bus_t *bus = h->data;
  if (--bus->open_handles == 0) free(bus);
}

static void link_handle_closed(uv_handle_t *h) { free(h->data); }

void qm_bus_destroy(qm_bus_t **pbus) {
  qm_bus_t *bus = pbus ? *pbus : NULL;
  if (!bus) return;
  *pbus = NULL;
  bus->closing = 1;
  /* Handles are closed before the sockets whose descriptors they watch. */
  uv_handle_t *hs[3] = {(uv_handle_t *)&bus->tick, (uv_handle_t *)&bus->idle,
                        bus->inbox_poll_active ? (uv_handle_t *)&bus->inbox_poll : NULL};
  for (int i = 0; i < 3; i++) {
    if (!hs[i] || !hs[i]->loop) continue;
    hs[i]->data = bus;
    bus->open_handles++;
    uv_close(hs[i], bus_handle_closed);
  }
  if (bus->inbox) zmq_close(bus->inbox);
  for (size_t i = 0; i < bus->n_out; i++) {
    link_out_t *l = bus->out[i];
    msgpack_sbuffer_destroy(&l->pend);
    if (l->poll_active) {
      l->poll_active = 0;
      l->poll.data = l;
      uv_close((uv_handle_t *)&l->poll, link_handle_closed);
      if (l->sock) zmq_close(l->sock);
      l->sock = NULL;
    } else {
      if (l->sock) zmq_close(l->sock);
      free(l);
    }
  }
  free(bus->batch);
  bus->batch = NULL;
  free(bus->items);
  bus->items = NULL;
  msgpack_sbuffer_destroy(&bus->frame);
  msgpack_sbuffer_destroy(&bus->sbuf);
  msgpack_zone_destroy(&bus->zone);
  qm_routes_destroy(&bus->o.routes);
  if (bus->open_handles == 0) free(bus);
}

void qm_bus_set_routes(qm_bus_t *bus, qm_routes_t *routes) {
  qm_routes_destroy(&bus->o.routes);
  bus->o.routes = routes;
}

const qm_routes_t *qm_bus_routes(const qm_bus_t *bus) { return bus->o.routes; }

void qm_bus_hold_intake(qm_bus_t *bus, int hold) {
  bus->hold = hold;
  if (!hold && bus->inbox) inbox_service(bus);
}

void qm_bus_stats(const qm_bus_t *bus, qm_bus_stats_t *st) {
  *st = bus->st;
  st->outbox_depth = total_depth(bus);
  st->intake_paused = bus->bp_paused || bus->full;
  st->store_full = bus->full;
}

uint64_t qm_bus_outbox_depth(const qm_bus_t *bus, const char *dest) {
  link_out_t *l = link_find((qm_bus_t *)bus, dest, strlen(dest));
  return l ? depth_of(l) : 0;
}

int qm_bus_link_seqs(const qm_bus_t *bus, const char *dest, uint64_t *committed, uint64_t *acked) {
  link_out_t *l = link_find((qm_bus_t *)bus, dest, strlen(dest));
  if (!l) return QM_ENOTFOUND;
  *committed = l->committed;
  *acked = l->acked;
  return 0;
}

const char *qm_bus_name(const qm_bus_t *bus) { return bus->name; }
qm_store_t *qm_bus_store(qm_bus_t *bus) { return bus->store; }
MDB_dbi qm_bus_dead_dbi(const qm_bus_t *bus) { return bus->dead; }

int qm_bus_dead_replay(qm_bus_t *bus, const qm_id_t *id, qm_error_t *err) {
  MDB_txn *txn;
  int rc = qm_bus_begin(bus, &txn);
  if (rc) return qm_error_set(err, rc, "cannot begin: %s", qm_strerror(rc));
  MDB_val k = {16, (void *)id->b}, v;
  char idbuf[37];
  qm_id_format(id, idbuf);
  if (mdb_get(txn, bus->dead, &k, &v) != 0) {
    qm_bus_abort(bus, txn);
    return qm_error_set(err, QM_ENOTFOUND, "no dead message %s in %s", idbuf, bus->name);
  }
  msgpack_zone zone;
  msgpack_zone_init(&zone, 1024);
  msgpack_object o;
  size_t off = 0;
  /* The value is copied because the handler may write to `dead` (and so
   * move pages) while it still reads the envelope. */
  char *val = malloc(v.mv_size ? v.mv_size : 1);
  if (!val) {
    msgpack_zone_destroy(&zone);
    qm_bus_abort(bus, txn);
    return qm_error_set(err, QM_ENOMEM, "out of memory");
  }
  memcpy(val, v.mv_data, v.mv_size);
  const char *raw = NULL, *from = "";
  size_t raw_len = 0, from_len = 0;
  int noroute = 0;
  if (msgpack_unpack(val, v.mv_size, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS &&
      o.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < o.via.map.size; i++) {
      msgpack_object_kv *kv = &o.via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR) continue;
      qm_str_t key = {kv->key.via.str.ptr, kv->key.via.str.size};
      if (qm_str_eq(key, "raw") && kv->val.type == MSGPACK_OBJECT_BIN) {
        raw = kv->val.via.bin.ptr;
        raw_len = kv->val.via.bin.size;
      } else if (qm_str_eq(key, "kind") && kv->val.type == MSGPACK_OBJECT_STR) {
        noroute = kv->val.via.str.size == 7 && memcmp(kv->val.via.str.ptr, "noroute", 7) == 0;
      } else if (qm_str_eq(key, "from") && kv->val.type == MSGPACK_OBJECT_STR) {
        from = kv->val.via.str.ptr;
        from_len = kv->val.via.str.size;
      }
    }
  }
  char fromz[QM_NAME_MAX + 1];
  snprintf(fromz, sizeof fromz, "%.*s", (int)(from_len < QM_NAME_MAX ? from_len : QM_NAME_MAX), from);
  rc = QM_EDECODE;
  qm_error_set(err, rc, "dead entry %s is unreadable", idbuf);
  if (raw) {
    mdb_del(txn, bus->dead, &k, NULL);
    if (noroute) {
      qm_envelope_t env;
      msgpack_zone_clear(&bus->zone);
      rc = qm_envelope_decode(raw, raw_len, bus->o.cfg.max_message_bytes, &bus->zone, &env, err);
      if (rc == 0) {
        rc = qm_bus_emit(bus, txn, &env, err);
        if (rc == 0) rc = qm_error_set(err, QM_ENOROUTE, "still no route for %s", idbuf);
        else if (rc > 0) rc = 0;
      }
    } else {
      type_counters_t *tc;
      rc = apply_one(bus, txn, fromz, raw, raw_len, 1, id, &tc);
      if (rc == APPLY_DEAD)
        rc = qm_error_set(err, QM_EREFUSED, "%s refused again; see its new dead entry", idbuf);
      else if (rc == APPLY_OK && tc)
        count(tc->in, 1);
    }
  }
  if (rc == 0 || rc == QM_ENOROUTE || rc == QM_EREFUSED) {
    int crc = qm_bus_commit(bus, txn);
    if (crc) rc = qm_error_set(err, crc, "commit: %s", qm_strerror(crc));
  } else {
    qm_bus_abort(bus, txn);
  }
  free(val);
  msgpack_zone_destroy(&zone);
  return rc;
}
