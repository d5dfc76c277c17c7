/*
 * ctcb_tf_op.c - the engine as a TensorFlow custom op (`CtcbridgeCtcLoss`),
 * loaded with tf.load_op_library, so that a tf.function calls the engine
 * directly instead of going through tf.numpy_function and Python.
 *
 * The library must build without TensorFlow installed, so it neither
 * includes TF's headers nor links against libtensorflow_framework: the few
 * functions of TF's stable C API it uses (tensorflow/c/ops.h, kernels.h,
 * tf_tensor.h, tf_status.h) are declared below and looked up, when
 * tf.load_op_library opens this library, in the libtensorflow_framework
 * that TensorFlow has already loaded.  Without it nothing is registered and
 * the Python bridge keeps tf.numpy_function.
 *
 * Op: activations (T in {float, double}), labels (N, S) and the lengths (N,)
 * (Tidx in {int32, int64}), log_zero (float64 scalar: a float attribute
 * would round TF's sentinel); integer attributes blank, layout (0 TNC,
 * 1 NTC), input_kind, infeasible, flags, num_threads as in ctcb_options.
 * Outputs losses (N,) and the gradient of their sum, in the activations'
 * layout.  Engine errors fail the kernel with the engine's message, which
 * TensorFlow raises as InvalidArgumentError.
 */
#include "ctcbridge.h"
#include "ctcb_glue.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------- TF stable C API (declarations) */

typedef struct TF_Status TF_Status;
typedef struct TF_Tensor TF_Tensor;
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;

enum { TF_OK_ = 0, TF_INVALID_ARGUMENT_ = 3, TF_RESOURCE_EXHAUSTED_ = 8, TF_INTERNAL_ = 13 };
enum { TF_FLOAT_ = 1, TF_DOUBLE_ = 2, TF_INT32_ = 3, TF_INT64_ = 9 };

static struct {
    TF_Status *(*NewStatus)(void);
    void (*DeleteStatus)(TF_Status *);
    void (*SetStatus)(TF_Status *, int, const char *);
    int (*GetCode)(const TF_Status *);
    TF_OpDefinitionBuilder *(*NewOpDefinitionBuilder)(const char *);
    void (*OpDefinitionBuilderAddInput)(TF_OpDefinitionBuilder *, const char *);
    void (*OpDefinitionBuilderAddOutput)(TF_OpDefinitionBuilder *, const char *);
    void (*OpDefinitionBuilderAddAttr)(TF_OpDefinitionBuilder *, const char *);
    void (*OpDefinitionBuilderSetShapeInferenceFunction)(
        TF_OpDefinitionBuilder *, void (*)(TF_ShapeInferenceContext *, TF_Status *));
    void (*ShapeInferenceContextSetUnknownShape)(TF_ShapeInferenceContext *, TF_Status *);
    void (*RegisterOpDefinition)(TF_OpDefinitionBuilder *, TF_Status *);
    TF_KernelBuilder *(*NewKernelBuilder)(const char *, const char *,
                                          void *(*)(TF_OpKernelConstruction *),
                                          void (*)(void *, TF_OpKernelContext *),
                                          void (*)(void *));
    void (*RegisterKernelBuilder)(const char *, TF_KernelBuilder *, TF_Status *);
    void (*OpKernelConstruction_GetAttrInt64)(TF_OpKernelConstruction *, const char *,
                                              int64_t *, TF_Status *);
    void (*OpKernelConstruction_Failure)(TF_OpKernelConstruction *, TF_Status *);
    void (*GetInput)(TF_OpKernelContext *, int, TF_Tensor **, TF_Status *);
    TF_Tensor *(*AllocateOutput)(TF_OpKernelContext *, int, int, const int64_t *, int, size_t,
                                 TF_Status *);
    void (*OpKernelContext_Failure)(TF_OpKernelContext *, TF_Status *);
    void *(*TensorData)(const TF_Tensor *);
    int (*NumDims)(const TF_Tensor *);
    int64_t (*Dim)(const TF_Tensor *, int);
    int (*TensorType)(const TF_Tensor *);
    void (*DeleteTensor)(TF_Tensor *);
} tf;

/* tf_resolve fills the struct above as an array of pointers, in this order */
typedef char tf_table_is_pointers[sizeof tf == 23 * sizeof(void *) ? 1 : -1];

/* Look every function up in the already loaded framework library; 0 if absent. */
static int tf_resolve(void)
{
    static const char *const names[] = {
        "TF_NewStatus", "TF_DeleteStatus", "TF_SetStatus", "TF_GetCode",
        "TF_NewOpDefinitionBuilder", "TF_OpDefinitionBuilderAddInput",
        "TF_OpDefinitionBuilderAddOutput", "TF_OpDefinitionBuilderAddAttr",
        "TF_OpDefinitionBuilderSetShapeInferenceFunction",
        "TF_ShapeInferenceContextSetUnknownShape",
        "TF_RegisterOpDefinition", "TF_NewKernelBuilder", "TF_RegisterKernelBuilder",
        "TF_OpKernelConstruction_GetAttrInt64", "TF_OpKernelConstruction_Failure",
        "TF_GetInput", "TF_AllocateOutput", "TF_OpKernelContext_Failure", "TF_TensorData",
        "TF_NumDims", "TF_Dim", "TF_TensorType", "TF_DeleteTensor",
    };
    void **slots = (void **)&tf;
    void *lib = dlopen("libtensorflow_framework.so.2", RTLD_NOW | RTLD_NOLOAD);
    if (!lib)
        return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        slots[i] = dlsym(lib, names[i]);
        if (!slots[i]) {
            dlclose(lib);
            return 0;
        }
    }
    return 1; /* the handle stays open: the framework outlives this library anyway */
}

/* ------------------------------------------------------------ the kernel */


typedef struct kernel {
    int64_t attr[CTCB_ATTR_COUNT];
} kernel;

static void *kernel_create(TF_OpKernelConstruction *ctx)
{
    kernel *k = (kernel *)calloc(1, sizeof *k);
    TF_Status *s = tf.NewStatus();
    for (int i = 0; k && i < CTCB_ATTR_COUNT; ++i) {
        tf.OpKernelConstruction_GetAttrInt64(ctx, ctcb_attr_names[i], &k->attr[i], s);
        if (tf.GetCode(s) != TF_OK_) {
            tf.OpKernelConstruction_Failure(ctx, s);
            break;
        }
    }
    if (!k) {
        tf.SetStatus(s, TF_RESOURCE_EXHAUSTED_, "ctcbridge: out of memory");
        tf.OpKernelConstruction_Failure(ctx, s);
    }
    tf.DeleteStatus(s);
    return k;
}

static void kernel_delete(void *k) { free(k); }

static void fail(TF_OpKernelContext *ctx, TF_Status *s, int code, const char *message)
{
    tf.SetStatus(s, code, message);
    tf.OpKernelContext_Failure(ctx, s);
}

/* int32 or int64 tensor -> int64 array of `count` entries; 0 for another type */
static int to_int64(const TF_Tensor *t, int64_t count, int64_t *dst)
{
    if (tf.TensorType(t) != TF_INT64_ && tf.TensorType(t) != TF_INT32_)
        return 0;
    ctcb_glue_copy_ints(dst, tf.TensorData(t), count, tf.TensorType(t) == TF_INT64_);
    return 1;
}

static void kernel_compute(void *state, TF_OpKernelContext *ctx)
{
    const kernel *k = (const kernel *)state;
    TF_Status *s = tf.NewStatus();
    TF_Tensor *in[5] = {NULL, NULL, NULL, NULL, NULL};
    TF_Tensor *losses = NULL, *grad = NULL;
    int64_t *ints = NULL;
    char message[640];

    for (int i = 0; i < 5; ++i) {
        tf.GetInput(ctx, i, &in[i], s);
        if (tf.GetCode(s) != TF_OK_) {
            tf.OpKernelContext_Failure(ctx, s);
            goto done;
        }
    }
    {
        const int layout = (int)k->attr[CTCB_ATTR_LAYOUT];
        const int dtype = tf.TensorType(in[0]);
        int64_t T, N, C, S, dims[3];
        size_t item = dtype == TF_DOUBLE_ ? 8 : 4;
        ctcb_problem p;
        ctcb_options o;
        const char *bad_options;
        size_t n_ints;
        int status;

        if (tf.NumDims(in[0]) != 3 || (layout != 0 && layout != 1)) {
            fail(ctx, s, TF_INVALID_ARGUMENT_, "ctcbridge: activations must be 3-D");
            goto done;
        }
        for (int d = 0; d < 3; ++d)
            dims[d] = tf.Dim(in[0], d);
        T = dims[layout ? 1 : 0];
        N = dims[layout ? 0 : 1];
        C = dims[2];
        if (tf.NumDims(in[1]) != 2 || tf.Dim(in[1], 0) != N || tf.NumDims(in[2]) != 1
            || tf.Dim(in[2], 0) != N || tf.NumDims(in[3]) != 1 || tf.Dim(in[3], 0) != N
            || tf.NumDims(in[4]) != 0) {
            snprintf(message, sizeof message,
                     "ctcbridge: labels must be (N, S), the lengths (N,), N = %lld",
                     (long long)N);
            fail(ctx, s, TF_INVALID_ARGUMENT_, message);
            goto done;
        }
        S = tf.Dim(in[1], 1);
        bad_options = ctcb_glue_options(&o, k->attr, *(const double *)tf.TensorData(in[4]));
        if (bad_options) {
            fail(ctx, s, TF_INVALID_ARGUMENT_, bad_options);
            goto done;
        }
        n_ints = ctcb_glue_ints_count(N, S);
        if (!n_ints) {
            fail(ctx, s, TF_INVALID_ARGUMENT_, "ctcbridge: labels too large");
            goto done;
        }
        ints = (int64_t *)malloc(n_ints * sizeof *ints);
        if (!ints) {
            fail(ctx, s, TF_RESOURCE_EXHAUSTED_, "ctcbridge: out of memory for the labels");
            goto done;
        }
        if (!to_int64(in[1], N * S, ints) || !to_int64(in[2], N, ints + N * S)
            || !to_int64(in[3], N, ints + N * S + N)) {
            fail(ctx, s, TF_INVALID_ARGUMENT_, "ctcbridge: labels must be int32 or int64");
            goto done;
        }
        losses = tf.AllocateOutput(ctx, 0, dtype, &N, 1, (size_t)N * item, s);
        if (tf.GetCode(s) != TF_OK_) {
            tf.OpKernelContext_Failure(ctx, s);
            goto done;
        }
        grad = tf.AllocateOutput(ctx, 1, dtype, dims, 3, (size_t)(T * N * C) * item, s);
        if (tf.GetCode(s) != TF_OK_) {
            tf.OpKernelContext_Failure(ctx, s);
            goto done;
        }

        ctcb_dense_problem(&p, dtype == TF_DOUBLE_ ? CTCB_FLOAT64 : CTCB_FLOAT32, layout,
                           T, N, C, S, tf.TensorData(in[0]), ints, tf.TensorData(losses),
                           tf.TensorData(grad));

        status = ctcb_ctc_loss(&p, &o);
        if (status != CTCB_OK) {
            static const int codes[] = {[CTCB_GLUE_INVALID_ARGUMENT] = TF_INVALID_ARGUMENT_,
                                        [CTCB_GLUE_OUT_OF_MEMORY] = TF_RESOURCE_EXHAUSTED_,
                                        [CTCB_GLUE_INTERNAL] = TF_INTERNAL_};

            ctcb_glue_message(message, sizeof message, status);
            fail(ctx, s, codes[ctcb_glue_error_kind(status)], message);
        }
    }
done:
    free(ints);
    for (int i = 0; i < 5; ++i)
        if (in[i])
            tf.DeleteTensor(in[i]);
    if (losses)
        tf.DeleteTensor(losses);
    if (grad)
        tf.DeleteTensor(grad);
    tf.DeleteStatus(s);
}

static void unknown_shapes(TF_ShapeInferenceContext *ctx, TF_Status *s)
{
    tf.ShapeInferenceContextSetUnknownShape(ctx, s); /* the Python bridge sets them */
}

/* Runs when tf.load_op_library opens the library. */
__attribute__((constructor)) static void ctcb_tf_register(void)
{
    TF_OpDefinitionBuilder *op;
    TF_Status *s;
    if (!tf_resolve())
        return;
    s = tf.NewStatus();
    op = tf.NewOpDefinitionBuilder("CtcbridgeCtcLoss");
    tf.OpDefinitionBuilderAddInput(op, "activations: T");
    tf.OpDefinitionBuilderAddInput(op, "labels: Tidx");
    tf.OpDefinitionBuilderAddInput(op, "input_lengths: Tidx");
    tf.OpDefinitionBuilderAddInput(op, "label_lengths: Tidx");
    tf.OpDefinitionBuilderAddInput(op, "log_zero: double");
    tf.OpDefinitionBuilderAddOutput(op, "losses: T");
    tf.OpDefinitionBuilderAddOutput(op, "grad: T");
    tf.OpDefinitionBuilderAddAttr(op, "T: {float, double}");
    tf.OpDefinitionBuilderAddAttr(op, "Tidx: {int32, int64}");
    for (int i = 0; i < CTCB_ATTR_COUNT; ++i) {
        char spec[64];
        snprintf(spec, sizeof spec, "%s: int", ctcb_attr_names[i]);
        tf.OpDefinitionBuilderAddAttr(op, spec);
    }
    tf.OpDefinitionBuilderSetShapeInferenceFunction(op, unknown_shapes);
    tf.RegisterOpDefinition(op, s);
    if (tf.GetCode(s) == TF_OK_)
        tf.RegisterKernelBuilder("CtcbridgeCtcLoss",
                                 tf.NewKernelBuilder("CtcbridgeCtcLoss", "CPU", kernel_create,
                                                     kernel_compute, kernel_delete),
                                 s);
    tf.DeleteStatus(s);
}
