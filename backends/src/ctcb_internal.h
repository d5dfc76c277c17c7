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

/* Per-CPU clones of a hot function: on x86-64 Linux with GCC >= 11 or
 * Clang >= 14 it is also compiled for x86-64-v3 (AVX2 + FMA) and the loader
 * picks the best clone for the CPU at run time, so one binary is portable
 * and fast.  CTCB_NO_CLONES builds the portable code only. */
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
     (defined(__clang__) && __clang_major__ >= 14)) && !defined(CTCB_NO_CLONES)
#  define CTCB_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#  define CTCB_CLONES
#endif

/* One call, validated: read-only for the workers.  The integer inputs are
 * the engine's own copies (read once from the caller's arrays, then
 * validated): the workers never read the caller's integer arrays, so a
 * caller thread writing to them cannot steer an index out of bounds. */
typedef struct ctcb_job {
    const ctcb_problem *problem;
    ctcb_options options;
    const int64_t *input_lengths; /* N frames counts, each in [0, T] */
    const int64_t *label_lengths; /* N label counts */
    const int64_t *label_offsets; /* per sample: index of its first label in `labels` */
    const int64_t *labels;        /* every sample's labels, concatenated, each in [0, C) */
    int64_t max_label;            /* longest label sequence in the batch */
    int64_t max_input;            /* longest input length in the batch */
} ctcb_job;

/* Record the detail message of a failure for ctcb_last_error() (per thread)
 * and return `status`; shared by the loss and the decoders. */
CTCB_HIDDEN int ctcb_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Run `work(arg)` on min(requested or every core this process may use,
 * batch) threads, this one included, and join them; returns that count.  A
 * thread that cannot be started leaves its share to the others (the workers
 * take samples from a shared counter). */
CTCB_HIDDEN int64_t ctcb_run_workers(int32_t requested, int64_t batch, void *(*work)(void *),
                                     void *arg);

/* Empty the calling thread's detail message (at the start of every call). */
CTCB_HIDDEN void ctcb_clear_error(void);

/* CTCB_OK, or CTCB_ERR_SIZE_OVERFLOW (with its message) when the largest
 * |offset| the element strides reach over a (T, N, C) shape passes 2^63. */
CTCB_HIDDEN int ctcb_check_strides(const char *name, const int64_t strides[3], int64_t T,
                                   int64_t N, int64_t C);

/* One read of a caller's integer: an atomic load cannot be repeated or split
 * by the compiler, so the value checked is the value used even when another
 * thread writes to the caller's array meanwhile. */
static inline int64_t ctcb_read_once(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* The integer inputs of a call, as the caller gave them. */
typedef struct ctcb_int_inputs {
    int64_t max_time, batch, alphabet;
    int32_t label_format;           /* ctcb_label_format */
    const int64_t *input_lengths;   /* NULL: max_time for all */
    const int64_t *labels;
    int64_t label_stride;           /* padded width S */
    int64_t label_count;            /* concatenated: entries in labels */
    const int64_t *label_lengths;   /* NULL: label_stride for all (padded) */
    int read_labels;                /* 0: input lengths only (the decoders) */
} ctcb_int_inputs;

/* The engine's copies of the integer inputs, read once and validated: the
 * workers read only these, so a caller thread writing to its arrays during
 * the call cannot steer an index out of bounds. */
typedef struct ctcb_snapshot {
    int64_t *ints;          /* 3N: input lengths, label lengths, label offsets */
    int64_t *labels;        /* every sample's labels, concatenated, each in [0, C) */
    int64_t *input_lengths; /* views into ints */
    int64_t *label_lengths; /* (all 0 when read_labels is 0) */
    int64_t *label_offsets;
    int64_t max_input, max_label;
} ctcb_snapshot;

/* Take the snapshot (CTCB_OK, or a status with its message); free it with
 * ctcb_snapshot_free in every case. */
CTCB_HIDDEN int ctcb_snapshot_take(const ctcb_int_inputs *in, ctcb_snapshot *snap);
CTCB_HIDDEN void ctcb_snapshot_free(ctcb_snapshot *snap);

/* How often (in frames) the recursions look at the cancel flag: a relaxed
 * load every 512 frames costs nothing measurable, and a sample of any
 * realistic width reaches the next check within milliseconds. */
#define CTCB_CANCEL_PERIOD 512

/* Whether the caller asked the call to stop (options.cancel). */
static inline int ctcb_cancelled(const ctcb_job *job)
{
    return job->options.cancel && __atomic_load_n(job->options.cancel, __ATOMIC_RELAXED) != 0;
}

/* Working memory of one worker, sized for the job's longest sample.
 * Rows of `alpha` and `emit` have W = S + 4 entries: two zero (or log-zero)
 * pads, the S = 2L + 1 states, two pads; state s lives at index s + 2, so the
 * recursions read s - 2 .. s + 2 without branches. */
typedef struct ctcb_workspace {
    double *alpha;     /* max_input x W: scaled (or log) forward variables */
    double *emit;      /* max_input x W: emissions of the states (or their logs) */
    double *scale;     /* max_input: the divisor of each forward frame */
    double *fmax;      /* max_input: largest activation of each frame (logits) */
    double *lsum;      /* max_input: log sum exp(x - fmax) of each frame (logits):
                          log_softmax(x) = (x - fmax) - lsum, exact for any offset */
    double *eshift;    /* max_input: log of the factor a frame's emissions were
                          divided by to keep them in range (0: not rescaled) */
    double *beta;      /* W */
    double *beta_next; /* W */
    double *stay;      /* S + 2: 1 where a state has a self-loop */
    double *skip;      /* S + 2: 1 where a state may be entered from s - 2 */
    double *bmask;     /* S + 2: 1 at the blank's states (even s), else 0 */
    double *acc;       /* alphabet: occupancy accumulated per class, kept zeroed */
    double *probs;     /* max_input x alphabet, only when alphabet <= S (else NULL):
                          each frame's class probabilities (logits), kept from the
                          emissions for the gradient rows */
    int64_t *ext;      /* S: the extended label sequence */
    const int64_t *lab; /* L: the sample's labels (its snapshot), ext[2j + 1] */
    void *block;       /* the single allocation behind all of the above */
} ctcb_workspace;

CTCB_HIDDEN int ctcb_workspace_alloc(ctcb_workspace *ws, int64_t max_time, int64_t max_label,
                                     int64_t alphabet);
CTCB_HIDDEN void ctcb_workspace_free(ctcb_workspace *ws);

/* Outcome of one sample's recursion. */
enum {
    SAMPLE_OK = 0,
    SAMPLE_NEEDS_LOG = 1,
    SAMPLE_NAN = 2,
    SAMPLE_ZERO_PROB = 3,
    SAMPLE_CANCELLED = 4
};

/* Compute one sample; float and double instantiations of ctcb_kernel.inc.
 * Returns SAMPLE_CANCELLED when the cancel flag stopped it, else SAMPLE_OK. */
CTCB_HIDDEN int ctcb_sample_f32(const ctcb_job *job, ctcb_workspace *ws, int64_t n);
CTCB_HIDDEN int ctcb_sample_f64(const ctcb_job *job, ctcb_workspace *ws, int64_t n);

#endif /* CTCB_INTERNAL_H */
