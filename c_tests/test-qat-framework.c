/* test-qat-framework: calls every function of ggml-qat.h from C11 and
 * asserts real values: quantized bytes equal ggml_quantize_chunk, calibration
 * statistics, KL against a double-precision reference, OpenCog invariants,
 * exact memory estimates, and one error path per function. */

#include "ggml-qat.h"
#include "ggml-cpu.h"
#include "test-common.h"

#include <stdint.h>
#include <stdlib.h>

static struct ggml_context * new_ggml(size_t mb) {
    struct ggml_init_params p = { mb * 1024 * 1024, NULL, false };
    return ggml_init(p);
}

/* KL(softmax(a/T) || softmax(b/T)) per row of n, mean over rows, in double. */
static double kl_reference(const float * a, const float * b, int64_t n, int64_t rows, double t) {
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
        const float * x = a + r * n;
        const float * y = b + r * n;
        double mx = -INFINITY, my = -INFINITY;
        for (int64_t i = 0; i < n; ++i) {
            mx = fmax(mx, x[i] / t);
            my = fmax(my, y[i] / t);
        }
        double sx = 0.0, sy = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            sx += exp(x[i] / t - mx);
            sy += exp(y[i] / t - my);
        }
        double lx = mx + log(sx), ly = my + log(sy), kl = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            double lp = x[i] / t - lx, lq = y[i] / t - ly;
            kl += exp(lp) * (lp - lq);
        }
        total += kl;
    }
    return total / (double) rows;
}

static void test_version_and_config(void) {
    CHECK(ggml_qat_version() != NULL && strlen(ggml_qat_version()) >= 5, "version");
    ggml_qat_config_t c = ggml_qat_default_config();
    CHECK(c.embedding_qtype == GGML_TYPE_Q8_0, "embedding %d", c.embedding_qtype);
    CHECK(c.attention_qtype == GGML_TYPE_Q4_K, "attention %d", c.attention_qtype);
    CHECK(c.ffn_qtype == GGML_TYPE_Q6_K, "ffn %d", c.ffn_qtype);
    CHECK(c.layernorm_qtype == GGML_TYPE_Q8_0, "layernorm %d", c.layernorm_qtype);
    CHECK(c.temperature > 0.0f && c.accuracy_threshold == 0.98f, "numbers");
    CHECK(c.enable_atomspace && c.enable_moses && c.enable_ecan, "enables");

    ggml_qat_context_t * q = ggml_qat_init(NULL);
    CHECK(q != NULL, "init(NULL): %s", ggml_qat_last_error());
    ggml_qat_free(q);

    /* error path: init */
    c.temperature = NAN;
    CHECK(ggml_qat_init(&c) == NULL, "NaN temperature accepted");
    CHECK_ERROR("init NaN");
    CHECK(strstr(ggml_qat_last_error(), "temperature") != NULL, "message: %s", ggml_qat_last_error());
    c = ggml_qat_default_config();
    c.ffn_qtype = GGML_TYPE_I32;
    CHECK(ggml_qat_init(&c) == NULL, "I32 accepted");
    c = ggml_qat_default_config();
    c.memory_reduction_target = 1.0f;
    CHECK(ggml_qat_init(&c) == NULL, "target 1.0 accepted");
    c = ggml_qat_default_config();
    c.calibration_samples = -3;
    CHECK(ggml_qat_init(&c) == NULL, "negative samples accepted");

    /* error path: free */
    ggml_qat_free(NULL);
}

static void test_calibration(ggml_qat_context_t * q, struct ggml_context * g) {
    int64_t shape[2] = { 256, 64 };
    struct ggml_tensor * t = ggml_qat_generate_calibration_data(q, g, shape, 2, 1.5f, 2.0f);
    CHECK(t != NULL, "calibration: %s", ggml_qat_last_error());
    if (!t) return;
    CHECK(t->type == GGML_TYPE_F32 && t->ne[0] == 256 && t->ne[1] == 64, "shape");
    const float * x = (const float *) t->data;
    double m = 0.0, v = 0.0;
    for (int i = 0; i < 256 * 64; ++i) m += x[i];
    m /= 256 * 64;
    for (int i = 0; i < 256 * 64; ++i) v += (x[i] - m) * (x[i] - m);
    v = sqrt(v / (256 * 64 - 1));
    CHECK(fabs(m - 1.5) < 0.05, "mean %f", m);
    CHECK(fabs(v - 2.0) < 0.05, "std %f", v);

    /* Reproducible: same seed, same calls -> same bytes, any thread count. */
    ggml_qat_context_t * a = ggml_qat_init(NULL);
    ggml_qat_context_t * b = ggml_qat_init(NULL);
    ggml_qat_set_seed(a, 42);
    ggml_qat_set_seed(b, 42);
    ggml_qat_set_n_threads(a, 1);
    ggml_qat_set_n_threads(b, 2);
    int64_t big[1] = { 100000 };
    struct ggml_tensor * ta = ggml_qat_generate_calibration_data(a, g, big, 1, 0.0f, 1.0f);
    struct ggml_tensor * tb = ggml_qat_generate_calibration_data(b, g, big, 1, 0.0f, 1.0f);
    CHECK(ta && tb && memcmp(ta->data, tb->data, ggml_nbytes(ta)) == 0, "same seed differs");
    struct ggml_tensor * tc = ggml_qat_generate_calibration_data(a, g, big, 1, 0.0f, 1.0f);
    CHECK(tc && memcmp(ta->data, tc->data, ggml_nbytes(ta)) != 0, "second call repeats the first");
    ggml_qat_set_seed(b, 43);
    struct ggml_tensor * td = ggml_qat_generate_calibration_data(b, g, big, 1, 0.0f, 1.0f);
    CHECK(td && memcmp(ta->data, td->data, ggml_nbytes(ta)) != 0, "other seed same data");
    ggml_qat_free(a);
    ggml_qat_free(b);

    int64_t s3[3] = { 8, 4, 2 };
    struct ggml_tensor * z = ggml_qat_generate_calibration_data(q, g, s3, 3, 0.25f, 0.0f);
    CHECK(z != NULL && ggml_n_dims(z) == 3, "3-d");
    int all_mean = 1;
    for (int i = 0; z && i < 64; ++i) all_mean &= ((float *) z->data)[i] == 0.25f;
    CHECK(all_mean, "std 0 gives mean");

    /* error path */
    CHECK(ggml_qat_generate_calibration_data(q, g, shape, 0, 0.0f, 1.0f) == NULL, "n_dims 0");
    CHECK_ERROR("calibration n_dims 0");
    CHECK(ggml_qat_generate_calibration_data(q, g, shape, 2, 0.0f, -1.0f) == NULL, "std < 0");
    CHECK(ggml_qat_generate_calibration_data(q, g, NULL, 2, 0.0f, 1.0f) == NULL, "shape NULL");
}

/* Quantizes `src` as `lt` and compares with ggml_quantize_chunk(expect). */
static struct ggml_tensor * check_layer(ggml_qat_context_t * q, struct ggml_context * g,
                                        struct ggml_tensor * src, ggml_qat_layer_type_t lt,
                                        enum ggml_type expect) {
    struct ggml_tensor * dst = ggml_qat_quantize_layer(q, g, src, lt);
    CHECK(dst != NULL, "quantize_layer(%d): %s", (int) lt, ggml_qat_last_error());
    if (!dst) return NULL;
    CHECK(dst->type == expect, "class %d: type %s, expected %s", (int) lt,
          ggml_type_name(dst->type), ggml_type_name(expect));
    CHECK(memcmp(dst->ne, src->ne, sizeof(src->ne)) == 0, "shape changed");
    CHECK(strcmp(ggml_get_name(dst), ggml_get_name(src)) == 0, "name %s", ggml_get_name(dst));
    size_t n = ggml_nbytes(dst);
    void * ref = malloc(n);
    size_t written = ggml_quantize_chunk(expect, (const float *) src->data, ref, 0,
                                         ggml_nrows(src), src->ne[0], NULL);
    CHECK(written == n, "ggml wrote %zu, tensor has %zu", written, n);
    CHECK(memcmp(ref, dst->data, n) == 0, "class %d (%s): bytes differ from ggml_quantize_chunk",
          (int) lt, ggml_type_name(expect));
    free(ref);
    return dst;
}

static void test_quantize_and_kl(ggml_qat_context_t * q, struct ggml_context * g) {
    int64_t shape[2] = { 512, 16 };
    struct ggml_tensor * w = ggml_qat_generate_calibration_data(q, g, shape, 2, 0.0f, 0.05f);
    ggml_set_name(w, "blk.0.weight");
    const enum ggml_type expect[7] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0,
                                       GGML_TYPE_Q8_0, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0 };
    struct ggml_tensor * outs[7] = { 0 };
    for (int lt = 0; lt < 7; ++lt) {
        outs[lt] = check_layer(q, g, w, (ggml_qat_layer_type_t) lt, expect[lt]);
    }

    /* Fallback: a row of 96 cannot hold Q4_K blocks: Q5_0 as llama.cpp. */
    int64_t s96[2] = { 96, 4 };
    struct ggml_tensor * w96 = ggml_qat_generate_calibration_data(q, g, s96, 2, 0.0f, 1.0f);
    ggml_set_name(w96, "odd.weight");
    check_layer(q, g, w96, GGML_QAT_LAYER_ATTENTION, GGML_TYPE_Q5_0);
    char buf[512];
    size_t len = ggml_qat_get_fallbacks(q, buf, sizeof buf);
    CHECK(len > 0 && strstr(buf, "odd.weight") != NULL && strstr(buf, "q5_0") != NULL, "fallbacks: %s", buf);

    /* Stats follow what was produced. */
    ggml_qat_stats_t st = ggml_qat_get_stats(q);
    CHECK(st.original_size_mb > 0.0f && st.compression_ratio > 0.0f && st.compression_ratio < 1.0f,
          "stats %f %f", st.original_size_mb, st.compression_ratio);

    /* KL: identical tensors give 0. */
    float kl0 = ggml_qat_kl_divergence_loss(q, g, w, w, 1.0f);
    CHECK(kl0 == 0.0f, "KL(w,w) = %g", kl0);

    /* KL of a perturbed copy equals the double-precision reference. */
    struct ggml_tensor * p = ggml_dup_tensor(g, w);
    for (int i = 0; i < 512 * 16; ++i) {
        ((float *) p->data)[i] = ((float *) w->data)[i] + 0.3f * sinf((float) i);
    }
    float kl1 = ggml_qat_kl_divergence_loss(q, g, w, p, 0.5f);
    double ref1 = kl_reference((float *) w->data, (float *) p->data, 512, 16, 0.5);
    CHECK(kl1 > 0.0f && fabs(kl1 - ref1) <= 1e-5 * ref1 + 1e-9, "KL %g vs reference %g", kl1, ref1);

    /* KL against a quantized tensor: the reference uses ggml's dequantizer. */
    struct ggml_tensor * q4 = outs[1];
    if (q4) {
        float * deq = malloc(sizeof(float) * 512 * 16);
        ggml_get_type_traits(q4->type)->to_float(q4->data, deq, 512 * 16);
        float klq = ggml_qat_kl_divergence_loss(q, g, w, q4, 0.01f);
        double refq = kl_reference((float *) w->data, deq, 512, 16, 0.01);
        CHECK(klq > 0.0f && fabs(klq - refq) <= 1e-4 * refq + 1e-9, "KL(q4_K) %g vs %g", klq, refq);
        free(deq);
    }

    /* error paths */
    CHECK(ggml_qat_quantize_layer(q, g, NULL, GGML_QAT_LAYER_FFN) == NULL, "NULL src");
    CHECK_ERROR("quantize NULL");
    CHECK(ggml_qat_quantize_layer(q, g, w, (ggml_qat_layer_type_t) 7) == NULL, "layer type 7");
    CHECK(strstr(ggml_qat_last_error(), "layer_type") != NULL, "%s", ggml_qat_last_error());
    struct ggml_tensor * small = ggml_new_tensor_1d(g, GGML_TYPE_F32, 10);
    CHECK(isinf(ggml_qat_kl_divergence_loss(q, g, w, small, 1.0f)), "shape mismatch not INFINITY");
    CHECK_ERROR("KL mismatch");
    CHECK(isnan(ggml_qat_kl_divergence_loss(q, g, w, w, 0.0f)), "T = 0 not NAN");
    CHECK(isnan(ggml_qat_kl_divergence_loss(q, g, NULL, w, 1.0f)), "NULL not NAN");
    ((float *) p->data)[77] = NAN;
    CHECK(ggml_qat_quantize_layer(q, g, p, GGML_QAT_LAYER_FFN) == NULL, "NaN data quantized");
    CHECK(strstr(ggml_qat_last_error(), "77") != NULL, "names element: %s", ggml_qat_last_error());
}

static void test_estimate(ggml_qat_context_t * q, struct ggml_context * g) {
    int64_t s1[2] = { 512, 8 }, s2[2] = { 96, 3 }, s3[1] = { 100 };
    struct ggml_tensor * t[4];
    t[0] = ggml_qat_generate_calibration_data(q, g, s1, 2, 0.0f, 1.0f);
    t[1] = ggml_qat_generate_calibration_data(q, g, s2, 2, 0.0f, 1.0f);
    t[2] = ggml_qat_generate_calibration_data(q, g, s3, 1, 0.0f, 1.0f);
    ggml_qat_layer_type_t lt[4] = { GGML_QAT_LAYER_ATTENTION, GGML_QAT_LAYER_FFN,
                                    GGML_QAT_LAYER_LAYERNORM, GGML_QAT_LAYER_EMBEDDING };
    t[3] = ggml_qat_quantize_layer(q, g, t[0], GGML_QAT_LAYER_FFN); /* already quantized */
    size_t est = ggml_qat_estimate_memory_usage(q, t, lt, 4);
    size_t real = ggml_nbytes(t[3]);
    for (int i = 0; i < 3; ++i) {
        struct ggml_tensor * o = ggml_qat_quantize_layer(q, g, t[i], lt[i]);
        CHECK(o != NULL, "quantize %d", i);
        if (o) real += ggml_nbytes(o);
    }
    CHECK(est == real && est > 0, "estimate %zu, produced %zu", est, real);
    CHECK(ggml_qat_estimate_memory_usage(q, t, lt, 0) == 0, "empty");
    /* error path */
    CHECK(ggml_qat_estimate_memory_usage(q, NULL, lt, 2) == 0, "NULL tensors");
    CHECK_ERROR("estimate NULL");
}

static void test_optimal_qtype(void) {
    CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_EMBEDDING, NULL) == GGML_TYPE_Q8_0, "emb");
    CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_ATTENTION, NULL) == GGML_TYPE_Q4_K, "att");
    CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_FFN, NULL) == GGML_TYPE_Q6_K, "ffn");
    CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_LAYERNORM, NULL) == GGML_TYPE_Q8_0, "norm");
    CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_MOSES, NULL) == GGML_TYPE_Q6_K, "moses");
    ggml_backend_t cpu = ggml_backend_cpu_init();
    CHECK(cpu != NULL, "cpu backend");
    if (cpu) {
        CHECK(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_ATTENTION, cpu) == GGML_TYPE_Q4_K, "cpu att");
        ggml_backend_free(cpu);
    }
    /* error path */
    CHECK(ggml_qat_get_optimal_qtype((ggml_qat_layer_type_t) -1, NULL) == GGML_TYPE_F32, "-1");
    CHECK_ERROR("optimal -1");
}

static int tree_depth(const int * conn, int n, int node, int depth, int * seen) {
    if (node < 0 || node >= n || seen[node]) return -1000000;
    seen[node] = 1;
    int best = depth;
    for (int s = 0; s < 2; ++s) {
        int c = conn[2 * node + s];
        if (c >= 0) {
            int d = tree_depth(conn, n, c, depth + 1, seen);
            best = d > best ? d : best;
        }
    }
    return best;
}

static void test_opencog(ggml_qat_context_t * q) {
    ggml_qat_atomspace_t * a = ggml_qat_create_atomspace(q, NULL, 100, 50);
    CHECK(a != NULL, "atomspace: %s", ggml_qat_last_error());
    if (a) {
        CHECK(a->n_atoms == 100 && a->n_connections == 50, "sizes");
        int ok = 1;
        for (int i = 0; i < 100; ++i) {
            float k = a->truth_values[i] * 255.0f;
            ok &= a->truth_values[i] >= 0.0f && a->truth_values[i] <= 1.0f && fabsf(k - roundf(k)) < 1e-3f;
            ok &= a->atom_types[i] >= 0 && a->atom_types[i] < 10;
        }
        for (int i = 0; i < 100; ++i) ok &= a->connections[i] >= 0 && a->connections[i] < 100;
        CHECK(ok, "atomspace invariants");
        ggml_qat_free_atomspace(a);
    }

    ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(q, NULL, 50, 5);
    CHECK(t != NULL, "moses: %s", ggml_qat_last_error());
    if (t) {
        int seen[50] = { 0 };
        int d = tree_depth(t->connections, 50, 0, 0, seen);
        int all = 1;
        for (int i = 0; i < 50; ++i) all &= seen[i];
        CHECK(all && d >= 0 && d <= 5, "tree: depth %d, all reached %d", d, all);
        int grid = 1;
        for (int i = 0; i < 50; ++i) {
            float k = (t->weights[i] + 4.0f) * 63.0f / 8.0f;
            grid &= fabsf(k - roundf(k)) < 1e-3f && t->operations[i] >= 0 && t->operations[i] < 8;
        }
        CHECK(grid, "moses weights on the 6-bit grid");
        ggml_qat_free_moses_tree(t);
    }

    ggml_qat_ecan_t * e = ggml_qat_create_ecan(q, NULL, 1000);
    CHECK(e != NULL, "ecan: %s", ggml_qat_last_error());
    if (e) {
        double sum = 0.0;
        int positive = 1;
        for (int i = 0; i < 1000; ++i) {
            sum += e->attention_scores[i];
            positive &= e->attention_scores[i] > 0.0f;
        }
        CHECK(fabs(sum - 1.0) < 1e-5, "ecan sum %f", sum);
        CHECK(positive, "an ECAN score collapsed to 0");
        ggml_qat_free_ecan(e);
    }

    /* error paths */
    CHECK(ggml_qat_create_atomspace(q, NULL, 0, 5) == NULL, "0 atoms");
    CHECK_ERROR("atomspace 0");
    CHECK(ggml_qat_create_moses_tree(q, NULL, 100, 2) == NULL, "100 nodes at depth 2");
    CHECK(strstr(ggml_qat_last_error(), "depth") != NULL, "%s", ggml_qat_last_error());
    CHECK(ggml_qat_create_ecan(q, NULL, -1) == NULL, "-1 elements");
    CHECK(ggml_qat_create_ecan(NULL, NULL, 10) == NULL, "NULL ctx");
    ggml_qat_free_atomspace(NULL);
    ggml_qat_free_moses_tree(NULL);
    ggml_qat_free_ecan(NULL);

    ggml_qat_config_t c = ggml_qat_default_config();
    c.enable_ecan = false;
    ggml_qat_context_t * off = ggml_qat_init(&c);
    CHECK(ggml_qat_create_ecan(off, NULL, 10) == NULL, "ECAN disabled yet created");
    ggml_qat_free(off);
}

static void test_measured_protocol(ggml_qat_context_t * q, struct ggml_context * g) {
    int64_t s[2] = { 256, 64 }, sx[2] = { 256, 16 };
    struct ggml_tensor * w = ggml_qat_generate_calibration_data(q, g, s, 2, 0.0f, 1.0f);
    struct ggml_tensor * x = ggml_qat_generate_calibration_data(q, g, sx, 2, 0.0f, 1.0f);
    struct ggml_tensor * wq = ggml_qat_quantize_layer(q, g, w, GGML_QAT_LAYER_ATTENTION);

    /* validate: exact sizes, agreement a multiple of 1/16, positive KL. */
    ggml_qat_stats_t st = ggml_qat_validate_performance(q, g, w, wq, x);
    CHECK(st.original_size_mb == (float) (ggml_nbytes(w) / (1024.0 * 1024.0)), "original size %f", st.original_size_mb);
    CHECK(st.quantized_size_mb == (float) (ggml_nbytes(wq) / (1024.0 * 1024.0)), "quantized size");
    CHECK(fabsf(st.compression_ratio - (float) ggml_nbytes(wq) / (float) ggml_nbytes(w)) < 1e-6f, "ratio");
    float k = st.accuracy_retention * 16.0f;
    CHECK(st.accuracy_retention > 0.5f && fabsf(k - roundf(k)) < 1e-4f, "agreement %f", st.accuracy_retention);
    CHECK(st.kl_divergence_loss > 0.0f && st.kl_divergence_loss < 0.05f, "KL %g", st.kl_divergence_loss);
    CHECK(st.inference_speedup > 0.0f && isfinite(st.inference_speedup), "speedup %f", st.inference_speedup);
    ggml_qat_stats_t same = ggml_qat_validate_performance(q, g, w, w, NULL);
    CHECK(same.kl_divergence_loss == 0.0f && same.accuracy_retention == 1.0f, "identical models");

    /* benchmark on the CPU backend: a measured ratio, times kept. */
    ggml_backend_t cpu = ggml_backend_cpu_init();
    float speed = ggml_qat_benchmark_inference_speed(q, cpu, wq, x, 3);
    double tf = 0.0, tm = 0.0;
    CHECK(speed > 0.0f && ggml_qat_get_benchmark_times(q, &tf, &tm) && tf > 0.0 && tm > 0.0, "benchmark %f", speed);
    CHECK(fabs(speed - tf / tm) < 1e-3 * speed, "speedup %f vs %f / %f", speed, tf, tm);
    CHECK(ggml_qat_benchmark_inference_speed(q, NULL, wq, x, 2) > 0.0f, "NULL backend is the CPU");

    /* progressive: pointers replaced once, idempotent. */
    struct ggml_tensor * layers[2] = { w, ggml_qat_generate_calibration_data(q, g, s, 2, 0.0f, 1.0f) };
    ggml_qat_layer_type_t lt[2] = { GGML_QAT_LAYER_FFN, GGML_QAT_LAYER_EMBEDDING };
    CHECK(ggml_qat_progressive_quantize(q, g, layers, lt, 2, 0), "progressive 0: %s", ggml_qat_last_error());
    struct ggml_tensor * first = layers[0];
    CHECK(first != w && first->ne[0] == 256 && first->type != GGML_TYPE_F32, "layer 0 quantized");
    CHECK(ggml_qat_progressive_quantize(q, g, layers, lt, 2, 1), "progressive 1");
    CHECK(layers[0] == first && layers[1]->type != GGML_TYPE_F32, "idempotent");

    /* sensitivity and plan. */
    float s4 = ggml_qat_layer_sensitivity(q, w, GGML_TYPE_Q4_K);
    float s8 = ggml_qat_layer_sensitivity(q, w, GGML_TYPE_Q8_0);
    CHECK(s4 > 0.0f && s8 > 0.0f && s4 > s8, "sensitivity q4_K %g, q8_0 %g", s4, s8);
    struct ggml_tensor * plan_in[2] = { w, x };
    enum ggml_type plan[2] = { GGML_TYPE_COUNT, GGML_TYPE_COUNT };
    CHECK(ggml_qat_plan_mixed_precision(q, plan_in, 2, plan), "plan: %s", ggml_qat_last_error());
    size_t planned = 0, f32 = ggml_nbytes(w) + ggml_nbytes(x);
    for (int i = 0; i < 2; ++i) planned += ggml_row_size(plan[i], 256) * plan_in[i]->ne[1];
    CHECK(planned <= (size_t) (0.25 * (double) f32), "plan %zu bytes of %zu", planned, f32);

    /* error paths */
    struct ggml_tensor * before = layers[0];
    CHECK(!ggml_qat_progressive_quantize(q, g, layers, lt, 2, 5), "current_layer 5 of 2");
    CHECK_ERROR("progressive range");
    CHECK(layers[0] == before, "pointer changed on failure");
    st = ggml_qat_validate_performance(q, g, NULL, w, NULL);
    CHECK(st.original_size_mb == 0.0f && st.inference_speedup == 0.0f, "NULL model gives zeros");
    CHECK_ERROR("validate NULL");
    CHECK(ggml_qat_benchmark_inference_speed(q, cpu, wq, x, 0) == 0.0f, "0 iterations");
    CHECK_ERROR("benchmark 0");
    CHECK(isnan(ggml_qat_layer_sensitivity(q, w, GGML_TYPE_F32)), "F32 saves nothing");
    ggml_backend_free(cpu);
}

int main(void) {
    test_version_and_config();
    ggml_qat_context_t * q = ggml_qat_init(NULL);
    struct ggml_context * g = new_ggml(64);
    if (!q || !g) {
        fprintf(stderr, "cannot create contexts: %s\n", ggml_qat_last_error());
        return 1;
    }
    test_calibration(q, g);
    test_quantize_and_kl(q, g);
    test_estimate(q, g);
    test_optimal_qtype();
    test_opencog(q);
    test_measured_protocol(q, g);
    ggml_free(g);
    ggml_qat_free(q);
    return test_summary("test-qat-framework");
}
