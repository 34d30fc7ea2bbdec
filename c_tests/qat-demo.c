/* qat-demo: the SEED.md demonstration on a synthetic transformer block.
 * Every figure printed is computed: sizes are ggml_nbytes; KL, top-1
 * agreement and speedup compare ggml's CPU matrix products of the F32 and
 * the quantized weights on synthetic N(0,1) inputs. */

#include "ggml-qat.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SAMPLES 64

struct layer {
    const char * name;
    int64_t ne0, ne1; /* ne1 == 0: a 1-D norm weight */
    ggml_qat_layer_type_t type;
};

static const char * class_name(ggml_qat_layer_type_t t) {
    static const char * names[] = { "embedding", "attention", "ffn", "layernorm", "atomspace", "moses", "ecan" };
    return names[t];
}

/* Y[s][i] = w[i] * x[s][i] with w dequantized by ggml: a norm's scaling. */
static struct ggml_tensor * scale(struct ggml_context * work, struct ggml_tensor * w, struct ggml_tensor * x) {
    int64_t n = w->ne[0];
    float * wf = malloc(sizeof(float) * n);
    if (w->type == GGML_TYPE_F32) {
        memcpy(wf, w->data, sizeof(float) * n);
    } else {
        ggml_get_type_traits(w->type)->to_float(w->data, wf, n);
    }
    struct ggml_tensor * y = ggml_new_tensor_2d(work, GGML_TYPE_F32, n, x->ne[1]);
    for (int64_t s = 0; s < x->ne[1]; ++s) {
        for (int64_t i = 0; i < n; ++i) {
            ((float *) y->data)[s * n + i] = wf[i] * ((float *) x->data)[s * n + i];
        }
    }
    free(wf);
    return y;
}

/* Share of columns (samples) whose largest output is at the same index. */
static double top1_agreement(const struct ggml_tensor * a, const struct ggml_tensor * b) {
    int64_t n = a->ne[0], same = 0;
    for (int64_t s = 0; s < a->ne[1]; ++s) {
        const float * x = (const float *) a->data + s * n;
        const float * y = (const float *) b->data + s * n;
        int64_t ax = 0, ay = 0;
        for (int64_t i = 1; i < n; ++i) {
            if (x[i] > x[ax]) ax = i;
            if (y[i] > y[ay]) ay = i;
        }
        same += ax == ay;
    }
    return (double) same / (double) a->ne[1];
}

struct measured {
    double kl, top1, speedup; /* speedup < 0: not measured (norms) */
};

/* Figures of a quantized layer against its F32 original on inputs x:
 * matrices through ggml_qat_validate_performance (ggml's CPU backend);
 * a norm weight as y = w * x per element. */
static struct measured measure(ggml_qat_context_t * qat, struct ggml_tensor * w, struct ggml_tensor * wq,
                               struct ggml_tensor * x) {
    struct measured m = { 0.0, 0.0, -1.0 };
    if (w->ne[1] > 1) {
        ggml_qat_stats_t st = ggml_qat_validate_performance(qat, NULL, w, wq, x);
        m.kl = st.kl_divergence_loss;
        m.top1 = st.accuracy_retention;
        m.speedup = st.inference_speedup;
        return m;
    }
    struct ggml_init_params wp = { 16u * 1024 * 1024, NULL, false };
    struct ggml_context * work = ggml_init(wp);
    struct ggml_tensor * y = scale(work, w, x);
    struct ggml_tensor * yq = scale(work, wq, x);
    m.kl = ggml_qat_kl_divergence_loss(qat, work, y, yq, ggml_qat_default_config().temperature);
    m.top1 = top1_agreement(y, yq);
    ggml_free(work);
    return m;
}

static void print_row(const char * name, const char * cls, const struct ggml_tensor * wq, size_t before,
                      size_t after, const struct measured * m) {
    char speed[16] = "-";
    if (m->speedup >= 0.0) snprintf(speed, sizeof speed, "%.2fx", m->speedup);
    printf("%-18s %-10s %-6s %12zu %12zu %8.4f %11.3e %6.1f%% %8s\n", name, cls, ggml_type_name(wq->type), before,
           after, (double) after / (double) before, m->kl, 100.0 * m->top1, speed);
}

/* Plans the block under `pc`, applies the plan and prints measured figures;
 * false (nothing printed) when no plan meets the configuration. */
static bool show_plan(ggml_qat_context_t * pq, struct ggml_context * g, const struct layer * block,
                      struct ggml_tensor ** weights, int n_layers, ggml_qat_config_t pc, struct ggml_tensor * x512,
                      struct ggml_tensor * x2048, size_t total_before) {
    enum ggml_type plan[16];
    if (!pq || !ggml_qat_plan_mixed_precision(pq, weights, n_layers, plan)) {
        return false;
    }
    printf("\nmixed-precision plan for a %.0f%% reduction, %.0f%% top-1 gate on %d planning samples\n"
           "(figures below on the demo's own %d held-out samples):\n",
           100.0 * pc.memory_reduction_target, 100.0 * pc.accuracy_threshold, pc.calibration_samples, N_SAMPLES);
    size_t plan_after = 0;
    double min_top1 = 1.0;
    for (int i = 0; i < n_layers; ++i) {
        struct ggml_tensor * wq = ggml_qat_quantize_tensor(pq, g, weights[i], plan[i]);
        if (!wq) {
            fprintf(stderr, "%s: %s\n", block[i].name, ggml_qat_last_error());
            return false;
        }
        struct ggml_tensor * x = block[i].ne0 == 512 ? x512 : x2048;
        struct measured m = measure(pq, weights[i], wq, x);
        min_top1 = fmin(min_top1, m.top1);
        plan_after += ggml_nbytes(wq);
        print_row(block[i].name, class_name(block[i].type), wq, ggml_nbytes(weights[i]), ggml_nbytes(wq), &m);
    }
    printf("total: %zu -> %zu bytes, size reduction %.1f%%, lowest top-1 agreement %.1f%%\n", total_before,
           plan_after, 100.0 * (1.0 - (double) plan_after / (double) total_before), 100.0 * min_top1);
    return true;
}

int main(void) {
    const struct layer block[] = {
        { "token_embd.weight", 512, 5000, GGML_QAT_LAYER_EMBEDDING },
        { "attn_q.weight", 512, 512, GGML_QAT_LAYER_ATTENTION },
        { "attn_k.weight", 512, 512, GGML_QAT_LAYER_ATTENTION },
        { "attn_v.weight", 512, 512, GGML_QAT_LAYER_ATTENTION },
        { "ffn_up.weight", 512, 2048, GGML_QAT_LAYER_FFN },
        { "ffn_down.weight", 2048, 512, GGML_QAT_LAYER_FFN },
        { "attn_norm.weight", 512, 0, GGML_QAT_LAYER_LAYERNORM },
    };
    const int n_layers = (int) (sizeof block / sizeof block[0]);

    printf("ggml-qat %s demo: a synthetic transformer block\n", ggml_qat_version());
    ggml_qat_config_t config = ggml_qat_default_config();
    ggml_qat_context_t * qat = ggml_qat_init(&config);
    struct ggml_init_params params = { 256u * 1024 * 1024, NULL, false };
    struct ggml_context * g = ggml_init(params);
    if (!qat || !g) {
        fprintf(stderr, "init failed: %s\n", ggml_qat_last_error());
        return 1;
    }

    /* Synthetic inputs (the data-free calibration set). */
    int64_t s512[2] = { 512, N_SAMPLES }, s2048[2] = { 2048, N_SAMPLES };
    struct ggml_tensor * x512 = ggml_qat_generate_calibration_data(qat, g, s512, 2, 0.0f, 1.0f);
    struct ggml_tensor * x2048 = ggml_qat_generate_calibration_data(qat, g, s2048, 2, 0.0f, 1.0f);

    struct ggml_tensor * weights[16];
    printf("\nclass types; KL at T=%.1f and top-1 on %d synthetic samples, speedup measured (CPU backend):\n",
           (double) config.temperature, N_SAMPLES);
    printf("%-18s %-10s %-6s %12s %12s %8s %11s %7s %8s\n", "tensor", "class", "type", "f32 bytes", "quant bytes",
           "ratio", "KL", "top-1", "speedup");
    size_t total_before = 0, total_after = 0;
    for (int i = 0; i < n_layers; ++i) {
        const struct layer * L = &block[i];
        int64_t shape[2] = { L->ne0, L->ne1 };
        /* Weights ~ N(0, 1/ne0): outputs of unit scale; norms ~ N(1, 0.1). */
        float std = L->ne1 ? 1.0f / sqrtf((float) L->ne0) : 0.1f;
        float mean = L->ne1 ? 0.0f : 1.0f;
        struct ggml_tensor * w = ggml_qat_generate_calibration_data(qat, g, shape, L->ne1 ? 2 : 1, mean, std);
        ggml_set_name(w, L->name);
        weights[i] = w;
        struct ggml_tensor * wq = ggml_qat_quantize_layer(qat, g, w, L->type);
        if (!w || !wq) {
            fprintf(stderr, "%s: %s\n", L->name, ggml_qat_last_error());
            return 1;
        }
        struct ggml_tensor * x = L->ne0 == 512 ? x512 : x2048;
        struct measured m = measure(qat, w, wq, x);
        size_t before = ggml_nbytes(w), after = ggml_nbytes(wq);
        total_before += before;
        total_after += after;
        print_row(L->name, class_name(L->type), wq, before, after, &m);
    }
    printf("total: %zu -> %zu bytes, size reduction %.1f%% (target %.0f%%)\n", total_before, total_after,
           100.0 * (1.0 - (double) total_after / (double) total_before),
           100.0 * config.memory_reduction_target);

    /* The mixed-precision plan: the least sensitive layers quantized first
     * until the memory target is met, among the types that keep the top-1
     * gate; when the gate makes the target unreachable, say so and show the
     * plan under a looser gate. */
    float gates[2] = { config.accuracy_threshold, 0.95f };
    for (int k = 0; k < 2; ++k) {
        ggml_qat_config_t pc = config;
        pc.accuracy_threshold = gates[k];
        ggml_qat_context_t * pq = ggml_qat_init(&pc);
        if (!show_plan(pq, g, block, weights, n_layers, pc, x512, x2048, total_before)) {
            printf("\nmixed-precision plan with a %.0f%% top-1 gate: %s\n", 100.0 * gates[k], ggml_qat_last_error());
            ggml_qat_free(pq);
            continue;
        }
        ggml_qat_free(pq);
        break;
    }
    printf("\n");

    char fallbacks[1024];
    if (ggml_qat_get_fallbacks(qat, fallbacks, sizeof fallbacks) > 0) {
        printf("fallbacks:\n%s", fallbacks);
    }

    /* OpenCog structures. */
    ggml_qat_atomspace_t * as = ggml_qat_create_atomspace(qat, g, 1000, 500);
    ggml_qat_moses_tree_t * mt = ggml_qat_create_moses_tree(qat, g, 100, 6);
    ggml_qat_ecan_t * ec = ggml_qat_create_ecan(qat, g, 1000);
    if (as && mt && ec) {
        double truth = 0.0, att = 0.0, minatt = 1.0;
        for (int i = 0; i < as->n_atoms; ++i) truth += as->truth_values[i];
        for (int i = 0; i < ec->n_elements; ++i) {
            att += ec->attention_scores[i];
            minatt = fmin(minatt, ec->attention_scores[i]);
        }
        printf("\nAtomSpace: %d atoms, %d connections, mean 8-bit truth value %.4f\n", as->n_atoms,
               as->n_connections, truth / as->n_atoms);
        printf("MOSES: %d nodes (depth <= 6), root weight %.4f on the 6-bit grid\n", mt->n_nodes,
               (double) mt->weights[0]);
        printf("ECAN: %d elements, attention sums to %.6f, smallest score %.3e\n", ec->n_elements, att, minatt);
    } else {
        fprintf(stderr, "OpenCog structures: %s\n", ggml_qat_last_error());
    }
    ggml_qat_free_atomspace(as);
    ggml_qat_free_moses_tree(mt);
    ggml_qat_free_ecan(ec);

    ggml_free(g);
    ggml_qat_free(qat);
    return 0;
}
