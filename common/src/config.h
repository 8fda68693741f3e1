/*
 * config.h: configs/qmesh.cfg, loaded and validated with libconfig.
 *
 * Every error is one line, `FILE:LINE: setting.path: what is wrong (valid:
 * ...)`, in err->msg with code QM_ECONFIG. Every key has a default, so an
 * empty file is a valid configuration for the seven standard services on
 * their default ports. docs/configuration.md lists every key.
 */
#ifndef QM_CONFIG_H
#define QM_CONFIG_H

#include <libconfig.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "err.h"

#define QM_SERVICES_MAX 32

typedef struct qm_service_cfg {
  char name[QM_NAME_MAX + 1];
  /* Where this service binds its inbox (ROUTER), e.g. "tcp://0.0.0.0:7101". */
  char bind[256];
  /* Where peers connect to reach it, e.g. "tcp://autoscore:7101"; defaults to
   * bind with a wildcard host replaced by 127.0.0.1. */
  char connect[256];
  /* HTTP listener "HOST:PORT" for /healthz, /readyz, /metrics and the
   * service's API; "" disables it. */
  char http[128];
  /* The libconfig group `services.<name>` itself (for service-specific keys);
   * owned by qm_config_t.raw. May be NULL. */
  config_setting_t *setting;
} qm_service_cfg_t;

typedef struct qm_bus_cfg {
  uint32_t batch_max;          /* messages drained and committed per turn (4096) */
  uint32_t window;             /* unacknowledged messages in flight per destination (10000) */
  uint32_t retransmit_ms;      /* no progress for this long: go back (1000) */
  uint32_t backoff_max_ms;     /* cap of the jittered retransmit backoff (30000) */
  uint64_t outbox_high_water;  /* outbox depth that pauses intake (1000000) */
  uint64_t outbox_low_water;   /* depth at which intake resumes (800000) */
  uint32_t peer_timeout_ms;    /* readyz false when a peer is unreachable this long (15000) */
  uint32_t heartbeat_ms;       /* ZMTP heartbeat interval (1000) */
  uint32_t drain_timeout_ms;   /* SIGTERM: deadline for the drain (10000) */
  uint32_t ack_flush_ms;       /* delete acknowledged outbox entries at least this often (20) */
  size_t max_message_bytes;    /* envelopes larger than this are refused (4 MiB) */
} qm_bus_cfg_t;

typedef struct qm_store_cfg {
  size_t map_size;             /* bytes; the file may grow to this (map_size_mb, 1024) */
  int sync;                    /* fsync on every commit (true) */
} qm_store_cfg_t;

typedef struct qm_config {
  char path[PATH_MAX];         /* the file as given */
  char dir[PATH_MAX];          /* its directory; relative paths resolve against it */
  char data_dir[PATH_MAX];     /* resolved; one subdirectory per service ("../data") */
  char routes_file[PATH_MAX];  /* resolved ("routes.cfg") */
  char plugin_dir[PATH_MAX];   /* resolved ("../build/plugins") */
  int log_level;               /* qm_log_level_t ("info") */
  int log_json;                /* log.format = "json" (default "logfmt") */
  qm_bus_cfg_t bus;
  qm_store_cfg_t store;
  size_t n_services;
  qm_service_cfg_t services[QM_SERVICES_MAX];
  config_t raw;                /* the parsed tree, kept for service and plugin groups */
  int raw_loaded;
} qm_config_t;

/* The bus settings' defaults, also applied by the bus to any setting left
 * at zero. */
extern const qm_bus_cfg_t qm_bus_cfg_defaults;

/* The seven standard services, in flow order, NULL-terminated. */
extern const char *const qm_standard_services[];

/* Fills cfg with every default (the seven services on ports 7101.. for the
 * bus and 8101.. for HTTP, all on 127.0.0.1). */
void qm_config_defaults(qm_config_t *cfg);
/* Loads and validates a file over the defaults. */
int qm_config_load(qm_config_t *cfg, const char *path, qm_error_t *err);
void qm_config_free(qm_config_t *cfg);
const qm_service_cfg_t *qm_config_service(const qm_config_t *cfg, const char *name);
/* Resolves `path` against cfg->dir unless absolute. */
void qm_config_resolve(const qm_config_t *cfg, const char *path, char out[PATH_MAX]);

#endif
