/* SPDX-License-Identifier: MIT */

/* Connections kept across a restart under systemd: the file descriptor store, as journald keeps its stdout streams
 * across its own restarts (systemd's docs/FILE_DESCRIPTOR_STORE.md). The store keeps what a service hands it with
 * FDSTORE=1 while a restart job is queued and passes it to the next start with the socket units' fds; so a stop
 * writes down what each connection needs to go on (its session, subscriptions, the photons it provides, what it
 * sent and photond did not handle yet, what photond queued and did not send yet, the requests it still waits for)
 * in a sealed memfd, stores that and the sockets, and the next start puts them back together. Nothing reaches the
 * peer in between: a socket in the store is the same socket, its unread input waits in the kernel as it would for
 * a slow photond.
 *
 * The state's format, version FDSTORE_FORMAT_VERSION, little-endian:
 *
 *   "PHOTONFD"  u32 version  u32 flags (0)
 *   records: u32 type, u32 size, size bytes
 *     BUFFER  a queued line's bytes (every line once, however many queues hold it: a publish reaches all its
 *             subscribers as one buffer), numbered from 0 in order
 *     CLIENT  fields, each u32 type, u32 size, size bytes:
 *               SOCKET      u64 st_dev, u64 st_ino of the connection's socket (exactly one)
 *               SESSION_ID  bytes (at most one)      SUBSCRIPTION  a channel key    PROVIDES  a photon
 *               INPUT       bytes read and not handled (at most one)
 *               OUTPUT      u32 buffer, u32 bytes of it already sent, u32 tag (0: an answer; n: a channel
 *                           message, the same n for one channel), in queue order
 *               IN_FLIGHT   the id of a request still to be answered
 *     CALLS   u64: the last call id (invoke_id) issued; the next process issues none up to it, so that a late
 *             answer from a provider kept connected names no call of its own (at most one)
 *     END     u64 FNV-1a of every byte before this record; the last record
 *
 * A record or field type with bit 31 set must be understood: a reader that does not know it drops the state; one
 * without it is skipped. A change an older photond could misread takes a new version instead, and a photond reads
 * only the versions it knows: a downgrade drops a newer state, with a log line, as it would a damaged one. */

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "clock.h"
#include "log.h"
#include "photond-bus.h"
#include "photond-channel.h"
#include "photond-client.h"
#include "photond-control.h"
#include "photond-dispatch.h"
#include "bytes.h"
#include "photond-fdstore.h"
#include "photond-limits.h"
#include "photond-manager.h"
#include "photond-schedule.h"
#include "string-util.h"
#include "unaligned.h"

#define FDSTORE_MAGIC "PHOTONFD"
#define HEADER_SIZE 16
#define RECORD_HEADER_SIZE 8
#define END_RECORD_SIZE (RECORD_HEADER_SIZE + 8)
#define MUST_UNDERSTAND UINT32_C(0x80000000)

/* The most fds one message carries (the kernel's SCM_MAX_FD). */
#define FDS_PER_MESSAGE 253

/* systemd passes every stored fd's name to the next start in LISTEN_FDNAMES, one environment variable, which Linux
 * caps at 128 KiB (MAX_ARG_STRLEN): past it the exec fails, and with it every start while the store holds them. So
 * no more connections than their names fit, with room for the listeners' and the state's. */
#define FDSTORE_MAX_NAMES_BYTES (120 * 1024)
#define FDSTORE_MAX_CLIENTS_FOR_NAMES (FDSTORE_MAX_NAMES_BYTES / (sizeof(FDSTORE_CLIENT_NAME ":") - 1))

enum {
        RECORD_BUFFER = 1,
        RECORD_CLIENT = 2,
        RECORD_END = 3,
        RECORD_CALLS = 4,
};

enum {
        FIELD_SOCKET = 1,
        FIELD_SESSION_ID = 2,
        FIELD_SUBSCRIPTION = 3,
        FIELD_PROVIDES = 4,
        FIELD_INPUT = 5,
        FIELD_OUTPUT = 6,
        FIELD_IN_FLIGHT = 7,
};

int fdstore_config_from_env(uint64_t *ret_store_max) {
        const char *v = getenv("PHOTOND_FDSTORE"), *e;
        uint64_t n = 0;

        if (!v || streq(v, "auto")) {
                /* systemd 254 and later tell the service its FileDescriptorStoreMax=; 252 does not, so there the
                 * units say it themselves (PHOTOND_FDSTORE=<n>). Without either the store may be off, and a stop
                 * that counted on it would cost the clients the shutdown notice. */
                e = getenv("FDSTORE");
                if (e && safe_atou64(e, &n) < 0)
                        n = 0;
        } else if (!streq(v, "no") && (safe_atou64(v, &n) < 0 || n == 0))
                return -EINVAL;

        /* The store is a service manager's: without one, nobody would keep what a stop hands over. */
        if (!getenv("NOTIFY_SOCKET"))
                n = 0;
        /* One fd is the state's; a store without room for a connection besides keeps nothing worth the stop. */
        *ret_store_max = n >= 2 ? n : 0;
        return 0;
}

/* ---- bytes ---- */

static uint64_t fnv1a64(const void *p, size_t n) {
        const uint8_t *b = p;
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

static int bytes_put_u32(Bytes *b, uint32_t v) {
        v = htole32(v);
        return bytes_put(b, &v, sizeof(v));
}

/* A record or a field: type, size, the bytes (two pieces, either may be empty). */
static int bytes_put_tlv(Bytes *b, uint32_t type, const void *p1, size_t n1, const void *p2, size_t n2) {
        int r;

        if (n1 > UINT32_MAX - n2)
                return -E2BIG;
        r = bytes_put_u32(b, type);
        if (r >= 0)
                r = bytes_put_u32(b, (uint32_t) (n1 + n2));
        if (r >= 0)
                r = bytes_put(b, p1, n1);
        if (r >= 0)
                r = bytes_put(b, p2, n2);
        return r;
}

/* ---- the writer ---- */

typedef struct BufferEntry {
        SharedBuf *buf;                 /* a reference */
        uint32_t index;
        UT_hash_handle hh;              /* by buf */
} BufferEntry;

struct FdStoreWriter {
        uint64_t max_bytes;
        Bytes out;                      /* the header, the buffers and the client records so far */
        Bytes client;                   /* the fields of the client record being written */
        bool in_client, finished;
        size_t client_out_size;         /* out.size when the record began */
        uint32_t client_buffers;        /* n_buffers then */

        BufferEntry *by_buf;
        BufferEntry **buffers;          /* by index */
        uint32_t n_buffers, buffers_alloc;
        size_t n_clients;

        const void **tags;              /* the record's tags: tag n is tags[n - 1] */
        size_t n_tags, tags_alloc;
};

int fdstore_writer_new(uint64_t max_bytes, FdStoreWriter **ret) {
        _cleanup_(fdstore_writer_freep) FdStoreWriter *w = NULL;
        int r;

        w = new0(FdStoreWriter, 1);
        if (!w)
                return -ENOMEM;
        w->max_bytes = max_bytes;

        r = bytes_put(&w->out, FDSTORE_MAGIC, 8);
        if (r >= 0)
                r = bytes_put_u32(&w->out, FDSTORE_FORMAT_VERSION);
        if (r >= 0)
                r = bytes_put_u32(&w->out, 0);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

static void writer_drop_buffers(FdStoreWriter *w, uint32_t from) {
        while (w->n_buffers > from) {
                BufferEntry *e = w->buffers[--w->n_buffers];

                HASH_DEL(w->by_buf, e);
                shared_buf_unref(e->buf);
                free(e);
        }
}

FdStoreWriter* fdstore_writer_free(FdStoreWriter *w) {
        if (!w)
                return NULL;
        writer_drop_buffers(w, 0);
        free(w->buffers);
        free(w->tags);
        bytes_done(&w->out);
        bytes_done(&w->client);
        return mfree(w);
}

/* Whether n more bytes of this record could still fit, with the record's header and the END record after it. */
static bool writer_fits(FdStoreWriter *w, size_t n) {
        uint64_t need = (uint64_t) w->out.size + RECORD_HEADER_SIZE + w->client.size + n + END_RECORD_SIZE;

        return need <= w->max_bytes && need <= UINT32_MAX;
}

int fdstore_writer_begin_client(FdStoreWriter *w, uint64_t dev, uint64_t ino, const char *session_id) {
        uint64_t socket[2] = { htole64(dev), htole64(ino) };
        int r;

        assert(!w->in_client && !w->finished);

        w->in_client = true;
        w->client_out_size = w->out.size;
        w->client_buffers = w->n_buffers;
        w->client.size = 0;
        w->n_tags = 0;

        r = bytes_put_tlv(&w->client, FIELD_SOCKET, socket, sizeof(socket), NULL, 0);
        if (r >= 0 && session_id)
                r = bytes_put_tlv(&w->client, FIELD_SESSION_ID, session_id, strlen(session_id), NULL, 0);
        return r;
}

static int writer_field(FdStoreWriter *w, uint32_t type, const void *p, size_t n) {
        assert(w->in_client);

        if (!writer_fits(w, RECORD_HEADER_SIZE + n))
                return -E2BIG;
        return bytes_put_tlv(&w->client, type, p, n, NULL, 0);
}

int fdstore_writer_add_subscription(FdStoreWriter *w, const char *name, size_t len) {
        return writer_field(w, FIELD_SUBSCRIPTION, name, len);
}

int fdstore_writer_add_provides(FdStoreWriter *w, const char *photon) {
        return writer_field(w, FIELD_PROVIDES, photon, strlen(photon));
}

int fdstore_writer_set_input(FdStoreWriter *w, const char *data, size_t size) {
        return size > 0 ? writer_field(w, FIELD_INPUT, data, size) : 0;
}

int fdstore_writer_add_in_flight(FdStoreWriter *w, const char *id) {
        return writer_field(w, FIELD_IN_FLIGHT, id, strlen(id));
}

static int writer_buffer(FdStoreWriter *w, SharedBuf *b, uint32_t *ret_index) {
        _cleanup_free_ BufferEntry *e = NULL;
        int r;

        HASH_FIND_PTR(w->by_buf, &b, e);
        if (e) {
                *ret_index = TAKE_PTR(e)->index;
                return 0;
        }

        /* The buffer goes before the record that first refers to it. */
        if (!writer_fits(w, RECORD_HEADER_SIZE + b->size + RECORD_HEADER_SIZE + 12))
                return -E2BIG;
        if (w->n_buffers == w->buffers_alloc) {
                uint32_t na = MAX(w->buffers_alloc * 2, UINT32_C(64));
                BufferEntry **n = realloc(w->buffers, na * sizeof(BufferEntry*));

                if (!n)
                        return -ENOMEM;
                w->buffers = n;
                w->buffers_alloc = na;
        }
        e = new(BufferEntry, 1);
        if (!e)
                return -ENOMEM;
        r = bytes_put_tlv(&w->out, RECORD_BUFFER, b->data, b->size, NULL, 0);
        if (r < 0)
                return r;
        *e = (BufferEntry) {
                .buf = shared_buf_ref(b),
                .index = w->n_buffers,
        };
        HASH_ADD_PTR(w->by_buf, buf, e);
        w->buffers[w->n_buffers++] = e;
        *ret_index = TAKE_PTR(e)->index;
        return 0;
}

static int writer_tag(FdStoreWriter *w, const void *tag, uint32_t *ret) {
        if (!tag) {
                *ret = 0;
                return 0;
        }
        /* A client's queue holds the messages of a few channels: a search is cheaper than a table. */
        for (size_t i = 0; i < w->n_tags; i++)
                if (w->tags[i] == tag) {
                        *ret = (uint32_t) i + 1;
                        return 0;
                }
        if (w->n_tags == w->tags_alloc) {
                size_t na = MAX(w->tags_alloc * 2, (size_t) 8);
                const void **n = realloc(w->tags, na * sizeof(void*));

                if (!n)
                        return -ENOMEM;
                w->tags = n;
                w->tags_alloc = na;
        }
        w->tags[w->n_tags++] = tag;
        *ret = (uint32_t) w->n_tags;
        return 0;
}

int fdstore_writer_add_output(FdStoreWriter *w, SharedBuf *b, size_t offset, const void *tag) {
        uint32_t v[3], index, t;
        int r;

        assert(w->in_client);
        assert(offset < b->size);

        if (b->size > UINT32_MAX)
                return -E2BIG;
        r = writer_tag(w, tag, &t);
        if (r < 0)
                return r;
        r = writer_buffer(w, b, &index);
        if (r < 0)
                return r;
        v[0] = htole32(index);
        v[1] = htole32((uint32_t) offset);
        v[2] = htole32(t);
        return writer_field(w, FIELD_OUTPUT, v, sizeof(v));
}

void fdstore_writer_abort_client(FdStoreWriter *w) {
        if (!w->in_client)
                return;
        writer_drop_buffers(w, w->client_buffers);
        w->out.size = w->client_out_size;
        w->client.size = 0;
        w->in_client = false;
}

int fdstore_writer_end_client(FdStoreWriter *w) {
        int r;

        assert(w->in_client);

        if (!writer_fits(w, 0)) {
                fdstore_writer_abort_client(w);
                return -E2BIG;
        }
        r = bytes_put_tlv(&w->out, RECORD_CLIENT, w->client.data, w->client.size, NULL, 0);
        if (r < 0) {
                fdstore_writer_abort_client(w);
                return r;
        }
        w->client.size = 0;
        w->in_client = false;
        w->n_clients++;
        return 0;
}

size_t fdstore_writer_n_clients(FdStoreWriter *w) {
        return w->n_clients;
}

int fdstore_writer_set_call_serial(FdStoreWriter *w, uint64_t serial) {
        uint64_t v = htole64(serial);

        assert(!w->in_client && !w->finished);
        return bytes_put_tlv(&w->out, RECORD_CALLS, &v, sizeof(v), NULL, 0);
}

int fdstore_writer_finish(FdStoreWriter *w, const char **ret_data, size_t *ret_size) {
        uint64_t sum;
        int r;

        assert(!w->in_client);

        if (!w->finished) {
                sum = htole64(fnv1a64(w->out.data, w->out.size));
                r = bytes_put_tlv(&w->out, RECORD_END, &sum, sizeof(sum), NULL, 0);
                if (r < 0)
                        return r;
                w->finished = true;
        }
        *ret_data = w->out.data;
        *ret_size = w->out.size;
        return 0;
}

/* ---- the reader ---- */

typedef struct Tlv {
        uint32_t type;
        const uint8_t *data;
        uint32_t size;
} Tlv;

/* The next record or field at *p: 1 and *ret, 0 at end, -EBADMSG for one cut short. */
static int tlv_next(const uint8_t **p, const uint8_t *end, Tlv *ret) {
        uint32_t size;

        if (*p == end)
                return 0;
        if ((size_t) (end - *p) < RECORD_HEADER_SIZE)
                return -EBADMSG;
        size = unaligned_read_le32(*p + 4);
        if (size > (size_t) (end - *p) - RECORD_HEADER_SIZE)
                return -EBADMSG;
        *ret = (Tlv) {
                .type = unaligned_read_le32(*p),
                .data = *p + RECORD_HEADER_SIZE,
                .size = size,
        };
        *p += RECORD_HEADER_SIZE + size;
        return 1;
}

static FdStoreBytes tlv_bytes(const Tlv *t) {
        return (FdStoreBytes) { (const char*) t->data, t->size };
}

static void client_done(FdStoreClient *c) {
        free(c->subscriptions);
        free(c->provides);
        free(c->output);
        free(c->in_flight);
}

void fdstore_state_done(FdStoreState *s) {
        for (size_t i = 0; i < s->n_clients; i++)
                client_done(&s->clients[i]);
        free(s->clients);
        free(s->buffers);
        *s = (FdStoreState) {};
}

/* Counts (count) or fills in (!count) a client record's fields. */
static int client_fields(const Tlv *record, const FdStoreState *s, bool count, FdStoreClient *c) {
        const uint8_t *p = record->data, *end = record->data + record->size;
        bool socket = false, input = false;
        Tlv f;
        int r;

        while ((r = tlv_next(&p, end, &f)) > 0)
                switch (f.type) {

                case FIELD_SOCKET:
                        if (socket || f.size != 16)
                                return -EBADMSG;
                        socket = true;
                        c->dev = unaligned_read_le64(f.data);
                        c->ino = unaligned_read_le64(f.data + 8);
                        break;

                case FIELD_SESSION_ID:
                        if (count && c->has_session_id)
                                return -EBADMSG;
                        c->has_session_id = true;
                        c->session_id = tlv_bytes(&f);
                        break;

                case FIELD_INPUT:
                        if (input)
                                return -EBADMSG;
                        input = true;
                        c->input = tlv_bytes(&f);
                        break;

                case FIELD_SUBSCRIPTION:
                        if (!count)
                                c->subscriptions[c->n_subscriptions] = tlv_bytes(&f);
                        c->n_subscriptions++;
                        break;

                case FIELD_PROVIDES:
                        if (!count)
                                c->provides[c->n_provides] = tlv_bytes(&f);
                        c->n_provides++;
                        break;

                case FIELD_IN_FLIGHT:
                        if (!count)
                                c->in_flight[c->n_in_flight] = tlv_bytes(&f);
                        c->n_in_flight++;
                        break;

                case FIELD_OUTPUT: {
                        FdStoreOutput o;

                        if (f.size != 12)
                                return -EBADMSG;
                        o = (FdStoreOutput) {
                                .buffer = unaligned_read_le32(f.data),
                                .offset = unaligned_read_le32(f.data + 4),
                                .tag = unaligned_read_le32(f.data + 8),
                        };
                        /* A line is written before the first record that queues it, and one that was sent whole
                         * is no longer queued. */
                        if (o.buffer >= s->n_buffers || o.offset >= s->buffers[o.buffer].size)
                                return -EBADMSG;
                        if (!count)
                                c->output[c->n_output] = o;
                        c->n_output++;
                        break;
                }

                default:
                        if (f.type & MUST_UNDERSTAND)
                                return -EPROTONOSUPPORT;
                }
        if (r < 0)
                return r;
        return socket ? 0 : -EBADMSG;
}

static int client_parse(const Tlv *record, const FdStoreState *s, FdStoreClient *ret) {
        FdStoreClient c = {};
        int r;

        r = client_fields(record, s, true, &c);
        if (r < 0)
                return r;

        /* Each field takes at least a header, so these are bounded by the state's size. */
        ret->subscriptions = new(FdStoreBytes, c.n_subscriptions);
        ret->provides = new(FdStoreBytes, c.n_provides);
        ret->output = new(FdStoreOutput, c.n_output);
        ret->in_flight = new(FdStoreBytes, c.n_in_flight);
        if ((c.n_subscriptions > 0 && !ret->subscriptions) || (c.n_provides > 0 && !ret->provides) ||
            (c.n_output > 0 && !ret->output) || (c.n_in_flight > 0 && !ret->in_flight))
                return -ENOMEM;
        return client_fields(record, s, false, ret);
}

int fdstore_state_parse(const void *data, size_t size, FdStoreState *ret) {
        _cleanup_(fdstore_state_done) FdStoreState s = {};
        const uint8_t *p = data, *end = p + size, *end_record = NULL;
        size_t n_buffers = 0, n_clients = 0;
        bool calls = false;
        uint32_t version;
        Tlv t;
        int r;

        if (size < HEADER_SIZE || memcmp(p, FDSTORE_MAGIC, 8) != 0)
                return -EBADMSG;
        version = unaligned_read_le32(p + 8);
        if (version != FDSTORE_FORMAT_VERSION)
                return -EPROTONOSUPPORT;

        /* First the frame: the records, the END record last and its checksum; and how much there is. */
        p += HEADER_SIZE;
        for (const uint8_t *q = p; (r = tlv_next(&q, end, &t)) > 0;) {
                if (end_record)
                        return -EBADMSG;                /* nothing after END */
                switch (t.type) {
                case RECORD_BUFFER:
                        n_buffers++;
                        break;
                case RECORD_CLIENT:
                        n_clients++;
                        break;
                case RECORD_CALLS:
                        if (calls || t.size != 8)
                                return -EBADMSG;
                        calls = true;
                        s.call_serial = unaligned_read_le64(t.data);
                        break;
                case RECORD_END:
                        if (t.size != 8)
                                return -EBADMSG;
                        end_record = t.data - RECORD_HEADER_SIZE;
                        if (unaligned_read_le64(t.data) != fnv1a64(data, end_record - (const uint8_t*) data))
                                return -EBADMSG;
                        break;
                default:
                        if (t.type & MUST_UNDERSTAND)
                                return -EPROTONOSUPPORT;
                }
        }
        if (r < 0)
                return r;
        if (!end_record)
                return -EBADMSG;

        s.buffers = new(FdStoreBytes, n_buffers);
        s.clients = new0(FdStoreClient, n_clients);
        if ((n_buffers > 0 && !s.buffers) || (n_clients > 0 && !s.clients))
                return -ENOMEM;

        while (p < end_record) {
                r = tlv_next(&p, end_record, &t);
                if (r <= 0)
                        return r < 0 ? r : -EBADMSG;
                if (t.type == RECORD_BUFFER)
                        s.buffers[s.n_buffers++] = tlv_bytes(&t);
                else if (t.type == RECORD_CLIENT) {
                        r = client_parse(&t, &s, &s.clients[s.n_clients]);
                        /* Counted either way, so that done frees what the parse allocated. */
                        s.n_clients++;
                        if (r < 0)
                                return r;
                }
        }

        *ret = TAKE_STRUCT(s);
        return 0;
}

int fdstore_state_read_fd(int fd, uint64_t max_bytes, char **ret_data, size_t *ret_size) {
        const int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
        _cleanup_free_ char *data = NULL;
        struct stat st;
        size_t done = 0;
        int k;

        /* Sealed: what we read is what the last stop wrote, and nobody can change it while we do. */
        k = fcntl(fd, F_GET_SEALS);
        if (k < 0)
                return errno == EINVAL ? -EPERM : -errno;
        if ((k & seals) != seals)
                return -EPERM;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > max_bytes || (uint64_t) st.st_size > SIZE_MAX - 1)
                return -EFBIG;

        data = malloc((size_t) st.st_size + 1);
        if (!data)
                return -ENOMEM;
        while (done < (size_t) st.st_size) {
                ssize_t n = pread(fd, data + done, (size_t) st.st_size - done, (off_t) done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EBADMSG;
                done += n;
        }
        *ret_data = TAKE_PTR(data);
        *ret_size = done;
        return 0;
}

int fdstore_memfd_new(const char *data, size_t size, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        size_t done = 0;

        fd = memfd_create(FDSTORE_STATE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        while (done < size) {
                ssize_t n = write(fd, data + done, size - done);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += n;
        }
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* ---- the stop ---- */

/* A connection being kept: its socket and the requests it waits for. */
typedef struct Kept {
        Client *client;
        DispatchPeer *peer;             /* &client->peer, the key of by_peer */
        uint64_t dev, ino;
        const char **in_flight;         /* borrowed from the cores, which change nothing until the state is written */
        size_t n_in_flight, in_flight_alloc;
        bool written;                   /* in the state */
        UT_hash_handle hh_client;       /* by client */
        UT_hash_handle hh_peer;         /* by peer */
} Kept;

typedef struct KeepContext {
        Manager *manager;
        Kept *kept;
        size_t n_kept;
        Kept *by_client, *by_peer;
        FdStoreWriter *writer;
} KeepContext;

static void keep_context_done(KeepContext *k) {
        HASH_CLEAR(hh_client, k->by_client);
        HASH_CLEAR(hh_peer, k->by_peer);
        for (size_t i = 0; i < k->n_kept; i++)
                free(k->kept[i].in_flight);
        free(k->kept);
        k->writer = fdstore_writer_free(k->writer);
}

static int kept_add_in_flight(Kept *e, const char *id) {
        if (!id)
                return 0;
        if (e->n_in_flight == e->in_flight_alloc) {
                size_t na = MAX(e->in_flight_alloc * 2, (size_t) 4);
                const char **n = realloc(e->in_flight, na * sizeof(char*));

                if (!n)
                        return -ENOMEM;
                e->in_flight = n;
                e->in_flight_alloc = na;
        }
        e->in_flight[e->n_in_flight++] = id;
        return 0;
}

static int on_call(const DispatchCallInfo *info, void *userdata) {
        KeepContext *k = userdata;
        Kept *e = NULL;

        if (!info->caller)
                return 0;
        HASH_FIND(hh_peer, k->by_peer, &info->caller, sizeof(DispatchPeer*), e);
        return e ? kept_add_in_flight(e, info->caller_id) : 0;
}

static int on_run_job_waiter(void *waiter, const char *waiter_id, void *userdata) {
        KeepContext *k = userdata;
        Kept *e = NULL;

        HASH_FIND(hh_client, k->by_client, &waiter, sizeof(Client*), e);
        return e ? kept_add_in_flight(e, waiter_id) : 0;
}

static int on_lock_wait(const char *request_id, void *userdata) {
        return kept_add_in_flight(userdata, request_id);
}

static int on_subscription(const char *name, size_t len, void *userdata) {
        return fdstore_writer_add_subscription(userdata, name, len);
}

static int on_provided(const char *photon, void *userdata) {
        return fdstore_writer_add_provides(userdata, photon);
}

static int keep_write(KeepContext *k, Kept *e) {
        Manager *m = k->manager;
        Client *c = e->client;
        const OutEntry *o;
        const char *input;
        size_t n;
        int r;

        r = fdstore_writer_begin_client(k->writer, e->dev, e->ino, c->session_id);
        if (r >= 0)
                r = channels_foreach_subscription(m->channels, &c->subscriber, on_subscription, k->writer);
        if (r >= 0)
                r = dispatch_peer_foreach_provided(&c->peer, on_provided, k->writer);
        for (size_t i = 0; r >= 0 && (o = client_queued_entry(c, i)); i++)
                r = fdstore_writer_add_output(k->writer, o->buf, o->offset, o->tag);
        for (size_t i = 0; r >= 0 && i < e->n_in_flight; i++)
                r = fdstore_writer_add_in_flight(k->writer, e->in_flight[i]);
        if (r >= 0) {
                n = client_unhandled_input(c, &input);
                r = fdstore_writer_set_input(k->writer, input, n);
        }
        if (r < 0) {
                fdstore_writer_abort_client(k->writer);
                return r;
        }
        return fdstore_writer_end_client(k->writer);
}

/* Whether c goes on in the next process: one that is closing (its peer shut down its side, a line too long) is
 * left to the shutdown, which sends what it still has and closes it, as without the store. */
static bool client_keepable(Client *c) {
        return !c->disconnected && !c->close_after_flush && !c->peer_gone && c->fd >= 0;
}

static int keep_select(KeepContext *k, uint64_t cap) {
        Manager *m = k->manager;
        size_t n = 0, skip;

        LIST_FOREACH(clients, c, m->clients)
                if (client_keepable(c))
                        n++;
        /* The list is newest first: past the cap, the newest connections are the ones left to the shutdown. */
        skip = n > cap ? n - cap : 0;
        if (skip > 0)
                log_warning("%zu connections are past the %" PRIu64 " a restart keeps (the file descriptor store's "
                            "size less one, PHOTOND_FDSTORE_MAX_CLIENTS, %zu names in LISTEN_FDNAMES): they are "
                            "closed as a stop does.", skip, cap, (size_t) FDSTORE_MAX_CLIENTS_FOR_NAMES);
        k->kept = new0(Kept, n - skip);
        if (!k->kept)
                return -ENOMEM;

        LIST_FOREACH(clients, c, m->clients) {
                struct stat st;

                if (!client_keepable(c))
                        continue;
                if (skip > 0) {
                        skip--;
                        continue;
                }
                if (fstat(c->fd, &st) < 0) {
                        log_debug_errno(errno, "Client %" PRIu64 ": cannot fstat() its socket, not keeping it: %m",
                                        c->serial);
                        continue;
                }
                k->kept[k->n_kept++] = (Kept) {
                        .client = c,
                        .peer = &c->peer,
                        .dev = st.st_dev,
                        .ino = st.st_ino,
                };
        }
        /* The array is complete: the tables may point into it now. */
        for (size_t i = 0; i < k->n_kept; i++) {
                HASH_ADD(hh_client, k->by_client, client, sizeof(Client*), &k->kept[i]);
                HASH_ADD(hh_peer, k->by_peer, peer, sizeof(DispatchPeer*), &k->kept[i]);
        }
        return 0;
}

/* Hands the sockets of the written connections to systemd, as many per message as one may carry. Returns how
 * many it took; those not sent stay with this process (written is cleared). */
static size_t keep_store_sockets(KeepContext *k) {
        int fds[FDS_PER_MESSAGE];
        Kept *batch[FDS_PER_MESSAGE];
        size_t n = 0, stored = 0;
        int r;

        for (size_t i = 0; i <= k->n_kept; i++) {
                if (i < k->n_kept && k->kept[i].written) {
                        batch[n] = &k->kept[i];
                        fds[n++] = k->kept[i].client->fd;
                }
                if (n == 0 || (n < FDS_PER_MESSAGE && i < k->n_kept))
                        continue;
                r = sd_pid_notify_with_fds(0, false, "FDSTORE=1\nFDNAME=" FDSTORE_CLIENT_NAME, fds, n);
                if (r > 0)
                        stored += n;
                else {
                        log_warning_errno(r ?: SYNTHETIC_ERRNO(ENOTCONN), "Cannot hand %zu connections to "
                                          "systemd's file descriptor store: %m; they are closed as a stop does.", n);
                        for (size_t j = 0; j < n; j++)
                                batch[j]->written = false;
                }
                n = 0;
        }
        return stored;
}

bool fdstore_stop_keeps_clients(Manager *m) {
        _cleanup_free_ char *type = NULL;
        int r;

        if (m->fdstore_max == 0)
                return false;
        r = bus_unit_job_type(m->bus, &type);
        if (r < 0) {
                log_debug_errno(r, "Cannot ask the service manager why it stops photond (%m): taking it for a "
                                "restart.");
                return true;
        }
        /* No job: someone sent SIGTERM (systemctl kill); the unit stops and its store goes with it. A try-restart
         * of a running unit is a restart. */
        if (r == 0 || !(streq(type, "restart") || streq(type, "try-restart"))) {
                log_info("Stopped by the service manager (%s), not for a restart: the clients get the shutdown "
                         "notice.", r == 0 ? "no job" : type);
                return false;
        }
        return true;
}

size_t fdstore_keep_clients(Manager *m) {
        _cleanup_(keep_context_done) KeepContext k = { .manager = m };
        _cleanup_close_ int state_fd = -EBADF;
        size_t size, n_written = 0, n_late = 0, n_too_big = 0, n_stored;
        uint64_t deadline;
        const char *data;
        int r;

        if (m->fdstore_max == 0)
                return 0;
        deadline = now_usec(CLOCK_MONOTONIC) + limits.SHUTDOWN_FLUSH_MS * USEC_PER_MSEC;

        /* What is known goes out first: the answers of calls that have ended (their callers would hear of the
         * restart instead), the job files and the state, and whatever the sockets take now. Only the rest is
         * written down. */
        dispatcher_deliver_done(m->dispatcher);
        (void) manager_flush(m);
        /* The last state write failed: the flush sent the replies held for it all the same (a shutdown has nothing
         * left to protect), and they report changes the next process will not know. Keep nothing: the clients
         * reconnect, as after a stop. */
        if (m->state_unsaved) {
                log_warning("The state could not be written: not keeping the connections across the restart; they "
                            "are closed as a stop does.");
                return 0;
        }

        r = keep_select(&k, MIN(MIN(limits.FDSTORE_MAX_CLIENTS, m->fdstore_max - 1),
                                (uint64_t) FDSTORE_MAX_CLIENTS_FOR_NAMES));
        if (r < 0)
                goto fail;
        if (k.n_kept == 0)
                return 0;

        /* The requests they wait for: the new process answers them, since this one's cores (lock waits, calls, job
         * runs) do not go on there. */
        for (size_t i = 0; r >= 0 && i < k.n_kept; i++)
                r = control_lock_foreach_wait(k.kept[i].client, on_lock_wait, &k.kept[i]);
        /* Cluster mode: what waits for Redis (this process drops it when the clients leave it). */
        for (size_t i = 0; r >= 0 && i < k.n_kept; i++)
                r = control_channels_foreach_deferred(k.kept[i].client, on_lock_wait, &k.kept[i]);
        if (r >= 0)
                r = dispatcher_foreach_call(m->dispatcher, on_call, &k);
        if (r >= 0)
                r = scheduler_foreach_waiter(m->scheduler, on_run_job_waiter, &k);
        if (r >= 0 && m->cluster_jobs)
                /* Schedule changes waiting for Redis (cluster mode): sending them again is harmless. */
                r = cluster_jobs_foreach_waiter(m->cluster_jobs, on_run_job_waiter, &k);
        if (r < 0)
                goto fail;

        r = fdstore_writer_new(limits.FDSTORE_MAX_BYTES, &k.writer);
        if (r >= 0)
                r = fdstore_writer_set_call_serial(k.writer, dispatcher_last_serial(m->dispatcher));
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < k.n_kept; i++) {
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        n_late = k.n_kept - i;
                        log_warning("Writing down the connections took PHOTOND_SHUTDOWN_FLUSH_MS (%" PRIu64 " ms): "
                                    "%zu are closed as a stop does.", limits.SHUTDOWN_FLUSH_MS, n_late);
                        break;
                }
                r = keep_write(&k, &k.kept[i]);
                if (r == -E2BIG) {
                        n_too_big++;
                        continue;
                }
                if (r < 0)
                        goto fail;
                k.kept[i].written = true;
                n_written++;
        }
        if (n_too_big > 0)
                log_warning("%zu connections did not fit PHOTOND_FDSTORE_MAX_BYTES (%" PRIu64 " bytes of state): "
                            "they are closed as a stop does.", n_too_big, limits.FDSTORE_MAX_BYTES);
        if (n_written == 0)
                return 0;

        r = fdstore_writer_finish(k.writer, &data, &size);
        if (r >= 0)
                r = fdstore_memfd_new(data, size, &state_fd);
        if (r < 0)
                goto fail;
        /* The state first: a store too small for everything then drops connections, never their state. */
        r = sd_pid_notify_with_fds(0, false, "FDSTORE=1\nFDNAME=" FDSTORE_STATE_NAME, &state_fd, 1);
        if (r <= 0) {
                r = r ?: SYNTHETIC_ERRNO(ENOTCONN);
                goto fail;
        }

        n_stored = keep_store_sockets(&k);

        /* systemd holds them now; this process lets go and sends them nothing more. */
        for (size_t i = 0; i < k.n_kept; i++)
                if (k.kept[i].written)
                        manager_client_disconnect(m, k.kept[i].client);

        log_info("Kept %zu connections in systemd's file descriptor store for the next start (%zu bytes of state).",
                 n_stored, size);
        return n_stored;

fail:
        log_warning_errno(r, "Cannot keep the connections across the restart: %m. They are closed as a stop does.");
        return 0;
}

/* ---- the start ---- */

/* A socket the store gave back, found by device and inode. */
typedef struct SocketKey {
        uint64_t dev, ino;
} SocketKey;

typedef struct StoredSocket {
        SocketKey key;
        int fd;
        UT_hash_handle hh;
} StoredSocket;

void fdstore_forget(bool state, bool clients) {
        if (state)
                (void) sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_STATE_NAME);
        if (clients)
                (void) sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_CLIENT_NAME);
}

/* A name, a photon or an id of the state as a C string: -EBADMSG if it holds a NUL (none was written with one). */
static int bytes_to_string(const FdStoreBytes *b, char **ret) {
        char *s;

        if (memchr(b->data, 0, b->size))
                return -EBADMSG;
        s = strndup(b->data, b->size);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* The tag of a channel message the last process had queued: any value that is no channel's tag now (those count
 * up from 1) and the same for one channel, which is all the slow-consumer policy asks of a tag (it reads the
 * channel from the line itself). */
static const void* restored_tag(uint32_t n) {
        return n == 0 ? NULL : (const void*) (UINTPTR_MAX - n);
}

static int adopt_client(Manager *m, Client *c, const FdStoreClient *rec, SharedBuf **bufs) {
        int r;

        if (rec->has_session_id) {
                _cleanup_free_ char *s = NULL;

                r = bytes_to_string(&rec->session_id, &s);
                if (r < 0)
                        return r;
                client_note_session(c, s);
        }
        for (size_t i = 0; i < rec->n_subscriptions; i++) {
                r = channels_subscribe(m->channels, &c->subscriber, rec->subscriptions[i].data,
                                       rec->subscriptions[i].size);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < rec->n_provides; i++) {
                _cleanup_free_ char *photon = NULL;

                r = bytes_to_string(&rec->provides[i], &photon);
                if (r >= 0)
                        r = control_calls_restore_provider(m->dispatcher, c, photon);
                if (r < 0)
                        return r;
        }

        /* In the order the peer would have read it: what was queued, the answers to what it waits for, and only
         * then the answers to what it sent and was not handled yet. */
        for (size_t i = 0; i < rec->n_output; i++) {
                r = client_requeue(c, bufs[rec->output[i].buffer], rec->output[i].offset,
                                   restored_tag(rec->output[i].tag));
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < rec->n_in_flight; i++) {
                _cleanup_free_ char *id = NULL;

                r = bytes_to_string(&rec->in_flight[i], &id);
                if (r >= 0)
                        r = client_reply_error(c, id, "Daemon restarted while the request was in flight",
                                               "Send the request again");
                if (r < 0)
                        return r;
        }
        return client_restore_input(c, rec->input.data, rec->input.size);
}

static void stored_sockets_free(StoredSocket **table) {
        StoredSocket *s, *tmp;

        HASH_ITER(hh, *table, s, tmp) {
                HASH_DEL(*table, s);
                safe_close(s->fd);
                free(s);
        }
}

static int stored_sockets_index(int *fds, size_t n_fds, StoredSocket **ret) {
        StoredSocket *table = NULL;

        for (size_t i = 0; i < n_fds; i++) {
                StoredSocket *s, *dup = NULL;
                struct stat st;

                if (fstat(fds[i], &st) < 0) {
                        log_debug_errno(errno, "Cannot fstat() a socket from the file descriptor store, closing "
                                        "it: %m");
                        fds[i] = safe_close(fds[i]);
                        continue;
                }
                s = new0(StoredSocket, 1);
                if (!s) {
                        stored_sockets_free(&table);
                        return -ENOMEM;
                }
                s->key.dev = st.st_dev;
                s->key.ino = st.st_ino;
                s->fd = TAKE_FD(fds[i]);
                HASH_FIND(hh, table, &s->key, sizeof(s->key), dup);
                if (dup) {              /* the same socket twice: systemd removes duplicates, but be sure */
                        safe_close(s->fd);
                        free(s);
                        continue;
                }
                HASH_ADD(hh, table, key, sizeof(s->key), s);
        }
        *ret = table;
        return 0;
}

static void close_fds(int *fds, size_t n_fds) {
        for (size_t i = 0; i < n_fds; i++)
                fds[i] = safe_close(fds[i]);
}

size_t fdstore_adopt(Manager *m, int state_fd, int *fds, size_t n_fds) {
        _cleanup_(fdstore_state_done) FdStoreState s = {};
        _cleanup_close_ int state = state_fd;
        _cleanup_free_ SharedBuf **bufs = NULL;
        _cleanup_free_ char *data = NULL;
        StoredSocket *sockets = NULL;
        size_t size = 0, n_adopted = 0, n_gone = 0, n_refused = 0;
        int r;

        if (state < 0 && n_fds == 0)
                return 0;
        if (state < 0) {
                log_warning("%zu connections came back from the file descriptor store without their state: closing "
                            "them (their clients reconnect).", n_fds);
                close_fds(fds, n_fds);
                return 0;
        }

        r = fdstore_state_read_fd(state, limits.FDSTORE_MAX_BYTES, &data, &size);
        if (r >= 0)
                r = fdstore_state_parse(data, size, &s);
        if (r == -EPROTONOSUPPORT)
                log_warning("The state of the connections kept by the last stop was written by another version of "
                            "photond (format %" PRIu32 ", this one reads %d): dropping it and closing its %zu "
                            "connections (their clients reconnect).",
                            size >= HEADER_SIZE ? unaligned_read_le32((const uint8_t*) data + 8) : 0, FDSTORE_FORMAT_VERSION,
                            n_fds);
        else if (r < 0)
                log_warning_errno(r, "Cannot read the state of the connections kept by the last stop: %m. Dropping "
                                  "it and closing its %zu connections (their clients reconnect).", n_fds);
        if (r < 0) {
                close_fds(fds, n_fds);
                return 0;
        }

        dispatcher_raise_serial(m->dispatcher, s.call_serial);

        bufs = new0(SharedBuf*, s.n_buffers);
        if (!bufs && s.n_buffers > 0)
                goto oom;
        for (size_t i = 0; i < s.n_buffers; i++) {
                bufs[i] = shared_buf_new(s.buffers[i].data, s.buffers[i].size);
                if (!bufs[i])
                        goto oom;
        }
        if (stored_sockets_index(fds, n_fds, &sockets) < 0)
                goto oom;

        for (size_t i = 0; i < s.n_clients; i++) {
                const FdStoreClient *rec = &s.clients[i];
                SocketKey key = { rec->dev, rec->ino };
                StoredSocket *sock = NULL;
                Client *c;

                HASH_FIND(hh, sockets, &key, sizeof(key), sock);
                if (!sock) {
                        n_gone++;       /* its client left during the restart: systemd dropped the socket */
                        continue;
                }
                HASH_DEL(sockets, sock);
                if (m->n_clients >= limits.MAX_CLIENTS) {
                        safe_close(sock->fd);
                        free(sock);
                        n_refused++;
                        m->n_clients_closed[CLIENT_CLOSE_REFUSED]++;
                        continue;
                }
                r = client_new(m, sock->fd, &c);
                if (r < 0) {
                        log_warning_errno(r, "Cannot take over a kept connection, closing it: %m");
                        safe_close(sock->fd);
                        free(sock);
                        n_refused++;
                        m->n_clients_closed[CLIENT_CLOSE_REFUSED]++;
                        continue;
                }
                free(sock);
                r = adopt_client(m, c, rec, bufs);
                if (r < 0) {
                        log_warning_errno(r, "Client %" PRIu64 ": cannot restore what it had before the restart, "
                                          "closing it (it reconnects): %m", c->serial);
                        manager_client_close(m, c, CLIENT_CLOSE_REFUSED);
                        n_refused++;
                        continue;
                }
                log_debug("Client %" PRIu64 " (pid %d) taken over from the last stop.", c->serial,
                          (int) c->ucred.pid);
                n_adopted++;
        }
        if (sockets)
                log_warning("%u connections came back from the file descriptor store without a record in its "
                            "state: closing them (their clients reconnect).", HASH_COUNT(sockets));
        stored_sockets_free(&sockets);

        log_info("Took over %zu connections kept by the last stop (%zu had gone meanwhile, %zu could not be taken "
                 "over).", n_adopted, n_gone, n_refused);
        for (size_t i = 0; i < s.n_buffers; i++)
                shared_buf_unref(bufs[i]);
        if (n_adopted > 0)
                manager_bus_changed(m);
        return n_adopted;

oom:
        log_oom();
        stored_sockets_free(&sockets);
        close_fds(fds, n_fds);
        for (size_t i = 0; bufs && i < s.n_buffers; i++)
                shared_buf_unref(bufs[i]);
        return n_adopted;
}
