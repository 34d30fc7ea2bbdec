#include <cstdarg>
#include <cstdint>
#include <cstdlib>
#include <ostream>
#include <new>

/// ggml type ids of the formats this crate knows; values equal `enum ggml_type`.
enum class QuantType : int32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
};

/// Opaque `struct ggml_tensor` (fields are read through the shim only).
struct GgmlTensor {
  uint8_t _opaque[0];
};

/// What the shim reads out of a `struct ggml_tensor`.
struct TensorInfo {
  int32_t ty;
  int32_t op;
  int64_t ne[4];
  uint64_t nb[4];
  void *data;
  void *buffer;
  void *view_src;
};

/// Opaque `struct ggml_context`.
struct GgmlContext {
  uint8_t _opaque[0];
};

/// Opaque `struct ggml_cgraph`.
struct GgmlCgraph {
  uint8_t _opaque[0];
};

/// Opaque `struct ggml_backend_buffer`.
struct GgmlBackendBuffer {
  uint8_t _opaque[0];
};

/// Opaque `struct ggml_backend`.
struct GgmlBackend {
  uint8_t _opaque[0];
};

/// `ggml_backend_t`.
using GgmlBackendT = GgmlBackend*;

/// Opaque `struct ggml_backend_device`.
struct GgmlBackendDevice {
  uint8_t _opaque[0];
};

/// Every type the registry knows, F32 included.
constexpr static const QuantType QuantType_ALL[15] = { QuantType::F32, QuantType::F16, QuantType::Q4_0, QuantType::Q4_1, QuantType::Q5_0, QuantType::Q5_1, QuantType::Q8_0, QuantType::Q2_K, QuantType::Q3_K, QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K, QuantType::IQ4_NL, QuantType::IQ4_XS, QuantType::BF16, };

extern "C" {

extern void qat_shim_tensor_info(const GgmlTensor *t, TensorInfo *out);

extern GgmlContext *qat_shim_init(uintptr_t mem_size, bool no_alloc);

extern uintptr_t qat_shim_mem_align();

extern uintptr_t qat_shim_max_name();

extern const char *qat_shim_type_name(int32_t ty);

extern bool qat_shim_to_float(int32_t ty, const void *src, float *dst, int64_t n);

extern bool qat_shim_type_geometry(int32_t ty, int64_t *blck_size, uintptr_t *type_size);

extern void ggml_free(GgmlContext *ctx);

extern GgmlTensor *ggml_new_tensor(GgmlContext *ctx, int ty, int n_dims, const int64_t *ne);

extern const char *ggml_get_name(const GgmlTensor *t);

extern GgmlTensor *ggml_set_name(GgmlTensor *t, const char *name);

extern uintptr_t ggml_nbytes(const GgmlTensor *t);

extern uintptr_t ggml_get_mem_size(const GgmlContext *ctx);

extern uintptr_t ggml_used_mem(const GgmlContext *ctx);

extern bool ggml_get_no_alloc(GgmlContext *ctx);

extern uintptr_t ggml_tensor_overhead();

extern uintptr_t ggml_graph_overhead();

extern uintptr_t ggml_quantize_chunk(int ty,
                                     const float *src,
                                     void *dst,
                                     int64_t start,
                                     int64_t nrows,
                                     int64_t n_per_row,
                                     const float *imatrix);

extern GgmlTensor *ggml_mul_mat(GgmlContext *ctx, GgmlTensor *a, GgmlTensor *b);

extern GgmlCgraph *ggml_new_graph(GgmlContext *ctx);

extern void ggml_build_forward_expand(GgmlCgraph *graph, GgmlTensor *t);

extern int ggml_graph_compute_with_ctx(GgmlContext *ctx, GgmlCgraph *graph, int n_threads);

extern bool ggml_backend_buffer_is_host(GgmlBackendBuffer *buffer);

extern bool ggml_backend_supports_op(GgmlBackendT backend, const GgmlTensor *op);

extern GgmlBackendDevice *ggml_backend_get_device(GgmlBackendT backend);

extern int ggml_backend_dev_type(GgmlBackendDevice *dev);

}  // extern "C"
