/*
 * test_xla_ffi.c - C tests of the XLA FFI handler (ctcb_xla_ffi.c), run by
 * ctest: the metadata query, stages other than execute, a float32 and a
 * float64 execution against ctcb_ctc_loss, and errors created through the
 * API's error constructor.  XLA is played by a minimal fake of its C ABI.
 */
#include "ctcbridge.h"
#include "ctcb_xla_ffi.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* --- the fake runtime: the same leading layouts the handler declares --- */
typedef struct ext_base { size_t struct_size; int type; struct ext_base *next; } ext_base;
typedef struct api_version {
    size_t struct_size; ext_base *ext; int major, minor;
} api_version;
typedef struct metadata { size_t struct_size; api_version version; uint32_t traits; } metadata;
typedef struct metadata_ext { ext_base base; metadata *md; } metadata_ext;
typedef struct error_args {
    size_t struct_size; ext_base *ext; const char *message; int errc;
} error_args;
struct XLA_FFI_Error { int errc; char message[640]; };
typedef struct fake_api {
    size_t struct_size; ext_base *ext; api_version version; const void *internal;
    struct XLA_FFI_Error *(*error_create)(error_args *);
} fake_api;
typedef struct buffer {
    size_t struct_size; ext_base *ext; int dtype; void *data; int64_t rank; int64_t *dims;
} buffer;
typedef struct span { const char *ptr; size_t len; } span;
typedef struct scalar { int dtype; void *value; } scalar;
typedef struct args {
    size_t struct_size; ext_base *ext; int64_t size; int *types; void **items;
} args;
typedef struct attrs {
    size_t struct_size; ext_base *ext; int64_t size; int *types; span **names; void **values;
} attrs;
struct XLA_FFI_CallFrame {
    size_t struct_size; ext_base *ext; const fake_api *api; void *ctx; int stage;
    args in; args out; attrs at;
};

static struct XLA_FFI_Error *error_create(error_args *a)
{
    struct XLA_FFI_Error *e = (struct XLA_FFI_Error *)calloc(1, sizeof *e);
    e->errc = a->errc;
    snprintf(e->message, sizeof e->message, "%s", a->message);
    return e;
}

static fake_api api = {sizeof(fake_api), NULL, {0, NULL, 0, 1}, NULL, error_create};

/* A (T=4, N=2, C=3) problem in the layout `layout`, int32 labels. */
typedef struct problem {
    double acts[24]; int32_t labels[4], in_len[2], lab_len[2];
    int64_t dims[5][3];
    buffer in[4], out[2];
    void *in_p[4], *out_p[2];
    int in_t[4], out_t[2];
    int64_t ival[6]; double log_zero;
    scalar sc[7]; span nm[7]; span *nm_p[7]; void *sc_p[7]; int at_t[7];
    struct XLA_FFI_CallFrame frame;
} problem;

static void setup(problem *p, int dtype, int64_t layout, void *losses, void *grad, void *acts)
{
    static const char *names[7] = {"blank", "flags", "infeasible", "input_kind", "layout",
                                   "log_zero", "num_threads"};
    memset(p, 0, sizeof *p);
    for (int i = 0; i < 24; ++i)
        p->acts[i] = sin(0.7 * i) * 2.0;
    p->labels[0] = 1; p->labels[1] = 2; p->labels[2] = 2; p->labels[3] = 0;
    p->in_len[0] = 4; p->in_len[1] = 3; p->lab_len[0] = 2; p->lab_len[1] = 1;
    int64_t shape[3] = {layout ? 2 : 4, layout ? 4 : 2, 3};
    memcpy(p->dims[0], shape, sizeof shape);
    p->dims[1][0] = 2; p->dims[1][1] = 2;
    p->dims[2][0] = 2; p->dims[3][0] = 2; p->dims[4][0] = 2;
    void *data[4] = {acts, p->labels, p->in_len, p->lab_len};
    int types[4] = {dtype, 4, 4, 4}, ranks[4] = {3, 2, 1, 1};
    for (int i = 0; i < 4; ++i) {
        p->in[i] = (buffer){sizeof(buffer), NULL, types[i], data[i], ranks[i], p->dims[i]};
        p->in_p[i] = &p->in[i];
        p->in_t[i] = 1;
    }
    p->out[0] = (buffer){sizeof(buffer), NULL, dtype, losses, 1, p->dims[4]};
    p->out[1] = (buffer){sizeof(buffer), NULL, dtype, grad, 3, p->dims[0]};
    p->out_p[0] = &p->out[0]; p->out_p[1] = &p->out[1];
    p->out_t[0] = p->out_t[1] = 1;
    p->ival[4] = layout;
    p->log_zero = -1e10;
    for (int i = 0, k = 0; i < 7; ++i) {
        p->nm[i] = (span){names[i], strlen(names[i])};
        p->nm_p[i] = &p->nm[i];
        p->sc[i] = i == 5 ? (scalar){12, &p->log_zero} : (scalar){5, &p->ival[k++]};
        p->sc_p[i] = &p->sc[i];
        p->at_t[i] = 3;
    }
    /* ival follows the names, log_zero left out: blank flags infeasible input_kind layout
     * num_threads */
    p->ival[4] = layout; p->ival[5] = 1;
    p->frame = (struct XLA_FFI_CallFrame){
        sizeof(struct XLA_FFI_CallFrame), NULL, &api, NULL, 3,
        {sizeof(args), NULL, 4, p->in_t, p->in_p},
        {sizeof(args), NULL, grad ? 2 : 1, p->out_t, p->out_p},
        {sizeof(attrs), NULL, 7, p->at_t, p->nm_p, p->sc_p}};
}

static void reference(const double *acts, int64_t layout, double *losses, double *grad)
{
    int64_t lab[4] = {1, 2, 2, 0}, il[2] = {4, 3}, ll[2] = {2, 1};
    ctcb_problem q;
    memset(&q, 0, sizeof q);
    q.struct_size = sizeof q;
    q.dtype = CTCB_FLOAT64;
    q.max_time = 4; q.batch = 2; q.alphabet = 3;
    q.activations = acts;
    q.act_strides[0] = layout ? 3 : 6; q.act_strides[1] = layout ? 12 : 3; q.act_strides[2] = 1;
    q.input_lengths = il; q.labels = lab; q.label_stride = 2; q.label_count = 4;
    q.label_lengths = ll; q.losses = losses; q.grad = grad;
    memcpy(q.grad_strides, q.act_strides, sizeof q.grad_strides);
    CHECK(ctcb_ctc_loss(&q, NULL) == CTCB_OK, "%s", ctcb_last_error());
}

int main(void)
{
    problem p;
    double losses[2], grad[24], want_l[2], want_g[24];
    float acts32[24], losses32[2], grad32[24];

    /* metadata query: the API version, no traits, nothing executed */
    {
        metadata md = {sizeof md, {0, NULL, -1, -1}, 99};
        metadata_ext ext = {{sizeof ext, 1, NULL}, &md};
        setup(&p, 12, 0, losses, grad, p.acts);
        p.frame.ext = &ext.base;
        CHECK(ctcb_xla_ffi_ctc_loss(&p.frame) == NULL, "metadata query failed");
        CHECK(md.version.major == 0 && md.version.minor >= 1 && md.traits == 0,
              "metadata %d.%d traits %u", md.version.major, md.version.minor, md.traits);
    }
    /* stages before execute: nothing to do */
    setup(&p, 12, 0, losses, grad, p.acts);
    p.frame.stage = 0;
    CHECK(ctcb_xla_ffi_ctc_loss(&p.frame) == NULL, "instantiate stage failed");

    for (int64_t layout = 0; layout < 2; ++layout) {
        setup(&p, 12, layout, losses, grad, p.acts);
        reference(p.acts, layout, want_l, want_g);
        struct XLA_FFI_Error *e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e == NULL, "execute: %s", e ? e->message : "");
        free(e);
        for (int i = 0; i < 2; ++i)
            CHECK(losses[i] == want_l[i], "loss %d: %g vs %g", i, losses[i], want_l[i]);
        for (int i = 0; i < 24; ++i)
            CHECK(grad[i] == want_g[i], "grad %d: %g vs %g", i, grad[i], want_g[i]);
        /* float32, forward only */
        setup(&p, 11, layout, losses32, NULL, acts32);
        for (int i = 0; i < 24; ++i)
            acts32[i] = (float)p.acts[i];
        e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e == NULL, "execute f32: %s", e ? e->message : "");
        free(e);
        for (int i = 0; i < 2; ++i)
            CHECK(fabs(losses32[i] - want_l[i]) < 1e-4, "f32 loss %d: %g vs %g", i,
                  losses32[i], want_l[i]);
    }
    (void)grad32;

    /* errors come back through the API's constructor, with the engine's message */
    setup(&p, 12, 0, losses, grad, p.acts);
    p.ival[0] = 7; /* blank */
    {
        struct XLA_FFI_Error *e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e && e->errc == 3 && strstr(e->message, "blank"), "bad blank: %s",
              e ? e->message : "no error");
        free(e);
    }
    setup(&p, 12, 0, losses, grad, p.acts);
    p.in_len[1] = 9; /* beyond T */
    {
        struct XLA_FFI_Error *e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e && e->errc == 3 && strstr(e->message, "length"), "bad length: %s",
              e ? e->message : "no error");
        free(e);
    }
    setup(&p, 12, 0, losses, grad, p.acts);
    p.frame.in.size = 3;
    {
        struct XLA_FFI_Error *e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e && strstr(e->message, "4 operands"), "arity: %s", e ? e->message : "no error");
        free(e);
    }
    setup(&p, 12, 0, losses, grad, p.acts);
    p.frame.at.size = 2; /* attributes missing */
    {
        struct XLA_FFI_Error *e = ctcb_xla_ffi_ctc_loss(&p.frame);
        CHECK(e && strstr(e->message, "missing"), "attrs: %s", e ? e->message : "no error");
        free(e);
    }
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    else
        printf("test_xla_ffi: all passed\n");
    return failures != 0;
}
