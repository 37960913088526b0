/* fuzz_api.c - libFuzzer target: each input is a short program of API
 * calls on two runtimes, checked against the rules of include/futures.h.
 *
 * Built and run by tools/fuzz.sh (see tests/fuzz/README). FUZZ_API_TRACE=1
 * in the environment prints each op as it runs (to read a crash input).
 *
 * INPUT
 *
 *   byte 0       pool options of both runtimes: bit 0 compute threads
 *                (1 or 2), bit 1 blocking cap (1 or 2), bits 2-4 the
 *                blocking idle time (1 to 36 ms)
 *   then ops     up to MAX_OPS of them, each an opcode byte (modulo
 *                OP_COUNT) and the argument bytes it reads (see each op_*
 *                function); a missing byte reads as 0, and the program
 *                ends with the input.
 *
 * The state an op works on: two runtimes, SLOTS future slots (each one
 * reference to a future the fuzzer made, or empty) and PSLOTS promise
 * slots. A new future goes to a slot (dropping the reference there); its
 * argument bits also say whether it is cancelled at once (racing with
 * what starts it) and whether its tracker (below) is attached at once or
 * only at the end. Ops, in OP_ order:
 *   PROMISE     fut_promise_new
 *   RESOLVE, REJECT, PFREE   settle (codes in and out of range) or free a
 *               promise, from this thread
 *   PJOB        settle or free a promise from a pool job (fut_submit or
 *               fut_submit_blocking, either runtime)
 *   SUBMIT      tiny work: return, fut_raise (once or twice, codes in and
 *               out of range), poll fut_cancelled, block (blocking lane)
 *               or spin for up to 1 ms, fut_runtime_free of its own
 *               runtime (EDEADLK), fut_wait for another future (up to
 *               1 ms), cancel another future
 *   SLEEP       fut_sleep of 0 to 2 ms (on a freed runtime too: cancelled
 *               at once)
 *   THEN, CATCH, FINALLY     continuations that return, raise (once or
 *               twice), or try what a continuation may not do
 *               (fut_runtime_free and fut_run: EDEADLK; fut_wait and
 *               fut_await of their own pending future: EDEADLK)
 *   TIMEOUT     fut_timeout of 0 to 2 ms (of a freed runtime's future too)
 *   GATHER, ANY, RACE        over a subset of the slots, with flags (a
 *               subset that mixes runtimes, FUT_SETTLED or an empty set
 *               for any/race must fail with EINVAL)
 *   ASYNC       a coroutine of up to 6 steps: await one of its own
 *               references (with or without err), yield, raise, return,
 *               look at fut_cancelled, await a sleep of its own; it may
 *               first try fut_runtime_free, fut_run and an await of itself
 *   CANCEL, RELEASE, COPY (fut_retain into another slot), WAIT (0 to
 *               2 ms), READ (state, value, error, message, gather items)
 *   RTFREE      fut_runtime_free of one runtime, once per input: from this
 *               thread or from a pool job of the other runtime. Then ops
 *               that make a future on a runtime use the other one, but
 *               futures of the freed one stay in use (continuations,
 *               timeouts, settling its promises, coroutines awaiting them)
 *   FAIL        inject failures (the library's test hooks, pool/alloc.h):
 *               the Nth allocation (and optionally every one after) of the
 *               next op's call on this thread, the next 1 to 8 allocations
 *               of any other thread (a coroutine's stack, a message), or
 *               the next 1 to 4 thread starts (the blocking lane's)
 *   POOL        the raw pool API on a runtime's pool: a job on either
 *               lane, fut_pool_wait_idle, statistics
 *   RUN         fut_run of a coroutine that awaits only its own sleeps
 * At the end every promise is settled or freed, every job's resources
 * taken back if it never ran, every future waited for (5 s in all, then
 * abort: a hang), the invariants checked, every reference dropped, and
 * both runtimes freed.
 *
 * INVARIANTS (abort() with "INVARIANT VIOLATED" and a message)
 *   - Every future the fuzzer made settles exactly once: its tracker, a
 *     fut_finally, runs exactly once, sees it settled (not pending), and
 *     the state, value and code it saw never change afterwards (checked
 *     on the slots after every op, and at the end).
 *   - At most one of the fuzzer's own settle calls (resolve, reject,
 *     cancel, from any thread) returns 0, and the outcome is then that
 *     call's; fut_cancel returning 0 means cancelled at once (for a
 *     coroutine: the cancel was asked, and it ends as its function decides;
 *     cancelled if it passes the cancel on or one is still pending when it
 *     returns), EALREADY means settled; fut_wait returning 0 means settled; a resolve or
 *     reject that returned 0 is visible at once.
 *   - Outcomes follow the header: work resolves with its function's value
 *     or rejects with what it raised last (out-of-range codes become
 *     EINVAL), or was refused a thread (EAGAIN, ENOMEM); then/catch/finally
 *     run their function only when they should, with the source's value
 *     or code, and carry its result or the source's outcome; a timeout
 *     that timed out saw its future cancelled, never early, and never
 *     lost a result (once its runtime is freed it may be rejected with
 *     ESHUTDOWN instead); gather values are the items' values; any/race
 *     outcomes come from one of their inputs; a sleep resolves with NULL
 *     and never early; a promise is rejected only by its reject or as a
 *     broken promise (EPIPE) once freed; a coroutine's outcome is its
 *     return or raise; fut_run returns the coroutine's value or code.
 *   - Threads: continuations run on their runtime's dispatcher (while it
 *     is not being freed), never "in a coroutine", where fut_yield is
 *     EPERM; work and pool jobs run off every dispatcher; coroutines run
 *     in a coroutine, on their dispatcher.
 *   - fut_runtime_free: refused with EDEADLK on any dispatcher and in its
 *     own pool; after it returns, every work, sleep, timeout and coroutine
 *     future of that runtime has settled and its tracker has run, and its
 *     coroutines have ended. Sleeps made on it afterwards are cancelled at
 *     once, and timeouts of its pending futures decided at once.
 *   - fut_pool_wait_idle returns only when every job of its pool has run;
 *     every raw pool job accepted is called exactly once (status 0,
 *     ECANCELED, or EAGAIN/ENOMEM on the blocking lane), is no work
 *     (fut_cancelled 0, and its fut_raise has no effect on anything).
 *   - An op that makes a future returns NULL only with ENOMEM, and only
 *     when an allocation was made to fail.
 *   - Nothing is live at the end: fut_runtime_live(rt) reaches 0 before
 *     each fut_runtime_free (1, the fuzzer's last reference, for a
 *     runtime freed during the input); LeakSanitizer checks the rest.
 * A rejected future freed unread is not a violation (the input dropped
 * it): the unobserved-error hook counts those quietly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "futures.h"
#include "pool/alloc.h" /* the library's test hooks: failing allocations, thread starts */

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 8
#define PSLOTS 4
#define MAX_OPS 64
#define MAX_OBJS (MAX_OPS + 8)
#define CORO_REFS 3
#define CORO_STEPS 6
#define END_BUDGET_NS 5000000000ull /* the end waits this long in all: a hang */

/* ------------------------------------------------------------------------
 * Failing
 * ---------------------------------------------------------------------- */

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "\nfuzz_api: INVARIANT VIOLATED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            die(__VA_ARGS__);                                                                      \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *state_name(int st)
{
    switch (st) {
    case FUT_PENDING: return "pending";
    case FUT_RESOLVED: return "resolved";
    case FUT_REJECTED: return "rejected";
    case FUT_CANCELLED: return "cancelled";
    default: return "?";
    }
}

/* ------------------------------------------------------------------------
 * What the fuzzer made
 * ---------------------------------------------------------------------- */

enum kind { O_PROMISE, O_WORK, O_SLEEP, O_THEN, O_CATCH, O_FINALLY, O_TIMEOUT, O_GATHER, O_ANY,
            O_RACE, O_CORO };

static const char *const kind_names[] = { "promise", "work", "sleep", "then", "catch", "finally",
                                          "timeout", "gather", "any", "race", "coroutine" };

/* What a pool job does besides returning (PJOB, SUBMIT). */
enum jaction { J_NONE, J_RESOLVE, J_REJECT, J_PFREE, J_CANCEL, J_WAIT, J_RTFREE };

/* Resources a job owns until it runs: whoever takes claim first (the job
 * with 1, the fuzzer at the end with 2) uses and releases them. */
struct job {
    atomic_int claim;
    int action;             /* enum jaction */
    fut_promise *p;         /* J_RESOLVE, J_REJECT, J_PFREE */
    struct obj *pobj;       /* its future's record */
    fut_future *target;     /* J_CANCEL, J_WAIT: a reference */
    struct obj *tobj;
    int code;               /* J_REJECT */
    double wait_s;          /* J_WAIT */
    int victim;             /* J_RTFREE: which runtime */
    atomic_int done;        /* J_RTFREE: fut_runtime_free returned */
    atomic_int rc;
};

/* A coroutine's script and its own references. */
struct coro {
    fut_future *refs[CORO_REFS];
    int nrefs;
    unsigned char steps[CORO_STEPS];
    int nsteps;
    atomic_int started;
    atomic_int finished;   /* its references are released */
};

struct obj {
    int id;
    int kind;               /* enum kind */
    int rt;                 /* index of its runtime */
    uint64_t made_ns;       /* before the call that made it */
    double seconds;         /* O_SLEEP, O_TIMEOUT */
    unsigned flags;         /* combinators; work: 1 on the blocking lane */
    int behave;             /* what its function does */
    struct obj *src;        /* then/catch/finally/timeout */
    struct obj *kids[SLOTS];
    int nkids;

    /* the tracker */
    fut_future *g;          /* its fut_finally (the fuzzer's reference) */
    fut_future *held;       /* late trackers: the fuzzer's reference until the end */
    atomic_int tracked;     /* tracker calls */
    atomic_int fstate, fcode;
    _Atomic(void *) fvalue;
    _Atomic uint64_t tracked_ns;

    /* the fuzzer's settle calls that returned 0 */
    atomic_int wins;
    atomic_int win_state, win_code;
    _Atomic(void *) win_value;
    atomic_int freed;       /* its promise was freed (broken promise allowed) */

    /* its function (work, continuation, coroutine) */
    atomic_int fn_calls;
    atomic_int fn_raised;   /* the code its last fut_raise should give, 0: none */
    atomic_int fn_returned; /* it returned (a coroutine may stop early) */
    _Atomic(void *) fn_value;
    _Atomic(void *) fn_arg_value;
    _Atomic(fut_future *) self; /* its future (no reference: read only while it runs) */
    atomic_int fn_arg_code;

    int seen_state;         /* fuzzer thread: a settled state it saw, else FUT_PENDING */
    struct job *job;
    struct coro *co;
};

/* A job of the raw pool API (POOL): called exactly once, whatever happens. */
struct rawjob {
    fut_pool_job job;
    int rt;
    int lane;
    int rc;                 /* fut_pool_submit's */
    atomic_int calls;
    atomic_int status;
};

struct slot {
    fut_future *f;
    struct obj *o;
};

struct pslot {
    fut_promise *p;
    struct obj *o;
};

/* One input's state (libFuzzer calls us from one thread at a time). */
static struct {
    const uint8_t *data;
    size_t size, pos;
    fut_runtime *rt[2];
    atomic_int freeing[2];   /* fut_runtime_free of it has begun */
    int dead[2];             /* no new futures on it */
    int gone[2];             /* fut_runtime_free of it has returned */
    int freed_at_op;         /* the op that freed one, or -1 */
    struct job *rtfree_job;  /* RTFREE from a pool job */
    fut_future *sentinel[2]; /* a resolved future of each runtime */
    struct slot slots[SLOTS];
    struct pslot pslots[PSLOTS];
    struct obj *objs[MAX_OBJS];
    int nobjs;
    struct rawjob *raws[MAX_OPS];
    int nraws;
    fut_pool_options opts;
    int op;
} S;

static atomic_ulong unobserved_count;
static int trace; /* FUZZ_API_TRACE set: print each op on stderr */

/* ---- injected failures (FAIL) ----
 * Allocations: only those made on the fuzzing thread while armed (around
 * the main call of the op after a FAIL): the first `skip` pass, the next
 * fails, and with `sticky` every one after it too. Thread starts: the
 * next few the library makes, on any thread (during the ops, only the
 * blocking lane starts threads). */
static _Thread_local int tl_armed;
static _Thread_local int tl_fuzzer; /* the fuzzing thread */
static atomic_int other_fail_left; /* allocations of the other threads to fail */
static struct {
    int pending;  /* a FAIL op asked for the next op */
    int skip, sticky, hits;
} F;
static atomic_int thread_fail_left;

static int alloc_hook(size_t size)
{
    (void)size;
    if (!tl_fuzzer) {
        int left = atomic_load(&other_fail_left);
        while (left > 0)
            if (atomic_compare_exchange_weak(&other_fail_left, &left, left - 1))
                return 1;
        return 0;
    }
    if (!tl_armed)
        return 0;
    if (F.skip > 0) {
        F.skip--;
        return 0;
    }
    if (F.skip == 0) {
        F.hits++;
        if (!F.sticky)
            F.skip = -1;
        return 1;
    }
    return 0;
}

static int thread_hook(void)
{
    int left = atomic_load(&thread_fail_left);

    while (left > 0)
        if (atomic_compare_exchange_weak(&thread_fail_left, &left, left - 1))
            return EAGAIN;
    return 0;
}

static void arm(void)
{
    tl_armed = F.pending;
}

static void disarm(void)
{
    tl_armed = 0;
}

static void unobserved_hook(int code, const char *message, void *arg)
{
    (void)arg;
    if (code < 1 || code > 65535 || message == NULL)
        die("unobserved hook called with code %d, message %p", code, (const void *)message);
    atomic_fetch_add(&unobserved_count, 1);
}

/* ---- input ---- */

static unsigned next_byte(void)
{
    return S.pos < S.size ? S.data[S.pos++] : 0;
}

/* ---- values and codes ---- */

static void *token(const struct obj *o, unsigned tag)
{
    return (void *)(uintptr_t)(0x100000u + (unsigned)o->id * 16u + tag);
}

/* Codes given to fut_raise: some out of range (they become EINVAL). */
static const int raise_codes[] = { EIO, ENOENT, 1, 65535, 300, 0, -7, 70000 };

static int raise_expect(int code)
{
    return code >= 1 && code <= 65535 ? code : EINVAL;
}

/* Codes given to fut_promise_reject: out-of-range ones are refused. */
static const int reject_codes[] = { EIO, EACCES, EPIPE, 65535, 0, 65536 };

/* ---- records ---- */

static struct obj *obj_new(int kind, int rt)
{
    struct obj *o = calloc(1, sizeof *o);

    if (o == NULL)
        die("out of memory in the fuzzer");
    CHECK(S.nobjs < MAX_OBJS, "too many objects");
    o->id = S.nobjs;
    o->kind = kind;
    o->rt = rt;
    o->seen_state = FUT_PENDING;
    o->made_ns = now_ns();
    S.objs[S.nobjs++] = o;
    return o;
}

static void job_reclaim(struct job *j);
static void coro_release(struct coro *c);

/* The call that was to make o's future returned NULL: only an injected
 * allocation failure may do that (ENOMEM); o is forgotten. */
static void obj_failed(struct obj *o, const char *call)
{
    CHECK(F.hits > 0, "%s returned NULL (errno %d) with no allocation failed", call, errno);
    CHECK(errno == ENOMEM, "%s returned NULL with errno %d after a failed allocation, not ENOMEM",
          call, errno);
    CHECK(S.nobjs > 0 && S.objs[S.nobjs - 1] == o, "obj_failed: not the last object");
    if (o->job != NULL)
        job_reclaim(o->job);
    if (o->co != NULL)
        coro_release(o->co);
    S.nobjs--;
    free(o->job);
    free(o->co);
    free(o);
}

static void record_win(struct obj *o, int state, void *value, int code)
{
    atomic_store(&o->win_state, state);
    atomic_store(&o->win_value, value);
    atomic_store(&o->win_code, code);
    if (atomic_fetch_add(&o->wins, 1) != 0)
        die("%s #%d: two settle calls returned 0 (the second: %s)", kind_names[o->kind], o->id,
            state_name(state));
}

/* Where a continuation of o's runtime runs: its dispatcher (while the
 * runtime is not being freed: then it may be the settling thread). */
static void check_continuation_thread(const struct obj *o, const char *what)
{
    if (!atomic_load(&S.freeing[o->rt]) && !fut_on_dispatcher(S.rt[o->rt]))
        die("%s of %s #%d ran off its runtime's dispatcher", what, kind_names[o->kind], o->id);
}

static void *barrier_coro(void *arg)
{
    return arg;
}

/* fut_runtime_free of either runtime, on a dispatcher (a continuation, a
 * coroutine): refused with EDEADLK, and nothing happens. Not tried on a
 * runtime whose free has begun (freeing it twice is not allowed; the
 * fuzzer's sentinel keeps its memory, so the pointer stays valid). */
static void try_forbidden_free(const struct obj *o, const char *where)
{
    for (int i = 0; i < 2; i++) {
        int rc;
        if (atomic_load(&S.freeing[i]))
            continue;
        rc = fut_runtime_free(S.rt[i]);
        CHECK(rc == EDEADLK, "fut_runtime_free(runtime %d) in %s of runtime %d: %d, not EDEADLK", i,
              where, o->rt, rc);
        rc = fut_run(S.rt[i], barrier_coro, NULL, NULL);
        CHECK(rc == EDEADLK, "fut_run in %s: %d, not EDEADLK", where, rc);
    }
}

/* ------------------------------------------------------------------------
 * The tracker: a fut_finally on every future made
 * ---------------------------------------------------------------------- */

static void tracker_fn(fut_future *f, void *arg)
{
    struct obj *o = arg;
    int st = fut_state(f);
    const char *msg = fut_message(f);

    check_continuation_thread(o, "the tracker");
    CHECK(!fut_in_coroutine(), "fut_in_coroutine in a continuation");
    if (st == FUT_PENDING)
        die("%s #%d: its fut_finally ran while it was pending", kind_names[o->kind], o->id);
    CHECK(msg != NULL, "fut_message returned NULL");
    if (st == FUT_RESOLVED)
        CHECK(fut_error(f) == 0 && msg[0] == '\0', "%s #%d: resolved with error %d / message '%s'",
              kind_names[o->kind], o->id, fut_error(f), msg);
    else
        CHECK(fut_error(f) >= 1 && fut_error(f) <= 65535 && fut_value(f) == NULL,
              "%s #%d: %s with code %d", kind_names[o->kind], o->id, state_name(st), fut_error(f));
    if (st == FUT_CANCELLED)
        CHECK(fut_error(f) == ECANCELED, "cancelled with code %d", fut_error(f));
    if (o->kind == O_GATHER && st == FUT_RESOLVED) {
        void **values = fut_value(f);
        for (int i = 0; i < o->nkids; i++) {
            fut_future *item = fut_gather_item(f, (size_t)i);
            int ist = fut_state(item);
            CHECK(item != NULL, "gather #%d: item %d is NULL", o->id, i);
            CHECK(ist != FUT_PENDING, "gather #%d resolved with item %d pending", o->id, i);
            if (ist == FUT_RESOLVED)
                CHECK(values[i] == fut_value(item), "gather #%d: value %d is %p, item has %p",
                      o->id, i, values[i], fut_value(item));
            else
                CHECK((o->flags & FUT_SETTLED) && values[i] == NULL,
                      "gather #%d (flags %u) resolved with item %d %s", o->id, o->flags, i,
                      state_name(ist));
        }
        CHECK(fut_gather_item(f, (size_t)o->nkids) == NULL, "gather_item past the end");
    }
    atomic_store(&o->fstate, st);
    atomic_store(&o->fcode, fut_error(f));
    atomic_store(&o->fvalue, fut_value(f));
    atomic_store(&o->tracked_ns, now_ns());
    if (atomic_fetch_add(&o->tracked, 1) != 0)
        die("%s #%d settled twice: its fut_finally ran again", kind_names[o->kind], o->id);
}

static void attach_tracker(struct obj *o, fut_future *f)
{
    o->g = fut_finally(f, tracker_fn, o);
    CHECK(o->g != NULL, "fut_finally returned NULL (errno %d)", errno);
}

/* A new future f (the caller's reference) made for o: tracked (at once,
 * or with how & 1 only at the end), cancelled at once if how & 2 (racing
 * with whatever starts it on the other threads), then put in slot s (or
 * released if s < 0). */
static void adopt(struct obj *o, fut_future *f, int s, unsigned how)
{
    atomic_store(&o->self, f);
    if (how & 1)
        o->held = fut_retain(f);
    else
        attach_tracker(o, f);
    if (how & 2) {
        int rc = fut_cancel(f);
        if (rc == 0 && o->kind == O_CORO) {
            /* a task: a request; its function decides how it ends */
        } else if (rc == 0) {
            CHECK(fut_state(f) == FUT_CANCELLED, "%s #%d: fut_cancel returned 0, state %s",
                  kind_names[o->kind], o->id, state_name(fut_state(f)));
            record_win(o, FUT_CANCELLED, NULL, ECANCELED);
        } else {
            CHECK(rc == EALREADY, "fut_cancel: %d", rc);
        }
    }
    if (s < 0) {
        fut_release(f);
        return;
    }
    fut_release(S.slots[s].f);
    S.slots[s].f = f;
    S.slots[s].o = o;
}

/* What the fuzzer knows about slot s now: a settled state never changes. */
static void check_slot(int s)
{
    fut_future *f = S.slots[s].f;
    struct obj *o = S.slots[s].o;
    int st, tracked;

    if (f == NULL)
        return;
    tracked = atomic_load(&o->tracked); /* first: the tracker runs after it settled */
    st = fut_state(f);
    if (o->seen_state != FUT_PENDING)
        CHECK(st == o->seen_state, "%s #%d was seen %s, now %s", kind_names[o->kind], o->id,
              state_name(o->seen_state), state_name(st));
    if (tracked) {
        int fst = atomic_load(&o->fstate);
        CHECK(st == fst, "%s #%d: its tracker saw it %s, now it is %s", kind_names[o->kind], o->id,
              state_name(fst), state_name(st));
        CHECK(fut_value(f) == atomic_load(&o->fvalue), "%s #%d: value changed after settling",
              kind_names[o->kind], o->id);
        if (st != FUT_RESOLVED)
            CHECK(fut_error(f) == atomic_load(&o->fcode), "%s #%d: code changed after settling",
                  kind_names[o->kind], o->id);
    }
    if (st != FUT_PENDING)
        o->seen_state = st;
}

/* ------------------------------------------------------------------------
 * Jobs and work
 * ---------------------------------------------------------------------- */

static void job_settle(struct job *j)
{
    int rc;

    switch (j->action) {
    case J_RESOLVE:
        rc = fut_promise_resolve(j->p, token(j->pobj, 1));
        CHECK(rc == 0 || rc == EALREADY, "fut_promise_resolve: %d", rc);
        if (rc == 0)
            record_win(j->pobj, FUT_RESOLVED, token(j->pobj, 1), 0);
        atomic_store(&j->pobj->freed, 1);
        fut_promise_free(j->p);
        break;
    case J_REJECT:
        rc = fut_promise_reject(j->p, j->code, "job rejected #%d", j->pobj->id);
        CHECK(rc == 0 || rc == EALREADY, "fut_promise_reject: %d", rc);
        if (rc == 0)
            record_win(j->pobj, FUT_REJECTED, NULL, j->code);
        atomic_store(&j->pobj->freed, 1);
        fut_promise_free(j->p);
        break;
    case J_PFREE:
        atomic_store(&j->pobj->freed, 1);
        fut_promise_free(j->p);
        break;
    case J_CANCEL:
        rc = fut_cancel(j->target);
        CHECK(rc == 0 || rc == EALREADY, "fut_cancel: %d", rc);
        if (rc == 0 && j->tobj->kind != O_CORO) { /* a task's is a request */
            CHECK(fut_state(j->target) == FUT_CANCELLED, "fut_cancel returned 0, state %s",
                  state_name(fut_state(j->target)));
            record_win(j->tobj, FUT_CANCELLED, NULL, ECANCELED);
        }
        fut_release(j->target);
        break;
    case J_WAIT:
        rc = fut_wait(j->target, j->wait_s);
        CHECK(rc == 0 || rc == ETIMEDOUT, "fut_wait in a job: %d", rc);
        if (rc == 0)
            CHECK(fut_state(j->target) != FUT_PENDING, "fut_wait returned 0 on a pending future");
        fut_release(j->target);
        break;
    case J_RTFREE:
        atomic_store(&j->rc, fut_runtime_free(S.rt[j->victim]));
        atomic_store(&j->done, 1);
        break;
    default:
        break;
    }
}

/* The fuzzer takes back what a job that has not run owns. */
static void job_reclaim(struct job *j)
{
    if (j == NULL || atomic_exchange(&j->claim, 2) != 0)
        return;
    switch (j->action) {
    case J_RESOLVE:
    case J_REJECT:
    case J_PFREE:
        atomic_store(&j->pobj->freed, 1);
        fut_promise_free(j->p);
        break;
    case J_CANCEL:
    case J_WAIT:
        fut_release(j->target);
        break;
    case J_RTFREE:
        atomic_store(&j->rc, fut_runtime_free(S.rt[j->victim]));
        atomic_store(&j->done, 1);
        break;
    default:
        break;
    }
}

/* behave: bits 0-2 what it does, bits 3-5 a code index, bit 6 a second
 * raise. */
static void *work_fn(void *arg)
{
    struct obj *o = arg;
    int what = o->behave & 7;
    int code = raise_codes[(o->behave >> 3) & 7];
    void *v = token(o, 2);

    if (atomic_fetch_add(&o->fn_calls, 1) != 0)
        die("work #%d ran twice", o->id);
    CHECK(!fut_on_dispatcher(NULL), "work #%d runs on a dispatcher", o->id);
    CHECK(!fut_in_coroutine(), "work #%d runs in a coroutine", o->id);
    CHECK(fut_yield() == EPERM, "fut_yield in work is not EPERM");
    if (o->job != NULL && atomic_exchange(&o->job->claim, 1) == 0)
        job_settle(o->job);
    switch (what) {
    case 1: /* raise */
        atomic_store(&o->fn_raised, raise_expect(code));
        v = fut_raise(code, "work #%d raised %d", o->id, code);
        CHECK(v == NULL, "fut_raise returned non-NULL");
        if (o->behave & 64) {
            code = raise_codes[((o->behave >> 3) + 1) & 7];
            atomic_store(&o->fn_raised, raise_expect(code));
            fut_raise(code, "work #%d raised again %d", o->id, code);
        }
        v = token(o, 2); /* ignored: it raised */
        break;
    case 2: { /* poll fut_cancelled for up to 300 us */
        uint64_t end = now_ns() + 300000;
        while (!fut_cancelled() && now_ns() < end)
            ;
        break;
    }
    case 3: { /* a blocking call on the blocking lane, busy for as long on the other */
        unsigned us = 100 + (unsigned)(o->behave >> 3) * 50;
        if (o->flags) {
            usleep(us);
        } else {
            uint64_t end = now_ns() + us * 1000u;
            while (now_ns() < end)
                ;
        }
        break;
    }
    case 4: { /* its own runtime may not be freed from here */
        int rc = fut_runtime_free(S.rt[o->rt]);
        CHECK(rc == EDEADLK, "fut_runtime_free from its own pool: %d, not EDEADLK", rc);
        break;
    }
    default:
        break;
    }
    atomic_store(&o->fn_value, v);
    atomic_store(&o->fn_returned, 1);
    return v;
}

/* ------------------------------------------------------------------------
 * Continuations
 * ---------------------------------------------------------------------- */

/* behave: bits 0-1: 0 return, 1 raise, 2 raise twice, 3 return after
 * trying what a continuation may not do; bits 2-4 a code index. */
static void *cont_body(struct obj *o)
{
    int code = raise_codes[(o->behave >> 2) & 7];
    void *v = token(o, 3);

    check_continuation_thread(o, "the continuation");
    CHECK(!fut_in_coroutine(), "%s #%d: fut_in_coroutine in a continuation", kind_names[o->kind],
          o->id);
    CHECK(fut_yield() == EPERM, "fut_yield in a continuation is not EPERM");
    if (atomic_fetch_add(&o->fn_calls, 1) != 0)
        die("the function of %s #%d ran twice", kind_names[o->kind], o->id);
    switch (o->behave & 3) {
    case 1:
        atomic_store(&o->fn_raised, raise_expect(code));
        fut_raise(code, "%s #%d raised", kind_names[o->kind], o->id);
        break;
    case 2:
        fut_raise(EIO, "first");
        atomic_store(&o->fn_raised, raise_expect(code));
        fut_raise(code, "%s #%d raised twice", kind_names[o->kind], o->id);
        break;
    case 3: {
        /* what a continuation may not do: free a runtime, fut_run, wait for
         * (or await) a pending future of its own dispatcher (its own) */
        fut_future *self = atomic_load(&o->self);
        try_forbidden_free(o, "a continuation");
        if (self != NULL && !atomic_load(&S.freeing[o->rt])) {
            int rc = fut_wait(self, 0.001), err = -1;
            CHECK(rc == EDEADLK || (rc == 0 && fut_state(self) == FUT_CANCELLED),
                  "fut_wait of its own pending future in a continuation: %d", rc);
            (void)fut_await(self, &err);
            CHECK(err == EDEADLK || (err == ECANCELED && fut_state(self) == FUT_CANCELLED),
                  "fut_await of its own pending future in a continuation: %d", err);
        }
        break;
    }
    default:
        break;
    }
    atomic_store(&o->fn_value, v);
    atomic_store(&o->fn_returned, 1);
    return v;
}

static void *then_fn(void *value, void *arg)
{
    struct obj *o = arg;

    atomic_store(&o->fn_arg_value, value);
    return cont_body(o);
}

static void *catch_fn(int code, const char *message, void *arg)
{
    struct obj *o = arg;

    CHECK(message != NULL, "catch got a NULL message");
    atomic_store(&o->fn_arg_code, code);
    return cont_body(o);
}

static void finally_fn(fut_future *f, void *arg)
{
    struct obj *o = arg;

    CHECK(fut_state(f) != FUT_PENDING, "finally #%d: its source is pending", o->id);
    atomic_store(&o->fn_arg_code, fut_state(f));
    (void)cont_body(o);
}

static void *barrier_fn(void *value, void *arg)
{
    (void)arg;
    return value;
}

/* ------------------------------------------------------------------------
 * Coroutines
 * ---------------------------------------------------------------------- */

static void coro_release(struct coro *c)
{
    for (int i = 0; i < c->nrefs; i++) {
        fut_release(c->refs[i]);
        c->refs[i] = NULL;
    }
    atomic_store(&c->finished, 1);
}

/* A step: bits 0-2 what, bits 3-7 an argument. */
static void *coro_fn(void *arg)
{
    struct obj *o = arg;
    struct coro *c = o->co;
    void *v = token(o, 4);

    if (atomic_fetch_add(&o->fn_calls, 1) != 0)
        die("coroutine #%d started twice", o->id);
    atomic_store(&c->started, 1);
    CHECK(fut_in_coroutine(), "coroutine #%d: fut_in_coroutine is 0", o->id);
    check_continuation_thread(o, "the coroutine");
    if (o->behave & 1) {
        fut_future *self = atomic_load(&o->self);
        try_forbidden_free(o, "a coroutine");
        if (self != NULL) {
            int err = -1;
            (void)fut_await(self, &err);
            CHECK(err == EDEADLK || err == ECANCELED, "coroutine #%d awaited itself: %d", o->id,
                  err);
        }
    }
    for (int i = 0; i < c->nsteps; i++) {
        unsigned step = c->steps[i], a = step >> 3;
        int err = -1, rc;
        fut_future *t = c->nrefs ? c->refs[a % (unsigned)c->nrefs] : NULL;
        void *got;

        switch (step & 7) {
        case 0:
        case 1: /* await one of its references */
            if (t == NULL)
                break;
            got = fut_await(t, &err);
            if (err == 0) {
                CHECK(fut_state(t) == FUT_RESOLVED && got == fut_value(t),
                      "coroutine #%d: await gave %p, err 0; the future is %s with %p", o->id, got,
                      state_name(fut_state(t)), fut_value(t));
            } else {
                CHECK(got == NULL, "await failed (%d) with a value", err);
                if (err != ECANCELED)
                    CHECK((fut_state(t) == FUT_REJECTED || fut_state(t) == FUT_CANCELLED) &&
                              fut_error(t) == err,
                          "coroutine #%d: await gave err %d, the future is %s with %d", o->id,
                          err, state_name(fut_state(t)), fut_error(t));
            }
            break;
        case 2: /* await without err */
            if (t != NULL)
                (void)fut_await(t, NULL);
            break;
        case 3:
            rc = fut_yield();
            CHECK(rc == 0 || rc == ECANCELED, "fut_yield: %d", rc);
            break;
        case 4: {
            int code = raise_codes[a & 7];
            atomic_store(&o->fn_raised, raise_expect(code));
            fut_raise(code, "coroutine #%d raised", o->id);
            break;
        }
        case 5:
            goto out;
        case 6:
            if (fut_cancelled())
                goto out;
            break;
        default: { /* await a sleep of its own, 0 to 1 ms */
            fut_future *s = fut_sleep(S.rt[o->rt], (double)(a & 3) * 0.0003);
            if (s == NULL) { /* an injected failure */
                CHECK(errno == ENOMEM, "fut_sleep in a coroutine: NULL, errno %d", errno);
                break;
            }
            (void)fut_await(s, &err);
            CHECK(err == 0 || err == ECANCELED, "await of a sleep: %d", err);
            fut_release(s);
            break;
        }
        }
    }
out:
    atomic_store(&o->fn_value, v);
    atomic_store(&o->fn_returned, 1);
    coro_release(c);
    return v;
}

/* ------------------------------------------------------------------------
 * Ops
 * ---------------------------------------------------------------------- */

static const char *const op_names[] = {
    "PROMISE", "RESOLVE", "REJECT", "PFREE", "PJOB", "SUBMIT", "SLEEP", "THEN", "CATCH", "FINALLY",
    "TIMEOUT", "GATHER", "ANY", "RACE", "ASYNC", "CANCEL", "RELEASE", "COPY", "WAIT", "READ",
    "RTFREE", "FAIL", "POOL", "RUN"
};

enum { OP_PROMISE, OP_RESOLVE, OP_REJECT, OP_PFREE, OP_PJOB, OP_SUBMIT, OP_SLEEP, OP_THEN, OP_CATCH,
       OP_FINALLY, OP_TIMEOUT, OP_GATHER, OP_ANY, OP_RACE, OP_ASYNC, OP_CANCEL, OP_RELEASE, OP_COPY,
       OP_WAIT, OP_READ, OP_RTFREE, OP_FAIL, OP_POOL, OP_RUN, OP_COUNT };
_Static_assert(sizeof op_names / sizeof *op_names == OP_COUNT, "op_names");

/* A runtime to make a future on: the one asked for, or the other one
 * once it is freed. */
static int live_rt(unsigned b)
{
    int i = (int)(b & 1);

    return S.dead[i] ? 1 - i : i;
}

/* Whether fut_runtime_free of runtime i has returned. */
static int rt_gone(int i)
{
    struct job *j = S.rtfree_job;

    return S.gone[i] || (j != NULL && j->victim == i && atomic_load(&j->done));
}

static int slot_of(unsigned b)
{
    return (int)(b % SLOTS);
}

static void promise_free_slot(int ps)
{
    struct pslot *q = &S.pslots[ps];

    if (q->p == NULL)
        return;
    atomic_store(&q->o->freed, 1);
    fut_promise_free(q->p);
    q->p = NULL;
    q->o = NULL;
}

static void op_promise(void)
{
    unsigned b = next_byte();
    int rt = live_rt(b), ps = (int)((b >> 1) % PSLOTS);
    struct obj *o = obj_new(O_PROMISE, rt);
    fut_promise *p;
    fut_future *f;

    arm();
    p = fut_promise_new(S.rt[rt]);
    disarm();
    if (p == NULL) {
        obj_failed(o, "fut_promise_new");
        return;
    }
    f = fut_promise_future(p);
    CHECK(f != NULL, "fut_promise_future: NULL");
    promise_free_slot(ps); /* a promise already there is dropped */
    S.pslots[ps].p = p;
    S.pslots[ps].o = o;
    adopt(o, f, slot_of(b >> 3), (b >> 6) & 3);
}

static void op_settle(int how)
{
    unsigned b = next_byte();
    struct pslot *q = &S.pslots[b % PSLOTS];
    int rc;

    if (q->p == NULL)
        return;
    if (how == OP_RESOLVE) {
        void *v = token(q->o, 1);
        arm();
        rc = fut_promise_resolve(q->p, v);
        disarm();
        CHECK(rc == 0 || rc == EALREADY, "fut_promise_resolve: %d", rc);
        if (rc == 0) {
            fut_future *f = fut_promise_future(q->p);
            CHECK(fut_state(f) == FUT_RESOLVED && fut_value(f) == v,
                  "promise #%d: resolve returned 0, the future is %s", q->o->id,
                  state_name(fut_state(f)));
            fut_release(f);
            record_win(q->o, FUT_RESOLVED, v, 0);
        }
    } else {
        int code = reject_codes[(b >> 2) % (sizeof reject_codes / sizeof *reject_codes)];
        arm();
        rc = fut_promise_reject(q->p, code, "rejected #%d", q->o->id);
        disarm();
        if (code < 1 || code > 65535) {
            CHECK(rc == EINVAL, "fut_promise_reject(code %d): %d, not EINVAL", code, rc);
            return;
        }
        CHECK(rc == 0 || rc == EALREADY, "fut_promise_reject: %d", rc);
        if (rc == 0) {
            fut_future *f = fut_promise_future(q->p);
            CHECK(fut_state(f) == FUT_REJECTED && fut_error(f) == code,
                  "promise #%d: reject returned 0, the future is %s (%d)", q->o->id,
                  state_name(fut_state(f)), fut_error(f));
            fut_release(f);
            record_win(q->o, FUT_REJECTED, NULL, code);
        }
    }
    if (b & 0x80)
        promise_free_slot((int)(b % PSLOTS));
}

static void op_pfree(void)
{
    promise_free_slot((int)(next_byte() % PSLOTS));
}

/* A work future whose job may own j. */
static void submit_work(struct obj *o, unsigned b, int s)
{
    fut_future *f;

    o->made_ns = now_ns();
    o->flags = (b >> 1) & 1; /* work: on the blocking lane */
    if (o->job == NULL || o->job->action != J_RTFREE)
        arm();
    if (b & 2)
        f = fut_submit_blocking(S.rt[o->rt], work_fn, o);
    else
        f = fut_submit(S.rt[o->rt], work_fn, o);
    disarm();
    if (f == NULL) {
        CHECK(o->job == NULL || o->job->action != J_RTFREE, "fut_submit: NULL (errno %d)", errno);
        obj_failed(o, "fut_submit");
        return;
    }
    adopt(o, f, s, ((b >> 2) & 1) | ((b >> 5) & 2));
}

static void op_pjob(void)
{
    unsigned b = next_byte(), c = next_byte();
    struct pslot *q = &S.pslots[c % PSLOTS];
    struct obj *o;
    struct job *j;

    if (q->p == NULL)
        return;
    o = obj_new(O_WORK, live_rt(b));
    o->behave = (c & 0x40) ? 1 | (int)((c & 7) << 3) : 0; /* return or raise, after the job */
    j = calloc(1, sizeof *j);
    CHECK(j != NULL, "out of memory in the fuzzer");
    j->action = J_RESOLVE + (int)((c >> 2) % 3);
    j->p = q->p;
    j->pobj = q->o;
    j->code = reject_codes[(c >> 4) % 4]; /* in range */
    q->p = NULL; /* the job's now */
    q->o = NULL;
    o->job = j;
    submit_work(o, b, slot_of(b >> 3));
}

static void op_submit(void)
{
    unsigned b = next_byte(), c = next_byte();
    struct obj *o = obj_new(O_WORK, live_rt(b));
    struct slot *t = &S.slots[slot_of(c >> 5)];

    o->behave = (int)(c & 0x7f);
    if ((c & 7) >= 5 && t->f != NULL) { /* 5: wait for another future, 6-7: cancel it */
        struct job *j = calloc(1, sizeof *j);
        CHECK(j != NULL, "out of memory in the fuzzer");
        j->action = (c & 7) == 5 ? J_WAIT : J_CANCEL;
        j->target = fut_retain(t->f);
        j->tobj = t->o;
        j->wait_s = (double)((c >> 3) & 3) * 0.0003;
        o->job = j;
    }
    submit_work(o, b, slot_of(b >> 3));
}

static void op_sleep(void)
{
    unsigned b = next_byte(), c = next_byte();
    int rt = rt_gone((int)(b & 1)) ? (int)(b & 1) : live_rt(b); /* allowed on a freed one */
    struct obj *o = obj_new(O_SLEEP, rt);
    fut_future *f;

    o->seconds = (double)(b >> 4) * 0.000125; /* 0 to 1.9 ms */
    o->made_ns = now_ns();
    arm();
    f = fut_sleep(S.rt[o->rt], o->seconds);
    disarm();
    if (f == NULL) {
        obj_failed(o, "fut_sleep");
        return;
    }
    if (rt_gone(rt))
        CHECK(fut_state(f) == FUT_CANCELLED, "sleep #%d made after fut_runtime_free is %s, not "
              "cancelled at once", o->id, state_name(fut_state(f)));
    adopt(o, f, slot_of(b >> 1), c & 3);
}

static void op_cont(int kind)
{
    unsigned b = next_byte(), c = next_byte();
    struct slot *src = &S.slots[slot_of(b)];
    struct obj *o;
    fut_future *f;

    if (src->f == NULL)
        return;
    o = obj_new(kind, src->o->rt); /* a continuation belongs to its source's runtime */
    o->src = src->o;
    o->behave = (int)(c & 0x7f);
    arm();
    if (kind == O_THEN)
        f = fut_then(src->f, then_fn, o);
    else if (kind == O_CATCH)
        f = fut_catch(src->f, catch_fn, o);
    else
        f = fut_finally(src->f, finally_fn, o);
    disarm();
    if (f == NULL) {
        obj_failed(o, kind_names[kind]);
        return;
    }
    adopt(o, f, slot_of(b >> 3), ((b >> 6) & 1) | ((c >> 6) & 2));
}

static void op_timeout(void)
{
    unsigned b = next_byte();
    struct slot *src = &S.slots[slot_of(b)];
    struct obj *o;
    fut_future *f;

    if (src->f == NULL)
        return;
    o = obj_new(O_TIMEOUT, src->o->rt);
    o->src = src->o;
    o->seconds = (double)(b >> 6) * 0.0006; /* 0 to 1.8 ms */
    o->made_ns = now_ns();
    arm();
    f = fut_timeout(src->f, o->seconds);
    disarm();
    if (f == NULL) {
        obj_failed(o, "fut_timeout");
        return;
    }
    if (rt_gone(o->rt)) /* no timer can fire: decided at once */
        CHECK(fut_state(f) != FUT_PENDING || fut_state(src->f) != FUT_PENDING,
              "timeout #%d of a pending future, made after fut_runtime_free, is pending", o->id);
    adopt(o, f, slot_of(b >> 3), (b >> 5) & 1);
}

static void op_combine(int kind)
{
    unsigned b = next_byte(), mask = next_byte();
    fut_future *fs[SLOTS];
    struct obj *kids[SLOTS];
    int n = 0, rt = live_rt(b), mixed = 0;
    unsigned flags = (b >> 1) & 3;
    struct obj *o;
    fut_future *f;

    for (int i = 0; i < SLOTS; i++) {
        if (!(mask & (1u << i)) || S.slots[i].f == NULL)
            continue;
        if (S.slots[i].o->rt != rt)
            mixed = 1;
        fs[n] = S.slots[i].f;
        kids[n++] = S.slots[i].o;
    }
    if (kind != O_GATHER && (flags & FUT_SETTLED)) {
        f = kind == O_ANY ? fut_any(S.rt[rt], fs, (size_t)n, flags)
                          : fut_race(S.rt[rt], fs, (size_t)n, flags);
        CHECK(f == NULL && errno == EINVAL, "any/race with FUT_SETTLED did not fail with EINVAL");
        return;
    }
    if (kind != O_GATHER && n == 0) {
        f = kind == O_ANY ? fut_any(S.rt[rt], fs, 0, flags) : fut_race(S.rt[rt], fs, 0, flags);
        CHECK(f == NULL && errno == EINVAL, "any/race of nothing did not fail with EINVAL");
        return;
    }
    if (mixed) {
        /* Futures of another runtime (live or freed) are refused. */
        errno = 0;
        f = kind == O_GATHER ? fut_gather(S.rt[rt], fs, (size_t)n, flags)
            : kind == O_ANY  ? fut_any(S.rt[rt], fs, (size_t)n, flags)
                             : fut_race(S.rt[rt], fs, (size_t)n, flags);
        CHECK(f == NULL && errno == EINVAL, "%s over two runtimes did not fail with EINVAL",
              kind_names[kind]);
        return;
    }
    o = obj_new(kind, rt);
    o->flags = flags;
    o->nkids = n;
    memcpy(o->kids, kids, (size_t)n * sizeof *kids);
    arm();
    f = kind == O_GATHER ? fut_gather(S.rt[rt], fs, (size_t)n, flags)
        : kind == O_ANY  ? fut_any(S.rt[rt], fs, (size_t)n, flags)
                         : fut_race(S.rt[rt], fs, (size_t)n, flags);
    disarm();
    if (f == NULL) {
        obj_failed(o, kind_names[kind]);
        return;
    }
    adopt(o, f, slot_of(b >> 3), (b >> 6) & 3);
}

static void op_async(void)
{
    unsigned b = next_byte(), c = next_byte();
    struct obj *o = obj_new(O_CORO, live_rt(b));
    struct coro *co = calloc(1, sizeof *co);
    fut_future *f;

    CHECK(co != NULL, "out of memory in the fuzzer");
    o->co = co;
    o->behave = (int)(b >> 5) & 1;
    /* its own references: up to CORO_REFS slots, from c */
    for (int i = 0; i < SLOTS && co->nrefs < CORO_REFS; i++) {
        struct slot *s = &S.slots[(i + (int)(c >> 5)) % SLOTS];
        if ((c & (1u << (i % 5))) && s->f != NULL) {
            co->refs[co->nrefs++] = fut_retain(s->f);
        }
    }
    co->nsteps = 1 + (int)((b >> 6) + (c & 1) * 2) % CORO_STEPS;
    for (int i = 0; i < co->nsteps; i++)
        co->steps[i] = (unsigned char)next_byte();
    arm();
    f = fut_async(S.rt[o->rt], coro_fn, o);
    disarm();
    if (f == NULL) {
        obj_failed(o, "fut_async");
        return;
    }
    adopt(o, f, slot_of(b >> 1), (b >> 4) & 1);
}

static void op_cancel(void)
{
    unsigned b = next_byte();
    struct slot *s = &S.slots[slot_of(b)];
    int rc;

    if (s->f == NULL)
        return;
    rc = fut_cancel(s->f);
    if (rc == 0 && s->o->kind == O_CORO) {
        /* a task: the cancel was asked; its function decides how it ends */
    } else if (rc == 0) {
        CHECK(fut_state(s->f) == FUT_CANCELLED, "%s #%d: fut_cancel returned 0, state %s",
              kind_names[s->o->kind], s->o->id, state_name(fut_state(s->f)));
        record_win(s->o, FUT_CANCELLED, NULL, ECANCELED);
        if (s->o->kind == O_GATHER) {
            /* its futures are cancelled (or had settled) */
            for (int i = 0; i < s->o->nkids; i++) {
                fut_future *item = fut_gather_item(s->f, (size_t)i);
                if (s->o->kids[i]->kind == O_CORO)
                    continue; /* asked to cancel: it ends when its function does */
                CHECK(item != NULL && fut_wait(item, 5.0) == 0,
                      "gather #%d cancelled, item %d still pending", s->o->id, i);
            }
        }
    } else {
        CHECK(rc == EALREADY, "fut_cancel: %d", rc);
        CHECK(fut_wait(s->f, 5.0) == 0, "%s #%d: fut_cancel said EALREADY, still pending after 5 s",
              kind_names[s->o->kind], s->o->id);
    }
}

static void op_release(void)
{
    struct slot *s = &S.slots[slot_of(next_byte())];

    fut_release(s->f);
    s->f = NULL;
    s->o = NULL;
}

static void op_copy(void)
{
    unsigned b = next_byte();
    struct slot *from = &S.slots[slot_of(b)], *to = &S.slots[slot_of(b >> 3)];
    fut_future *f;

    if (from->f == NULL || from == to)
        return;
    f = fut_retain(from->f);
    CHECK(f == from->f, "fut_retain did not return its argument");
    fut_release(to->f);
    to->f = f;
    to->o = from->o;
}

static void op_wait(void)
{
    unsigned b = next_byte();
    struct slot *s = &S.slots[slot_of(b)];
    double t = (double)(b >> 3) * 0.0000625; /* 0 to 1.9 ms */
    int rc;

    if (s->f == NULL) {
        CHECK(fut_wait(NULL, 0) == EINVAL, "fut_wait(NULL) is not EINVAL");
        return;
    }
    rc = fut_wait(s->f, t);
    CHECK(rc == 0 || rc == ETIMEDOUT, "fut_wait: %d", rc);
    if (rc == 0)
        CHECK(fut_state(s->f) != FUT_PENDING, "%s #%d: fut_wait returned 0, still pending",
              kind_names[s->o->kind], s->o->id);
}

static void op_read(void)
{
    unsigned b = next_byte();
    struct slot *s = &S.slots[slot_of(b)];
    int st, code;
    const char *msg;

    if (s->f == NULL)
        return;
    st = fut_state(s->f);
    msg = fut_message(s->f);
    CHECK(msg != NULL, "fut_message: NULL");
    if (b & 8) { /* reading the error marks it seen */
        code = fut_error(s->f);
        if (st == FUT_PENDING || st == FUT_RESOLVED)
            CHECK(code == 0 || fut_state(s->f) != st, "%s future with error %d", state_name(st),
                  code);
        else
            CHECK(code >= 1 && code <= 65535, "%s future with error %d", state_name(st), code);
    }
    if (st == FUT_PENDING)
        CHECK(fut_value(s->f) == NULL || fut_state(s->f) != FUT_PENDING,
              "a pending future with a value");
    if (s->o->kind != O_GATHER)
        CHECK(fut_gather_item(s->f, 0) == NULL && errno == EINVAL,
              "fut_gather_item of a %s is not EINVAL", kind_names[s->o->kind]);
}

/* Fail an allocation in the next op's call (bits 0-1 clear), the next
 * 1 to 4 thread starts (bit 0 set), or the next 1 to 8 allocations the
 * library makes on any other thread (bits 0-1 = 2: a dispatcher's, for
 * a coroutine's stack or a message, a pool thread's). */
static void op_fail(void)
{
    unsigned b = next_byte();

    if (b & 1) {
        atomic_store(&thread_fail_left, (int)((b >> 1) & 3) + 1);
        return;
    }
    if (b & 2) {
        atomic_store(&other_fail_left, (int)((b >> 2) & 7) + 1);
        return;
    }
    F.pending = 1;
    F.skip = (int)((b >> 1) & 7);
    F.sticky = (int)((b >> 4) & 1);
    F.hits = 0;
}

static void raw_fn(fut_pool_job *job, int status)
{
    struct rawjob *r = (struct rawjob *)job;

    CHECK(!fut_on_dispatcher(NULL), "a raw pool job called on a dispatcher");
    CHECK(!fut_cancelled(), "fut_cancelled in a raw pool job");
    fut_raise(EIO, "a raw pool job raised"); /* outside work: no effect */
    atomic_store(&r->status, status);
    if (atomic_fetch_add(&r->calls, 1) != 0)
        die("a raw pool job was called twice");
}

/* The pool API on a live runtime's pool: a raw job, fut_pool_wait_idle,
 * or statistics. */
static void op_pool(void)
{
    unsigned b = next_byte();
    int rt = live_rt(b >> 3);
    fut_pool *pool = fut_runtime_pool(S.rt[rt]);
    fut_pool_stats st;

    CHECK(pool != NULL, "fut_runtime_pool: NULL");
    CHECK(fut_pool_compute_threads(pool) == S.opts.compute_threads, "fut_pool_compute_threads");
    switch (b & 3) {
    case 0:
    case 1: {
        struct rawjob *r = calloc(1, sizeof *r);
        CHECK(r != NULL, "out of memory in the fuzzer");
        r->lane = (int)((b >> 2) & 1);
        r->rt = rt;
        S.raws[S.nraws++] = r;
        r->rc = fut_pool_submit(pool, r->lane, &r->job, raw_fn);
        CHECK(r->rc == 0 || (r->lane == FUT_LANE_BLOCKING && (r->rc == EAGAIN || r->rc == ENOMEM)),
              "fut_pool_submit: %d", r->rc);
        break;
    }
    case 2: {
        /* every job so far has finished (run or been notified) */
        int rc = fut_pool_wait_idle(pool);
        CHECK(rc == 0, "fut_pool_wait_idle: %d", rc);
        for (int i = 0; i < S.nraws; i++)
            if (S.raws[i]->rt == rt && S.raws[i]->rc == 0)
                CHECK(atomic_load(&S.raws[i]->calls) == 1,
                      "fut_pool_wait_idle returned, a raw job of its pool was not called");
        for (int k = 0; k < S.nobjs; k++) {
            struct obj *o = S.objs[k];
            if (o->kind == O_WORK && o->rt == rt && atomic_load(&o->fn_calls))
                CHECK(atomic_load(&o->fn_returned),
                      "fut_pool_wait_idle returned while work #%d was running", o->id);
        }
        break;
    }
    default:
        for (int lane = 0; lane < 2; lane++) {
            unsigned cap = lane == 0 ? S.opts.compute_threads : S.opts.blocking_max;
            CHECK(fut_pool_stats_get(pool, lane, &st) == 0, "fut_pool_stats_get");
            CHECK(st.threads <= cap && st.peak_threads <= cap && st.idle <= cap,
                  "lane %d: %u threads, %u idle, peak %u, cap %u", lane, st.threads, st.idle,
                  st.peak_threads, cap);
        }
        CHECK(fut_pool_stats_get(pool, 2, &st) == EINVAL, "fut_pool_stats_get of lane 2");
        break;
    }
}

/* fut_run of a coroutine that awaits nothing of anyone else's (its own
 * sleeps, yields, raises), so the wait is bounded. */
static void op_run(void)
{
    unsigned b = next_byte();
    struct obj o;
    struct coro co;
    void *result = (void *)1;
    int rc;

    memset(&o, 0, sizeof o);
    memset(&co, 0, sizeof co);
    o.id = 1000 + S.op;
    o.kind = O_CORO;
    o.rt = live_rt(b);
    o.co = &co;
    co.nsteps = 1 + (int)((b >> 1) % CORO_STEPS);
    for (int i = 0; i < co.nsteps; i++)
        co.steps[i] = (unsigned char)next_byte();
    rc = fut_run(S.rt[o.rt], coro_fn, &o, &result);
    if (atomic_load(&o.fn_calls) == 0) { /* no stack for it: an injected failure */
        CHECK(rc == ENOMEM && result == NULL, "fut_run returned %d, its coroutine never ran", rc);
        return;
    }
    CHECK(atomic_load(&co.finished), "fut_run returned %d before its coroutine ran to its end",
          rc);
    if (atomic_load(&o.fn_raised))
        CHECK(rc == atomic_load(&o.fn_raised) && result == NULL,
              "fut_run of a coroutine that raised %d: %d, result %p", atomic_load(&o.fn_raised), rc,
              result);
    else
        CHECK(rc == 0 && result == token(&o, 4), "fut_run: %d, result %p (expected %p)", rc, result,
              token(&o, 4));
}

static void rt_free_now(int i)
{
    int rc;

    atomic_store(&S.freeing[i], 1);
    rc = fut_runtime_free(S.rt[i]);
    CHECK(rc == 0, "fut_runtime_free: %d", rc);
    S.gone[i] = 1;
}

/* After runtime i was freed: what it ran has settled. */
static void after_rt_free(int i)
{
    for (int k = 0; k < S.nobjs; k++) {
        struct obj *o = S.objs[k];
        if (o->rt != i)
            continue;
        if (o->kind == O_CORO && !atomic_load(&o->co->started) && !atomic_load(&o->co->finished))
            coro_release(o->co); /* it never started, and never will */
        /* work ran or was cancelled, sleeps and undecided timeouts were
         * cancelled or rejected (ESHUTDOWN), coroutines ended */
        if (o->kind != O_WORK && o->kind != O_SLEEP && o->kind != O_CORO && o->kind != O_TIMEOUT)
            continue;
        if (o->g != NULL)
            CHECK(atomic_load(&o->tracked) == 1,
                  "%s #%d of runtime %d: its continuation has not run after fut_runtime_free",
                  kind_names[o->kind], o->id, i);
        else
            CHECK(fut_state(o->held) != FUT_PENDING,
                  "%s #%d of runtime %d is pending after fut_runtime_free", kind_names[o->kind],
                  o->id, i);
    }
    /* Its coroutines have ended: each released its references. */
    for (int k = 0; k < S.nobjs; k++)
        if (S.objs[k]->rt == i && S.objs[k]->kind == O_CORO)
            CHECK(atomic_load(&S.objs[k]->co->finished),
                  "coroutine #%d of runtime %d still running after fut_runtime_free",
                  S.objs[k]->id, i);
}

static void op_rtfree(void)
{
    unsigned b = next_byte();
    int victim = (int)(b & 1), other = 1 - victim;

    if (S.freed_at_op >= 0)
        return;
    S.freed_at_op = S.op;
    S.dead[victim] = 1;
    atomic_store(&S.freeing[victim], 1);
    if (((b >> 1) & 3) == 3) {
        /* From a job of the other runtime's pool: a pool thread of
         * another runtime may free it. */
        struct obj *o = obj_new(O_WORK, other);
        struct job *j = calloc(1, sizeof *j);
        CHECK(j != NULL, "out of memory in the fuzzer");
        j->action = J_RTFREE;
        j->victim = victim;
        o->job = j;
        S.rtfree_job = j;
        submit_work(o, b >> 2, -1);
        return;
    }
    rt_free_now(victim);
    after_rt_free(victim);
}

/* ------------------------------------------------------------------------
 * The end
 * ---------------------------------------------------------------------- */

static double left_s(uint64_t deadline)
{
    uint64_t now = now_ns();

    return now >= deadline ? 0 : (double)(deadline - now) / 1e9;
}

static void wait_or_die(fut_future *f, uint64_t deadline, const struct obj *o, const char *what)
{
    int rc = fut_wait(f, left_s(deadline));

    if (rc == ETIMEDOUT)
        die("HANG: %s of %s #%d (runtime %d) did not settle in %.0f s", what, kind_names[o->kind],
            o->id, o->rt, END_BUDGET_NS / 1e9);
    CHECK(rc == 0, "fut_wait: %d", rc);
}

static int kid_has(const struct obj *o, int state, void *value, int code)
{
    for (int i = 0; i < o->nkids; i++) {
        const struct obj *k = o->kids[i];
        int st = atomic_load(&k->fstate);
        if (state == FUT_RESOLVED && st == FUT_RESOLVED && atomic_load(&k->fvalue) == value)
            return 1;
        if (state == FUT_REJECTED && st != FUT_RESOLVED &&
            (st == FUT_CANCELLED ? ECANCELED : atomic_load(&k->fcode)) == code)
            return 1;
    }
    return 0;
}

/* The outcome of o, once every tracker has run. */
static void check_outcome(const struct obj *o)
{
    int st = atomic_load(&o->fstate), code = atomic_load(&o->fcode);
    void *v = atomic_load(&o->fvalue);
    int calls = atomic_load(&o->fn_calls), raised = atomic_load(&o->fn_raised);
    int returned = atomic_load(&o->fn_returned);
    const char *k = kind_names[o->kind];
    int sst = o->src ? atomic_load(&o->src->fstate) : 0;
    int scode = o->src ? atomic_load(&o->src->fcode) : 0;
    void *sval = o->src ? atomic_load(&o->src->fvalue) : NULL;

    CHECK(atomic_load(&o->tracked) == 1, "%s #%d: tracker ran %d times", k, o->id,
          atomic_load(&o->tracked));
    if (atomic_load(&o->wins) == 1) {
        int ws = atomic_load(&o->win_state);
        CHECK(st == ws, "%s #%d: a settle call to %s returned 0, it ended %s", k, o->id,
              state_name(ws), state_name(st));
        if (ws == FUT_RESOLVED)
            CHECK(v == atomic_load(&o->win_value), "%s #%d: resolved with another value", k, o->id);
        else
            CHECK(code == atomic_load(&o->win_code), "%s #%d: code %d, the winning call gave %d", k,
                  o->id, code, atomic_load(&o->win_code));
    }
    switch (o->kind) {
    case O_PROMISE:
        if (atomic_load(&o->wins) == 0) {
            CHECK(st != FUT_RESOLVED, "promise #%d resolved by nobody", o->id);
            if (st == FUT_REJECTED)
                CHECK(code == EPIPE && atomic_load(&o->freed),
                      "promise #%d rejected (%d) by nobody", o->id, code);
        }
        break;
    case O_WORK:
        if (st == FUT_RESOLVED)
            CHECK(calls == 1 && returned && !raised && v == atomic_load(&o->fn_value),
                  "work #%d resolved (%p) but its function: calls %d, raised %d", o->id, v, calls,
                  raised);
        else if (st == FUT_REJECTED)
            CHECK((calls == 1 && returned && raised == code) ||
                      (calls == 0 && (code == EAGAIN || code == ENOMEM)),
                  "work #%d rejected with %d; its function: calls %d, raised %d", o->id, code,
                  calls, raised);
        break;
    case O_SLEEP:
        CHECK(st == FUT_RESOLVED || st == FUT_CANCELLED, "sleep #%d %s", o->id, state_name(st));
        if (st == FUT_RESOLVED) {
            CHECK(v == NULL, "sleep #%d resolved with %p", o->id, v);
            CHECK(atomic_load(&o->tracked_ns) >= o->made_ns + (uint64_t)(o->seconds * 1e9),
                  "sleep #%d of %g s resolved early (after %.6f s)", o->id, o->seconds,
                  (double)(atomic_load(&o->tracked_ns) - o->made_ns) / 1e9);
        }
        break;
    case O_THEN:
        if (sst == FUT_RESOLVED) {
            if (st != FUT_CANCELLED) {
                CHECK(calls == 1, "then #%d: source resolved, function ran %d times", o->id, calls);
                CHECK(atomic_load(&o->fn_arg_value) == sval, "then #%d got %p, source had %p",
                      o->id, atomic_load(&o->fn_arg_value), sval);
                if (raised)
                    CHECK(st == FUT_REJECTED && code == raised, "then #%d raised %d, ended %s %d",
                          o->id, raised, state_name(st), code);
                else
                    CHECK(st == FUT_RESOLVED && v == atomic_load(&o->fn_value),
                          "then #%d: ended %s with %p, its function returned %p", o->id,
                          state_name(st), v, atomic_load(&o->fn_value));
            }
        } else {
            CHECK(calls == 0, "then #%d ran though its source was %s", o->id, state_name(sst));
            CHECK(st == FUT_CANCELLED || (st == sst && code == scode),
                  "then #%d: source %s (%d), it is %s (%d)", o->id, state_name(sst), scode,
                  state_name(st), code);
        }
        break;
    case O_CATCH:
        if (sst == FUT_RESOLVED) {
            CHECK(calls == 0, "catch #%d ran though its source resolved", o->id);
            CHECK(st == FUT_CANCELLED || (st == FUT_RESOLVED && v == sval),
                  "catch #%d: source resolved (%p), it is %s (%p)", o->id, sval, state_name(st), v);
        } else if (st != FUT_CANCELLED) {
            CHECK(calls == 1 && atomic_load(&o->fn_arg_code) == scode,
                  "catch #%d: source %s (%d), function ran %d times with %d", o->id,
                  state_name(sst), scode, calls, atomic_load(&o->fn_arg_code));
            if (raised)
                CHECK(st == FUT_REJECTED && code == raised, "catch #%d raised %d, ended %s %d",
                      o->id, raised, state_name(st), code);
            else
                CHECK(st == FUT_RESOLVED && v == atomic_load(&o->fn_value),
                      "catch #%d ended %s, its function returned", o->id, state_name(st));
        }
        break;
    case O_FINALLY:
        if (st != FUT_CANCELLED) {
            CHECK(calls == 1 && atomic_load(&o->fn_arg_code) == sst,
                  "finally #%d: function ran %d times (saw %s, source %s)", o->id, calls,
                  state_name(atomic_load(&o->fn_arg_code)), state_name(sst));
            if (raised)
                CHECK(st == FUT_REJECTED && code == raised, "finally #%d raised %d, ended %s %d",
                      o->id, raised, state_name(st), code);
            else
                CHECK(st == sst && v == sval && (st == FUT_RESOLVED || code == scode),
                      "finally #%d: source %s (%d, %p), it is %s (%d, %p)", o->id,
                      state_name(sst), scode, sval, state_name(st), code, v);
        }
        break;
    case O_TIMEOUT:
        /* Once its runtime shut down, its timer can no longer fire: a
         * timeout still undecided then is rejected with ESHUTDOWN, whatever
         * its future does later. */
        if (st == FUT_REJECTED && code == ESHUTDOWN && atomic_load(&S.freeing[o->rt]))
            break;
        if (st == FUT_RESOLVED)
            CHECK(sst == FUT_RESOLVED && v == sval, "timeout #%d resolved, its future %s", o->id,
                  state_name(sst));
        if (sst == FUT_RESOLVED)
            CHECK(st == FUT_RESOLVED || st == FUT_CANCELLED,
                  "timeout #%d is %s (%d) though its future resolved: a result lost", o->id,
                  state_name(st), code);
        if (st == FUT_REJECTED && code == ETIMEDOUT) {
            CHECK(sst == FUT_CANCELLED || (sst == FUT_REJECTED && scode == ETIMEDOUT),
                  "timeout #%d timed out, its future is %s", o->id, state_name(sst));
            if (sst == FUT_CANCELLED)
                CHECK(atomic_load(&o->tracked_ns) >= o->made_ns + (uint64_t)(o->seconds * 1e9),
                      "timeout #%d of %g s timed out early", o->id, o->seconds);
        } else if (st == FUT_REJECTED) {
            CHECK((sst == FUT_REJECTED && scode == code) ||
                      (sst == FUT_CANCELLED && code == ECANCELED),
                  "timeout #%d rejected %d, its future %s %d", o->id, code, state_name(sst), scode);
        }
        break;
    case O_GATHER:
        if (st == FUT_REJECTED)
            CHECK(!(o->flags & FUT_SETTLED) && kid_has(o, FUT_REJECTED, NULL, code),
                  "gather #%d rejected (%d), flags %u, by none of its futures", o->id, code,
                  o->flags);
        if (st == FUT_RESOLVED && !(o->flags & FUT_SETTLED))
            for (int i = 0; i < o->nkids; i++)
                CHECK(atomic_load(&o->kids[i]->fstate) == FUT_RESOLVED,
                      "gather #%d resolved, future %d is %s", o->id, i,
                      state_name(atomic_load(&o->kids[i]->fstate)));
        break;
    case O_ANY:
        if (st == FUT_RESOLVED)
            CHECK(kid_has(o, FUT_RESOLVED, v, 0), "any #%d resolved with %p: none had it", o->id, v);
        if (st == FUT_REJECTED) {
            CHECK(kid_has(o, FUT_REJECTED, NULL, code), "any #%d rejected %d by none", o->id, code);
            for (int i = 0; i < o->nkids; i++)
                CHECK(atomic_load(&o->kids[i]->fstate) != FUT_RESOLVED,
                      "any #%d rejected but future %d resolved", o->id, i);
        }
        break;
    case O_RACE:
        if (st == FUT_RESOLVED)
            CHECK(kid_has(o, FUT_RESOLVED, v, 0), "race #%d resolved with %p: none had it", o->id,
                  v);
        if (st == FUT_REJECTED)
            CHECK(kid_has(o, FUT_REJECTED, NULL, code), "race #%d rejected %d by none", o->id,
                  code);
        break;
    case O_CORO:
        /* Cancelled: never started, or a cancel (of the fuzzer's, a
         * combinator's, the shutdown's) was passed on or still pending
         * when it returned: any outcome of its function may become that. */
        if (st == FUT_RESOLVED)
            CHECK(calls == 1 && returned && !raised && v == atomic_load(&o->fn_value),
                  "coroutine #%d resolved (%p): calls %d, raised %d", o->id, v, calls, raised);
        else if (st == FUT_REJECTED)
            CHECK((calls == 1 && returned && raised == code) || (calls == 0 && code == ENOMEM),
                  "coroutine #%d rejected %d: calls %d, raised %d", o->id, code, calls, raised);
        break;
    default:
        break;
    }
}

static void finish(void)
{
    uint64_t deadline = now_ns() + END_BUDGET_NS;

    F.pending = 0;
    atomic_store(&thread_fail_left, 0);
    atomic_store(&other_fail_left, 0);

    /* 1. Every promise settles: each left in a slot is settled or freed,
     * each a job did not take is freed. */
    for (int i = 0; i < PSLOTS; i++) {
        struct pslot *q = &S.pslots[i];
        if (q->p == NULL)
            continue;
        if (next_byte() & 1) {
            if (fut_promise_resolve(q->p, token(q->o, 1)) == 0)
                record_win(q->o, FUT_RESOLVED, token(q->o, 1), 0);
        }
        promise_free_slot(i);
    }
    for (int k = 0; k < S.nobjs; k++)
        if (S.objs[k]->job != NULL && S.objs[k]->job != S.rtfree_job)
            job_reclaim(S.objs[k]->job);

    /* 2. A runtime free asked of a job: done by it, or by us. */
    if (S.rtfree_job != NULL) {
        struct job *j = S.rtfree_job;
        job_reclaim(j);
        while (!atomic_load(&j->done)) {
            if (now_ns() > deadline)
                die("HANG: fut_runtime_free called from a pool job of the other runtime did not "
                    "return in %.0f s",
                    END_BUDGET_NS / 1e9);
            usleep(100);
        }
        CHECK(atomic_load(&j->rc) == 0, "fut_runtime_free from a pool job: %d",
              atomic_load(&j->rc));
        S.gone[j->victim] = 1;
        after_rt_free(j->victim);
    }

    /* 3. Everything settles, and its tracker runs. */
    for (int k = 0; k < S.nobjs; k++) {
        struct obj *o = S.objs[k];
        if (o->g == NULL) {
            wait_or_die(o->held, deadline, o, "the future");
            attach_tracker(o, o->held);
        }
        wait_or_die(o->g, deadline, o, "the tracker");
        CHECK(atomic_load(&o->tracked) == 1, "%s #%d: tracker settled, ran %d times",
              kind_names[o->kind], o->id, atomic_load(&o->tracked));
    }

    /* Work goes on after its future was cancelled (a job then settles its
     * promise late): wait for every work function that started to return. */
    for (int k = 0; k < S.nobjs; k++) {
        struct obj *o = S.objs[k];
        while (o->kind == O_WORK && atomic_load(&o->fn_calls) && !atomic_load(&o->fn_returned)) {
            if (now_ns() > deadline)
                die("HANG: the function of work #%d did not return", o->id);
            usleep(100);
        }
    }

    /* 4. Coroutines: those not started never will (a barrier on their
     * runtime's dispatcher runs after every start), the others finish. */
    for (int i = 0; i < 2; i++) {
        fut_future *b;
        if (S.dead[i])
            continue;
        b = fut_then(S.sentinel[i], barrier_fn, NULL);
        CHECK(b != NULL, "fut_then: NULL");
        if (fut_wait(b, left_s(deadline)) != 0)
            die("HANG: a continuation of a resolved future did not run on runtime %d", i);
        fut_release(b);
    }
    for (int k = 0; k < S.nobjs; k++) {
        struct obj *o = S.objs[k];
        if (o->kind != O_CORO)
            continue;
        if (!atomic_load(&o->co->started) && !atomic_load(&o->co->finished)) {
            CHECK(atomic_load(&o->fstate) != FUT_RESOLVED, "coroutine #%d resolved, never ran",
                  o->id);
            coro_release(o->co);
        }
        while (!atomic_load(&o->co->finished)) {
            if (now_ns() > deadline)
                die("HANG: coroutine #%d did not finish (its future is %s)", o->id,
                    state_name(atomic_load(&o->fstate)));
            usleep(100);
        }
    }

    /* 5. Outcomes, and the slots once more. */
    for (int s = 0; s < SLOTS; s++)
        check_slot(s);
    for (int k = 0; k < S.nobjs; k++)
        check_outcome(S.objs[k]);

    /* 6. Drop every reference; read some errors, leave the others unread. */
    for (int s = 0; s < SLOTS; s++) {
        fut_release(S.slots[s].f);
        S.slots[s].f = NULL;
    }
    for (int k = 0; k < S.nobjs; k++) {
        struct obj *o = S.objs[k];
        if (o->held != NULL) {
            CHECK(fut_state(o->held) == atomic_load(&o->fstate), "%s #%d changed state",
                  kind_names[o->kind], o->id);
            fut_release(o->held);
            o->held = NULL;
        }
        if (o->id & 1)
            (void)fut_error(o->g);
        fut_release(o->g);
        o->g = NULL;
    }

    /* 7. Nothing live: each runtime's count falls to 0 (to 1, our
     * sentinel, for one freed already), then it is freed. */
    for (int i = 0; i < 2; i++) {
        uint64_t want = S.dead[i] ? 1 : 0, live;
        if (!S.dead[i]) {
            fut_release(S.sentinel[i]);
            S.sentinel[i] = NULL;
        }
        while ((live = fut_runtime_live(S.rt[i])) != want) {
            if (now_ns() > deadline)
                die("LEAK: runtime %d (%s) still has %llu live futures, expected %llu, after "
                    "every reference was released",
                    i, S.dead[i] ? "freed" : "not freed", (unsigned long long)live,
                    (unsigned long long)want);
            usleep(100);
        }
        if (S.dead[i]) {
            fut_release(S.sentinel[i]); /* the runtime's memory goes with it */
            S.sentinel[i] = NULL;
        } else {
            rt_free_now(i);
        }
    }

    /* 8. Every raw pool job accepted was called exactly once. */
    for (int i = 0; i < S.nraws; i++) {
        struct rawjob *r = S.raws[i];
        int st = atomic_load(&r->status);
        if (r->rc != 0) {
            CHECK(atomic_load(&r->calls) == 0, "a refused raw pool job was called");
            continue;
        }
        CHECK(atomic_load(&r->calls) == 1, "a raw pool job was called %d times after its pool was "
              "freed", atomic_load(&r->calls));
        CHECK(st == 0 || st == ECANCELED ||
                  (r->lane == FUT_LANE_BLOCKING && (st == EAGAIN || st == ENOMEM)),
              "a raw pool job was called with status %d", st);
    }
}

static void reset(void)
{
    for (int k = 0; k < S.nobjs; k++) {
        free(S.objs[k]->job);
        free(S.objs[k]->co);
        free(S.objs[k]);
    }
    for (int i = 0; i < S.nraws; i++)
        free(S.raws[i]);
    memset(&S, 0, sizeof S);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    trace = getenv("FUZZ_API_TRACE") != NULL;
    fut_set_unobserved_hook(unobserved_hook, NULL);
    fut__alloc_set_hook(alloc_hook);
    fut__thread_set_hook(thread_hook);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fut_pool_options opts;
    unsigned cfg;

    memset(&S, 0, sizeof S);
    memset(&F, 0, sizeof F);
    atomic_store(&thread_fail_left, 0);
    atomic_store(&other_fail_left, 0);
    tl_fuzzer = 1;
    S.data = data;
    S.size = size;
    S.freed_at_op = -1;
    cfg = next_byte();
    fut_pool_options_init(&opts);
    opts.compute_threads = 1 + (cfg & 1);
    opts.blocking_max = 1 + ((cfg >> 1) & 1);
    opts.blocking_idle_ms = 1 + ((cfg >> 2) & 7) * 5;
    S.opts = opts;
    for (int i = 0; i < 2; i++) {
        fut_promise *p;
        S.rt[i] = fut_runtime_new(&opts);
        CHECK(S.rt[i] != NULL, "fut_runtime_new: errno %d", errno);
        CHECK(fut_runtime_set_stack_size(S.rt[i], 64 * 1024) == 0, "fut_runtime_set_stack_size");
        CHECK(fut_runtime_live(S.rt[i]) == 0, "a new runtime has live futures");
        p = fut_promise_new(S.rt[i]);
        CHECK(p != NULL, "fut_promise_new: NULL");
        S.sentinel[i] = fut_promise_future(p);
        CHECK(fut_promise_resolve(p, NULL) == 0, "resolve of a new promise");
        fut_promise_free(p);
    }
    CHECK(fut_yield() == EPERM, "fut_yield outside a coroutine is not EPERM");

    for (S.op = 0; S.op < MAX_OPS && S.pos < S.size; S.op++) {
        unsigned op = next_byte() % OP_COUNT;
        size_t at = S.pos;
        if (trace)
            fprintf(stderr, "fuzz_api: op %d: %s", S.op, op_names[op]);
        switch (op) {
        case OP_PROMISE: op_promise(); break;
        case OP_RESOLVE: op_settle(OP_RESOLVE); break;
        case OP_REJECT: op_settle(OP_REJECT); break;
        case OP_PFREE: op_pfree(); break;
        case OP_PJOB: op_pjob(); break;
        case OP_SUBMIT: op_submit(); break;
        case OP_SLEEP: op_sleep(); break;
        case OP_THEN: op_cont(O_THEN); break;
        case OP_CATCH: op_cont(O_CATCH); break;
        case OP_FINALLY: op_cont(O_FINALLY); break;
        case OP_TIMEOUT: op_timeout(); break;
        case OP_GATHER: op_combine(O_GATHER); break;
        case OP_ANY: op_combine(O_ANY); break;
        case OP_RACE: op_combine(O_RACE); break;
        case OP_ASYNC: op_async(); break;
        case OP_CANCEL: op_cancel(); break;
        case OP_RELEASE: op_release(); break;
        case OP_COPY: op_copy(); break;
        case OP_WAIT: op_wait(); break;
        case OP_READ: op_read(); break;
        case OP_RTFREE: op_rtfree(); break;
        case OP_FAIL:
            op_fail(); /* for the next op */
            if (trace)
                fprintf(stderr, " %02x\n", at < S.size ? S.data[at] : 0);
            continue;
        case OP_POOL: op_pool(); break;
        case OP_RUN: op_run(); break;
        default: break;
        }
        F.pending = 0;
        if (trace) {
            for (; at < S.pos; at++)
                fprintf(stderr, " %02x", at < S.size ? S.data[at] : 0);
            fprintf(stderr, " (objects %d)\n", S.nobjs);
        }
        for (int s = 0; s < SLOTS; s++)
            check_slot(s);
    }
    finish();
    reset();
    return 0;
}
