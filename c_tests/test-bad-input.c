/* test-bad-input: every function of ggml-qat.h called with each class of bad
 * argument a C caller can pass. Each case runs in its own child process
 * (fork), so a crash, an abort or a hang is counted as a failed case instead
 * of ending the run. A case checks that the call
 *   - returns the function's failure value,
 *   - leaves a fresh message in ggml_qat_last_error() naming the function,
 *   - leaves the caller's tensors (header and data), ggml contexts (used
 *     memory) and pointer arrays untouched,
 *   - leaves the QAT context usable: a valid call made afterwards, in the
 *     same child, gives the right result.
 * Non-contiguous views must give the result of their contiguous copy, or be
 * refused with a message. Usage: test-bad-input [-v] [-x exclude] [substring]. */

#define _DEFAULT_SOURCE /* fork, waitpid, alarm, mmap flags */

#include "ggml-qat.h"
#include "ggml-cpu.h"
#include "test-common.h"

#include <float.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

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

static bool stats_zero(ggml_qat_stats_t s) {
    return s.original_size_mb == 0 && s.quantized_size_mb == 0 && s.compression_ratio == 0 &&
           s.accuracy_retention == 0 && s.kl_divergence_loss == 0 && s.inference_speedup == 0;
}

static bool same_quant(const struct ggml_tensor * d, const struct ggml_tensor * copy) {
    size_t n = ggml_nbytes(d);
    void * ref = malloc(n);
    size_t got = ggml_quantize_chunk(d->type, (const float *) copy->data, ref, 0, ggml_nrows(copy), copy->ne[0], NULL);
    bool ok = got == n && memcmp(ref, d->data, n) == 0;
    free(ref);
    return ok;
}

/* Pointer arrays of INT_MAX entries, all NULL but the first `n_set`, backed
 * by untouched (zero) pages. NULL when the address space is not there. */
static void * big_zero_array(size_t bytes) {
    void * p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static const int g_bad_enums[] = { -1, 7, 1000, INT_MIN, INT_MAX };
static const int g_bad_qtypes[] = { -1, GGML_TYPE_COUNT, 1000, INT_MIN, GGML_TYPE_I32, GGML_TYPE_F64, 4 /* removed Q4_2 */ };

/* ---- cases ---------------------------------------------------------------- */

typedef void (*case_fn)(fx_t * f, long a, long b);

/* -- init, config, free, small extensions -- */

static void c_init_qtype(fx_t * f, long field, long v) {
    ggml_qat_config_t c = ggml_qat_default_config();
    static const char * names[] = { "embedding_qtype", "attention_qtype", "ffn_qtype", "layernorm_qtype" };
    enum ggml_type * fields[] = { &c.embedding_qtype, &c.attention_qtype, &c.ffn_qtype, &c.layernorm_qtype };
    *fields[field] = (enum ggml_type) g_bad_qtypes[v];
    before(f, "ggml_qat_init");
    ggml_qat_context_t * q = ggml_qat_init(&c);
    CHECK(q == NULL, "init accepted %s = %d", names[field], g_bad_qtypes[v]);
    ggml_qat_free(q);
    after_fail(f, names[field]);
}

static void c_init_float(fx_t * f, long field, long v) {
    ggml_qat_config_t c = ggml_qat_default_config();
    static const char * names[] = { "kl_divergence_weight", "temperature", "memory_reduction_target", "accuracy_threshold" };
    float * fields[] = { &c.kl_divergence_weight, &c.temperature, &c.memory_reduction_target, &c.accuracy_threshold };
    /* NaN, +Inf, -Inf, -1, above the range (temperature: -FLT_MAX) */
    const float above[] = { 1.5f, -FLT_MAX, 1.0f, 1.5f };
    float vals[] = { NAN, INFINITY, -INFINITY, -1.0f, above[field] };
    *fields[field] = vals[v];
    before(f, "ggml_qat_init");
    ggml_qat_context_t * q = ggml_qat_init(&c);
    CHECK(q == NULL, "init accepted %s = %g", names[field], vals[v]);
    ggml_qat_free(q);
    after_fail(f, names[field]);
}

static void c_init_count(fx_t * f, long field, long v) {
    ggml_qat_config_t c = ggml_qat_default_config();
    const char * name = field ? "calibration_samples" : "progressive_layers";
    *(field ? &c.calibration_samples : &c.progressive_layers) = (int) v;
    before(f, "ggml_qat_init");
    ggml_qat_context_t * q = ggml_qat_init(&c);
    CHECK(q == NULL, "init accepted %s = %ld", name, v);
    ggml_qat_free(q);
    after_fail(f, name);
}

/* calibration_samples = INT_MAX: refused by init, or the calls that use it
 * fail cleanly (no abort on an impossible allocation). */
static void c_init_huge_samples(fx_t * f, long a, long b) {
    (void) a; (void) b;
    ggml_qat_config_t c = ggml_qat_default_config();
    c.calibration_samples = INT_MAX;
    before(f, "ggml_qat_init");
    ggml_qat_context_t * q = ggml_qat_init(&c);
    if (q == NULL) {
        after_fail(f, "calibration_samples");
        return;
    }
    before(f, "ggml_qat_layer_sensitivity");
    float s = ggml_qat_layer_sensitivity(q, f->w, GGML_TYPE_Q4_K);
    CHECK(isnan(s), "sensitivity with INT_MAX samples: %g", s);
    after_fail(f, NULL);
    before(f, "ggml_qat_validate_performance");
    CHECK(stats_zero(ggml_qat_validate_performance(q, NULL, f->w, f->wq, NULL)), "validate with INT_MAX samples");
    after_fail(f, NULL);
    ggml_qat_free(q);
}

static void c_free_null(fx_t * f, long a, long b) {
    (void) a; (void) b;
    ggml_qat_free(NULL);
    ggml_qat_free_atomspace(NULL);
    ggml_qat_free_moses_tree(NULL);
    ggml_qat_free_ecan(NULL);
    CHECK(ggml_qat_version() != NULL && ggml_qat_version()[0] != '\0', "version");
    CHECK(ggml_qat_last_error() != NULL, "last_error is NULL");
    after_ok(f);
}

static void c_set_seed_null(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_set_seed");
    CHECK(!ggml_qat_set_seed(NULL, 1), "set_seed(NULL)");
    after_fail(f, "ctx");
}

static void c_set_n_threads(fx_t * f, long null_ctx, long n) {
    before(f, "ggml_qat_set_n_threads");
    CHECK(!ggml_qat_set_n_threads(null_ctx ? NULL : f->q, (int) n), "set_n_threads(%s, %ld)", null_ctx ? "NULL" : "q", n);
    after_fail(f, null_ctx ? "ctx" : "n_threads");
}

static void c_get_stats_null(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_get_stats");
    CHECK(stats_zero(ggml_qat_get_stats(NULL)), "stats of NULL");
    after_fail(f, "ctx");
}

static void c_get_fallbacks(fx_t * f, long which, long b) {
    (void) b;
    char buf[16];
    memset(buf, 'Z', sizeof(buf));
    if (which == 2) { /* size 0: valid, nothing written */
        ggml_qat_quantize_tensor(f->q, f->g, f->wsmall, GGML_TYPE_Q4_K); /* 128 -> fallback */
        size_t n = ggml_qat_get_fallbacks(f->q, buf, 0);
        CHECK(n > 0, "fallback text length %zu", n);
        CHECK(buf[0] == 'Z', "buf written with buf_size 0");
        after_ok(f);
        return;
    }
    before(f, "ggml_qat_get_fallbacks");
    size_t n = which == 0 ? ggml_qat_get_fallbacks(NULL, buf, sizeof(buf)) : ggml_qat_get_fallbacks(f->q, NULL, 10);
    CHECK(n == 0, "get_fallbacks returned %zu", n);
    CHECK(buf[0] == 'Z', "buf written on failure");
    after_fail(f, which == 0 ? "ctx" : "buf");
}

static void c_get_benchmark_times(fx_t * f, long null_ctx, long b) {
    (void) b;
    double tf = 7.0, tm = 7.0;
    before(f, "ggml_qat_get_benchmark_times");
    CHECK(!ggml_qat_get_benchmark_times(null_ctx ? NULL : f->q, &tf, &tm), "benchmark times");
    CHECK(tf == 7.0 && tm == 7.0, "outputs written on failure");
    after_fail(f, "ctx");
}

/* -- calibration data -- */

static void c_calib_null(fx_t * f, long which, long b) {
    (void) b;
    int64_t shape[2] = { 64, 4 };
    before(f, "ggml_qat_generate_calibration_data");
    struct ggml_tensor * t = ggml_qat_generate_calibration_data(which == 0 ? NULL : f->q, which == 1 ? NULL : f->g,
                                                                which == 2 ? NULL : shape, 2, 0.0f, 1.0f);
    CHECK(t == NULL, "NULL argument %ld accepted", which);
    CHECK(shape[0] == 64 && shape[1] == 4, "shape changed");
    after_fail(f, which == 0 ? "ctx" : which == 1 ? "ggml_ctx" : "shape");
}

static void c_calib_ndims(fx_t * f, long n_dims, long b) {
    (void) b;
    int64_t shape[4] = { 64, 4, 2, 2 };
    before(f, "ggml_qat_generate_calibration_data");
    CHECK(ggml_qat_generate_calibration_data(f->q, f->g, shape, (int) n_dims, 0.0f, 1.0f) == NULL, "n_dims %ld", n_dims);
    after_fail(f, "n_dims");
}

static void c_calib_shape(fx_t * f, long which, long b) {
    (void) b;
    int64_t shapes[][4] = {
        { 0, 4, 1, 1 },                                   /* zero */
        { -1, 4, 1, 1 },                                  /* negative */
        { INT64_MIN, 4, 1, 1 },                           /* most negative */
        { INT64_MAX, 2, 1, 1 },                           /* bytes overflow */
        { (int64_t) 1 << 32, (int64_t) 1 << 32, 1, 1 },   /* element count overflows int64 */
        { (int64_t) 1 << 20, (int64_t) 1 << 20, (int64_t) 1 << 20, (int64_t) 1 << 20 }, /* 4-d overflow */
        { (int64_t) 1 << 30, 16, 1, 1 },                  /* 64 GiB: fits size_t, not the context */
        { 64, 4, 0, 1 },                                  /* zero in a later dimension */
    };
    int64_t saved[4];
    memcpy(saved, shapes[which], sizeof(saved));
    before(f, "ggml_qat_generate_calibration_data");
    CHECK(ggml_qat_generate_calibration_data(f->q, f->g, shapes[which], 4, 0.0f, 1.0f) == NULL, "shape case %ld", which);
    CHECK(memcmp(saved, shapes[which], sizeof(saved)) == 0, "shape array changed");
    after_fail(f, which == 6 ? "free" : NULL);
}

static void c_calib_floats(fx_t * f, long is_std, long v) {
    int64_t shape[2] = { 64, 4 };
    float vals[] = { NAN, INFINITY, -INFINITY, -1.0f };
    before(f, "ggml_qat_generate_calibration_data");
    CHECK(ggml_qat_generate_calibration_data(f->q, f->g, shape, 2, is_std ? 0.0f : vals[v], is_std ? vals[v] : 1.0f) == NULL,
          "%s = %g accepted", is_std ? "std" : "mean", vals[v]);
    after_fail(f, is_std ? "std" : "mean");
}

/* mean and std finite but so large that the values overflow: refused, or
 * every value finite. */
static void c_calib_overflowing_values(fx_t * f, long a, long b) {
    (void) a; (void) b;
    int64_t shape[1] = { 4096 };
    before(f, "ggml_qat_generate_calibration_data");
    struct ggml_tensor * t = ggml_qat_generate_calibration_data(f->q, f->g, shape, 1, FLT_MAX, FLT_MAX);
    if (t == NULL) {
        after_fail(f, NULL);
        return;
    }
    int finite = 1;
    for (int i = 0; i < 4096; ++i) finite &= isfinite(((float *) t->data)[i]) != 0;
    CHECK(finite, "mean = std = FLT_MAX gave non-finite values");
    after_ok(f);
}

static void c_calib_ctx(fx_t * f, long which, long b) {
    (void) b;
    int64_t shape[2] = { 256, 8 };
    before(f, "ggml_qat_generate_calibration_data");
    CHECK(ggml_qat_generate_calibration_data(f->q, which ? f->gfull : f->gna, shape, 2, 0.0f, 1.0f) == NULL, "%s context",
          which ? "full" : "no_alloc");
    after_fail(f, which ? "free" : "no_alloc");
    if (which) { /* the full context still takes what fits */
        int64_t tiny[1] = { 4 };
        CHECK(ggml_qat_generate_calibration_data(f->q, f->gfull, tiny, 1, 0.0f, 1.0f) != NULL, "tiny tensor in the full context: %s",
              ggml_qat_last_error());
    }
}

/* -- quantize_layer / quantize_tensor / quantize_layer_optimized -- */

enum { Q_LAYER, Q_TENSOR, Q_OPT };
static const char * q_names[] = { "ggml_qat_quantize_layer", "ggml_qat_quantize_tensor", "ggml_qat_quantize_layer_optimized" };

static struct ggml_tensor * q_call(fx_t * f, long which, ggml_qat_context_t * q, struct ggml_context * g, struct ggml_tensor * src) {
    switch (which) {
    case Q_LAYER: return ggml_qat_quantize_layer(q, g, src, GGML_QAT_LAYER_ATTENTION);
    case Q_TENSOR: return ggml_qat_quantize_tensor(q, g, src, GGML_TYPE_Q4_K);
    default: return ggml_qat_quantize_layer_optimized(q, g, src, GGML_QAT_LAYER_ATTENTION, NULL);
    }
    (void) f;
}

static void c_q_null(fx_t * f, long which, long arg) {
    before(f, q_names[which]);
    CHECK(q_call(f, which, arg == 0 ? NULL : f->q, arg == 1 ? NULL : f->g, arg == 2 ? NULL : f->w) == NULL, "NULL arg %ld", arg);
    after_fail(f, arg == 0 ? "ctx" : arg == 1 ? "ggml_ctx" : "src");
}

static void c_q_enum(fx_t * f, long which, long v) {
    before(f, q_names[which]);
    struct ggml_tensor * t;
    if (which == Q_TENSOR) {
        t = ggml_qat_quantize_tensor(f->q, f->g, f->w, (enum ggml_type) g_bad_qtypes[v]);
    } else if (which == Q_LAYER) {
        t = ggml_qat_quantize_layer(f->q, f->g, f->w, (ggml_qat_layer_type_t) g_bad_enums[v]);
    } else {
        t = ggml_qat_quantize_layer_optimized(f->q, f->g, f->w, (ggml_qat_layer_type_t) g_bad_enums[v], NULL);
    }
    CHECK(t == NULL, "bad enum %d accepted", which == Q_TENSOR ? g_bad_qtypes[v] : g_bad_enums[v]);
    after_fail(f, which == Q_TENSOR ? "qtype" : "layer_type");
}

/* Sources that must be refused: unsupported types, no data, bad shapes,
 * non-finite data. */
static void c_q_src(fx_t * f, long which, long s) {
    struct ggml_tensor * srcs[] = { f->ti32, f->tf64, f->nodata, f->huge, f->ovf, f->empty, f->nan_t, f->pinf_t, f->ninf_t };
    before(f, q_names[which]);
    CHECK(q_call(f, which, f->q, f->g, srcs[s]) == NULL, "source '%s' accepted", srcs[s]->name);
    after_fail(f, NULL);
}

static void c_q_ctx(fx_t * f, long which, long full) {
    before(f, q_names[which]);
    CHECK(q_call(f, which, f->q, full ? f->gfull : f->gna, f->w) == NULL, "%s context accepted", full ? "full" : "no_alloc");
    after_fail(f, full ? "free" : "no_alloc");
}

/* Non-contiguous views: the result of the contiguous copy, or a refusal. */
static void c_q_view(fx_t * f, long which, long v) {
    struct ggml_tensor * views[] = { f->wt, f->wv, f->wt16, f->wqt };
    struct ggml_tensor * copies[] = { f->wt_copy, f->wv_copy, f->wt16_copy, NULL };
    before(f, q_names[which]);
    ggml_qat_set_seed(f->q, 5);
    struct ggml_tensor * d = q_call(f, which, f->q, f->g, views[v]);
    if (d == NULL) {
        CHECK(ggml_qat_last_error()[0] != '\0', "view '%s' refused without a message", views[v]->name);
        after_fail(f, NULL);
        return;
    }
    CHECK(copies[v] != NULL, "view '%s' accepted (blocks not together)", views[v]->name);
    if (copies[v]) {
        CHECK(memcmp(d->ne, copies[v]->ne, sizeof(d->ne)) == 0, "shape of the result of view '%s'", views[v]->name);
        if (which == Q_OPT) {
            ggml_qat_set_seed(f->q, 5);
            struct ggml_tensor * e = q_call(f, which, f->q, f->g, copies[v]);
            CHECK(e && e->type == d->type && memcmp(e->data, d->data, ggml_nbytes(d)) == 0,
                  "optimized view '%s' differs from its contiguous copy", views[v]->name);
        } else {
            CHECK(same_quant(d, copies[v]), "view '%s' quantized differently from its contiguous copy", views[v]->name);
        }
    }
    check_snaps_mem(f, "view", false); /* the result is a new tensor */
    follow_up(f);
}

static void c_opt_calib(fx_t * f, long c, long b) {
    (void) b;
    struct ggml_tensor * cals[] = { f->x128, f->xnan, f->ti32, f->nodata, f->empty, f->ovf };
    before(f, "ggml_qat_quantize_layer_optimized");
    CHECK(ggml_qat_quantize_layer_optimized(f->q, f->g, f->w, GGML_QAT_LAYER_ATTENTION, cals[c]) == NULL, "calibration '%s' accepted",
          cals[c]->name);
    after_fail(f, NULL);
}

static void c_opt_calib_view(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_quantize_layer_optimized");
    struct ggml_tensor * d = ggml_qat_quantize_layer_optimized(f->q, f->g, f->w, GGML_QAT_LAYER_ATTENTION, f->xt);
    if (!d) {
        after_fail(f, NULL);
        return;
    }
    struct ggml_tensor * e = ggml_qat_quantize_layer_optimized(f->q, f->g, f->w, GGML_QAT_LAYER_ATTENTION, f->xt_copy);
    CHECK(e && memcmp(d->data, e->data, ggml_nbytes(d)) == 0, "calibration view differs from its contiguous copy");
    after_ok(f);
}

/* -- kl_divergence_loss -- */

static void c_kl_null(fx_t * f, long arg, long b) {
    (void) b;
    before(f, "ggml_qat_kl_divergence_loss");
    float r = ggml_qat_kl_divergence_loss(arg == 0 ? NULL : f->q, NULL, arg == 1 ? NULL : f->w, arg == 2 ? NULL : f->w2, 1.0f);
    CHECK(isnan(r), "NULL arg %ld gave %g", arg, r);
    after_fail(f, arg == 0 ? "ctx" : arg == 1 ? "original" : "quantized");
}

static void c_kl_temp(fx_t * f, long v, long b) {
    (void) b;
    float vals[] = { 0.0f, -1.0f, NAN, INFINITY, -INFINITY, -0.0f };
    before(f, "ggml_qat_kl_divergence_loss");
    float r = ggml_qat_kl_divergence_loss(f->q, f->g, f->w, f->w2, vals[v]);
    CHECK(isnan(r), "temperature %g gave %g", vals[v], r);
    after_fail(f, "temperature");
}

static void c_kl_shape(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_kl_divergence_loss");
    float r = ggml_qat_kl_divergence_loss(f->q, f->g, f->w, f->wsmall, 1.0f);
    CHECK(isinf(r) && r > 0, "shape mismatch gave %g", r);
    after_fail(f, "shape");
}

static void c_kl_src(fx_t * f, long side, long s) {
    struct ggml_tensor * srcs[] = { f->ti32, f->tf64, f->nodata, f->huge, f->ovf, f->empty, f->nan_t, f->pinf_t, f->ninf_t };
    struct ggml_tensor * other = f->w;
    if (srcs[s] == f->huge || srcs[s] == f->ovf || srcs[s] == f->empty) other = srcs[s]; /* same shape */
    before(f, "ggml_qat_kl_divergence_loss");
    float r = side ? ggml_qat_kl_divergence_loss(f->q, f->g, other, srcs[s], 1.0f)
                   : ggml_qat_kl_divergence_loss(f->q, f->g, srcs[s], other, 1.0f);
    CHECK(isnan(r), "tensor '%s' gave %g", srcs[s]->name, r);
    after_fail(f, NULL);
}

static void c_kl_view(fx_t * f, long v, long b) {
    (void) b;
    struct ggml_tensor * views[] = { f->wt, f->wv, f->wt16, f->wqt };
    struct ggml_tensor * copies[] = { f->wt_copy, f->wv_copy, f->wt16_copy, NULL };
    before(f, "ggml_qat_kl_divergence_loss");
    float r = ggml_qat_kl_divergence_loss(f->q, f->g, views[v], copies[v] ? f->w : views[v], 2.0f);
    if (!copies[v]) {
        CHECK(isnan(r), "view '%s' (blocks not together) gave %g", views[v]->name, r);
        after_fail(f, NULL);
        return;
    }
    float ref = ggml_qat_kl_divergence_loss(f->q, f->g, copies[v], f->w, 2.0f);
    CHECK(r == ref && isfinite(r) && r > 0, "view '%s': KL %g, contiguous copy %g", views[v]->name, r, ref);
    float zero = ggml_qat_kl_divergence_loss(f->q, f->g, views[v], copies[v], 2.0f);
    CHECK(fabsf(zero) < 1e-6f, "view against its copy: %g", zero);
    check_snaps(f, "kl view");
    follow_up(f);
}

/* -- validate_performance -- */

static void c_val_null(fx_t * f, long arg, long b) {
    (void) b;
    before(f, "ggml_qat_validate_performance");
    ggml_qat_stats_t s = ggml_qat_validate_performance(arg == 0 ? NULL : f->q, NULL, arg == 1 ? NULL : f->w,
                                                       arg == 2 ? NULL : f->wq, f->x);
    CHECK(stats_zero(s), "NULL arg %ld", arg);
    after_fail(f, arg == 0 ? "ctx" : arg == 1 ? "original_model" : "quantized_model");
}

static void c_val_bad(fx_t * f, long which, long b) {
    (void) b;
    struct { struct ggml_tensor * a, * q, * x; const char * what; } cases[] = {
        { f->w, f->wsmall, NULL, "shapes differ" },
        { f->w, f->wq, f->x128, "test_data ne[0]" },
        { f->w, f->wq, f->xnan, "NaN test_data" },
        { f->nan_t, f->wq, f->x, "NaN original" },
        { f->w, f->pinf_t, f->x, "+Inf quantized" },
        { f->ninf_t, f->wq, NULL, "-Inf original" },
        { f->ti32, f->wq, f->x, "I32 original" },
        { f->w, f->tf64, f->x, "F64 quantized" },
        { f->nodata, f->wq, f->x, "original without data" },
        { f->w, f->wq, f->nodata, "test_data without data" },
        { f->empty, f->empty, NULL, "empty" },
        { f->ovf, f->ovf, NULL, "overflowing shape" },
        { f->w, f->wq, f->ti32, "I32 test_data" },
    };
    before(f, "ggml_qat_validate_performance");
    ggml_qat_stats_t s = ggml_qat_validate_performance(f->q, NULL, cases[which].a, cases[which].q, cases[which].x);
    CHECK(stats_zero(s), "%s: stats not zero (kl %g, acc %g)", cases[which].what, s.kl_divergence_loss, s.accuracy_retention);
    after_fail(f, NULL);
}

static void c_val_view(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_validate_performance");
    ggml_qat_stats_t s = ggml_qat_validate_performance(f->q, NULL, f->wt, f->wq, f->xt);
    if (stats_zero(s)) {
        after_fail(f, NULL); /* refused, with a message */
        return;
    }
    ggml_qat_stats_t r = ggml_qat_validate_performance(f->q, NULL, f->wt_copy, f->wq, f->xt_copy);
    CHECK(s.kl_divergence_loss == r.kl_divergence_loss && s.accuracy_retention == r.accuracy_retention,
          "views: kl %g acc %g, copies: kl %g acc %g", s.kl_divergence_loss, s.accuracy_retention, r.kl_divergence_loss,
          r.accuracy_retention);
    after_ok(f);
}

/* -- benchmark_inference_speed -- */

static void c_bench_null(fx_t * f, long arg, long b) {
    (void) b;
    before(f, "ggml_qat_benchmark_inference_speed");
    float r = ggml_qat_benchmark_inference_speed(arg == 0 ? NULL : f->q, NULL, arg == 1 ? NULL : f->wq, arg == 2 ? NULL : f->x, 1);
    CHECK(r == 0.0f, "NULL arg %ld gave %g", arg, r);
    after_fail(f, arg == 0 ? "ctx" : arg == 1 ? "model" : "test_input");
}

static void c_bench_iter(fx_t * f, long n, long b) {
    (void) b;
    before(f, "ggml_qat_benchmark_inference_speed");
    float r = ggml_qat_benchmark_inference_speed(f->q, NULL, f->wq, f->x, (int) n);
    CHECK(r == 0.0f, "n_iterations %ld gave %g", n, r);
    after_fail(f, "n_iterations");
}

static void c_bench_bad(fx_t * f, long which, long b) {
    (void) b;
    struct { struct ggml_tensor * m, * x; const char * what; } cases[] = {
        { f->wq, f->x128, "ne[0] differ" },
        { f->ti32, f->x, "I32 model" },
        { f->tf64, f->x, "F64 model" },
        { f->nodata, f->x, "model without data" },
        { f->wq, f->nodata, "input without data" },
        { f->wq, f->xnan, "NaN input" },
        { f->empty, f->empty, "empty" },
        { f->ovf, f->x, "overflowing shape" },
    };
    before(f, "ggml_qat_benchmark_inference_speed");
    float r = ggml_qat_benchmark_inference_speed(f->q, NULL, cases[which].m, cases[which].x, 1);
    CHECK(r == 0.0f, "%s gave %g", cases[which].what, r);
    after_fail(f, NULL);
    double tf = 7.0, tm = 7.0;
    CHECK(!ggml_qat_get_benchmark_times(f->q, &tf, &tm) && tf == 7.0, "a failed benchmark left times");
}

static void c_bench_view(fx_t * f, long a, long b) {
    (void) a; (void) b;
    before(f, "ggml_qat_benchmark_inference_speed");
    float r = ggml_qat_benchmark_inference_speed(f->q, NULL, f->wt, f->xt, 1);
    if (r == 0.0f) {
        after_fail(f, NULL);
        return;
    }
    CHECK(r > 0.0f && isfinite(r), "benchmark on views: %g", r);
    after_ok(f);
}

/* -- OpenCog -- */

static ggml_qat_context_t * disabled_ctx(void) {
    ggml_qat_config_t c = ggml_qat_default_config();
    c.enable_atomspace = c.enable_moses = c.enable_ecan = false;
    return ggml_qat_init(&c);
}

static void c_atomspace(fx_t * f, long n_atoms, long n_conn) {
    before(f, "ggml_qat_create_atomspace");
    ggml_qat_atomspace_t * a = ggml_qat_create_atomspace(f->q, NULL, (int) n_atoms, (int) n_conn);
    CHECK(a == NULL, "atomspace(%ld, %ld) accepted", n_atoms, n_conn);
    ggml_qat_free_atomspace(a);
    after_fail(f, n_atoms == 1 ? "n_connections" : "n_atoms");
}

static void c_moses(fx_t * f, long n_nodes, long depth) {
    before(f, "ggml_qat_create_moses_tree");
    ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(f->q, NULL, (int) n_nodes, (int) depth);
    CHECK(t == NULL, "moses(%ld, %ld) accepted", n_nodes, depth);
    ggml_qat_free_moses_tree(t);
    after_fail(f, depth < 0 ? "tree_depth" : "n_nodes");
}

static void c_moses_deep(fx_t * f, long a, long b) {
    (void) a; (void) b;
    ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(f->q, NULL, 3, INT_MAX);
    CHECK(t != NULL && t->n_nodes == 3, "depth INT_MAX with 3 nodes is valid: %s", ggml_qat_last_error());
    ggml_qat_free_moses_tree(t);
    after_ok(f);
}

static void c_ecan(fx_t * f, long n, long b) {
    (void) b;
    before(f, "ggml_qat_create_ecan");
    ggml_qat_ecan_t * e = ggml_qat_create_ecan(f->q, NULL, (int) n);
    CHECK(e == NULL, "ecan(%ld) accepted", n);
    ggml_qat_free_ecan(e);
    after_fail(f, "n_elements");
}

static void c_opencog_null_or_disabled(fx_t * f, long which, long disabled) {
    ggml_qat_context_t * q = disabled ? disabled_ctx() : NULL;
    const char * names[] = { "ggml_qat_create_atomspace", "ggml_qat_create_moses_tree", "ggml_qat_create_ecan" };
    before(f, names[which]);
    void * r = which == 0 ? (void *) ggml_qat_create_atomspace(q, NULL, 4, 4)
             : which == 1 ? (void *) ggml_qat_create_moses_tree(q, NULL, 4, 3)
                          : (void *) ggml_qat_create_ecan(q, NULL, 4);
    CHECK(r == NULL, "%s context accepted", disabled ? "disabled" : "NULL");
    after_fail(f, disabled ? "enable_" : "ctx");
    ggml_qat_free(q);
}

/* -- sensitivity, plan -- */

static void c_sens_null(fx_t * f, long arg, long b) {
    (void) b;
    before(f, "ggml_qat_layer_sensitivity");
    CHECK(isnan(ggml_qat_layer_sensitivity(arg == 0 ? NULL : f->q, arg == 1 ? NULL : f->w, GGML_TYPE_Q4_K)), "NULL arg");
    after_fail(f, arg == 0 ? "ctx" : "layer");
}

static void c_sens_qtype(fx_t * f, long v, long b) {
    (void) b;
    int ty = v < 0 ? GGML_TYPE_F32 : g_bad_qtypes[v];
    before(f, "ggml_qat_layer_sensitivity");
    CHECK(isnan(ggml_qat_layer_sensitivity(f->q, f->w, (enum ggml_type) ty)), "qtype %d accepted", ty);
    after_fail(f, v < 0 ? "saves nothing" : "qtype");
}

static void c_sens_src(fx_t * f, long s, long b) {
    (void) b;
    struct ggml_tensor * srcs[] = { f->ti32, f->tf64, f->nodata, f->huge, f->ovf, f->empty, f->nan_t, f->pinf_t, f->ninf_t };
    before(f, "ggml_qat_layer_sensitivity");
    float r = ggml_qat_layer_sensitivity(f->q, srcs[s], GGML_TYPE_Q4_K);
    CHECK(isnan(r), "layer '%s' gave %g", srcs[s]->name, r);
    after_fail(f, NULL);
}

static void c_sens_view(fx_t * f, long v, long b) {
    (void) b;
    struct ggml_tensor * views[] = { f->wt, f->wv, f->wt16 };
    struct ggml_tensor * copies[] = { f->wt_copy, f->wv_copy, f->wt16_copy };
    before(f, "ggml_qat_layer_sensitivity");
    ggml_qat_set_seed(f->q, 9);
    float r = ggml_qat_layer_sensitivity(f->q, views[v], GGML_TYPE_Q4_K);
    ggml_qat_set_seed(f->q, 9);
    float c = ggml_qat_layer_sensitivity(f->q, copies[v], GGML_TYPE_Q4_K);
    if (isnan(r)) {
        after_fail(f, NULL);
        return;
    }
    CHECK(r == c, "view '%s': %g, contiguous copy %g", views[v]->name, r, c);
    after_ok(f);
}

static void c_plan(fx_t * f, long which, long b) {
    (void) b;
    enum ggml_type out[4] = { 77, 77, 77, 77 };
    struct ggml_tensor * ts[2] = { f->w, f->w2 };
    struct ggml_tensor * saved[2] = { f->w, f->w2 };
    struct ggml_tensor * srcs[] = { NULL, f->ti32, f->tf64, f->nodata, f->nan_t, f->pinf_t, f->ovf, f->empty };
    int n = 2;
    ggml_qat_context_t * q = f->q;
    struct ggml_tensor ** tp = ts;
    enum ggml_type * op = out;
    const char * kw = NULL;
    switch (which) {
    case 0: q = NULL; kw = "ctx"; break;
    case 1: tp = NULL; kw = "tensors"; break;
    case 2: op = NULL; kw = "types_out"; break;
    case 3: n = 0; kw = "n_tensors"; break;
    case 4: n = -1; kw = "n_tensors"; break;
    case 5: n = INT_MIN; kw = "n_tensors"; break;
    default: ts[1] = saved[1] = srcs[which - 6]; break;
    }
    before(f, "ggml_qat_plan_mixed_precision");
    CHECK(!ggml_qat_plan_mixed_precision(q, tp, n, op), "plan case %ld accepted", which);
    CHECK(out[0] == 77 && out[1] == 77 && out[2] == 77, "types_out written on failure");
    CHECK(ts[0] == saved[0] && ts[1] == saved[1], "tensors array changed");
    after_fail(f, kw);
}

/* n_tensors = INT_MAX over an array that is NULL from index 1 on. */
static void c_plan_int_max(fx_t * f, long a, long b) {
    (void) a; (void) b;
    struct ggml_tensor ** ts = big_zero_array((size_t) INT_MAX * sizeof(*ts));
    enum ggml_type out[2] = { 77, 77 };
    if (!ts) {
        fprintf(stderr, "plan INT_MAX: no address space for the array; case skipped\n");
        return;
    }
    ts[0] = f->w;
    before(f, "ggml_qat_plan_mixed_precision");
    CHECK(!ggml_qat_plan_mixed_precision(f->q, ts, INT_MAX, out), "INT_MAX tensors accepted");
    CHECK(out[0] == 77, "types_out written");
    CHECK(ts[0] == f->w && ts[1] == NULL, "array changed");
    after_fail(f, NULL);
    munmap(ts, (size_t) INT_MAX * sizeof(*ts));
}

static void c_plan_view(fx_t * f, long a, long b) {
    (void) a; (void) b;
    enum ggml_type p1[2], p2[2];
    struct ggml_tensor * v[2] = { f->wt, f->w2 };
    struct ggml_tensor * c[2] = { f->wt_copy, f->w2 };
    before(f, "ggml_qat_plan_mixed_precision");
    ggml_qat_set_seed(f->q, 3);
    bool ok = ggml_qat_plan_mixed_precision(f->q, v, 2, p1);
    ggml_qat_set_seed(f->q, 3);
    bool ok2 = ggml_qat_plan_mixed_precision(f->q, c, 2, p2);
    if (!ok) {
        after_fail(f, NULL);
        return;
    }
    CHECK(ok2 && p1[0] == p2[0] && p1[1] == p2[1], "plan of a view differs from its copy's");
    after_ok(f);
}

/* -- estimate_memory_usage -- */

static void c_est(fx_t * f, long which, long b) {
    (void) b;
    struct ggml_tensor * ts[2] = { f->w, f->w2 };
    ggml_qat_layer_type_t lt[2] = { GGML_QAT_LAYER_FFN, GGML_QAT_LAYER_ATTENTION };
    struct ggml_tensor * srcs[] = { NULL, f->ti32, f->tf64, f->ovf, f->empty };
    int n = 2;
    ggml_qat_context_t * q = f->q;
    struct ggml_tensor ** tp = ts;
    ggml_qat_layer_type_t * lp = lt;
    const char * kw = NULL;
    switch (which) {
    case 0: q = NULL; kw = "ctx"; break;
    case 1: tp = NULL; kw = "tensors"; break;
    case 2: lp = NULL; kw = "layer_types"; break;
    case 3: n = -1; kw = "n_tensors"; break;
    case 4: n = INT_MIN; kw = "n_tensors"; break;
    case 5: case 6: case 7: case 8: case 9:
        lt[1] = (ggml_qat_layer_type_t) g_bad_enums[which - 5]; kw = "layer_types"; break;
    default: ts[1] = srcs[which - 10]; break;
    }
    struct ggml_tensor * ts_saved[2] = { ts[0], ts[1] };
    ggml_qat_layer_type_t lt_saved[2] = { lt[0], lt[1] };
    before(f, "ggml_qat_estimate_memory_usage");
    size_t r = ggml_qat_estimate_memory_usage(q, tp, lp, n);
    CHECK(r == 0, "estimate case %ld gave %zu", which, r);
    CHECK(memcmp(ts, ts_saved, sizeof(ts)) == 0 && memcmp(lt, lt_saved, sizeof(lt)) == 0, "arrays changed");
    after_fail(f, kw);
}

static void c_est_int_max(fx_t * f, long a, long b) {
    (void) a; (void) b;
    struct ggml_tensor ** ts = big_zero_array((size_t) INT_MAX * sizeof(*ts));
    ggml_qat_layer_type_t * lt = big_zero_array((size_t) INT_MAX * sizeof(*lt));
    if (!ts || !lt) {
        fprintf(stderr, "estimate INT_MAX: no address space for the arrays; case skipped\n");
        return;
    }
    ts[0] = f->w;
    before(f, "ggml_qat_estimate_memory_usage");
    CHECK(ggml_qat_estimate_memory_usage(f->q, ts, lt, INT_MAX) == 0, "INT_MAX tensors accepted");
    after_fail(f, "NULL");
    munmap(ts, (size_t) INT_MAX * sizeof(*ts));
    munmap(lt, (size_t) INT_MAX * sizeof(*lt));
}

/* Valid edge cases: n_tensors 0; a no-data tensor (metadata is enough); views. */
static void c_est_valid(fx_t * f, long a, long b) {
    (void) a; (void) b;
    CHECK(ggml_qat_estimate_memory_usage(f->q, NULL, NULL, 0) == 0, "n_tensors 0");
    ggml_qat_layer_type_t lt[1] = { GGML_QAT_LAYER_ATTENTION };
    struct ggml_tensor * t1[1] = { f->nodata };
    struct ggml_tensor * t2[1] = { f->w };
    struct ggml_tensor * t3[1] = { f->wt };
    size_t a1 = ggml_qat_estimate_memory_usage(f->q, t1, lt, 1);
    size_t a2 = ggml_qat_estimate_memory_usage(f->q, t2, lt, 1);
    size_t a3 = ggml_qat_estimate_memory_usage(f->q, t3, lt, 1);
    CHECK(a2 == ggml_row_size(GGML_TYPE_Q4_K, NE0) * NE1, "estimate %zu", a2);
    CHECK(a1 == a2 && a3 == a2, "no-data %zu, view %zu, plain %zu", a1, a3, a2);
    /* [2^40, 2^20] without data: 2^62 bytes as F32, its Q4_K size fits size_t */
    struct ggml_tensor * t4[1] = { f->huge };
    size_t a4 = ggml_qat_estimate_memory_usage(f->q, t4, lt, 1);
    CHECK(a4 == ggml_row_size(GGML_TYPE_Q4_K, f->huge->ne[0]) * (size_t) f->huge->ne[1], "huge estimate %zu: %s", a4,
          ggml_qat_last_error());
    after_ok(f);
}

/* -- get_optimal_qtype -- */

static void c_optimal(fx_t * f, long v, long with_backend) {
    ggml_backend_t be = with_backend ? ggml_backend_cpu_init() : NULL;
    before(f, "ggml_qat_get_optimal_qtype");
    enum ggml_type t = ggml_qat_get_optimal_qtype((ggml_qat_layer_type_t) g_bad_enums[v], be);
    CHECK(t == GGML_TYPE_F32, "layer_type %d gave %d", g_bad_enums[v], (int) t);
    after_fail(f, "layer_type");
    if (be) {
        CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_ATTENTION, be) == GGML_TYPE_Q4_K, "CPU backend after the failure");
        ggml_backend_free(be);
    }
}

/* -- progressive_quantize -- */

static void c_prog(fx_t * f, long which, long b) {
    (void) b;
    struct ggml_tensor * ts[2] = { f->w, f->w2 };
    ggml_qat_layer_type_t lt[2] = { GGML_QAT_LAYER_FFN, GGML_QAT_LAYER_ATTENTION };
    struct ggml_tensor * srcs[] = { NULL, f->ti32, f->tf64, f->nodata, f->nan_t, f->pinf_t, f->ninf_t, f->ovf, f->empty, f->huge };
    ggml_qat_context_t * q = f->q;
    struct ggml_context * g = f->g;
    struct ggml_tensor ** tp = ts;
    ggml_qat_layer_type_t * lp = lt;
    int n = 2, cur = 1;
    const char * kw = NULL;
    switch (which) {
    case 0: q = NULL; kw = "ctx"; break;
    case 1: g = NULL; kw = "ggml_ctx"; break;
    case 2: tp = NULL; kw = "layers"; break;
    case 3: lp = NULL; kw = "layer_types"; break;
    case 4: n = 0; kw = "n_layers"; break;
    case 5: n = -1; kw = "n_layers"; break;
    case 6: n = INT_MIN; kw = "n_layers"; break;
    case 7: cur = -1; kw = "current_layer"; break;
    case 8: cur = 2; kw = "current_layer"; break;
    case 9: cur = INT_MAX; kw = "current_layer"; break;
    case 10: cur = INT_MIN; kw = "current_layer"; break;
    case 11: g = f->gna; kw = "no_alloc"; break;
    case 12: g = f->gfull; kw = "free"; break;
    case 13: case 14: case 15: case 16: case 17:
        lt[1] = (ggml_qat_layer_type_t) g_bad_enums[which - 13]; kw = "layer_types"; break;
    default: ts[1] = srcs[which - 18]; break;
    }
    struct ggml_tensor * ts_saved[2] = { ts[0], ts[1] };
    ggml_qat_layer_type_t lt_saved[2] = { lt[0], lt[1] };
    before(f, "ggml_qat_progressive_quantize");
    CHECK(!ggml_qat_progressive_quantize(q, g, tp, lp, n, cur), "progressive case %ld accepted", which);
    CHECK(memcmp(ts, ts_saved, sizeof(ts)) == 0, "layers array changed on failure");
    CHECK(memcmp(lt, lt_saved, sizeof(lt)) == 0, "layer_types array changed");
    after_fail(f, kw);
    /* The valid layer 0 was not marked as quantized: it still gets done. */
    if (which >= 11) {
        struct ggml_tensor * one[1] = { f->w };
        CHECK(ggml_qat_progressive_quantize(f->q, f->g, one, lt, 1, 0) && one[0] != f->w && one[0]->type != GGML_TYPE_F32,
              "layer 0 after the failure: %s", ggml_qat_last_error());
    }
}

static void c_prog_int_max(fx_t * f, long a, long b) {
    (void) a; (void) b;
    struct ggml_tensor ** ts = big_zero_array((size_t) INT_MAX * sizeof(*ts));
    ggml_qat_layer_type_t * lt = big_zero_array((size_t) INT_MAX * sizeof(*lt));
    if (!ts || !lt) {
        fprintf(stderr, "progressive INT_MAX: no address space for the arrays; case skipped\n");
        return;
    }
    ts[0] = f->w;
    before(f, "ggml_qat_progressive_quantize");
    CHECK(!ggml_qat_progressive_quantize(f->q, f->g, ts, lt, INT_MAX, 1), "layers[1] NULL accepted");
    CHECK(ts[0] == f->w && ts[1] == NULL, "array changed");
    after_fail(f, NULL);
    munmap(ts, (size_t) INT_MAX * sizeof(*ts));
    munmap(lt, (size_t) INT_MAX * sizeof(*lt));
}

static void c_prog_view(fx_t * f, long v, long b) {
    (void) b;
    struct ggml_tensor * views[] = { f->wt, f->wv, f->wt16 };
    struct ggml_tensor * copies[] = { f->wt_copy, f->wv_copy, f->wt16_copy };
    ggml_qat_layer_type_t lt[1] = { GGML_QAT_LAYER_ATTENTION };
    struct ggml_tensor * a[1] = { views[v] };
    struct ggml_tensor * c[1] = { copies[v] };
    before(f, "ggml_qat_progressive_quantize");
    ggml_qat_set_seed(f->q, 11);
    bool ok = ggml_qat_progressive_quantize(f->q, f->g, a, lt, 1, 0);
    if (!ok) {
        CHECK(a[0] == views[v], "pointer changed on failure");
        after_fail(f, NULL);
        return;
    }
    ggml_qat_set_seed(f->q, 11);
    CHECK(ggml_qat_progressive_quantize(f->q, f->g, c, lt, 1, 0), "copy: %s", ggml_qat_last_error());
    CHECK(a[0]->type == c[0]->type && memcmp(a[0]->data, c[0]->data, ggml_nbytes(c[0])) == 0,
          "view '%s' progressive result differs from its copy's", views[v]->name);
    after_ok(f);
}

/* ---- the table ------------------------------------------------------------ */

typedef struct {
    char name[96];
    case_fn fn;
    long a, b;
} case_t;

#define MAX_CASES 512
static case_t g_cases[MAX_CASES];
static int g_ncases = 0;

static void add(case_fn fn, long a, long b, const char * fmt, ...) __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
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

static void build_table(void) {
    const char * src_names[] = { "I32", "F64", "no data", "huge (2^62 bytes, no data)", "ne overflows int64", "empty", "NaN data",
                                 "+Inf data", "-Inf data" };
    for (long fi = 0; fi < 4; ++fi)
        for (long v = 0; v < N(g_bad_qtypes); ++v) add(c_init_qtype, fi, v, "init: qtype field %ld = %d", fi, g_bad_qtypes[v]);
    for (long fi = 0; fi < 4; ++fi)
        for (long v = 0; v < 5; ++v) add(c_init_float, fi, v, "init: float field %ld, bad value %ld", fi, v);
    long counts[] = { -1, INT_MIN };
    for (long fi = 0; fi < 2; ++fi)
        for (long v = 0; v < 2; ++v) add(c_init_count, fi, counts[v], "init: count field %ld = %ld", fi, counts[v]);
    add(c_init_huge_samples, 0, 0, "init: calibration_samples = INT_MAX");
    add(c_free_null, 0, 0, "free functions with NULL; version; last_error");
    add(c_set_seed_null, 0, 0, "set_seed: NULL ctx");
    add(c_set_n_threads, 1, 1, "set_n_threads: NULL ctx");
    long nt[] = { -1, INT_MIN, INT_MAX, 1000000 };
    for (long v = 0; v < N(nt); ++v) add(c_set_n_threads, 0, nt[v], "set_n_threads: %ld", nt[v]);
    add(c_get_stats_null, 0, 0, "get_stats: NULL ctx");
    for (long v = 0; v < 3; ++v) add(c_get_fallbacks, v, 0, "get_fallbacks: case %ld (NULL ctx, NULL buf, size 0)", v);
    for (long v = 0; v < 2; ++v) add(c_get_benchmark_times, v, 0, "get_benchmark_times: %s", v ? "NULL ctx" : "before any benchmark");

    for (long v = 0; v < 3; ++v) add(c_calib_null, v, 0, "calibration: NULL argument %ld", v);
    long nd[] = { 0, -1, 5, INT_MAX, INT_MIN };
    for (long v = 0; v < N(nd); ++v) add(c_calib_ndims, nd[v], 0, "calibration: n_dims %ld", nd[v]);
    for (long v = 0; v < 8; ++v) add(c_calib_shape, v, 0, "calibration: bad shape %ld", v);
    for (long s = 0; s < 2; ++s)
        for (long v = 0; v < 4; ++v) {
            if (!s && v == 3) continue; /* mean -1 is valid */
            add(c_calib_floats, s, v, "calibration: %s bad value %ld", s ? "std" : "mean", v);
        }
    add(c_calib_overflowing_values, 0, 0, "calibration: mean = std = FLT_MAX");
    add(c_calib_ctx, 0, 0, "calibration: no_alloc ggml context");
    add(c_calib_ctx, 1, 0, "calibration: ggml context without room");

    for (long w = 0; w < 3; ++w) {
        const char * fn = q_names[w] + 9;
        for (long a = 0; a < 3; ++a) add(c_q_null, w, a, "%s: NULL argument %ld", fn, a);
        long ne = w == Q_TENSOR ? N(g_bad_qtypes) : N(g_bad_enums);
        for (long v = 0; v < ne; ++v) add(c_q_enum, w, v, "%s: bad enum %d", fn, w == Q_TENSOR ? g_bad_qtypes[v] : g_bad_enums[v]);
        for (long s = 0; s < N(src_names); ++s) add(c_q_src, w, s, "%s: src %s", fn, src_names[s]);
        add(c_q_ctx, w, 0, "%s: no_alloc ggml context", fn);
        add(c_q_ctx, w, 1, "%s: ggml context without room", fn);
        const char * vn[] = { "transposed F32", "2-d F32 view with nb1 > row", "transposed F16", "transposed Q8_0" };
        for (long v = 0; v < 4; ++v) add(c_q_view, w, v, "%s: view %s", fn, vn[v]);
    }
    const char * cn[] = { "ne[0] differs", "NaN", "I32", "no data", "empty", "ne overflows" };
    for (long c = 0; c < N(cn); ++c) add(c_opt_calib, c, 0, "quantize_layer_optimized: calibration %s", cn[c]);
    add(c_opt_calib_view, 0, 0, "quantize_layer_optimized: transposed calibration view");

    for (long a = 0; a < 3; ++a) add(c_kl_null, a, 0, "kl: NULL argument %ld", a);
    for (long v = 0; v < 6; ++v) add(c_kl_temp, v, 0, "kl: bad temperature %ld", v);
    add(c_kl_shape, 0, 0, "kl: shapes differ");
    for (long side = 0; side < 2; ++side)
        for (long s = 0; s < N(src_names); ++s) add(c_kl_src, side, s, "kl: %s %s", side ? "quantized" : "original", src_names[s]);
    for (long v = 0; v < 4; ++v) add(c_kl_view, v, 0, "kl: view %ld", v);

    for (long a = 0; a < 3; ++a) add(c_val_null, a, 0, "validate: NULL argument %ld", a);
    for (long v = 0; v < 13; ++v) add(c_val_bad, v, 0, "validate: bad case %ld", v);
    add(c_val_view, 0, 0, "validate: transposed model and inputs");

    for (long a = 0; a < 3; ++a) add(c_bench_null, a, 0, "benchmark: NULL argument %ld", a);
    long it[] = { 0, -1, INT_MIN, INT_MAX };
    for (long v = 0; v < N(it); ++v) add(c_bench_iter, it[v], 0, "benchmark: n_iterations %ld", it[v]);
    for (long v = 0; v < 8; ++v) add(c_bench_bad, v, 0, "benchmark: bad case %ld", v);
    add(c_bench_view, 0, 0, "benchmark: transposed model and inputs");

    long as[][2] = { { 0, 1 }, { -1, 1 }, { INT_MIN, 1 }, { INT_MAX, 1 }, { 1, 0 }, { 1, -1 }, { 1, INT_MAX }, { 1, INT_MIN } };
    for (long v = 0; v < N(as); ++v) add(c_atomspace, as[v][0], as[v][1], "atomspace(%ld, %ld)", as[v][0], as[v][1]);
    long ms[][2] = { { 0, 3 }, { -1, 3 }, { INT_MIN, 3 }, { INT_MAX, 3 }, { 100, 2 }, { 8, 2 }, { 2, 0 }, { 1, -1 }, { 4, INT_MIN } };
    for (long v = 0; v < N(ms); ++v) add(c_moses, ms[v][0], ms[v][1], "moses_tree(%ld, %ld)", ms[v][0], ms[v][1]);
    add(c_moses_deep, 0, 0, "moses_tree(3, INT_MAX) is valid");
    long es[] = { 0, -1, INT_MIN, INT_MAX };
    for (long v = 0; v < N(es); ++v) add(c_ecan, es[v], 0, "ecan(%ld)", es[v]);
    for (long w = 0; w < 3; ++w)
        for (long d = 0; d < 2; ++d) add(c_opencog_null_or_disabled, w, d, "opencog %ld: %s", w, d ? "disabled" : "NULL ctx");

    for (long a = 0; a < 2; ++a) add(c_sens_null, a, 0, "sensitivity: NULL argument %ld", a);
    for (long v = -1; v < N(g_bad_qtypes); ++v) add(c_sens_qtype, v, 0, "sensitivity: qtype %d", v < 0 ? 0 : g_bad_qtypes[v]);
    for (long s = 0; s < N(src_names); ++s) add(c_sens_src, s, 0, "sensitivity: layer %s", src_names[s]);
    for (long v = 0; v < 3; ++v) add(c_sens_view, v, 0, "sensitivity: view %ld", v);

    for (long v = 0; v < 14; ++v) add(c_plan, v, 0, "plan: bad case %ld", v);
    add(c_plan_int_max, 0, 0, "plan: n_tensors INT_MAX");
    add(c_plan_view, 0, 0, "plan: transposed view");

    for (long v = 0; v < 15; ++v) add(c_est, v, 0, "estimate: bad case %ld", v);
    add(c_est_int_max, 0, 0, "estimate: n_tensors INT_MAX");
    add(c_est_valid, 0, 0, "estimate: n_tensors 0, no-data tensors, view");

    for (long be = 0; be < 2; ++be)
        for (long v = 0; v < N(g_bad_enums); ++v)
            add(c_optimal, v, be, "get_optimal_qtype: layer_type %d, %s backend", g_bad_enums[v], be ? "CPU" : "NULL");

    for (long v = 0; v < 28; ++v) add(c_prog, v, 0, "progressive: bad case %ld", v);
    add(c_prog_int_max, 0, 0, "progressive: n_layers INT_MAX, layers[1] NULL");
    for (long v = 0; v < 3; ++v) add(c_prog_view, v, 0, "progressive: view %ld", v);
}

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
