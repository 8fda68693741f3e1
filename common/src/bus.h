/*
 * bus.h: durable, exactly-once-in-effect messaging between services.
 *
 * One bus per service. It owns the service's inbox (a ZeroMQ ROUTER), one
 * DEALER per destination, and the internal tables in the service's store:
 * `outbox`, `link_out`, `link_in`, `dead`. docs/protocol.md is the contract;
 * this is its implementation's surface.
 *
 * Writing: every write transaction of the service goes through
 * qm_bus_begin / qm_bus_commit, so messages emitted in it (qm_bus_emit) are
 * appended to the outbox atomically with the state change that caused them,
 * and acknowledged outbox entries are deleted in the same commit.
 *
 * Receiving: the bus drains at most `batch_max` messages per loop turn (so a
 * busy peer cannot starve timers and HTTP), runs the handler on each inside a
 * nested transaction of one batch transaction, commits once, and only then
 * acknowledges, one cumulative acknowledgement per source.
 *
 * Threading: a bus lives on its loop's thread; nothing here is thread-safe.
 */
#ifndef QM_BUS_H
#define QM_BUS_H

#include <lmdb.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "envelope.h"
#include "err.h"
#include "metrics.h"
#include "routes.h"
#include "store.h"

typedef struct qm_bus qm_bus_t;

/* Applies one message inside `txn` (a nested transaction of the batch).
 * Return 0 when applied; a negative code with err->msg to refuse it, which
 * discards whatever the handler wrote and consumes the message into `dead`
 * with that reason. QM_EMAPFULL aborts the whole batch instead (nothing is
 * acknowledged; the senders retransmit once there is room). */
typedef int (*qm_bus_handler_fn)(void *ud, qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg,
                                 const char *raw, size_t raw_len, qm_error_t *err);

typedef struct qm_bus_opts {
  const char *name;          /* this service's name: its routing id */
  const char *bind;          /* inbox endpoint; NULL for a bus that only sends */
  const char *bind_also;     /* a second inbox endpoint, or NULL */
  void *zmq_ctx;
  uv_loop_t *loop;
  qm_store_t *store;
  qm_bus_cfg_t cfg;
  /* The endpoint to connect to for a destination service, or NULL when the
   * service is unknown. */
  const char *(*resolve)(void *ud, const char *service);
  void *resolve_ud;
  qm_routes_t *routes;       /* owned by the bus from here on; may be NULL */
  qm_bus_handler_fn handler; /* may be NULL: messages are consumed and counted */
  void *handler_ud;
  qm_metrics_t *metrics;     /* may be NULL */
  /* Called when intake pauses (1) or resumes (0) for backpressure. */
  void (*on_backpressure)(void *ud, int paused);
  void *backpressure_ud;
} qm_bus_opts_t;

int qm_bus_new(qm_bus_t **out, const qm_bus_opts_t *opts, qm_error_t *err);
/* Stops polling, closes sockets and handles (the loop must run once more to
 * finish closing). Does not close the store. Idempotent; nulls *bus. */
void qm_bus_destroy(qm_bus_t **bus);

/* Write transactions. qm_bus_commit returns QM_EMAPFULL when the store is
 * full; either way the transaction is gone afterwards. */
int qm_bus_begin(qm_bus_t *bus, MDB_txn **txn);
int qm_bus_commit(qm_bus_t *bus, MDB_txn *txn);
void qm_bus_abort(qm_bus_t *bus, MDB_txn *txn);

/* Encodes `msg` and appends it for every destination the route table gives;
 * with none, writes it to `dead` with reason "no route". Returns the number
 * of destinations (0 for no route) or a negative error. */
int qm_bus_emit(qm_bus_t *bus, MDB_txn *txn, const qm_envelope_t *msg, qm_error_t *err);
/* Appends already packed envelope bytes for one named destination. */
int qm_bus_send_to(qm_bus_t *bus, MDB_txn *txn, const char *dest, const char *raw, size_t len,
                   qm_error_t *err);

/* Replaces the route table (takes ownership; the old one is destroyed).
 * Messages emitted afterwards follow it; the outbox keeps its destinations. */
void qm_bus_set_routes(qm_bus_t *bus, qm_routes_t *routes);
const qm_routes_t *qm_bus_routes(const qm_bus_t *bus);

/* Stops (1) or restarts (0) reading the inbox, on top of backpressure. */
void qm_bus_hold_intake(qm_bus_t *bus, int hold);

/* Dead letters. */
int qm_bus_dead_put(qm_bus_t *bus, MDB_txn *txn, const qm_id_t *id, const char *kind,
                    const char *from, const char *reason, const char *raw, size_t len);
/* Re-runs one dead message (by id) through the handler ("in") or the route
 * table ("noroute") in its own transaction; removes it from `dead` on
 * success, otherwise updates its reason. */
int qm_bus_dead_replay(qm_bus_t *bus, const qm_id_t *id, qm_error_t *err);

typedef struct qm_bus_stats {
  uint64_t outbox_depth;      /* committed, not yet acknowledged, all destinations */
  uint64_t in_msgs, out_msgs, dead_msgs, dup_msgs, retransmits, epoch_resets, batches;
  int intake_paused;          /* backpressure or store full */
  int store_full;
  int peers_unreachable;      /* destinations with pending data and no progress past peer_timeout_ms */
} qm_bus_stats_t;
void qm_bus_stats(const qm_bus_t *bus, qm_bus_stats_t *st);
/* Outbox depth towards one destination (0 if none). */
uint64_t qm_bus_outbox_depth(const qm_bus_t *bus, const char *dest);

/* The highest committed and acknowledged sequences towards dest; returns
 * QM_ENOTFOUND when the bus has no link to it. */
int qm_bus_link_seqs(const qm_bus_t *bus, const char *dest, uint64_t *committed, uint64_t *acked);

const char *qm_bus_name(const qm_bus_t *bus);
qm_store_t *qm_bus_store(qm_bus_t *bus);
/* The internal tables, for tools and tests. */
MDB_dbi qm_bus_dead_dbi(const qm_bus_t *bus);

#endif
