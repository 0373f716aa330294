/* SPDX-License-Identifier: MIT */
#pragma once

/* Connections kept across a restart under systemd, through its file descriptor store (docs/operating.md,
 * "Restarts and upgrades"). The stop of a restart (SIGTERM while systemd runs a restart job) writes down every
 * control connection's state in a sealed memfd and hands it and the connections' sockets to systemd (FDSTORE=1);
 * the next start gets them back with the listeners (LISTEN_FDS) and adopts them. The state's format is versioned; what a start cannot read is dropped and its
 * connections closed, as a restart without the store would. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "photond-listen.h"
#include "shared-buf.h"

typedef struct Manager Manager;

/* The store knows photond's fds by two names (photond-listen.h): FDSTORE_STATE_NAME, the state, and
 * FDSTORE_CLIENT_NAME, every connection; a record of the state finds its socket by device and inode, as journald
 * finds its streams. One name for all connections: one FDSTOREREMOVE=1 forgets them all. */

/* The format this photond writes; it reads only this one (older ones, once there are, are read too). */
#define FDSTORE_FORMAT_VERSION 1

/* The store's size to use from PHOTOND_FDSTORE (auto, no, or the unit's FileDescriptorStoreMax=) and systemd's
 * $FDSTORE, when NOTIFY_SOCKET is set: 0 when no stop keeps a connection. -EINVAL for a bad PHOTOND_FDSTORE. */
int fdstore_config_from_env(uint64_t *ret_store_max);

/* ---- the state: what a stop writes and the next start reads (pure, non-logging) ---- */

typedef struct FdStoreBytes {
        const char *data;               /* not NUL-terminated; points into the state's bytes */
        size_t size;
} FdStoreBytes;

typedef struct FdStoreOutput {
        size_t buffer;                  /* index of FdStoreState.buffers */
        size_t offset;                  /* bytes of it the peer had been sent already */
        uint32_t tag;                   /* 0: an answer; n > 0: a channel message, the same n for one channel */
} FdStoreOutput;

typedef struct FdStoreClient {
        uint64_t dev, ino;              /* the socket (fstat()): which stored fd is this connection */
        bool has_session_id;
        FdStoreBytes session_id;
        FdStoreBytes *subscriptions;    /* channel keys */
        size_t n_subscriptions;
        FdStoreBytes *provides;         /* photon names */
        size_t n_provides;
        FdStoreBytes input;             /* read and not handled */
        FdStoreOutput *output;          /* queued and not sent, oldest first */
        size_t n_output;
        FdStoreBytes *in_flight;        /* the ids of requests still to be answered */
        size_t n_in_flight;
} FdStoreClient;

typedef struct FdStoreState {
        FdStoreBytes *buffers;          /* every queued line once, however many queues hold it */
        size_t n_buffers;
        FdStoreClient *clients;
        size_t n_clients;
        uint64_t call_serial;           /* the last call id the writer issued (0: none) */
} FdStoreState;

/* Parses a state; it points into data, which must outlive it. -EBADMSG for damage (bad magic, a record cut short
 * or out of place, a checksum that does not match), -EPROTONOSUPPORT for another format version or a record this
 * photond must understand and does not (a newer photond's), -ENOMEM. */
int fdstore_state_parse(const void *data, size_t size, FdStoreState *ret);
void fdstore_state_done(FdStoreState *s);

/* Reads the state from the memfd fd, which must be sealed against writing and resizing and hold at most
 * max_bytes: the bytes (free()), their size. -EPERM when it is not sealed, -EFBIG when it is larger. */
int fdstore_state_read_fd(int fd, uint64_t max_bytes, char **ret_data, size_t *ret_size);

/* Writes a state, one client record after another, the lines their queues hold once. */
typedef struct FdStoreWriter FdStoreWriter;

/* max_bytes: the state's cap (a client record that would pass it is left out). */
int fdstore_writer_new(uint64_t max_bytes, FdStoreWriter **ret);
FdStoreWriter* fdstore_writer_free(FdStoreWriter *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(FdStoreWriter*, fdstore_writer_free);

/* A client record: begin, the parts (session_id may be NULL; the output in queue order; tag as in OutEntry), end.
 * end returns -E2BIG, and leaves the state as it was before begin, when the record does not fit max_bytes; so does
 * abort. The parts return -ENOMEM or -E2BIG (a part larger than any record may be). */
int fdstore_writer_begin_client(FdStoreWriter *w, uint64_t dev, uint64_t ino, const char *session_id);
int fdstore_writer_add_subscription(FdStoreWriter *w, const char *name, size_t len);
int fdstore_writer_add_provides(FdStoreWriter *w, const char *photon);
int fdstore_writer_set_input(FdStoreWriter *w, const char *data, size_t size);
int fdstore_writer_add_output(FdStoreWriter *w, SharedBuf *b, size_t offset, const void *tag);
int fdstore_writer_add_in_flight(FdStoreWriter *w, const char *id);
int fdstore_writer_end_client(FdStoreWriter *w);
void fdstore_writer_abort_client(FdStoreWriter *w);
/* The last call id issued (dispatcher_last_serial()), outside a client record. */
int fdstore_writer_set_call_serial(FdStoreWriter *w, uint64_t serial);
/* Client records written so far. */
size_t fdstore_writer_n_clients(FdStoreWriter *w);
/* Ends the state: its bytes (owned by w, valid until it is freed) and size. */
int fdstore_writer_finish(FdStoreWriter *w, const char **ret_data, size_t *ret_size);

/* A sealed memfd holding data (what fdstore_state_read_fd() reads). */
int fdstore_memfd_new(const char *data, size_t size, int *ret_fd);

/* ---- the Manager's stop and start ---- */

/* Whether a SIGTERM now keeps the connections: the store is in use (m->fdstore_max) and systemd stops photond for a
 * restart, the one stop whose store outlives it. Asked over D-Bus (the job systemd runs on the unit,
 * bus_unit_job_type()); without an answer (no bus) a restart is assumed, so that a restart keeps the connections
 * wherever it can: a stop then costs the clients the shutdown notice, not more. Logs. */
bool fdstore_stop_keeps_clients(Manager *m);

/* At a stop that keeps the connections (SIGTERM with the store in use, m->fdstore_max): answers what can be
 * answered, writes the state of every connection that fits the caps (limits.FDSTORE_MAX_CLIENTS, the store's
 * size less the state's fd, limits.FDSTORE_MAX_BYTES, the stop's SHUTDOWN_FLUSH_MS), hands the state and those
 * connections to systemd and lets go of them: this process sends them nothing more. The rest are left to the
 * shutdown as without the store. Logs; returns the number of connections kept. */
size_t fdstore_keep_clients(Manager *m);

/* At start, before anything is published: takes over the connections the last stop kept: state_fd (the state, or
 * -EBADF) and the n_fds sockets fds (all taken: adopted or closed). Each becomes a Client again, subscribed and
 * providing as before, its unsent output queued first, then an error for each request it was waiting for, then
 * its unhandled input. A state that cannot be read is dropped with a log line and its connections closed (their
 * clients reconnect); a connection without a record is closed. Returns the number of clients adopted. */
size_t fdstore_adopt(Manager *m, int state_fd, int *fds, size_t n_fds);

/* Tells systemd to drop the fds of those names it passed us from the store (FDSTOREREMOVE=1): photond holds them
 * now, and must hold the only copy, or a client it closes would never see the close. */
void fdstore_forget(bool state, bool clients);
