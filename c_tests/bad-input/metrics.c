/* test-bad-input-metrics: kl_divergence_loss, validate_performance,
 * benchmark_inference_speed and get_benchmark_times with bad arguments
 * (src/capi/metrics.rs). See harness.h. */

#include "harness.h"

static void c_get_benchmark_times(fx_t * f, long null_ctx, long b) {
    (void) b;
    double tf = 7.0, tm = 7.0;
    before(f, "ggml_qat_get_benchmark_times");
    CHECK(!ggml_qat_get_benchmark_times(null_ctx ? NULL : f->q, &tf, &tm), "benchmark times");
    CHECK(tf == 7.0 && tm == 7.0, "outputs written on failure");
    after_fail(f, "ctx");
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

/* ---- the table ------------------------------------------------------------ */

static void build_table(void) {
    for (long v = 0; v < 2; ++v) add(c_get_benchmark_times, v, 0, "get_benchmark_times: %s", v ? "NULL ctx" : "before any benchmark");

    for (long a = 0; a < 3; ++a) add(c_kl_null, a, 0, "kl: NULL argument %ld", a);
    for (long v = 0; v < 6; ++v) add(c_kl_temp, v, 0, "kl: bad temperature %ld", v);
    add(c_kl_shape, 0, 0, "kl: shapes differ");
    for (long side = 0; side < 2; ++side)
        for (long s = 0; s < N(g_src_names); ++s) add(c_kl_src, side, s, "kl: %s %s", side ? "quantized" : "original", g_src_names[s]);
    for (long v = 0; v < 4; ++v) add(c_kl_view, v, 0, "kl: view %ld", v);

    for (long a = 0; a < 3; ++a) add(c_val_null, a, 0, "validate: NULL argument %ld", a);
    for (long v = 0; v < 13; ++v) add(c_val_bad, v, 0, "validate: bad case %ld", v);
    add(c_val_view, 0, 0, "validate: transposed model and inputs");

    for (long a = 0; a < 3; ++a) add(c_bench_null, a, 0, "benchmark: NULL argument %ld", a);
    long it[] = { 0, -1, INT_MIN, INT_MAX };
    for (long v = 0; v < N(it); ++v) add(c_bench_iter, it[v], 0, "benchmark: n_iterations %ld", it[v]);
    for (long v = 0; v < 8; ++v) add(c_bench_bad, v, 0, "benchmark: bad case %ld", v);
    add(c_bench_view, 0, 0, "benchmark: transposed model and inputs");
}
