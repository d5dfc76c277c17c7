/*
 * ctcb_glue.h - what the framework ops share: the TensorFlow op
 * (ctcb_tf_op.c) and the XLA FFI handler (ctcb_xla_ffi.c).
 *
 * Both receive contiguous row-major buffers: activations (T, N, C) or
 * (N, T, C), the padded labels (N, S) and the input and label lengths (N,) as
 * int32 or int64, and the same integer attributes.  Here, once: the attribute
 * table, the one int64 block the labels and lengths are copied into (with its
 * overflow check), the ctcb_problem, the ctcb_options and the mapping of an
 * engine status to an error kind and message.  The two ops live in different
 * shared libraries, hence static inlines.
 *
 * The Python side that writes these attributes is ctcbridge/_options.py
 * (EngineOptions.attributes).
 */
#ifndef CTCB_GLUE_H
#define CTCB_GLUE_H

#include "ctcbridge.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ attributes */

/* The integer attributes, in this order; log_zero (a double) comes apart: a
 * float attribute would round TF's sentinel, so the TF op takes it as an input. */
enum { CTCB_ATTR_BLANK, CTCB_ATTR_LAYOUT, CTCB_ATTR_INPUT_KIND, CTCB_ATTR_INFEASIBLE,
       CTCB_ATTR_FLAGS, CTCB_ATTR_THREADS, CTCB_ATTR_COUNT };

static const char *const ctcb_attr_names[CTCB_ATTR_COUNT] = {
    "blank", "layout", "input_kind", "infeasible", "flags", "num_threads"};

/* The options of the attributes; NULL, or why they cannot be options (a value
 * outside the range of its ctcb_options field). */
static inline const char *ctcb_glue_options(ctcb_options *o, const int64_t attr[CTCB_ATTR_COUNT],
                                            double log_zero)
{
    ctcb_options_init(o);
    o->blank = (int32_t)attr[CTCB_ATTR_BLANK];
    o->input_kind = (int32_t)attr[CTCB_ATTR_INPUT_KIND];
    o->infeasible = (int32_t)attr[CTCB_ATTR_INFEASIBLE];
    o->flags = (uint32_t)attr[CTCB_ATTR_FLAGS];
    o->num_threads = (int32_t)attr[CTCB_ATTR_THREADS];
    o->log_zero = log_zero;
    if (attr[CTCB_ATTR_BLANK] != o->blank || attr[CTCB_ATTR_THREADS] != o->num_threads)
        return "ctcbridge: blank or num_threads out of the int32 range";
    return NULL;
}

/* ----------------------------------------------- labels and lengths as int64 */

/* Entries of the int64 block for N samples of S labels: the labels, then the
 * input lengths, then the label lengths (+1: never a zero-size allocation);
 * 0 if it would overflow. */
static inline size_t ctcb_glue_ints_count(int64_t N, int64_t S)
{
    if (N < 0 || S < 0 || (N > 0 && S > (INT64_MAX / 8 - 2) / N))
        return 0;
    return (size_t)(N * S + 2 * N + 1);
}

/* Copy `count` int32 (`is_int64` 0) or int64 entries into `dst`. */
static inline void ctcb_glue_copy_ints(int64_t *dst, const void *src, int64_t count, int is_int64)
{
    if (is_int64) {
        if (count)
            memcpy(dst, src, (size_t)count * sizeof *dst);
        return;
    }
    for (int64_t i = 0; i < count; ++i)
        dst[i] = ((const int32_t *)src)[i];
}

/* ------------------------------------------------------------- the problem */

/* `ints` holds N * S labels, then N input lengths, then N label lengths. */
static inline void ctcb_dense_problem(ctcb_problem *p, int32_t dtype, int batch_major,
                                      int64_t T, int64_t N, int64_t C, int64_t S,
                                      const void *activations, const int64_t *ints,
                                      void *losses, void *grad)
{
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->dtype = dtype;
    p->label_format = CTCB_LABELS_PADDED;
    p->max_time = T;
    p->batch = N;
    p->alphabet = C;
    p->activations = activations;
    /* contiguous buffers: element strides of t, n, c */
    p->act_strides[0] = batch_major ? C : N * C;
    p->act_strides[1] = batch_major ? T * C : C;
    p->act_strides[2] = 1;
    p->labels = ints;
    p->label_stride = S;
    p->label_count = N * S;
    p->input_lengths = ints + N * S;
    p->label_lengths = ints + N * S + N;
    p->losses = losses;
    p->grad = grad;
    memcpy(p->grad_strides, p->act_strides, sizeof p->grad_strides);
}

/* ------------------------------------------------------------------ status */

/* What kind of error an engine status is, for the framework's error codes. */
enum { CTCB_GLUE_INVALID_ARGUMENT, CTCB_GLUE_OUT_OF_MEMORY, CTCB_GLUE_INTERNAL };

static inline int ctcb_glue_error_kind(int status)
{
    return status == CTCB_ERR_OUT_OF_MEMORY ? CTCB_GLUE_OUT_OF_MEMORY
         : status == CTCB_ERR_NULL_POINTER  ? CTCB_GLUE_INTERNAL
                                            : CTCB_GLUE_INVALID_ARGUMENT;
}

/* The engine's message for a failed call: its detail, then the status's name. */
static inline void ctcb_glue_message(char *out, size_t size, int status)
{
    const char *detail = ctcb_last_error();
    snprintf(out, size, "ctcbridge: %s (%s)", detail[0] ? detail : ctcb_status_string(status),
             ctcb_status_string(status));
}

#endif /* CTCB_GLUE_H */
