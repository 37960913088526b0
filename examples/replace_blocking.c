/* replace_blocking.c - a blocking program made concurrent: checksum every regular file
 * under DIRECTORY (default /usr/share/doc; at most 2000), one read() after another, then
 * as one blocking job per file (asyncio.to_thread: fut_submit_blocking), all at once. A
 * continuation on the dispatcher counts files as they finish (one at a time: no lock);
 * fut_gather(FUT_SETTLED) waits for all, keeping on past an unreadable file. Pass two
 * finds pass one's page cache. cc replace_blocking.c $(pkg-config --cflags --libs futures) */
#define _XOPEN_SOURCE 700 /* nftw, clock_gettime */
#include <futures.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FILES = 2000, TIMEOUT_S = 300 /* then main calls it a hang */ };

static struct file { char *path; uint64_t sum; } files[MAX_FILES]; /* sum: by its job */
static size_t n_files, done; /* files found; finished (dispatcher only) */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* cannot fail for this clock */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int failed(const char *what, int err)
{
    fprintf(stderr, "replace_blocking: %s failed: %s\n", what, strerror(err));
    return 1;
}

/* nftw callback: remember regular files; skip directories, links, ... */
static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    if (n_files == MAX_FILES)
        return 1; /* stop the walk: enough */
    files[n_files].path = strdup(path);
    return files[n_files++].path == NULL ? 2 : 0; /* 2: no memory */
}

/* FNV-1a 64 of a file, with plain blocking read() calls. 0 or an errno. */
static int checksum_file(const char *path, uint64_t *sum)
{
    unsigned char buf[16384];
    ssize_t got, i;
    int fd = open(path, O_RDONLY), err = 0;
    *sum = 0xcbf29ce484222325u;
    if (fd < 0)
        return errno;
    while (err == 0 && (got = read(fd, buf, sizeof buf)) != 0) {
        if (got < 0 && errno != EINTR)
            err = errno;
        for (i = 0; i < got; i++)
            *sum = (*sum ^ buf[i]) * 0x100000001b3u;
    }
    close(fd); /* read-only: nothing to lose */
    return err;
}

/* The blocking job, on a blocking-lane thread: raise if unreadable. */
static void *checksum_job(void *arg)
{
    struct file *f = arg;
    int err = checksum_file(f->path, &f->sum);
    return err ? fut_raise(err, "%s: %s", f->path, strerror(err)) : f;
}

/* On the dispatcher, as each job settles (read or not): the progress line. */
static void count_done(fut_future *job, void *arg)
{
    (void)job, (void)arg;
    done++;
    if (done * 100 / n_files != (done - 1) * 100 / n_files) /* each new percent */
        fprintf(stderr, "\r  read %zu/%zu files%s", done, n_files, done == n_files ? "\n" : "");
}

static int concurrent(fut_runtime *rt, size_t *n, uint64_t *total)
{
    fut_future **jobs = calloc(n_files + 1, sizeof *jobs), *job, *all = NULL;
    size_t i;
    int err, rc = 0;
    if (jobs == NULL)
        return failed("calloc", errno);
    for (i = 0; i < n_files && rc == 0; i++) {
        if ((job = fut_submit_blocking(rt, checksum_job, &files[i])) == NULL)
            rc = failed("fut_submit_blocking", errno);
        else if ((jobs[i] = fut_finally(job, count_done, NULL)) == NULL)
            rc = failed("fut_finally", errno);
        fut_release(job); /* jobs[i] settles as it does */
    }
    if (rc == 0 && (all = fut_gather(rt, jobs, n_files, FUT_SETTLED)) == NULL)
        rc = failed("fut_gather", errno);
    if (rc == 0 && (err = fut_wait(all, TIMEOUT_S)) != 0)
        rc = failed("fut_wait", err);
    for (i = 0; i < n_files && rc == 0; i++) {
        if ((job = fut_gather_item(all, i)) == NULL)
            rc = failed("fut_gather_item", errno);
        else if (fut_error(job) == 0) /* else unreadable: skipped */
            *total += ((struct file *)fut_value(job))->sum, ++*n;
    }
    fut_release(all);
    for (i = 0; i < n_files; i++)
        fut_release(jobs[i]);
    free(jobs);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/usr/share/doc";
    uint64_t seq_sum = 0, con_sum = 0, sum;
    size_t i, seq_n = 0, con_n = 0;
    fut_runtime *rt;
    double start;
    int rc = nftw(dir, collect, 32, FTW_PHYS), err;
    if (rc != 0 && rc != 1) /* 1: the walk stopped at MAX_FILES */
        return failed(dir, rc == 2 ? ENOMEM : errno);
    /* Results: files read, the sum of their checksums (the same in any order) */
    start = now();
    for (i = 0; i < n_files; i++)
        if (checksum_file(files[i].path, &sum) == 0)
            seq_sum += sum, seq_n++;
    printf("Sequential: %zu files, checksum %016" PRIx64 ", %.2fs\n", seq_n, seq_sum,
           now() - start);
    if ((rt = fut_runtime_new(NULL)) == NULL) /* a dispatcher and a pool */
        return failed("fut_runtime_new", errno);
    start = now();
    if ((rc = concurrent(rt, &con_n, &con_sum)) == 0) {
        printf("Concurrent: %zu files, checksum %016" PRIx64 ", %.2fs\n", con_n, con_sum,
               now() - start);
        rc = seq_n != con_n || seq_sum != con_sum;
        printf("Same checksum: %s\n", rc ? "no" : "yes");
    }
    if ((err = fut_runtime_free(rt)) != 0) /* jobs use files[]: free them after */
        rc = failed("fut_runtime_free", err);
    for (i = 0; i < n_files; i++)
        free(files[i].path);
    return rc;
}
