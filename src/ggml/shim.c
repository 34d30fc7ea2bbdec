/* The only code that reads ggml's structs: compiled against the real ggml.h
 * found by build.rs, so field offsets come from the header, never guessed.
 * Everything here is plain data access; no ggml function that can abort on
 * bad input is called without the caller having checked first. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

_Static_assert(GGML_MAX_DIMS == 4, "ggml-qat expects 4 tensor dimensions");

/* Mirrors `TensorInfo` in src/ggml/ffi.rs. */
typedef struct {
    int32_t type;
    int32_t op;
    int64_t ne[4];
    uint64_t nb[4];
    void * data;
    void * buffer;
    void * view_src;
} qat_tensor_info_t;

void qat_shim_tensor_info(const struct ggml_tensor * t, qat_tensor_info_t * out) {
    out->type = (int32_t) t->type;
    out->op = (int32_t) t->op;
    for (int i = 0; i < 4; ++i) {
        out->ne[i] = t->ne[i];
        out->nb[i] = (uint64_t) t->nb[i];
    }
    out->data = t->data;
    out->buffer = (void *) t->buffer;
    out->view_src = (void *) t->view_src;
}

struct ggml_context * qat_shim_init(size_t mem_size, bool no_alloc) {
    struct ggml_init_params params = {
        /*.mem_size   =*/ mem_size,
        /*.mem_buffer =*/ NULL,
        /*.no_alloc   =*/ no_alloc,
    };
    return ggml_init(params);
}

size_t qat_shim_mem_align(void) {
    return GGML_MEM_ALIGN;
}

size_t qat_shim_max_name(void) {
    return GGML_MAX_NAME;
}

/* ggml's dequantizer of `type` (NULL-safe): false when the type has none. */
bool qat_shim_to_float(int32_t type, const void * src, float * dst, int64_t n) {
    if (type < 0 || type >= GGML_TYPE_COUNT) {
        return false;
    }
    const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) type);
    if (tr == NULL || tr->to_float == NULL) {
        return false;
    }
    tr->to_float(src, dst, n);
    return true;
}

/* Type size and block size without ggml's asserts on unknown ids. */
bool qat_shim_type_geometry(int32_t type, int64_t * blck_size, size_t * type_size) {
    if (type < 0 || type >= GGML_TYPE_COUNT) {
        return false;
    }
    const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) type);
    if (tr == NULL || tr->blck_size <= 0 || tr->type_size == 0) {
        return false;
    }
    *blck_size = tr->blck_size;
    *type_size = tr->type_size;
    return true;
}

/* ggml's name of a type id, NULL for ids it does not know. */
const char * qat_shim_type_name(int32_t type) {
    if (type < 0 || type >= GGML_TYPE_COUNT) {
        return NULL;
    }
    const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) type);
    return (tr == NULL || tr->blck_size <= 0) ? NULL : tr->type_name;
}
