/* test-abi: the header's types and functions are exactly those of the
 * original ggml-qat.h (DESIGN.md §2). Layouts are compared at compile time
 * with reference structs written from the original declarations; every
 * function is assigned to a pointer of its exact original type. Compiles as
 * C11 and as C++17 (test-abi.cpp includes this file). */

#include "ggml-qat.h"

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
#define ABI_ASSERT(c, m) static_assert(c, m)
#else
#define ABI_ASSERT(c, m) _Static_assert(c, m)
#endif

/* The original declarations, renamed. */
typedef struct {
    enum ggml_type embedding_qtype;
    enum ggml_type attention_qtype;
    enum ggml_type ffn_qtype;
    enum ggml_type layernorm_qtype;
    float kl_divergence_weight;
    float temperature;
    int progressive_layers;
    int calibration_samples;
    float memory_reduction_target;
    float accuracy_threshold;
    bool enable_atomspace;
    bool enable_moses;
    bool enable_ecan;
} ref_config_t;

typedef struct {
    float original_size_mb;
    float quantized_size_mb;
    float compression_ratio;
    float accuracy_retention;
    float kl_divergence_loss;
    float inference_speedup;
} ref_stats_t;

typedef struct {
    float * truth_values;
    int64_t * atom_types;
    int64_t * connections;
    int n_atoms;
    int n_connections;
} ref_atomspace_t;

typedef struct {
    float * weights;
    int * operations;
    int * connections;
    int n_nodes;
} ref_moses_tree_t;

typedef struct {
    float * sti_values;
    float * lti_values;
    float * attention_scores;
    int n_elements;
} ref_ecan_t;

#define SAME_FIELD(ours, ref, f)                                                  \
    ABI_ASSERT(offsetof(ours, f) == offsetof(ref, f), #ours "." #f " offset");    \
    ABI_ASSERT(sizeof(((ours *) 0)->f) == sizeof(((ref *) 0)->f), #ours "." #f " size")

ABI_ASSERT(sizeof(ggml_qat_config_t) == sizeof(ref_config_t), "config size");
SAME_FIELD(ggml_qat_config_t, ref_config_t, embedding_qtype);
SAME_FIELD(ggml_qat_config_t, ref_config_t, attention_qtype);
SAME_FIELD(ggml_qat_config_t, ref_config_t, ffn_qtype);
SAME_FIELD(ggml_qat_config_t, ref_config_t, layernorm_qtype);
SAME_FIELD(ggml_qat_config_t, ref_config_t, kl_divergence_weight);
SAME_FIELD(ggml_qat_config_t, ref_config_t, temperature);
SAME_FIELD(ggml_qat_config_t, ref_config_t, progressive_layers);
SAME_FIELD(ggml_qat_config_t, ref_config_t, calibration_samples);
SAME_FIELD(ggml_qat_config_t, ref_config_t, memory_reduction_target);
SAME_FIELD(ggml_qat_config_t, ref_config_t, accuracy_threshold);
SAME_FIELD(ggml_qat_config_t, ref_config_t, enable_atomspace);
SAME_FIELD(ggml_qat_config_t, ref_config_t, enable_moses);
SAME_FIELD(ggml_qat_config_t, ref_config_t, enable_ecan);

ABI_ASSERT(sizeof(ggml_qat_stats_t) == sizeof(ref_stats_t), "stats size");
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, original_size_mb);
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, quantized_size_mb);
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, compression_ratio);
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, accuracy_retention);
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, kl_divergence_loss);
SAME_FIELD(ggml_qat_stats_t, ref_stats_t, inference_speedup);

ABI_ASSERT(sizeof(ggml_qat_atomspace_t) == sizeof(ref_atomspace_t), "atomspace size");
SAME_FIELD(ggml_qat_atomspace_t, ref_atomspace_t, truth_values);
SAME_FIELD(ggml_qat_atomspace_t, ref_atomspace_t, atom_types);
SAME_FIELD(ggml_qat_atomspace_t, ref_atomspace_t, connections);
SAME_FIELD(ggml_qat_atomspace_t, ref_atomspace_t, n_atoms);
SAME_FIELD(ggml_qat_atomspace_t, ref_atomspace_t, n_connections);

ABI_ASSERT(sizeof(ggml_qat_moses_tree_t) == sizeof(ref_moses_tree_t), "moses size");
SAME_FIELD(ggml_qat_moses_tree_t, ref_moses_tree_t, weights);
SAME_FIELD(ggml_qat_moses_tree_t, ref_moses_tree_t, operations);
SAME_FIELD(ggml_qat_moses_tree_t, ref_moses_tree_t, connections);
SAME_FIELD(ggml_qat_moses_tree_t, ref_moses_tree_t, n_nodes);

ABI_ASSERT(sizeof(ggml_qat_ecan_t) == sizeof(ref_ecan_t), "ecan size");
SAME_FIELD(ggml_qat_ecan_t, ref_ecan_t, sti_values);
SAME_FIELD(ggml_qat_ecan_t, ref_ecan_t, lti_values);
SAME_FIELD(ggml_qat_ecan_t, ref_ecan_t, attention_scores);
SAME_FIELD(ggml_qat_ecan_t, ref_ecan_t, n_elements);

ABI_ASSERT(GGML_QAT_LAYER_EMBEDDING == 0, "EMBEDDING");
ABI_ASSERT(GGML_QAT_LAYER_ATTENTION == 1, "ATTENTION");
ABI_ASSERT(GGML_QAT_LAYER_FFN == 2, "FFN");
ABI_ASSERT(GGML_QAT_LAYER_LAYERNORM == 3, "LAYERNORM");
ABI_ASSERT(GGML_QAT_LAYER_ATOMSPACE == 4, "ATOMSPACE");
ABI_ASSERT(GGML_QAT_LAYER_MOSES == 5, "MOSES");
ABI_ASSERT(GGML_QAT_LAYER_ECAN == 6, "ECAN");
ABI_ASSERT(sizeof(ggml_qat_layer_type_t) == sizeof(int), "enum size");

int main(void) {
    /* Each function of the original API, as a pointer of its exact type. */
    ggml_qat_context_t * (*p_init)(const ggml_qat_config_t *) = ggml_qat_init;
    void (*p_free)(ggml_qat_context_t *) = ggml_qat_free;
    struct ggml_tensor * (*p_calib)(ggml_qat_context_t *, struct ggml_context *, int64_t *, int, float, float) =
        ggml_qat_generate_calibration_data;
    struct ggml_tensor * (*p_quant)(ggml_qat_context_t *, struct ggml_context *, struct ggml_tensor *,
                                    ggml_qat_layer_type_t) = ggml_qat_quantize_layer;
    bool (*p_prog)(ggml_qat_context_t *, struct ggml_context *, struct ggml_tensor **, ggml_qat_layer_type_t *,
                   int, int) = ggml_qat_progressive_quantize;
    float (*p_kl)(ggml_qat_context_t *, struct ggml_context *, struct ggml_tensor *, struct ggml_tensor *,
                  float) = ggml_qat_kl_divergence_loss;
    ggml_qat_stats_t (*p_val)(ggml_qat_context_t *, struct ggml_context *, struct ggml_tensor *,
                              struct ggml_tensor *, struct ggml_tensor *) = ggml_qat_validate_performance;
    ggml_qat_atomspace_t * (*p_as)(ggml_qat_context_t *, struct ggml_context *, int, int) =
        ggml_qat_create_atomspace;
    ggml_qat_moses_tree_t * (*p_mt)(ggml_qat_context_t *, struct ggml_context *, int, int) =
        ggml_qat_create_moses_tree;
    ggml_qat_ecan_t * (*p_ec)(ggml_qat_context_t *, struct ggml_context *, int) = ggml_qat_create_ecan;
    void (*p_fas)(ggml_qat_atomspace_t *) = ggml_qat_free_atomspace;
    void (*p_fmt)(ggml_qat_moses_tree_t *) = ggml_qat_free_moses_tree;
    void (*p_fec)(ggml_qat_ecan_t *) = ggml_qat_free_ecan;
    enum ggml_type (*p_opt)(ggml_qat_layer_type_t, ggml_backend_t) = ggml_qat_get_optimal_qtype;
    size_t (*p_mem)(ggml_qat_context_t *, struct ggml_tensor **, ggml_qat_layer_type_t *, int) =
        ggml_qat_estimate_memory_usage;
    float (*p_bench)(ggml_qat_context_t *, ggml_backend_t, struct ggml_tensor *, struct ggml_tensor *, int) =
        ggml_qat_benchmark_inference_speed;
    /* Extensions. */
    ggml_qat_config_t (*p_def)(void) = ggml_qat_default_config;
    const char * (*p_err)(void) = ggml_qat_last_error;
    bool (*p_seed)(ggml_qat_context_t *, uint64_t) = ggml_qat_set_seed;
    ggml_qat_stats_t (*p_stats)(const ggml_qat_context_t *) = ggml_qat_get_stats;
    const char * (*p_ver)(void) = ggml_qat_version;

    const void * all[] = { (const void *) p_init, (const void *) p_free, (const void *) p_calib,
                           (const void *) p_quant, (const void *) p_prog, (const void *) p_kl,
                           (const void *) p_val, (const void *) p_as, (const void *) p_mt,
                           (const void *) p_ec, (const void *) p_fas, (const void *) p_fmt,
                           (const void *) p_fec, (const void *) p_opt, (const void *) p_mem,
                           (const void *) p_bench, (const void *) p_def, (const void *) p_err,
                           (const void *) p_seed, (const void *) p_stats, (const void *) p_ver };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
        if (all[i] == NULL) {
            printf("function %zu is NULL\n", i);
            return 1;
        }
    }
    printf("test-abi: %zu functions, layouts match the original header\n", sizeof all / sizeof all[0]);
    return 0;
}
