/*
 * ctcbridge.h - the only public header of the ctcbridge CTC engine.
 *
 * One function computes the Connectionist Temporal Classification loss
 * (negative log-likelihood) of a batch and, optionally, its gradient.
 *
 * Memory layout
 * -------------
 * Activations are a 3-D array indexed (t, n, c) with element strides
 * (not byte strides), so time-major (T, N, C), batch-major (N, T, C) and any
 * other strided view are described the same way:
 *
 *     activations[t * act_strides[0] + n * act_strides[1] + c * act_strides[2]]
 *
 * for 0 <= t < max_time, 0 <= n < batch, 0 <= c < alphabet.  A contiguous
 * (T, N, C) array has strides {N*C, C, 1}; a contiguous (N, T, C) array has
 * strides {C, T*C, 1}.  The gradient, when requested, is written with its own
 * strides `grad_strides` in the same way; it covers every (t, n, c), and
 * frames t >= input_lengths[n] receive 0.
 *
 * Labels come in one of two containers (`label_format`):
 *   CTCB_LABELS_PADDED        labels[n * label_stride + i], 0 <= i < label_lengths[n]
 *                             (entries past label_lengths[n] are never read;
 *                              label_stride is the padded width S)
 *   CTCB_LABELS_CONCATENATED  labels[offset_n + i], offset_n = sum of label_lengths[0..n),
 *                             and the sum of all lengths must not exceed label_count
 *
 * The integer inputs (input lengths, label lengths, labels) are read exactly
 * once, into the engine's own memory, before any sample is computed: a caller
 * thread writing to them during the call can cause at most an error or a
 * result for the sample it changed, never an access out of bounds.  Writing
 * to the activations during the call leaves that sample's results
 * unspecified, and nothing else.
 *
 * Every label must lie in [0, alphabet).  A label equal to the blank index is
 * accepted; how it is treated is chosen by CTCB_FLAG_WARP_BLANK_LABELS.
 *
 * Definition
 * ----------
 * With y_t(k) the per-frame log-probabilities (log_softmax of the activations
 * for CTCB_INPUT_LOGITS, the activations themselves for CTCB_INPUT_LOG_PROBS)
 * and l' = (blank, l_1, blank, ..., l_L, blank) the extended label sequence,
 * loss_n = -log sum over alignments of prod_t exp(y_t(pi_t)).
 * Gradient: w.r.t. logits softmax(z_t) - gamma_t; w.r.t. log-probabilities the
 * exact -gamma_t, where gamma_t(k) is the posterior occupancy of class k.
 *
 * A sample is infeasible when input_length < L + R (R = number of label
 * positions that need a blank before them, i.e. repeats), or when every
 * alignment has probability zero.  Its result is chosen by `infeasible`.
 * An empty label sequence is feasible for any input length (loss
 * -sum_t y_t(blank); 0 for a zero-length input).
 *
 * Threads, state, errors
 * ----------------------
 * The library keeps no process-global state, never prints and may be called
 * from several threads at once.  Every function returns a status; on failure
 * ctcb_last_error() gives a message for the calling thread naming the
 * offending argument, sample and value.  Results are bit-identical whatever
 * num_threads is (a worker that cannot be started leaves its share to the
 * others, so thread creation never fails a call).
 */
#ifndef CTCBRIDGE_H
#define CTCBRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define CTCB_API __declspec(dllexport)
#else
#  define CTCB_API __attribute__((visibility("default")))
#endif

/* Version of the engine and of the binary interface (structs, enums, the
 * function table).  The ABI version changes whenever a caller built against
 * an older header could misbehave. */
#define CTCB_VERSION_MAJOR 0
#define CTCB_VERSION_MINOR 2
#define CTCB_VERSION_PATCH 0
#define CTCB_ABI_VERSION 1

typedef enum ctcb_status {
    CTCB_OK = 0,
    CTCB_ERR_NULL_POINTER = 1,     /* a required pointer is NULL */
    CTCB_ERR_INVALID_SIZE = 2,     /* negative T, N, C, stride or padded width; C == 0 */
    CTCB_ERR_INVALID_BLANK = 3,    /* blank outside [0, alphabet) */
    CTCB_ERR_INVALID_LABEL = 4,    /* a label outside [0, alphabet) */
    CTCB_ERR_INVALID_LENGTH = 5,   /* an input or label length outside its range */
    CTCB_ERR_INVALID_OPTION = 6,   /* an unknown enum value, flag or struct size */
    CTCB_ERR_SIZE_OVERFLOW = 7,    /* a size or offset does not fit in 64 bits */
    CTCB_ERR_OUT_OF_MEMORY = 8,    /* workspace could not be allocated */
    CTCB_ERR_CANCELLED = 9,        /* options.cancel was set during the call */
    CTCB_STATUS_COUNT_ = 10
} ctcb_status;

typedef enum ctcb_dtype {
    CTCB_FLOAT32 = 0,
    CTCB_FLOAT64 = 1
} ctcb_dtype;

typedef enum ctcb_input_kind {
    CTCB_INPUT_LOGITS = 0,     /* unnormalised scores; log_softmax applied inside */
    CTCB_INPUT_LOG_PROBS = 1   /* per-frame log-probabilities, used as given */
} ctcb_input_kind;

typedef enum ctcb_label_format {
    CTCB_LABELS_PADDED = 0,
    CTCB_LABELS_CONCATENATED = 1
} ctcb_label_format;

/* What an infeasible sample (see above) yields. */
typedef enum ctcb_infeasible {
    /* loss +inf; gradient NaN on frames t < input_length (the derivative of
     * an infinite loss is undefined), 0 beyond.  torch's default. */
    CTCB_INFEASIBLE_INF = 0,
    /* loss 0 and gradient 0 (torch's zero_infinity, warp-ctc, MXNet). */
    CTCB_INFEASIBLE_ZERO = 1,
    /* log-space recursion in which log(0) is the finite `log_zero` of the
     * options (chainer: -1e10, TF dense: about -706.89): a large finite loss
     * and the gradient of that finite expression. */
    CTCB_INFEASIBLE_SENTINEL = 2
} ctcb_infeasible;

/* Flags for ctcb_options.flags. */
/* Label states have no self-loop and consecutive equal labels need no blank
 * between them (TF v1 ctc_merge_repeated=False). */
#define CTCB_FLAG_NO_MERGE_REPEATED 0x1u
/* A label equal to the blank index can never be entered by a skip from two
 * states back (warp-ctc, MXNet, Theano).  Default: skip whenever
 * l'_s != l'_{s-2} (torch, TF dense, optax, chainer). */
#define CTCB_FLAG_WARP_BLANK_LABELS 0x2u
/* Compute every sample with the log-space recursion (slower; the default
 * scaled-probability recursion falls back to it by itself when needed). */
#define CTCB_FLAG_LOG_SPACE 0x4u
#define CTCB_KNOWN_FLAGS_ 0x7u

/* Options, passed by pointer.  Set struct_size = sizeof(ctcb_options) or
 * call ctcb_options_init(); fields added later go at the end, and an older
 * caller's smaller struct gets their defaults. */
typedef struct ctcb_options {
    size_t struct_size;
    int32_t blank;            /* blank index in [0, alphabet); default 0 */
    int32_t input_kind;       /* ctcb_input_kind; default CTCB_INPUT_LOGITS */
    int32_t infeasible;       /* ctcb_infeasible; default CTCB_INFEASIBLE_INF */
    int32_t num_threads;      /* 0 = every core this process may use; default 0 */
    uint32_t flags;           /* CTCB_FLAG_*; default 0 */
    double log_zero;          /* finite log(0) for CTCB_INFEASIBLE_SENTINEL; default -1e10 */
    /* Optional cancel flag (default NULL): another thread sets *cancel to a
     * non-zero value to stop the call; the engine reads it between samples
     * and every few hundred frames, and then returns CTCB_ERR_CANCELLED with
     * the outputs unspecified.  Added in 0.2; an older caller's smaller
     * struct leaves it NULL. */
    const int32_t *cancel;
} ctcb_options;

/* The problem: inputs, and where to write outputs. */
typedef struct ctcb_problem {
    size_t struct_size;              /* sizeof(ctcb_problem) */
    int32_t dtype;                   /* ctcb_dtype of activations, losses, gradient */
    int32_t label_format;            /* ctcb_label_format */
    int64_t max_time;                /* T >= 0 */
    int64_t batch;                   /* N >= 0 */
    int64_t alphabet;                /* C >= 1, blank included */
    const void *activations;         /* see the layout above */
    int64_t act_strides[3];          /* element strides of t, n, c */
    const int64_t *input_lengths;    /* N values in [0, T]; NULL = T for all */
    const int64_t *labels;           /* see the label containers above */
    int64_t label_stride;            /* padded width S >= 0 (CTCB_LABELS_PADDED) */
    int64_t label_count;             /* entries in `labels` (CTCB_LABELS_CONCATENATED):
                                        the label lengths may not add up to more */
    const int64_t *label_lengths;    /* N values >= 0 (<= S when padded);
                                        NULL = S for all (padded only) */
    void *losses;                    /* N outputs (dtype): the per-sample loss */
    void *grad;                      /* NULL = forward only; must not overlap activations */
    int64_t grad_strides[3];         /* element strides of t, n, c */
} ctcb_problem;

/* Fill `options` with the defaults; returns CTCB_OK. */
CTCB_API int ctcb_options_init(ctcb_options *options);

/* Compute the losses (and the gradient when problem->grad != NULL).
 * `options` may be NULL for the defaults.  Returns a ctcb_status. */
CTCB_API int ctcb_ctc_loss(const ctcb_problem *problem, const ctcb_options *options);

/* A static description of a status code ("invalid label", ...). */
CTCB_API const char *ctcb_status_string(int status);

/* The detail message of the last failure in the calling thread ("" if none). */
CTCB_API const char *ctcb_last_error(void);

/* CTCB_ABI_VERSION of the compiled library. */
CTCB_API int ctcb_abi_version(void);

/* "MAJOR.MINOR.PATCH" of the compiled library. */
CTCB_API const char *ctcb_version(void);

/* Bytes of working memory one worker thread needs for a problem whose
 * longest input is max_time frames and longest label max_label labels, with
 * an alphabet of C classes: the engine's memory is num_threads times this
 * (see docs/c_api.md).  Returns 0 if the size overflows. */
CTCB_API size_t ctcb_workspace_bytes(int64_t max_time, int64_t max_label, int64_t alphabet);

/* ==================================================== alignment and decoding
 *
 * Four functions over the same activations as the loss (same layout, dtype,
 * input kind, blank, lengths, labels and validation), threads over the batch
 * with the results bit-identical for any thread count:
 *
 *   ctcb_forced_align   Viterbi best path through the loss's lattice
 *   ctcb_posteriors     per-frame posterior occupancy of each class
 *   ctcb_decode_greedy  best-path (argmax) decoding
 *   ctcb_decode_beam    CTC prefix beam search without a language model
 *
 * Outputs are dense, row-major, batch first: a per-frame output of sample n
 * is out[n * max_time + t]; a per-path output of beam search is
 * out[(n * top_paths + k) * max_time + i].  Integer outputs are int64;
 * floating outputs have the dtype of the activations (computed in double).
 * Frames t >= input_lengths[n] and unused sequence positions receive
 * options.pad (int64 outputs) or 0 (floating outputs).
 *
 * A sample whose used frames hold a NaN or +inf (or, for logits, a row that
 * is all -inf) gets NaN scores/posteriors and pad everywhere else (lengths
 * 0); such a sample is not an error.
 */

/* Options of the alignment and decoding functions, passed by pointer (NULL
 * for the defaults).  Set struct_size = sizeof(ctcb_decode_options) or call
 * ctcb_decode_options_init(). */
typedef struct ctcb_decode_options {
    size_t struct_size;
    int32_t blank;          /* blank index in [0, alphabet); default 0 */
    int32_t input_kind;     /* ctcb_input_kind; default CTCB_INPUT_LOGITS */
    int32_t num_threads;    /* 0 = every core this process may use; default 0 */
    uint32_t flags;         /* CTCB_FLAG_NO_MERGE_REPEATED (lattice of forced_align
                               and posteriors), CTCB_FLAG_WARP_BLANK_LABELS
                               (posteriors); CTCB_FLAG_LOG_SPACE is accepted and
                               changes nothing (everything here is log space) */
    int32_t merge_repeated; /* greedy: 1 = merge repeated classes before dropping
                               blanks (default), 0 = keep them (TF v1) */
    int32_t beam_width;     /* beam search: >= 1; default 100 */
    int32_t top_paths;      /* beam search: in [1, beam_width]; default 1 */
    int64_t pad;            /* fill value of integer outputs; default -1 */
    const int32_t *cancel;  /* as in ctcb_options; default NULL */
} ctcb_decode_options;

/* The inputs: the fields of ctcb_problem without its outputs.  Labels are
 * read by forced_align and posteriors only (the decoders ignore them, and
 * they may then be NULL). */
typedef struct ctcb_decode_input {
    size_t struct_size;            /* sizeof(ctcb_decode_input) */
    int32_t dtype;                 /* ctcb_dtype of activations and floating outputs */
    int32_t label_format;          /* ctcb_label_format */
    int64_t max_time;              /* T >= 0 */
    int64_t batch;                 /* N >= 0 */
    int64_t alphabet;              /* C >= 1, blank included */
    const void *activations;       /* activations[t*s0 + n*s1 + c*s2] */
    int64_t act_strides[3];        /* element strides of t, n, c */
    const int64_t *input_lengths;  /* N values in [0, T]; NULL = T for all */
    const int64_t *labels;         /* as in ctcb_problem */
    int64_t label_stride;          /* padded width S (CTCB_LABELS_PADDED) */
    int64_t label_count;           /* entries of concatenated labels */
    const int64_t *label_lengths;  /* N values; NULL = S for all (padded only) */
} ctcb_decode_input;

/* Fill `options` with the defaults; returns CTCB_OK. */
CTCB_API int ctcb_decode_options_init(ctcb_decode_options *options);

/* Forced alignment: for each sample the most probable path (Viterbi, max
 * instead of sum) through the extended-label lattice of the loss
 * (blank, l1, blank, ..., lL, blank; a label state may be entered from two
 * states back when l'_s != l'_{s-2}; CTCB_FLAG_NO_MERGE_REPEATED: TF v1's
 * lattice, label states without self-loop).
 *   path        (N, T) int64, required: the class of the path at each frame
 *   path_scores (N, T) dtype, optional: y_t(path[t]), the frame's log-prob
 *               of that class (their sum is the path's log-probability)
 *   label_index (N, T) int64, optional: the position i in [0, L) of the
 *               label the path occupies at frame t, -1 on blank frames (tells
 *               repeated tokens apart for token spans)
 * Ties, in this order (torchaudio's rule, see docs/c_api.md): at each cell
 * the predecessor is the same state, then s-1, then s-2, a later one
 * winning only when strictly better; at the last frame the final blank
 * wins only when strictly better than the last label.  Only lattice cells
 * that lie on some complete path are considered, so the path is always a
 * valid alignment, even when its probability is 0 (scores -inf).
 * Errors (before any output is written): a label equal to the blank
 * (CTCB_ERR_INVALID_LABEL); a sample with fewer frames than its labels need,
 * L plus one per repeat (L with CTCB_FLAG_NO_MERGE_REPEATED):
 * CTCB_ERR_INVALID_LENGTH naming the sample. */
CTCB_API int ctcb_forced_align(const ctcb_decode_input *input, const ctcb_decode_options *options,
                               int64_t *path, void *path_scores, int64_t *label_index);

/* Posteriors: gamma_t(k), the posterior probability that the lattice is in a
 * state of class k at frame t (the occupancy of the loss gradient:
 * grad w.r.t. logits = softmax - gamma).  Written with element strides
 * post_strides (t, n, c) like the activations, dtype of the activations;
 * each used row sums to 1; rows t >= input_length are 0; an infeasible
 * sample (too few frames, or probability 0) gets NaN rows for t < T_b.
 * Labels equal to the blank follow the loss (CTCB_FLAG_WARP_BLANK_LABELS). */
CTCB_API int ctcb_posteriors(const ctcb_decode_input *input, const ctcb_decode_options *options,
                             void *posteriors, const int64_t post_strides[3]);

/* Greedy decoding: per frame the class with the largest activation (ties:
 * the smallest class index), then, with options.merge_repeated, runs of
 * equal classes merged, then blanks dropped.
 *   sequences (N, T) int64, required: the decoded labels, then pad
 *   lengths   (N) int64, required
 *   scores    (N) dtype, optional: sum over used frames of the log-prob of
 *             the chosen class, i.e. the log-probability of the best path
 *             (<= 0 for logits).  TF returns minus the sum of the raw
 *             per-frame maxima: pass TF's logits as CTCB_INPUT_LOG_PROBS and
 *             negate. */
CTCB_API int ctcb_decode_greedy(const ctcb_decode_input *input, const ctcb_decode_options *options,
                                int64_t *sequences, int64_t *lengths, void *scores);

/* Prefix beam search: per prefix the log-probabilities of ending in a blank
 * and in a label, equal prefixes merged, the beam cut to the beam_width
 * best prefixes after every frame (prefixes of probability 0 dropped).
 *   sequences (N, K, T) int64, required (K = top_paths)
 *   lengths   (N, K) int64, required
 *   scores    (N, K) dtype, optional: log of the prefix probability (sum over
 *             every path of the beam that collapses to it)
 * Order: score descending, ties by the label sequences in lexicographic
 * order (a prefix before its extensions).  Paths k beyond the prefixes the
 * beam holds get length 0, pad and score -inf. */
CTCB_API int ctcb_decode_beam(const ctcb_decode_input *input, const ctcb_decode_options *options,
                              int64_t *sequences, int64_t *lengths, void *scores);

#ifdef __cplusplus
}
#endif

#endif /* CTCBRIDGE_H */
