/* SPDX-License-Identifier: MIT */
#pragma once

/* One control-socket connection: line framing with a cap on the pending line, a write queue of shared buffers
 * flushed with writev(), peer credentials. Buffers are allocated only while in use, so an idle connection costs
 * little more than this struct and its event source. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "list.h"
#include "photond-dispatch.h"
#include "photond-limits.h"
#include "photond-lock.h"
#include "photond-subscriber.h"
#include "shared-buf.h"

typedef struct Manager Manager;
typedef struct Client Client;
struct json_object;

/* Why photond closed a connection, counted in status "clientsClosed" (docs/protocol.md). */
typedef enum ClientClose {
        CLIENT_CLOSE_PEER,              /* the client closed or shut down its side (after its answers went out) */
        CLIENT_CLOSE_READ_ERROR,
        CLIENT_CLOSE_WRITE_ERROR,       /* e.g. the client went away before reading its answers */
        CLIENT_CLOSE_LINE_TOO_LONG,     /* MAX_LINE_BYTES */
        CLIENT_CLOSE_WRITE_QUEUE,       /* an answer to an earlier request while its queue is over the cap */
        CLIENT_CLOSE_SLOW_CONSUMER,     /* photond-channel.c's policy */
        CLIENT_CLOSE_OUT_OF_MEMORY,
        CLIENT_CLOSE_REFUSED,           /* at accept: MAX_CLIENTS, or the client could not be set up */
        _CLIENT_CLOSE_MAX,
        _CLIENT_CLOSE_INVALID = -EINVAL,
} ClientClose;

const char* client_close_to_string(ClientClose c);

typedef struct OutEntry {
        SharedBuf *buf;
        size_t offset;          /* bytes of buf already written */
        const void *tag;        /* non-NULL: a droppable channel message of that channel (slow-consumer policy) */
        bool needs_state;       /* may report a state change not yet on disk (manager_output_needs_state()) */
} OutEntry;

struct Client {
        Manager *manager;
        LIST_FIELDS(Client, clients);
        LIST_FIELDS(Client, dirty);     /* on manager->dirty_clients while it has output to flush */
        LIST_FIELDS(Client, read_more); /* on the ClientIO's read_more_clients while it may have unread input */

        uint64_t serial;                /* for logs: "client 17" */
        int fd;
        uint32_t io_events;             /* as registered in the manager's client epoll set; 0: not in it */
        struct ucred ucred;

        /* the incomplete last line, only while there is one; while input is paused (below), all the input read
         * but not handled yet */
        char *rbuf;
        size_t rbuf_size, rbuf_alloc;

        /* the write queue: out[out_head .. out_head + out_n) */
        OutEntry *out;
        size_t out_head, out_n, out_alloc;
        size_t out_bytes;

        bool dirty:1;
        bool want_pollout:1;
        bool disconnected:1;
        bool close_after_flush:1;
        bool close_at_flush:1;          /* close at the next flush, whatever is still queued */
        bool read_more:1;
        bool rbuf_lines:1;              /* rbuf may hold complete lines (input paused in the middle of a read) */
        bool input_paused:1;            /* the write queue is over its cap: no request is handled until it drains */
        bool peer_hup:1;                /* epoll reported a hang-up: read to the end of input, it will not again */
        bool peer_gone:1;               /* EPOLLHUP: the peer reads nothing more either */
        /* what the client was answered since control_handle_line() began its request (its request counts): an
         * answer is any line queued to it that is no channel message, client_send() with no tag */
        bool answered:1;
        bool answered_error:1;          /* client_reply_error(), or the handler failed */
        ClientClose close_reason;       /* with close_after_flush: what the close will be counted as */

        char *session_id;               /* last sessionId the client sent, for status "sessions" */

        /* what the channels deliver to (client_subscriber_ops); its state is photond-channel.c's */
        Subscriber subscriber;

        /* what the dispatcher sends to as a provider or a caller (photond-control-calls.c fills in its ops); its
         * state is photond-dispatch.c's: peer.n_calls are the calls this client is waiting for */
        DispatchPeer peer;

        /* per-subsystem state, owned by the subsystem named */
        LockWaitOwner lock_waits;       /* photond-lock.c's: the lock waits parked for it (photond-control-locks.c) */
        /* cluster mode: the publishes and replays the channels' backend has not answered yet, newest first
         * (photond-control-channels.c's) */
        LIST_HEAD(struct ChannelsDeferred, deferred);
        unsigned n_deferred;
        /* photond-control-locks.c's: its requests a lock backend (cluster mode) works on, to be told when c goes;
         * and how many of them owe an answer before c's next request is read (client_await_begin()) */
        struct LockOp *lock_ops;
        unsigned n_awaiting;
};

/* A Client as the channels' Subscriber: its write queue (client_send(), client_drop_tagged(), client_write_now(),
 * out_bytes), and a slow consumer is closed with manager_client_close() (without a manager, as in unit tests, it is
 * only marked disconnected). client_new() sets it; a Client built by hand sets .subscriber.ops to it. */
extern const SubscriberOps client_subscriber_ops;

/* Takes ownership of fd only on success. */
int client_new(Manager *m, int fd, Client **ret);
/* Takes the fd out of the epoll set (a disconnect; the memory stays until client_free()). */
void client_stop_io(Client *c);
Client* client_free(Client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Client*, client_free);

/* Queues bytes (a reference is taken). tag: see OutEntry. The cap MAX_WRITE_QUEUE_BYTES: a tagged buffer (a
 * channel message) that would take the queue past it is refused with -ENOBUFS (the caller applies the slow-consumer
 * policy). An untagged one (an answer) is always queued while the queue is within the cap, whatever its size, and
 * for the client whose request is being handled; the client is not read while its queue is over the cap, so that
 * bounds the queue by the cap plus one answer. An answer to an earlier request (a lock wait, a call) that finds the
 * queue already over the cap disconnects the client (-ENOBUFS). -ECONNRESET if the client is gone. */
int client_send(Client *c, SharedBuf *b, const void *tag);

/* Serializes o (not consumed) and queues it. */
int client_send_json(Client *c, struct json_object *o);

/* Convenience replies; ownership of data is taken. */
int client_reply_result(Client *c, const char *id, bool success, struct json_object *data);
int client_reply_error(Client *c, const char *id, const char *error, const char *suggestion);
/* The error reply of a cap (limit_error()'s wording and suggestion; actual UINT64_MAX: the count is not told). */
int client_reply_limit(Client *c, const char *id, LimitId limit, uint64_t actual);

/* Writes as much of the queue as the socket takes, in one writev() of up to IOV_MAX entries per round; while a
 * state write fails (manager_state_unsaved()), only the entries before the first that needs the state. Returns 0
 * when everything allowed was written or the socket is full (EPOLLOUT is then armed), negative errno on a dead
 * peer. */
int client_flush(Client *c);
/* The state was written: nothing queued waits for it any more; c is flushed with the next flush. */
void client_release_held(Client *c);
/* Writes c's queue now when it holds exactly one entry, the one just queued, rather than with the manager's flush
 * at the end of the batch; only when manager_may_write_now() says nothing must leave first. */
void client_write_now(Client *c);

/* Drops queued entries carrying a tag (not a partially written one). Calls cb(c, tag, first, userdata) once per
 * distinct tag dropped, in queue order; first is the first dropped buffer of that tag, valid during the call only
 * (the tag's owner may be gone by then, the bytes say what was lost). Returns the number of entries dropped. */
typedef void (*ClientDropFunc)(Client *c, const void *tag, SharedBuf *first, void *userdata);
size_t client_drop_tagged(Client *c, ClientDropFunc cb, void *userdata);

/* Feeds bytes read from the socket: complete lines are handed to control_handle_line(), until the write queue is
 * over its cap: the rest is kept (input_paused) and handled, before anything new, by the next feed after a flush
 * brought the queue back under the cap. Returns 0, or -E2BIG when a line exceeds limits.MAX_LINE_BYTES (an error
 * has been queued and the client should close), or -ENOMEM. Exposed for the framing unit tests. */
int client_feed(Client *c, const char *data, size_t size);

/* The peer sends nothing more (end of input). The answers to its complete requests, also those still being
 * worked on (calls, lock waits), go out, then the connection closes; an incomplete last line is dropped. Exposed
 * for the framing unit tests. */
void client_input_end(Client *c);

/* Remembers s as the client's sessionId (status "sessions", ps), unless it is longer than MAX_LOCK_HOLDER_BYTES:
 * otherwise every connection could pin a line's worth of memory for good, and ps list it. */
void client_note_session(Client *c, const char *s);

/* An answer that comes later (from Redis) and must leave before the answers to c's later requests: no further
 * request of c is handled until as many client_await_end() as client_await_begin() were called. Other clients go
 * on meanwhile. */
void client_await_begin(Client *c);
void client_await_end(Client *c);

/* A closing client (close_after_flush) whose answers are all out and none is still to come. */
bool client_closing_done(Client *c);
/* The queue as the peer would read it, for tests, which must not reach into it: how many lines (and bytes) wait, the i-th
 * oldest (borrowed; NULL past the end), the oldest taken off as if the peer had read it (the caller unrefs it;
 * NULL when none), and all of them dropped. */
size_t client_queued(const Client *c);
uint64_t client_queued_bytes(const Client *c);
SharedBuf* client_queued_line(const Client *c, size_t i);
SharedBuf* client_pop_queued(Client *c);
void client_discard_queue(Client *c);

/* A connection kept across a restart (photond-fdstore.c): what the stop writes down of it and the start puts back.
 * The i-th oldest queued entry (borrowed; NULL past the end), and the input read from the socket but not handled
 * yet (an incomplete last line, or all of it while input is paused): its size, *ret the bytes (borrowed). */
const OutEntry* client_queued_entry(const Client *c, size_t i);
size_t client_unhandled_input(const Client *c, const char **ret);
/* Queues b as the last process had it: offset bytes of it already written, tag as in OutEntry. No cap applies: the
 * queue was within it there. -ECONNRESET if the client is gone, -ENOMEM. */
int client_requeue(Client *c, SharedBuf *b, size_t offset, const void *tag);
/* Input the last process read and did not handle: handled from the loop before anything read from now on, as input
 * kept while paused is. Only on a client that has none (a new one). -ENOMEM. */
int client_restore_input(Client *c, const char *data, size_t size);

/* What a failed write to c is counted as. */
ClientClose client_write_error_reason(Client *c);

/* Busy polling's record of its recent polls (photond-client.c has why): it polls while at most
 * BUSY_POLL_MAX_MISSES of the last BUSY_POLL_WINDOW polls found nothing, and otherwise backs off for a while that
 * doubles with each back-off that follows a probe too soon. Zero-initialised: nothing missed yet. */
#define BUSY_POLL_WINDOW 32
#define BUSY_POLL_MAX_MISSES 8
#define BUSY_POLL_BACKOFF_MIN_USEC UINT64_C(1000)
#define BUSY_POLL_BACKOFF_MAX_USEC UINT64_C(128000)

typedef struct BusyPoll {
        uint32_t missed;                /* bit i: the poll i+1 polls ago found nothing */
        unsigned polls;                 /* since the last back-off, up to BUSY_POLL_WINDOW */
        uint64_t backoff_usec;          /* the next back-off's length; 0: the shortest */
        uint64_t resume_at;             /* CLOCK_MONOTONIC µs: no polling before this */
        uint64_t backoffs;              /* how many there were (status) */
} BusyPoll;

/* Whether to poll after a batch at now. */
bool busy_poll_may_poll(const BusyPoll *b, uint64_t now);
/* Records a poll that found input, or one that did not in the whole poll time; false when polling should stop for
 * a back-off. Exposed for the unit tests. */
bool busy_poll_record(BusyPoll *b, bool found, uint64_t now);

/* How the clients' input is served (photond-client.c has why): every client fd sits in one epoll set, itself one
 * sd-event IO source, so a wake-up serves every client that is ready with one epoll_wait(), where a source per
 * client would cost sd-event an epoll_wait() per client. The set is edge-triggered, so it reports clients in the
 * order their input arrived (a level-triggered set keeps a client reported once at its old place in the ready
 * list); a client whose read filled the buffer is read again from a defer source. After a busy batch the set is
 * polled for a while (busy polling). The Manager embeds it (manager->client_io), so the read and flush paths reach
 * it without another pointer; only photond-client.c touches its members, the Manager uses the functions below. */
typedef struct ClientIO {
        int epoll_fd;
        sd_event_source *event_source;
        LIST_HEAD(Client, read_more_clients);   /* data left after a full read */
        sd_event_source *read_more_event_source;
        uint64_t client_serial;         /* the last client's number */

        /* the batch being served */
        Client *serving;                /* whose request line is being handled */
        bool input_follows;             /* the request being served is not its client's last */
        bool batch_follows;             /* other clients of this batch are still to be served */

        /* busy polling */
        bool one_cpu;                   /* no busy polling */
        BusyPoll busy_poll;             /* whether polling pays */
        uint64_t batch_time_offset;     /* µs since the loop's time when busy polling found this batch */
        uint64_t busy_poll_batches;     /* batches busy polling found (status) */
        uint64_t last_batch_end;        /* CLOCK_MONOTONIC µs: when the last batch of clients was served */
} ClientIO;

/* A ClientIO not set up yet, which client_io_done() takes as it is. */
#define CLIENT_IO_INIT { .epoll_fd = -EBADF }

/* Creates m->client_io's epoll set and its sources; done closes them (the clients must be gone). */
int client_io_setup(Manager *m);
void client_io_done(Manager *m);

/* Whether more requests of the batch being served are known to follow the one being handled: its client sent
 * more, or other clients of the batch are still to be served. Inline: the publish fan-out asks it. */
static inline bool client_io_more_follows(const ClientIO *io) {
        return io->input_follows || io->batch_follows;
}

/* Where the batch's time offset lives (LoopClock.offset): how far past the loop's time a batch found by busy
 * polling is, 0 otherwise. */
static inline const uint64_t* client_io_time_offset(const ClientIO *io) {
        return &io->batch_time_offset;
}

/* Adds status' "busyPollBatches" and "busyPollBackoffs" to data. */
int client_io_add_status(const ClientIO *io, struct json_object *data);

/* Line callback used by client_feed(); the manager's handler in the daemon, replaceable by tests. */
typedef int (*ClientLineHandler)(Client *c, const char *line, size_t len);
extern ClientLineHandler client_line_handler;
