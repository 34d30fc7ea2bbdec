/* test-bad-input-opencog: create_atomspace, create_moses_tree and
 * create_ecan with bad sizes, a NULL or a disabled context
 * (src/capi/opencog.rs). See harness.h. */

#include "harness.h"

/* -- OpenCog -- */

static ggml_qat_context_t * disabled_ctx(void) {
    ggml_qat_config_t c = ggml_qat_default_config();
    c.enable_atomspace = c.enable_moses = c.enable_ecan = false;
    return ggml_qat_init(&c);
}

static void c_atomspace(fx_t * f, long n_atoms, long n_conn) {
    before(f, "ggml_qat_create_atomspace");
    ggml_qat_atomspace_t * a = ggml_qat_create_atomspace(f->q, NULL, (int) n_atoms, (int) n_conn);
    CHECK(a == NULL, "atomspace(%ld, %ld) accepted", n_atoms, n_conn);
    ggml_qat_free_atomspace(a);
    after_fail(f, n_atoms == 1 ? "n_connections" : "n_atoms");
}

static void c_moses(fx_t * f, long n_nodes, long depth) {
    before(f, "ggml_qat_create_moses_tree");
    ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(f->q, NULL, (int) n_nodes, (int) depth);
    CHECK(t == NULL, "moses(%ld, %ld) accepted", n_nodes, depth);
    ggml_qat_free_moses_tree(t);
    after_fail(f, depth < 0 ? "tree_depth" : "n_nodes");
}

static void c_moses_deep(fx_t * f, long a, long b) {
    (void) a; (void) b;
    ggml_qat_moses_tree_t * t = ggml_qat_create_moses_tree(f->q, NULL, 3, INT_MAX);
    CHECK(t != NULL && t->n_nodes == 3, "depth INT_MAX with 3 nodes is valid: %s", ggml_qat_last_error());
    ggml_qat_free_moses_tree(t);
    after_ok(f);
}

static void c_ecan(fx_t * f, long n, long b) {
    (void) b;
    before(f, "ggml_qat_create_ecan");
    ggml_qat_ecan_t * e = ggml_qat_create_ecan(f->q, NULL, (int) n);
    CHECK(e == NULL, "ecan(%ld) accepted", n);
    ggml_qat_free_ecan(e);
    after_fail(f, "n_elements");
}

static void c_opencog_null_or_disabled(fx_t * f, long which, long disabled) {
    ggml_qat_context_t * q = disabled ? disabled_ctx() : NULL;
    const char * names[] = { "ggml_qat_create_atomspace", "ggml_qat_create_moses_tree", "ggml_qat_create_ecan" };
    before(f, names[which]);
    void * r = which == 0 ? (void *) ggml_qat_create_atomspace(q, NULL, 4, 4)
             : which == 1 ? (void *) ggml_qat_create_moses_tree(q, NULL, 4, 3)
                          : (void *) ggml_qat_create_ecan(q, NULL, 4);
    CHECK(r == NULL, "%s context accepted", disabled ? "disabled" : "NULL");
    after_fail(f, disabled ? "enable_" : "ctx");
    ggml_qat_free(q);
}

/* ---- the table ------------------------------------------------------------ */

static void build_table(void) {
    long as[][2] = { { 0, 1 }, { -1, 1 }, { INT_MIN, 1 }, { INT_MAX, 1 }, { 1, 0 }, { 1, -1 }, { 1, INT_MAX }, { 1, INT_MIN } };
    for (long v = 0; v < N(as); ++v) add(c_atomspace, as[v][0], as[v][1], "atomspace(%ld, %ld)", as[v][0], as[v][1]);
    long ms[][2] = { { 0, 3 }, { -1, 3 }, { INT_MIN, 3 }, { INT_MAX, 3 }, { 100, 2 }, { 8, 2 }, { 2, 0 }, { 1, -1 }, { 4, INT_MIN } };
    for (long v = 0; v < N(ms); ++v) add(c_moses, ms[v][0], ms[v][1], "moses_tree(%ld, %ld)", ms[v][0], ms[v][1]);
    add(c_moses_deep, 0, 0, "moses_tree(3, INT_MAX) is valid");
    long es[] = { 0, -1, INT_MIN, INT_MAX };
    for (long v = 0; v < N(es); ++v) add(c_ecan, es[v], 0, "ecan(%ld)", es[v]);
    for (long w = 0; w < 3; ++w)
        for (long d = 0; d < 2; ++d) add(c_opencog_null_or_disabled, w, d, "opencog %ld: %s", w, d ? "disabled" : "NULL ctx");
}
