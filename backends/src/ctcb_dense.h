/*
 * ctcb_dense.h - the problem description the framework ops share.
 *
 * The TensorFlow op (ctcb_tf_op.c) and the XLA FFI handler (ctcb_xla_ffi.c)
 * both receive contiguous row-major buffers: activations (T, N, C) or
 * (N, T, C), and the padded labels (N, S) followed by the input and label
 * lengths, converted to one int64 block. They build the same ctcb_problem,
 * here; the two live in different shared libraries, hence a static inline.
 */
#ifndef CTCB_DENSE_H
#define CTCB_DENSE_H

#include "ctcbridge.h"

#include <stdint.h>
#include <string.h>

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

#endif /* CTCB_DENSE_H */
