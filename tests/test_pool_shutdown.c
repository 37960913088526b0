/* test_pool_shutdown.c - pool shutdown: drain runs every queued job and what they submit, cancel notifies queued jobs once and lets running ones finish, 500 random-point shutdown cycles, shutdown racing wait_idle, submits and another shutdown. */
#include "testutil.h"

/* Set on threads that call fut_pool_shutdown / fut_pool_free: the only
 * threads besides pool threads where fn(job, ECANCELED) may run. */
static _Thread_local bool shutdown_caller;

/* ------------------------------------------------------------------------
 * A set of jobs with per-job counters. Slots [0, n) are parents, submitted
 * from outside the pool; slot n + i is parent i's child, which parent i
 * submits, to the other lane, when it runs (every child_every-th parent).
 * ---------------------------------------------------------------------- */

typedef struct jset jset;

typedef struct sjob {
    fut_pool_job job;
    unsigned idx;
    jset *set;
} sjob;

struct jset {
    fut_pool *pool;
    unsigned n;            /* parents */
    int mode;              /* the shutdown mode that will be used */
    unsigned child_every;  /* parent i has a child if i % child_every == 0; 0: none */
    unsigned blocking_every; /* parent i is on the blocking lane if i % blocking_every == 1; 0: none */
    int force_lane;        /* -1, or every parent on this lane */
    sjob *jobs;            /* 2n */
    atomic_int *ran;       /* 2n: fn(job, 0) calls */
    atomic_int *cancelled; /* 2n: fn(job, ECANCELED) calls */
    atomic_int *accepted;  /* 2n: 1 if fut_pool_submit returned 0 */
    atomic_int *child_rc;  /* n: rc of the child's submit, -1 if not tried */
    atomic_int bad;        /* calls with another status */
    atomic_int wrong_thread; /* ECANCELED calls on an unexpected thread */
};

static int jset_lane(const jset *s, unsigned idx)
{
    if (idx >= s->n) /* a child: the other lane than its parent */
        return 1 - jset_lane(s, idx - s->n);
    if (s->force_lane >= 0)
        return s->force_lane;
    if (s->blocking_every && idx % s->blocking_every == 1)
        return FUT_LANE_BLOCKING;
    return FUT_LANE_COMPUTE;
}

static void sjob_fn(fut_pool_job *job, int status)
{
    sjob *j = TU_CONTAINER_OF(job, sjob, job);
    jset *s = j->set;
    unsigned i = j->idx;

    if (status == ECANCELED) {
        if (!tu_on_pool_thread() && !shutdown_caller)
            atomic_fetch_add(&s->wrong_thread, 1);
        atomic_fetch_add(&s->cancelled[i], 1);
        return;
    }
    if (status != 0) {
        atomic_fetch_add(&s->bad, 1);
        return;
    }
    atomic_fetch_add(&s->ran[i], 1);
    if (i < s->n && s->child_every && i % s->child_every == 0) {
        unsigned c = s->n + i;
        int rc = fut_pool_submit(s->pool, jset_lane(s, c), &s->jobs[c].job, sjob_fn);
        /* Set accepted before anything can observe the child's fate. */
        atomic_store(&s->child_rc[i], rc);
        if (rc == 0)
            atomic_store(&s->accepted[c], 1);
        /* In drain mode a running job may still submit. */
        if (s->mode == FUT_POOL_DRAIN)
            TU_WCHECK_EQ(rc, 0);
        else
            TU_WCHECK(rc == 0 || rc == ESHUTDOWN);
    }
}

static void jset_init(jset *s, fut_pool *p, unsigned n, int mode)
{
    memset(s, 0, sizeof *s);
    s->pool = p;
    s->n = n;
    s->mode = mode;
    s->force_lane = -1;
    s->jobs = calloc(2 * (size_t)n + 1, sizeof *s->jobs);
    s->ran = calloc(2 * (size_t)n + 1, sizeof *s->ran);
    s->cancelled = calloc(2 * (size_t)n + 1, sizeof *s->cancelled);
    s->accepted = calloc(2 * (size_t)n + 1, sizeof *s->accepted);
    s->child_rc = calloc((size_t)n + 1, sizeof *s->child_rc);
    ck_assert(s->jobs && s->ran && s->cancelled && s->accepted && s->child_rc);
    for (unsigned i = 0; i < 2 * n; i++) {
        s->jobs[i].idx = i;
        s->jobs[i].set = s;
    }
    for (unsigned i = 0; i < n; i++)
        atomic_store(&s->child_rc[i], -1);
}

static void jset_destroy(jset *s)
{
    free(s->jobs);
    free(s->ran);
    free(s->cancelled);
    free(s->accepted);
    free(s->child_rc);
}

static int jset_submit(jset *s, unsigned i)
{
    int rc = fut_pool_submit(s->pool, jset_lane(s, i), &s->jobs[i].job, sjob_fn);
    if (rc == 0)
        atomic_store(&s->accepted[i], 1);
    return rc;
}

/* Totals of a finished set. */
typedef struct jtotals {
    uint64_t accepted, ran, cancelled;
} jtotals;

/* Every accepted job was called exactly once (drain: it ran); every job
 * not accepted was never called. ctx names the cycle in messages. */
static jtotals jset_check(jset *s, const char *ctx)
{
    jtotals t = { 0, 0, 0 };
    ck_assert_msg(atomic_load(&s->bad) == 0, "%s: %d calls with a status not 0/ECANCELED", ctx,
                  atomic_load(&s->bad));
    ck_assert_msg(atomic_load(&s->wrong_thread) == 0,
                  "%s: %d ECANCELED calls neither on a pool thread nor on the shutdown caller", ctx,
                  atomic_load(&s->wrong_thread));
    for (unsigned i = 0; i < 2 * s->n; i++) {
        int r = atomic_load(&s->ran[i]), c = atomic_load(&s->cancelled[i]);
        int acc = atomic_load(&s->accepted[i]);
        if (acc) {
            TU_REQUIRE(r + c == 1, "%s: job %u (%s, %s lane): ran %d, cancelled %d", ctx, i,
                          i < s->n ? "parent" : "child", tu_lane_name(jset_lane(s, i)), r, c);
            if (s->mode == FUT_POOL_DRAIN)
                TU_REQUIRE(r == 1, "%s: drain mode but job %u was cancelled", ctx, i);
        } else {
            TU_REQUIRE(r + c == 0, "%s: job %u was not accepted but ran %d, cancelled %d", ctx,
                          i, r, c);
        }
        t.accepted += (uint64_t)acc;
        t.ran += (uint64_t)r;
        t.cancelled += (uint64_t)c;
    }
    /* A parent that ran submitted its child (drain mode: successfully). */
    for (unsigned i = 0; i < s->n; i++) {
        bool has_child = s->child_every && i % s->child_every == 0;
        int rc = atomic_load(&s->child_rc[i]);
        if (has_child && atomic_load(&s->ran[i]) == 1) {
            if (s->mode == FUT_POOL_DRAIN)
                TU_REQUIRE(rc == 0, "%s: drain mode, child submit from job %u returned %d", ctx, i, rc);
            else
                TU_REQUIRE(rc == 0 || rc == ESHUTDOWN, "%s: child submit from job %u returned %d",
                              ctx, i, rc);
        } else {
            TU_REQUIRE(rc == -1, "%s: job %u did not run but submitted", ctx, i);
        }
    }
    return t;
}

/* The pool's stats agree with the counters, and no thread is left. */
static void check_stats_after_shutdown(fut_pool *p, const jtotals *t, uint64_t extra_ran,
                                       uint64_t extra_cancelled, const char *ctx)
{
    fut_pool_stats c = tu_stats(p, FUT_LANE_COMPUTE), b = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_msg(c.completed + b.completed == t->ran + extra_ran,
                  "%s: stats completed %llu + %llu, counted %llu", ctx,
                  (unsigned long long)c.completed, (unsigned long long)b.completed,
                  (unsigned long long)(t->ran + extra_ran));
    ck_assert_msg(c.cancelled + b.cancelled == t->cancelled + extra_cancelled,
                  "%s: stats cancelled %llu + %llu, counted %llu", ctx,
                  (unsigned long long)c.cancelled, (unsigned long long)b.cancelled,
                  (unsigned long long)(t->cancelled + extra_cancelled));
    ck_assert_msg(c.threads == 0 && b.threads == 0, "%s: threads left after shutdown: %u + %u", ctx,
                  c.threads, b.threads);
    ck_assert_msg(c.queued == 0 && b.queued == 0 && c.running == 0 && b.running == 0,
                  "%s: queued %llu/%llu running %llu/%llu after shutdown", ctx,
                  (unsigned long long)c.queued, (unsigned long long)b.queued,
                  (unsigned long long)c.running, (unsigned long long)b.running);
}

/* ------------------------------------------------------------------------
 * Gated shutdown: workers of a lane are held in gate jobs, 10,000 jobs
 * queue behind them, then the pool is shut down. An opener thread probes
 * with submits until they fail with ESHUTDOWN (so shutdown has begun with
 * everything still queued) and only then opens the gate.
 * ---------------------------------------------------------------------- */

#define NQUEUED 10000
#define NGATES 2

typedef struct gate_job {
    fut_pool_job job;
    tu_gate *gate;
    atomic_int ran;      /* fn(job, 0) */
    atomic_int finished; /* fn returned from the gate */
    atomic_int other;    /* any other status */
} gate_job;

static void gate_job_fn(fut_pool_job *job, int status)
{
    gate_job *g = TU_CONTAINER_OF(job, gate_job, job);
    if (status != 0) {
        atomic_fetch_add(&g->other, 1);
        return;
    }
    atomic_fetch_add(&g->ran, 1);
    tu_gate_wait(g->gate, TU_WAIT_MS);
    atomic_store(&g->finished, 1);
}

typedef struct probe_job {
    fut_pool_job job;
    atomic_int *ran;
    atomic_int *cancelled;
} probe_job;

static void probe_job_fn(fut_pool_job *job, int status)
{
    probe_job *pj = TU_CONTAINER_OF(job, probe_job, job);
    if (status == 0)
        atomic_fetch_add(pj->ran, 1);
    else if (status == ECANCELED)
        atomic_fetch_add(pj->cancelled, 1);
    else
        TU_WCHECK(!"probe job: bad status");
    free(pj);
}

typedef struct opener {
    fut_pool *pool;
    int lane;
    tu_gate *gate;
    atomic_int probes_accepted;
    atomic_int probes_ran;
    atomic_int probes_cancelled;
    int last_rc;
} opener;

static void *opener_main(void *arg)
{
    opener *o = arg;
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);
    for (;;) {
        probe_job *pj = malloc(sizeof *pj);
        int rc;
        TU_WCHECK(pj != NULL);
        pj->ran = &o->probes_ran;
        pj->cancelled = &o->probes_cancelled;
        rc = fut_pool_submit(o->pool, o->lane, &pj->job, probe_job_fn);
        o->last_rc = rc;
        if (rc == 0) {
            atomic_fetch_add(&o->probes_accepted, 1);
        } else {
            free(pj);
            TU_WCHECK_EQ(rc, ESHUTDOWN);
            break;
        }
        if (tu_now_ns() > end) {
            tu_wfail(__FILE__, __LINE__, "submits never failed with ESHUTDOWN");
            break;
        }
        tu_sleep_ms(1);
    }
    /* Shutdown has begun; nothing of the pool is touched after this. */
    tu_gate_open(o->gate);
    return NULL;
}

/* Fills a lane with gate jobs, one at a time so each is surely running
 * (a worker may take a batch of jobs at once). */
static void hold_lane(fut_pool *p, int lane, tu_gate *gate, gate_job *g, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        memset(&g[k], 0, sizeof g[k]);
        g[k].gate = gate;
        ck_assert_int_eq(fut_pool_submit(p, lane, &g[k].job, gate_job_fn), 0);
        ck_assert_msg(tu_gate_wait_waiters(gate, k + 1, TU_WAIT_MS),
                      "gate job %u never started on the %s lane", k, tu_lane_name(lane));
    }
}

/* Hold lane, queue NQUEUED jobs behind it (each submits a child when it
 * runs), shut down in mode, by fut_pool_free if use_free. */
static void gated_shutdown(int lane, int mode, bool use_free)
{
    fut_pool *p = tu_pool_new(NGATES, NGATES, 0);
    tu_gate gate;
    gate_job g[NGATES];
    opener o;
    pthread_t th;
    jset s;
    jtotals t;
    char ctx[64];

    snprintf(ctx, sizeof ctx, "%s lane, %s%s", tu_lane_name(lane),
             mode == FUT_POOL_DRAIN ? "drain" : "cancel", use_free ? " by fut_pool_free" : "");
    shutdown_caller = true;
    tu_gate_init(&gate);
    hold_lane(p, lane, &gate, g, NGATES);

    jset_init(&s, p, NQUEUED, mode);
    s.force_lane = lane;
    s.child_every = 1;
    for (unsigned i = 0; i < NQUEUED; i++)
        TU_REQUIRE(jset_submit(&s, i) == 0, "submit %u failed", i);
    /* The lane's threads are all held: nothing has run. */
    for (unsigned i = 0; i < NQUEUED; i++)
        TU_REQUIRE(atomic_load(&s.ran[i]) + atomic_load(&s.cancelled[i]) == 0,
                   "job %u was called while the lane was held", i);
    if (!use_free) {
        fut_pool_stats st = tu_stats(p, lane);
        ck_assert_uint_eq(st.queued, NQUEUED);
        ck_assert_uint_eq(st.completed, 0);
    }

    memset(&o, 0, sizeof o);
    o.pool = p;
    o.lane = lane;
    o.gate = &gate;
    ck_assert_int_eq(pthread_create(&th, NULL, opener_main, &o), 0);
    if (use_free)
        ck_assert_int_eq(fut_pool_free(p), 0);
    else
        ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
    /* Returned after every pool thread exited: the gate jobs finished. */
    for (unsigned k = 0; k < NGATES; k++) {
        ck_assert_int_eq(atomic_load(&g[k].ran), 1);
        ck_assert_int_eq(atomic_load(&g[k].finished), 1);
        ck_assert_int_eq(atomic_load(&g[k].other), 0);
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(o.last_rc, ESHUTDOWN);
    TU_ASSERT_NO_WFAIL();

    t = jset_check(&s, ctx);
    if (mode == FUT_POOL_DRAIN) {
        /* Every queued job ran, and so did every child it submitted. */
        ck_assert_uint_eq(t.ran, 2 * NQUEUED);
        ck_assert_uint_eq(t.cancelled, 0);
        ck_assert_int_eq(atomic_load(&o.probes_ran), atomic_load(&o.probes_accepted));
        ck_assert_int_eq(atomic_load(&o.probes_cancelled), 0);
    } else {
        /* All were queued when shutdown began: every one cancelled, once. */
        ck_assert_uint_eq(t.ran, 0);
        ck_assert_uint_eq(t.cancelled, NQUEUED);
        ck_assert_int_eq(atomic_load(&o.probes_cancelled), atomic_load(&o.probes_accepted));
        ck_assert_int_eq(atomic_load(&o.probes_ran), 0);
    }
    if (!use_free) {
        uint64_t probes = (uint64_t)atomic_load(&o.probes_accepted);
        check_stats_after_shutdown(p, &t, NGATES + (mode == FUT_POOL_DRAIN ? probes : 0),
                                   mode == FUT_POOL_CANCEL ? probes : 0, ctx);
        ck_assert_int_eq(fut_pool_free(p), 0);
        /* Freeing a shut-down pool notifies nothing again. */
        jset_check(&s, ctx);
    }
    jset_destroy(&s);
    tu_gate_destroy(&gate);
}

START_TEST(test_drain_gated)
{
    gated_shutdown(_i, FUT_POOL_DRAIN, false);
}
END_TEST

/* _i: bit 0 the lane held; bit 1: shut down with fut_pool_free. */
START_TEST(test_cancel_gated)
{
    gated_shutdown(_i & 1, FUT_POOL_CANCEL, (_i & 2) != 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * The required stress: shutdown at a random point with 0..10,000 jobs
 * queued, both modes, 500 cycles (10 loop iterations x 50), some cycles on
 * both lanes, some submitting from another thread while shutdown runs.
 * ---------------------------------------------------------------------- */

#define CYCLES_PER_ITER 50
#define MAX_JOBS 10000

typedef struct submitter {
    jset *set;
    atomic_uint progress;  /* parents submitted so far (accepted or not) */
    unsigned stopped_at;   /* first parent refused, or n */
    int refused_rc;
    int after_rc;          /* rc of one more submit after the refusal */
} submitter;

static void *submitter_main(void *arg)
{
    submitter *sb = arg;
    jset *s = sb->set;
    unsigned i;
    sb->refused_rc = 0;
    sb->after_rc = 0;
    for (i = 0; i < s->n; i++) {
        int rc = jset_submit(s, i);
        atomic_store(&sb->progress, i + 1);
        if (rc != 0) {
            sb->refused_rc = rc;
            /* Once refused, refused for good. */
            if (i + 1 < s->n)
                sb->after_rc = jset_submit(s, i + 1);
            else
                sb->after_rc = ESHUTDOWN;
            break;
        }
    }
    sb->stopped_at = i;
    return NULL;
}

static uint64_t stress_seed(void)
{
    const char *e = getenv("FUT_TEST_SEED");
    return e ? strtoull(e, NULL, 0) : 20240601u;
}

static void one_cycle(unsigned cycle, tu_rng *rng)
{
    int mode = cycle % 2 ? FUT_POOL_CANCEL : FUT_POOL_DRAIN;
    bool threaded = (cycle / 2) % 2 == 1;  /* submit from a thread while shutting down */
    bool mixed = (cycle / 4) % 2 == 1;     /* both lanes */
    /* fut_pool_free may not race other calls on the pool, so only when
     * no other thread submits. */
    bool use_free = mode == FUT_POOL_CANCEL && !threaded && (cycle / 8) % 2 == 1;
    unsigned n = tu_rng_upto(rng, MAX_JOBS);
    fut_pool *p = tu_pool_new(2, 3, 0);
    jset s;
    jtotals t;
    char ctx[160];
    submitter sb;
    pthread_t th;

    if (getenv("FUT_TEST_VERBOSE"))
        fprintf(stderr, "mode %d threaded %d mixed %d free %d n %u: ", mode, threaded, mixed, use_free, n);
    snprintf(ctx, sizeof ctx, "cycle %u (seed %llu): %s, %s, %s, %u jobs", cycle,
             (unsigned long long)stress_seed(), mode == FUT_POOL_DRAIN ? "drain" : use_free ? "free" : "cancel",
             threaded ? "threaded submit" : "submit then shutdown", mixed ? "both lanes" : "compute lane", n);
    jset_init(&s, p, n, mode);
    s.child_every = 1 + tu_rng_upto(rng, 7);
    s.blocking_every = mixed ? 3 : 0;

    if (!threaded) {
        for (unsigned i = 0; i < n; i++)
            TU_REQUIRE(jset_submit(&s, i) == 0, "%s: submit %u failed", ctx, i);
        /* A random point: right away, or after a short while. */
        switch (tu_rng_upto(rng, 3)) {
        case 0: break;
        case 1: sched_yield(); break;
        case 2: usleep((useconds_t)tu_rng_upto(rng, 300)); break;
        default: {
            bool ok;
            unsigned want = tu_rng_upto(rng, n / 2); /* at least n / 2 are compute jobs */
            TU_POLL(ok, tu_stats(p, FUT_LANE_COMPUTE).completed >= want, 1000);
            (void)ok;
        }
        }
    } else {
        unsigned k = tu_rng_upto(rng, n);
        uint64_t end = tu_deadline_ms(TU_WAIT_MS);
        memset(&sb, 0, sizeof sb);
        sb.set = &s;
        atomic_init(&sb.progress, 0);
        ck_assert_int_eq(pthread_create(&th, NULL, submitter_main, &sb), 0);
        while (atomic_load(&sb.progress) < k && tu_now_ns() < end)
            sched_yield();
    }
    if (use_free)
        ck_assert_int_eq(fut_pool_free(p), 0);
    else
        ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
    if (threaded) {
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        if (sb.stopped_at < n) {
            ck_assert_msg(sb.refused_rc == ESHUTDOWN, "%s: submit refused with %d", ctx, sb.refused_rc);
            ck_assert_msg(sb.after_rc == ESHUTDOWN, "%s: submit after a refusal returned %d", ctx,
                          sb.after_rc);
        }
    }
    TU_ASSERT_NO_WFAIL();
    t = jset_check(&s, ctx);
    if (!use_free) {
        check_stats_after_shutdown(p, &t, 0, 0, ctx);
        ck_assert_int_eq(fut_pool_free(p), 0);
        jset_check(&s, ctx);
    }
    if (mode == FUT_POOL_DRAIN)
        ck_assert_uint_eq(t.ran, t.accepted);
    jset_destroy(&s);
}

START_TEST(test_shutdown_random)
{
    tu_rng rng;
    shutdown_caller = true;
    tu_rng_seed(&rng, stress_seed() + (uint64_t)_i);
    for (unsigned c = 0; c < CYCLES_PER_ITER; c++) {
        uint64_t t0 = tu_now_ns();
        one_cycle((unsigned)_i * CYCLES_PER_ITER + c, &rng);
        if (getenv("FUT_TEST_VERBOSE"))
            fprintf(stderr, "cycle %u: %.1f ms\n", (unsigned)_i * CYCLES_PER_ITER + c, (tu_now_ns() - t0) / 1e6);
    }
}
END_TEST

/* ------------------------------------------------------------------------
 * Shutdown racing other calls
 * ---------------------------------------------------------------------- */

typedef struct waiter {
    fut_pool *pool;
    int rc;
    atomic_int started;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    shutdown_caller = true; /* a helping waiter may notify ECANCELED too */
    atomic_store(&w->started, 1);
    w->rc = fut_pool_wait_idle(w->pool);
    return NULL;
}

static bool join_within(pthread_t th, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(th, NULL, &ts) == 0;
}

/* A thread blocked in fut_pool_wait_idle returns (0 or ESHUTDOWN) when the
 * pool is shut down under it. _i is the mode. Blocking lane, so the waiter
 * cannot run the jobs itself. */
START_TEST(test_wait_idle_vs_shutdown)
{
    int mode = _i;
    fut_pool *p = tu_pool_new(1, NGATES, 0);
    tu_gate gate;
    gate_job g[NGATES];
    waiter w;
    opener o;
    pthread_t wt, ot;
    jset s;
    bool ok;

    shutdown_caller = true;
    tu_gate_init(&gate);
    hold_lane(p, FUT_LANE_BLOCKING, &gate, g, NGATES);
    jset_init(&s, p, 1000, mode);
    s.force_lane = FUT_LANE_BLOCKING;
    for (unsigned i = 0; i < s.n; i++)
        TU_REQUIRE(jset_submit(&s, i) == 0, "submit %u failed", i);

    memset(&w, 0, sizeof w);
    w.pool = p;
    w.rc = -1;
    ck_assert_int_eq(pthread_create(&wt, NULL, waiter_main, &w), 0);
    TU_POLL(ok, atomic_load(&w.started) == 1, 5000 * TU_SLOW);
    ck_assert(ok);
    tu_sleep_ms(20); /* let it block; the test holds either way */

    memset(&o, 0, sizeof o);
    o.pool = p;
    o.lane = FUT_LANE_BLOCKING;
    o.gate = &gate;
    ck_assert_int_eq(pthread_create(&ot, NULL, opener_main, &o), 0);
    ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
    ck_assert_int_eq(pthread_join(ot, NULL), 0);
    ck_assert_msg(join_within(wt, TU_WAIT_MS), "fut_pool_wait_idle hangs after shutdown");
    ck_assert_msg(w.rc == 0 || w.rc == ESHUTDOWN, "wait_idle returned %d", w.rc);
    jset_check(&s, "wait_idle vs shutdown");
    ck_assert_int_eq(fut_pool_free(p), 0);
    jset_destroy(&s);
    tu_gate_destroy(&gate);
}
END_TEST

/* A compute job that, once running, waits (bounded) until the pool is
 * shutting down: it probes with submits until one fails with ESHUTDOWN. */
typedef struct until_shutdown {
    fut_pool_job job;
    fut_pool *pool;
    atomic_int started;
    atomic_int probes_accepted, probes_ran, probes_cancelled;
    int last_rc;
} until_shutdown;

static void until_shutdown_fn(fut_pool_job *job, int status)
{
    until_shutdown *u = TU_CONTAINER_OF(job, until_shutdown, job);
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);

    TU_WCHECK_EQ(status, 0);
    atomic_store(&u->started, 1);
    for (;;) {
        probe_job *pj = malloc(sizeof *pj);
        int rc;
        TU_WCHECK(pj != NULL);
        pj->ran = &u->probes_ran;
        pj->cancelled = &u->probes_cancelled;
        rc = fut_pool_submit(u->pool, FUT_LANE_COMPUTE, &pj->job, probe_job_fn);
        u->last_rc = rc;
        if (rc != 0) {
            free(pj);
            break;
        }
        atomic_fetch_add(&u->probes_accepted, 1);
        if (tu_now_ns() > end) {
            tu_wfail(__FILE__, __LINE__, "submits never failed with ESHUTDOWN");
            break;
        }
        tu_sleep_ms(1);
    }
}

/* A thread in fut_pool_wait_idle runs compute jobs itself. Here it holds a
 * batch (the workers are held by gates) whose first job waits until a
 * cancel-mode shutdown has begun. The rest of that batch must still be
 * notified where the header says ECANCELED calls happen (a pool thread,
 * the helping waiter, or the shutdown caller), and all of them before
 * fut_pool_shutdown returns. */
START_TEST(test_cancel_while_waiter_holds_batch)
{
    fut_pool *p = tu_pool_new(NGATES, 0, 0);
    tu_gate gate;
    gate_job g[NGATES];
    until_shutdown u;
    waiter w;
    opener o;
    pthread_t wt, ot;
    jset s;
    bool ok;

    shutdown_caller = true;
    tu_gate_init(&gate);
    hold_lane(p, FUT_LANE_COMPUTE, &gate, g, NGATES);
    memset(&u, 0, sizeof u);
    u.pool = p;
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &u.job, until_shutdown_fn), 0);
    jset_init(&s, p, 999, FUT_POOL_CANCEL);
    s.force_lane = FUT_LANE_COMPUTE;
    for (unsigned i = 0; i < s.n; i++)
        TU_REQUIRE(jset_submit(&s, i) == 0, "submit %u failed", i);

    memset(&w, 0, sizeof w);
    w.pool = p;
    w.rc = -1;
    ck_assert_int_eq(pthread_create(&wt, NULL, waiter_main, &w), 0);
    TU_POLL(ok, atomic_load(&u.started) == 1, TU_WAIT_MS);
    ck_assert_msg(ok, "the waiter never ran the first queued job");

    memset(&o, 0, sizeof o);
    o.pool = p;
    o.lane = FUT_LANE_COMPUTE;
    o.gate = &gate;
    ck_assert_int_eq(pthread_create(&ot, NULL, opener_main, &o), 0);
    ck_assert_int_eq(fut_pool_shutdown(p, FUT_POOL_CANCEL), 0);
    {
        /* Checked before the waiter is joined: shutdown returns only after
         * every callback, the waiter's batch included. None of them had
         * started when shutdown began: all cancelled. */
        jtotals t = jset_check(&s, "cancel while a wait_idle caller holds a batch");
        ck_assert_uint_eq(t.ran, 0);
        ck_assert_uint_eq(t.cancelled, s.n);
        ck_assert_int_eq(atomic_load(&u.probes_ran), 0);
        ck_assert_int_eq(atomic_load(&u.probes_cancelled), atomic_load(&u.probes_accepted));
    }
    ck_assert_int_eq(pthread_join(ot, NULL), 0);
    ck_assert_msg(join_within(wt, TU_WAIT_MS), "fut_pool_wait_idle hangs after shutdown");
    ck_assert_msg(w.rc == 0 || w.rc == ESHUTDOWN, "wait_idle returned %d", w.rc);
    ck_assert_int_eq(u.last_rc, ESHUTDOWN);
    TU_ASSERT_NO_WFAIL();
    ck_assert_int_eq(fut_pool_free(p), 0);
    jset_destroy(&s);
    tu_gate_destroy(&gate);
}
END_TEST

/* fut_pool_wait_idle racing a cancel-mode shutdown: if it returns 0,
 * every job submitted before it was called has had its callback (ran or
 * cancelled) by then. 300 cycles with 20,000 compute jobs queued. */
#define RACE_CYCLES 300
#define RACE_JOBS 20000

typedef struct race {
    fut_pool *pool;
    tu_cjob *jobs;
    int rc;
    int missing;         /* jobs not yet called when wait_idle returned 0 */
} race;

static void *race_waiter(void *arg)
{
    race *r = arg;
    r->rc = fut_pool_wait_idle(r->pool);
    r->missing = 0;
    if (r->rc == 0)
        for (int i = 0; i < RACE_JOBS; i++)
            if (atomic_load(&r->jobs[i].ran) + atomic_load(&r->jobs[i].cancelled) == 0)
                r->missing++;
    return NULL;
}

START_TEST(test_wait_idle_during_cancel)
{
    tu_cjob *jobs = calloc(RACE_JOBS, sizeof *jobs);
    unsigned premature = 0, zero = 0, first_cycle = 0;
    int first_missing = 0;
    tu_rng rng;

    ck_assert_ptr_nonnull(jobs);
    shutdown_caller = true;
    tu_rng_seed(&rng, stress_seed());
    for (unsigned c = 0; c < RACE_CYCLES; c++) {
        fut_pool *p = tu_pool_new(1, 0, 0);
        race r = { p, jobs, -1, 0 };
        pthread_t th;
        unsigned spin = tu_rng_upto(&rng, 20000);

        for (int i = 0; i < RACE_JOBS; i++) {
            tu_cjob_init(&jobs[i], NULL);
            TU_REQUIRE(fut_pool_submit(p, FUT_LANE_COMPUTE, &jobs[i].job, tu_cjob_fn) == 0,
                       "submit %d failed", i);
        }
        ck_assert_int_eq(pthread_create(&th, NULL, race_waiter, &r), 0);
        for (volatile unsigned k = 0; k < spin; k++) {
        }
        ck_assert_int_eq(fut_pool_shutdown(p, FUT_POOL_CANCEL), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_msg(r.rc == 0 || r.rc == ESHUTDOWN, "cycle %u: wait_idle returned %d", c, r.rc);
        if (r.rc == 0) {
            zero++;
            if (r.missing != 0 && premature++ == 0) {
                first_cycle = c;
                first_missing = r.missing;
            }
        }
        for (int i = 0; i < RACE_JOBS; i++)
            TU_REQUIRE(atomic_load(&jobs[i].ran) + atomic_load(&jobs[i].cancelled) == 1 &&
                           atomic_load(&jobs[i].bad) == 0,
                       "cycle %u: job %d ran %d, cancelled %d", c, i, atomic_load(&jobs[i].ran),
                       atomic_load(&jobs[i].cancelled));
        ck_assert_int_eq(fut_pool_free(p), 0);
    }
    ck_assert_msg(premature == 0,
                  "fut_pool_wait_idle returned 0 before queued jobs were called in %u of %u cycles "
                  "(first: cycle %u, %d of %d jobs not yet called)",
                  premature, zero, first_cycle, first_missing, RACE_JOBS);
    free(jobs);
}
END_TEST

typedef struct closer {
    fut_pool *pool;
    int mode;
    pthread_barrier_t *barrier;
    int rc;
} closer;

static void *closer_main(void *arg)
{
    closer *c = arg;
    shutdown_caller = true;
    pthread_barrier_wait(c->barrier);
    c->rc = fut_pool_shutdown(c->pool, c->mode);
    return NULL;
}

/* Two threads shut the pool down at once, in different modes, while jobs
 * are queued: both return 0, every job is called exactly once. */
START_TEST(test_concurrent_shutdown)
{
    pthread_barrier_t bar;
    closer c[2];
    pthread_t th[2];
    jset s;
    jtotals t;

    shutdown_caller = true;
    for (int round = 0; round < 20; round++) {
        fut_pool *p = tu_pool_new(2, 3, 0);
        jset_init(&s, p, 3000, FUT_POOL_CANCEL);
        s.child_every = 5;
        s.blocking_every = 4;
        for (unsigned i = 0; i < s.n; i++)
            TU_REQUIRE(jset_submit(&s, i) == 0, "submit %u failed", i);
        pthread_barrier_init(&bar, NULL, 2);
        for (int k = 0; k < 2; k++) {
            c[k].pool = p;
            c[k].mode = (k + round) % 2;
            c[k].barrier = &bar;
            c[k].rc = -1;
            ck_assert_int_eq(pthread_create(&th[k], NULL, closer_main, &c[k]), 0);
        }
        for (int k = 0; k < 2; k++) {
            ck_assert_int_eq(pthread_join(th[k], NULL), 0);
            ck_assert_int_eq(c[k].rc, 0);
        }
        pthread_barrier_destroy(&bar);
        /* A cancel-mode set accepts "ran" or "cancelled" for each job. */
        t = jset_check(&s, "concurrent shutdown");
        ck_assert_uint_eq(t.ran + t.cancelled, t.accepted);
        ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &s.jobs[0].job, sjob_fn), ESHUTDOWN);
        ck_assert_int_eq(fut_pool_free(p), 0);
        jset_destroy(&s);
    }
}
END_TEST

static Suite *pool_shutdown_suite(void)
{
    Suite *s = suite_create("pool_shutdown");
    TCase *tc;

    tc = tu_tcase(s, "gated", 60);
    tcase_add_loop_test(tc, test_drain_gated, FUT_LANE_COMPUTE, FUT_LANE_BLOCKING + 1);
    tcase_add_loop_test(tc, test_cancel_gated, 0, 4);

    tc = tu_tcase(s, "random", 60);
    tcase_add_loop_test(tc, test_shutdown_random, 0, 10);

    tc = tu_tcase(s, "races", 60);
    tcase_add_loop_test(tc, test_wait_idle_vs_shutdown, FUT_POOL_DRAIN, FUT_POOL_CANCEL + 1);
    tcase_add_test(tc, test_concurrent_shutdown);
    tcase_add_test(tc, test_cancel_while_waiter_holds_batch);
    tcase_add_test(tc, test_wait_idle_during_cancel);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_shutdown_suite());
}
