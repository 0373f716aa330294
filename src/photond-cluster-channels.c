/* SPDX-License-Identifier: MIT */

/* Cluster mode's channels (photond-cluster-channels.h).
 *
 * Order. Redis runs scripts one at a time, and one subscriber connection gets the messages of every PUBLISH in the
 * order Redis ran them. The publishes of one loop iteration are one script call (a batch, in token order) that
 * takes their eventIds, consecutive, from one counter and PUBLISHes them as one message, so every node receives the
 * cluster's events in eventId order, and puts them into its channels in that order (channels_publish_at()). The
 * publishing node is no exception: its local subscribers get its message when Redis sends it back, in its place
 * among the others. Each node holds one pattern subscription, <prefix>ch:*, from its connect on: a publish on a
 * channel nobody here had subscribed to yet still arrives, so a subscriber that comes later misses nothing that
 * Redis ran after the subscription was confirmed, and a replay can be answered at an exact point of that order
 * (below).
 *
 * Acknowledgement. A client's publish is answered from its batch's reply: its eventId once Redis has run the
 * script, or "Cluster unavailable" (for every publish of the batch) when it could not be sent (not connected, the
 * pending cap) or failed (an error answer, the 2 s timeout, a lost connection). Nothing is delivered here before
 * Redis ran the script; after a timeout the script may still have run, and then its message does arrive (on every
 * node).
 *
 * Self-exclusion. Each publish of this node carries a token (the envelope's); the publishes are kept in a queue in
 * token order until their message is back. The command connection sends them in order and Redis runs them in that
 * order, so the message of token T coming back settles every older one: those will not come (their script failed
 * or never ran).
 *
 * Replays. The replay script reads the prefix's stream and PUBLISHes its answer to this node's replies channel
 * (<prefix>replies:<nodeId>) on the subscriber connection: the answer arrives after every message Redis ran before
 * the script and before every message after it, so the replayed events and the live ones that follow meet without
 * a gap or a repeat. */

#include <assert.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "cluster-util.h"
#include "clock.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "photond-cluster-channels.h"
#include "photond-limits.h"
#include "ratelimit.h"

/* A publish script that Redis runs 3/4 of the command timeout after it was sent (by Redis' clock, as the floor
 * script read it at the connect) refuses to publish: photond gives up at the command timeout and answers "Cluster
 * unavailable", so a message Redis was too late for must not appear anyway. The last quarter covers the way back
 * of the answer. A replay's answer is awaited a command timeout once its script ran. */
/* Own publishes that failed whose channels are told at once (refresh_needed); more: every subscribed key is. */
#define GAP_NAMES_MAX 256

/* The publishes of one loop iteration go to Redis as one call of the publish script (a batch), sent at once when it
 * holds this many publishes or this many bytes of channels and messages (the last publish included): Redis runs
 * the script's fixed costs (TIME, the counter, the caps, PUBLISH) once per batch, and every node receives one
 * message per batch. */
#define PUBLISH_BATCH_MAX 256
#define PUBLISH_BATCH_MAX_BYTES (1024 * 1024)
#define PUBLISH_BATCH_BODY_KEEP (256 * 1024)

/* KEYS: the counter, the counter's birth (the first id this Redis issued or was raised to: a replay from before it
 * cannot know what happened then, after Redis lost its data), then per wildcard prefix the batch touches its
 * stream and its floor. ARGV: the Redis channel of batches (<prefix>ch:), the node id, the stream's cap, the window
 * (ms), the time (Redis' clock, ms) after which it must not publish any more, the number of publishes, the batch's
 * events as every node receives them (cluster_batch_parse()'s form after its header), then per prefix (in the KEYS'
 * order) its events packed for its stream, the index in the batch of its first and of its last event, and their
 * number. The publishes get consecutive eventIds from the batch's first (the i-th: first + i).
 *
 * The node prepares every per-publish string, so that Redis' work per batch does not grow with its publishes: Lua
 * builds no string per publish and makes no call per publish (one XADD per prefix, one PUBLISH). Its cost per
 * publish was its Lua work and its XADD, several times what the bytes cost.
 *
 * A stream entry is "<its first eventId>-0" {l: its last eventId, q: the stream's sequence number of its first
 * event, n: its number of events, e: the events packed, each "<index> <channel length> <message length or
 * -1>\n<channel><message>", b: the batch's first eventId (an event's id is b + index), t: the timestamp}. The floor
 * key holds "<floor> <Q> <N>": every event up to the floor counts as dropped (also the first ones of an entry still
 * kept), Q is the sequence number of the first event kept, N the next one. The window drops whole entries (an
 * entry whose first eventId is out of it goes with all its events: XTRIM MINID, before the batch's entries are
 * added); the count cap stays exact in events (after them): the entries wholly below the last event to go are
 * trimmed, the floor rises to that event's id. So a replay from below the floor knows events are missing. */
static const char publish_source[] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "if now > tonumber(ARGV[5]) then\n"
        "  return redis.error_reply('ERR too late: photond gave up waiting for this publish')\n"
        "end\n"
        "local n = tonumber(ARGV[6])\n"
        "local first = tonumber(redis.call('GET', KEYS[1]) or '0') + 1\n"
        "if now > first then first = now end\n"
        "local firsts = string.format('%d', first)\n"
        "redis.call('SET', KEYS[1], string.format('%d', first + n - 1))\n"
        "redis.call('SETNX', KEYS[2], firsts)\n"
        "local cap = tonumber(ARGV[3])\n"
        "local window = tonumber(ARGV[4])\n"
        "local nows = string.format('%d', now)\n"
        "local cut = now - window\n"
        /* The first entry of list meta (oldest first) for which stop(entry, its id) holds: its index (0-based, or the
         * list's length if none does) and the entry before it (nil if none). Mostly the first or second entry: one
         * entry first, then twice as many each time. */
        "local function entries(meta, stop)\n"
        "  local i, c, prev = 0, 1, nil\n"
        "  while true do\n"
        "    local es = redis.call('LRANGE', meta, i, i + c - 1)\n"
        "    for _, e in ipairs(es) do\n"
        "      if stop(e, tonumber(string.match(e, '^(%d+)'))) then return i, e, prev end\n"
        "      prev = e\n"
        "      i = i + 1\n"
        "    end\n"
        "    if #es < c then return i, nil, prev end\n"
        "    c = c * 2\n"
        "  end\n"
        "end\n"
        "for k = 1, (#KEYS - 2) / 3 do\n"
        "  local s, f, meta = KEYS[3 * k], KEYS[3 * k + 1], KEYS[3 * k + 2]\n"
        "  local a = 4 + 4 * k\n"
        "  local fv = redis.call('GET', f)\n"
        "  local x, y, z = string.match(fv or '0 0 0', '^(%d+) (%d+) (%d+)$')\n"
        "  local F, Q, N = tonumber(x or '0'), tonumber(y or '0'), tonumber(z or '0')\n"
        /* The three keys go together (the list has an element for each entry of the stream; the floor key says
         * which events they hold): one without the others (evicted under maxmemory, deleted by hand) starts the
         * prefix over, every event before this batch counted as dropped. */
        "  local ln = redis.call('LLEN', meta)\n"
        "  if ln ~= redis.call('XLEN', s) or (not fv and ln > 0) or not x or (ln == 0 and Q < N) then\n"
        "    redis.call('DEL', s, meta)\n"
        "    if first - 1 > F then F = first - 1 end\n"
        "    Q, N = 0, 0\n"
        "  end\n"
        /* The oldest entry first (XREVRANGE with an end bound walks the stream: slow). An entry is aged when its
         * id (its first event's) is: all its events go, its last id is the floor. */
        "  local oldest = redis.call('LINDEX', meta, 0)\n"
        "  if oldest and tonumber(string.match(oldest, '^(%d+)')) < cut then\n"
        "    local i, _, aged = entries(meta, function(_, id) return id >= cut end)\n"
        "    local l, q, c = string.match(aged, '^%d+ (%d+) (%d+) (%d+)$')\n"
        "    if tonumber(l) > F then F = tonumber(l) end\n"
        "    if tonumber(q) + tonumber(c) > Q then Q = tonumber(q) + tonumber(c) end\n"
        "    redis.call('LTRIM', meta, i, -1)\n"
        "    redis.call('XTRIM', s, 'MINID', string.format('%d', cut))\n"
        "  end\n"
        "  local ids = string.format('%d', first + tonumber(ARGV[a + 1]))\n"
        "  local id = ids .. '-0'\n"
        "  local l = string.format('%d', first + tonumber(ARGV[a + 2]))\n"
        "  local q = string.format('%d', N)\n"
        "  if ARGV[a] == '' then\n"
        "    redis.call('XADD', s, id, 'l', l, 'q', q, 'n', ARGV[a + 3], 'e', ARGV[7], 'b', firsts, 't', nows, 'f', 'b')\n"
        "  else\n"
        "    redis.call('XADD', s, id, 'l', l, 'q', q, 'n', ARGV[a + 3], 'e', ARGV[a], 'b', firsts, 't', nows, 'f', 'p')\n"
        "  end\n"
        "  redis.call('RPUSH', meta, ids .. ' ' .. l .. ' ' .. q .. ' ' .. ARGV[a + 3])\n"
        "  N = N + tonumber(ARGV[a + 3])\n"
        /* The cap counts events: the last one to go (sequence number N - cap - 1) is found in its entry; the
         * entries before that entry go, the ones of it up to it are below the floor. */
        "  local excess = N - Q - cap\n"
        "  if excess > 0 then\n"
        "    local target = Q + excess - 1\n"
        "    local i, found = entries(meta, function(e) local _, _, q, c = string.match(e, '^(%d+) (%d+) (%d+) (%d+)$')\n"
        "      return tonumber(q) + tonumber(c) > target end)\n"
        "    local last, id0\n"
        "    if found then\n"
        "      local l, q, c\n"
        "      id0, l, q, c = string.match(found, '^(%d+) (%d+) (%d+) (%d+)$')\n"
        "      local j = target - tonumber(q)\n"
        "      id0 = tonumber(id0)\n"
        /* An entry whose ids are consecutive (its batch touched no other prefix: the usual case) is not read. */
        "      if j < 0 or j >= tonumber(c) then\n"
        "      elseif tonumber(l) - id0 + 1 == tonumber(c) then\n"
        "        last = id0 + j\n"
        "      else\n"
        "        local es = redis.call('XRANGE', s, string.format('%d', id0), string.format('%d', id0))\n"
        "        local e = es[1] and es[1][2]\n"
        "        local pos = 1\n"
        "        while e and not last do\n"
        "          local ix, cl, ml, q2 = string.match(e[8], '^(%d+) (%d+) (%-?%d+)\\n()', pos)\n"
        "          if not ix then break end\n"
        "          if j == 0 then last = tonumber(e[10]) + tonumber(ix) break end\n"
        "          ml = tonumber(ml)\n"
        "          if ml < 0 then ml = 0 end\n"
        "          pos = q2 + tonumber(cl) + ml\n"
        "          j = j - 1\n"
        "        end\n"
        "      end\n"
        "    end\n"
        "    if last then\n"
        "      if last > F then F = last end\n"
        "      Q = target + 1\n"
        "      redis.call('LTRIM', meta, i, -1)\n"
        "      redis.call('XTRIM', s, 'MINID', string.format('%d', id0))\n"
        "    else\n"
        /* The list does not hold what the floor says (never written so by a node): start the prefix over with
         * every event up to this batch's counted as dropped, rather than fail every publish from now on. */
        "      redis.call('DEL', s, meta)\n"
        "      F = first + n - 1\n"
        "      Q, N = 0, 0\n"
        "    end\n"
        "  end\n"
        "  redis.call('SET', f, string.format('%d %d %d', F, Q, N), 'PX', 2 * window)\n"
        "  redis.call('PEXPIRE', s, 2 * window)\n"
        "  redis.call('PEXPIRE', meta, 2 * window)\n"
        "end\n"
        "redis.call('PUBLISH', ARGV[1], '4 ' .. firsts .. ' ' .. nows .. ' ' .. ARGV[6] .. ' ' .. ARGV[2])\n"
        "redis.call('PUBLISH', ARGV[1], ARGV[7])\n"
        "return {first, now}\n";

/* KEYS: the counter, the prefix's stream, its floor, the counter's birth. ARGV: this node's replies channel
 * (<prefix>replies:<nodeId>), the token, lastEventId, the channel, "1" for a wildcard key / "0", the window (ms),
 * the answer's byte cap. PUBLISHes the answer (cluster_replay_parse()'s form) to that channel. An entry may hold
 * events on both sides of lastEventId (or of the floor): the one that holds the next event is the last that begins
 * at or below it (XREVRANGE COUNT 1), the rest begin above it (XRANGE), and the entries are split event by event.
 * The rules are the channels core's (channels_replay()):
 * a lastEventId above the last id issued needs a refresh; a refresh comes alone for a channel, with the newer
 * events for a wildcard; an answer over the cap is a refresh alone. */
static const char replay_source[] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local last = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "local from = tonumber(ARGV[3])\n"
        "local window = tonumber(ARGV[6])\n"
        "local wild = ARGV[5] == '1'\n"
        "local want = ARGV[4]\n"
        "local refresh = 0\n"
        "local out = {}\n"
        "local born = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
        "if from > last or (from > 0 and (born == 0 or from < born)) then\n"
        /* Ahead of every id, or from before this Redis' memory began (it lost its data): unknown. */
        "  refresh = 1\n"
        "elseif redis.call('EXISTS', KEYS[2]) == 0 then\n"
        /* No publish on the prefix for two windows (or none ever kept): nothing after a recent lastEventId. */
        "  if from > 0 and from < now - 2 * window then refresh = 1 end\n"
        "else\n"
        "  local floor = tonumber(string.match(redis.call('GET', KEYS[3]) or '0', '^(%d+)'))\n"
        "  local cut = now - window\n"
        "  local aged = redis.call('XRANGE', KEYS[2], '-', string.format('%d', cut - 1))\n"
        "  if #aged > 0 then\n"
        "    local a = tonumber(aged[#aged][2][2])\n"
        "    if a > floor then floor = a end\n"
        "  end\n"
        "  if from < floor then refresh = 1 end\n"
        "  if refresh == 0 or wild then\n"
        /* The events above both; every event up to the floor counts as dropped, even in an entry still kept. */
        "    local lo = from\n"
        "    if floor > lo then lo = floor end\n"
        "    local los = string.format('%d', lo)\n"
        "    local bytes = 0\n"
        "    local cap = tonumber(ARGV[7])\n"
        "    local function scan(e)\n"
        "      local s, pos = e[2][8], 1\n"
        "      local len, b, ts, nul = #s, tonumber(e[2][10]), e[2][12], e[2][14] == 'b'\n"
        "      local pos_i = 0\n"
        "      while pos <= len do\n"
        "        local i, cl, ml, p = string.match(s, '^(%d+) (%d+) (%-?%d+)\\n()', pos)\n"
        /* The batch's own form (f = b) is every event in order, a token first and a NUL after; a prefix's
         * (f = p) its events with their index in the batch. */
        "        local id = b + pos_i\n"
        "        if not nul then id = b + tonumber(i) end\n"
        "        pos_i = pos_i + 1\n"
        "        local mls = ml\n"
        "        cl = tonumber(cl)\n"
        "        ml = tonumber(ml)\n"
        "        if ml < 0 then ml = 0 end\n"
        "        local stop = p + cl + ml\n"
        "        if id > lo and (wild or (cl == #want and string.sub(s, p, p + cl - 1) == want)) then\n"
        "          out[#out + 1] = string.format('%d', id) .. ' ' .. ts .. ' ' .. cl .. ' ' .. mls .. '\\n' ..\n"
        "            string.sub(s, p, stop - 1)\n"
        "          bytes = bytes + cl + ml + 100\n"
        "          if bytes > cap then return false end\n"
        "        end\n"
        "        pos = stop\n"
        "        if nul then pos = pos + 1 end\n"
        "      end\n"
        "      return true\n"
        "    end\n"
        /* The entry holding lo + 1 may begin at or below lo; the ones after it begin above. */
        "    local ok = true\n"
        "    local before = redis.call('XREVRANGE', KEYS[2], los, '-', 'COUNT', 1)\n"
        "    if #before > 0 then ok = scan(before[1]) end\n"
        "    if ok then\n"
        "      for _, e in ipairs(redis.call('XRANGE', KEYS[2], string.format('%d', lo + 1), '+')) do\n"
        "        ok = scan(e)\n"
        "        if not ok then break end\n"
        "      end\n"
        "    end\n"
        "    if not ok then\n"
        "      out = {}\n"
        "      refresh = 1\n"
        "    end\n"
        "  end\n"
        "end\n"
        "redis.call('PUBLISH', ARGV[1], 'R ' .. ARGV[2] .. ' ' .. refresh .. ' ' .. string.format('%d', last) .. '\\n' .. table.concat(out))\n"
        "return 1\n";

/* KEYS: the counter, its birth, the replay format marker. ARGV: an id the counter must not be below (this node's last: its subscribers'
 * lastEventIds must stay below every id to come). When the node is ahead of the counter, what came up to its id is
 * unknown to this Redis: the birth rises to it. Returns Redis' clock (ms), for the publishes' deadlines. */
static const char floor_source[] =
        "local f = tonumber(ARGV[1])\n"
        "local last = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "local born = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
        "if f > last then\n"
        /* This node saw ids this Redis does not know (it lost its data, or the node was alone before). */
        "  last = f\n"
        "  redis.call('SET', KEYS[1], string.format('%d', f))\n"
        "  if f > born then redis.call('SET', KEYS[2], string.format('%d', f)) end\n"
        "elseif (born == 0 or redis.call('GET', KEYS[3]) ~= '4') and last > 0 then\n"
        "  redis.call('SET', KEYS[2], string.format('%d', last))\n"
        "end\n"
        "redis.call('SET', KEYS[3], '4')\n"
        "local t = redis.call('TIME')\n"
        "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

typedef struct PendingPublish PendingPublish;
struct PendingPublish {
        ClusterChannels *cc;
        LIST_FIELDS(PendingPublish, queue);     /* newest first */
        uint64_t token;
        Subscriber *publisher;                  /* NULL: photond's own, or gone */
        ChannelsPublishDone done;               /* NULL: nobody waits, or answered */
        void *done_userdata;
        char *channel;                          /* for an own publish that fails: its subscribers are told */
        size_t channel_len;
        bool own;
        bool answered;                          /* the script's reply (or its failure) came */
        bool settled;                           /* its message came back, or never will */
        bool parked;                            /* not sent yet: the connections are up, their set-up is not */
        bool has_message;                       /* parked: the message to send (a copy) */
        char *message;
        size_t message_len;
};

typedef struct PendingReplay PendingReplay;
struct PendingReplay {
        ClusterChannels *cc;
        LIST_FIELDS(PendingReplay, replays);
        uint64_t token;
        Subscriber *sub;
        ChannelsReplayDone done;                /* NULL once answered */
        void *done_userdata;
        uint64_t deadline;                      /* CLOCK_MONOTONIC µs once the script ran; 0 before */
        bool replied;                           /* the script's reply came (or none will): p may go when answered */
};

struct ClusterChannels {
        sd_event *event;
        Channels *channels;
        char *prefix;
        char *node_id;
        size_t node_id_len;
        char *url;                      /* without its password */
        uint64_t timeout_usec;          /* the command timeout */

        RedisConn *commands, *subscriber;
        RedisScript publish_script, replay_script, floor_script;
        const RedisScript *scripts[4];

        char *counter_key, *born_key, *format_key, *pattern, *node_channel;
        size_t counter_key_len, born_key_len, format_key_len, pattern_len, node_channel_len, chan_prefix_len;

        bool floor_raised;              /* the counter is above this node's last id (since the command connect) */
        int64_t redis_ms;               /* Redis' clock as the floor script read it, */
        uint64_t redis_ms_mono;         /* at this CLOCK_MONOTONIC µs (when its answer came) */
        bool pattern_confirmed;         /* <prefix>ch:* is subscribed (since the subscriber connect) */
        bool node_confirmed;            /* <prefix>replies:<id> is subscribed */

        uint64_t next_token;
        LIST_HEAD(PendingPublish, publishes);
        PendingPublish *oldest;
        size_t n_publishes;
        LIST_HEAD(PendingReplay, replays);
        sd_event_source *replay_timer;

        char **gap_names;
        size_t *gap_lens;
        size_t n_gap;
        bool gap_all;
        sd_event_source *gap_defer;

        unsigned n_parked;              /* publishes waiting for the connections' set-up (cluster_channels_ready()) */
        PendingPublish **batch;         /* the publishes of this loop iteration, in token order, not sent yet */
        size_t n_batch, batch_alloc, batch_bytes;
        sd_event_source *batch_defer;   /* sends them once the iteration's other events were handled */
        char *batch_channel;            /* <prefix>ch:, where the batches are PUBLISHed */
        size_t batch_channel_len;
        char *batch_head;               /* a batch's head, whose events are the next message (protocol 4) */
        Bytes batch_body;               /* the events of the batch being sent, kept for the next (hiredis copies) */
        size_t batch_head_len;
        sd_event_source *park_timer;    /* they wait a command timeout at most */

        RateLimit fail_log;
        uint64_t n_published, n_publish_failed, n_refused, n_received, n_duplicates, n_invalid, n_stale;
        uint64_t n_replays, n_replays_failed, n_batches;
        uint64_t last_event_id;         /* the last message put into the channels */
};

const char* cluster_channels_unready_reason(bool commands_connected, bool floor_raised, bool subscriber_connected,
                                            bool subscribed) {
        if (!commands_connected)
                return "not connected to Redis";
        if (!subscriber_connected)
                return "the subscriber connection to Redis is down";
        if (!floor_raised || !subscribed)
                return "the connection to Redis is being set up";
        return NULL;
}

/* "<why> (<what to do>)": the text after "Cluster unavailable: ". NULL only without memory. */
static char* unavailable_text(ClusterChannels *cc, const char *why) {
        char *t;

        if (asprintf(&t, "%s (check that redis-server is running and reachable at %s; photond reconnects on its "
                     "own)", why ?: "unknown error", cc->url) < 0)
                return NULL;
        return t;
}

static const char* unready_reason(ClusterChannels *cc) {
        return cluster_channels_unready_reason(
                        cc->commands && redis_conn_state(cc->commands) == REDIS_CONN_CONNECTED, cc->floor_raised,
                        cc->subscriber && redis_conn_state(cc->subscriber) == REDIS_CONN_CONNECTED,
                        cc->pattern_confirmed && cc->node_confirmed);
}

bool cluster_channels_ready(ClusterChannels *cc) {
        return !unready_reason(cc);
}

/* ---- the gaps of own publishes that failed ---- */

static void gap_names_clear(ClusterChannels *cc) {
        for (size_t i = 0; i < cc->n_gap; i++)
                free(cc->gap_names[i]);
        cc->n_gap = 0;
        cc->gap_all = false;
}

typedef struct KeyList {
        char **names;
        size_t *lens;
        size_t n, alloc;
} KeyList;

static int key_list_add(KeyList *l, const char *name, size_t len) {
        if (l->n == l->alloc) {
                size_t na = MAX(l->alloc * 2, (size_t) 16);
                char **nn = realloc(l->names, na * sizeof(char*));
                size_t *nl;

                if (!nn)
                        return -ENOMEM;
                l->names = nn;
                nl = realloc(l->lens, na * sizeof(size_t));
                if (!nl)
                        return -ENOMEM;
                l->lens = nl;
                l->alloc = na;
        }
        l->names[l->n] = malloc(len + 1);
        if (!l->names[l->n])
                return -ENOMEM;
        memcpy(l->names[l->n], name, len);
        l->names[l->n][len] = 0;
        l->lens[l->n++] = len;
        return 0;
}

static void key_list_done(KeyList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->names[i]);
        free(l->names);
        free(l->lens);
}

typedef struct GapList {
        KeyList keys;
        size_t n_subscribed;
} GapList;

static int collect_key(const ChannelInfo *info, void *userdata) {
        GapList *g = userdata;

        g->n_subscribed += info->subscribers > 0;
        return key_list_add(&g->keys, info->name, info->name_len);
}

/* Every key: its subscribers get refresh_needed and its buffered events go (channels_gap()), so that what the
 * buffers hold is complete from their oldest event on again (a replay from them, SSE's Last-Event-ID, answers
 * refresh_needed for anything older). */
static void gap_all(ClusterChannels *cc, const char *why) {
        GapList g = {};
        int r;

        r = channels_foreach(cc->channels, collect_key, &g);
        for (size_t i = 0; i < g.keys.n && r >= 0; i++)
                r = channels_gap(cc->channels, g.keys.names[i], g.keys.lens[i]);
        key_list_done(&g.keys);
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to tell the subscribers they may have missed events: %m");
        else if (g.n_subscribed > 0)
                log_info("Cluster: refresh_needed sent on %zu subscribed channel keys (%s).", g.n_subscribed, why);
}

static int on_gap_defer(sd_event_source *s, void *userdata) {
        ClusterChannels *cc = userdata;
        int r = 0;

        if (cc->gap_all)
                gap_all(cc, "photond's own events did not reach Redis");
        else
                for (size_t i = 0; i < cc->n_gap && r >= 0; i++) {
                        const char *name = cc->gap_names[i];
                        size_t len = cc->gap_lens[i], plen = channel_prefix_length(name, len);
                        _cleanup_free_ char *wild = malloc(plen + 3);

                        /* The channel's subscribers and its prefix's wildcard subscribers. */
                        r = channels_gap(cc->channels, name, len);
                        if (r >= 0 && wild && plen < len) {
                                memcpy(wild, name, plen);
                                memcpy(wild + plen, ":*", 3);
                                r = channels_gap(cc->channels, wild, plen + 2);
                        }
                }
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to tell the subscribers they missed events: %m");
        gap_names_clear(cc);
        return 0;
}

/* An own publish (a jobs:*, webhooks:*, system:* event…) did not reach Redis: nobody gets it, and this node's
 * subscribers of its channel are told so, from the loop (not within the publish that failed). */
static void own_publish_lost(ClusterChannels *cc, const char *name, size_t len, const char *why) {
        int r;

        cc->n_publish_failed++;
        if (ratelimit_below(&cc->fail_log, now_usec(CLOCK_MONOTONIC)))
                log_warning("Cluster: an event of photond's own on \"%.*s\" did not reach Redis and was not "
                            "delivered (%s); its subscribers here get refresh_needed.", (int) MIN(len, (size_t) 200),
                            name, why);
        if (!cc->gap_all) {
                if (cc->n_gap >= GAP_NAMES_MAX)
                        cc->gap_all = true;
                else {
                        char **nn = realloc(cc->gap_names, (cc->n_gap + 1) * sizeof(char*));
                        size_t *nl = nn ? realloc(cc->gap_lens, (cc->n_gap + 1) * sizeof(size_t)) : NULL;

                        if (nn)
                                cc->gap_names = nn;
                        if (nl)
                                cc->gap_lens = nl;
                        if (!nn || !nl || !(cc->gap_names[cc->n_gap] = malloc(len + 1)))
                                cc->gap_all = true;
                        else {
                                memcpy(cc->gap_names[cc->n_gap], name, len);
                                cc->gap_names[cc->n_gap][len] = 0;
                                cc->gap_lens[cc->n_gap++] = len;
                        }
                }
        }
        if (!cc->gap_defer) {
                r = sd_event_add_defer(cc->event, &cc->gap_defer, on_gap_defer, cc);
                if (r < 0) {
                        log_warning_errno(r, "Cluster: failed to schedule refresh_needed: %m");
                        return;
                }
        }
        (void) sd_event_source_set_enabled(cc->gap_defer, SD_EVENT_ONESHOT);
}

/* ---- publishing ---- */

static void publish_free(ClusterChannels *cc, PendingPublish *p) {
        if (cc->oldest == p)
                cc->oldest = p->queue_prev;
        LIST_REMOVE(queue, cc->publishes, p);
        cc->n_publishes--;
        free(p->channel);
        free(p->message);
        free(p);
}

static void publish_maybe_free(ClusterChannels *cc, PendingPublish *p) {
        if (p->answered && p->settled)
                publish_free(cc, p);
}

/* The publish is answered: the publisher's eventId, or why it failed. */
static void publish_answer(ClusterChannels *cc, PendingPublish *p, int error, const char *why,
                           uint64_t event_id) {
        ChannelsPublishDone done = p->done;
        _cleanup_free_ char *reason = error < 0 ? unavailable_text(cc, why) : NULL;

        p->answered = true;
        p->done = NULL;
        if (error < 0 && p->own)
                own_publish_lost(cc, p->channel, p->channel_len, why);
        else if (error < 0)
                cc->n_refused++;
        if (done)
                done(p->publisher, error, reason, event_id, p->done_userdata);
}

/* The publishes of one script call: each is answered from its reply. */
typedef struct PublishBatch {
        ClusterChannels *cc;
        size_t n;
        PendingPublish *items[];
} PublishBatch;

static void on_batch_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        PublishBatch *b = userdata;
        ClusterChannels *cc = b->cc;
        char reason[256];
        bool ok;

        ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer > 0;
        if (!ok) {
                if (reply && reply->type == REDIS_REPLY_ERROR)
                        snprintf(reason, sizeof(reason), "Redis answered: %.200s", reply->str);
                else if (reply)
                        snprintf(reason, sizeof(reason), "unexpected answer from Redis");
                else
                        snprintf(reason, sizeof(reason), "no answer from Redis (%.200s)",
                                 redis_conn_last_error(conn) ?: "the connection was lost");
        }
        /* Each item stays until it is answered (publish_maybe_free() wants both), so none goes while this walks. */
        for (size_t i = 0; i < b->n; i++) {
                PendingPublish *p = b->items[i];

                if (ok) {
                        cc->n_published++;
                        publish_answer(cc, p, 0, NULL, (uint64_t) reply->element[0]->integer + i);
                } else {
                        /* Redis ran it and it failed: its message will not come. Timed out or lost: Redis may
                         * still have run it; its message is delivered if it comes. */
                        if (reply && reply->type == REDIS_REPLY_ERROR)
                                p->settled = true;
                        publish_answer(cc, p, -EIO, reason, 0);
                }
        }
        for (size_t i = 0; i < b->n; i++)
                publish_maybe_free(cc, b->items[i]);
        free(b);
}

/* The first n publishes of items failed before they were sent (r, or why). */
static void batch_fail(ClusterChannels *cc, PendingPublish **items, size_t n, int r, const char *why) {
        if (!why)
                why = r == -ENOBUFS ? "too many commands waiting for Redis (PHOTOND_CLUSTER_MAX_PENDING)" :
                        r == -ENOTCONN ? "not connected to Redis" :
                        r == -ENOMEM ? "out of memory" : "the command could not be sent";
        for (size_t i = 0; i < n; i++) {
                items[i]->settled = true;
                publish_answer(cc, items[i], r, why, 0);
        }
        for (size_t i = 0; i < n; i++)
                publish_maybe_free(cc, items[i]);
}

/* "<head> <channel length> <message length or -1>\n<channel><message>", and a NUL after it in the form every node
 * receives (head: the token), none in a stream's (head: the index in the batch). */
static int bytes_add_event(Bytes *b, uint64_t head, const PendingPublish *p, bool nul) {
        char line[3 * 24];
        int n, r;

        n = snprintf(line, sizeof(line), "%" PRIu64 " %zu %" PRIi64 "\n", head, p->channel_len,
                     p->has_message ? (int64_t) p->message_len : (int64_t) -1);
        assert(n > 0 && (size_t) n < sizeof(line));
        r = bytes_put(b, line, (size_t) n);
        if (r >= 0)
                r = bytes_put(b, p->channel, p->channel_len);
        if (r >= 0 && p->has_message)
                r = bytes_put(b, p->message, p->message_len);
        if (r >= 0 && nul)
                r = bytes_put(b, "", 1);
        return r;
}

/* A prefix a batch touches: its events for its stream, the index of its first and last event, their number. */
typedef struct BatchPrefix {
        Bytes events;
        size_t first, last, count;
} BatchPrefix;

static void batch_prefixes_free(BatchPrefix *x, size_t n) {
        for (size_t i = 0; i < n; i++)
                bytes_done(&x[i].events);
        free(x);
}

/* Sends the publishes collected so far as one call of the publish script. */
static void batch_flush(ClusterChannels *cc) {
        _cleanup_free_ PublishBatch *b = NULL;
        _cleanup_free_ const char **argv = NULL;
        _cleanup_free_ size_t *argv_len = NULL, *prefix_of = NULL;
        _cleanup_free_ char *numbers = NULL;
        Bytes *body = &cc->batch_body;
        BatchPrefix *prefixes = NULL;
        KeyList keys = {};
        char cap[24], window[24], deadline[24], count[24];
        size_t n = cc->n_batch, n_args, a = 3, n_prefixes = 0;
        const char *reason;
        int r = 0;

        if (n == 0)
                return;
        if (cc->batch_defer)
                (void) sd_event_source_set_enabled(cc->batch_defer, SD_EVENT_OFF);
        b = malloc(sizeof(PublishBatch) + n * sizeof(PendingPublish*));
        if (!b) {
                /* The array is taken: what the answers' callbacks publish starts a new one. */
                _cleanup_free_ PendingPublish **items = TAKE_PTR(cc->batch);

                cc->n_batch = cc->batch_bytes = cc->batch_alloc = 0;
                batch_fail(cc, items, n, -ENOMEM, NULL);
                return;
        }
        b->cc = cc;
        b->n = n;
        memcpy(b->items, cc->batch, n * sizeof(PendingPublish*));
        cc->n_batch = cc->batch_bytes = 0;
        /* In token order, which the receiving nodes require of a batch (and the settling of older publishes by a
         * newer one's message relies on). They were added in that order unless an answer's callback published
         * while older parked publishes were being released: put that right rather than have every node refuse
         * a batch Redis ran. Usually sorted already, so an insertion sort is a pass. */
        for (size_t i = 1; i < n; i++) {
                PendingPublish *p = b->items[i];
                size_t j = i;

                for (; j > 0 && b->items[j - 1]->token > p->token; j--)
                        b->items[j] = b->items[j - 1];
                b->items[j] = p;
        }

        /* Ready when they were taken; a connection may have gone since, in this iteration. */
        reason = unready_reason(cc);
        if (reason) {
                batch_fail(cc, b->items, n, -ENOTCONN, reason);
                return;
        }

        /* The counter, the birth, each prefix's stream, floor and stream of entries' metadata; then the 7 fixed
         * arguments and 4 per prefix (EVALSHA, the SHA1 and the number of keys before them all). */
        body->size = 0;
        prefixes = new0(BatchPrefix, n);
        prefix_of = new(size_t, n);
        r = prefixes && prefix_of ? key_list_add(&keys, cc->counter_key, cc->counter_key_len) : -ENOMEM;
        if (r >= 0)
                r = key_list_add(&keys, cc->born_key, cc->born_key_len);
        for (size_t i = 0; i < n && r >= 0; i++) {
                PendingPublish *p = b->items[i];
                size_t plen = channel_prefix_length(p->channel, p->channel_len), k;
                BatchPrefix *x;

                /* A batch usually touches few prefixes. */
                for (k = 0; k < n_prefixes; k++) {
                        PendingPublish *q = b->items[prefixes[k].first];

                        if (channel_prefix_length(q->channel, q->channel_len) == plen &&
                            memcmp(q->channel, p->channel, plen) == 0)
                                break;
                }
                x = &prefixes[k];
                if (k == n_prefixes) {
                        static const char *const kinds[] = { "replay4:", "replayfloor4:", "replaymeta4:" };

                        for (size_t j = 0; j < ELEMENTSOF(kinds) && r >= 0; j++) {
                                _cleanup_free_ char *key = NULL;
                                size_t key_len;

                                r = cluster_key(cc->prefix, kinds[j], p->channel, plen, &key, &key_len);
                                if (r >= 0)
                                        r = key_list_add(&keys, key, key_len);
                        }
                        x->first = i;
                        n_prefixes++;
                }
                x->last = i;
                x->count++;
                prefix_of[i] = k;
                if (r >= 0)
                        r = bytes_add_event(body, p->token, p, true);
        }
        /* One prefix (the usual batch): its stream keeps the batch's own form, which Redis already has. */
        for (size_t i = 0; i < n && r >= 0 && n_prefixes > 1; i++)
                r = bytes_add_event(&prefixes[prefix_of[i]].events, i, b->items[i], false);
        n_args = 3 + keys.n + 7 + 4 * n_prefixes;
        if (r >= 0) {
                argv = new(const char*, n_args);
                argv_len = new(size_t, n_args);
                numbers = malloc(n_prefixes * 72);
                if (!argv || !argv_len || !numbers)
                        r = -ENOMEM;
        }
        if (r < 0) {
                key_list_done(&keys);
                batch_prefixes_free(prefixes, n_prefixes);
                batch_fail(cc, b->items, n, r, NULL);
                return;
        }
        for (size_t i = 0; i < keys.n; i++) {
                argv[a] = keys.names[i];
                argv_len[a++] = keys.lens[i];
        }
        snprintf(cap, sizeof(cap), "%" PRIu64, (uint64_t) limits.REPLAY_MAX_EVENTS);
        snprintf(window, sizeof(window), "%" PRIu64, (uint64_t) limits.REPLAY_WINDOW_MS);
        snprintf(deadline, sizeof(deadline), "%" PRIi64, cc->redis_ms +
                 (int64_t) ((now_usec(CLOCK_MONOTONIC) - cc->redis_ms_mono + cc->timeout_usec * 3 / 4) /
                            USEC_PER_MSEC));
        snprintf(count, sizeof(count), "%zu", n);
        argv[a] = cc->batch_channel;
        argv_len[a++] = cc->batch_channel_len;
        argv[a] = cc->node_id;
        argv_len[a++] = cc->node_id_len;
        argv[a] = cap;
        argv_len[a++] = strlen(cap);
        argv[a] = window;
        argv_len[a++] = strlen(window);
        argv[a] = deadline;
        argv_len[a++] = strlen(deadline);
        argv[a] = count;
        argv_len[a++] = strlen(count);
        argv[a] = body->data;
        argv_len[a++] = body->size;
        for (size_t k = 0; k < n_prefixes; k++) {
                BatchPrefix *x = &prefixes[k];
                char *num = numbers + k * 72;

                argv[a] = x->events.data ?: "";
                argv_len[a++] = x->events.size;
                snprintf(num, 24, "%zu", x->first);
                snprintf(num + 24, 24, "%zu", x->last);
                snprintf(num + 48, 24, "%zu", x->count);
                for (size_t j = 0; j < 3; j++) {
                        argv[a] = num + 24 * j;
                        argv_len[a++] = strlen(num + 24 * j);
                }
        }
        assert(a == n_args);
        r = redis_conn_evalv(cc->commands, &cc->publish_script, on_batch_reply, b, (int) keys.n, (int) n_args, argv,
                             argv_len);
        /* Kept for the next batch (no growing it again each time), unless large messages made it large. */
        if (body->alloc > PUBLISH_BATCH_BODY_KEEP)
                bytes_done(body);
        key_list_done(&keys);
        batch_prefixes_free(prefixes, n_prefixes);
        if (r < 0) {
                batch_fail(cc, b->items, n, r, NULL);
                return;
        }
        cc->n_batches++;
        /* The messages' copies are not needed any more (hiredis formatted the command). */
        for (size_t i = 0; i < n; i++) {
                b->items[i]->message = mfree(b->items[i]->message);
                b->items[i]->has_message = false;
        }
        TAKE_PTR(b);
}

void cluster_channels_flush(ClusterChannels *cc) {
        if (cc)
                batch_flush(cc);
}

static int on_batch_defer(sd_event_source *s, void *userdata) {
        batch_flush(userdata);
        return 0;
}

/* p (on p->channel) goes to Redis with the other publishes of this loop iteration; a failure answers it. */
static void publish_send(ClusterChannels *cc, PendingPublish *p, const char *message, size_t message_len) {
        int r;

        if (message && message != p->message) {
                p->message = malloc(message_len + 1);
                if (!p->message) {
                        batch_fail(cc, &p, 1, -ENOMEM, NULL);
                        return;
                }
                memcpy(p->message, message, message_len);
                p->message[message_len] = 0;
                p->message_len = message_len;
        }
        p->has_message = message;
        if (cc->n_batch == cc->batch_alloc) {
                size_t na = MAX(cc->batch_alloc * 2, (size_t) 16);
                PendingPublish **nb = realloc(cc->batch, na * sizeof(PendingPublish*));

                if (!nb) {
                        batch_fail(cc, &p, 1, -ENOMEM, NULL);
                        return;
                }
                cc->batch = nb;
                cc->batch_alloc = na;
        }
        cc->batch[cc->n_batch++] = p;
        cc->batch_bytes += p->channel_len + p->message_len;
        /* Full: it goes now, p in it (a failure's answers may publish again: those go into the next batch,
         * after p, in their order). */
        if (cc->n_batch >= PUBLISH_BATCH_MAX || cc->batch_bytes >= PUBLISH_BATCH_MAX_BYTES) {
                batch_flush(cc);
                return;
        }
        if (cc->n_batch > 1)
                return;
        if (!cc->batch_defer) {
                r = sd_event_add_defer(cc->event, &cc->batch_defer, on_batch_defer, cc);
                if (r >= 0) {
                        (void) sd_event_source_set_description(cc->batch_defer, "cluster-publish-batch");
                        /* After every other pending source: the publishes that arrived together go together. */
                        (void) sd_event_source_set_priority(cc->batch_defer, SD_EVENT_PRIORITY_IDLE);
                }
        } else
                r = sd_event_source_set_enabled(cc->batch_defer, SD_EVENT_ONESHOT);
        if (r < 0)
                /* No way to wait for the others: it goes alone. */
                batch_flush(cc);
}

/* The parked publishes fail (why), or, with why NULL, go out in their order now that the set-up is done. */
static void parked_release(ClusterChannels *cc, const char *why) {
        PendingPublish *p, *prev;

        if (cc->n_parked == 0)
                return;
        if (cc->park_timer)
                (void) sd_event_source_set_enabled(cc->park_timer, SD_EVENT_OFF);
        for (p = cc->oldest; p; p = prev) {
                prev = p->queue_prev;
                if (!p->parked)
                        continue;
                p->parked = false;
                cc->n_parked--;
                if (why) {
                        p->settled = true;
                        publish_answer(cc, p, -ENOTCONN, why, 0);
                        publish_maybe_free(cc, p);
                } else
                        publish_send(cc, p, p->has_message ? p->message : NULL, p->message_len);
        }
}

static int on_park_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ClusterChannels *cc = userdata;

        parked_release(cc, "the connection to Redis is being set up");
        return 0;
}

/* The connections are up and their set-up (the floor, the subscriptions) under way: p waits for it (a command
 * timeout at most) rather than being refused. 0, or -ENOMEM. */
static int publish_park(ClusterChannels *cc, PendingPublish *p, const char *message, size_t message_len) {
        int r;

        if (message) {
                p->message = malloc(message_len + 1);
                if (!p->message)
                        return -ENOMEM;
                memcpy(p->message, message, message_len);
                p->message_len = message_len;
                p->has_message = true;
        }
        if (cc->n_parked == 0) {
                uint64_t at = now_usec(CLOCK_MONOTONIC) + cc->timeout_usec;

                if (!cc->park_timer)
                        r = sd_event_add_time(cc->event, &cc->park_timer, CLOCK_MONOTONIC, at, 0, on_park_timer, cc);
                else if ((r = sd_event_source_set_time(cc->park_timer, at)) >= 0)
                        r = sd_event_source_set_enabled(cc->park_timer, SD_EVENT_ONESHOT);
                if (r < 0)
                        return r;
        }
        p->parked = true;
        cc->n_parked++;
        return 0;
}

/* The set-up may have ended: what waited for it goes. */
static void check_ready(ClusterChannels *cc) {
        if (cluster_channels_ready(cc))
                parked_release(cc, NULL);
}

static bool connections_up(ClusterChannels *cc) {
        return cc->commands && redis_conn_state(cc->commands) == REDIS_CONN_CONNECTED &&
                cc->subscriber && redis_conn_state(cc->subscriber) == REDIS_CONN_CONNECTED;
}

void cluster_channels_publish(ClusterChannels *cc, const char *name, size_t len, const char *message,
                              size_t message_len, Subscriber *publisher, ChannelsPublishDone done,
                              void *done_userdata) {
        const char *reason;
        PendingPublish *p;
        int r;

        reason = unready_reason(cc);
        p = new0(PendingPublish, 1);
        if (!p) {
                r = -ENOMEM;
                reason = "out of memory";
                goto fail;
        }
        *p = (PendingPublish) {
                .cc = cc,
                .token = ++cc->next_token,
                .publisher = publisher,
                .done = done,
                .done_userdata = done_userdata,
                .own = !done,
        };
        p->channel = malloc(len + 1);
        if (!p->channel) {
                free(p);
                r = -ENOMEM;
                reason = "out of memory";
                goto fail;
        }
        memcpy(p->channel, name, len);
        p->channel[len] = 0;
        p->channel_len = len;
        LIST_PREPEND(queue, cc->publishes, p);
        if (!cc->oldest)
                cc->oldest = p;
        cc->n_publishes++;

        if (reason && connections_up(cc) && publish_park(cc, p, message, message_len) >= 0)
                return;
        if (reason) {
                p->settled = true;
                publish_answer(cc, p, -ENOTCONN, reason, 0);
                publish_maybe_free(cc, p);
                return;
        }
        publish_send(cc, p, message, message_len);
        return;

fail:
        if (!done) {
                own_publish_lost(cc, name, len, reason);
                return;
        }
        cc->n_refused++;
        done(publisher, r, reason, 0, done_userdata);         /* out of memory: no more words */
}

void cluster_channels_subscriber_gone(ClusterChannels *cc, Subscriber *s) {
        LIST_FOREACH(queue, p, cc->publishes)
                if (p->publisher == s)
                        p->publisher = NULL;
        LIST_FOREACH(replays, p, cc->replays)
                if (p->sub == s)
                        p->sub = NULL;
}

/* ---- receiving ---- */

/* An own message came back: the publisher (if still there) does not get it; older publishes never will. True
 * if it was one of this process' publishes under way. */
static bool own_message(ClusterChannels *cc, uint64_t token, Subscriber **ret_exclude) {
        PendingPublish *p, *prev;
        bool found = false;

        *ret_exclude = NULL;
        for (p = cc->oldest; p && p->token <= token; p = prev) {
                prev = p->queue_prev;
                if (p->token == token) {
                        *ret_exclude = p->publisher;
                        found = true;
                }
                p->settled = true;
                publish_maybe_free(cc, p);
        }
        return found;
}

/* One event of another node's or this one's, on name (len bytes), into the channels. own: the envelope's node
 * id is this node's. */
static void deliver_event(ClusterChannels *cc, const char *name, size_t len, const ClusterEnvelope *envelope,
                          bool own_node) {
        const ClusterEnvelope e = *envelope;
        const char *text;
        size_t text_len;
        Subscriber *exclude = NULL;
        bool own;
        int r;

        own = own_node && own_message(cc, e.token, &exclude);
        if (e.event_id <= cc->last_event_id) {
                /* One publish reaches a node once per matching subscription: with one pattern that is once, but
                 * the check costs nothing. */
                cc->n_duplicates++;
                return;
        }

        if (e.message_len > limits.MAX_MESSAGE_BYTES) {
                /* This node's cap, before any parse: another node's may be larger. */
                cc->n_invalid++;
                return;
        }
        /* Redis is a boundary: the channels send what they are given as it is, so a message must be what a local
         * publish vouches for, one JSON value without whitespace. Another node's text is json-c's compact print: it
         * is checked in place, not parsed and printed again. A publish of this process under way was vouched for
         * when it was published (another node under the same id, or an earlier process, is checked as any other). */
        if (e.message && !own && !json_text_is_compact_value(e.message, e.message_len, JSON_TEXT_MAX_DEPTH)) {
                cc->n_invalid++;
                return;
        }
        text = e.message;
        text_len = e.message ? e.message_len : 0;

        cc->last_event_id = e.event_id;
        r = channels_publish_at(cc->channels, name, len, text, text_len, exclude, e.event_id, e.timestamp);
        if (r == -ESTALE) {
                /* An id not above what this node issued before it joined (its state.json mark): the counter was
                 * raised at the connect, so this is a message Redis ran before that. Its subscribers are told. */
                cc->n_stale++;
                (void) channels_gap(cc->channels, name, len);
                return;
        }
        if (r < 0) {
                cc->n_invalid++;
                log_debug_errno(r, "Cluster: a message from %.*s was not published here: %m", (int) e.node_id_len,
                                e.node_id);
                return;
        }
        cc->n_received++;
}

static void deliver_batch(ClusterChannels *cc, ClusterBatch *b) {
        ClusterBatchEvent be;
        bool own_node = b->node_id_len == cc->node_id_len && memcmp(b->node_id, cc->node_id, b->node_id_len) == 0;

        while (cluster_batch_next(b, &be) > 0)
                deliver_event(cc, be.channel, be.channel_len, &(const ClusterEnvelope) {
                                .event_id = be.event_id,
                                .timestamp = b->timestamp,
                                .token = be.token,
                                .node_id = b->node_id,
                                .node_id_len = b->node_id_len,
                                .message = be.message,
                                .message_len = be.message_len,
                        }, own_node);
}

static void deliver(ClusterChannels *cc, const char *rchannel, size_t rchannel_len, const char *payload,
                    size_t payload_len) {
        ClusterEnvelope e;
        ClusterBatch b;

        if (rchannel_len < cc->chan_prefix_len || memcmp(rchannel, cc->prefix, cc->chan_prefix_len - 3) != 0 ||
            memcmp(rchannel + cc->chan_prefix_len - 3, "ch:", 3) != 0) {
                cc->n_invalid++;
                return;
        }
        /* A batch's head (protocol 4), on <prefix>ch: itself; its events come next. A head has no line feed, events
         * always have one: so whatever came before, this is a head, and a head that came before it lost its
         * events (a stranger's PUBLISH cannot make the next real batch's head be taken for events). */
        if (rchannel_len == cc->batch_channel_len && payload_len > 0 && payload[0] == '4' &&
            !memchr(payload, '\n', payload_len)) {
                if (cc->batch_head) {
                        cc->n_invalid++;
                        gap_all(cc, "a batch's events did not come");
                }
                cc->batch_head = mfree(cc->batch_head);
                if (cluster_batch_parse_head(payload, payload_len, &b) < 0) {
                        cc->n_invalid++;
                        return;
                }
                cc->batch_head = malloc(payload_len);
                if (!cc->batch_head) {
                        log_oom();
                        gap_all(cc, "out of memory for a batch");
                        return;
                }
                memcpy(cc->batch_head, payload, payload_len);
                cc->batch_head_len = payload_len;
                return;
        }
        if (cc->batch_head) {
                /* The events of the head before: the publish script PUBLISHes both, and nothing runs between. A
                 * pair that does not make a batch lost one: every subscriber may have missed events. */
                _cleanup_free_ char *head = TAKE_PTR(cc->batch_head);

                if (rchannel_len != cc->batch_channel_len ||
                    cluster_batch_parse_head(head, cc->batch_head_len, &b) < 0 ||
                    cluster_batch_set_events(&b, payload, payload_len) < 0) {
                        cc->n_invalid++;
                        gap_all(cc, "a malformed batch");
                        return;
                }
                deliver_batch(cc, &b);
                return;
        }
        if (payload_len > 0 && payload[0] == '3') {
                /* A batch of protocol 3: on <prefix>ch: itself, head and events in one message. */
                if (rchannel_len != cc->batch_channel_len || cluster_batch_parse(payload, payload_len, &b) < 0) {
                        cc->n_invalid++;
                        return;
                }
                deliver_batch(cc, &b);
                return;
        }
        /* One publish (version 2, as photond sent them before batches): on <prefix>ch:<channel>. */
        if (cluster_envelope_parse(payload, payload_len, &e) < 0) {
                cc->n_invalid++;
                return;
        }
        deliver_event(cc, rchannel + cc->chan_prefix_len, rchannel_len - cc->chan_prefix_len, &e,
                      e.node_id_len == cc->node_id_len && memcmp(e.node_id, cc->node_id, e.node_id_len) == 0);
}

/* ---- replays ---- */

static void replay_free(ClusterChannels *cc, PendingReplay *p) {
        LIST_REMOVE(replays, cc->replays, p);
        free(p);
}

/* Answers the replay (r); p stays until the script's reply came, which needs it. */
static void replay_finish(ClusterChannels *cc, PendingReplay *p, const ChannelsReplayed *r) {
        ChannelsReplayDone done = p->done;
        Subscriber *sub = p->sub;
        void *ud = p->done_userdata;

        p->done = NULL;
        p->deadline = 0;
        if (p->replied)
                replay_free(cc, p);
        done(sub, r, ud);
}

static void replay_fail(ClusterChannels *cc, PendingReplay *p, const char *why) {
        _cleanup_free_ char *reason = unavailable_text(cc, why);

        cc->n_replays_failed++;
        replay_finish(cc, p, &(const ChannelsReplayed) { .error = -EIO, .reason = reason ?: why });
}

static void replay_fail_all(ClusterChannels *cc, const char *reason) {
        PendingReplay *p, *next;

        for (p = cc->replays; p; p = next) {
                next = p->replays_next;
                if (p->done)
                        replay_fail(cc, p, reason);
        }
}

static void replay_timer_update(ClusterChannels *cc);

static int on_replay_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ClusterChannels *cc = userdata;
        PendingReplay *p, *next;

        for (p = cc->replays; p; p = next) {
                next = p->replays_next;
                if (p->done && p->deadline > 0 && p->deadline <= usec)
                        replay_fail(cc, p, "the replay's answer did not come from Redis in time");
        }
        replay_timer_update(cc);
        return 0;
}

static void replay_timer_update(ClusterChannels *cc) {
        uint64_t next = UINT64_MAX;
        int r;

        LIST_FOREACH(replays, p, cc->replays)
                if (p->done && p->deadline > 0)
                        next = MIN(next, p->deadline);
        if (next == UINT64_MAX) {
                if (cc->replay_timer)
                        (void) sd_event_source_set_enabled(cc->replay_timer, SD_EVENT_OFF);
                return;
        }
        if (!cc->replay_timer) {
                r = sd_event_add_time(cc->event, &cc->replay_timer, CLOCK_MONOTONIC, next, 0, on_replay_timer, cc);
                if (r < 0)
                        log_warning_errno(r, "Cluster: failed to arm the replay timer: %m");
                return;
        }
        (void) sd_event_source_set_time(cc->replay_timer, next);
        (void) sd_event_source_set_enabled(cc->replay_timer, SD_EVENT_ONESHOT);
}

static void on_replay_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        PendingReplay *p = userdata;
        ClusterChannels *cc = p->cc;
        char reason[256];

        p->replied = true;
        if (!p->done) {
                /* Answered already (its answer overtook the reply, or it failed). */
                replay_free(cc, p);
                return;
        }
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
                /* It ran: its answer is on its way on the subscriber connection. */
                p->deadline = now_usec(CLOCK_MONOTONIC) + cc->timeout_usec;
                replay_timer_update(cc);
                return;
        }
        if (reply && reply->type == REDIS_REPLY_ERROR)
                snprintf(reason, sizeof(reason), "Redis answered: %.200s", reply->str);
        else
                snprintf(reason, sizeof(reason), "no answer from Redis (%.200s)",
                         redis_conn_last_error(conn) ?: "the connection was lost");
        replay_fail(cc, p, reason);
}

static void replay_answer(ClusterChannels *cc, const char *payload, size_t payload_len) {
        _cleanup_free_ ChannelEvent *events = NULL;
        _cleanup_free_ char **names = NULL;
        ClusterReplayEvent e = {};
        size_t n = 0, alloc = 0;
        PendingReplay *p = NULL;
        ClusterReplay rp;
        int r;

        if (cluster_replay_parse(payload, payload_len, &rp) < 0) {
                cc->n_invalid++;
                return;
        }
        LIST_FOREACH(replays, q, cc->replays)
                if (q->done && q->token == rp.token) {
                        p = q;
                        break;
                }
        if (!p)
                return;         /* failed meanwhile (its reply timed out) */

        while ((r = cluster_replay_next(&rp, &e)) > 0) {
                if (n == alloc) {
                        size_t na = MAX(alloc * 2, (size_t) 16);
                        ChannelEvent *ne = realloc(events, na * sizeof(ChannelEvent));
                        char **nn;

                        if (!ne) {
                                r = -ENOMEM;
                                break;
                        }
                        events = ne;
                        nn = realloc(names, na * sizeof(char*));
                        if (!nn) {
                                r = -ENOMEM;
                                break;
                        }
                        names = nn;
                        alloc = na;
                }
                /* The channel as JSON, as the channels' lines hold it. The message is the text this node or
                 * another vouched for when it was published; a replay sends it as it is. */
                {
                        _cleanup_(json_object_putp) struct json_object *o =
                                json_object_new_string_len(e.channel, (int) e.channel_len);
                        const char *t;
                        size_t tl;

                        t = o ? json_object_to_json_string_length(o, JSON_FORMAT_FLAGS, &tl) : NULL;
                        names[n] = t ? strndup(t, tl) : NULL;
                        if (!names[n]) {
                                r = -ENOMEM;
                                break;
                        }
                        events[n] = (ChannelEvent) {
                                .id = e.event_id,
                                .timestamp = e.timestamp,
                                .channel_json = names[n],
                                .channel_json_len = tl,
                                .message_json = e.message,
                                .message_json_len = e.message_len,
                        };
                        n++;
                }
        }

        if (r < 0)
                replay_fail(cc, p, r == -ENOMEM ? "out of memory" : "a malformed answer from Redis");
        else {
                cc->n_replays++;
                replay_finish(cc, p, &(const ChannelsReplayed) {
                                .refresh_needed = rp.refresh_needed,
                                .events = events,
                                .n_events = n,
                        });
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        replay_timer_update(cc);
}

void cluster_channels_replay(ClusterChannels *cc, const char *name, size_t len, int64_t last_event_id,
                             Subscriber *s, ChannelsReplayDone done, void *done_userdata) {
        _cleanup_free_ char *stream = NULL, *floor = NULL;
        size_t stream_len, floor_len, plen = channel_prefix_length(name, len);
        char token[24], from[24], window[24], cap[24];
        bool wild = len >= 2 && name[len - 2] == ':' && name[len - 1] == '*' && plen == len - 2;
        const char *reason = unready_reason(cc);
        PendingReplay *p;
        int r;

        if (reason) {
                _cleanup_free_ char *text = unavailable_text(cc, reason);

                cc->n_replays_failed++;
                done(s, &(const ChannelsReplayed) { .error = -ENOTCONN, .reason = text ?: reason }, done_userdata);
                return;
        }
        /* The publishes taken before it go before it, as they would without batches. */
        batch_flush(cc);
        p = new0(PendingReplay, 1);
        if (!p) {
                done(s, &(const ChannelsReplayed) { .error = -ENOMEM, .reason = "out of memory" }, done_userdata);
                return;
        }
        *p = (PendingReplay) {
                .cc = cc,
                .token = ++cc->next_token,
                .sub = s,
                .done = done,
                .done_userdata = done_userdata,
        };
        LIST_PREPEND(replays, cc->replays, p);

        r = cluster_key(cc->prefix, "replay4:", name, plen, &stream, &stream_len);
        if (r >= 0)
                r = cluster_key(cc->prefix, "replayfloor4:", name, plen, &floor, &floor_len);
        if (r >= 0) {
                snprintf(token, sizeof(token), "%" PRIu64, p->token);
                snprintf(from, sizeof(from), "%" PRIi64, MAX(last_event_id, (int64_t) 0));
                snprintf(window, sizeof(window), "%" PRIu64, (uint64_t) limits.REPLAY_WINDOW_MS);
                snprintf(cap, sizeof(cap), "%" PRIu64, (uint64_t) limits.MAX_WRITE_QUEUE_BYTES);
                r = redis_conn_eval(cc->commands, &cc->replay_script, on_replay_reply, p, 4, 11,
                                    (const char *[]) { cc->counter_key, stream, floor, cc->born_key, cc->node_channel,
                                                       token, from, name, wild ? "1" : "0", window, cap },
                                    (const size_t[]) { cc->counter_key_len, stream_len, floor_len, cc->born_key_len,
                                                       cc->node_channel_len, strlen(token), strlen(from), len, 1,
                                                       strlen(window), strlen(cap) });
        }
        if (r < 0) {
                p->replied = true;
                replay_fail(cc, p, r == -ENOBUFS ? "too many commands waiting for Redis (the cap is 65536)" :
                                   "the command could not be sent");
        }
}

/* ---- the connections ---- */

static void on_floor_reply(RedisConn *conn, redisReply *reply, void *userdata) {
        ClusterChannels *cc = userdata;

        if (reply && reply->type == REDIS_REPLY_INTEGER) {
                cc->redis_ms = reply->integer;
                cc->redis_ms_mono = now_usec(CLOCK_MONOTONIC);
                cc->floor_raised = true;
                check_ready(cc);
        }
        else
                log_warning("Cluster: raising the eventId counter failed: %s.",
                            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer");
}

void cluster_channels_commands_connected(ClusterChannels *cc) {
        char floor[24];
        int r;

        cc->floor_raised = false;
        snprintf(floor, sizeof(floor), "%" PRIu64, MAX(channels_last_event_id(cc->channels), cc->last_event_id));
        r = redis_conn_eval(cc->commands, &cc->floor_script, on_floor_reply, cc, 3, 4,
                            (const char *[]) { cc->counter_key, cc->born_key, cc->format_key, floor },
                            (const size_t[]) { cc->counter_key_len, cc->born_key_len, cc->format_key_len,
                                               strlen(floor) });
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to send the eventId floor: %m");
}

void cluster_channels_commands_disconnected(ClusterChannels *cc) {
        cc->floor_raised = false;
        parked_release(cc, "not connected to Redis");
}

void cluster_channels_subscriber_connected(ClusterChannels *cc) {
        int r;

        cc->pattern_confirmed = cc->node_confirmed = false;
        r = redis_conn_subscribe(cc->subscriber, 2, (const char *[]) { "PSUBSCRIBE", cc->pattern },
                                 (const size_t[]) { 10, cc->pattern_len });
        if (r >= 0)
                r = redis_conn_subscribe(cc->subscriber, 2, (const char *[]) { "SUBSCRIBE", cc->node_channel },
                                         (const size_t[]) { 9, cc->node_channel_len });
        if (r < 0)
                log_warning_errno(r, "Cluster: failed to subscribe in Redis: %m");
}

void cluster_channels_subscriber_disconnected(ClusterChannels *cc) {
        cc->pattern_confirmed = cc->node_confirmed = false;
        cc->batch_head = mfree(cc->batch_head);
        parked_release(cc, "the subscriber connection to Redis is down");
        /* The messages of the publishes under way will not come on this connection. */
        for (PendingPublish *p = cc->oldest, *prev; p; p = prev) {
                prev = p->queue_prev;
                p->settled = true;
                publish_maybe_free(cc, p);
        }
        replay_fail_all(cc, "the subscriber connection to Redis was lost");
}

void cluster_channels_push(ClusterChannels *cc, redisReply *reply) {
        redisReply *kind, *ch, *payload;

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING)
                return;
        kind = reply->element[0];
        if (streq(kind->str, "pmessage") && reply->elements == 4) {
                ch = reply->element[2];
                payload = reply->element[3];
                if (ch->type == REDIS_REPLY_STRING && payload->type == REDIS_REPLY_STRING)
                        deliver(cc, ch->str, ch->len, payload->str, payload->len);
        } else if (streq(kind->str, "message") && reply->elements == 3) {
                payload = reply->element[2];
                if (payload->type == REDIS_REPLY_STRING)
                        replay_answer(cc, payload->str, payload->len);
        } else if (streq(kind->str, "psubscribe") ||
                   (streq(kind->str, "subscribe") && reply->element[1]->type == REDIS_REPLY_STRING &&
                    reply->element[1]->len == cc->node_channel_len &&
                    memcmp(reply->element[1]->str, cc->node_channel, cc->node_channel_len) == 0)) {
                /* (Another part's SUBSCRIBE, the heartbeat's, is not this node's replies channel.) */
                bool was_ready = cluster_channels_ready(cc);

                if (streq(kind->str, "psubscribe"))
                        cc->pattern_confirmed = true;
                else
                        cc->node_confirmed = true;
                if (cc->pattern_confirmed && kind->str[0] == 'p')
                        /* Whatever Redis ran before this point never came here: every key with subscribers
                         * gets refresh_needed, at the first connect too (a subscriber kept across a restart, or
                         * one that came before Redis did). From here on every message comes. */
                        gap_all(cc, "the subscriber connection to Redis was set up");
                if (!was_ready && cluster_channels_ready(cc))
                        log_info("Cluster: node %s receives the cluster's messages.", cc->node_id);
                check_ready(cc);
        }
}

/* ---- status ---- */

int cluster_channels_add_status(ClusterChannels *cc, struct json_object *o) {
        int r;

        if ((r = json_add_bool(o, "ready", cluster_channels_ready(cc))) < 0 ||
            (r = json_add_int64(o, "redisSubscriptions", cc->pattern_confirmed + cc->node_confirmed)) < 0 ||
            (r = json_add_int64(o, "pendingPublishes", (int64_t) cc->n_publishes)) < 0 ||
            (r = json_add_int64(o, "published", (int64_t) cc->n_published)) < 0 ||
            (r = json_add_int64(o, "publishBatches", (int64_t) cc->n_batches)) < 0 ||
            (r = json_add_int64(o, "publishRefused", (int64_t) cc->n_refused)) < 0 ||
            (r = json_add_int64(o, "publishFailed", (int64_t) cc->n_publish_failed)) < 0 ||
            (r = json_add_int64(o, "received", (int64_t) cc->n_received)) < 0 ||
            (r = json_add_int64(o, "duplicates", (int64_t) cc->n_duplicates)) < 0 ||
            (r = json_add_int64(o, "stale", (int64_t) cc->n_stale)) < 0 ||
            (r = json_add_int64(o, "invalid", (int64_t) cc->n_invalid)) < 0 ||
            (r = json_add_int64(o, "replays", (int64_t) cc->n_replays)) < 0 ||
            (r = json_add_int64(o, "replaysFailed", (int64_t) cc->n_replays_failed)) < 0 ||
            (r = json_add_int64(o, "lastEventId", (int64_t) cc->last_event_id)) < 0)
                return r;
        return 0;
}

/* ---- lifecycle ---- */

const RedisScript* const* cluster_channels_scripts(ClusterChannels *cc) {
        return cc->scripts;
}

void cluster_channels_set_connections(ClusterChannels *cc, RedisConn *commands, RedisConn *subscriber) {
        cc->commands = commands;
        cc->subscriber = subscriber;
}

void cluster_channels_connections_gone(ClusterChannels *cc) {
        cc->commands = cc->subscriber = NULL;
}

int cluster_channels_new(const ClusterChannelsConfig *config, ClusterChannels **ret) {
        _cleanup_(cluster_channels_freep) ClusterChannels *cc = NULL;
        _cleanup_free_ char *chans = NULL;
        size_t chans_len;
        int r;

        cc = new0(ClusterChannels, 1);
        if (!cc)
                return -ENOMEM;
        cc->event = sd_event_ref(config->event);
        cc->channels = config->channels;
        cc->fail_log = (RateLimit) { .interval = 10 * USEC_PER_SEC, .burst = 5 };
        /* Tokens of an earlier process under the same node id must not meet this one's. */
        cc->next_token = now_usec(CLOCK_REALTIME);
        cc->prefix = strdup(config->prefix);
        cc->node_id = strdup(config->node_id);
        cc->url = strdup(config->url_redacted);
        cc->timeout_usec = config->command_timeout_usec ?: REDIS_DEFAULT_COMMAND_TIMEOUT_USEC;
        if (!cc->prefix || !cc->node_id || !cc->url)
                return -ENOMEM;
        cc->node_id_len = strlen(cc->node_id);
        cc->chan_prefix_len = strlen(cc->prefix) + 3;

        if ((r = redis_script_init(&cc->publish_script, publish_source)) < 0 ||
            (r = redis_script_init(&cc->replay_script, replay_source)) < 0 ||
            (r = redis_script_init(&cc->floor_script, floor_source)) < 0)
                return r;
        cc->scripts[0] = &cc->publish_script;
        cc->scripts[1] = &cc->replay_script;
        cc->scripts[2] = &cc->floor_script;

        if ((r = cluster_key(cc->prefix, "eventid", NULL, 0, &cc->counter_key, &cc->counter_key_len)) < 0 ||
            (r = cluster_key(cc->prefix, "eventid:born", NULL, 0, &cc->born_key, &cc->born_key_len)) < 0 ||
            (r = cluster_key(cc->prefix, "replayformat", NULL, 0, &cc->format_key, &cc->format_key_len)) < 0 ||
            (r = cluster_key(cc->prefix, "replies:", cc->node_id, cc->node_id_len, &cc->node_channel,
                             &cc->node_channel_len)) < 0 ||
            (r = cluster_key(cc->prefix, "ch:", NULL, 0, &cc->batch_channel, &cc->batch_channel_len)) < 0 ||
            (r = cluster_key(cc->prefix, "ch:", NULL, 0, &chans, &chans_len)) < 0 ||
            (r = cluster_glob_escape(chans, chans_len, &cc->pattern, &cc->pattern_len)) < 0)
                return r;
        {
                char *pat = realloc(cc->pattern, cc->pattern_len + 2);

                if (!pat)
                        return -ENOMEM;
                cc->pattern = pat;
                cc->pattern[cc->pattern_len++] = '*';
                cc->pattern[cc->pattern_len] = 0;
        }
        *ret = TAKE_PTR(cc);
        return 0;
}

ClusterChannels* cluster_channels_free(ClusterChannels *cc) {
        if (!cc)
                return NULL;
        while (cc->oldest) {
                PendingPublish *p = cc->oldest;

                p->settled = true;
                if (!p->answered)
                        publish_answer(cc, p, -ECANCELED, "photond is stopping", 0);
                publish_free(cc, p);
        }
        replay_fail_all(cc, "photond is stopping");
        while (cc->replays)
                replay_free(cc, cc->replays);
        gap_names_clear(cc);
        free(cc->gap_names);
        free(cc->gap_lens);
        sd_event_source_disable_unref(cc->gap_defer);
        sd_event_source_disable_unref(cc->replay_timer);
        sd_event_source_disable_unref(cc->park_timer);
        sd_event_source_disable_unref(cc->batch_defer);
        free(cc->batch);
        free(cc->batch_channel);
        free(cc->batch_head);
        bytes_done(&cc->batch_body);
        sd_event_unref(cc->event);
        free(cc->counter_key);
        free(cc->born_key);
        free(cc->format_key);
        free(cc->pattern);
        free(cc->node_channel);
        free(cc->prefix);
        free(cc->node_id);
        free(cc->url);
        return mfree(cc);
}
