/*
 * futures.h - libfutures: asyncio-style futures, promises and a worker pool
 * for C on POSIX threads.
 *
 * This header is the reference. Every call states what it does, what it
 * returns, which thread may call it and who owns what.
 *
 * Conventions (one rule for the whole API):
 *   - Calls that can fail return 0 on success or a positive errno code
 *     (EINVAL, ENOMEM, EAGAIN, ESHUTDOWN, ...). They never set errno.
 *   - Calls that create an object return a pointer to it, or NULL with
 *     errno set to the reason.
 *   - Public names start with fut_ / FUT_. Everything else is private.
 *
 * Link with: pkg-config --cflags --libs futures
 */
#ifndef FUTURES_H
#define FUTURES_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(FUT_BUILDING_LIBRARY)
#define FUT_EXPORT __attribute__((visibility("default")))
#else
#define FUT_EXPORT
#endif

/* The error a call made in the child of fork() returns for an object that
 * was created before the fork: its threads do not exist in the child, so
 * the call fails at once instead of waiting for them.
 *
 * fork() in short: in the child, a pool or runtime of the parent (the
 * default runtime as it was at the fork included) is dead. Every call on
 * it, or on a future or promise of it, that would need its threads fails
 * at once with FUT_EFORKED: a call that returns a future returns one
 * already rejected with FUT_EFORKED; fut_promise_new returns NULL with
 * errno FUT_EFORKED; fut_promise_resolve / _reject, fut_cancel (of a
 * pending future), fut_wait and fut_await (of a pending future),
 * fut_yield, fut_run and fut_runtime_set_stack_size return it. Reading a
 * future (fut_state, fut_value, fut_error, fut_message, fut_gather_item),
 * fut_retain and fut_release work as before; fut_promise_free,
 * fut_runtime_free and fut_pool_free release memory only. The default
 * runtime (NULL) is made afresh in the child on its first use there, and
 * runtimes made in the child work fully. Work, timers and coroutines that
 * were pending in the parent never settle in the child (they go on in the
 * parent). A child forked from a continuation, a coroutine or work runs
 * as a plain thread (fut_await blocks, fut_in_coroutine is 0) and should
 * end with exec or _exit: returning from that function would go on with
 * the parent's dispatcher or pool code, of which it has a copy. */
#define FUT_EFORKED EOWNERDEAD

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

/* The package version as a string, e.g. "0.1.0". Any thread. */
FUT_EXPORT const char *fut_version(void);

/* ------------------------------------------------------------------------
 * Worker pool (fut_pool_*)
 *
 * A pool owns two lanes of threads:
 *   FUT_LANE_COMPUTE   N workers (default: online CPUs) for CPU work.
 *                      Jobs here should not block.
 *   FUT_LANE_BLOCKING  threads made on demand, up to a cap (default 64),
 *                      that retire after an idle time (default 10 s); for
 *                      jobs that block: sleep, read, getaddrinfo, a query.
 *
 * Jobs are intrusive: the caller embeds a fut_pool_job in its own object
 * and recovers the object in the callback (offsetof / container_of), so a
 * submit allocates nothing. The pool knows nothing of futures.
 *
 * Every submitted job gets exactly one call of its callback:
 *   fn(job, 0)           run the job: on a thread of its lane, or, for the
 *                        compute lane, on a thread that helps while it
 *                        waits in fut_pool_wait_idle or a draining
 *                        fut_pool_shutdown;
 *   fn(job, ECANCELED)   the job will never run (shutdown in cancel mode):
 *                        release what it owns. This call happens on a pool
 *                        thread, on a thread helping in fut_pool_wait_idle,
 *                        or on the thread that called fut_pool_shutdown /
 *                        fut_pool_free, always before that call returns.
 *   fn(job, EAGAIN) or fn(job, ENOMEM)
 *                        blocking lane only: the job will never run because
 *                        no thread could be started for it. A submit that
 *                        starts the lane's first thread and fails returns
 *                        that error for its own job; jobs that other
 *                        threads queued meanwhile (their submits returned
 *                        0, counting on that start) get this call, on the
 *                        thread of the submit whose thread start failed.
 *                        They count as cancelled in fut_pool_stats_get.
 * After that call the pool never touches the job again: the callback may
 * free the memory that holds it, or submit it again.
 *
 * Pool threads are named "fut-cpu-K" and "fut-blk-K" (see ps -L, gdb's
 * "info threads") and run with every signal blocked.
 * ---------------------------------------------------------------------- */

typedef struct fut_pool fut_pool;
typedef struct fut_pool_job fut_pool_job;

/* The job callback. status is 0 (run the job), or ECANCELED, EAGAIN or
 * ENOMEM (it never will; see above). */
typedef void (*fut_pool_fn)(fut_pool_job *job, int status);

/* Embed one in your object. Its fields belong to the pool from
 * fut_pool_submit until the callback is called; do not read or write them. */
struct fut_pool_job {
    fut_pool_job *next_; /* private: queue link */
    fut_pool_fn fn_;     /* private: the callback */
};

/* Lanes: pass one to fut_pool_submit and fut_pool_stats_get. */
enum fut_pool_lane {
    FUT_LANE_COMPUTE = 0,
    FUT_LANE_BLOCKING = 1
};

/* Shutdown modes. */
enum fut_pool_shutdown_mode {
    FUT_POOL_DRAIN = 0, /* run every queued job, then stop */
    FUT_POOL_CANCEL = 1 /* queued jobs get fn(job, ECANCELED); running ones finish */
};

/* Limits checked by fut_pool_new. */
#define FUT_POOL_MAX_COMPUTE 1024u   /* compute workers */
#define FUT_POOL_MAX_BLOCKING 4096u  /* blocking lane cap */
#define FUT_POOL_MAX_IDLE_MS 86400000u /* one day */

/* Options for fut_pool_new. Fill with fut_pool_options_init, then change
 * what you need. A zero or out-of-range value is an error (EINVAL), never
 * a silent default. */
typedef struct fut_pool_options {
    unsigned compute_threads; /* compute workers, 1..FUT_POOL_MAX_COMPUTE; default online CPUs */
    unsigned blocking_max;    /* blocking lane cap, 1..FUT_POOL_MAX_BLOCKING; default 64 */
    unsigned blocking_idle_ms;/* idle time before a blocking thread retires, 1..FUT_POOL_MAX_IDLE_MS; default 10000 */
} fut_pool_options;

/* Per-lane statistics, a snapshot taken without stopping the pool (the
 * fields are read one after another, so under load they may not add up
 * exactly). */
typedef struct fut_pool_stats {
    unsigned threads;   /* threads alive in the lane */
    unsigned idle;      /* of those, waiting for work */
    uint64_t queued;    /* submitted, not yet taken by a thread */
    uint64_t running;   /* taken by a thread, not yet finished (a compute
                           worker takes a small batch at a time) */
    uint64_t completed; /* ran: fn(job, 0) returned */
    uint64_t cancelled; /* notified with fn(job, ECANCELED / EAGAIN / ENOMEM) */
    unsigned peak_threads; /* most threads alive at once so far */
} fut_pool_stats;

/* Fill opts with the defaults. Any thread. Returns 0, or EINVAL if opts is NULL. */
FUT_EXPORT int fut_pool_options_init(fut_pool_options *opts);

/* Create a pool and start its compute workers (blocking threads start on
 * demand). opts NULL means the defaults. Returns the pool, or NULL with
 * errno = EINVAL (bad option), ENOMEM, EAGAIN (threads could not be made).
 * Any thread. */
FUT_EXPORT fut_pool *fut_pool_new(const fut_pool_options *opts);

/* Queue job on a lane; fn will be called exactly once (see above).
 * Any thread, including a job running on this pool.
 * Returns 0, or:
 *   EINVAL     pool, job or fn is NULL, or lane is unknown;
 *   ESHUTDOWN  the pool is shutting down or shut down (in FUT_POOL_DRAIN
 *              mode, jobs running on the pool may still submit until the
 *              last queued job has run);
 *   EAGAIN     blocking lane: no thread runs and none could be started;
 *   ENOMEM     blocking lane: no memory to start a thread while none runs;
 *   FUT_EFORKED  called in the child of a fork() on a pool of the parent.
 * On an error fn is not called and the job is the caller's again. */
FUT_EXPORT int fut_pool_submit(fut_pool *pool, int lane, fut_pool_job *job, fut_pool_fn fn);

/* Block until every job submitted so far (on both lanes), and every job
 * those jobs submit, has finished. The calling thread runs compute jobs
 * while it waits. Not from a job of this pool (EDEADLK).
 * Returns 0, EINVAL, EDEADLK, ESHUTDOWN (pool already shut down: nothing
 * to wait for), or FUT_EFORKED. */
FUT_EXPORT int fut_pool_wait_idle(fut_pool *pool);

/* Stop the pool: FUT_POOL_DRAIN runs every queued job (and the jobs they
 * submit) first; FUT_POOL_CANCEL notifies queued jobs with ECANCELED and
 * lets only running jobs finish. New submits fail with ESHUTDOWN from the
 * moment it is called (a submit from outside the pool that races with the
 * call may still be accepted; its job is then run or cancelled like the
 * others, but in drain mode the jobs it submits may be refused). Returns
 * when every callback has returned and every pool thread has exited. The
 * calling thread runs compute jobs while a drain waits.
 * Not from a job of this pool (EDEADLK). Calling it again returns 0 at
 * once. Returns 0, EINVAL, EDEADLK or FUT_EFORKED. */
FUT_EXPORT int fut_pool_shutdown(fut_pool *pool, int mode);

/* Shut down in FUT_POOL_CANCEL mode if not done yet, then free the pool.
 * NULL is a no-op. Not from a job of this pool (returns EDEADLK and frees
 * nothing). In the child of a fork() it releases the memory only: queued
 * jobs are neither run nor notified. Returns 0, EDEADLK. */
FUT_EXPORT int fut_pool_free(fut_pool *pool);

/* Snapshot one lane's statistics into out. Any thread.
 * Returns 0, EINVAL, or FUT_EFORKED. */
FUT_EXPORT int fut_pool_stats_get(fut_pool *pool, int lane, fut_pool_stats *out);

/* The number of compute workers of pool, or 0 if pool is NULL. */
FUT_EXPORT unsigned fut_pool_compute_threads(const fut_pool *pool);

/* ------------------------------------------------------------------------
 * Runtime, futures and promises (fut_runtime, fut_future, fut_promise)
 *
 * A runtime is one dispatcher thread plus one pool. Work runs on the pool;
 * when it settles its future, every continuation attached to that future
 * runs on the dispatcher thread, one at a time, in the order attached,
 * never on the worker that settled it (also when attached after it
 * settled). User code in continuations therefore needs no locks.
 *
 * Passing NULL as a runtime means the process default runtime, made on
 * first use (default pool options) and freed at exit (as fut_runtime_free
 * does: coroutines waiting on sockets are cancelled and run to their
 * ends), but exit waits at most one second for that: work still running
 * then (a blocking-lane job stuck in a read that never returns) does not
 * hang exit, the process ends without it. If it cannot be
 * made (no thread or memory: EAGAIN, ENOMEM), the call fails with that
 * error (a call that returns a future returns NULL with errno set, since
 * there is no runtime to own a rejected future), and the next use of NULL
 * tries again. In the child of a fork() the first use makes a new one
 * (see FUT_EFORKED).
 *
 * A future settles exactly once: resolved with a void * value, rejected
 * with an errno-style code (1 to 65535) and a message, or cancelled (code
 * ECANCELED). Futures are reference counted: every call that returns a
 * fut_future * returns a new reference, which the caller releases with
 * fut_release. Values are the user's: the library never frees them.
 *
 * Calls that return a future never return NULL for a reason that concerns
 * the work: they return a future rejected with that reason. NULL (errno
 * set) means only bad arguments (EINVAL), no memory for the future itself
 * (ENOMEM), or, with rt NULL, that the default runtime could not be made
 * (EAGAIN, ENOMEM; see above).
 *
 * Threads: unless a call says otherwise, it may be made from any thread,
 * the dispatcher and pool threads included, at any time (two threads may
 * settle, cancel, wait on, attach to or release the same future at once).
 * Futures made by a call hold what they need: a continuation or a
 * combinator keeps its own reference on its inputs, so the caller may
 * release them at once.
 * ---------------------------------------------------------------------- */

typedef struct fut_runtime fut_runtime;
typedef struct fut_future fut_future;
typedef struct fut_promise fut_promise;

/* States of a future (fut_state). */
enum fut_state {
    FUT_PENDING = 0,
    FUT_RESOLVED = 1,
    FUT_REJECTED = 2,
    FUT_CANCELLED = 3
};

/* The code a future gets when its promise is dropped unsettled. */
#define FUT_EBROKEN EPIPE

/* Work of the pthread_create type: existing functions plug in unchanged. */
typedef void *(*fut_work_fn)(void *arg);

/* Create a runtime: a dispatcher thread and a pool made with opts (NULL:
 * defaults). Returns NULL with errno EINVAL, ENOMEM or EAGAIN. Any thread. */
FUT_EXPORT fut_runtime *fut_runtime_new(const fut_pool_options *opts);

/* Shut down: running work finishes, queued work is cancelled (its futures
 * are cancelled), pending sleeps are cancelled, every continuation that
 * can run runs exactly once, the threads exit. Futures the caller still
 * holds stay readable until released. A promise still unsettled keeps its
 * future pending; when it is settled (or freed) later, its continuations
 * run on the thread that settles it, one such thread at a time, as plain
 * continuations (also when that thread is running a coroutine of another
 * runtime: in them fut_in_coroutine is 0 and fut_await of a pending
 * future returns EDEADLK). Timeouts of its futures made afterwards (and
 * sleeps made with rt while a future of rt is still held, which keeps
 * its memory) settle at once: a sleep cancelled, a timeout of a pending
 * future rejected with ESHUTDOWN. The default runtime (NULL) is freed at exit,
 * not by this call: NULL is a no-op.
 * Not from any runtime's dispatcher, so not in a continuation or a
 * coroutine (EDEADLK: rt's coroutines may await futures whose dependents
 * that dispatcher must run), nor from a pool thread of rt (EDEADLK).
 * In the child of a fork(), on a runtime of the parent, it releases what
 * memory it can (the pool's, cached coroutine stacks) and returns 0.
 * Returns 0 or EDEADLK. */
FUT_EXPORT int fut_runtime_free(fut_runtime *rt);

/* The pool of rt (NULL: the default runtime's), for raw fut_pool_submit;
 * NULL (errno set) if rt is NULL and the default runtime cannot be made. */
FUT_EXPORT fut_pool *fut_runtime_pool(fut_runtime *rt);

/* Futures of rt created and not yet freed (NULL: the default runtime; 0
 * if it cannot be made). */
FUT_EXPORT uint64_t fut_runtime_live(fut_runtime *rt);

/* Nonzero if the calling thread is rt's dispatcher (NULL: any runtime's),
 * else 0. */
FUT_EXPORT int fut_on_dispatcher(fut_runtime *rt);

/* ---- offload ---- */

/* Run fn(arg) on a compute worker (fut_submit) or a blocking-lane thread
 * (fut_submit_blocking); its return value resolves the future, and a
 * fut_raise inside it rejects the future. If the future is cancelled
 * before fn starts, fn never runs. Any thread. */
FUT_EXPORT fut_future *fut_submit(fut_runtime *rt, fut_work_fn fn, void *arg);
FUT_EXPORT fut_future *fut_submit_blocking(fut_runtime *rt, fut_work_fn fn, void *arg);

/* Inside work or a continuation: fail it with code (1 to 65535; others become
 * EINVAL) and a printf-style message. Returns NULL, so that
 * `return fut_raise(ENOENT, "no %s", name);` reads naturally. Called more
 * than once, the last call wins; once called, the function's return value
 * is ignored (a value that needs freeing is the function's to free).
 * Outside such a call it has no effect. */
FUT_EXPORT void *fut_raise(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Inside work: whether its future was cancelled, so that long work can
 * stop early; inside a coroutine: whether a cancel was asked of it (also
 * after an await took it). 0 outside work and coroutines. */
FUT_EXPORT int fut_cancelled(void);

/* ---- reading a future ---- */

FUT_EXPORT fut_future *fut_retain(fut_future *f);  /* returns f */
FUT_EXPORT void fut_release(fut_future *f);        /* NULL is a no-op */
FUT_EXPORT int fut_state(const fut_future *f);     /* enum fut_state; FUT_PENDING for NULL */
/* The value of a resolved future, else NULL (also for NULL). */
FUT_EXPORT void *fut_value(const fut_future *f);
/* 0 if resolved or pending (or f NULL), else the code (ECANCELED when
 * cancelled). Reading it marks the error as seen (see
 * fut_set_unobserved_hook). */
FUT_EXPORT int fut_error(fut_future *f);
/* The message of a rejected or cancelled future ("" otherwise, and for
 * NULL); valid as long as the caller holds f. When memory runs out, a
 * message the library had to format or copy (fut_raise,
 * fut_promise_reject, an error passed on by a continuation or a
 * combinator, a timeout's) is "" while the code is kept. */
FUT_EXPORT const char *fut_message(const fut_future *f);

/* Block until f settles or timeout_s seconds pass (< 0: no limit). For
 * threads outside the runtime. Returns 0 (settled: read it with fut_state,
 * fut_value, fut_error), ETIMEDOUT, EINVAL (f NULL, timeout_s NaN), or
 * EDEADLK when called on the dispatcher of f's runtime while f is pending
 * (waiting there would stop the very thread that settles continuations;
 * a settled f returns 0 there too), or FUT_EFORKED at once when f is
 * pending and belongs to a runtime made before the fork() that made this
 * process. Interrupted by a signal, it goes on waiting (never EINTR). On
 * a compute worker it runs other compute jobs while it waits, so the pool
 * cannot deadlock on its own waits. */
FUT_EXPORT int fut_wait(fut_future *f, double timeout_s);

/* ---- promises ---- */

/* A promise: the write side of a future that you settle yourself. NULL
 * with errno ENOMEM, FUT_EFORKED (rt made before the fork() that made
 * this process), or, for rt NULL, EAGAIN (the default runtime could not
 * be made). */
FUT_EXPORT fut_promise *fut_promise_new(fut_runtime *rt);
/* Its future (a new reference); NULL with errno EINVAL if p is NULL. */
FUT_EXPORT fut_future *fut_promise_future(fut_promise *p);
/* Settle it, from any thread: 0 if this call settled it, EALREADY if it
 * was settled already (the first settle wins), EINVAL for bad arguments
 * (p NULL; a code outside 1 to 65535), FUT_EFORKED (a pending promise of
 * a runtime made before the fork() that made this process: not settled;
 * a settled one gives EALREADY). */
FUT_EXPORT int fut_promise_resolve(fut_promise *p, void *value);
FUT_EXPORT int fut_promise_reject(fut_promise *p, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Run fn(arg) once if p's future is cancelled (fut_cancel, a timeout or
 * a combinator that cancels it): for code that wraps another library's
 * asynchronous operation (a libcurl transfer, a database query) and must
 * stop it. fn runs on the dispatcher after the cancel, as a continuation
 * does, and never if the future settles otherwise. Several hooks may be
 * registered; each runs once. Returns 0 (also when the future is
 * cancelled already: fn runs soon), EALREADY (it resolved or was
 * rejected: nothing registered), EINVAL (p or fn NULL), ENOMEM, or
 * FUT_EFORKED. Any thread. */
FUT_EXPORT int fut_promise_on_cancel(fut_promise *p, void (*fn)(void *arg), void *arg);

/* Drop the promise. If it never settled, its future is rejected with
 * FUT_EBROKEN ("broken promise"): nobody waits forever. NULL: no-op. In
 * the child of a fork(), a promise of the parent's runtime is only
 * released. */
FUT_EXPORT void fut_promise_free(fut_promise *p);

/* ---- continuations: each returns a new future; fn runs on the dispatcher ---- */

/* When f resolves: fn(value, arg); its return value resolves the new
 * future (fut_raise rejects it). When f is rejected or cancelled, fn does
 * not run and the new future settles as f did: rejected with f's code and
 * message, or cancelled.
 *
 * For all three: cancelling the new future before fn has run means fn
 * never runs; it does not cancel f. */
typedef void *(*fut_then_fn)(void *value, void *arg);
FUT_EXPORT fut_future *fut_then(fut_future *f, fut_then_fn fn, void *arg);

/* When f resolves: fn(value, arg) returns a future (a new reference;
 * ownership passes to the library), and the new future settles as that
 * one does (Promises/A+ then, Folly's thenValue): chaining steps that are
 * themselves asynchronous without nesting. fn returning NULL without a
 * fut_raise rejects the new future with EINVAL; fn returning the new
 * future itself rejects it with EDEADLK (it would wait for itself; a
 * longer cycle, a future that waits for the new one, is the caller's to
 * avoid). When f is rejected or cancelled, fn does not run and the new
 * future settles as f did. Cancelling the new future does not cancel the
 * future fn returned. */
typedef fut_future *(*fut_then_future_fn)(void *value, void *arg);
FUT_EXPORT fut_future *fut_then_future(fut_future *f, fut_then_future_fn fn, void *arg);

/* When f is rejected or cancelled: fn(code, message, arg); its return
 * value resolves the new future (fut_raise rejects it). When f resolves,
 * the new future resolves with the same value and fn does not run. */
typedef void *(*fut_catch_fn)(int code, const char *message, void *arg);
FUT_EXPORT fut_future *fut_catch(fut_future *f, fut_catch_fn fn, void *arg);

/* Whatever f's outcome: fn(f, arg) (f is valid during the call); the new
 * future then settles as f did (or is rejected if fn calls fut_raise). */
typedef void (*fut_finally_fn)(fut_future *f, void *arg);
FUT_EXPORT fut_future *fut_finally(fut_future *f, fut_finally_fn fn, void *arg);

/* ---- time ---- */

/* A future that resolves (value NULL) once seconds have passed: a timer
 * on the dispatcher, no thread is held, 56 bytes of memory while it is
 * pending. Never early; seconds must be >= 0 (else NULL, errno EINVAL).
 * Cancelling it removes the timer at once.
 *
 * Precision: the kernel wakes a sleeping thread tens to hundreds of
 * microseconds late, so the dispatcher ends its wait early by the
 * lateness it has seen lately and spins (polling for new tasks) until
 * the deadline: timers fire within tens of microseconds. The environment
 * variable FUT_TIMER_SPIN_US=N (read when a runtime is created) caps that
 * spin at N microseconds (default 250; 0 turns it off, for a dispatcher
 * that never spins at the cost of later timers). */
FUT_EXPORT fut_future *fut_sleep(fut_runtime *rt, double seconds);

/* A future that settles as f does, unless seconds pass first: then f is
 * cancelled and the timeout is rejected with ETIMEDOUT (asyncio.wait_for).
 * When f is a task, it is asked to cancel and the timeout waits for it to
 * end: ETIMEDOUT if it ended cancelled, else what it returned or raised
 * meanwhile; a zero timeout of a task not started yet never starts it.
 * If f settled just before the cancel (its continuations not yet run),
 * the timeout takes f's outcome instead: a result is never lost to a
 * timeout. Cancelling the timeout future cancels f. If f's runtime is
 * freed while the timeout is undecided, or was freed before this call,
 * no timer can fire: the timeout is rejected with ESHUTDOWN at once (f is
 * left alone; an f that settled first keeps its outcome). */
FUT_EXPORT fut_future *fut_timeout(fut_future *f, double seconds);

/* ---- combinators ----
 *
 * Each takes n futures of runtime rt (NULL: the default runtime) and keeps
 * its own references to them. Cancelling the combinator cancels them. */

/* Flags. */
#define FUT_SETTLED 1u     /* fut_gather: never reject (gather(return_exceptions=True)) */
#define FUT_CANCEL_REST 2u /* cancel the other futures once the result is decided */

/* Resolves when all have resolved, with a void ** array of their values
 * in input order (owned by the gather future, valid while it is held;
 * n = 0 resolves at once). The first error rejects it with that error
 * (a cancelled item rejects it with ECANCELED: the gather itself is not
 * cancelled); the others keep running unless FUT_CANCEL_REST is given
 * (asyncio's default is not to cancel them). With FUT_SETTLED it never
 * rejects: a failed item's value is NULL and fut_gather_item tells its
 * error. The same holds for fut_any and fut_race: a cancelled input is a
 * failure with ECANCELED, never a cancel of the combinator. */
FUT_EXPORT fut_future *fut_gather(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags);

/* Item i of a gather future (a borrowed reference, valid while g is
 * held), to read its state, value or error. NULL (errno EINVAL) if g is
 * not a gather or i is out of range. */
FUT_EXPORT fut_future *fut_gather_item(fut_future *g, size_t i);

/* The first of fs to resolve decides (its value); if all fail, the error
 * of the last to fail. n must be > 0. */
FUT_EXPORT fut_future *fut_any(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags);

/* The first of fs to settle decides, whatever its outcome. n > 0. */
FUT_EXPORT fut_future *fut_race(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags);

/* asyncio.wait: a future that resolves, never rejects, when `when` holds
 * for the n > 0 futures fs, or when timeout_s seconds have passed (< 0:
 * no limit), with the number of them settled then as its value
 * ((void *)(uintptr_t)count). Nothing is cancelled or read: the settled
 * ones are the "done" set, the pending ones the "pending" set (fut_state
 * tells), and their errors are still yours to read. Cancelling it cancels
 * only its timer. when:
 *   FUT_FIRST_COMPLETED  as soon as one settles;
 *   FUT_FIRST_EXCEPTION  as soon as one is rejected or cancelled, or all
 *                        have settled;
 *   FUT_ALL_COMPLETED    when all have settled.
 * NULL with errno EINVAL (fs NULL, n 0, when unknown, timeout NaN, an
 * input NULL or of another runtime) or ENOMEM. Any thread. */
#define FUT_FIRST_COMPLETED 1
#define FUT_FIRST_EXCEPTION 2
#define FUT_ALL_COMPLETED 3
FUT_EXPORT fut_future *fut_wait_many(fut_runtime *rt, fut_future *const *fs, size_t n, int when,
                                     double timeout_s);

/* Which input decided a fut_any or fut_race future f: *index is the input
 * whose outcome f took (fut_any rejected: the last input to fail).
 * Returns 0, EAGAIN (f is pending, or was cancelled before an input
 * decided), or EINVAL (f or index NULL, f not from fut_any or fut_race).
 * Any thread. */
FUT_EXPORT int fut_winner(fut_future *f, size_t *index);

/* ---- callbacks at a time (asyncio's loop.call_soon / call_later /
 * call_at) ----
 *
 * fn(arg) runs on rt's dispatcher (NULL: the default runtime) as a
 * continuation does: soon (after what is queued now), after seconds, or
 * at the time when of fut_time's clock. Its return value resolves the
 * returned future; fut_raise in it rejects it. Cancelling the future
 * before fn ran means fn never runs, and its timer is removed. If rt
 * shuts down first, the future is cancelled. NULL with errno EINVAL (fn
 * NULL, seconds < 0 or NaN, when NaN), ENOMEM, or, for rt NULL, the
 * default runtime's error; a future rejected with FUT_EFORKED for a
 * runtime of the parent after fork(). Any thread. */
FUT_EXPORT fut_future *fut_call_soon(fut_runtime *rt, fut_work_fn fn, void *arg);
FUT_EXPORT fut_future *fut_call_later(fut_runtime *rt, double seconds, fut_work_fn fn, void *arg);
FUT_EXPORT fut_future *fut_call_at(fut_runtime *rt, double when, fut_work_fn fn, void *arg);

/* The clock of the dispatchers' timers, in seconds (CLOCK_MONOTONIC): for
 * fut_call_at and deadlines (asyncio's loop.time()). Any thread. */
FUT_EXPORT double fut_time(void);

/* ---- cancellation ---- */

/* Cancel f if it is pending. Two rules (asyncio's):
 *   - a plain future (a promise's, work, a sleep, a continuation, a
 *     combinator) settles as cancelled (ECANCELED) at once: its queued
 *     work is skipped (running work can poll fut_cancelled), a sleep's
 *     timer is removed, a combinator's futures are cancelled, its
 *     continuations see ECANCELED. A combinator whose inputs have all
 *     settled refuses (EALREADY), even before its own result is written:
 *     a computed result is never lost to a cancel;
 *   - a task (a coroutine's future, fut_async) is asked: if it has not
 *     started, it never will and settles cancelled at once; else its
 *     pending await (or its next await or yield) returns ECANCELED, and
 *     the task settles when its function returns: cancelled if it passes
 *     the cancel on (return fut_raise(ECANCELED, ...)) or returns while a
 *     cancel it never awaited is pending; else with what it returned or
 *     raised (it handled the cancel). Awaiting it waits for that end, so
 *     its cleanup is done when the await returns.
 * Returns 0 if this call cancelled it or asked the task (also when a
 * request is pending already), EALREADY if it had settled, EINVAL, or
 * FUT_EFORKED (a pending future of a runtime made before the fork() that
 * made this process: left as is). */
FUT_EXPORT int fut_cancel(fut_future *f);

/* ---- coroutines: async and await ----
 *
 * A coroutine is a function of the pthread_create type that runs on the
 * dispatcher thread with a stack of its own, so that it can wait for a
 * future in the middle of its code (fut_await) while the dispatcher runs
 * other coroutines, continuations and timers: concurrent code that reads
 * like sequential code, as with asyncio's async def and await. Its return
 * value resolves its future; fut_raise inside it rejects it.
 *
 * Because coroutines, continuations and timers of a runtime all run on
 * its one dispatcher thread, code between two awaits runs alone and needs
 * no locks, and must not block: offload blocking calls (fut_submit_blocking)
 * and await their futures.
 *
 * Memory: a suspended coroutine costs its future and a small record
 * (about 200 bytes) plus the pages of its stack it has touched (at least
 * one, 4 KiB); the stack's full size (default 256 KiB, see
 * fut_runtime_set_stack_size) is address space only, with a 64 KiB guard
 * region below it, so running off the end is a clean SIGSEGV, never
 * silent corruption. Finished coroutines' stacks are kept for reuse (up
 * to 256). Linux allows 65530 memory mappings a process by default
 * (vm.max_map_count) and a stack takes two: about 32,000 coroutines can
 * be suspended at once unless that limit is raised.
 *
 * Floating point: the rounding mode and exception masks (MXCSR, the x87
 * control word, FPCR) belong to the dispatcher thread and are not saved
 * per coroutine: a coroutine that changes them must restore them before
 * it awaits or yields.
 *
 * Debugging: `bt` in gdb shows the running coroutine's stack down to the
 * frame where it started; docs/TUTORIAL.md ("Debugging") has a gdb
 * command that prints every suspended coroutine's backtrace. ASan and
 * TSan builds of the library tell the sanitizers about every switch.
 */

/* Start fn(arg) as a coroutine on rt's dispatcher (NULL: the default
 * runtime) and return its future at once (asyncio.create_task): it starts
 * when the dispatcher gets to it, after what is queued now. NULL with
 * errno EINVAL (fn NULL) or ENOMEM. Any thread. Its future is rejected
 * with ENOMEM if no stack can be had when it starts. Its future is a
 * task: cancelling it before it started means it never runs (cancelled
 * at once); while it runs, a cancel is a request: its pending fut_await
 * (or fut_yield) returns ECANCELED, once, and the future it awaited is
 * cancelled (asked, if a task); it may clean up, await again, and then
 * pass the cancel on (return fut_raise(ECANCELED, "...")) or return a
 * value: its future settles as it returns (see fut_cancel). */
FUT_EXPORT fut_future *fut_async(fut_runtime *rt, fut_work_fn fn, void *arg);

/* Wait for f and return its value (NULL if it failed), with *err (may be
 * NULL) set to 0 or f's error code (its message: fut_message(f)).
 * In a coroutine: suspends only this coroutine until f settles (an
 * already settled f returns at once, without a switch); returns
 * ECANCELED if the coroutine is cancelled meanwhile (see fut_async), or
 * EDEADLK if f is the coroutine's own future.
 * On any other thread but a dispatcher: blocks the thread until f
 * settles (fut_wait; a pool worker runs other jobs meanwhile), so helper
 * functions work from both worlds. In a continuation (on a dispatcher,
 * not in a coroutine): returns f's outcome if it has settled, else
 * EDEADLK at once (waiting there would stop the dispatcher).
 * f NULL: EINVAL. FUT_EFORKED: f is pending, and f, or the calling
 * coroutine, belongs to a runtime made before the fork() that made this
 * process. The caller keeps its reference on f. */
FUT_EXPORT void *fut_await(fut_future *f, int *err);

/* fut_await(f, err), then fut_release(f): for a future made only to be
 * awaited (`v = fut_await_release(fut_submit(...), &err)`). f NULL: NULL,
 * *err EINVAL. */
FUT_EXPORT void *fut_await_release(fut_future *f, int *err);

/* asyncio.sleep in one call: in a coroutine, suspend it for seconds (a
 * sleep of its runtime, awaited) and return 0, or ECANCELED if it was
 * cancelled meanwhile (the sleep is removed), or ENOMEM; on a thread that
 * is no dispatcher, sleep that thread (nanosleep; never EINTR) and return
 * 0; in a plain continuation on a dispatcher, EDEADLK at once. EINVAL for
 * seconds < 0 or NaN. */
FUT_EXPORT int fut_asleep(double seconds);

/* In a coroutine: let everything queued on the dispatcher run, then go on
 * (asyncio.sleep(0)). Returns 0, or ECANCELED if the coroutine was
 * cancelled, or FUT_EFORKED in the child of a fork() made by the
 * coroutine. Anywhere else (a continuation included): EPERM, and nothing
 * happens. */
FUT_EXPORT int fut_yield(void);

/* Nonzero if the calling code runs in a coroutine, else 0. */
FUT_EXPORT int fut_in_coroutine(void);

/* asyncio.run: run fn(arg) as a coroutine on rt (NULL: the default
 * runtime) and block until it returns. Returns 0 with its value in
 * *result (result may be NULL), or its error code, or one of these
 * (*result NULL whatever failed): EINVAL (fn NULL), ENOMEM, EDEADLK on a dispatcher thread, FUT_EFORKED
 * (rt made before the fork() that made this process), or, for rt NULL,
 * EAGAIN (the default runtime could not be made). For the error's
 * message, use fut_async and fut_wait instead. */
FUT_EXPORT int fut_run(fut_runtime *rt, fut_work_fn fn, void *arg, void **result);

/* The smallest coroutine stack fut_runtime_set_stack_size accepts: the
 * library's own calls in a coroutine (fut_await, fut_yield, fut_sleep,
 * fut_submit, and fut_raise formatting a message of ordinary conversions)
 * fit in it in every build, AddressSanitizer's included (which needs
 * about 8 KiB for them). Code of your own needs its frames on top: glibc's
 * printf alone takes tens of KiB for a long double with a large exponent. */
#define FUT_STACK_MIN (16u * 1024u)

/* Usable bytes of the stacks of rt's coroutines (rounded up to pages;
 * default 256 KiB). Call it before the first fut_async on rt. Returns 0,
 * EINVAL (below FUT_STACK_MIN or above 1 GiB), EBUSY (a coroutine has
 * started on rt already: the size is fixed), FUT_EFORKED (rt was made
 * before the fork() that made this process), or, for rt NULL, the error
 * of making the default runtime (EAGAIN, ENOMEM). */
FUT_EXPORT int fut_runtime_set_stack_size(fut_runtime *rt, size_t bytes);

/* ---- debug mode ----
 *
 * Set FUT_DEBUG=1 in the environment (read when a runtime is created) and
 * every continuation, and every step of a coroutine (from a resume to its
 * next await, yield or return), that holds the dispatcher for 100 ms or
 * more is reported on stderr with its function's name (from the dynamic symbol
 * table: static functions show as an address and their binary, so link
 * with -rdynamic to see them named), as asyncio's debug mode does.
 * FUT_DEBUG_SLOW_MS=N sets another threshold. */

/* ---- errors nobody read ---- */

/* Called when a rejected future is freed and nobody read its error
 * (fut_error, a fut_catch, or a continuation or combinator that passed it
 * on, FUT_SETTLED gathers included). Cancelled futures are not reported:
 * a cancel is something the program did. The default hook prints one
 * line on stderr with the code and message. NULL restores the default.
 * Called on the thread that dropped the last reference; setting it is
 * safe at any time from any thread (a report running meanwhile uses the
 * hook it found). */
typedef void (*fut_unobserved_fn)(int code, const char *message, void *arg);
FUT_EXPORT void fut_set_unobserved_hook(fut_unobserved_fn fn, void *arg);

/* ------------------------------------------------------------------------
 * Waiting on descriptors: sockets, pipes and the like (fut_io_*, fut_read,
 * fut_tcp_*, fut_stream_*, fut_serve)
 *
 * A runtime's dispatcher watches descriptors as it watches timers (epoll,
 * set up the first time a coroutine or fut_io_wait on that runtime has to
 * wait for one): a coroutine that reads a socket with nothing to read is
 * suspended, and only it, until the descriptor is ready, so one thread
 * serves thousands of connections (asyncio's sock_* calls and streams).
 * A runtime that never waits on a descriptor never makes the poller.
 *
 * Where a call runs decides how it waits (every call below that may wait:
 * fut_read .. fut_accept, fut_connect, fut_tcp_connect, the stream reads
 * and writes, fut_open_connection):
 *   - in a coroutine: it tries the system call; if that would block, it
 *     suspends only this coroutine until the descriptor is ready (or the
 *     timeout passes), then tries again. Cancelling the coroutine makes
 *     the pending call return -ECANCELED (once; the cancel is taken);
 *   - on a thread that is no dispatcher (main, your threads, pool work):
 *     it blocks that thread (poll(2)) the same way, with the same
 *     timeout, so that helper functions work from both worlds;
 *   - in a plain continuation on a dispatcher: -EDEADLK at once, before
 *     any system call (waiting there would stop the dispatcher).
 *
 * Return values: the calls that work on descriptors (fut_close and every
 * call after fut_io_detach that returns an int or ssize_t) return a count
 * or a descriptor (>= 0) on success and a negated errno code on failure
 * (-ECONNREFUSED), as the kernel and liburing do; they never set errno.
 * fut_io_detach follows the runtime's convention (0 or a positive code),
 * and fut_stream_new, fut_open_connection and fut_serve, which make an
 * object, return NULL with errno set. Errors come back as codes, never as a signal: writes
 * to a socket or pipe whose reader is gone return -EPIPE and raise no
 * SIGPIPE. Common codes: -EBADF (not an open descriptor), -EINVAL (bad
 * arguments: a NULL buffer with n > 0, a NaN timeout), -ETIMEDOUT (the
 * timeout passed), -ECANCELED, -EDEADLK, -ECONNREFUSED, -ECONNRESET,
 * -EPIPE, -FUT_EFORKED (in the child of a fork(), a coroutine of the
 * parent's runtime).
 *
 * Timeouts: timeout_s < 0 means no limit; 0 means try once and never wait
 * (-ETIMEDOUT if the call would block); it bounds the whole call (a write
 * of many chunks, a connect that tries several addresses), not each wait.
 *
 * Non-blocking mode: on sockets, reads and writes pass MSG_DONTWAIT and
 * leave the descriptor's mode alone. The library sets O_NONBLOCK (and
 * leaves it set) on a socket given to fut_connect or fut_accept, and on a
 * descriptor that is not a socket (a pipe, a terminal) given to fut_read
 * or fut_write, since those have no per-call way not to block. The
 * sockets it makes (fut_accept, fut_tcp_connect, fut_tcp_listen,
 * fut_open_connection, fut_serve) are non-blocking and close-on-exec.
 * Regular files are always "ready": their reads block the calling thread
 * briefly even in a coroutine; offload big file I/O with
 * fut_submit_blocking.
 *
 * Closing: close a watched descriptor with fut_close (or call
 * fut_io_detach first): waits pending on it in the calling thread's
 * runtime end with -EBADF (a readiness future is rejected with EBADF). A
 * descriptor closed with plain close(2) while a wait is pending on it
 * leaves that wait pending until its timeout or cancel (the kernel drops
 * a closed descriptor from the poller without a word); the runtime never
 * mixes it up with a later descriptor that gets the same number: the
 * first wait on that number checks the descriptor's identity, ends the
 * old waits with EBADF and watches the new one.
 *
 * fork(): the child must not use descriptors through a runtime of the
 * parent (FUT_EFORKED); the parent's poller is left alone. A runtime made
 * in the child works fully.
 * ---------------------------------------------------------------------- */

/* Readiness events: what fut_io_wait waits for, and what its future
 * resolves with (several may be set). */
#define FUT_IO_READ 0x1u  /* readable (or end of stream) */
#define FUT_IO_WRITE 0x4u /* writable */
#define FUT_IO_ERR 0x8u   /* an error is pending on it (only in the result) */
#define FUT_IO_HUP 0x10u  /* the peer hung up (only in the result) */

/* A future that resolves when fd is ready for one of events (FUT_IO_READ,
 * FUT_IO_WRITE or both), on rt's dispatcher (NULL: the default runtime),
 * with the events seen as its value: (void *)(uintptr_t)FUT_IO_READ | ...
 * (FUT_IO_ERR and FUT_IO_HUP may be in it whatever was asked, and then
 * the events asked for are too: the next call on fd tells the error). No
 * thread is held while it waits; it works with fut_then, fut_await,
 * fut_timeout, fut_race and fut_gather. Cancelling it removes the
 * interest. It resolves as soon as fd is ready, also when it was ready
 * before the call (level semantics: wait, then read until EAGAIN, then
 * wait again). Rejected with EPERM (fd is a regular file or a directory:
 * always ready, epoll refuses them), EBADF (fd not open, or detached or
 * closed and its number reused while waited on), ENOMEM, FUT_EFORKED
 * (rt was made before the fork() that made this process); cancelled when
 * rt shuts down. NULL with errno EINVAL (fd < 0, events not a nonempty
 * subset of FUT_IO_READ | FUT_IO_WRITE) or ENOMEM. Any thread. */
FUT_EXPORT fut_future *fut_io_wait(fut_runtime *rt, int fd, unsigned events);

/* Stop watching fd on rt (NULL: the runtime of the calling coroutine or
 * continuation, else the default runtime, if it has been made): its
 * pending waits end with EBADF, and the poller forgets it. Call it before
 * you close fd (fut_close does both). From another thread than rt's
 * dispatcher it waits until the dispatcher has done it (a few
 * microseconds), so that the close that follows cannot race with it.
 * Returns 0 (also when fd was not watched), EINVAL (fd < 0), EDEADLK
 * (called on the dispatcher of another runtime: detach from there with a
 * task of rt instead), FUT_EFORKED. */
FUT_EXPORT int fut_io_detach(fut_runtime *rt, int fd);

/* fut_io_detach(NULL, fd), then close(fd): detaches fd only from the
 * runtime of the calling coroutine or continuation, or, on another
 * thread, from the default runtime (a descriptor that a runtime made with
 * fut_runtime_new watches, closed from a plain thread: call
 * fut_io_detach(rt, fd) first). In the child of a fork() it only closes.
 * Returns 0, or -EBADF (fd < 0 or not open), or close's error (the
 * descriptor is closed anyway). */
FUT_EXPORT int fut_close(int fd);

/* Read up to n bytes, as read(2): the count read, 0 at end of stream (or
 * n == 0), or -code. Waits until some data is there. */
FUT_EXPORT ssize_t fut_read(int fd, void *buf, size_t n, double timeout_s);

/* Write all n bytes (several writes and waits if need be): returns n, or
 * -code. On an error or the timeout after part of the buffer was written,
 * the error is returned and the count of what was written is not (as
 * asyncio's sock_sendall). */
FUT_EXPORT ssize_t fut_write(int fd, const void *buf, size_t n, double timeout_s);

/* recv(2) with flags (MSG_PEEK, MSG_OOB, MSG_TRUNC ...; MSG_DONTWAIT is
 * added, so MSG_WAITALL does not wait for all n): one receive once data is
 * there, the count or 0 at end of stream, or -code. */
FUT_EXPORT ssize_t fut_recv(int fd, void *buf, size_t n, int flags, double timeout_s);

/* send(2) of all n bytes with flags (MSG_MORE, MSG_OOB ...; MSG_DONTWAIT
 * and MSG_NOSIGNAL are added): returns n, or -code (as fut_write). */
FUT_EXPORT ssize_t fut_send(int fd, const void *buf, size_t n, int flags, double timeout_s);

/* Accept a connection on listening socket fd (made non-blocking): the new
 * descriptor (non-blocking, close-on-exec), or -code. addr / addrlen as
 * accept(2) (both may be NULL). Errors of the new connection that
 * accept(2) reports (ECONNABORTED ...) are skipped: it waits for the next
 * one. */
FUT_EXPORT int fut_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, double timeout_s);

/* Connect socket fd to addr (non-blocking connect, then SO_ERROR): 0, or
 * -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH ... On an error, timeout or
 * cancel, fd is left as it is: close it (a socket whose connect failed
 * cannot be connected again). */
FUT_EXPORT int fut_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout_s);

/* Connect to host:port over TCP (host a name or a numeric IPv4 or IPv6
 * address, port a number or a service name): resolves the name
 * (getaddrinfo, on the blocking lane when called in a coroutine; numeric
 * addresses need no lookup) and tries each address in turn until one
 * accepts. Returns the connected socket (non-blocking, close-on-exec,
 * TCP_NODELAY) or -code: the last address's error, -EINVAL (host or port
 * NULL), -ENOENT (the name or service is not known), -EAGAIN (the name
 * server did not answer, try again), -EIO (the lookup failed for good),
 * -ETIMEDOUT (the whole call; on a plain thread the lookup itself is not
 * bounded by it, only the connects). */
FUT_EXPORT int fut_tcp_connect(const char *host, const char *port, double timeout_s);

/* A TCP socket listening on host:port (host NULL: every local address,
 * IPv4 and IPv6 where the system allows; port "0": the kernel picks, see
 * fut_local_port), with SO_REUSEADDR, non-blocking, close-on-exec;
 * backlog <= 0 means SOMAXCONN. Returns it, or -code: -EADDRINUSE,
 * -EACCES, -ENOENT (unknown name), -EINVAL. It does not wait for the
 * network: a numeric host needs no lookup; a name is resolved on the
 * blocking lane in a coroutine, on the calling thread elsewhere, and
 * refused with -EDEADLK in a plain continuation on a dispatcher. */
FUT_EXPORT int fut_tcp_listen(const char *host, const char *port, int backlog);

/* The local port of a bound socket (getsockname), or -code. Any thread. */
FUT_EXPORT int fut_local_port(int fd);

/* ---- streams: buffered reading for line protocols ----
 *
 * A stream owns a connected descriptor and a read buffer that grows up to
 * a limit (asyncio's StreamReader and StreamWriter in one object). Reads
 * that find what they need buffered return without a system call. One
 * coroutine (or thread) at a time may use a stream. End of stream is 0,
 * or a short count; errors are negative. */

typedef struct fut_stream fut_stream;

/* A stream over fd (a socket, a pipe: anything fut_read reads), which it
 * now owns (fut_stream_close closes it); its mode is left as it is.
 * limit: the most bytes buffered, so the longest line or chunk a read
 * until a delimiter can return (0: 64 KiB, as asyncio; the streams of
 * fut_open_connection and fut_serve have that). NULL with errno EINVAL
 * (fd < 0) or ENOMEM (fd is then still the caller's). Any thread. */
FUT_EXPORT fut_stream *fut_stream_new(int fd, size_t limit);

/* fut_tcp_connect, then fut_stream_new (asyncio.open_connection). NULL
 * with errno set to the connect's code (positive: ECONNREFUSED ...) or
 * ENOMEM (the socket is closed then). */
FUT_EXPORT fut_stream *fut_open_connection(const char *host, const char *port, double timeout_s);

/* Its descriptor (still owned by the stream), or -EINVAL for NULL. */
FUT_EXPORT int fut_stream_fd(const fut_stream *s);

/* Up to n bytes: what is buffered, else one read. The count, 0 at end of
 * stream, or -code. */
FUT_EXPORT ssize_t fut_stream_read(fut_stream *s, void *buf, size_t n, double timeout_s);

/* Exactly n bytes, unless the stream ends first: returns n, or the fewer
 * bytes that came before the end (0 if none), or -code (what was read
 * then is lost; on -ETIMEDOUT and -ECANCELED it stays buffered for the
 * next read when it fits the limit). */
FUT_EXPORT ssize_t fut_stream_readexactly(fut_stream *s, void *buf, size_t n, double timeout_s);

/* The bytes up to and including the next delimiter (dlen > 0 bytes at
 * delim): *data points at them in the stream's buffer, valid until the
 * next read or close of s (a fut_stream_write does not move them). Returns their count; at end of stream the bytes left
 * without a delimiter (a count whose end is not the delimiter), then 0;
 * -EMSGSIZE if limit bytes came without a delimiter (they stay buffered:
 * fut_stream_read drains them); -code. */
FUT_EXPORT ssize_t fut_stream_readuntil(fut_stream *s, const void *delim, size_t dlen,
                                        const char **data, double timeout_s);

/* fut_stream_readuntil(s, "\n", 1, line, timeout_s): the next line,
 * with its '\n'. */
FUT_EXPORT ssize_t fut_stream_readline(fut_stream *s, const char **line, double timeout_s);

/* fut_write on the stream's descriptor. */
FUT_EXPORT ssize_t fut_stream_write(fut_stream *s, const void *buf, size_t n, double timeout_s);

/* Close the descriptor (fut_close) and free the stream. NULL: 0. Returns
 * 0 or fut_close's -code (the stream is freed anyway). */
FUT_EXPORT int fut_stream_close(fut_stream *s);

/* ---- servers (asyncio.start_server) ---- */

typedef struct fut_server fut_server;

/* A connection handler: runs as a coroutine of its own, one per accepted
 * connection, and owns nothing: the server closes the stream when the
 * handler returns. */
typedef void (*fut_conn_fn)(fut_stream *conn, void *arg);

/* Listen on host:port (as fut_tcp_listen; backlog SOMAXCONN) and serve:
 * a coroutine on rt (NULL: the default runtime) accepts connections and
 * starts fn(conn, arg) as a coroutine for each (a stream with the default
 * limit). When the process is out of descriptors (EMFILE) the accept loop
 * waits 100 ms and tries again. Returns the server, or NULL with errno
 * (EADDRINUSE, EACCES, ENOENT, EINVAL for NULL fn or port, ENOMEM,
 * EDEADLK for a host name in a plain continuation, FUT_EFORKED, or for
 * rt NULL the default runtime's EAGAIN). Any thread. If the runtime shuts down while it serves,
 * the accept loop and every handler are cancelled (their pending calls
 * return -ECANCELED) and run to their ends. */
FUT_EXPORT fut_server *fut_serve(fut_runtime *rt, const char *host, const char *port, fut_conn_fn fn,
                                 void *arg);

/* The port it listens on (useful with port "0"), or -EINVAL for NULL. */
FUT_EXPORT int fut_server_port(const fut_server *s);

/* Stop serving: the listening socket is closed now (new clients are
 * refused), handlers that run go on to their ends. Returns a future that
 * resolves (value NULL) when the last handler has returned
 * (asyncio's close() then wait_closed()); the server is freed then: do
 * not use s after this call. From a thread that is no dispatcher, or
 * from rt's own coroutines and continuations, the listening socket is
 * closed when it returns; from another runtime's dispatcher, very soon
 * after (rt's dispatcher does it). Call it exactly once per server, also
 * after rt was freed (a server is never freed otherwise). NULL with errno
 * EINVAL (s NULL) or ENOMEM (nothing was done: call it again). Any
 * thread. */
FUT_EXPORT fut_future *fut_server_close(fut_server *s);

#ifdef __cplusplus
}
#endif

#endif /* FUTURES_H */
