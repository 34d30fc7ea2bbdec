/* test-bad-input-context: ggml_qat_init and its configuration,
 * ggml_qat_free, and the small extensions (free functions with NULL,
 * version, last_error, set_seed, set_n_threads, get_stats, get_fallbacks)
 * with bad arguments (src/capi/context.rs, src/capi/error.rs). See
 * harness.h. */

#include "harness.h"

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

/* ---- the table ------------------------------------------------------------ */

static void build_table(void) {
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
}
