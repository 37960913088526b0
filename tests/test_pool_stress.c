/* test_pool_stress.c - pool under load: 1,000,000 jobs from 4 threads, a 100,000-node fan-out tree of jobs submitting jobs, mixed-lane chains, concurrent wait_idle callers; every job runs exactly once. */
#include "testutil.h"

/* ------------------------------------------------------------------------
 * 1,000,000 tiny jobs submitted from 4 threads at once (250,000 each).
 * Each job has its own byte, written without atomics: the pool's
 * submit -> run -> wait_idle ordering is what makes that race free (TSan
 * checks it).
 * ---------------------------------------------------------------------- */

#define MILLION 1000000u
#define SUBMITTERS 4u

typedef struct mjob {
    fut_pool_job job;
    uint32_t idx;
} mjob;

static unsigned char *hit;   /* per job: times it ran */
static atomic_uint bad_status;

static void mjob_fn(fut_pool_job *job, int status)
{
    mjob *m = TU_CONTAINER_OF(job, mjob, job);
    if (status != 0)
        atomic_fetch_add(&bad_status, 1);
    hit[m->idx]++;
}

typedef struct msub {
    fut_pool *pool;
    mjob *jobs;             /* this thread's slice */
    uint32_t first, count;  /* its job indexes */
    pthread_barrier_t *start;
    unsigned failed;        /* submits that did not return 0 */
    int first_rc;
} msub;

static void *msub_main(void *arg)
{
    msub *s = arg;
    pthread_barrier_wait(s->start);
    for (uint32_t k = 0; k < s->count; k++) {
        mjob *m = &s->jobs[k];
        int rc;
        m->idx = s->first + k;
        rc = fut_pool_submit(s->pool, FUT_LANE_COMPUTE, &m->job, mjob_fn);
        if (rc != 0 && s->failed++ == 0)
            s->first_rc = rc;
    }
    return NULL;
}

START_TEST(test_million_jobs)
{
    fut_pool *p = fut_pool_new(NULL);
    mjob *jobs = calloc(MILLION, sizeof *jobs);
    pthread_t th[SUBMITTERS];
    msub sub[SUBMITTERS];
    pthread_barrier_t start;
    uint64_t sum = 0;
    fut_pool_stats s;

    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(jobs);
    hit = calloc(MILLION, 1);
    ck_assert_ptr_nonnull(hit);
    atomic_store(&bad_status, 0);
    pthread_barrier_init(&start, NULL, SUBMITTERS);
    for (unsigned t = 0; t < SUBMITTERS; t++) {
        sub[t].pool = p;
        sub[t].first = t * (MILLION / SUBMITTERS);
        sub[t].count = MILLION / SUBMITTERS;
        sub[t].jobs = jobs + sub[t].first;
        sub[t].start = &start;
        sub[t].failed = 0;
        sub[t].first_rc = 0;
        ck_assert_int_eq(pthread_create(&th[t], NULL, msub_main, &sub[t]), 0);
    }
    for (unsigned t = 0; t < SUBMITTERS; t++) {
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);
        ck_assert_msg(sub[t].failed == 0, "submitter %u: %u submits failed, first with %d", t,
                      sub[t].failed, sub[t].first_rc);
    }
    pthread_barrier_destroy(&start);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_uint_eq(atomic_load(&bad_status), 0);
    for (uint32_t i = 0; i < MILLION; i++) {
        TU_REQUIRE(hit[i] == 1, "job %u ran %u times", i, hit[i]);
        sum += hit[i];
    }
    ck_assert_uint_eq(sum, MILLION);
    s = tu_stats(p, FUT_LANE_COMPUTE);
    ck_assert_uint_eq(s.completed, MILLION);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    ck_assert_uint_eq(s.cancelled, 0);
    ck_assert_int_eq(fut_pool_free(p), 0);
    free(hit);
    hit = NULL;
    free(jobs);
}
END_TEST

/* ------------------------------------------------------------------------
 * A fan-out tree of 100,000 jobs: node i submits nodes 2i+1 and 2i+2 while
 * they are < 100,000. Each node is malloc'd by its parent and freed in its
 * own fn. _i = 1 puts some nodes on the blocking lane.
 * ---------------------------------------------------------------------- */

#define NODES 100000u

typedef struct node {
    fut_pool_job job;
    uint32_t idx;
} node;

static fut_pool *tree_pool;
static unsigned char *tree_hit; /* per node: times it ran */
static int tree_mixed;

static void node_fn(fut_pool_job *job, int status);

static int node_lane(uint32_t idx)
{
    return tree_mixed && idx % 5 == 3 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE;
}

static int submit_node(uint32_t idx)
{
    node *n = malloc(sizeof *n);
    int rc;
    if (n == NULL)
        return ENOMEM;
    n->idx = idx;
    rc = fut_pool_submit(tree_pool, node_lane(idx), &n->job, node_fn);
    if (rc != 0)
        free(n);
    return rc;
}

static void node_fn(fut_pool_job *job, int status)
{
    node *n = TU_CONTAINER_OF(job, node, job);
    uint32_t i = n->idx;
    free(n);
    TU_WCHECK_EQ(status, 0);
    if (node_lane(i) == FUT_LANE_BLOCKING)
        TU_WCHECK(tu_on_lane_thread(FUT_LANE_BLOCKING));
    tree_hit[i]++;
    for (uint32_t c = 2 * i + 1; c <= 2 * i + 2 && c < NODES; c++)
        TU_WCHECK_EQ(submit_node(c), 0);
}

START_TEST(test_fanout_tree)
{
    uint64_t done, expect_blocking = 0;

    tree_mixed = _i;
    tree_pool = tu_pool_new(0, 8, 0);
    tree_hit = calloc(NODES, 1);
    ck_assert_ptr_nonnull(tree_hit);
    ck_assert_int_eq(submit_node(0), 0);
    ck_assert_int_eq(fut_pool_wait_idle(tree_pool), 0);
    TU_ASSERT_NO_WFAIL();
    for (uint32_t i = 0; i < NODES; i++) {
        TU_REQUIRE(tree_hit[i] == 1, "node %u ran %u times", i, tree_hit[i]);
        expect_blocking += node_lane(i) == FUT_LANE_BLOCKING;
    }
    done = tu_stats(tree_pool, FUT_LANE_COMPUTE).completed;
    ck_assert_uint_eq(done, NODES - expect_blocking);
    ck_assert_uint_eq(tu_stats(tree_pool, FUT_LANE_BLOCKING).completed, expect_blocking);
    ck_assert_int_eq(fut_pool_free(tree_pool), 0);
    tree_pool = NULL;
    free(tree_hit);
    tree_hit = NULL;
}
END_TEST

/* ------------------------------------------------------------------------
 * Mixed lanes: chains that hop between the lanes by resubmitting their own
 * job from its fn (blocking -> compute -> blocking ...), each hop also
 * submitting a leaf job to the other lane, while outside threads submit to
 * both lanes at once.
 * ---------------------------------------------------------------------- */

#define CHAINS 256
#define CHAIN_HOPS 64
#define OUTSIDERS 2
#define OUTSIDE_JOBS 20000

typedef struct hop {
    fut_pool_job job;
    fut_pool *pool;
    int lane;          /* lane of the hop now running */
    int hops;          /* hops run */
    atomic_int *leaves;
} hop;

typedef struct leaf {
    fut_pool_job job;
    atomic_int *leaves;
    int lane;
} leaf;

static void leaf_fn(fut_pool_job *job, int status)
{
    leaf *l = TU_CONTAINER_OF(job, leaf, job);
    TU_WCHECK_EQ(status, 0);
    if (l->lane == FUT_LANE_BLOCKING)
        TU_WCHECK(tu_on_lane_thread(FUT_LANE_BLOCKING));
    atomic_fetch_add(l->leaves, 1);
    free(l);
}

static void hop_fn(fut_pool_job *job, int status)
{
    hop *h = TU_CONTAINER_OF(job, hop, job);
    leaf *l;
    TU_WCHECK_EQ(status, 0);
    if (h->lane == FUT_LANE_BLOCKING)
        TU_WCHECK(tu_on_lane_thread(FUT_LANE_BLOCKING));
    h->hops++; /* one hop at a time: the pool orders them */
    l = malloc(sizeof *l);
    TU_WCHECK(l != NULL);
    if (l != NULL) {
        l->leaves = h->leaves;
        l->lane = 1 - h->lane;
        TU_WCHECK_EQ(fut_pool_submit(h->pool, l->lane, &l->job, leaf_fn), 0);
    }
    if (h->hops < CHAIN_HOPS) {
        h->lane = 1 - h->lane;
        TU_WCHECK_EQ(fut_pool_submit(h->pool, h->lane, &h->job, hop_fn), 0);
    }
}

typedef struct outsider {
    fut_pool *pool;
    tu_cjob *jobs;
    unsigned n;
    unsigned failed;
} outsider;

static void *outsider_main(void *arg)
{
    outsider *o = arg;
    for (unsigned i = 0; i < o->n; i++) {
        tu_cjob_init(&o->jobs[i], NULL);
        if (fut_pool_submit(o->pool, i % 4 == 0 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE,
                            &o->jobs[i].job, tu_cjob_fn) != 0)
            o->failed++;
    }
    return NULL;
}

START_TEST(test_mixed_lanes)
{
    fut_pool *p = tu_pool_new(2, 6, 0);
    hop *hs = calloc(CHAINS, sizeof *hs);
    tu_cjob *oj = calloc((size_t)OUTSIDERS * OUTSIDE_JOBS, sizeof *oj);
    outsider o[OUTSIDERS];
    pthread_t th[OUTSIDERS];
    atomic_int leaves;
    fut_pool_stats c, b;

    ck_assert(hs && oj);
    atomic_init(&leaves, 0);
    for (int k = 0; k < OUTSIDERS; k++) {
        o[k].pool = p;
        o[k].jobs = oj + (size_t)k * OUTSIDE_JOBS;
        o[k].n = OUTSIDE_JOBS;
        o[k].failed = 0;
        ck_assert_int_eq(pthread_create(&th[k], NULL, outsider_main, &o[k]), 0);
    }
    for (int i = 0; i < CHAINS; i++) {
        hs[i].pool = p;
        hs[i].lane = i % 2 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE;
        hs[i].leaves = &leaves;
        ck_assert_int_eq(fut_pool_submit(p, hs[i].lane, &hs[i].job, hop_fn), 0);
    }
    for (int k = 0; k < OUTSIDERS; k++) {
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
        ck_assert_uint_eq(o[k].failed, 0);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    TU_ASSERT_NO_WFAIL();
    for (int i = 0; i < CHAINS; i++)
        ck_assert_msg(hs[i].hops == CHAIN_HOPS, "chain %d ran %d hops", i, hs[i].hops);
    ck_assert_int_eq(atomic_load(&leaves), CHAINS * CHAIN_HOPS);
    for (size_t i = 0; i < (size_t)OUTSIDERS * OUTSIDE_JOBS; i++)
        TU_REQUIRE(atomic_load(&oj[i].ran) == 1 && atomic_load(&oj[i].cancelled) + atomic_load(&oj[i].bad) == 0,
                   "outside job %zu: ran %d cancelled %d bad %d", i, atomic_load(&oj[i].ran),
                   atomic_load(&oj[i].cancelled), atomic_load(&oj[i].bad));
    c = tu_stats(p, FUT_LANE_COMPUTE);
    b = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(c.completed + b.completed,
                      2u * CHAINS * CHAIN_HOPS + (uint64_t)OUTSIDERS * OUTSIDE_JOBS);
    /* Each chain runs half its hops on each lane; a leaf goes to the other
     * lane than its hop; an outsider puts every fourth job on blocking. */
    ck_assert_uint_eq(b.completed, (uint64_t)CHAINS * CHAIN_HOPS + OUTSIDERS * (OUTSIDE_JOBS / 4));
    ck_assert_uint_le(b.peak_threads, 6);
    ck_assert_int_eq(fut_pool_free(p), 0);
    free(hs);
    free(oj);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads that submit and then wait_idle concurrently: when wait_idle
 * returns, everything the caller submitted before has run.
 * ---------------------------------------------------------------------- */

#define WAITERS 4
#define WAIT_ROUNDS 100
#define WAIT_BATCH 200

typedef struct cwait {
    fut_pool *pool;
    atomic_int ran;       /* this thread's jobs that ran */
    int bad_rc;
} cwait;

typedef struct cjob2 {
    fut_pool_job job;
    atomic_int *ran;
} cjob2;

static void cjob2_fn(fut_pool_job *job, int status)
{
    cjob2 *j = TU_CONTAINER_OF(job, cjob2, job);
    TU_WCHECK_EQ(status, 0);
    atomic_fetch_add(j->ran, 1);
}

static void *cwait_main(void *arg)
{
    cwait *w = arg;
    cjob2 *jobs = calloc(WAIT_BATCH, sizeof *jobs);
    TU_WCHECK(jobs != NULL);
    if (jobs == NULL)
        return NULL;
    for (int r = 0; r < WAIT_ROUNDS; r++) {
        for (int i = 0; i < WAIT_BATCH; i++) {
            int rc;
            jobs[i].ran = &w->ran;
            rc = fut_pool_submit(w->pool, i % 10 == 0 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE,
                                 &jobs[i].job, cjob2_fn);
            if (rc != 0)
                w->bad_rc = rc;
        }
        {
            int rc = fut_pool_wait_idle(w->pool);
            if (rc != 0)
                w->bad_rc = rc;
        }
        /* Every job this thread submitted has run: the batch may be reused. */
        TU_WCHECK_EQ(atomic_load(&w->ran), (r + 1) * WAIT_BATCH);
        if (atomic_load(&w->ran) != (r + 1) * WAIT_BATCH)
            break; /* reusing the jobs now would corrupt the pool */
    }
    free(jobs);
    return NULL;
}

START_TEST(test_concurrent_wait_idle)
{
    fut_pool *p = tu_pool_new(2, 4, 0);
    cwait w[WAITERS];
    pthread_t th[WAITERS];

    for (int k = 0; k < WAITERS; k++) {
        memset(&w[k], 0, sizeof w[k]);
        w[k].pool = p;
        atomic_init(&w[k].ran, 0);
        ck_assert_int_eq(pthread_create(&th[k], NULL, cwait_main, &w[k]), 0);
    }
    for (int k = 0; k < WAITERS; k++) {
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
        ck_assert_int_eq(w[k].bad_rc, 0);
    }
    TU_ASSERT_NO_WFAIL();
    for (int k = 0; k < WAITERS; k++)
        ck_assert_int_eq(atomic_load(&w[k].ran), WAIT_ROUNDS * WAIT_BATCH);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed + tu_stats(p, FUT_LANE_BLOCKING).completed,
                      (uint64_t)WAITERS * WAIT_ROUNDS * WAIT_BATCH);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

static Suite *pool_stress_suite(void)
{
    Suite *s = suite_create("pool_stress");
    TCase *tc;

    tc = tu_tcase(s, "volume", 60);
    tcase_add_test(tc, test_million_jobs);
    tcase_add_loop_test(tc, test_fanout_tree, 0, 2);

    tc = tu_tcase(s, "mixed", 60);
    tcase_add_test(tc, test_mixed_lanes);
    tcase_add_test(tc, test_concurrent_wait_idle);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_stress_suite());
}
