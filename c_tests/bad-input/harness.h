/* The harness of the bad-input tests: every function of ggml-qat.h called
 * with each class of bad argument a C caller can pass. Each case runs in its
 * own child process (fork), so a crash, an abort or a hang is counted as a
 * failed case instead of ending the run. A case checks that the call
 *   - returns the function's failure value,
 *   - leaves a fresh message in ggml_qat_last_error() naming the function,
 *   - leaves the caller's tensors (header and data), ggml contexts (used
 *     memory) and pointer arrays untouched,
 *   - leaves the QAT context usable: a valid call made afterwards, in the
 *     same child, gives the right result.
 * Non-contiguous views must give the result of their contiguous copy, or be
 * refused with a message.
 *
 * One test program per section of the header (the modules of src/capi/):
 * context.c, quantize.c, metrics.c, opencog.c, plan.c, each built as
 * test-bad-input-<section>. A program includes this header first, defines
 * its cases (functions of type case_fn) and build_table(), which registers
 * them with add(); this header holds the fixture (built afresh in every
 * child), the snapshots of the caller's state, the checks around a bad call,
 * and main(), the runner. Usage: test-bad-input-<section> [-v] [-x exclude]
 * [substring]; -v lists every case with its result. */
#pragma once

#define _DEFAULT_SOURCE /* fork, waitpid, alarm, mmap flags */

#include "ggml-qat.h"
#include "ggml-cpu.h"
#include "../test-common.h"

#include <float.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* What not every test program uses. */
#define HARNESS_UNUSED __attribute__((unused))

#define NE0 256
#define NE1 8
#define NX 16

/* ---- fixture: built afresh in every child -------------------------------- */

typedef struct {
    ggml_qat_context_t * q;
    struct ggml_context * g;     /* allocating, plenty of room */
    struct ggml_context * gna;   /* no_alloc */
    struct ggml_context * gfull; /* room for a tiny tensor, not for a layer */
    struct ggml_tensor * w;      /* F32 [256, 8] */
    struct ggml_tensor * w2;     /* F32 [256, 8], other values */
    struct ggml_tensor * wsmall; /* F32 [128, 8]: a mismatched shape */
    struct ggml_tensor * wq;     /* Q8_0 [256, 8] of w (ggml_quantize_chunk) */
    struct ggml_tensor * x;      /* F32 [256, 16] inputs */
    struct ggml_tensor * x128;   /* F32 [128, 16]: inputs of the wrong width */
    struct ggml_tensor * xnan;   /* inputs with a NaN */
    struct ggml_tensor * ti32;   /* I32 [256, 8] */
    struct ggml_tensor * tf64;   /* F64 [256, 8] */
    struct ggml_tensor * nodata; /* F32 [256, 8] of gna: no data */
    struct ggml_tensor * huge;   /* F32 [2^40, 2^20] of gna: no data, 2^62 bytes */
    struct ggml_tensor * ovf;    /* of gna, ne edited so the element count overflows int64 */
    struct ggml_tensor * empty;  /* F32 [256, 0] with data */
    struct ggml_tensor * nan_t;  /* w with a NaN */
    struct ggml_tensor * pinf_t; /* w with +Inf */
    struct ggml_tensor * ninf_t; /* w with -Inf */
    struct ggml_tensor * wt;     /* transposed view of an [8, 256] tensor: logical [256, 8] */
    struct ggml_tensor * wv;     /* 2-d view of a [512, 8] tensor (nb1 = 2048, offset) */
    struct ggml_tensor * wt16;   /* transposed F16 view */
    struct ggml_tensor * wqt;    /* transposed Q8_0 view: blocks not stored together */
    struct ggml_tensor * xt;     /* transposed view of inputs: logical [256, 16] */
    struct ggml_tensor * wt_copy, * wv_copy, * wt16_copy, * xt_copy; /* contiguous F32 copies */
} fx_t;

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float) ((double) (g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static struct ggml_context * new_ggml(size_t bytes, bool no_alloc) {
    struct ggml_init_params p = { bytes, NULL, no_alloc };
    return ggml_init(p);
}

static struct ggml_tensor * f32_2d(struct ggml_context * g, const char * name, int64_t a, int64_t b, float scale) {
    struct ggml_tensor * t = ggml_new_tensor_2d(g, GGML_TYPE_F32, a, b);
    for (int64_t i = 0; i < a * b; ++i) ((float *) t->data)[i] = scale * frand();
    ggml_set_name(t, name);
    return t;
}

static struct ggml_tensor * copy_f32(struct ggml_context * g, const struct ggml_tensor * src, const char * name) {
    struct ggml_tensor * t = ggml_new_tensor(g, GGML_TYPE_F32, GGML_MAX_DIMS, src->ne);
    memcpy(t->data, src->data, ggml_nbytes(src));
    ggml_set_name(t, name);
    return t;
}

/* A contiguous F32 tensor of the logical values of a 2-d F32/F16 view. */
static struct ggml_tensor * logical_copy(struct ggml_context * g, const struct ggml_tensor * v, const char * name) {
    struct ggml_tensor * t = ggml_new_tensor_2d(g, GGML_TYPE_F32, v->ne[0], v->ne[1]);
    for (int64_t i1 = 0; i1 < v->ne[1]; ++i1) {
        for (int64_t i0 = 0; i0 < v->ne[0]; ++i0) {
            const char * p = (const char *) v->data + i0 * v->nb[0] + i1 * v->nb[1];
            float val = v->type == GGML_TYPE_F16 ? ggml_fp16_to_fp32(*(const ggml_fp16_t *) p) : *(const float *) p;
            ((float *) t->data)[i1 * v->ne[0] + i0] = val;
        }
    }
    ggml_set_name(t, name);
    return t;
}

static void fx_init(fx_t * f) {
    memset(f, 0, sizeof(*f));
    f->q = ggml_qat_init(NULL);
    f->g = new_ggml(64u << 20, false);
    f->gna = new_ggml(64 * ggml_tensor_overhead(), true);
    f->gfull = new_ggml(2 * ggml_tensor_overhead() + 256, false);
    if (!f->q || !f->g || !f->gna || !f->gfull) {
        fprintf(stderr, "fixture: init failed: %s\n", ggml_qat_last_error());
        exit(2);
    }
    f->w = f32_2d(f->g, "w", NE0, NE1, 0.5f);
    f->w2 = f32_2d(f->g, "w2", NE0, NE1, 0.5f);
    f->wsmall = f32_2d(f->g, "wsmall", 128, NE1, 0.5f);
    f->wq = ggml_new_tensor_2d(f->g, GGML_TYPE_Q8_0, NE0, NE1);
    ggml_quantize_chunk(GGML_TYPE_Q8_0, (const float *) f->w->data, f->wq->data, 0, NE1, NE0, NULL);
    ggml_set_name(f->wq, "wq");
    f->x = f32_2d(f->g, "x", NE0, NX, 1.0f);
    f->x128 = f32_2d(f->g, "x128", 128, NX, 1.0f);
    f->xnan = copy_f32(f->g, f->x, "xnan");
    ((float *) f->xnan->data)[NE0 + 3] = NAN;
    f->ti32 = ggml_new_tensor_2d(f->g, GGML_TYPE_I32, NE0, NE1);
    memset(f->ti32->data, 0, ggml_nbytes(f->ti32));
    ggml_set_name(f->ti32, "ti32");
    f->tf64 = ggml_new_tensor_2d(f->g, GGML_TYPE_F64, NE0, NE1);
    for (int i = 0; i < NE0 * NE1; ++i) ((double *) f->tf64->data)[i] = frand();
    ggml_set_name(f->tf64, "tf64");
    f->nodata = ggml_new_tensor_2d(f->gna, GGML_TYPE_F32, NE0, NE1);
    ggml_set_name(f->nodata, "nodata");
    f->huge = ggml_new_tensor_2d(f->gna, GGML_TYPE_F32, (int64_t) 1 << 40, (int64_t) 1 << 20);
    ggml_set_name(f->huge, "huge");
    f->ovf = ggml_new_tensor_2d(f->gna, GGML_TYPE_F32, NE0, NE1);
    f->ovf->ne[1] = INT64_MAX / 2; /* as a corrupt or hand-built header would be */
    f->ovf->ne[2] = 4;
    ggml_set_name(f->ovf, "ovf");
    f->empty = ggml_new_tensor_2d(f->g, GGML_TYPE_F32, NE0, 0);
    ggml_set_name(f->empty, "empty");
    f->nan_t = copy_f32(f->g, f->w, "nan_t");
    ((float *) f->nan_t->data)[NE0 + 5] = NAN;
    f->pinf_t = copy_f32(f->g, f->w, "pinf_t");
    ((float *) f->pinf_t->data)[7] = INFINITY;
    f->ninf_t = copy_f32(f->g, f->w, "ninf_t");
    ((float *) f->ninf_t->data)[NE0 * NE1 - 1] = -INFINITY;

    struct ggml_tensor * bt = f32_2d(f->g, "bt", NE1, NE0, 0.5f);
    f->wt = ggml_transpose(f->g, bt);
    ggml_set_name(f->wt, "wt");
    struct ggml_tensor * bv = f32_2d(f->g, "bv", 2 * NE0, NE1, 0.5f);
    f->wv = ggml_view_2d(f->g, bv, NE0, NE1, bv->nb[1], 16 * sizeof(float));
    ggml_set_name(f->wv, "wv");
    struct ggml_tensor * b16 = ggml_new_tensor_2d(f->g, GGML_TYPE_F16, NE1, NE0);
    for (int i = 0; i < NE0 * NE1; ++i) ((ggml_fp16_t *) b16->data)[i] = ggml_fp32_to_fp16(0.5f * frand());
    f->wt16 = ggml_transpose(f->g, b16);
    ggml_set_name(f->wt16, "wt16");
    f->wqt = ggml_transpose(f->g, f->wq);
    ggml_set_name(f->wqt, "wqt");
    struct ggml_tensor * bx = f32_2d(f->g, "bx", NX, NE0, 1.0f);
    f->xt = ggml_transpose(f->g, bx);
    ggml_set_name(f->xt, "xt");
    f->wt_copy = logical_copy(f->g, f->wt, "wt");
    f->wv_copy = logical_copy(f->g, f->wv, "wv");
    f->wt16_copy = logical_copy(f->g, f->wt16, "wt16");
    f->xt_copy = logical_copy(f->g, f->xt, "xt");
    /* gfull: one tiny tensor; a few bytes stay free, never a layer's worth. */
    ggml_new_tensor_1d(f->gfull, GGML_TYPE_F32, 4);
}

static void fx_free(fx_t * f) {
    ggml_qat_free(f->q);
    ggml_free(f->g);
    ggml_free(f->gna);
    ggml_free(f->gfull);
}

/* ---- snapshots: the caller's state before a bad call ---------------------- */

#define MAX_SNAP 40

typedef struct {
    const struct ggml_tensor * t;
    struct ggml_tensor header;
    void * data;
    size_t nbytes;
} tsnap_t;

static tsnap_t g_snap[MAX_SNAP];
static int g_nsnap = 0;
static size_t g_used[3];

static void snap_tensor(const struct ggml_tensor * t) {
    if (!t || g_nsnap == MAX_SNAP) return;
    tsnap_t * s = &g_snap[g_nsnap++];
    s->t = t;
    memcpy(&s->header, t, sizeof(*t));
    s->data = NULL;
    s->nbytes = 0;
    if (t->data && t->ne[0] > 0 && t->ne[1] < ((int64_t) 1 << 40)) {
        /* whole span of a view: its source's bytes */
        const struct ggml_tensor * src = t->view_src ? t->view_src : t;
        s->nbytes = ggml_nbytes(src);
        s->data = malloc(s->nbytes);
        memcpy(s->data, src->data, s->nbytes);
    }
}

static void snap_all(fx_t * f) {
    for (int i = 0; i < g_nsnap; ++i) free(g_snap[i].data); /* an unchecked earlier snapshot */
    g_nsnap = 0;
    struct ggml_tensor * all[] = { f->w, f->w2, f->wsmall, f->wq, f->x, f->x128, f->xnan, f->ti32, f->tf64,
                                   f->nodata, f->huge, f->ovf, f->empty, f->nan_t, f->pinf_t, f->ninf_t,
                                   f->wt, f->wv, f->wt16, f->wqt, f->xt };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); ++i) snap_tensor(all[i]);
    g_used[0] = ggml_used_mem(f->g);
    g_used[1] = ggml_used_mem(f->gna);
    g_used[2] = ggml_used_mem(f->gfull);
}

static void check_snaps_mem(fx_t * f, const char * what, bool check_mem) {
    for (int i = 0; i < g_nsnap; ++i) {
        tsnap_t * s = &g_snap[i];
        CHECK(memcmp(&s->header, s->t, sizeof(s->header)) == 0, "%s: header of tensor '%s' changed", what, s->header.name);
        if (s->data) {
            const struct ggml_tensor * src = s->t->view_src ? s->t->view_src : s->t;
            CHECK(memcmp(s->data, src->data, s->nbytes) == 0, "%s: data of tensor '%s' changed", what, s->header.name);
        }
        free(s->data);
        s->data = NULL;
    }
    g_nsnap = 0;
    if (!check_mem) return;
    CHECK(ggml_used_mem(f->g) == g_used[0], "%s: a tensor was left in the ggml context", what);
    CHECK(ggml_used_mem(f->gna) == g_used[1], "%s: a tensor was left in the no_alloc context", what);
    CHECK(ggml_used_mem(f->gfull) == g_used[2], "%s: a tensor was left in the full context", what);
}

static void check_snaps(fx_t * f, const char * what) { check_snaps_mem(f, what, true); }

/* ---- the checks around a bad call ----------------------------------------- */

static const char * g_fname;

/* Snapshots the caller's state and leaves a sentinel message, so the error
 * seen after the call is known to come from it. */
static void before(fx_t * f, const char * fname) {
    g_fname = fname;
    snap_all(f);
    if (strcmp(fname, "ggml_qat_set_seed") != 0) {
        ggml_qat_set_seed(NULL, 0);
    } else {
        ggml_qat_get_stats(NULL);
    }
}

/* A valid call on the same QAT context gives the right bytes. */
static void follow_up(fx_t * f) {
    struct ggml_tensor * d = ggml_qat_quantize_layer(f->q, f->g, f->w, GGML_QAT_LAYER_FFN);
    CHECK(d != NULL && d->type == GGML_TYPE_Q6_K, "follow-up quantize_layer failed: %s", ggml_qat_last_error());
    if (d) {
        size_t n = ggml_nbytes(d);
        void * ref = malloc(n);
        ggml_quantize_chunk(GGML_TYPE_Q6_K, (const float *) f->w->data, ref, 0, NE1, NE0, NULL);
        CHECK(memcmp(ref, d->data, n) == 0, "follow-up quantize_layer: wrong bytes");
        free(ref);
    }
    ggml_qat_ecan_t * e = ggml_qat_create_ecan(f->q, NULL, 4);
    CHECK(e != NULL && e->n_elements == 4, "follow-up create_ecan failed: %s", ggml_qat_last_error());
    ggml_qat_free_ecan(e);
}

/* After a failing call: a fresh message naming the function (and `keyword`
 * when given), the caller's state unchanged, the context still usable. */
static void after_fail(fx_t * f, const char * keyword) {
    const char * e = ggml_qat_last_error();
    size_t n = strlen(g_fname);
    CHECK(e != NULL && strncmp(e, g_fname, n) == 0 && e[n] == ':', "expected a message from %s, got \"%s\"", g_fname,
          e ? e : "(null)");
    if (keyword && e) CHECK(strstr(e, keyword) != NULL, "message \"%s\" does not mention \"%s\"", e, keyword);
    check_snaps(f, g_fname);
    follow_up(f);
}

/* After a call that had to succeed: the caller's state unchanged apart from
 * new tensors, the context usable. */
static void after_ok(fx_t * f) {
    for (int i = 0; i < g_nsnap; ++i) free(g_snap[i].data);
    g_nsnap = 0;
    follow_up(f);
}

HARNESS_UNUSED static bool stats_zero(ggml_qat_stats_t s) {
    return s.original_size_mb == 0 && s.quantized_size_mb == 0 && s.compression_ratio == 0 &&
           s.accuracy_retention == 0 && s.kl_divergence_loss == 0 && s.inference_speedup == 0;
}

HARNESS_UNUSED static bool same_quant(const struct ggml_tensor * d, const struct ggml_tensor * copy) {
    size_t n = ggml_nbytes(d);
    void * ref = malloc(n);
    size_t got = ggml_quantize_chunk(d->type, (const float *) copy->data, ref, 0, ggml_nrows(copy), copy->ne[0], NULL);
    bool ok = got == n && memcmp(ref, d->data, n) == 0;
    free(ref);
    return ok;
}

/* Pointer arrays of INT_MAX entries, all NULL but the first `n_set`, backed
 * by untouched (zero) pages. NULL when the address space is not there. */
HARNESS_UNUSED static void * big_zero_array(size_t bytes) {
    void * p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

HARNESS_UNUSED static const int g_bad_enums[] = { -1, 7, 1000, INT_MIN, INT_MAX };
HARNESS_UNUSED static const int g_bad_qtypes[] = { -1, GGML_TYPE_COUNT, 1000, INT_MIN, GGML_TYPE_I32, GGML_TYPE_F64, 4 /* removed Q4_2 */ };


/* Names of the bad sources of the *_src cases, in their order. */
HARNESS_UNUSED static const char * g_src_names[] = { "I32", "F64", "no data", "huge (2^62 bytes, no data)", "ne overflows int64",
                                                     "empty", "NaN data", "+Inf data", "-Inf data" };

/* ---- the table: each test program's build_table() fills it ---------------- */

typedef void (*case_fn)(fx_t * f, long a, long b);

typedef struct {
    char name[96];
    case_fn fn;
    long a, b;
} case_t;

#define MAX_CASES 512
static case_t g_cases[MAX_CASES];
static int g_ncases = 0;

static void add(case_fn fn, long a, long b, const char * fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(case_fn fn, long a, long b, const char * fmt, ...) {
    if (g_ncases == MAX_CASES) abort();
    case_t * c = &g_cases[g_ncases++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof(c->name), fmt, ap);
    va_end(ap);
    c->fn = fn;
    c->a = a;
    c->b = b;
}

#define N(a) ((long) (sizeof(a) / sizeof((a)[0])))

static void build_table(void);

/* ---- the runner ----------------------------------------------------------- */

static int run_case(const case_t * c, unsigned timeout) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 0;
    }
    if (pid == 0) {
        alarm(timeout);
        fx_t f;
        fx_init(&f);
        c->fn(&f, c->a, c->b);
        fx_free(&f);
        fflush(stdout);
        fflush(stderr);
        exit(g_failures == 0 ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "FAIL %s: killed by signal %d (%s)\n", c->name, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? "timeout" : "crash");
        return 0;
    }
    if (WEXITSTATUS(status) != 0) {
        fprintf(stderr, "FAIL %s: exit status %d\n", c->name, WEXITSTATUS(status));
        return 0;
    }
    return 1;
}

int main(int argc, char ** argv) {
    (void) test_summary;
    bool verbose = false;
    const char * filter = NULL, * exclude = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "-v") == 0) verbose = true;
        else if (strcmp(argv[i], "-x") == 0 && i + 1 < argc) exclude = argv[++i];
        else filter = argv[i];
    }
    const char * t = getenv("GGML_QAT_CASE_TIMEOUT");
    unsigned timeout = t ? (unsigned) atoi(t) : 60;
    build_table();
    int passed = 0, failed = 0;
    for (int i = 0; i < g_ncases; ++i) {
        if (filter && !strstr(g_cases[i].name, filter)) continue;
        if (exclude && strstr(g_cases[i].name, exclude)) continue;
        int ok = run_case(&g_cases[i], timeout);
        if (verbose) printf("%s %s\n", ok ? "ok  " : "FAIL", g_cases[i].name);
        ok ? ++passed : ++failed;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
