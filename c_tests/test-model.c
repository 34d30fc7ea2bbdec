/* ggml_qat_quantize_model from C: a GGUF model written by ggml's own gguf
 * code, quantized by the library, read back by ggml's gguf code; tensors
 * equal to ggml_quantize_chunk; progress, cancel, report, overrides, bad
 * arguments, the size planner with a factors file and a calibration file;
 * ggml_qat_calibrate_model's bad arguments. */
#include "ggml-qat.h"
#include "gguf.h"
#include "test-common.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char g_dir[256];

static void path(char * out, const char * name) {
    snprintf(out, 512, "%s/%s", g_dir, name);
}

static float value(int i) {
    uint32_t x = (uint32_t) i * 2654435761u;
    x ^= x >> 15;
    return ((float) (x % 2001) - 1000.0f) / 1000.0f;
}

/* A llama-style model written with ggml's gguf API. */
static void write_model(const char * fname) {
    struct ggml_init_params ip = { 16 * 1024 * 1024, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    struct gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_u32(g, "llama.block_count", 1);
    gguf_set_val_u32(g, "llama.embedding_length", 256);
    gguf_set_val_str(g, "general.name", "c-test");
    struct { const char * name; int64_t ne0, ne1; enum ggml_type ty; } spec[] = {
        { "token_embd.weight", 256, 16, GGML_TYPE_F16 },
        { "blk.0.attn_norm.weight", 256, 1, GGML_TYPE_F32 },
        { "blk.0.attn_q.weight", 256, 8, GGML_TYPE_F32 },
        { "blk.0.ffn_down.weight", 96, 8, GGML_TYPE_F32 },
    };
    for (int s = 0; s < 4; ++s) {
        struct ggml_tensor * t = spec[s].ne1 == 1
            ? ggml_new_tensor_1d(ctx, spec[s].ty, spec[s].ne0)
            : ggml_new_tensor_2d(ctx, spec[s].ty, spec[s].ne0, spec[s].ne1);
        ggml_set_name(t, spec[s].name);
        int64_t n = ggml_nelements(t);
        for (int64_t i = 0; i < n; ++i) {
            float v = value((int) i + 1000 * s);
            if (spec[s].ty == GGML_TYPE_F16) {
                ((ggml_fp16_t *) t->data)[i] = ggml_fp32_to_fp16(v);
            } else {
                ((float *) t->data)[i] = v;
            }
        }
        gguf_add_tensor(g, t);
    }
    gguf_write_to_file(g, fname, false);
    gguf_free(g);
    ggml_free(ctx);
}

/* A calibration file in ggml-qat-calibrate's layout: the diagonal of
 * attn_q, a Gram tensor of NaN (never read), and (optionally) the model's
 * own planner factors. */
static void write_calibration(const char * fname, bool with_factors) {
    struct ggml_init_params ip = { 1024 * 1024, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    struct gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "general.type", "imatrix");
    gguf_set_val_u32(g, "ggml_qat.calibration.version", 1);
    const char * users[] = { "blk.0.attn_q.weight" };
    const char * grams[] = { "blk.0.attn_q.weight.gram" };
    gguf_set_arr_str(g, "ggml_qat.gram.weights", users, 1);
    gguf_set_arr_str(g, "ggml_qat.gram.tensors", grams, 1);
    if (with_factors) {
        const char * roles[] = { "attn_q" };
        float values[] = { 2.5f };
        float depth[] = { 1.0f, 1.0f, 1.0f };
        gguf_set_arr_str(g, "ggml_qat.factors.roles", roles, 1);
        gguf_set_arr_data(g, "ggml_qat.factors.values", GGUF_TYPE_FLOAT32, values, 1);
        gguf_set_arr_data(g, "ggml_qat.factors.depth", GGUF_TYPE_FLOAT32, depth, 3);
        gguf_set_val_str(g, "ggml_qat.factors.probe_type", "q4_0");
        gguf_set_val_str(g, "ggml_qat.factors.measure", "kl-divergence");
        gguf_set_val_u32(g, "ggml_qat.factors.tokens", 4096);
    }
    struct ggml_tensor * sums = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 256, 1);
    ggml_set_name(sums, "blk.0.attn_q.weight.in_sum2");
    struct ggml_tensor * counts = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 1, 1);
    ggml_set_name(counts, "blk.0.attn_q.weight.counts");
    struct ggml_tensor * gram = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 16, 16);
    ggml_set_name(gram, "blk.0.attn_q.weight.gram");
    for (int i = 0; i < 256; ++i) {
        ((float *) sums->data)[i] = 1.0f + (float) (i % 7) * (float) (i % 5);
        ((float *) gram->data)[i] = NAN;
    }
    ((float *) counts->data)[0] = 2.0f;
    gguf_add_tensor(g, sums);
    gguf_add_tensor(g, counts);
    gguf_add_tensor(g, gram);
    gguf_write_to_file(g, fname, false);
    gguf_free(g);
    ggml_free(ctx);
}

/* The whole file at `fname` into `buf` (at most `cap` bytes); its size. */
static size_t read_file(const char * fname, char * buf, size_t cap) {
    FILE * f = fopen(fname, "rb");
    if (!f) {
        return 0;
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

struct progress_state { int calls; int stop_at; int last_index; int n_tensors; uint64_t total; };

static bool on_progress(int index, int n, const char * name, uint64_t done, uint64_t total, void * ud) {
    struct progress_state * s = ud;
    s->calls++;
    CHECK(name != NULL, "name");
    CHECK(index >= s->last_index && index <= n, "index %d of %d", index, n);
    CHECK(done <= total, "bytes %llu of %llu", (unsigned long long) done, (unsigned long long) total);
    s->last_index = index;
    s->n_tensors = n;
    s->total = total;
    return s->stop_at == 0 || s->calls < s->stop_at;
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ggml-qat-c-model-%d", (int) getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    CHECK(system(cmd) == 0, "mkdir");
    char in[512], out[512], json[512];
    path(in, "in.gguf");
    path(out, "out.gguf");
    path(json, "report.json");
    write_model(in);

    /* Q8_0 with a report, progress and an override. */
    ggml_qat_model_params_t p = ggml_qat_model_default_params();
    CHECK(p.target == NULL && p.output_tensor_type == -1 && p.n_threads == 0, "defaults");
    ggml_qat_tensor_override_t ov[] = { { "ffn_down", GGML_TYPE_Q4_0 } };
    ggml_qat_model_report_t rep;
    memset(&rep, 0, sizeof rep);
    struct progress_state ps = { 0, 0, 0, 0, 0 };
    p.target = "Q8_0";
    p.overrides = ov;
    p.n_overrides = 1;
    p.n_threads = 2;
    p.progress = on_progress;
    p.progress_user_data = &ps;
    p.report = &rep;
    p.report_json_path = json;
    bool ok = ggml_qat_quantize_model(NULL, in, out, &p);
    CHECK(ok, "quantize_model: %s", ggml_qat_last_error());
    CHECK(rep.n_tensors == 4, "n_tensors %d", rep.n_tensors);
    CHECK(ps.calls >= 4 && ps.n_tensors == 4 && ps.last_index == 4, "progress %d calls", ps.calls);
    CHECK(access(json, F_OK) == 0, "report json written");
    CHECK(rep.bytes_out < rep.bytes_in && rep.bits_per_weight_out > 4.0 && rep.bits_per_weight_out < 9.0,
          "bpw %f", rep.bits_per_weight_out);

    /* Read back with ggml's gguf code: types, data equal ggml_quantize_chunk. */
    struct ggml_context * data_ctx = NULL;
    struct gguf_init_params gp = { false, &data_ctx };
    struct gguf_context * g = gguf_init_from_file(out, gp);
    CHECK(g != NULL, "ggml reads the output");
    if (g) {
        CHECK(gguf_get_n_tensors(g) == 4, "tensors");
        int64_t k = gguf_find_key(g, "general.file_type");
        CHECK(k >= 0 && gguf_get_val_u32(g, k) == 7, "file_type");
        k = gguf_find_key(g, "general.name");
        CHECK(k >= 0 && strcmp(gguf_get_val_str(g, k), "c-test") == 0, "kv copied");
        struct ggml_tensor * q = ggml_get_tensor(data_ctx, "blk.0.attn_q.weight");
        struct ggml_tensor * d = ggml_get_tensor(data_ctx, "blk.0.ffn_down.weight");
        struct ggml_tensor * n = ggml_get_tensor(data_ctx, "blk.0.attn_norm.weight");
        CHECK(q && q->type == GGML_TYPE_Q8_0, "attn_q Q8_0");
        CHECK(d && d->type == GGML_TYPE_Q4_0, "ffn_down override Q4_0");
        CHECK(n && n->type == GGML_TYPE_F32, "norm stays F32");
        if (q && d) {
            float src[256 * 8];
            static uint8_t want[256 * 8 * 2];
            for (int i = 0; i < 256 * 8; ++i) src[i] = value(i + 2000);
            size_t sz = ggml_quantize_chunk(GGML_TYPE_Q8_0, src, want, 0, 8, 256, NULL);
            CHECK(sz == ggml_nbytes(q) && memcmp(want, q->data, sz) == 0, "attn_q bytes equal ggml_quantize_chunk");
            for (int i = 0; i < 96 * 8; ++i) src[i] = value(i + 3000);
            sz = ggml_quantize_chunk(GGML_TYPE_Q4_0, src, want, 0, 8, 96, NULL);
            CHECK(sz == ggml_nbytes(d) && memcmp(want, d->data, sz) == 0, "ffn_down bytes equal ggml_quantize_chunk");
        }
        gguf_free(g);
        ggml_free(data_ctx);
    }

    /* Cancel: false, a message, no output. */
    char out2[512];
    path(out2, "cancelled.gguf");
    struct progress_state cs = { 0, 2, 0, 0, 0 };
    p.progress_user_data = &cs;
    p.report_json_path = NULL;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &p), "cancel fails");
    CHECK(strstr(ggml_qat_last_error(), "cancel") != NULL, "message: %s", ggml_qat_last_error());
    CHECK(access(out2, F_OK) != 0, "no partial output");

    /* Bad arguments. */
    CHECK(!ggml_qat_quantize_model(NULL, NULL, out2, NULL), "NULL in_path");
    CHECK_ERROR("NULL in_path");
    CHECK(!ggml_qat_quantize_model(NULL, in, NULL, NULL), "NULL out_path");
    CHECK_ERROR("NULL out_path");
    CHECK(!ggml_qat_quantize_model(NULL, "/nonexistent/model.gguf", out2, NULL), "missing input");
    CHECK(strstr(ggml_qat_last_error(), "cannot open") != NULL, "message: %s", ggml_qat_last_error());
    CHECK(!ggml_qat_quantize_model(NULL, in, in, NULL), "output == input");
    CHECK(strstr(ggml_qat_last_error(), "input") != NULL, "message: %s", ggml_qat_last_error());
    ggml_qat_model_params_t b = ggml_qat_model_default_params();
    b.target = "Q9_9";
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "unknown preset");
    CHECK_ERROR("unknown preset");
    b.target = "classes";
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "classes without ctx");
    CHECK_ERROR("classes without ctx");
    b.target = "Q4_0";
    b.output_tensor_type = 4; /* removed ggml type */
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "bad output type");
    CHECK_ERROR("bad output type");
    b = ggml_qat_model_default_params();
    b.n_overrides = 1;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "overrides NULL");
    CHECK_ERROR("overrides NULL");
    CHECK(access(out2, F_OK) != 0, "still no output");

    /* The size planner: Q4_0's rules, a file no larger than the target. */
    b = ggml_qat_model_default_params();
    b.target = "Q4_0";
    b.report = &rep;
    CHECK(ggml_qat_quantize_model(NULL, in, out2, &b), "Q4_0: %s", ggml_qat_last_error());
    uint64_t q4_size = rep.file_bytes_out;
    int plan_types[] = { GGML_TYPE_Q4_0, GGML_TYPE_Q8_0 };
    b.target_size_bytes = q4_size + q4_size / 4;
    b.plan_types = plan_types;
    b.n_plan_types = 2;
    CHECK(ggml_qat_quantize_model(NULL, in, out2, &b), "target size: %s", ggml_qat_last_error());
    CHECK(rep.file_bytes_out <= b.target_size_bytes && rep.file_bytes_out > q4_size,
          "planned file %llu bytes for a target of %llu", (unsigned long long) rep.file_bytes_out,
          (unsigned long long) b.target_size_bytes);
    {
        FILE * f = fopen(out2, "rb");
        CHECK(f != NULL, "planned output exists");
        if (f) {
            fseek(f, 0, SEEK_END);
            CHECK((uint64_t) ftell(f) == rep.file_bytes_out, "reported size is the file's");
            fclose(f);
        }
    }
    remove(out2);
    {
        char factors[300];
        path(factors, "factors.txt");
        FILE * f = fopen(factors, "w");
        CHECK(f != NULL, "factors file");
        if (f) {
            fputs("attn_q 2.5\ndepth 1 1 1\n", f);
            fclose(f);
        }
        b.plan_factors_path = factors;
        b.report_json_path = json;
        CHECK(ggml_qat_quantize_model(NULL, in, out2, &b), "factors file: %s", ggml_qat_last_error());
        b.report_json_path = NULL;
        remove(out2);
        /* The file's factor (2.5, depth neutral) is the one the plan used. */
        char text[1 << 16] = { 0 };
        FILE * jf = fopen(json, "rb");
        CHECK(jf != NULL, "report written");
        if (jf) {
            size_t got = fread(text, 1, sizeof text - 1, jf);
            text[got] = 0;
            fclose(jf);
        }
        CHECK(strstr(text, "\"factor\": 2.5,") != NULL, "the factors file is used");
        remove(json);
        f = fopen(factors, "w");
        if (f) {
            fputs("attn_x 1\n", f);
            fclose(f);
        }
        CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "bad factors file");
        CHECK(strstr(ggml_qat_last_error(), "unknown role") != NULL, "message: %s", ggml_qat_last_error());
        b.plan_factors_path = NULL;
    }
    {
        /* A calibration file: its diagonal gives the bytes imatrix_path gives
         * with the same file; its factors (attn_q 2.5, depth neutral) steer
         * the plan, and the report says where they came from. */
        char calib[300], out3[512];
        path(calib, "calib.gguf");
        path(out3, "imatrix.gguf");
        write_calibration(calib, true);
        ggml_qat_model_params_t c = ggml_qat_model_default_params();
        c.target = "Q4_K_M";
        c.imatrix_path = calib;
        CHECK(ggml_qat_quantize_model(NULL, in, out3, &c), "imatrix_path: %s", ggml_qat_last_error());
        c.imatrix_path = NULL;
        c.calibration_path = calib;
        CHECK(ggml_qat_quantize_model(NULL, in, out2, &c), "calibration_path: %s", ggml_qat_last_error());
        static char x[1 << 20], y[1 << 20];
        size_t nx = read_file(out3, x, sizeof x), ny = read_file(out2, y, sizeof y);
        CHECK(nx > 0 && nx == ny && memcmp(x, y, nx) == 0, "the same bytes with calibration_path as with imatrix_path");
        remove(out2);
        remove(out3);
        b.calibration_path = calib;
        b.report_json_path = json;
        CHECK(ggml_qat_quantize_model(NULL, in, out2, &b), "calibration factors: %s", ggml_qat_last_error());
        remove(out2);
        static char text[1 << 16];
        text[read_file(json, text, sizeof text - 1)] = 0;
        CHECK(strstr(text, "\"factor\": 2.5,") != NULL, "the calibration file's factor is used");
        CHECK(strstr(text, "\"source\": \"calibration file\"") != NULL, "the report names the source");
        CHECK(strstr(text, "\"probe_type\": \"q4_0\"") != NULL, "the report gives the probe type");
        /* Without factors: the default ones, said so. */
        write_calibration(calib, false);
        CHECK(ggml_qat_quantize_model(NULL, in, out2, &b), "calibration without factors: %s", ggml_qat_last_error());
        remove(out2);
        text[read_file(json, text, sizeof text - 1)] = 0;
        CHECK(strstr(text, "\"source\": \"default\"") != NULL, "default factors reported");
        remove(json);
        b.report_json_path = NULL;
        /* Not with imatrix_path or plan_factors_path. */
        b.imatrix_path = calib;
        CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "calibration_path with imatrix_path");
        CHECK(strstr(ggml_qat_last_error(), "--calibration") != NULL && strstr(ggml_qat_last_error(), "--imatrix") != NULL,
              "message: %s", ggml_qat_last_error());
        b.imatrix_path = NULL;
        char factors[300];
        path(factors, "factors2.txt");
        FILE * f = fopen(factors, "w");
        CHECK(f != NULL, "factors file");
        if (f) {
            fputs("attn_q 2.5\n", f);
            fclose(f);
        }
        b.plan_factors_path = factors;
        CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "calibration_path with plan_factors_path");
        CHECK(strstr(ggml_qat_last_error(), "--plan-factors") != NULL, "message: %s", ggml_qat_last_error());
        b.plan_factors_path = NULL;
        b.calibration_path = NULL;
    }
    b.target_size_bytes = 64;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "target too small");
    CHECK(strstr(ggml_qat_last_error(), "target") != NULL, "message: %s", ggml_qat_last_error());
    b.target_bpw = 5.0;
    b.target_size_bytes = 1000000;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "size and bpw together");
    CHECK_ERROR("size and bpw together");
    b.target_size_bytes = 0;
    plan_types[1] = GGML_TYPE_F16;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "F16 is not a plan type");
    CHECK_ERROR("F16 as plan type");
    b.plan_types = NULL;
    CHECK(!ggml_qat_quantize_model(NULL, in, out2, &b), "plan_types NULL");
    CHECK_ERROR("plan_types NULL");
    CHECK(access(out2, F_OK) != 0, "no output after the planner's errors");

    /* classes with a context: the config's class types; dry run writes nothing. */
    ggml_qat_config_t cfg = ggml_qat_default_config();
    ggml_qat_context_t * ctx = ggml_qat_init(&cfg);
    b = ggml_qat_model_default_params();
    b.target = "classes";
    b.dry_run = true;
    b.report = &rep;
    CHECK(ggml_qat_quantize_model(ctx, in, out2, &b), "classes dry run: %s", ggml_qat_last_error());
    CHECK(access(out2, F_OK) != 0, "dry run writes nothing");
    CHECK(rep.n_tensors == 4 && rep.file_bytes_out > 0, "dry run report");
    ggml_qat_free(ctx);

    /* ggml_qat_calibrate_model's arguments, refused before any calibrator
     * runs (tests/calibrate_capi.rs runs the real one). */
    ggml_qat_calibrate_params_t cp = ggml_qat_calibrate_default_params();
    CHECK(cp.calibrator_path == NULL && cp.n_tokens == 0 && !cp.has_seed && !cp.no_sensitivity,
          "calibrate defaults are zero");
    CHECK(!ggml_qat_calibrate_model(NULL, out2, NULL), "calibrate: NULL model_path");
    CHECK(strstr(ggml_qat_last_error(), "model_path is NULL") != NULL, "message: %s", ggml_qat_last_error());
    CHECK(!ggml_qat_calibrate_model(in, NULL, &cp), "calibrate: NULL output_path");
    CHECK(strstr(ggml_qat_last_error(), "output_path is NULL") != NULL, "message: %s", ggml_qat_last_error());
    cp.calibrator_path = "/nonexistent/ggml-qat-calibrate";
    CHECK(!ggml_qat_calibrate_model(in, out2, &cp), "calibrate: missing calibrator");
    CHECK(strstr(ggml_qat_last_error(), "/nonexistent/ggml-qat-calibrate") != NULL, "message: %s",
          ggml_qat_last_error());
    cp.n_text_files = 1;
    CHECK(!ggml_qat_calibrate_model(in, out2, &cp), "calibrate: text_files NULL");
    CHECK(strstr(ggml_qat_last_error(), "text_files") != NULL, "message: %s", ggml_qat_last_error());
    CHECK(access(out2, F_OK) != 0, "no output after calibrate's errors");

    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_summary("test-model");
}
