/*
 * openloop: a single-threaded open-loop HTTP/1.1 load generator (epoll, nonblocking sockets,
 * keep-alive), for `make bench` (loadtest/openloop.py drives it; loadtest/install_tools.sh
 * builds it with gcc into build/tools/openloop).
 *
 * Open loop (--rate R): request i is due at start + i/R, whatever the server does, and its
 * latency counts from that scheduled time, not from when it could be written (no coordinated
 * omission). A due request takes an idle keep-alive connection; else, if fewer than
 * --connections are open or opening, a new connection is opened for it; else it waits in a
 * FIFO, and the wait counts. A request not answered within --timeout of its scheduled time is
 * unanswered (its connection is closed); one still in the FIFO then is unanswered too
 * ("queue timeout"). Closed loop (--closed N): N connections, each sending its next request
 * as soon as the previous is answered; latency from the send.
 *
 * Answers are parsed as HTTP/1.1: status line, headers (Content-Length, chunked framing, or
 * the body to the end of the connection; Connection: close is honoured), the body discarded.
 * Latencies go to log-linear histograms (128 linear buckets per power of two of nanoseconds:
 * under 0.8% error, up to ~68 s): one for 2xx answers, one per other status, and one for all
 * non-2xx answers together; and, to tell the generator's own lateness and the wait for a
 * connection apart from the server's time, one of 2xx answers timed from the request's write.
 *
 * Output: one JSON document on stdout (counts, percentiles per status, unanswered by reason,
 * how late the generator itself was in noticing due requests, connections, and its own CPU
 * from getrusage and /proc/self/schedstat, which also counts time spent waiting for a CPU).
 * Exit status 2 for bad usage only; a node that is down is a result (connect errors, and an
 * "error" field saying so), not a failure of the tool.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000LL
#define MS 1000000LL
#define MAX_HEAD (64 * 1024)
#define CHECK_EVERY_NS (5 * MS)

/* ---------- time ---------- */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

/* ---------- histogram: log-linear over nanoseconds ---------- */

#define SUB_BITS 7
#define SUB (1 << SUB_BITS)
#define MAX_EXP 36 /* 2^36 ns = 68.7 s */
#define NBUCKETS (SUB + (MAX_EXP - SUB_BITS + 1) * SUB)

typedef struct {
    uint64_t count;
    int64_t max, sum_us;
    uint32_t b[NBUCKETS];
} hist_t;

static int msb64(uint64_t v) { return 63 - __builtin_clzll(v); }

static int bucket_of(int64_t v) {
    if (v < 0) v = 0;
    if (v < SUB) return (int)v;
    int e = msb64((uint64_t)v);
    if (e > MAX_EXP) return NBUCKETS - 1;
    int shift = e - SUB_BITS;
    return SUB + shift * SUB + (int)((v >> shift) - SUB);
}

/* the middle of a bucket's range */
static double bucket_value(int i) {
    if (i < SUB) return i;
    int shift = (i - SUB) / SUB + 1;
    int64_t lo = (int64_t)(SUB + (i - SUB) % SUB) << (shift - 1);
    int64_t width = (int64_t)1 << (shift - 1);
    return (double)lo + (double)width / 2.0;
}

static void hist_add(hist_t *h, int64_t v) {
    h->b[bucket_of(v)]++;
    h->count++;
    h->sum_us += v / 1000;
    if (v > h->max) h->max = v;
}

static double hist_pct_ms(const hist_t *h, double p) {
    if (!h->count) return NAN;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            double v = bucket_value(i);
            if (v > (double)h->max) v = (double)h->max;
            return v / 1e6;
        }
    }
    return (double)h->max / 1e6;
}

/* ---------- requests, connections ---------- */

typedef struct {
    char *data;
    size_t len;
} req_t;

typedef struct {
    int64_t sched;
    int measured; /* 0 during --warmup */
} due_t;

enum { C_FREE, C_CONNECTING, C_IDLE, C_BUSY };

typedef struct conn {
    int fd, state, idle_pos, want_out, responses;
    int64_t opened_at, sent_ns;
    /* the request in flight */
    due_t due;
    const req_t *req;
    size_t woff;
    /* the answer being read */
    char *rbuf;
    size_t rlen, rcap;
    int head_done, status, close_after, chunked, to_eof, got_bytes;
    int64_t body_left;  /* Content-Length left, or the current chunk's left (+2 for its CRLF) */
    int chunk_state;    /* 0: size line, 1: data, 2: trailers */
} conn_t;

typedef struct {
    /* settings */
    char host[300], port[16], hostport[300], path[2048];
    double rate, duration, warmup, timeout;
    int closed_n, max_conns;
    /* target */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /* bodies */
    req_t *reqs;
    int nreqs, next_req;
    /* schedule */
    int64_t t0, measure_from, end_sched;
    uint64_t total, next_i;
    /* FIFO of due requests waiting for a connection */
    due_t *fifo;
    size_t fifo_head, fifo_len, fifo_cap;
    /* connections */
    conn_t *conns;
    int *free_ids, nfree;
    int *idle, nidle;
    int open, connecting, busy, max_open;
    int ep;
    /* results */
    hist_t *ok_hist, *err_hist, *late_hist; /* 2xx, every other status, lateness */
    hist_t *ok_sent_hist;                    /* 2xx, from the write of the request */
    hist_t *by_status[600];
    uint64_t status_count[600];
    uint64_t scheduled, sent, answered, unanswered_timeout, unanswered_closed, unanswered_connect,
        unanswered_queue, unanswered_bad, waited_at_cap;
    uint64_t late1, late10, conns_opened, connect_errors, closed_by_server, conn_errors;
    int64_t late_max, queue_wait_max, first_send, last_answer;
    int last_connect_errno, ever_connected;
} gen_t;

static gen_t G;

#define USAGE                                                                                                  \
    "usage: openloop --url http://HOST:PORT/PATH (--rate R | --closed N) --duration S\n"                          \
    "       [--warmup S] [--connections N (1024)] [--timeout S (10)] [--method POST]\n"                           \
    "       [-H 'Name: value']... [--body STRING]... [--body-file FILE]... [--bodies FILE (one per line)]\n"

__attribute__((noreturn)) static void die_usage(const char *msg) {
    fprintf(stderr, "openloop: %s\n%s", msg, USAGE);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "openloop: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---------- FIFO ---------- */

static void fifo_push(due_t d) {
    if (G.fifo_len == G.fifo_cap) {
        size_t cap = G.fifo_cap ? G.fifo_cap * 2 : 1024;
        due_t *n = xmalloc(cap * sizeof *n);
        for (size_t k = 0; k < G.fifo_len; k++) n[k] = G.fifo[(G.fifo_head + k) % G.fifo_cap];
        free(G.fifo);
        G.fifo = n;
        G.fifo_cap = cap;
        G.fifo_head = 0;
    }
    G.fifo[(G.fifo_head + G.fifo_len) % G.fifo_cap] = d;
    G.fifo_len++;
}

static due_t fifo_pop(void) {
    due_t d = G.fifo[G.fifo_head];
    G.fifo_head = (G.fifo_head + 1) % G.fifo_cap;
    G.fifo_len--;
    return d;
}

/* ---------- outcomes ---------- */

static void record_answer(conn_t *c, int64_t t) {
    G.answered += c->due.measured;
    if (t > G.last_answer) G.last_answer = t;
    if (!c->due.measured) return;
    int64_t lat = t - c->due.sched;
    int s = c->status;
    if (s < 100 || s > 599) s = 0;
    G.status_count[s]++;
    if (s >= 200 && s < 300) {
        hist_add(G.ok_hist, lat);
        hist_add(G.ok_sent_hist, t - c->sent_ns);
    } else {
        if (!G.by_status[s]) G.by_status[s] = xmalloc(sizeof(hist_t));
        hist_add(G.by_status[s], lat);
        hist_add(G.err_hist, lat);
    }
}

enum { U_TIMEOUT, U_CLOSED, U_CONNECT, U_QUEUE, U_BAD };

static void record_unanswered(due_t d, int why, int64_t t) {
    if (!d.measured) return;
    if (t > G.last_answer) G.last_answer = t;
    switch (why) {
    case U_TIMEOUT: G.unanswered_timeout++; break;
    case U_CLOSED: G.unanswered_closed++; break;
    case U_CONNECT: G.unanswered_connect++; break;
    case U_QUEUE: G.unanswered_queue++; break;
    default: G.unanswered_bad++; break;
    }
}

/* ---------- connections ---------- */

static void idle_remove(conn_t *c) {
    int pos = c->idle_pos;
    if (pos < 0) return;
    int last = G.idle[--G.nidle];
    G.idle[pos] = last;
    G.conns[last].idle_pos = pos;
    c->idle_pos = -1;
}

static void set_events(conn_t *c, int out) {
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(G.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void conn_close(conn_t *c) {
    if (c->state == C_FREE) return;
    if (c->state == C_IDLE) idle_remove(c);
    if (c->state == C_CONNECTING) G.connecting--;
    if (c->state == C_BUSY) G.busy--;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = C_FREE;
    c->rlen = 0;
    G.open--;
    G.free_ids[G.nfree++] = (int)(c - G.conns);
}

static void reset_answer(conn_t *c) {
    c->head_done = c->status = c->close_after = c->chunked = c->to_eof = c->got_bytes = 0;
    c->body_left = 0;
    c->chunk_state = 0;
    c->rlen = 0;
}

static int flush_write(conn_t *c);

/* puts request `d` on connection `c` (connected, idle) and writes what the socket takes */
static void conn_send(conn_t *c, due_t d, int64_t t) {
    c->due = d;
    c->req = &G.reqs[G.next_req];
    G.next_req = (G.next_req + 1) % G.nreqs;
    c->woff = 0;
    c->sent_ns = t;
    c->state = C_BUSY;
    G.busy++;
    reset_answer(c);
    if (d.measured) {
        G.sent++;
        if (!G.first_send) G.first_send = t;
        int64_t waited = t - d.sched;
        if (waited > G.queue_wait_max) G.queue_wait_max = waited;
    }
    flush_write(c);
}

/* a connection that is ready for a request: the oldest waiting one, or back to the idle set */
static void conn_ready(conn_t *c, int64_t t) {
    if (G.fifo_len) {
        conn_send(c, fifo_pop(), t);
        return;
    }
    if (G.closed_n && t < G.end_sched) {
        conn_send(c, (due_t){t, t >= G.measure_from}, t);
        if (c->due.measured) G.scheduled++;
        return;
    }
    c->state = C_IDLE;
    c->idle_pos = G.nidle;
    G.idle[G.nidle++] = (int)(c - G.conns);
    set_events(c, 0);
}

static void connect_failed(int err, int64_t t) {
    G.connect_errors++;
    G.last_connect_errno = err;
    /* the request it was opened for cannot be sent: fail it rather than retry against a node
     * that is down (in the closed loop, the tick reopens connections) */
    if (G.fifo_len > (size_t)G.connecting) record_unanswered(fifo_pop(), U_CONNECT, t);
}

static void conn_open(int64_t t) {
    if (!G.nfree) return;
    int fd = socket(G.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(errno, t);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    G.conns_opened++;
    int r;
    do r = connect(fd, (struct sockaddr *)&G.addr, G.addrlen);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        connect_failed(err, t);
        return;
    }
    conn_t *c = &G.conns[G.free_ids[--G.nfree]];
    memset(c, 0, offsetof(conn_t, rbuf));
    c->fd = fd;
    c->idle_pos = -1;
    c->opened_at = t;
    c->state = C_CONNECTING;
    c->want_out = 1;
    G.open++;
    G.connecting++;
    if (G.open > G.max_open) G.max_open = G.open;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(G.ep, EPOLL_CTL_ADD, fd, &ev);
    if (r == 0) { /* connected at once */
        G.connecting--;
        c->state = C_IDLE;
        G.ever_connected = 1;
        conn_ready(c, t);
    }
}

/* the request in flight on c got no answer: count it, drop the connection */
static void conn_fail(conn_t *c, int why, int64_t t) {
    record_unanswered(c->due, why, t);
    G.conn_errors += (why == U_CLOSED || why == U_BAD);
    conn_close(c);
}

static int flush_write(conn_t *c) {
    while (c->woff < c->req->len) {
        ssize_t n = send(c->fd, c->req->data + c->woff, c->req->len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, 1);
            return 0;
        }
        conn_fail(c, U_CLOSED, now_ns()); /* EPIPE, ECONNRESET: the server closed it */
        return -1;
    }
    set_events(c, 0);
    return 0;
}

/* ---------- reading answers ---------- */

static void consume(conn_t *c, size_t n) {
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

static int parse_head(conn_t *c) {
    char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) return c->rlen >= MAX_HEAD ? -1 : 0;
    *end = 0;
    if (strncmp(c->rbuf, "HTTP/1.", 7) != 0 || c->rlen < 12) return -1;
    int minor = c->rbuf[7] - '0';
    c->status = atoi(c->rbuf + 9);
    if (c->status < 100 || c->status > 599) return -1;
    int have_length = 0;
    c->close_after = (minor == 0); /* HTTP/1.0 closes unless it says keep-alive */
    for (char *line = strstr(c->rbuf, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        char *colon = strchr(line, ':');
        char *eol = strstr(line, "\r\n");
        if (!colon || (eol && colon > eol)) continue;
        size_t name = (size_t)(colon - line);
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (name == 14 && !strncasecmp(line, "content-length", 14)) {
            c->body_left = strtoll(v, NULL, 10);
            have_length = 1;
        } else if (name == 17 && !strncasecmp(line, "transfer-encoding", 17)) {
            c->chunked = strncasecmp(v, "chunked", 7) == 0;
        } else if (name == 10 && !strncasecmp(line, "connection", 10)) {
            if (!strncasecmp(v, "close", 5)) c->close_after = 1;
            else if (!strncasecmp(v, "keep-alive", 10)) c->close_after = 0;
        }
    }
    if (c->status == 204 || c->status == 304 || c->status < 200) {
        c->body_left = 0;
        c->chunked = 0;
    } else if (c->chunked) {
        c->body_left = 0;
        c->chunk_state = 0;
    } else if (!have_length) {
        c->to_eof = 1;
    }
    c->head_done = 1;
    consume(c, (size_t)(end + 4 - c->rbuf));
    return 1;
}

/* 1: the answer is complete, 0: more to read, -1: not HTTP as this reads it */
static int parse_body(conn_t *c) {
    if (c->to_eof) {
        c->rlen = 0;
        return 0;
    }
    if (!c->chunked) {
        size_t take = c->rlen < (size_t)c->body_left ? c->rlen : (size_t)c->body_left;
        c->body_left -= (int64_t)take;
        consume(c, take);
        return c->body_left == 0;
    }
    for (;;) {
        if (c->chunk_state == 1) {
            size_t take = c->rlen < (size_t)c->body_left ? c->rlen : (size_t)c->body_left;
            c->body_left -= (int64_t)take;
            consume(c, take);
            if (c->body_left) return 0;
            c->chunk_state = 0;
            continue;
        }
        char *eol = memmem(c->rbuf, c->rlen, "\r\n", 2);
        if (!eol) return c->rlen >= MAX_HEAD ? -1 : 0;
        size_t linelen = (size_t)(eol - c->rbuf);
        if (c->chunk_state == 2) { /* trailers: up to an empty line */
            consume(c, linelen + 2);
            if (linelen == 0) return 1;
            continue;
        }
        char *stop;
        long long size = strtoll(c->rbuf, &stop, 16);
        if (stop == c->rbuf || size < 0) return -1;
        consume(c, linelen + 2);
        if (size == 0) {
            c->chunk_state = 2;
        } else {
            c->body_left = size + 2; /* its data and the CRLF after it */
            c->chunk_state = 1;
        }
    }
}

static void answer_done(conn_t *c, int64_t t) {
    record_answer(c, t);
    c->responses++;
    c->state = C_IDLE; /* not yet in the idle set: conn_ready decides */
    G.busy--;
    if (c->close_after) {
        G.closed_by_server++;
        conn_close(c);
        return;
    }
    reset_answer(c);
    conn_ready(c, t);
}

static void on_readable(conn_t *c, int64_t t) {
    if (c->rcap - c->rlen < 4096) {
        size_t cap = c->rcap ? c->rcap * 2 : 16384;
        c->rbuf = realloc(c->rbuf, cap);
        if (!c->rbuf) {
            fprintf(stderr, "openloop: out of memory\n");
            exit(1);
        }
        c->rcap = cap;
    }
    ssize_t n;
    do n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { /* end of connection (0) or an error on it */
        if (c->state == C_BUSY && c->head_done && c->to_eof) {
            c->close_after = 1;
            answer_done(c, t);
        } else if (c->state == C_BUSY) {
            conn_fail(c, U_CLOSED, t);
        } else {
            G.closed_by_server++; /* an idle keep-alive connection the server let go */
            conn_close(c);
        }
        return;
    }
    if (c->state != C_BUSY) { /* bytes nobody asked for */
        G.conn_errors++;
        conn_close(c);
        return;
    }
    c->rlen += (size_t)n;
    c->got_bytes = 1;
    if (!c->head_done) {
        int h = parse_head(c);
        if (h < 0) {
            conn_fail(c, U_BAD, t);
            return;
        }
        if (h == 0) return;
    }
    int b = parse_body(c);
    if (b < 0) {
        conn_fail(c, U_BAD, t);
        return;
    }
    if (b == 1) answer_done(c, t);
}

static void on_event(conn_t *c, uint32_t ev, int64_t t) {
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (ev & EPOLLHUP)) {
            conn_close(c);
            connect_failed(err ? err : ECONNRESET, t);
            return;
        }
        G.connecting--;
        G.ever_connected = 1;
        conn_ready(c, t);
        return;
    }
    if (c->state == C_BUSY && (ev & EPOLLOUT) && c->woff < c->req->len) {
        if (flush_write(c) < 0) return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c, t);
}

/* ---------- the schedule ---------- */

static int64_t sched_of(uint64_t i) { return G.t0 + (int64_t)((double)i * (double)NS / G.rate); }

static void dispatch(int64_t t) {
    while (G.fifo_len && G.nidle) {
        conn_t *c = &G.conns[G.idle[G.nidle - 1]];
        idle_remove(c);
        conn_send(c, fifo_pop(), t);
    }
    /* one new connection per request that no opening connection will take */
    while (G.fifo_len > (size_t)G.connecting && G.nfree) conn_open(t);
}

static void release_due(int64_t t) {
    while (G.next_i < G.total) {
        int64_t s = sched_of(G.next_i);
        if (s > t) break;
        due_t d = {s, s >= G.measure_from};
        G.next_i++;
        if (d.measured) {
            G.scheduled++;
            int64_t late = t - s;
            hist_add(G.late_hist, late);
            if (late > MS) G.late1++;
            if (late > 10 * MS) G.late10++;
            if (late > G.late_max) G.late_max = late;
        }
        fifo_push(d);
        dispatch(t);
        if (d.measured && G.fifo_len && !G.nfree) G.waited_at_cap++; /* it waits for a busy one */
    }
}

static void check_timeouts(int64_t t) {
    int64_t limit = (int64_t)(G.timeout * NS);
    while (G.fifo_len && t - G.fifo[G.fifo_head].sched > limit) record_unanswered(fifo_pop(), U_QUEUE, t);
    for (int k = 0; k < G.max_conns; k++) {
        conn_t *c = &G.conns[k];
        if (c->state == C_BUSY && t - c->due.sched > limit) {
            conn_fail(c, U_TIMEOUT, t);
        } else if (c->state == C_CONNECTING && t - c->opened_at > limit) {
            conn_close(c);
            connect_failed(ETIMEDOUT, t);
        }
    }
}

/* ---------- setup ---------- */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "openloop: cannot read %s: %s\n", path, strerror(errno));
        exit(2);
    }
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) exit(1);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

typedef struct {
    char *data;
    size_t len;
} body_t;

static body_t *bodies;
static int nbodies, bodies_cap;

static void add_body(const char *data, size_t len) {
    if (nbodies == bodies_cap) {
        bodies_cap = bodies_cap ? bodies_cap * 2 : 16;
        bodies = realloc(bodies, (size_t)bodies_cap * sizeof *bodies);
        if (!bodies) exit(1);
    }
    bodies[nbodies].data = xmalloc(len + 1);
    memcpy(bodies[nbodies].data, data, len);
    bodies[nbodies++].len = len;
}

static void parse_url(const char *url) {
    if (strncmp(url, "http://", 7) != 0) die_usage("--url must start with http://");
    const char *p = url + 7;
    const char *slash = strchr(p, '/');
    size_t hp = slash ? (size_t)(slash - p) : strlen(p);
    if (!hp || hp >= sizeof G.hostport) die_usage("bad --url");
    memcpy(G.hostport, p, hp);
    G.hostport[hp] = 0;
    snprintf(G.path, sizeof G.path, "%s", slash ? slash : "/");
    const char *colon = strrchr(G.hostport, ':');
    if (colon) {
        size_t hl = (size_t)(colon - G.hostport);
        if (hl >= sizeof G.host) die_usage("bad --url");
        memcpy(G.host, G.hostport, hl);
        G.host[hl] = 0;
        snprintf(G.port, sizeof G.port, "%s", colon + 1);
    } else {
        snprintf(G.host, sizeof G.host, "%s", G.hostport);
        snprintf(G.port, sizeof G.port, "80");
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(G.host, G.port, &hints, &res);
    if (rc) {
        fprintf(stderr, "openloop: cannot resolve %s: %s\n", G.hostport, gai_strerror(rc));
        exit(2);
    }
    memcpy(&G.addr, res->ai_addr, res->ai_addrlen);
    G.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

static void build_requests(const char *method, char **headers, int nheaders) {
    if (!nbodies) add_body("", 0);
    int has_ct = 0;
    size_t hl = 0;
    for (int k = 0; k < nheaders; k++) {
        hl += strlen(headers[k]) + 2;
        if (!strncasecmp(headers[k], "content-type:", 13)) has_ct = 1;
    }
    G.nreqs = nbodies;
    G.reqs = xmalloc((size_t)nbodies * sizeof *G.reqs);
    for (int b = 0; b < nbodies; b++) {
        size_t cap = strlen(method) + strlen(G.path) + strlen(G.hostport) + hl + bodies[b].len + 200;
        char *r = xmalloc(cap);
        int n = snprintf(r, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n%s", method, G.path, G.hostport,
                         has_ct ? "" : "Content-Type: application/json\r\n");
        for (int k = 0; k < nheaders; k++) n += snprintf(r + n, cap - (size_t)n, "%s\r\n", headers[k]);
        n += snprintf(r + n, cap - (size_t)n, "Content-Length: %zu\r\n\r\n", bodies[b].len);
        memcpy(r + n, bodies[b].data, bodies[b].len);
        G.reqs[b].data = r;
        G.reqs[b].len = (size_t)n + bodies[b].len;
    }
}

/* /proc/self/schedstat: ns on a CPU, ns waiting in a run queue */
static void schedstat(int64_t *run, int64_t *wait) {
    *run = *wait = -1;
    FILE *f = fopen("/proc/self/schedstat", "r");
    if (!f) return;
    long long r, w;
    if (fscanf(f, "%lld %lld", &r, &w) == 2) {
        *run = r;
        *wait = w;
    }
    fclose(f);
}

/* ---------- output ---------- */

static void json_num(const char *key, double v, int last) {
    if (isnan(v)) printf("\"%s\": null%s", key, last ? "" : ", ");
    else printf("\"%s\": %.3f%s", key, v, last ? "" : ", ");
}

static void json_hist(const char *key, const hist_t *h, int first) {
    printf("%s\"%s\": {\"count\": %llu, ", first ? "" : ", ", key, (unsigned long long)h->count);
    json_num("p50", hist_pct_ms(h, 50), 0);
    json_num("p90", hist_pct_ms(h, 90), 0);
    json_num("p99", hist_pct_ms(h, 99), 0);
    json_num("p99.9", hist_pct_ms(h, 99.9), 0);
    json_num("max", h->count ? (double)h->max / 1e6 : NAN, 0);
    json_num("mean", h->count ? (double)h->sum_us / 1e3 / (double)h->count : NAN, 1);
    printf("}");
}

int main(int argc, char **argv) {
    const char *url = NULL, *method = "POST";
    char **headers = xmalloc((size_t)argc * sizeof(char *));
    int nheaders = 0;
    G.duration = -1;
    G.timeout = 10;
    G.max_conns = 1024;
    static struct option opts[] = {
        {"url", required_argument, 0, 'u'},      {"rate", required_argument, 0, 'r'},
        {"closed", required_argument, 0, 'c'},   {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},   {"connections", required_argument, 0, 'n'},
        {"timeout", required_argument, 0, 't'},  {"method", required_argument, 0, 'm'},
        {"header", required_argument, 0, 'H'},   {"body", required_argument, 0, 'b'},
        {"body-file", required_argument, 0, 'f'}, {"bodies", required_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "u:r:c:d:w:n:t:m:H:b:f:B:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (o) {
        case 'u': url = optarg; break;
        case 'r': G.rate = strtod(optarg, &end); if (*end || !(G.rate > 0)) die_usage("--rate must be > 0"); break;
        case 'c': G.closed_n = (int)strtol(optarg, &end, 10); if (*end || G.closed_n < 1) die_usage("--closed must be >= 1"); break;
        case 'd': G.duration = strtod(optarg, &end); if (*end || !(G.duration > 0)) die_usage("--duration must be > 0"); break;
        case 'w': G.warmup = strtod(optarg, &end); if (*end || G.warmup < 0) die_usage("--warmup must be >= 0"); break;
        case 'n': G.max_conns = (int)strtol(optarg, &end, 10); if (*end || G.max_conns < 1) die_usage("--connections must be >= 1"); break;
        case 't': G.timeout = strtod(optarg, &end); if (*end || !(G.timeout > 0)) die_usage("--timeout must be > 0"); break;
        case 'm': method = optarg; break;
        case 'H':
            if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n")) die_usage("-H wants 'Name: value'");
            headers[nheaders++] = optarg;
            break;
        case 'b': add_body(optarg, strlen(optarg)); break;
        case 'f': {
            size_t len;
            char *data = read_file(optarg, &len);
            add_body(data, len);
            free(data);
            break;
        }
        case 'B': {
            size_t len;
            char *data = read_file(optarg, &len);
            for (char *line = data; line < data + len;) {
                char *nl = memchr(line, '\n', (size_t)(data + len - line));
                size_t l = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
                if (l && line[l - 1] == '\r') l--;
                if (l) add_body(line, l);
                line += (nl ? (size_t)(nl - line) + 1 : l);
                if (!nl) break;
            }
            free(data);
            if (!nbodies) die_usage("--bodies: the file has no line");
            break;
        }
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument");
    if (!url) die_usage("--url is required");
    if (G.duration <= 0) die_usage("--duration is required");
    if ((G.rate > 0) == (G.closed_n > 0)) die_usage("give one of --rate and --closed");
    if (G.closed_n) G.max_conns = G.closed_n;
    if (G.rate > 0 && G.rate * (G.duration + G.warmup) > 1e9) die_usage("--rate x --duration is too large");
    parse_url(url);
    build_requests(method, headers, nheaders);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY && (rlim_t)G.max_conns + 16 > rl.rlim_cur)
        G.max_conns = (int)rl.rlim_cur - 16; /* said in the output: max_open never exceeds it */

    G.conns = xmalloc((size_t)G.max_conns * sizeof(conn_t));
    G.free_ids = xmalloc((size_t)G.max_conns * sizeof(int));
    G.idle = xmalloc((size_t)G.max_conns * sizeof(int));
    for (int k = G.max_conns - 1; k >= 0; k--) {
        G.conns[k].fd = -1;
        G.conns[k].idle_pos = -1;
        G.free_ids[G.nfree++] = k;
    }
    G.ok_hist = xmalloc(sizeof(hist_t));
    G.late_hist = xmalloc(sizeof(hist_t));
    G.err_hist = xmalloc(sizeof(hist_t));
    G.ok_sent_hist = xmalloc(sizeof(hist_t));
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    if (G.ep < 0) {
        perror("openloop: epoll_create1");
        return 1;
    }

    struct rusage ru0, ru1;
    int64_t run0, wait0, run1, wait1;
    getrusage(RUSAGE_SELF, &ru0);
    schedstat(&run0, &wait0);
    G.t0 = now_ns() + 2 * MS;
    G.measure_from = G.t0 + (int64_t)(G.warmup * NS);
    G.end_sched = G.measure_from + (int64_t)(G.duration * NS);
    G.total = G.rate > 0 ? (uint64_t)llround(G.rate * (G.warmup + G.duration)) : 0;
    if (G.closed_n)
        for (int k = 0; k < G.closed_n; k++) conn_open(now_ns());

    struct epoll_event evs[256];
    int64_t last_check = now_ns(), last_reopen = last_check;
    int64_t limit = (int64_t)(G.timeout * NS);
    for (;;) {
        int64_t t = now_ns();
        if (G.rate > 0) release_due(t);
        if (t - last_check >= CHECK_EVERY_NS) {
            check_timeouts(t);
            last_check = t;
            if (G.closed_n && t < G.end_sched && t - last_reopen >= 10 * MS) { /* replace lost connections */
                last_reopen = t;
                while (G.open < G.closed_n && G.nfree) conn_open(t);
            }
        }
        int sending = G.rate > 0 ? G.next_i < G.total : t < G.end_sched;
        if (!sending && !G.fifo_len && !G.busy && !G.connecting) break;
        if (!sending && G.closed_n && t > G.end_sched + limit + 100 * MS) break; /* safety */
        int64_t wake = last_check + CHECK_EVERY_NS;
        if (G.rate > 0 && G.next_i < G.total) {
            int64_t s = sched_of(G.next_i);
            if (s < wake) wake = s;
        }
        int64_t wait = wake - now_ns();
        if (wait < 0) wait = 0;
        struct timespec ts = {wait / NS, wait % NS};
        int n = epoll_pwait2(G.ep, evs, 256, &ts, NULL);
        if (n < 0 && errno == ENOSYS) n = epoll_wait(G.ep, evs, 256, (int)((wait + MS - 1) / MS));
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("openloop: epoll_wait");
            return 1;
        }
        t = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c->state != C_FREE) on_event(c, evs[k].events, t);
        }
        if (G.fifo_len) dispatch(t);
    }
    int64_t t_end = now_ns();
    for (int k = 0; k < G.max_conns; k++) conn_close(&G.conns[k]);
    getrusage(RUSAGE_SELF, &ru1);
    schedstat(&run1, &wait1);

    double wall = (double)(t_end - G.t0) / NS;
    double user = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double sys = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    uint64_t ok = G.ok_hist->count, unanswered = G.unanswered_timeout + G.unanswered_closed +
                                                   G.unanswered_connect + G.unanswered_queue + G.unanswered_bad;
    double span = G.first_send && G.last_answer > G.first_send ? (double)(G.last_answer - G.first_send) / NS : 0;

    printf("{\"tool\": \"openloop\", \"mode\": \"%s\", \"url\": \"http://%s%s\", ", G.closed_n ? "closed" : "open",
           G.hostport, G.path);
    if (G.closed_n) printf("\"connections\": %d, ", G.closed_n);
    else printf("\"rate\": %.3f, \"connections_cap\": %d, ", G.rate, G.max_conns);
    printf("\"duration_s\": %.3f, \"warmup_s\": %.3f, \"timeout_s\": %.3f, \"bodies\": %d, ", G.duration, G.warmup,
           G.timeout, G.nreqs);
    printf("\"scheduled\": %llu, \"sent\": %llu, \"answered\": %llu, \"ok\": %llu, ", (unsigned long long)G.scheduled,
           (unsigned long long)G.sent, (unsigned long long)G.answered, (unsigned long long)ok);
    json_num("ok_per_s", (double)ok / G.duration, 0);
    json_num("run_s", span, 0);
    printf("\"statuses\": {");
    int first = 1;
    for (int s = 0; s < 600; s++)
        if (G.status_count[s]) {
            printf("%s\"%d\": %llu", first ? "" : ", ", s, (unsigned long long)G.status_count[s]);
            first = 0;
        }
    printf("}, \"latency_ms\": {");
    json_hist("2xx", G.ok_hist, 1);
    if (G.err_hist->count) json_hist("non-2xx", G.err_hist, 0);
    /* not the latency (that counts from the schedule): what is left without the generator's own
     * lateness and the wait for a connection, to tell them apart */
    json_hist("2xx from the send", G.ok_sent_hist, 0);
    char key[8];
    for (int s = 0; s < 600; s++)
        if (G.by_status[s]) {
            snprintf(key, sizeof key, "%d", s);
            json_hist(key, G.by_status[s], 0);
        }
    printf("}, \"unanswered\": {\"total\": %llu, \"timeout\": %llu, \"closed before answer\": %llu, "
           "\"connect error\": %llu, \"queue timeout\": %llu, \"bad response\": %llu}, ",
           (unsigned long long)unanswered, (unsigned long long)G.unanswered_timeout,
           (unsigned long long)G.unanswered_closed, (unsigned long long)G.unanswered_connect,
           (unsigned long long)G.unanswered_queue, (unsigned long long)G.unanswered_bad);
    printf("\"late\": {\"over_1ms\": %llu, \"over_10ms\": %llu, ", (unsigned long long)G.late1,
           (unsigned long long)G.late10);
    json_num("max_ms", (double)G.late_max / 1e6, 0);
    json_num("p50_ms", hist_pct_ms(G.late_hist, 50), 0);
    json_num("p99_ms", hist_pct_ms(G.late_hist, 99), 1);
    printf("}, \"queue\": {\"waited_at_cap\": %llu, ", (unsigned long long)G.waited_at_cap);
    json_num("max_wait_ms", (double)G.queue_wait_max / 1e6, 1);
    printf("}, \"connections_opened\": %llu, \"max_open\": %d, \"connect_errors\": %llu, "
           "\"connection_errors\": %llu, \"closed_by_server\": %llu, ",
           (unsigned long long)G.conns_opened, G.max_open, (unsigned long long)G.connect_errors,
           (unsigned long long)G.conn_errors, (unsigned long long)G.closed_by_server);
    printf("\"cpu\": {\"user_s\": %.3f, \"sys_s\": %.3f, \"wall_s\": %.3f, ", user, sys, wall);
    json_num("own", wall > 0 ? (user + sys) / wall : NAN, 0);
    double demand = run0 >= 0 && run1 >= 0 && wall > 0 ? (double)(run1 - run0 + wait1 - wait0) / 1e9 / wall : NAN;
    json_num("demand", demand, 1); /* on a CPU or waiting for one */
    printf("}");
    if (!G.ever_connected && G.connect_errors)
        printf(", \"error\": \"could not connect to %s: %s\"", G.hostport, strerror(G.last_connect_errno));
    printf("}\n");
    return 0;
}
