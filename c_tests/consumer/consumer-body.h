/* The body shared by the C and C++ consumers: only the original API, with
 * the configuration written as SEED.md does, by designated initializers.
 * Returns the number of failed assertions. */
#include "ggml-qat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPECT(c)                                                   \
    do {                                                            \
        if (!(c)) {                                                 \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
            ++failures;                                             \
        }                                                           \
    } while (0)

static int consumer_main(void) {
    int failures = 0;
    ggml_qat_config_t config = {
        .embedding_qtype = GGML_TYPE_Q8_0,
        .attention_qtype = GGML_TYPE_Q4_K,
        .ffn_qtype = GGML_TYPE_Q6_K,
        .layernorm_qtype = GGML_TYPE_Q8_0,
        .kl_divergence_weight = 0.5f,
        .temperature = 3.0f,
        .memory_reduction_target = 0.75f,
        .accuracy_threshold = 0.98f,
        .enable_atomspace = true,
        .enable_moses = true,
        .enable_ecan = true
    };
    ggml_qat_context_t * qat_ctx = ggml_qat_init(&config);
    EXPECT(qat_ctx != NULL);

    struct ggml_init_params params = { 16 * 1024 * 1024, NULL, false };
    struct ggml_context * ggml_ctx = ggml_init(params);

    int64_t shape[2] = { 256, 32 };
    struct ggml_tensor * calibration = ggml_qat_generate_calibration_data(qat_ctx, ggml_ctx, shape, 2, 0.0f, 1.0f);
    EXPECT(calibration != NULL && calibration->type == GGML_TYPE_F32);

    struct ggml_tensor * quantized_layer = ggml_qat_quantize_layer(qat_ctx, ggml_ctx, calibration, GGML_QAT_LAYER_ATTENTION);
    EXPECT(quantized_layer != NULL && quantized_layer->type == GGML_TYPE_Q4_K);
    if (calibration && quantized_layer) {
        size_t n = ggml_nbytes(quantized_layer);
        void * ref = malloc(n);
        ggml_quantize_chunk(GGML_TYPE_Q4_K, (const float *) calibration->data, ref, 0, 32, 256, NULL);
        EXPECT(memcmp(ref, quantized_layer->data, n) == 0);
        free(ref);
        float kl = ggml_qat_kl_divergence_loss(qat_ctx, ggml_ctx, calibration, quantized_layer, 1.0f);
        EXPECT(kl > 0.0f && kl < 0.1f);
        EXPECT(ggml_qat_kl_divergence_loss(qat_ctx, ggml_ctx, calibration, calibration, 1.0f) == 0.0f);
    }

    ggml_qat_atomspace_t * atomspace = ggml_qat_create_atomspace(qat_ctx, ggml_ctx, 100, 50);
    EXPECT(atomspace != NULL && atomspace->n_atoms == 100 && atomspace->n_connections == 50);
    ggml_qat_moses_tree_t * moses = ggml_qat_create_moses_tree(qat_ctx, ggml_ctx, 50, 5);
    EXPECT(moses != NULL && moses->n_nodes == 50);
    ggml_qat_ecan_t * ecan = ggml_qat_create_ecan(qat_ctx, ggml_ctx, 100);
    if (ecan) {
        double sum = 0.0;
        for (int i = 0; i < ecan->n_elements; ++i) sum += ecan->attention_scores[i];
        EXPECT(fabs(sum - 1.0) < 1e-5);
    }
    EXPECT(ecan != NULL);
    ggml_qat_free_atomspace(atomspace);
    ggml_qat_free_moses_tree(moses);
    ggml_qat_free_ecan(ecan);

    EXPECT(ggml_qat_get_optimal_qtype(GGML_QAT_LAYER_FFN, NULL) == GGML_TYPE_Q6_K);
    struct ggml_tensor * tensors[1] = { calibration };
    ggml_qat_layer_type_t types[1] = { GGML_QAT_LAYER_ATTENTION };
    EXPECT(quantized_layer && ggml_qat_estimate_memory_usage(qat_ctx, tensors, types, 1) == ggml_nbytes(quantized_layer));

    ggml_free(ggml_ctx);
    ggml_qat_free(qat_ctx);
    printf("%d failures\n", failures);
    return failures;
}
