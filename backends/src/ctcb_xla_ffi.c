/*
 * ctcb_xla_ffi.c - the engine as an XLA FFI custom call (JAX's
 * `jax.ffi.register_ffi_target` / `jax.ffi.ffi_call`), so that a jitted
 * program calls the engine directly, with no Python in between.
 *
 * The library must build without jax or jaxlib installed, so the few types
 * of the XLA FFI C ABI the handler touches are declared below (they mirror
 * xla/ffi/api/c_api.h, API version 0.x, whose every struct begins with its
 * size; the XLA runtime promises to keep accepting handlers built for an
 * older minor version).  Only leading fields are declared where the handler
 * reads no further: the runtime owns those structs and passes them by
 * pointer, so their true size never matters here.
 *
 * The call (built by ctcbridge/_bridges/jax.py):
 *   operands  activations  f32 or f64, rank 3, (T, N, C) or (N, T, C) by `layout`
 *             labels       s32 or s64, rank 2, (N, S) padded
 *             input_lengths, label_lengths   s32 or s64, rank 1, (N,)
 *   results   losses (N,) in the activations' dtype, then optionally the
 *             gradient, shaped and laid out like the activations
 *   attributes (integer scalars unless said) blank, layout (0 TNC, 1 NTC),
 *             input_kind, infeasible, flags, num_threads (ctcb_options'
 *             meanings) and log_zero (f64)
 * Any invalid input is reported through XLA_FFI_Error_Create with the
 * engine's own message, which JAX raises as a Python exception.
 */
#include "ctcbridge.h"
#include "ctcb_glue.h"
#include "ctcb_xla_ffi.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ XLA FFI C ABI (subset) */

/* The API version this handler is written against: 0.1 has every type used
 * here (the metadata extension, error creation, buffers, scalar attributes). */
#define FFI_API_MAJOR 0
#define FFI_API_MINOR 1

enum { FFI_EXTENSION_METADATA = 1 };
enum { FFI_STAGE_EXECUTE = 3 };
enum { FFI_ARG_BUFFER = 1, FFI_RET_BUFFER = 1, FFI_ATTR_SCALAR = 3 };
enum { FFI_ERR_INVALID_ARGUMENT = 3, FFI_ERR_RESOURCE_EXHAUSTED = 8, FFI_ERR_INTERNAL = 13 };
enum { FFI_S32 = 4, FFI_S64 = 5, FFI_F32 = 11, FFI_F64 = 12 };

typedef struct XLA_FFI_Error XLA_FFI_Error; /* opaque, owned by the runtime */

typedef struct ffi_extension_base {
    size_t struct_size;
    int type;
    struct ffi_extension_base *next;
} ffi_extension_base;

typedef struct ffi_api_version {
    size_t struct_size;
    ffi_extension_base *extension_start;
    int major_version;
    int minor_version;
} ffi_api_version;

typedef struct ffi_metadata {
    size_t struct_size;
    ffi_api_version api_version;
    uint32_t traits;
} ffi_metadata;

typedef struct ffi_metadata_extension {
    ffi_extension_base extension_base;
    ffi_metadata *metadata;
} ffi_metadata_extension;

typedef struct ffi_error_create_args {
    size_t struct_size;
    ffi_extension_base *extension_start;
    const char *message;
    int errc;
} ffi_error_create_args;

typedef XLA_FFI_Error *ffi_error_create_fn(ffi_error_create_args *args);

/* Leading fields of XLA_FFI_Api: the error constructor is its first function. */
typedef struct ffi_api {
    size_t struct_size;
    ffi_extension_base *extension_start;
    ffi_api_version api_version;
    const void *internal_api;
    ffi_error_create_fn *error_create;
} ffi_api;

typedef struct ffi_buffer {
    size_t struct_size;
    ffi_extension_base *extension_start;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} ffi_buffer;

typedef struct ffi_byte_span {
    const char *ptr;
    size_t len;
} ffi_byte_span;

typedef struct ffi_scalar {
    int dtype;
    void *value;
} ffi_scalar;

typedef struct ffi_args {
    size_t struct_size;
    ffi_extension_base *extension_start;
    int64_t size;
    int *types;
    void **args;
} ffi_args;

typedef struct ffi_attrs {
    size_t struct_size;
    ffi_extension_base *extension_start;
    int64_t size;
    int *types;
    ffi_byte_span **names;
    void **attrs;
} ffi_attrs;

/* XLA_FFI_CallFrame; XLA_FFI_Rets has the layout of XLA_FFI_Args. */
struct XLA_FFI_CallFrame {
    size_t struct_size;
    ffi_extension_base *extension_start;
    const ffi_api *api;
    void *ctx;
    int stage;
    ffi_args args;
    ffi_args rets;
    ffi_attrs attrs;
};
typedef struct XLA_FFI_CallFrame XLA_FFI_CallFrame;

#define FFI_SIZE_TO(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

/* ------------------------------------------------------------- helpers */

static XLA_FFI_Error *ffi_error(const XLA_FFI_CallFrame *frame, int errc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static XLA_FFI_Error *ffi_error(const XLA_FFI_CallFrame *frame, int errc, const char *fmt, ...)
{
    char message[640];
    va_list ap;
    ffi_error_create_args args;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    memset(&args, 0, sizeof args);
    args.struct_size = FFI_SIZE_TO(ffi_error_create_args, errc);
    args.message = message; /* copied by the runtime */
    args.errc = errc;
    return frame->api->error_create(&args);
}

/* Answer the runtime's metadata query: the API version we were written for,
 * no traits (the handler is stateless and does no device work to capture). */
static XLA_FFI_Error *ffi_metadata_answer(const XLA_FFI_CallFrame *frame,
                                          ffi_metadata_extension *ext)
{
    ffi_metadata *md = ext->metadata;
    if (ext->extension_base.struct_size < FFI_SIZE_TO(ffi_metadata_extension, metadata) || !md
        || md->struct_size < FFI_SIZE_TO(ffi_metadata, traits))
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: unexpected XLA FFI metadata struct size");
    md->api_version.struct_size = FFI_SIZE_TO(ffi_api_version, minor_version);
    md->api_version.extension_start = NULL;
    md->api_version.major_version = FFI_API_MAJOR;
    md->api_version.minor_version = FFI_API_MINOR;
    md->traits = 0;
    return NULL;
}

/* The scalar attribute `name`, or NULL. */
static const ffi_scalar *attr_scalar(const ffi_attrs *attrs, const char *name)
{
    size_t len = strlen(name);
    for (int64_t i = 0; i < attrs->size; ++i) {
        const ffi_byte_span *n = attrs->names[i];
        if (attrs->types[i] == FFI_ATTR_SCALAR && n->len == len && !memcmp(n->ptr, name, len))
            return (const ffi_scalar *)attrs->attrs[i];
    }
    return NULL;
}

/* The integer attribute `name` (s32 or s64 scalar); 1 if found. */
static int attr_int(const ffi_attrs *attrs, const char *name, int64_t *out)
{
    const ffi_scalar *s = attr_scalar(attrs, name);
    if (s && s->dtype == FFI_S64) { *out = *(const int64_t *)s->value; return 1; }
    if (s && s->dtype == FFI_S32) { *out = *(const int32_t *)s->value; return 1; }
    return 0;
}

/* The floating-point attribute `name` (f32 or f64 scalar); 1 if found. */
static int attr_double(const ffi_attrs *attrs, const char *name, double *out)
{
    const ffi_scalar *s = attr_scalar(attrs, name);
    if (s && s->dtype == FFI_F64) { *out = *(const double *)s->value; return 1; }
    if (s && s->dtype == FFI_F32) { *out = *(const float *)s->value; return 1; }
    return 0;
}

/* Copy an s32/s64 buffer of `count` entries into int64 `dst`; 0 for another type. */
static int to_int64(const ffi_buffer *b, int64_t count, int64_t *dst)
{
    if (b->dtype != FFI_S64 && b->dtype != FFI_S32)
        return 0;
    ctcb_glue_copy_ints(dst, b->data, count, b->dtype == FFI_S64);
    return 1;
}

/* -------------------------------------------------------------- handler */

CTCB_API XLA_FFI_Error *ctcb_xla_ffi_ctc_loss(XLA_FFI_CallFrame *frame)
{
    int64_t attr[CTCB_ATTR_COUNT];
    double log_zero = -1e10;
    const char *bad_options;
    size_t n_ints;
    const ffi_buffer *in[4];
    const ffi_buffer *out[2] = {NULL, NULL};
    ctcb_problem p;
    ctcb_options o;
    int64_t T, N, C, S, *ints;
    int status;

    if (!frame || !frame->api || frame->api->struct_size < FFI_SIZE_TO(ffi_api, error_create))
        return NULL; /* nothing we could report an error through */
    if (frame->extension_start && frame->extension_start->type == FFI_EXTENSION_METADATA)
        return ffi_metadata_answer(frame, (ffi_metadata_extension *)frame->extension_start);
    if (frame->struct_size < FFI_SIZE_TO(XLA_FFI_CallFrame, attrs))
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: XLA FFI call frame of unexpected size %zu",
                         frame->struct_size);
    if (frame->stage != FFI_STAGE_EXECUTE)
        return NULL; /* stateless: nothing to instantiate, prepare or initialise */

    if (frame->args.size != 4 || (frame->rets.size != 1 && frame->rets.size != 2))
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: the CTC custom call takes 4 operands and 1 or 2 results, "
                         "got %lld and %lld", (long long)frame->args.size,
                         (long long)frame->rets.size);
    for (int i = 0; i < 4; ++i) {
        if (frame->args.types[i] != FFI_ARG_BUFFER)
            return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                             "ctcbridge: operand %d is not a buffer", i);
        in[i] = (const ffi_buffer *)frame->args.args[i];
    }
    for (int i = 0; i < frame->rets.size; ++i) {
        if (frame->rets.types[i] != FFI_RET_BUFFER)
            return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                             "ctcbridge: result %d is not a buffer", i);
        out[i] = (const ffi_buffer *)frame->rets.args[i];
    }
    for (int i = 0; i < CTCB_ATTR_COUNT; ++i)
        if (!attr_int(&frame->attrs, ctcb_attr_names[i], &attr[i]))
            return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                             "ctcbridge: integer attribute `%s` is missing", ctcb_attr_names[i]);
    attr_double(&frame->attrs, "log_zero", &log_zero);

    if (in[0]->rank != 3 || (in[0]->dtype != FFI_F32 && in[0]->dtype != FFI_F64))
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: activations must be a rank-3 float32 or float64 array");
    if (attr[CTCB_ATTR_LAYOUT] != 0 && attr[CTCB_ATTR_LAYOUT] != 1)
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT, "ctcbridge: layout = %lld",
                         (long long)attr[CTCB_ATTR_LAYOUT]);
    T = in[0]->dims[attr[CTCB_ATTR_LAYOUT] ? 1 : 0];
    N = in[0]->dims[attr[CTCB_ATTR_LAYOUT] ? 0 : 1];
    C = in[0]->dims[2];
    if (in[1]->rank != 2 || in[1]->dims[0] != N || in[2]->rank != 1 || in[2]->dims[0] != N
        || in[3]->rank != 1 || in[3]->dims[0] != N)
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: labels must be (N, S) and the lengths (N,), N = %lld",
                         (long long)N);
    S = in[1]->dims[1];
    for (int i = 0; i < frame->rets.size; ++i) {
        int64_t want = i ? 3 : 1;
        if (out[i]->dtype != in[0]->dtype || out[i]->rank != want)
            return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                             "ctcbridge: result %d has the wrong dtype or rank", i);
    }

    bad_options = ctcb_glue_options(&o, attr, log_zero);
    if (bad_options)
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT, "%s", bad_options);
    /* the engine reads int64 labels and lengths: one scratch block for all three */
    n_ints = ctcb_glue_ints_count(N, S);
    if (!n_ints)
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT, "ctcbridge: labels too large");
    ints = (int64_t *)malloc(n_ints * sizeof *ints);
    if (!ints)
        return ffi_error(frame, FFI_ERR_RESOURCE_EXHAUSTED,
                         "ctcbridge: out of memory for the labels");
    if (!to_int64(in[1], N * S, ints) || !to_int64(in[2], N, ints + N * S)
        || !to_int64(in[3], N, ints + N * S + N)) {
        free(ints);
        return ffi_error(frame, FFI_ERR_INVALID_ARGUMENT,
                         "ctcbridge: labels and lengths must be int32 or int64");
    }

    ctcb_dense_problem(&p, in[0]->dtype == FFI_F64 ? CTCB_FLOAT64 : CTCB_FLOAT32,
                       (int)attr[CTCB_ATTR_LAYOUT], T, N, C, S, in[0]->data, ints, out[0]->data,
                       out[1] ? out[1]->data : NULL);
    status = ctcb_ctc_loss(&p, &o);
    free(ints);
    if (status != CTCB_OK) {
        static const int codes[] = {[CTCB_GLUE_INVALID_ARGUMENT] = FFI_ERR_INVALID_ARGUMENT,
                                    [CTCB_GLUE_OUT_OF_MEMORY] = FFI_ERR_RESOURCE_EXHAUSTED,
                                    [CTCB_GLUE_INTERNAL] = FFI_ERR_INTERNAL};
        char message[640];

        ctcb_glue_message(message, sizeof message, status);
        return ffi_error(frame, codes[ctcb_glue_error_kind(status)], "%s", message);
    }
    return NULL;
}
