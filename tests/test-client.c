/* SPDX-License-Identifier: MIT */

/* Framing and write-queue tests on a Client with no manager: lines go to a recording handler, output to a
 * socketpair. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

#include "json-util.h"
#include "photond-client.h"
#include "photond-limits.h"

static char *lines[64];
static size_t line_lens[64];
static unsigned n_lines;

static int record_line(Client *c, const char *line, size_t len) {
        cr_assert(n_lines < 64);
        lines[n_lines] = malloc(len + 1);
        memcpy(lines[n_lines], line, len);
        lines[n_lines][len] = '\0';
        line_lens[n_lines] = len;
        n_lines++;
        return 0;
}

static Client client;

static void setup(void) {
        limits_reset();
        client = (Client) { .fd = -EBADF };
        client_line_handler = record_line;
        n_lines = 0;
}

static void teardown(void) {
        for (unsigned i = 0; i < n_lines; i++)
                free(lines[i]);
        for (size_t i = 0; i < client.out_n; i++)
                shared_buf_unref(client.out[client.out_head + i].buf);
        free(client.out);
        free(client.rbuf);
        safe_close(client.fd);
}

TestSuite(client, .init = setup, .fini = teardown);

static void feed(const char *s) {
        cr_assert_eq(client_feed(&client, s, strlen(s)), 0);
}

Test(client, several_lines_in_one_read) {
        feed("{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        cr_assert_eq(n_lines, 3);
        cr_assert_str_eq(lines[0], "{\"a\":1}");
        cr_assert_str_eq(lines[2], "{\"c\":3}");
        cr_assert_null(client.rbuf, "no buffer may be kept when every line is complete");
}

Test(client, one_line_over_many_reads) {
        feed("{\"ty");
        feed("pe\":\"pi");
        cr_assert_eq(n_lines, 0);
        feed("ng\"}\n{\"x\"");
        cr_assert_eq(n_lines, 1);
        cr_assert_str_eq(lines[0], "{\"type\":\"ping\"}");
        feed(":1}\n");
        cr_assert_eq(n_lines, 2);
        cr_assert_str_eq(lines[1], "{\"x\":1}");
        cr_assert_null(client.rbuf, "the partial-line buffer is freed once the line completes");
}

Test(client, byte_by_byte) {
        const char *s = "{\"id\":\"a\"}\n";

        for (size_t i = 0; s[i]; i++)
                cr_assert_eq(client_feed(&client, s + i, 1), 0);
        cr_assert_eq(n_lines, 1);
        cr_assert_str_eq(lines[0], "{\"id\":\"a\"}");
}

Test(client, crlf_and_blank_lines) {
        feed("\r\n\n  \n{\"a\":1}\r\n\r\n{\"b\":2}\n");
        cr_assert_eq(n_lines, 2);
        cr_assert_str_eq(lines[0], "{\"a\":1}");
        cr_assert_str_eq(lines[1], "{\"b\":2}");
}

Test(client, nul_bytes_are_passed_on) {
        static const char data[] = "{\"a\"\0:1}\n";

        cr_assert_eq(client_feed(&client, data, sizeof(data) - 1), 0);
        cr_assert_eq(n_lines, 1);
        cr_assert_eq(line_lens[0], 8, "the line keeps its NUL for the parser to reject");
}

Test(client, over_long_line_is_refused) {
        char *big;

        limits.MAX_LINE_BYTES = 1000;
        big = malloc(600);
        memset(big, 'x', 600);
        cr_assert_eq(client_feed(&client, big, 600), 0);
        cr_assert_eq(client_feed(&client, big, 600), -E2BIG);
        free(big);

        cr_assert(client.close_after_flush);
        cr_assert_eq(n_lines, 0);
        cr_assert_eq(client.out_n, 1, "an error reply is queued");
        cr_assert(strstr(client.out[client.out_head].buf->data, "\"type\":\"error\""));
        cr_assert(strstr(client.out[client.out_head].buf->data, "at most 1000 bytes (PHOTOND_MAX_LINE_BYTES)"));

        /* Nothing more is read from a client that is being closed. */
        feed("{\"a\":1}\n");
        cr_assert_eq(n_lines, 0);
}

Test(client, line_at_cap_is_fine) {
        char buf[1002];

        limits.MAX_LINE_BYTES = 1000;
        memset(buf, ' ', 1000);
        memcpy(buf, "{\"k\":1}", 7);
        buf[1000] = '\n';
        cr_assert_eq(client_feed(&client, buf, 1001), 0);
        cr_assert_eq(n_lines, 1);
}

static int sp[2];

static void make_pair(void) {
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
        client.fd = sp[0];
}

Test(client, queue_is_written_with_one_writev) {
        _cleanup_(shared_buf_unrefp) SharedBuf *a = shared_buf_new("hello ", 6), *b = shared_buf_new("world\n", 6);
        char buf[64];

        make_pair();
        cr_assert_eq(client_send(&client, a, NULL), 0);
        cr_assert_eq(client_send(&client, b, NULL), 0);
        cr_assert_eq(client_send(&client, a, NULL), 0);
        cr_assert_eq(a->n_ref, 3, "the queue shares the buffer, it does not copy it");
        cr_assert_eq(client.out_bytes, 18);

        cr_assert_eq(client_flush(&client), 0);
        cr_assert_eq(client.out_n, 0);
        cr_assert_eq(client.out_bytes, 0);
        cr_assert_null(client.out, "an empty queue holds no memory");
        cr_assert_eq(a->n_ref, 1);
        cr_assert_eq(read(sp[1], buf, sizeof(buf)), 18);
        cr_assert_eq(memcmp(buf, "hello world\nhello ", 18), 0);
        close(sp[1]);
}

Test(client, full_socket_keeps_the_rest_queued) {
        _cleanup_(shared_buf_unrefp) SharedBuf *big = NULL;
        size_t total = 0;
        char *junk = calloc(1, 1 << 20);
        ssize_t n;

        make_pair();
        big = shared_buf_new(junk, 1 << 20);
        cr_assert_eq(client_send(&client, big, NULL), 0);
        cr_assert_eq(client_send(&client, big, NULL), 0);
        cr_assert_eq(client_flush(&client), 0);
        cr_assert(client.out_n > 0, "a socketpair does not take 2 MiB at once");
        cr_assert(client.want_pollout);

        while ((n = read(sp[1], junk, 1 << 20)) > 0) {
                total += n;
                cr_assert_eq(client_flush(&client), 0);
        }
        cr_assert_eq(client.out_n, 0);
        cr_assert_eq(total, 2u << 20, "every byte arrives exactly once, in order");
        cr_assert(!client.want_pollout);
        free(junk);
        close(sp[1]);
}

Test(client, write_queue_cap) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = shared_buf_new("0123456789", 10);

        limits.MAX_WRITE_QUEUE_BYTES = 25;
        cr_assert_eq(client_send(&client, b, &client), 0);
        cr_assert_eq(client_send(&client, b, &client), 0);
        cr_assert_eq(client_send(&client, b, &client), -ENOBUFS, "tagged messages past the cap are refused");
        cr_assert_eq(client.out_n, 2);
}

static unsigned n_dropped_tags;
static const void *dropped_tags[8];

static void on_drop(Client *c, const void *tag, SharedBuf *first, void *userdata) {
        dropped_tags[n_dropped_tags++] = tag;
}

Test(client, drop_tagged_keeps_replies_and_order) {
        _cleanup_(shared_buf_unrefp) SharedBuf *r1 = shared_buf_new("r1", 2), *r2 = shared_buf_new("r2", 2),
                                               *m = shared_buf_new("mm", 2);
        static const char tag_a = 'a', tag_b = 'b';

        cr_assert_eq(client_send(&client, m, &tag_a), 0);
        cr_assert_eq(client_send(&client, r1, NULL), 0);
        cr_assert_eq(client_send(&client, m, &tag_b), 0);
        cr_assert_eq(client_send(&client, m, &tag_a), 0);
        cr_assert_eq(client_send(&client, r2, NULL), 0);

        n_dropped_tags = 0;
        cr_assert_eq(client_drop_tagged(&client, on_drop, NULL), 3);
        cr_assert_eq(n_dropped_tags, 2, "one callback per channel lost");
        cr_assert_eq(dropped_tags[0], &tag_a);
        cr_assert_eq(dropped_tags[1], &tag_b);
        cr_assert_eq(client.out_n, 2);
        cr_assert_eq(client.out[client.out_head].buf, r1);
        cr_assert_eq(client.out[client.out_head + 1].buf, r2);
        cr_assert_eq(client.out_bytes, 4);
        cr_assert_eq(m->n_ref, 1);
}

Test(client, over_long_line_inside_one_read_is_refused) {
        char buf[256];

        /* Below the 16 KiB of one read: the line is complete in the read buffer and never pending. */
        limits.MAX_LINE_BYTES = 100;
        memset(buf, ' ', sizeof(buf));
        memcpy(buf, "{\"k\":1}", 7);
        memcpy(buf + 200, "\n{\"a\":1}\n", 9);
        cr_assert_eq(client_feed(&client, buf, 209), -E2BIG);
        cr_assert_eq(n_lines, 0, "neither the long line nor the one after it is handled");
        cr_assert(client.close_after_flush);
        cr_assert_eq(client.close_reason, CLIENT_CLOSE_LINE_TOO_LONG);
        cr_assert(strstr(client.out[client.out_head].buf->data, "at most 100 bytes (PHOTOND_MAX_LINE_BYTES)"));
}

Test(client, line_over_the_cap_after_good_lines_in_one_read) {
        char buf[256];

        limits.MAX_LINE_BYTES = 100;
        memset(buf, 'x', sizeof(buf));
        memcpy(buf, "{\"a\":1}\n{\"b\":2}\n", 16);
        buf[255] = '\n';
        cr_assert_eq(client_feed(&client, buf, sizeof(buf)), -E2BIG);
        cr_assert_eq(n_lines, 2, "the lines before the long one are handled, in order");
        cr_assert_str_eq(lines[1], "{\"b\":2}");
        cr_assert(client.close_after_flush);
}

Test(client, end_of_input_drops_the_incomplete_line_and_closes_after_the_answers) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = shared_buf_new("answer\n", 7);

        feed("{\"a\":1}\n{\"half\":");
        cr_assert_eq(n_lines, 1);
        cr_assert_eq(client_send(&client, b, NULL), 0);
        client_input_end(&client);
        cr_assert(client.close_after_flush);
        cr_assert_eq(client.close_reason, CLIENT_CLOSE_PEER);
        cr_assert_null(client.rbuf, "the incomplete line is dropped, as the reference never handles it either");
        cr_assert(!client_closing_done(&client), "an answer is still queued");

        make_pair();
        cr_assert_eq(client_flush(&client), 0);
        cr_assert(client_closing_done(&client));
        client.lock_waits.n_waiters = 1;
        cr_assert(!client_closing_done(&client), "an answer still to come keeps the connection");
        client.lock_waits.n_waiters = 0;
        close(sp[1]);
}

/* Every line is answered with 10 bytes, as a request handler would. */
static int answer_line(Client *c, const char *line, size_t len) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = shared_buf_new("answer...\n", 10);

        record_line(c, line, len);
        return client_send(c, b, NULL);
}

Test(client, full_write_queue_pauses_input_and_keeps_the_rest_in_order) {
        _cleanup_(shared_buf_unrefp) SharedBuf *big = NULL;
        char *junk = calloc(1, 100);
        char buf[256];

        make_pair();
        client_line_handler = answer_line;
        limits.MAX_WRITE_QUEUE_BYTES = 25;

        /* An answer larger than the cap is queued whole for the client whose request it answers. */
        big = shared_buf_new(junk, 100);
        cr_assert_eq(client_send(&client, big, NULL), 0, "an answer within the cap's reach is queued whatever its size");
        cr_assert_eq(client.out_bytes, 100);
        cr_assert_eq(client_flush(&client), 0);
        cr_assert_eq(read(sp[1], buf, sizeof(buf)), 100);

        feed("{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n{\"d\":4}\n{\"e\":");
        cr_assert_eq(n_lines, 3, "lines are handled while the queue is within the cap: 0, 10, 20 bytes queued");
        cr_assert(client.input_paused);
        cr_assert_eq(client.out_bytes, 30);

        /* Nothing is handled while paused, not even what arrives meanwhile (it would not be read). */
        feed("5}\n");
        cr_assert_eq(n_lines, 3);

        cr_assert_eq(client_flush(&client), 0);
        cr_assert(!client.input_paused, "the flush emptied the queue");
        cr_assert_eq(read(sp[1], buf, sizeof(buf)), 30);

        feed("");
        cr_assert_eq(n_lines, 5);
        cr_assert_str_eq(lines[3], "{\"d\":4}");
        cr_assert_str_eq(lines[4], "{\"e\":5}");
        cr_assert(!client.rbuf_lines);
        cr_assert_null(client.rbuf);
        free(junk);
        close(sp[1]);
}

Test(client, answer_to_an_earlier_request_over_the_cap_is_refused) {
        _cleanup_(shared_buf_unrefp) SharedBuf *b = shared_buf_new("0123456789", 10);

        limits.MAX_WRITE_QUEUE_BYTES = 15;
        cr_assert_eq(client_send(&client, b, NULL), 0);
        cr_assert_eq(client_send(&client, b, NULL), 0, "the queue was within the cap before it");
        cr_assert_eq(client_send(&client, b, NULL), -ENOBUFS, "the queue is over the cap and nobody asked now");
        cr_assert_eq(client.out_n, 2);
}

/* Busy polling's back-off (busy_poll_record()): the polls of one client at a steady rate (a lock answered and its
 * unlock found, the next lock not; or a ping, never followed in time) must stop polling; saturation, where most
 * polls find input, must not. */

/* Records n polls, the i-th a miss if i % every == every - 1 (every 0: all hits); returns how many of them stopped
 * polling. Polls during a back-off are skipped, as photond skips them. */
static unsigned record_polls(BusyPoll *b, unsigned n, unsigned every, uint64_t *now) {
        unsigned stops = 0;

        for (unsigned i = 0; i < n; i++) {
                *now += 10;
                if (!busy_poll_may_poll(b, *now))
                        continue;
                if (!busy_poll_record(b, every == 0 || i % every != every - 1, *now))
                        stops++;
        }
        return stops;
}

Test(client, busy_poll_stops_after_too_many_misses) {
        BusyPoll b = {};
        uint64_t now = 5000;

        cr_assert(busy_poll_may_poll(&b, now));
        for (unsigned i = 0; i < BUSY_POLL_MAX_MISSES; i++)
                cr_assert(busy_poll_record(&b, false, now), "stopped after %u misses", i + 1);
        cr_assert_not(busy_poll_record(&b, false, now));
        cr_assert_eq(b.backoffs, 1);
        cr_assert_not(busy_poll_may_poll(&b, now + BUSY_POLL_BACKOFF_MIN_USEC - 1));
        cr_assert(busy_poll_may_poll(&b, now + BUSY_POLL_BACKOFF_MIN_USEC));
}

Test(client, busy_poll_hits_keep_it_polling) {
        BusyPoll b = {};
        uint64_t now = 5000;

        /* 1 miss in 4 (a hit ratio of 3/4): at the limit, still polling. */
        cr_assert_eq(record_polls(&b, 10000, 4, &now), 0);
        /* 1 in 8, as 8 lock clients at K=64 missed; 1 in 500, as at K=1 */
        cr_assert_eq(record_polls(&b, 10000, 8, &now), 0);
        cr_assert_eq(record_polls(&b, 10000, 500, &now), 0);
        cr_assert_eq(b.backoffs, 0);
        /* 1 in 3 is too many */
        cr_assert_gt(record_polls(&b, 1000, 3, &now), 0);
}

Test(client, busy_poll_paced_load_backs_off_more_and_more) {
        BusyPoll b = {};
        uint64_t now = 5000, expect = BUSY_POLL_BACKOFF_MIN_USEC;

        /* unlock found, next lock missed: polling stops once the window holds more misses than allowed */
        cr_assert_eq(record_polls(&b, 2 * BUSY_POLL_MAX_MISSES, 2, &now), 0);
        cr_assert_eq(record_polls(&b, 1, 1, &now), 1);

        /* Each probe after a back-off stops at its second miss, and the next back-off is twice as long, up to the
         * cap. */
        for (unsigned i = 0; i < 12; i++) {
                cr_assert_eq(b.resume_at, now + expect, "back-off %u", i + 1);
                now = b.resume_at;
                cr_assert(busy_poll_record(&b, true, now));
                cr_assert(busy_poll_record(&b, false, now));
                cr_assert(busy_poll_record(&b, true, now));
                cr_assert_not(busy_poll_record(&b, false, now));
                expect = MIN(expect * 2, BUSY_POLL_BACKOFF_MAX_USEC);
        }
        cr_assert_eq(expect, BUSY_POLL_BACKOFF_MAX_USEC);

        /* pings: nothing ever found, a probe ends at its second poll */
        now = b.resume_at;
        cr_assert(busy_poll_record(&b, false, now));
        cr_assert_not(busy_poll_record(&b, false, now));
        cr_assert_eq(b.resume_at, now + BUSY_POLL_BACKOFF_MAX_USEC);

        /* A saturating load (1 miss in 8) passes the probe, and a window of polls without a back-off resets it to
         * the shortest. */
        now = b.resume_at;
        cr_assert_eq(record_polls(&b, BUSY_POLL_WINDOW, 8, &now), 0);
        while (busy_poll_record(&b, false, now))
                ;
        cr_assert_eq(b.resume_at, now + BUSY_POLL_BACKOFF_MIN_USEC);
}
