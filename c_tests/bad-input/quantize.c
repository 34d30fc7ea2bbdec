/* test-bad-input-quantize: calibration data, quantize_layer / quantize_tensor /
 * quantize_layer_optimized, estimate_memory_usage, get_optimal_qtype and
 * progressive_quantize with bad arguments (src/capi/quantize.rs). See harness.h. */

#include "harness.h"

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

static void build_table(void) {
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
        for (long s = 0; s < N(g_src_names); ++s) add(c_q_src, w, s, "%s: src %s", fn, g_src_names[s]);
        add(c_q_ctx, w, 0, "%s: no_alloc ggml context", fn);
        add(c_q_ctx, w, 1, "%s: ggml context without room", fn);
        const char * vn[] = { "transposed F32", "2-d F32 view with nb1 > row", "transposed F16", "transposed Q8_0" };
        for (long v = 0; v < 4; ++v) add(c_q_view, w, v, "%s: view %s", fn, vn[v]);
    }
    const char * cn[] = { "ne[0] differs", "NaN", "I32", "no data", "empty", "ne overflows" };
    for (long c = 0; c < N(cn); ++c) add(c_opt_calib, c, 0, "quantize_layer_optimized: calibration %s", cn[c]);
    add(c_opt_calib_view, 0, 0, "quantize_layer_optimized: transposed calibration view");

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
