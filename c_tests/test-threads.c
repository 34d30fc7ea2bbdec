/* test-threads: ggml-qat from several threads at once.
 *
 * Sixteen threads run together: eight share one QAT context, eight use one
 * context each (seeded alike, some with their own thread pools). Every
 * thread has its own ggml context (ggml contexts are not thread-safe; QAT
 * contexts must be) and repeatedly calls generate_calibration_data,
 * quantize_layer, kl_divergence_loss, the OpenCog create/free functions and
 * a failing call. Checked:
 *   - quantized bytes equal ggml_quantize_chunk and the single-threaded
 *     result; KL equals the single-threaded value;
 *   - per-thread contexts give exactly the bytes of a single-threaded run of
 *     the same calls (calibration data and OpenCog structures included);
 *   - on the shared context, whose generator the threads draw from in an
 *     order that varies, every calibration tensor is one of the tensors a
 *     single-threaded run of the same seed produces, and no two are equal;
 *     OpenCog structures keep their invariants; the context's statistics
 *     count every quantization exactly once;
 *   - ggml_qat_last_error() is per thread: each thread sees its own message
 *     after all the others have failed too.
 * A last check calls ggml_qat_last_error() and a failing function from a
 * pthread key destructor, i.e. after the library's thread-locals were
 * destroyed (run in a child process, so an abort is reported). */

#define _DEFAULT_SOURCE

#include "ggml-qat.h"
#include "test-common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_GROUP 8 /* threads per group */
#define ITERS 4
#define NE0 256
#define NE1 64
#define N_W 4
#define CALIB_N (NE0 * 16)
#define SEED 777
/* generator draws per iteration: calibration, atomspace, moses, ecan, failing ecan */
#define DRAWS_PER_ITER 5

static atomic_int g_tfail = 0;
static _Thread_local int t_fail = 0;

#define TCHECK(cond, ...)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            ++t_fail;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
        }                                                                        \
    } while (0)

static uint64_t fnv(const void * p, size_t n, uint64_t h) {
    const unsigned char * b = (const unsigned char *) p;
    for (size_t i = 0; i < n; ++i) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV0 0xcbf29ce484222325ull

static const ggml_qat_layer_type_t g_classes[N_W] = { GGML_QAT_LAYER_EMBEDDING, GGML_QAT_LAYER_ATTENTION, GGML_QAT_LAYER_FFN,
                                                      GGML_QAT_LAYER_LAYERNORM };
static const enum ggml_type g_types[N_W] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0 };

static struct ggml_tensor * g_w[N_W];   /* shared read-only weights */
static void * g_ref_q[N_W];             /* ggml_quantize_chunk of each */
static size_t g_ref_q_size[N_W];

typedef struct {
    uint64_t calib, quant, atomspace, moses, ecan;
    float kl;
} rec_t;

typedef struct {
    ggml_qat_context_t * q;
    int idx;
    bool shared;
    pthread_barrier_t * barrier;
    rec_t rec[ITERS];
    int fail;
} job_t;

static struct ggml_context * new_ggml(size_t bytes) {
    struct ggml_init_params p = { bytes, NULL, false };
    return ggml_init(p);
}

static uint64_t hash_atomspace(const ggml_qat_atomspace_t * a) {
    uint64_t h = fnv(a->truth_values, sizeof(float) * a->n_atoms, FNV0);
    h = fnv(a->atom_types, sizeof(int64_t) * a->n_atoms, h);
    return fnv(a->connections, sizeof(int64_t) * 2 * a->n_connections, h);
}

static uint64_t hash_moses(const ggml_qat_moses_tree_t * t) {
    uint64_t h = fnv(t->weights, sizeof(float) * t->n_nodes, FNV0);
    h = fnv(t->operations, sizeof(int) * t->n_nodes, h);
    return fnv(t->connections, sizeof(int) * 2 * t->n_nodes, h);
}

static uint64_t hash_ecan(const ggml_qat_ecan_t * e) {
    uint64_t h = fnv(e->sti_values, sizeof(float) * e->n_elements, FNV0);
    h = fnv(e->lti_values, sizeof(float) * e->n_elements, h);
    return fnv(e->attention_scores, sizeof(float) * e->n_elements, h);
}

static bool atomspace_ok(const ggml_qat_atomspace_t * a) {
    for (int i = 0; i < a->n_atoms; ++i) {
        float v = a->truth_values[i] * 255.0f;
        if (fabsf(v - roundf(v)) > 1e-3f || a->atom_types[i] < 0 || a->atom_types[i] >= 10) return false;
    }
    for (int i = 0; i < 2 * a->n_connections; ++i)
        if (a->connections[i] < 0 || a->connections[i] >= a->n_atoms) return false;
    return true;
}

static bool moses_ok(const ggml_qat_moses_tree_t * t) {
    int seen = 0;
    for (int i = 0; i < 2 * t->n_nodes; ++i) {
        int c = t->connections[i];
        if (c == -1) continue;
        if (c <= 0 || c >= t->n_nodes) return false;
        ++seen;
    }
    return seen == t->n_nodes - 1; /* a tree: every node but the root has one parent */
}

static bool ecan_ok(const ggml_qat_ecan_t * e) {
    double s = 0.0;
    for (int i = 0; i < e->n_elements; ++i) {
        if (!(e->attention_scores[i] > 0.0f)) return false;
        s += e->attention_scores[i];
    }
    return fabs(s - 1.0) < 1e-5;
}

/* One thread's calls (also run single-threaded for the reference). */
static void workload(job_t * j) {
    struct ggml_context * g = new_ggml(8u << 20);
    char own[64];
    for (int it = 0; it < ITERS; ++it) {
        rec_t * r = &j->rec[it];
        ggml_reset(g);
        /* a failing call with a message of this thread's own */
        int bad = -(1000 * (j->idx + 1) + it);
        TCHECK(ggml_qat_create_ecan(j->q, NULL, bad) == NULL, "ecan(%d) accepted", bad);
        snprintf(own, sizeof(own), "%d", bad);
        if (j->barrier) pthread_barrier_wait(j->barrier); /* every thread has failed now */

        int64_t shape[2] = { NE0, CALIB_N / NE0 };
        struct ggml_tensor * c = ggml_qat_generate_calibration_data(j->q, g, shape, 2, 0.0f, 1.0f);
        TCHECK(c != NULL, "calibration: %s", ggml_qat_last_error());
        r->calib = c ? fnv(c->data, ggml_nbytes(c), FNV0) : 0;

        int k = (j->idx + it) % N_W;
        struct ggml_tensor * d = ggml_qat_quantize_layer(j->q, g, g_w[k], g_classes[k]);
        TCHECK(d != NULL && d->type == g_types[k], "quantize_layer: %s", ggml_qat_last_error());
        if (d) {
            TCHECK(ggml_nbytes(d) == g_ref_q_size[k] && memcmp(d->data, g_ref_q[k], g_ref_q_size[k]) == 0,
                   "thread %d: quantized bytes differ from ggml_quantize_chunk", j->idx);
            r->quant = fnv(d->data, ggml_nbytes(d), FNV0);
            r->kl = ggml_qat_kl_divergence_loss(j->q, NULL, g_w[k], d, 1.0f);
            TCHECK(isfinite(r->kl) && r->kl > 0.0f, "kl %g: %s", r->kl, ggml_qat_last_error());
        }

        ggml_qat_atomspace_t * a = ggml_qat_create_atomspace(j->q, NULL, 64, 32);
        ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(j->q, NULL, 31, 5);
        ggml_qat_ecan_t * e = ggml_qat_create_ecan(j->q, NULL, 64);
        TCHECK(a && t && e, "opencog: %s", ggml_qat_last_error());
        if (a && t && e) {
            r->atomspace = hash_atomspace(a);
            r->moses = hash_moses(t);
            r->ecan = hash_ecan(e);
            TCHECK(atomspace_ok(a) && moses_ok(t) && ecan_ok(e), "opencog invariants");
        }
        ggml_qat_free_atomspace(a);
        ggml_qat_free_moses_tree(t);
        ggml_qat_free_ecan(e);
        ggml_qat_get_stats(j->q);

        /* successful calls did not clear it, other threads' failures did not replace it */
        const char * msg = ggml_qat_last_error();
        TCHECK(strstr(msg, "ggml_qat_create_ecan") && strstr(msg, own), "thread %d sees \"%s\", expected its %s", j->idx,
               msg, own);
        if (j->barrier) pthread_barrier_wait(j->barrier);
    }
    ggml_free(g);
}

static void * thread_main(void * arg) {
    job_t * j = (job_t *) arg;
    workload(j);
    j->fail = t_fail;
    atomic_fetch_add(&g_tfail, t_fail);
    return NULL;
}

static ggml_qat_context_t * seeded_ctx(int n_threads) {
    ggml_qat_context_t * q = ggml_qat_init(NULL);
    ggml_qat_set_seed(q, SEED);
    if (n_threads) ggml_qat_set_n_threads(q, n_threads);
    return q;
}

/* ---- last_error from a pthread key destructor ----------------------------- */

static int g_dtor_ok = 0;
static void key_dtor(void * v) {
    (void) v;
    const char * e = ggml_qat_last_error(); /* the library's thread-locals are gone */
    bool failed = !ggml_qat_set_seed(NULL, 1);
    ggml_qat_ecan_t * ec = ggml_qat_create_ecan(NULL, NULL, 4);
    g_dtor_ok = e != NULL && failed && ec == NULL;
}

static void * exiting_thread(void * arg) {
    pthread_key_t * key = (pthread_key_t *) arg;
    ggml_qat_set_seed(NULL, 0); /* the thread-local message exists */
    pthread_setspecific(*key, (void *) 1);
    return NULL;
}

static void test_thread_exit(void) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_key_t key;
        pthread_key_create(&key, key_dtor);
        pthread_t th;
        pthread_create(&th, NULL, exiting_thread, &key);
        pthread_join(th, NULL);
        pthread_key_delete(key);
        _exit(g_dtor_ok ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "calls from a pthread key destructor: %s %d", WIFSIGNALED(status) ? "killed by signal" : "exit status",
          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static int cmp_u64(const void * a, const void * b) {
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

int main(void) {
    test_thread_exit(); /* first: fork before any thread exists */

    struct ggml_context * gw = new_ggml(16u << 20);
    uint64_t s = 42;
    for (int k = 0; k < N_W; ++k) {
        g_w[k] = ggml_new_tensor_2d(gw, GGML_TYPE_F32, NE0, NE1);
        float * x = (float *) g_w[k]->data;
        for (int i = 0; i < NE0 * NE1; ++i) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float) ((double) (s >> 11) / 9007199254740992.0 - 0.5);
        }
        char name[16];
        snprintf(name, sizeof(name), "w%d", k);
        ggml_set_name(g_w[k], name);
        g_ref_q_size[k] = ggml_row_size(g_types[k], NE0) * NE1;
        g_ref_q[k] = malloc(g_ref_q_size[k]);
        ggml_quantize_chunk(g_types[k], x, g_ref_q[k], 0, NE1, NE0, NULL);
    }

    /* Single-threaded reference: the same calls of every thread index. */
    static job_t ref[N_GROUP];
    for (int i = 0; i < N_GROUP; ++i) {
        ref[i] = (job_t) { seeded_ctx(0), i, false, NULL, { { 0 } }, 0 };
        workload(&ref[i]);
        ggml_qat_free(ref[i].q);
    }
    /* Every calibration tensor a single-threaded run of the shared
     * context's seed can produce with as many generator draws. */
    enum { N_DRAWS = N_GROUP * ITERS * DRAWS_PER_ITER };
    static uint64_t ref_calib[N_DRAWS];
    {
        ggml_qat_context_t * q = seeded_ctx(0);
        struct ggml_context * g = new_ggml(CALIB_N * sizeof(float) + 4 * ggml_tensor_overhead());
        for (int i = 0; i < N_DRAWS; ++i) {
            ggml_reset(g);
            int64_t shape[2] = { NE0, CALIB_N / NE0 };
            struct ggml_tensor * c = ggml_qat_generate_calibration_data(q, g, shape, 2, 0.0f, 1.0f);
            ref_calib[i] = c ? fnv(c->data, ggml_nbytes(c), FNV0) : 0;
        }
        ggml_free(g);
        ggml_qat_free(q);
        qsort(ref_calib, N_DRAWS, sizeof(uint64_t), cmp_u64);
    }
    CHECK(g_tfail == 0, "reference run failed");

    /* Sixteen threads at once. */
    ggml_qat_context_t * shared = seeded_ctx(0);
    pthread_barrier_t bar_shared, bar_own;
    pthread_barrier_init(&bar_shared, NULL, N_GROUP);
    pthread_barrier_init(&bar_own, NULL, N_GROUP);
    static job_t jobs[2 * N_GROUP];
    pthread_t th[2 * N_GROUP];
    for (int i = 0; i < N_GROUP; ++i) {
        jobs[i] = (job_t) { shared, i, true, &bar_shared, { { 0 } }, 0 };
        jobs[N_GROUP + i] = (job_t) { seeded_ctx(i % 3), i, false, &bar_own, { { 0 } }, 0 };
    }
    for (int i = 0; i < 2 * N_GROUP; ++i) pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    for (int i = 0; i < 2 * N_GROUP; ++i) pthread_join(th[i], NULL);
    CHECK(g_tfail == 0, "%d failed checks inside the threads", (int) g_tfail);

    /* Per-thread contexts: exactly the single-threaded results. */
    for (int i = 0; i < N_GROUP; ++i) {
        const job_t * j = &jobs[N_GROUP + i];
        for (int it = 0; it < ITERS; ++it) {
            const rec_t * a = &j->rec[it], * b = &ref[i].rec[it];
            CHECK(a->calib == b->calib && a->quant == b->quant && a->atomspace == b->atomspace && a->moses == b->moses &&
                      a->ecan == b->ecan,
                  "own context %d, iteration %d: bytes differ from the single-threaded run", i, it);
            /* KL sums rows in parallel: the order may differ in the last bits */
            CHECK(fabsf(a->kl - b->kl) <= 1e-6f * b->kl, "own context %d, iteration %d: kl %.9g vs %.9g", i, it, a->kl, b->kl);
        }
        ggml_qat_free(j->q);
    }

    /* Shared context: quantization and KL as single-threaded; calibration
     * tensors distinct members of the single-threaded sequence. */
    uint64_t got[N_GROUP * ITERS];
    int n_got = 0;
    for (int i = 0; i < N_GROUP; ++i) {
        for (int it = 0; it < ITERS; ++it) {
            const rec_t * a = &jobs[i].rec[it], * b = &ref[i].rec[it];
            CHECK(a->quant == b->quant, "shared context, thread %d: quantized bytes differ", i);
            CHECK(fabsf(a->kl - b->kl) <= 1e-6f * b->kl, "shared context, thread %d: kl %.9g vs %.9g", i, a->kl, b->kl);
            got[n_got++] = a->calib;
            CHECK(bsearch(&a->calib, ref_calib, N_DRAWS, sizeof(uint64_t), cmp_u64) != NULL,
                  "shared context, thread %d, iteration %d: calibration data from no draw of the seed", i, it);
        }
    }
    qsort(got, n_got, sizeof(uint64_t), cmp_u64);
    int dup = 0;
    for (int i = 1; i < n_got; ++i) dup += got[i] == got[i - 1];
    CHECK(dup == 0, "%d calibration tensors of the shared context repeat another's data", dup);

    /* Statistics: every quantization counted once. */
    ggml_qat_stats_t st = ggml_qat_get_stats(shared);
    double orig = 0.0, quant = 0.0;
    for (int i = 0; i < N_GROUP; ++i)
        for (int it = 0; it < ITERS; ++it) {
            int k = (i + it) % N_W;
            orig += ggml_nbytes(g_w[k]);
            quant += g_ref_q_size[k];
        }
    CHECK(fabs(st.original_size_mb - orig / 1048576.0) < 1e-6 && fabs(st.quantized_size_mb - quant / 1048576.0) < 1e-6,
          "shared stats %g / %g MiB, expected %g / %g", st.original_size_mb, st.quantized_size_mb, orig / 1048576.0,
          quant / 1048576.0);

    /* The main thread's own message was never touched by the threads. */
    ggml_qat_create_moses_tree(shared, NULL, 100, 2);
    const char * m = ggml_qat_last_error();
    CHECK(strstr(m, "ggml_qat_create_moses_tree") != NULL, "main thread sees \"%s\"", m);

    ggml_qat_free(shared);
    pthread_barrier_destroy(&bar_shared);
    pthread_barrier_destroy(&bar_own);
    for (int k = 0; k < N_W; ++k) free(g_ref_q[k]);
    ggml_free(gw);
    return test_summary("test-threads");
}
