/* test_future_debug.c - what libfutures prints for the user: the debug mode's slow-continuation and slow-coroutine-step warnings (FUT_DEBUG, FUT_DEBUG_SLOW_MS) and the default report of a rejected future nobody read. */
#include "testutil.h"

#include <fcntl.h>

/* Capture what the library writes to stderr while fn runs. */
static void capture_stderr(void (*fn)(void), char *out, size_t cap)
{
    char path[] = "/tmp/fut-debug-XXXXXX";
    int fd = mkstemp(path), saved;
    ssize_t n;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = pread(fd, out, cap - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
}

/* Exported (the test links with -export-dynamic) so the warning can name it. */
void *test_debug_slow_step(void *v, void *arg);
void *test_debug_slow_step(void *v, void *arg)
{
    (void)arg;
    usleep(40000);
    return v;
}

void *test_debug_quick_step(void *v, void *arg);
void *test_debug_quick_step(void *v, void *arg)
{
    (void)arg;
    return v;
}

static fut_then_fn step;

static void run_one_continuation(void)
{
    fut_runtime *rt = fut_runtime_new(NULL);
    fut_future *s, *t;

    ck_assert_ptr_nonnull(rt);
    s = fut_sleep(rt, 0);
    t = fut_then(s, step, (void *)(uintptr_t)7);
    ck_assert_int_eq(fut_wait(t, 10), 0);
    ck_assert_int_eq(fut_state(t), FUT_RESOLVED);
    fut_release(s);
    fut_release(t);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}

START_TEST(test_slow_continuation_named)
{
    char out[2048];

    setenv("FUT_DEBUG_SLOW_MS", "10", 1);
    step = test_debug_slow_step;
    capture_stderr(run_one_continuation, out, sizeof out);
    ck_assert_msg(strstr(out, "held the dispatcher") != NULL, "no warning in: %s", out);
    ck_assert_msg(strstr(out, "test_debug_slow_step") != NULL, "not named in: %s", out);
}
END_TEST

/* A coroutine whose step between two awaits blocks for 40 ms. */
void *test_debug_slow_coroutine(void *arg);
void *test_debug_slow_coroutine(void *arg)
{
    fut_future *s = fut_sleep(arg, 0); /* its own runtime */
    int err;
    fut_await(s, &err); /* a quick step first */
    fut_release(s);
    usleep(40000);      /* then a slow one */
    return NULL;
}

static void run_one_coroutine(void)
{
    fut_runtime *rt = fut_runtime_new(NULL);

    ck_assert_ptr_nonnull(rt);
    ck_assert_int_eq(fut_run(rt, test_debug_slow_coroutine, rt, NULL), 0);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}

START_TEST(test_slow_coroutine_named)
{
    char out[2048];

    setenv("FUT_DEBUG_SLOW_MS", "10", 1);
    capture_stderr(run_one_coroutine, out, sizeof out);
    ck_assert_msg(strstr(out, "a coroutine held the dispatcher") != NULL, "no warning in: %s", out);
    ck_assert_msg(strstr(out, "test_debug_slow_coroutine") != NULL, "not named in: %s", out);
    /* Only the slow step: one line. */
    ck_assert_msg(strchr(out, '\n') == strrchr(out, '\n'), "more than one warning: %s", out);
}
END_TEST

START_TEST(test_quick_continuation_silent)
{
    char out[2048];

    setenv("FUT_DEBUG_SLOW_MS", "10", 1);
    step = test_debug_quick_step;
    capture_stderr(run_one_continuation, out, sizeof out);
    ck_assert_msg(out[0] == '\0', "unexpected output: %s", out);
}
END_TEST

START_TEST(test_debug_off_by_default)
{
    char out[2048];

    unsetenv("FUT_DEBUG_SLOW_MS");
    unsetenv("FUT_DEBUG");
    step = test_debug_slow_step;
    capture_stderr(run_one_continuation, out, sizeof out);
    ck_assert_msg(out[0] == '\0', "unexpected output: %s", out);
}
END_TEST

START_TEST(test_debug_on_threshold_100ms)
{
    char out[2048];

    unsetenv("FUT_DEBUG_SLOW_MS");
    setenv("FUT_DEBUG", "1", 1);
    step = test_debug_slow_step; /* 40 ms: under asyncio's 100 ms */
    capture_stderr(run_one_continuation, out, sizeof out);
    ck_assert_msg(out[0] == '\0', "unexpected output: %s", out);
}
END_TEST

static void *fail_work(void *arg)
{
    (void)arg;
    return fut_raise(ENOENT, "no such thing: %s", "config.ini");
}

static void drop_unread_rejection(void)
{
    fut_runtime *rt = fut_runtime_new(NULL);
    fut_future *f;

    ck_assert_ptr_nonnull(rt);
    f = fut_submit(rt, fail_work, NULL);
    ck_assert_int_eq(fut_wait(f, 10), 0);
    ck_assert_int_eq(fut_state(f), FUT_REJECTED);
    fut_release(f); /* nobody read the error */
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}

static void drop_read_rejection(void)
{
    fut_runtime *rt = fut_runtime_new(NULL);
    fut_future *f;

    ck_assert_ptr_nonnull(rt);
    f = fut_submit(rt, fail_work, NULL);
    ck_assert_int_eq(fut_wait(f, 10), 0);
    ck_assert_int_eq(fut_error(f), ENOENT);
    fut_release(f);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}

START_TEST(test_unobserved_default_report)
{
    char out[2048];
    const char *first;

    capture_stderr(drop_unread_rejection, out, sizeof out);
    first = strstr(out, "no such thing: config.ini");
    ck_assert_msg(first != NULL, "no report in: %s", out);
    ck_assert_msg(strstr(first + 1, "no such thing") == NULL, "reported twice: %s", out);
    capture_stderr(drop_read_rejection, out, sizeof out);
    ck_assert_msg(out[0] == '\0', "read error reported: %s", out);
}
END_TEST

static Suite *future_debug_suite(void)
{
    Suite *s = suite_create("future_debug");
    TCase *tc = tu_tcase(s, "debug", 30);

    tcase_add_test(tc, test_slow_continuation_named);
    tcase_add_test(tc, test_slow_coroutine_named);
    tcase_add_test(tc, test_quick_continuation_silent);
    tcase_add_test(tc, test_debug_off_by_default);
    tcase_add_test(tc, test_debug_on_threshold_100ms);
    tcase_add_test(tc, test_unobserved_default_report);
    return s;
}

int main(void)
{
    return tu_run_suite(future_debug_suite());
}
