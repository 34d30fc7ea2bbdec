/* The only code that reads llama.cpp's and ggml's structs: compiled by
 * build.rs against the real llama.h, ggml.h and gguf.h of the llama.cpp tree
 * the calibrator links, so no field offset is ever guessed on the Rust side.
 * Parameter structs are filled here and handed over whole; tensors in the
 * evaluation callback are described by `qc_node_t` (mirrored in ffi.rs). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <unistd.h>

#include "ggml.h"
#include "ggml-backend.h"
#include "gguf.h"
#include "llama.h"

_Static_assert(GGML_MAX_DIMS == 4, "the calibrator expects 4 tensor dimensions");

/* ---- logging: errors only (all with `verbose`); the last error kept ---- */

static int qc_log_min = GGML_LOG_LEVEL_ERROR;
static int qc_log_last = GGML_LOG_LEVEL_NONE;
static char qc_last_error[1024];

static void qc_log(enum ggml_log_level level, const char * text, void * user_data) {
    (void) user_data;
    int lvl = level == GGML_LOG_LEVEL_CONT ? qc_log_last : (int) level;
    qc_log_last = lvl;
    if (lvl >= GGML_LOG_LEVEL_ERROR && text) {
        size_t n = strlen(qc_last_error);
        if (level != GGML_LOG_LEVEL_CONT) {
            n = 0;
        }
        snprintf(qc_last_error + n, sizeof qc_last_error - n, "%s", text);
    }
    if (lvl >= qc_log_min && text) {
        fputs(text, stderr);
    }
}

void qc_init(bool verbose) {
    qc_log_min = verbose ? GGML_LOG_LEVEL_DEBUG : GGML_LOG_LEVEL_NONE + 100;
    llama_log_set(qc_log, NULL);
    ggml_log_set(qc_log, NULL);
    llama_backend_init();
}

/* The last error line llama.cpp or ggml logged (may be empty). */
const char * qc_last_log_error(void) {
    return qc_last_error;
}

/* ---- llama.cpp's and ggml's fatal asserts (a malformed model can trip
 * them): a clear message, the temporary output removed, exit status 1,
 * instead of a backtrace and SIGABRT. ---- */

static char qc_cleanup_path[4096];
static char qc_cleanup_report[4096];

static void qc_cleanup(void) {
    if (qc_cleanup_path[0]) {
        unlink(qc_cleanup_path);
    }
    if (qc_cleanup_report[0]) {
        unlink(qc_cleanup_report);
    }
}

static void qc_on_abort(const char * message) {
    fprintf(stderr, "ggml-qat-calibrate: error: llama.cpp stopped: %s\n", message ? message : "");
    qc_cleanup();
    _exit(1);
}

/* SIGINT, SIGTERM, SIGHUP (a cancel from the C API, ^C, a closed
 * terminal): the temporary files removed (unlink is async-signal-safe),
 * then the signal's default action, so the process dies of it. */
static void qc_on_signal(int sig) {
    qc_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Installs the handlers; `path` (may be NULL) is removed if one fires. */
void qc_on_fatal(const char * path) {
    snprintf(qc_cleanup_path, sizeof qc_cleanup_path, "%s", path ? path : "");
    ggml_set_abort_callback(qc_on_abort);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = qc_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* A second file removed by those handlers (the report's temporary file). */
void qc_cleanup_also(const char * path) {
    snprintf(qc_cleanup_report, sizeof qc_cleanup_report, "%s", path ? path : "");
}

/* ---- model and contexts ---- */

/* `writable`: weights read into memory of their own (no mmap, no
 * repacking), so that the sensitivity probes may overwrite them. */
struct llama_model * qc_model_load(const char * path, int32_t n_gpu_layers, bool writable) {
    struct llama_model_params p = llama_model_default_params();
    p.n_gpu_layers = n_gpu_layers;
    if (writable) {
        p.load_mode = LLAMA_LOAD_MODE_NONE;
        p.lazy_mode = LLAMA_LAZY_MODE_OFF;
        p.use_extra_bufts = false;
    }
    return llama_model_load_from_file(path, p);
}

/* A context whose batches are single micro-batches (n_ubatch = n_batch),
 * with a unified KV cache so several sequences can share one batch. */
/* `embeddings`: the context outputs embeddings (pooled as the model says,
 * llama.cpp's default pooling), every token of a batch an output. */
struct llama_context * qc_context_new(struct llama_model * model, uint32_t n_ctx, uint32_t n_batch,
                                      uint32_t n_seq, int32_t n_threads, bool embeddings,
                                      ggml_backend_sched_eval_callback cb, void * cb_data) {
    struct llama_context_params p = llama_context_default_params();
    p.embeddings = embeddings;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_ubatch = n_batch;
    p.n_seq_max = n_seq;
    p.n_threads = n_threads;
    p.n_threads_batch = n_threads;
    p.cb_eval = cb;
    p.cb_eval_user_data = cb_data;
    p.kv_unified = true;
    p.no_perf = true;
    return llama_init_from_model(model, p);
}

/* How a model runs, as a context made with llama.cpp's defaults sees it:
 * whether its attention is causal, and its pooling type (the model's own,
 * NONE when it names none). False when no context could be made. */
bool qc_model_kind(struct llama_model * model, bool * causal, int32_t * pooling) {
    struct llama_context * ctx = qc_context_new(model, 8, 8, 1, 1, true, NULL, NULL);
    if (!ctx) {
        return false;
    }
    *causal = llama_get_causal_attn(ctx);
    *pooling = (int32_t) llama_pooling_type(ctx);
    llama_free(ctx);
    return true;
}

/* ---- batches ---- */

typedef struct {
    struct llama_batch b;
    int32_t cap;
} qc_batch;

qc_batch * qc_batch_new(int32_t cap) {
    qc_batch * q = (qc_batch *) calloc(1, sizeof *q);
    if (!q) {
        return NULL;
    }
    q->b = llama_batch_init(cap, 0, 1);
    q->cap = cap;
    return q;
}

void qc_batch_free(qc_batch * q) {
    if (q) {
        llama_batch_free(q->b);
        free(q);
    }
}

void qc_batch_clear(qc_batch * q) {
    q->b.n_tokens = 0;
}

/* Appends one token; false when the batch is full. */
bool qc_batch_add(qc_batch * q, llama_token token, llama_pos pos, llama_seq_id seq, bool output) {
    int32_t i = q->b.n_tokens;
    if (i >= q->cap) {
        return false;
    }
    q->b.token[i] = token;
    q->b.pos[i] = pos;
    q->b.n_seq_id[i] = 1;
    q->b.seq_id[i][0] = seq;
    q->b.logits[i] = output;
    q->b.n_tokens = i + 1;
    return true;
}

int32_t qc_decode(struct llama_context * ctx, const qc_batch * q) {
    return llama_decode(ctx, q->b);
}

/* ---- sampling ---- */

/* temperature, then top-k (0: off), top-p (>= 1: off), then a draw seeded by `seed`. */
struct llama_sampler * qc_sampler_new(uint32_t seed, float temp, int32_t top_k, float top_p) {
    struct llama_sampler_chain_params p = llama_sampler_chain_default_params();
    p.no_perf = true;
    struct llama_sampler * chain = llama_sampler_chain_init(p);
    if (!chain) {
        return NULL;
    }
    if (top_k > 0) {
        llama_sampler_chain_add(chain, llama_sampler_init_top_k(top_k));
    }
    if (top_p < 1.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_top_p(top_p, 1));
    }
    if (temp != 1.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_temp(temp));
    }
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
    return chain;
}

/* ---- the evaluation callback's view of a graph node ---- */

enum { QC_OP_OTHER = 0, QC_OP_MUL_MAT = 1, QC_OP_MUL_MAT_ID = 2 };

/* Mirrors `Node` in ffi.rs. */
typedef struct {
    int32_t op;
    bool weight;         /* src0 lives in a buffer of model weights */
    bool f32_rows;       /* src1 is F32 with contiguous rows */
    bool host;           /* src1's data is readable in place */
    const char * name;   /* src0's name */
    int64_t w_ne[4];
    const struct ggml_tensor * src1;
    int64_t ne[4];
    uint64_t nb[4];
    const void * data;
    const struct ggml_tensor * ids;
    int64_t ids_ne[2];
    uint64_t ids_nb[2];
} qc_node_t;

static bool qc_is_weight(const struct ggml_tensor * w) {
    return w && w->buffer && ggml_backend_buffer_get_usage(w->buffer) == GGML_BACKEND_BUFFER_USAGE_WEIGHTS;
}

/* Fills `out` for a node; false when the node is no matrix product. */
bool qc_node(const struct ggml_tensor * t, qc_node_t * out) {
    memset(out, 0, sizeof *out);
    if (!t || (t->op != GGML_OP_MUL_MAT && t->op != GGML_OP_MUL_MAT_ID) || !t->src[0] || !t->src[1]) {
        return false;
    }
    const struct ggml_tensor * w = t->src[0];
    const struct ggml_tensor * x = t->src[1];
    out->op = t->op == GGML_OP_MUL_MAT ? QC_OP_MUL_MAT : QC_OP_MUL_MAT_ID;
    out->weight = qc_is_weight(w);
    out->f32_rows = x->type == GGML_TYPE_F32 && x->nb[0] == sizeof(float);
    out->host = x->buffer && ggml_backend_buffer_is_host(x->buffer) && x->data;
    out->name = w->name;
    out->src1 = x;
    for (int i = 0; i < 4; ++i) {
        out->w_ne[i] = w->ne[i];
        out->ne[i] = x->ne[i];
        out->nb[i] = (uint64_t) x->nb[i];
    }
    out->data = x->data;
    if (out->op == QC_OP_MUL_MAT_ID) {
        out->ids = t->src[2];
        if (out->ids) {
            for (int i = 0; i < 2; ++i) {
                out->ids_ne[i] = out->ids->ne[i];
                out->ids_nb[i] = (uint64_t) out->ids->nb[i];
            }
        }
    }
    return true;
}

size_t qc_nbytes(const struct ggml_tensor * t) {
    return t ? ggml_nbytes(t) : 0;
}

/* Copies a whole tensor (host or device) into `dst` of `n` bytes. */
bool qc_tensor_read(const struct ggml_tensor * t, void * dst, size_t n) {
    if (!t || !t->buffer || n != ggml_nbytes(t)) {
        return false;
    }
    ggml_backend_tensor_get(t, dst, 0, n);
    return true;
}

/* ---- model weights, for the sensitivity probes ---- */

/* The model weights among a node's sources, into out[0..max); their count. */
int32_t qc_weight_srcs(const struct ggml_tensor * t, const struct ggml_tensor ** out, int32_t max) {
    int32_t n = 0;
    for (int i = 0; t && i < GGML_MAX_SRC && n < max; ++i) {
        if (qc_is_weight(t->src[i])) {
            out[n++] = t->src[i];
        }
    }
    return n;
}

/* Name, type and shape of a tensor. */
const char * qc_tensor_desc(const struct ggml_tensor * t, int32_t * type, int64_t ne[4]) {
    *type = (int32_t) t->type;
    for (int i = 0; i < 4; ++i) {
        ne[i] = t->ne[i];
    }
    return t->name;
}

/* Bytes [off, off + n) of a tensor (host or device), out and in. */
bool qc_tensor_get(const struct ggml_tensor * t, void * dst, size_t off, size_t n) {
    if (!t || !t->buffer || off > ggml_nbytes(t) || n > ggml_nbytes(t) - off) {
        return false;
    }
    ggml_backend_tensor_get(t, dst, off, n);
    return true;
}

bool qc_tensor_set(struct ggml_tensor * t, const void * src, size_t off, size_t n) {
    if (!t || !t->buffer || off > ggml_nbytes(t) || n > ggml_nbytes(t) - off) {
        return false;
    }
    ggml_backend_tensor_set(t, src, off, n);
    return true;
}

static bool qc_type_ok(int32_t type) {
    return type >= 0 && type < GGML_TYPE_COUNT && ggml_blck_size((enum ggml_type) type) > 0 &&
           ggml_get_type_traits((enum ggml_type) type)->to_float != NULL;
}

/* The ggml type of a name (case-insensitive, as ggml_type_name spells it); -1 if none. */
int32_t qc_type_from_name(const char * name) {
    for (int32_t t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * n = qc_type_ok(t) ? ggml_type_name((enum ggml_type) t) : NULL;
        if (n && strcasecmp(n, name) == 0) {
            return t;
        }
    }
    return -1;
}

const char * qc_type_name(int32_t type) {
    return qc_type_ok(type) ? ggml_type_name((enum ggml_type) type) : "?";
}

/* Elements per block; 0 for a type ggml cannot convert to F32. */
int64_t qc_block_size(int32_t type) {
    return qc_type_ok(type) ? ggml_blck_size((enum ggml_type) type) : 0;
}

/* True when rows of `type` can be made from F32 without an importance matrix. */
bool qc_type_quantizable(int32_t type) {
    return qc_type_ok(type) && type != GGML_TYPE_F32 &&
           (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || ggml_is_quantized((enum ggml_type) type)) &&
           !ggml_quantize_requires_imatrix((enum ggml_type) type) &&
           ggml_get_type_traits((enum ggml_type) type)->from_float_ref != NULL;
}

size_t qc_row_size(int32_t type, int64_t n) {
    return ggml_row_size((enum ggml_type) type, n);
}

/* `n` values of `type` (whole rows) to F32. */
bool qc_to_f32(int32_t type, const void * src, float * dst, int64_t n) {
    if (type == GGML_TYPE_F32) {
        memcpy(dst, src, (size_t) n * sizeof(float));
        return true;
    }
    if (!qc_type_ok(type)) {
        return false;
    }
    ggml_get_type_traits((enum ggml_type) type)->to_float(src, dst, n);
    return true;
}

/* `nrows` rows of `n_per_row` F32 values to `type`, by ggml's quantizer. */
size_t qc_from_f32(int32_t type, const float * src, void * dst, int64_t nrows, int64_t n_per_row) {
    if (type == GGML_TYPE_F32) {
        memcpy(dst, src, (size_t) (nrows * n_per_row) * sizeof(float));
        return (size_t) (nrows * n_per_row) * sizeof(float);
    }
    if (!qc_type_quantizable(type)) {
        return 0;
    }
    return ggml_quantize_chunk((enum ggml_type) type, src, dst, 0, nrows, n_per_row, NULL);
}

/* A GGUF file's header only (tensor data stays on disk); NULL if unreadable. */
struct gguf_context * qc_gguf_open(const char * path) {
    struct gguf_init_params p = { /*.no_alloc =*/ true, /*.ctx =*/ NULL };
    return gguf_init_from_file(path, p);
}

/* File offset and size of a tensor's data; false if the file lacks it. */
bool qc_gguf_tensor_at(const struct gguf_context * g, const char * name, uint64_t * offset, uint64_t * size) {
    int64_t id = gguf_find_tensor(g, name);
    if (id < 0) {
        return false;
    }
    *offset = (uint64_t) (gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id));
    *size = (uint64_t) gguf_get_tensor_size(g, id);
    return true;
}

/* `split.count` of a GGUF header (1 when absent). */
int32_t qc_gguf_split_count(const struct gguf_context * g) {
    int64_t k = gguf_find_key(g, "split.count");
    if (k < 0 || gguf_get_kv_type(g, k) != GGUF_TYPE_UINT16) {
        return 1;
    }
    return (int32_t) gguf_get_val_u16(g, k);
}

/* ---- the output file: metadata through ggml's gguf API ---- */

/* A data-less ggml context with room for `n_tensors` tensor descriptions. */
struct ggml_context * qc_meta_context(size_t n_tensors) {
    struct ggml_init_params p = {
        /*.mem_size   =*/ (n_tensors + 1) * ggml_tensor_overhead(),
        /*.mem_buffer =*/ NULL,
        /*.no_alloc   =*/ true,
    };
    return ggml_init(p);
}

/* Declares an F32 tensor of ne0 x ne1 in `gguf`; false on a bad name or size. */
bool qc_add_f32(struct gguf_context * gguf, struct ggml_context * ctx, const char * name, int64_t ne0,
                int64_t ne1) {
    if (!name || strlen(name) >= GGML_MAX_NAME || ne0 <= 0 || ne1 <= 0 || gguf_find_tensor(gguf, name) >= 0) {
        return false;
    }
    if (ggml_get_mem_size(ctx) - ggml_used_mem(ctx) < ggml_tensor_overhead()) {
        return false;
    }
    struct ggml_tensor * t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, ne1);
    ggml_set_name(t, name);
    gguf_add_tensor(gguf, t);
    return true;
}

_Static_assert(GGML_MAX_SRC == 10, "ffi.rs MAX_SRC");
_Static_assert(GGUF_TYPE_FLOAT32 == 6, "ffi.rs GGUF_TYPE_FLOAT32");
_Static_assert(LLAMA_TOKEN_ATTR_NORMAL == 1 << 2, "ffi.rs TOKEN_ATTR_NORMAL");
_Static_assert((LLAMA_TOKEN_ATTR_UNKNOWN | LLAMA_TOKEN_ATTR_UNUSED | LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_BYTE) ==
                   (1 | (1 << 1) | (1 << 3) | (1 << 5)),
               "ffi.rs TOKEN_ATTR_SPECIAL");
_Static_assert(LLAMA_POOLING_TYPE_NONE == 0 && LLAMA_POOLING_TYPE_RANK == 4, "ffi.rs POOLING_*");
