/*
 * ctcb_internal.h - what the engine's translation units share: the job
 * description handed to workers and the per-thread workspace.
 */
#ifndef CTCB_INTERNAL_H
#define CTCB_INTERNAL_H

#include "ctcbridge.h"
#include "ctcb_math.h"

#include <stddef.h>
#include <stdint.h>

#define CTCB_HIDDEN __attribute__((visibility("hidden")))

/* One call, validated: read-only for the workers. */
typedef struct ctcb_job {
    const ctcb_problem *problem;
    ctcb_options options;
    const int64_t *label_offsets; /* per sample: index of its first label */
    int64_t max_label;            /* longest label sequence in the batch */
    int64_t max_input;            /* longest input length in the batch */
} ctcb_job;

/* Working memory of one worker, sized for the job's longest sample.
 * Rows of `alpha` and `emit` have W = S + 4 entries: two zero (or log-zero)
 * pads, the S = 2L + 1 states, two pads; state s lives at index s + 2, so the
 * recursions read s - 2 .. s + 2 without branches. */
typedef struct ctcb_workspace {
    double *alpha;     /* max_input x W: scaled (or log) forward variables */
    double *emit;      /* max_input x W: emissions of the states (or their logs) */
    double *scale;     /* max_input: the divisor of each forward frame */
    double *lse;       /* max_input: log-sum-exp of each frame (logits) */
    double *beta;      /* W */
    double *beta_next; /* W */
    double *stay;      /* S + 2: 1 where a state has a self-loop */
    double *skip;      /* S + 2: 1 where a state may be entered from s - 2 */
    double *acc;       /* alphabet: occupancy accumulated per class, kept zeroed */
    double *row;       /* alphabet: one frame's class probabilities */
    int64_t *ext;      /* S: the extended label sequence */
    void *block;       /* the single allocation behind all of the above */
} ctcb_workspace;

CTCB_HIDDEN int ctcb_workspace_alloc(ctcb_workspace *ws, int64_t max_time, int64_t max_label,
                                     int64_t alphabet);
CTCB_HIDDEN void ctcb_workspace_free(ctcb_workspace *ws);

/* Outcome of one sample's recursion. */
enum { SAMPLE_OK = 0, SAMPLE_NEEDS_LOG = 1, SAMPLE_NAN = 2, SAMPLE_ZERO_PROB = 3 };

/* Compute one sample; float and double instantiations of ctcb_kernel.inc. */
CTCB_HIDDEN void ctcb_sample_f32(const ctcb_job *job, ctcb_workspace *ws, int64_t n);
CTCB_HIDDEN void ctcb_sample_f64(const ctcb_job *job, ctcb_workspace *ws, int64_t n);

#endif /* CTCB_INTERNAL_H */
