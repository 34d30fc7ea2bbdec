/* test-memory: ggml-qat as a long-running C program uses it.
 *
 *  1. Address reuse: ggml contexts freed and recreated in the same memory
 *     (a caller-provided buffer, so addresses repeat for sure); a fresh F32
 *     layer allocated exactly where an earlier round's *output* lived must
 *     still be quantized by progressive_quantize, in every round.
 *  2. Gate decisions: two identical fresh layers quantized in separate
 *     calls, with other draws from the generator in between, get the same
 *     type and bytes.
 *  3. Views at byte offsets 0-3 (legal in ggml, unaligned for F32/F16):
 *     every function that reads tensor data gives the result it gives on an
 *     aligned copy of the same values.
 *  4. Memory pressure: a 4096 x 16384 F16 tensor (128 MiB) under an
 *     address-space limit (RLIMIT_AS) leaving 100 MiB free, each function
 *     that reads tensor data in its own child process: quantize_layer,
 *     quantize_tensor and kl_divergence_loss succeed (they convert a piece
 *     of rows at a time); the others (which need a copy of the whole layer)
 *     fail with a message naming the bytes they could not allocate; no
 *     child dies of a signal. */

#define _DEFAULT_SOURCE

#include "ggml-qat.h"
#include "test-common.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define FFN GGML_QAT_LAYER_FFN

static float frand(uint64_t * s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((float) (*s >> 40) / (float) (1 << 24) - 0.5f) * 0.2f;
}

/* ---- 1. address reuse ------------------------------------------------- */

static void test_address_reuse(void) {
    const int64_t ne0 = 256, ne1 = 64;
    static char buf[4 << 20];
    ggml_qat_context_t * q = ggml_qat_init(NULL);
    struct ggml_tensor * out0 = NULL;
    int reused = 0;
    for (int round = 0; round < 4; ++round) {
        struct ggml_init_params p = { sizeof(buf), buf, false };
        struct ggml_context * g = ggml_init(p);
        if (round > 0) {
            /* Takes the place round 0's layer had, so the new layer lands
             * where round 0's output was. */
            ggml_new_tensor_2d(g, GGML_TYPE_F32, ne0, ne1);
        }
        struct ggml_tensor * w = ggml_new_tensor_2d(g, GGML_TYPE_F32, ne0, ne1);
        uint64_t s = 11 + (uint64_t) round;
        for (int64_t i = 0; i < ne0 * ne1; ++i) ((float *) w->data)[i] = frand(&s);
        if (round > 0 && w == out0) ++reused;
        struct ggml_tensor * layers[1] = { w };
        ggml_qat_layer_type_t types[1] = { FFN };
        bool ok = ggml_qat_progressive_quantize(q, g, layers, types, 1, 0);
        CHECK(ok, "round %d: %s", round, ggml_qat_last_error());
        CHECK(layers[0] != w && layers[0]->type != GGML_TYPE_F32,
              "round %d: the fresh layer was left as it was (type %s)", round,
              ggml_type_name(layers[0]->type));
        /* Idempotent: a second call leaves it alone. */
        struct ggml_tensor * first = layers[0];
        ok = ggml_qat_progressive_quantize(q, g, layers, types, 1, 0);
        CHECK(ok && layers[0] == first, "round %d: quantized twice", round);
        if (round == 0) out0 = layers[0];
        ggml_free(g);
    }
    CHECK(reused == 3, "the new layer reused the old output's address in %d of 3 rounds", reused);
    ggml_qat_free(q);
}

/* ---- 2. gate decisions independent of earlier calls ------------------- */

static void test_gate_reproducible(void) {
    const int64_t ne0 = 256, ne1 = 64;
    struct ggml_init_params p = { 16 << 20, NULL, false };
    struct ggml_context * g = ggml_init(p);
    ggml_qat_context_t * q = ggml_qat_init(NULL);
    enum ggml_type first_type = GGML_TYPE_COUNT;
    struct ggml_tensor * first = NULL;
    for (int call = 0; call < 3; ++call) {
        struct ggml_tensor * w = ggml_new_tensor_2d(g, GGML_TYPE_F32, ne0, ne1);
        uint64_t s = 5;
        for (int64_t i = 0; i < ne0 * ne1; ++i) ((float *) w->data)[i] = frand(&s);
        /* Draws from the generator in between. */
        int64_t shape[2] = { 64, 3 + call };
        CHECK(ggml_qat_generate_calibration_data(q, g, shape, 2, 0.0f, 1.0f) != NULL, "draw");
        struct ggml_tensor * layers[1] = { w };
        ggml_qat_layer_type_t types[1] = { FFN };
        CHECK(ggml_qat_progressive_quantize(q, g, layers, types, 1, 0), "%s", ggml_qat_last_error());
        if (call == 0) {
            first_type = layers[0]->type;
            first = layers[0];
        } else {
            CHECK(layers[0]->type == first_type, "call %d: %s, first call %s", call,
                  ggml_type_name(layers[0]->type), ggml_type_name(first_type));
            CHECK(ggml_nbytes(layers[0]) == ggml_nbytes(first) &&
                      memcmp(layers[0]->data, first->data, ggml_nbytes(first)) == 0,
                  "call %d: other bytes", call);
        }
    }
    ggml_qat_free(q);
    ggml_free(g);
}

/* ---- 3. views at byte offsets 0-3 ------------------------------------- */

#define VNE0 256
#define VNE1 32

/* A view of type `type` of VNE0 x VNE1 holding the values of `src` (F32
 * data), `offset` bytes into a larger tensor. */
static struct ggml_tensor * view_at(struct ggml_context * g, enum ggml_type type,
                                    const struct ggml_tensor * src, size_t offset) {
    struct ggml_tensor * base = ggml_new_tensor_2d(g, type, VNE0, VNE1 + 1);
    size_t row = ggml_row_size(type, VNE0);
    ggml_quantize_chunk(type, (const float *) src->data, (char *) base->data + offset, 0, VNE1, VNE0, NULL);
    return ggml_view_2d(g, base, VNE0, VNE1, row, offset);
}

static bool same_bytes(const struct ggml_tensor * a, const struct ggml_tensor * b) {
    return a && b && a->type == b->type && ggml_nbytes(a) == ggml_nbytes(b) &&
           memcmp(a->data, b->data, ggml_nbytes(a)) == 0;
}

static void test_views(void) {
    struct ggml_init_params p = { 64 << 20, NULL, false };
    struct ggml_context * g = ggml_init(p);
    ggml_qat_context_t * q = ggml_qat_init(NULL);
    ggml_qat_config_t pc = ggml_qat_default_config();
    pc.memory_reduction_target = 0.5f;
    ggml_qat_context_t * q_plan = ggml_qat_init(&pc);
    struct ggml_tensor * vals = ggml_new_tensor_2d(g, GGML_TYPE_F32, VNE0, VNE1);
    uint64_t s = 3;
    for (int i = 0; i < VNE0 * VNE1; ++i) ((float *) vals->data)[i] = frand(&s);
    struct ggml_tensor * x = ggml_new_tensor_2d(g, GGML_TYPE_F32, VNE0, 16);
    for (int i = 0; i < VNE0 * 16; ++i) ((float *) x->data)[i] = frand(&s) * 10.0f;
    const enum ggml_type types[2] = { GGML_TYPE_F32, GGML_TYPE_F16 };
    for (int ti = 0; ti < 2; ++ti) {
        const enum ggml_type t = types[ti];
        /* Results on the aligned tensor (offset 0) are the reference. */
        struct ggml_tensor * ref_in = view_at(g, t, vals, 0);
        struct ggml_tensor * ref_q = ggml_qat_quantize_layer(q, g, ref_in, FFN);
        struct ggml_tensor * ref_t = ggml_qat_quantize_tensor(q, g, ref_in, GGML_TYPE_Q4_0);
        struct ggml_tensor * ref_o = ggml_qat_quantize_layer_optimized(q, g, ref_in, FFN, NULL);
        float ref_kl = ggml_qat_kl_divergence_loss(q, g, ref_in, ref_q, 1.0f);
        ggml_qat_stats_t ref_st = ggml_qat_validate_performance(q, g, ref_in, ref_q, x);
        /* Sensitivity draws its inputs from the generator: same seed. */
        ggml_qat_set_seed(q, 99);
        float ref_sens = ggml_qat_layer_sensitivity(q, ref_in, GGML_TYPE_Q4_K);
        CHECK(ref_q && ref_t && ref_o && isfinite(ref_kl) && ref_sens >= 0.0f, "reference: %s",
              ggml_qat_last_error());
        for (size_t off = 0; off < 4; ++off) {
            struct ggml_tensor * v = view_at(g, t, vals, off);
            const char * tn = ggml_type_name(t);
            CHECK(same_bytes(ggml_qat_quantize_layer(q, g, v, FFN), ref_q), "%s +%zu quantize_layer: %s", tn, off,
                  ggml_qat_last_error());
            CHECK(same_bytes(ggml_qat_quantize_tensor(q, g, v, GGML_TYPE_Q4_0), ref_t), "%s +%zu quantize_tensor", tn, off);
            CHECK(same_bytes(ggml_qat_quantize_layer_optimized(q, g, v, FFN, NULL), ref_o), "%s +%zu optimized", tn, off);
            CHECK(ggml_qat_kl_divergence_loss(q, g, v, ref_q, 1.0f) == ref_kl, "%s +%zu kl", tn, off);
            CHECK(ggml_qat_kl_divergence_loss(q, g, ref_in, v, 1.0f) == 0.0f, "%s +%zu kl of equal values", tn, off);
            ggml_qat_stats_t st = ggml_qat_validate_performance(q, g, v, ref_q, x);
            CHECK(st.kl_divergence_loss == ref_st.kl_divergence_loss &&
                      st.accuracy_retention == ref_st.accuracy_retention,
                  "%s +%zu validate: %s", tn, off, ggml_qat_last_error());
            CHECK(ggml_qat_benchmark_inference_speed(q, NULL, v, x, 1) > 0.0f, "%s +%zu benchmark: %s", tn, off,
                  ggml_qat_last_error());
            ggml_qat_set_seed(q, 99);
            CHECK(ggml_qat_layer_sensitivity(q, v, GGML_TYPE_Q4_K) == ref_sens, "%s +%zu sensitivity", tn, off);
            struct ggml_tensor * pair[2] = { v, ref_in };
            enum ggml_type plan_v[2], plan_ref[2];
            struct ggml_tensor * ref_pair[2] = { ref_in, ref_in };
            /* A target the 98% gate allows on these small layers. */
            ggml_qat_set_seed(q_plan, 99);
            bool a = ggml_qat_plan_mixed_precision(q_plan, pair, 2, plan_v);
            ggml_qat_set_seed(q_plan, 99);
            bool b = ggml_qat_plan_mixed_precision(q_plan, ref_pair, 2, plan_ref);
            CHECK(a && b && plan_v[0] == plan_ref[0] && plan_v[1] == plan_ref[1], "%s +%zu plan: %s", tn, off,
                  ggml_qat_last_error());
            struct ggml_tensor * layers[1] = { v };
            ggml_qat_layer_type_t lt[1] = { FFN };
            struct ggml_tensor * ref_layers[1] = { ref_in };
            CHECK(ggml_qat_progressive_quantize(q, g, layers, lt, 1, 0) &&
                      ggml_qat_progressive_quantize(q, g, ref_layers, lt, 1, 0) &&
                      same_bytes(layers[0], ref_layers[0]),
                  "%s +%zu progressive: %s", tn, off, ggml_qat_last_error());
        }
    }
    ggml_qat_free(q_plan);
    ggml_qat_free(q);
    ggml_free(g);
}

/* ---- 4. memory pressure ----------------------------------------------- */

enum { F_QUANTIZE_LAYER, F_QUANTIZE_TENSOR, F_KL, F_OPTIMIZED, F_PROGRESSIVE, F_VALIDATE, F_BENCHMARK,
       F_SENSITIVITY, F_PLAN, F_COUNT };
static const char * const F_NAMES[F_COUNT] = {
    "quantize_layer", "quantize_tensor", "kl_divergence_loss", "quantize_layer_optimized",
    "progressive_quantize", "validate_performance", "benchmark_inference_speed",
    "layer_sensitivity", "plan_mixed_precision",
};

/* Bytes of address space this process uses (VmSize). */
static long long vm_size(void) {
    FILE * f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmSize: %lld kB", &kb) == 1) break;
    }
    if (f) fclose(f);
    return kb * 1024;
}

/* In a child: calls function `which` under the limit; exit 0 when it
 * succeeded, 1 when it failed with a message naming the bytes, 2 when it
 * failed otherwise. */
static int pressure_child(int which) {
    const int64_t ne0 = 4096, ne1 = 16384;
    struct ggml_init_params p = { (size_t) ne0 * ne1 * 2 + (80 << 20), NULL, false };
    struct ggml_context * g = ggml_init(p);
    if (!g) return 3;
    struct ggml_tensor * w = ggml_new_tensor_2d(g, GGML_TYPE_F16, ne0, ne1);
    ggml_fp16_t * d = (ggml_fp16_t *) w->data;
    uint64_t s = 1;
    for (int64_t i = 0; i < ne0 * ne1; ++i) d[i] = ggml_fp32_to_fp16(frand(&s));
    struct ggml_tensor * x = ggml_new_tensor_2d(g, GGML_TYPE_F32, ne0, 4);
    for (int64_t i = 0; i < ne0 * 4; ++i) ((float *) x->data)[i] = frand(&s);
    ggml_qat_config_t c = ggml_qat_default_config();
    c.ffn_qtype = GGML_TYPE_Q8_0;
    c.calibration_samples = 4;
    ggml_qat_context_t * q = ggml_qat_init(&c);
    /* The output of the functions that make one, made before the limit
     * (the caller's context must have room anyway). */
    struct ggml_tensor * quantized = NULL;
    if (which == F_KL || which == F_VALIDATE) {
        quantized = ggml_qat_quantize_layer(q, g, w, FFN);
        if (!quantized) return 3;
    }
    /* Warm up the library's threads on a small tensor. */
    struct ggml_tensor * small = ggml_new_tensor_2d(g, GGML_TYPE_F16, ne0, 8);
    if (!ggml_qat_quantize_layer(q, g, small, FFN)) return 3;
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = (rlim_t) (vm_size() + (100LL << 20));
    if (setrlimit(RLIMIT_AS, &lim) != 0) return 3;
    bool ok = false;
    enum ggml_type plan[1];
    struct ggml_tensor * layers[1] = { w };
    ggml_qat_layer_type_t lt[1] = { FFN };
    switch (which) {
        case F_QUANTIZE_LAYER: ok = ggml_qat_quantize_layer(q, g, w, FFN) != NULL; break;
        case F_QUANTIZE_TENSOR: ok = ggml_qat_quantize_tensor(q, g, w, GGML_TYPE_Q4_0) != NULL; break;
        case F_KL: ok = isfinite(ggml_qat_kl_divergence_loss(q, g, w, quantized, 1.0f)); break;
        case F_OPTIMIZED: ok = ggml_qat_quantize_layer_optimized(q, g, w, FFN, NULL) != NULL; break;
        case F_PROGRESSIVE: ok = ggml_qat_progressive_quantize(q, g, layers, lt, 1, 0); break;
        case F_VALIDATE: ok = ggml_qat_validate_performance(q, g, w, quantized, x).original_size_mb > 0.0f; break;
        case F_BENCHMARK: ok = ggml_qat_benchmark_inference_speed(q, NULL, w, x, 1) > 0.0f; break;
        case F_SENSITIVITY: ok = ggml_qat_layer_sensitivity(q, w, GGML_TYPE_Q4_K) >= 0.0f; break;
        case F_PLAN: ok = ggml_qat_plan_mixed_precision(q, layers, 1, plan); break;
    }
    if (ok) {
        printf("  %s succeeded\n", F_NAMES[which]);
        fflush(stdout);
        return 0;
    }
    const char * e = ggml_qat_last_error();
    printf("  %s refused: %s\n", F_NAMES[which], e);
    fflush(stdout);
    return strstr(e, "cannot allocate") && strstr(e, " bytes") ? 1 : 2;
}

static void test_memory_pressure(void) {
    int succeeded = 0, refused = 0;
    for (int which = 0; which < F_COUNT; ++which) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(pressure_child(which));
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status), "%s: the child died of signal %d", F_NAMES[which],
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        if (!WIFEXITED(status)) continue;
        int code = WEXITSTATUS(status);
        CHECK(code == 0 || code == 1, "%s: exit %d (2: failure without the size, 3: set-up failed)",
              F_NAMES[which], code);
        if (which <= F_KL) {
            CHECK(code == 0, "%s must work a piece of rows at a time", F_NAMES[which]);
        }
        succeeded += code == 0;
        refused += code == 1;
    }
    printf("memory pressure: %d functions succeeded, %d refused with the size, of %d\n", succeeded, refused,
           F_COUNT);
}

/* AddressSanitizer reserves terabytes of address space for its shadow
 * memory, so an address-space limit cannot be set under it. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

int main(void) {
    test_address_reuse();
    test_gate_reproducible();
    test_views();
#ifdef UNDER_ASAN
    printf("memory pressure: skipped under AddressSanitizer (RLIMIT_AS)\n");
#else
    test_memory_pressure();
#endif
    return test_summary("test-memory");
}
