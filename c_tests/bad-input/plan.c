/* test-bad-input-plan: layer_sensitivity and plan_mixed_precision with bad
 * arguments (src/capi/plan.rs). See harness.h. */

#include "harness.h"

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

/* ---- the table ------------------------------------------------------------ */

static void build_table(void) {
    for (long a = 0; a < 2; ++a) add(c_sens_null, a, 0, "sensitivity: NULL argument %ld", a);
    for (long v = -1; v < N(g_bad_qtypes); ++v) add(c_sens_qtype, v, 0, "sensitivity: qtype %d", v < 0 ? 0 : g_bad_qtypes[v]);
    for (long s = 0; s < N(g_src_names); ++s) add(c_sens_src, s, 0, "sensitivity: layer %s", g_src_names[s]);
    for (long v = 0; v < 3; ++v) add(c_sens_view, v, 0, "sensitivity: view %ld", v);

    for (long v = 0; v < 14; ++v) add(c_plan, v, 0, "plan: bad case %ld", v);
    add(c_plan_int_max, 0, 0, "plan: n_tensors INT_MAX");
    add(c_plan_view, 0, 0, "plan: transposed view");
}
