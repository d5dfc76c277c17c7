/*
 * ctcb_decode.c - forced alignment (Viterbi), posteriors, greedy decoding and
 * prefix beam search, over the same inputs and lattice as the loss.
 *
 * Everything is computed per sample in double and in log space: these are
 * not training-loop hot paths, and the log domain makes -inf log-probs,
 * ties and maxima exact.  The float type only matters when activations are
 * read (converted exactly to double) and when floating outputs are written.
 *
 * Structure: options and validation (mirroring ctcb_engine.c: same statuses,
 * same messages), one snapshot of the integer inputs (read once with atomic
 * loads, validated, then the only copy the workers use), a worker pool with
 * dynamic sharing of samples (each sample is computed by one thread with the
 * same code, so results do not depend on the thread count), and one
 * per-sample routine per function.
 *
 */
#include "ctcb_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often (frames) the per-sample loops look at the cancel flag. */
#define DEC_CANCEL_PERIOD 512

/* Jobs below this many cells (frames x classes, or lattice states) run on one
 * thread unless told otherwise (see run()). */
#define DEC_SMALL_JOB (1u << 20)

/* --------------------------------------------------------------- options */

CTCB_API int ctcb_decode_options_init(ctcb_decode_options *options)
{
    if (!options)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "options is NULL");
    memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->blank = 0;
    options->input_kind = CTCB_INPUT_LOGITS;
    options->num_threads = 0;
    options->flags = 0;
    options->merge_repeated = 1;
    options->beam_width = 100;
    options->top_paths = 1;
    options->pad = -1;
    options->cancel = NULL;
    return CTCB_OK;
}

enum dec_kind { DEC_ALIGN, DEC_POSTERIORS, DEC_GREEDY, DEC_BEAM };

static int read_options(const ctcb_decode_options *given, ctcb_decode_options *out, int kind)
{
    ctcb_decode_options_init(out);
    if (given) {
        /* older, smaller structs keep the defaults of the fields they lack */
        const size_t minimum = offsetof(ctcb_decode_options, blank) + sizeof given->blank;
        if (given->struct_size < minimum || given->struct_size > sizeof *out)
            return ctcb_fail(CTCB_ERR_INVALID_OPTION,
                         "options.struct_size = %zu is not a known size (expected %zu..%zu)",
                         given->struct_size, minimum, sizeof *out);
        memcpy(out, given, given->struct_size);
        out->struct_size = sizeof *out;
    }
    if (out->input_kind != CTCB_INPUT_LOGITS && out->input_kind != CTCB_INPUT_LOG_PROBS)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.input_kind = %d is not a ctcb_input_kind",
                     (int)out->input_kind);
    if (out->flags & ~CTCB_KNOWN_FLAGS_)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.flags = 0x%x has unknown bits 0x%x",
                     out->flags, out->flags & ~CTCB_KNOWN_FLAGS_);
    if (out->num_threads < 0)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.num_threads = %d is negative",
                     (int)out->num_threads);
    if (kind == DEC_GREEDY && out->merge_repeated != 0 && out->merge_repeated != 1)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.merge_repeated = %d is not 0 or 1",
                     (int)out->merge_repeated);
    if (kind == DEC_BEAM) {
        if (out->beam_width < 1)
            return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.beam_width = %d must be at least 1",
                         (int)out->beam_width);
        if (out->top_paths < 1 || out->top_paths > out->beam_width)
            return ctcb_fail(CTCB_ERR_INVALID_OPTION,
                         "options.top_paths = %d is outside [1, beam_width = %d]",
                         (int)out->top_paths, (int)out->beam_width);
    }
    return CTCB_OK;
}

/* ------------------------------------------------------------ validation */

/* One call, validated; read-only for the workers. */
typedef struct dec_job {
    int kind;
    const ctcb_decode_input *in;
    ctcb_decode_options opt;
    ctcb_snapshot snap;     /* the integer inputs, read once (ctcb_internal.h) */
    int64_t *input_lengths; /* views into snap: N values in [0, T] */
    int64_t *label_lengths; /* N (forced_align, posteriors; 0 for the decoders) */
    int64_t *label_offsets; /* N: first label of each sample in `labels` */
    int64_t *labels;        /* every sample's labels, concatenated, in [0, C) */
    int64_t max_input, max_label;
    /* outputs */
    int64_t *ints_out;      /* path / sequences */
    int64_t *ints_out2;     /* label_index / lengths */
    void *reals_out;        /* path_scores / posteriors / scores */
    int64_t post_strides[3];
} dec_job;

static void job_free(dec_job *job) { ctcb_snapshot_free(&job->snap); }

/* Sizes, dtype, blank, strides: everything that reads no caller array. */
static int validate_input(const ctcb_decode_input *in, const dec_job *job)
{
    const int64_t T = in->max_time, N = in->batch, C = in->alphabet;
    const int uses_labels = job->kind == DEC_ALIGN || job->kind == DEC_POSTERIORS;
    if (T < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "max_time = %lld is negative", (long long)T);
    if (N < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "batch = %lld is negative", (long long)N);
    if (C < 1)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "alphabet = %lld must be at least 1 (the blank)",
                     (long long)C);
    if (job->opt.blank < 0 || job->opt.blank >= C)
        return ctcb_fail(CTCB_ERR_INVALID_BLANK, "blank = %d is outside [0, alphabet = %lld)",
                     (int)job->opt.blank, (long long)C);
    if (in->dtype != CTCB_FLOAT32 && in->dtype != CTCB_FLOAT64)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "dtype = %d is not a ctcb_dtype", (int)in->dtype);
    if (uses_labels && in->label_format != CTCB_LABELS_PADDED &&
        in->label_format != CTCB_LABELS_CONCATENATED)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "label_format = %d is not a ctcb_label_format",
                     (int)in->label_format);
    uint64_t elements, out_elements;
    if (__builtin_mul_overflow((uint64_t)T, (uint64_t)N, &elements) ||
        __builtin_mul_overflow(elements, (uint64_t)C, &elements) || elements > (uint64_t)INT64_MAX)
        return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW, "T * N * C = %lld * %lld * %lld overflows",
                     (long long)T, (long long)N, (long long)C);
    /* beam search writes N * K * T sequence entries */
    if (__builtin_mul_overflow((uint64_t)T, (uint64_t)N, &out_elements) ||
        (job->kind == DEC_BEAM &&
         __builtin_mul_overflow(out_elements, (uint64_t)job->opt.top_paths, &out_elements)) ||
        out_elements > (uint64_t)INT64_MAX)
        return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW, "the outputs of T = %lld, N = %lld overflow",
                     (long long)T, (long long)N);
    if (N == 0)
        return CTCB_OK;
    if (elements > 0 && !in->activations)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "activations is NULL");
    int status = ctcb_check_strides("act_strides", in->act_strides, T, N, C);
    if (status)
        return status;
    if (job->kind == DEC_POSTERIORS &&
        (status = ctcb_check_strides("post_strides", job->post_strides, T, N, C)))
        return status;
    if (!uses_labels)
        return CTCB_OK;
    if (in->label_format == CTCB_LABELS_PADDED && in->label_stride < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "label_stride = %lld is negative",
                     (long long)in->label_stride);
    if (in->label_format == CTCB_LABELS_CONCATENATED && !in->label_lengths)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "label_lengths is NULL with concatenated labels");
    if (in->label_format == CTCB_LABELS_CONCATENATED && in->label_count < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "label_count = %lld is negative",
                     (long long)in->label_count);
    return CTCB_OK;
}

/* Frames the shortest alignment of `lab` needs: L, plus one per label that
 * must be preceded by a blank (a repeat, unless TF v1's no-merge lattice). */
static int64_t required_frames(const int64_t *lab, int64_t L, int no_merge)
{
    int64_t required = L;
    if (!no_merge)
        for (int64_t i = 1; i < L; ++i)
            required += lab[i] == lab[i - 1];
    return required;
}

/* Read every integer input once (ctcb_snapshot_take), then the aligner's own
 * rules on the copies.  Nothing after this reads the caller's integer arrays. */
static int take_snapshot(dec_job *job)
{
    const ctcb_decode_input *in = job->in;
    const int uses_labels = job->kind == DEC_ALIGN || job->kind == DEC_POSTERIORS;
    const ctcb_int_inputs ints = {in->max_time, in->batch, in->alphabet, in->label_format,
                                  in->input_lengths, in->labels, in->label_stride,
                                  in->label_count, in->label_lengths, uses_labels};
    int status = ctcb_snapshot_take(&ints, &job->snap);
    if (status)
        return status;
    job->input_lengths = job->snap.input_lengths;
    job->label_lengths = job->snap.label_lengths;
    job->label_offsets = job->snap.label_offsets;
    job->labels = job->snap.labels;
    job->max_input = job->snap.max_input;
    job->max_label = job->snap.max_label;
    if (job->kind != DEC_ALIGN)
        return CTCB_OK;
    const int no_merge = (job->opt.flags & CTCB_FLAG_NO_MERGE_REPEATED) != 0;
    for (int64_t n = 0; n < in->batch; ++n) {
        const int64_t *lab = job->labels + job->label_offsets[n];
        const int64_t L = job->label_lengths[n];
        for (int64_t i = 0; i < L; ++i)
            if (lab[i] == job->opt.blank)
                return ctcb_fail(CTCB_ERR_INVALID_LABEL,
                                 "label %lld of sample %lld is %lld, the blank index (forced "
                                 "alignment needs labels other than the blank)",
                                 (long long)i, (long long)n, (long long)lab[i]);
        const int64_t need = required_frames(lab, L, no_merge);
        if (job->input_lengths[n] < need)
            return ctcb_fail(CTCB_ERR_INVALID_LENGTH,
                             "sample %lld cannot be aligned: input_lengths[%lld] = %lld frames, "
                             "but its %lld labels need at least %lld (one more per repeat)",
                             (long long)n, (long long)n, (long long)job->input_lengths[n],
                             (long long)L, (long long)need);
    }
    return CTCB_OK;
}

/* ---------------------------------------------------------- frame access */

/* The frames are read in place, through the caller's strides: one pass over
 * a row finds its maximum, the first index holding it and whether it holds
 * a NaN or +inf; logits take a second pass (over the row, now in cache) for
 * log sum exp.  Nothing copies a whole row unless the function needs every
 * class of it (beam search); the aligner keeps only the classes of the
 * sample's lattice (at most L + 1 of them) per frame.  The scans are
 * compiled for AVX2 too (CTCB_CLONES, ctcb_internal.h), picked at load
 * time; each row is computed by one thread, so no result depends on the
 * thread count. */

/* A contiguous row's maximum is found first (vectorised), then the first
 * block of this many values holding it, then the first index holding it
 * there (ties: the smallest index).  Shorter rows take one scalar pass. */
#define DEC_BLOCK 64

typedef struct dec_scan {
    double max;     /* the largest value (exact); -inf for an empty or all -inf row */
    int64_t argmax; /* the first index holding it (0 when none does) */
    int bad;        /* holds a NaN or +inf */
} dec_scan;

/* Written once for float and double (REAL), as the kernels are. */
#define DEC_ROW_FUNCTIONS(REAL, SFX)                                                             \
    static CTCB_CLONES dec_scan scan_row_##SFX(const REAL *x, int64_t C, int64_t sc)              \
    {                                                                                            \
        REAL m = -(REAL)INFINITY;                                                                \
        int bad = 0;                                                                             \
        int64_t first = 0;                                                                       \
        if (sc == 1 && C > DEC_BLOCK) {                                                         \
            /* the order of a max is free; NaN (flagged, results NaN) may land anywhere */      \
            _Pragma("omp simd reduction(max : m) reduction(| : bad)")                            \
            for (int64_t c = 0; c < C; ++c) {                                                    \
                const REAL v = x[c];                                                             \
                m = v > m ? v : m;                                                               \
                bad |= !(v < (REAL)INFINITY); /* NaN or +inf */                                  \
            }                                                                                    \
            /* the first block holding m (the row is in cache now), then its first index */     \
            for (int64_t b0 = 0; b0 < C && m > -(REAL)INFINITY; b0 += DEC_BLOCK) {               \
                const int64_t b1 = b0 + DEC_BLOCK < C ? b0 + DEC_BLOCK : C;                      \
                int hit = 0;                                                                     \
                _Pragma("omp simd reduction(| : hit)")                                           \
                for (int64_t c = b0; c < b1; ++c)                                                \
                    hit |= x[c] == m;                                                            \
                if (hit) {                                                                       \
                    for (first = b0; x[first] != m; ++first)                                     \
                        ;                                                                        \
                    break;                                                                       \
                }                                                                                \
            }                                                                                    \
        } else {                                                                                 \
            for (int64_t c = 0; c < C; ++c) { /* a short or strided row: one pass */            \
                const REAL v = x[c * sc];                                                        \
                bad |= !(v < (REAL)INFINITY);                                                    \
                if (v > m) {                                                                     \
                    m = v;                                                                       \
                    first = c;                                                                   \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        dec_scan r = {(double)m, first, bad};                                                    \
        return r;                                                                                \
    }                                                                                            \
    /* log sum_c exp(x_c - m), m the row's (finite) maximum */                                   \
    static CTCB_CLONES double log_sum_exp_##SFX(const REAL *x, int64_t C, int64_t sc, double m)   \
    {                                                                                            \
        double sum = 0.0;                                                                        \
        if (sc == 1) {                                                                           \
            _Pragma("omp simd reduction(+ : sum)") for (int64_t c = 0; c < C; ++c) sum +=        \
                ctcb_exp_f64((double)x[c] - m);                                                  \
        } else {                                                                                 \
            for (int64_t c = 0; c < C; ++c)                                                      \
                sum += ctcb_exp_f64((double)x[c * sc] - m);                                      \
        }                                                                                        \
        return log(sum);                                                                         \
    }

DEC_ROW_FUNCTIONS(float, f32)
DEC_ROW_FUNCTIONS(double, f64)
#undef DEC_ROW_FUNCTIONS

/* Row t of sample n: where it lies, how to read one class of it, and its
 * normalisation.  A class's log-probability is x_c (log-probs) or
 * (x_c - max) - lsum (logits: the two parts kept apart so that a common
 * offset of the logits costs nothing). */
typedef struct dec_row {
    const void *x;
    int64_t sc;
    dec_scan scan;
    double lsum; /* 0 for log-probs */
    int bad;     /* a NaN or +inf, or (logits) an all -inf row: the sample's results are NaN */
} dec_row;

static dec_row read_row(const dec_job *job, int64_t n, int64_t t)
{
    const ctcb_decode_input *in = job->in;
    const int64_t C = in->alphabet, sc = in->act_strides[2];
    const int64_t base = t * in->act_strides[0] + n * in->act_strides[1];
    const int f32 = in->dtype == CTCB_FLOAT32;
    dec_row r;
    r.sc = sc;
    r.x = f32 ? (const void *)((const float *)in->activations + base)
              : (const void *)((const double *)in->activations + base);
    r.scan = f32 ? scan_row_f32((const float *)r.x, C, sc) : scan_row_f64((const double *)r.x, C, sc);
    r.lsum = 0.0;
    r.bad = r.scan.bad;
    if (job->opt.input_kind == CTCB_INPUT_LOGITS && !r.bad) {
        r.bad = r.scan.max == -INFINITY;
        if (!r.bad)
            r.lsum = f32 ? log_sum_exp_f32((const float *)r.x, C, sc, r.scan.max)
                         : log_sum_exp_f64((const double *)r.x, C, sc, r.scan.max);
    }
    return r;
}

/* The activation of class c, exactly as double. */
static inline double row_value(const dec_job *job, const dec_row *r, int64_t c)
{
    return job->in->dtype == CTCB_FLOAT32 ? (double)((const float *)r->x)[c * r->sc]
                                          : ((const double *)r->x)[c * r->sc];
}

/* The log-probability of class c. */
static inline double row_log_prob(const dec_job *job, const dec_row *r, int64_t c)
{
    const double v = row_value(job, r, c);
    return job->opt.input_kind == CTCB_INPUT_LOGITS ? (v - r->scan.max) - r->lsum : v;
}

/* The log-probabilities of every class of a row into y (C). */
static void row_log_probs(const dec_job *job, const dec_row *r, double *y)
{
    const int64_t C = job->in->alphabet, sc = r->sc;
    const double m = r->scan.max, lsum = r->lsum;
    const int logits = job->opt.input_kind == CTCB_INPUT_LOGITS;
    if (job->in->dtype == CTCB_FLOAT32) {
        const float *x = (const float *)r->x;
        for (int64_t c = 0; c < C; ++c)
            y[c] = (double)x[c * sc];
    } else {
        const double *x = (const double *)r->x;
        for (int64_t c = 0; c < C; ++c)
            y[c] = x[c * sc];
    }
    if (logits)
        for (int64_t c = 0; c < C; ++c)
            y[c] = (y[c] - m) - lsum;
}

/* The log-probabilities of the J classes cls[0..J) at each of sample n's Tb
 * frames into em (Tb x J).  Logits need the whole row (its log sum exp), and
 * so does `whole_rows` (posteriors: a NaN anywhere in a used row makes the
 * sample NaN); the aligner on log-probabilities reads only these J classes
 * of each row (a few of a large vocabulary's thousands): a NaN or +inf
 * among them makes the sample NaN, one elsewhere cannot change its path.
 * Returns 1 for a NaN sample (see dec_row), -1 when cancelled, else 0. */
static int load_emissions(const dec_job *job, int64_t n, int64_t Tb, const int64_t *cls,
                          int64_t J, int whole_rows, double *em)
{
    const ctcb_decode_input *in = job->in;
    const int gather_only = !whole_rows && job->opt.input_kind == CTCB_INPUT_LOG_PROBS;
    for (int64_t t = 0; t < Tb; ++t) {
        if (!(t % DEC_CANCEL_PERIOD) && job->opt.cancel &&
            __atomic_load_n(job->opt.cancel, __ATOMIC_RELAXED))
            return -1;
        double *e = em + t * J;
        if (gather_only) {
            dec_row r;
            r.sc = in->act_strides[2];
            const int64_t base = t * in->act_strides[0] + n * in->act_strides[1];
            r.x = in->dtype == CTCB_FLOAT32
                      ? (const void *)((const float *)in->activations + base)
                      : (const void *)((const double *)in->activations + base);
            int bad = 0;
            for (int64_t j = 0; j < J; ++j) {
                e[j] = row_value(job, &r, cls[j]);
                bad |= !(e[j] < INFINITY);
            }
            if (bad)
                return 1;
            continue;
        }
        const dec_row r = read_row(job, n, t);
        if (r.bad)
            return 1;
        for (int64_t j = 0; j < J; ++j)
            e[j] = row_log_prob(job, &r, cls[j]);
    }
    return 0;
}

static inline void store_real(void *base, int32_t dtype, int64_t index, double v)
{
    if (dtype == CTCB_FLOAT32)
        ((float *)base)[index] = (float)v;
    else
        ((double *)base)[index] = v;
}

static inline int cancelled(const dec_job *job)
{
    return job->opt.cancel && __atomic_load_n(job->opt.cancel, __ATOMIC_RELAXED) != 0;
}

/* log(exp(a) + exp(b)), exact for -inf.  A -inf term returns the other one
 * as it is (what the formula gives too, b + log(0 + 1)), without the three
 * libm calls: most beam candidates have one. */
static inline double log_add(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    const double m = a > b ? a : b;
    return m + log(exp(a - m) + exp(b - m));
}

/* ---------------------------------------------------------- workspace */

/* Working memory of one worker, sized for the job's longest sample; each
 * function uses its own subset (NULL otherwise). */
typedef struct dec_ws {
    double *lp;        /* align, posteriors: T x J, the log-probabilities of the classes
                          cls[0..J); beam search: one row (C) */
    double *score;     /* Viterbi: 2 x S scores; posteriors: T x S forward log variables */
    signed char *back; /* T x S: Viterbi back-pointers (0 stay, 1 from s-1, 2 from s-2) */
    double *beta;      /* 2 x S: backward log variables */
    double *acc;       /* C: occupancy per class */
    int64_t *ext;      /* S: extended labels */
    int64_t *cls;      /* J = min(L + 1, C): the classes lp holds: the blank, then the
                          labels; or all C classes when there are no more */
    int64_t *eix;      /* S: the column of lp holding state s's class */
    int64_t *first;    /* S: earliest frame a state can be occupied */
    int64_t *dist;     /* S: fewest frames from a state to the end */
    unsigned char *stay, *skip; /* S: transitions of each state */
    /* beam search */
    int64_t *node_parent, *node_label, *node_depth, *node_child, *node_sibling, *node_slot;
    int64_t *node_jump; /* trie: skew-binary jump pointer (see prefix_cmp) */
    int64_t node_cap;
    struct dec_cand *cand;  /* B * C candidates */
    int64_t *top;           /* B: selected candidate indices, best first */
    int64_t *ext_target;    /* B * C: candidate index of an existing prefix */
    int64_t *beam_node;     /* B */
    double *beam_pb, *beam_pnb; /* B */
} dec_ws;

typedef struct dec_cand {
    int64_t node;  /* the prefix's trie node; or its parent when label >= 0 */
    int64_t label; /* -1: the prefix is `node`; else `node` extended by label */
    double pb, pnb, total;
} dec_cand;

static void ws_free(dec_ws *ws)
{
    void **all[] = {(void **)&ws->lp, (void **)&ws->score, (void **)&ws->back,
                    (void **)&ws->beta, (void **)&ws->acc, (void **)&ws->ext,
                    (void **)&ws->cls, (void **)&ws->eix,
                    (void **)&ws->first, (void **)&ws->dist, (void **)&ws->stay,
                    (void **)&ws->skip, (void **)&ws->node_parent, (void **)&ws->node_label,
                    (void **)&ws->node_depth, (void **)&ws->node_child,
                    (void **)&ws->node_sibling, (void **)&ws->node_slot, (void **)&ws->node_jump, (void **)&ws->cand,
                    (void **)&ws->top, (void **)&ws->ext_target, (void **)&ws->beam_node,
                    (void **)&ws->beam_pb, (void **)&ws->beam_pnb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

/* malloc(count * size) with the product checked; count 0 allocates 1 element. */
static void *alloc_array(uint64_t count, size_t size, int *ok)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size) {
        *ok = 0;
        return NULL;
    }
    void *p = malloc((size_t)count * size);
    if (!p)
        *ok = 0;
    return p;
}

static int ws_alloc(dec_ws *ws, const dec_job *job)
{
    memset(ws, 0, sizeof *ws);
    const uint64_t T = (uint64_t)job->max_input, C = (uint64_t)job->in->alphabet;
    const uint64_t S = 2u * (uint64_t)job->max_label + 1u;
    const uint64_t J = (uint64_t)job->max_label + 1u < C ? (uint64_t)job->max_label + 1u : C;
    uint64_t TJ, TS;
    if (__builtin_mul_overflow(T, J, &TJ) || __builtin_mul_overflow(T, S, &TS))
        return CTCB_ERR_SIZE_OVERFLOW;
    int ok = 1;
    if (job->kind == DEC_ALIGN || job->kind == DEC_POSTERIORS)
        ws->lp = (double *)alloc_array(TJ, sizeof(double), &ok);
    else if (job->kind == DEC_BEAM)
        ws->lp = (double *)alloc_array(C, sizeof(double), &ok); /* one row */
    if (job->kind == DEC_ALIGN || job->kind == DEC_POSTERIORS) {
        /* Viterbi keeps two rows of scores (the back-pointers trace the path),
         * the forward-backward every frame's forward variables */
        ws->score = (double *)alloc_array(job->kind == DEC_ALIGN ? 2u * S : TS, sizeof(double),
                                          &ok);
        ws->ext = (int64_t *)alloc_array(S, sizeof(int64_t), &ok);
        ws->cls = (int64_t *)alloc_array(J, sizeof(int64_t), &ok);
        ws->eix = (int64_t *)alloc_array(S, sizeof(int64_t), &ok);
        ws->stay = (unsigned char *)alloc_array(S, 1, &ok);
        ws->skip = (unsigned char *)alloc_array(S, 1, &ok);
    }
    if (job->kind == DEC_ALIGN) {
        ws->back = (signed char *)alloc_array(TS, 1, &ok);
        ws->first = (int64_t *)alloc_array(S, sizeof(int64_t), &ok);
        ws->dist = (int64_t *)alloc_array(S, sizeof(int64_t), &ok);
    }
    if (job->kind == DEC_POSTERIORS) {
        ws->beta = (double *)alloc_array(2u * S, sizeof(double), &ok);
        ws->acc = (double *)alloc_array(C, sizeof(double), &ok);
    }
    if (job->kind == DEC_BEAM) {
        const uint64_t B = (uint64_t)job->opt.beam_width;
        uint64_t BC, nodes;
        if (__builtin_mul_overflow(B, C, &BC) || __builtin_mul_overflow(T, B, &nodes) ||
            __builtin_add_overflow(nodes, 1u, &nodes) || nodes > (uint64_t)INT64_MAX) {
            ws_free(ws);
            return CTCB_ERR_SIZE_OVERFLOW;
        }
        ws->node_cap = (int64_t)nodes;
        ws->node_parent = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_label = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_depth = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_child = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_sibling = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_slot = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->node_jump = (int64_t *)alloc_array(nodes, sizeof(int64_t), &ok);
        ws->cand = (dec_cand *)alloc_array(BC, sizeof(dec_cand), &ok);
        ws->ext_target = (int64_t *)alloc_array(BC, sizeof(int64_t), &ok);
        ws->top = (int64_t *)alloc_array(B, sizeof(int64_t), &ok);
        ws->beam_node = (int64_t *)alloc_array(B, sizeof(int64_t), &ok);
        ws->beam_pb = (double *)alloc_array(B, sizeof(double), &ok);
        ws->beam_pnb = (double *)alloc_array(B, sizeof(double), &ok);
    }
    if (!ok) {
        ws_free(ws);
        return CTCB_ERR_OUT_OF_MEMORY;
    }
    return CTCB_OK;
}

/* ------------------------------------------------------------- lattice */

/* The extended label sequence of sample n and its transitions, as in the
 * loss: label states stay unless no-merge; a label state may be entered from
 * s - 2 when l'_s != l'_{s-2} (always with no-merge), never when it equals
 * the blank under CTCB_FLAG_WARP_BLANK_LABELS; the classes the lattice reads
 * (cls, column eix[s] for state s) and their count in *J.  Returns S. */
static int64_t build_lattice(const dec_job *job, dec_ws *ws, int64_t n, int64_t *J)
{
    const int64_t L = job->label_lengths[n];
    const int64_t *lab = job->labels + job->label_offsets[n];
    const int64_t S = 2 * L + 1, blank = job->opt.blank;
    const int no_merge = (job->opt.flags & CTCB_FLAG_NO_MERGE_REPEATED) != 0;
    const int warp = (job->opt.flags & CTCB_FLAG_WARP_BLANK_LABELS) != 0;
    const int64_t C = job->in->alphabet;
    /* a row of a small alphabet is copied whole, a large one's classes gathered */
    const int whole = C <= L + 1;
    if (whole)
        for (int64_t c = 0; c < C; ++c)
            ws->cls[c] = c;
    else {
        ws->cls[0] = blank;
        for (int64_t i = 0; i < L; ++i)
            ws->cls[i + 1] = lab[i];
    }
    for (int64_t s = 0; s < S; ++s) {
        const int is_label = s & 1;
        ws->ext[s] = is_label ? lab[s / 2] : blank;
        ws->eix[s] = whole ? ws->ext[s] : is_label ? s / 2 + 1 : 0;
        ws->stay[s] = !(is_label && no_merge);
        int sk = 0;
        if (is_label && s >= 3) {
            sk = no_merge || ws->ext[s] != ws->ext[s - 2];
            if (warp && ws->ext[s] == blank)
                sk = 0;
        }
        ws->skip[s] = (unsigned char)sk;
    }
    *J = whole ? C : L + 1;
    return S;
}

/* --------------------------------------------------- forced alignment */

static void align_fill_pad(const dec_job *job, int64_t n, int64_t t0, double score)
{
    const int64_t T = job->in->max_time;
    for (int64_t t = t0; t < T; ++t) {
        job->ints_out[n * T + t] = job->opt.pad;
        if (job->ints_out2)
            job->ints_out2[n * T + t] = job->opt.pad;
        if (job->reals_out)
            store_real(job->reals_out, job->in->dtype, n * T + t, score);
    }
}

/* Viterbi over the lattice, restricted to the cells (t, s) that lie on a
 * complete path: first[s] <= t <= Tb - 1 - dist[s].  Inside that window
 * every cell has a predecessor in the window, so the back-pointers always
 * trace a valid alignment, even through cells of probability 0. */
static int align_sample(const dec_job *job, dec_ws *ws, int64_t n)
{
    const int64_t T = job->in->max_time;
    const int64_t Tb = job->input_lengths[n];
    int64_t J;
    const int64_t S = build_lattice(job, ws, n, &J);
    int status = load_emissions(job, n, Tb, ws->cls, J, 0, ws->lp);
    if (status < 0)
        return -1;
    if (status > 0 || Tb == 0) {
        /* NaN sample: pad, NaN scores on the used frames */
        align_fill_pad(job, n, 0, 0.0);
        if (job->reals_out)
            for (int64_t t = 0; t < Tb; ++t)
                store_real(job->reals_out, job->in->dtype, n * T + t, NAN);
        return 0;
    }
    const int64_t *ext = ws->ext, *eix = ws->eix;
    int64_t *first = ws->first, *dist = ws->dist;
    for (int64_t s = 0; s < S; ++s) {
        if (s < 2)
            first[s] = 0;
        else {
            first[s] = first[s - 1] + 1;
            if (ws->skip[s] && first[s - 2] + 1 < first[s])
                first[s] = first[s - 2] + 1;
        }
    }
    for (int64_t s = S - 1; s >= 0; --s) {
        if (s >= S - 2)
            dist[s] = 0;
        else {
            dist[s] = dist[s + 1] + 1;
            if (ws->skip[s + 2] && dist[s + 2] + 1 < dist[s])
                dist[s] = dist[s + 2] + 1;
        }
    }
#define VALID(t, s) ((s) >= 0 && first[s] <= (t) && (t) <= Tb - 1 - dist[s])
    double *v = ws->score; /* two rows: frame t's scores overwrite frame t - 2's */
    signed char *back = ws->back;
    for (int64_t s = 0; s < S; ++s)
        v[s] = VALID(0, s) ? ws->lp[eix[s]] : -INFINITY;
    /* first[] never decreases with s and dist[] never increases (each is the
     * smaller of its neighbours' plus one), so the window of frame t is the
     * range [lo, hi]: hi the last state with first <= t, lo the first with
     * dist <= Tb - 1 - t; both move forward with t.  Inside it, the states
     * whose three predecessors all lie in the previous window need no
     * window test. */
    int64_t lo = 0, hi = -1;
    while (hi + 1 < S && first[hi + 1] <= 0)
        ++hi;
    while (lo < S && dist[lo] > Tb - 1)
        ++lo;
    for (int64_t t = 1; t < Tb; ++t) {
        if (!(t % DEC_CANCEL_PERIOD) && cancelled(job))
            return -1;
        const int64_t plo = lo, phi = hi; /* the window of frame t - 1 */
        while (hi + 1 < S && first[hi + 1] <= t)
            ++hi;
        while (lo < S && dist[lo] > Tb - 1 - t)
            ++lo;
        const double *vp = v + ((t - 1) & 1) * S;
        const double *y = ws->lp + t * J;
        double *vt = v + (t & 1) * S;
        signed char *bt = back + t * S;
        const int64_t in_lo = plo + 2 > lo ? plo + 2 : lo, in_hi = phi < hi ? phi : hi;
        for (int64_t s = lo; s <= hi; ++s) {
            if (s == in_lo && in_lo <= in_hi) {
                /* the interior: stay (unless TF v1's lattice), s-1, s-2 (a skip) */
                const unsigned char *stay = ws->stay, *skip = ws->skip;
                for (; s <= in_hi; ++s) {
                    double best = stay[s] ? vp[s] : vp[s - 1];
                    signed char from = stay[s] ? 0 : 1;
                    if (vp[s - 1] > best) {
                        best = vp[s - 1];
                        from = 1;
                    }
                    if (skip[s] && vp[s - 2] > best) {
                        best = vp[s - 2];
                        from = 2;
                    }
                    vt[s] = best + y[eix[s]];
                    bt[s] = from;
                }
                if (s > hi)
                    break;
            }
            /* the window's edges: stay, then s-1, then s-2, each when it
             * lies in the previous window; the first of them, then a later
             * one only when strictly better */
            int found = 0;
            double best = -INFINITY;
            signed char from = 0;
            if (ws->stay[s] && s >= plo && s <= phi) {
                best = vp[s];
                found = 1;
            }
            if (s - 1 >= plo && s - 1 <= phi && (!found || vp[s - 1] > best)) {
                best = vp[s - 1];
                from = 1;
                found = 1;
            }
            if (ws->skip[s] && s - 2 >= plo && s - 2 <= phi && (!found || vp[s - 2] > best)) {
                best = vp[s - 2];
                from = 2;
            }
            /* some predecessor always lies in the window (see above) */
            vt[s] = best + y[eix[s]];
            bt[s] = from;
        }
    }
    /* the last frame: the final blank only when strictly better than the last label */
    const double *vl = v + ((Tb - 1) & 1) * S;
    int64_t s = S - 1;
    if (S > 1 && VALID(Tb - 1, S - 2) && !(VALID(Tb - 1, S - 1) && vl[S - 1] > vl[S - 2]))
        s = S - 2;
#undef VALID
    for (int64_t t = Tb - 1; t >= 0; --t) {
        const int64_t k = ext[s];
        job->ints_out[n * T + t] = k;
        if (job->ints_out2)
            job->ints_out2[n * T + t] = (s & 1) ? s / 2 : -1;
        if (job->reals_out)
            store_real(job->reals_out, job->in->dtype, n * T + t, ws->lp[t * J + eix[s]]);
        if (t > 0)
            s -= back[t * S + s];
    }
    align_fill_pad(job, n, Tb, 0.0);
    return 0;
}

/* --------------------------------------------------------- posteriors */

static double lse3(double x, double y, double z)
{
    double m = x > y ? x : y;
    m = m > z ? m : z;
    if (m == -INFINITY)
        return -INFINITY;
    return m + log(exp(x - m) + exp(y - m) + exp(z - m));
}

static void post_fill(const dec_job *job, int64_t n, int64_t t0, int64_t t1, double value)
{
    const ctcb_decode_input *in = job->in;
    const int64_t *ps = job->post_strides;
    for (int64_t t = t0; t < t1; ++t)
        for (int64_t c = 0; c < in->alphabet; ++c)
            store_real(job->reals_out, in->dtype, t * ps[0] + n * ps[1] + c * ps[2], value);
}

/* Log-space forward-backward; the occupancies of each frame are normalised
 * by their own sum (as the loss's log-space path does), so every used row
 * is a distribution even where alpha + beta - log P would cancel badly. */
static int posteriors_sample(const dec_job *job, dec_ws *ws, int64_t n)
{
    const ctcb_decode_input *in = job->in;
    const int64_t C = in->alphabet, Tb = job->input_lengths[n];
    const int64_t *ps = job->post_strides;
    int64_t J;
    const int64_t S = build_lattice(job, ws, n, &J);
    int status = load_emissions(job, n, Tb, ws->cls, J, 1, ws->lp);
    if (status < 0)
        return -1;
    post_fill(job, n, Tb, in->max_time, 0.0);
    if (status > 0) {
        post_fill(job, n, 0, Tb, NAN);
        return 0;
    }
    if (Tb == 0)
        return 0;
    const int64_t L = job->label_lengths[n];
    /* frames the shortest alignment needs: as in the loss, one per label
     * plus one per label state that cannot be entered by a skip (a repeat,
     * or a blank-valued label under the warp rule) */
    int64_t required = L;
    for (int64_t s = 3; s < S; s += 2)
        required += !ws->skip[s];
    if (Tb < required) {
        post_fill(job, n, 0, Tb, NAN);
        return 0;
    }
    const int64_t *ext = ws->ext, *eix = ws->eix;
    const double NEG = -INFINITY;
    double *la = ws->score; /* Tb x S */
    for (int64_t s = 0; s < S; ++s)
        la[s] = s < 2 ? ws->lp[eix[s]] : NEG;
    for (int64_t t = 1; t < Tb; ++t) {
        if (!(t % DEC_CANCEL_PERIOD) && cancelled(job))
            return -1;
        const double *lp = la + (t - 1) * S, *y = ws->lp + t * J;
        double *cur = la + t * S;
        for (int64_t s = 0; s < S; ++s)
            cur[s] = lse3(ws->stay[s] ? lp[s] : NEG, s >= 1 ? lp[s - 1] : NEG,
                          ws->skip[s] ? lp[s - 2] : NEG) +
                     y[eix[s]];
    }
    const double *last = la + (Tb - 1) * S;
    const double log_p = log_add(last[S - 1], S > 1 ? last[S - 2] : NEG);
    if (!(log_p > NEG)) {
        post_fill(job, n, 0, Tb, NAN); /* probability 0: infeasible */
        return 0;
    }
    double *b = ws->beta, *bn = ws->beta + S;
    for (int64_t s = 0; s < S; ++s)
        b[s] = s >= S - 2 ? 0.0 : NEG;
    double *acc = ws->acc;
    for (int64_t t = Tb - 1; t >= 0; --t) {
        if (!(t % DEC_CANCEL_PERIOD) && cancelled(job))
            return -1;
        const double *a = la + t * S;
        double top = NEG;
        for (int64_t s = 0; s < S; ++s)
            top = a[s] + b[s] > top ? a[s] + b[s] : top;
        for (int64_t c = 0; c < C; ++c)
            acc[c] = 0.0;
        double mass = 0.0;
        for (int64_t s = 0; s < S; ++s) {
            const double w = exp((a[s] + b[s]) - top);
            acc[ext[s]] += w;
            mass += w;
        }
        for (int64_t c = 0; c < C; ++c)
            store_real(job->reals_out, in->dtype, t * ps[0] + n * ps[1] + c * ps[2],
                       acc[c] / mass);
        if (t == 0)
            break;
        /* beta_{t-1}(s) = log sum over successors s' of y_t(l'_s') + beta_t(s') */
        const double *y = ws->lp + t * J;
        for (int64_t s = 0; s < S; ++s)
            bn[s] = lse3(ws->stay[s] ? y[eix[s]] + b[s] : NEG,
                         s + 1 < S ? y[eix[s + 1]] + b[s + 1] : NEG,
                         s + 2 < S && ws->skip[s + 2] ? y[eix[s + 2]] + b[s + 2] : NEG);
        double *tmp = b;
        b = bn;
        bn = tmp;
    }
    return 0;
}

/* ------------------------------------------------------------- greedy */

static int greedy_sample(const dec_job *job, dec_ws *ws, int64_t n)
{
    const ctcb_decode_input *in = job->in;
    const int64_t T = in->max_time, Tb = job->input_lengths[n];
    const int logits = job->opt.input_kind == CTCB_INPUT_LOGITS;
    int64_t *seq = job->ints_out + n * T;
    int64_t len = 0, prev = -1;
    double score = 0.0;
    (void)ws;
    for (int64_t t = 0; t < Tb; ++t) {
        if (!(t % DEC_CANCEL_PERIOD) && cancelled(job))
            return -1;
        const dec_row row = read_row(job, n, t);
        if (row.bad) {
            len = 0;
            score = NAN;
            break;
        }
        /* argmax of the activations themselves (exact; ties: smallest index) */
        const int64_t k = row.scan.argmax;
        /* log-prob of the argmax: (x_k - max) - lsum = -lsum for logits */
        score += logits ? -row.lsum : row.scan.max;
        if (k != job->opt.blank && !(job->opt.merge_repeated && k == prev))
            seq[len++] = k;
        prev = k;
    }
    for (int64_t i = len; i < T; ++i)
        seq[i] = job->opt.pad;
    job->ints_out2[n] = len;
    if (job->reals_out)
        store_real(job->reals_out, in->dtype, n, score);
    return 0;
}

/* -------------------------------------------------------- beam search */

/* Lexicographic order of prefixes in the trie.  Each node has a jump
 * pointer (Myers' skew-binary scheme: set in O(1) when the node is made, its
 * depth a function of the node's depth only), so the ancestor of a node at
 * a given depth, and the place where two prefixes part, take O(log depth)
 * steps instead of a walk over the prefix: tied totals are common (once two
 * prefixes tie, their extensions by the same class tie too), and prefixes
 * that parted early would otherwise cost their whole length per comparison. */

static int64_t ancestor_at(const dec_ws *ws, int64_t u, int64_t depth)
{
    while (ws->node_depth[u] > depth)
        u = ws->node_depth[ws->node_jump[u]] >= depth ? ws->node_jump[u] : ws->node_parent[u];
    return u;
}

/* Two different nodes of the same depth: the order of their label
 * sequences, decided where they part (below their lowest common ancestor). */
static int node_order(const dec_ws *ws, int64_t u, int64_t v)
{
    while (ws->node_parent[u] != ws->node_parent[v]) {
        if (ws->node_jump[u] != ws->node_jump[v]) {
            u = ws->node_jump[u]; /* they part above the jump targets */
            v = ws->node_jump[v];
        } else {
            u = ws->node_parent[u];
            v = ws->node_parent[v];
        }
    }
    return ws->node_label[u] < ws->node_label[v] ? -1 : 1;
}

/* A candidate's prefix: the node, extended by `extra` when extra >= 0. */
typedef struct dec_prefix {
    int64_t node, extra, length;
} dec_prefix;

/* The first `length` labels of a prefix (length <= its own). */
static dec_prefix truncate_prefix(const dec_ws *ws, dec_prefix p, int64_t length)
{
    if (p.length > length) {
        p.extra = -1;
        p.node = ancestor_at(ws, p.node, length);
    }
    p.length = length;
    return p;
}

/* Lexicographic order of two different prefixes (a prefix before its
 * extensions). */
static int prefix_cmp(const dec_ws *ws, dec_prefix a, dec_prefix b)
{
    const int by_length = a.length < b.length ? -1 : a.length > b.length;
    const int64_t common = a.length < b.length ? a.length : b.length;
    a = truncate_prefix(ws, a, common);
    b = truncate_prefix(ws, b, common);
    /* now both hold `common` labels: a node of that depth, or a node one
     * shallower plus an extra label; bring both to the second form */
    int64_t pa = a.node, ca = a.extra, pb = b.node, cb = b.extra;
    if (common == 0)
        return by_length;
    if (ca < 0) {
        ca = ws->node_label[pa];
        pa = ws->node_parent[pa];
    }
    if (cb < 0) {
        cb = ws->node_label[pb];
        pb = ws->node_parent[pb];
    }
    if (pa != pb)
        return node_order(ws, pa, pb); /* they part before the last label */
    if (ca != cb)
        return ca < cb ? -1 : 1;
    return by_length;
}

static dec_prefix cand_prefix(const dec_ws *ws, const dec_cand *c)
{
    dec_prefix p = {c->node, c->label, ws->node_depth[c->node] + (c->label >= 0)};
    return p;
}

/* < 0 when candidate a ranks before b: higher total first, then the label
 * sequences in lexicographic order (a prefix before its extensions).  Two
 * candidates never hold the same prefix, so this is a total order and the
 * beam does not depend on the order candidates were generated in. */
static int cand_cmp(const dec_ws *ws, const dec_cand *a, const dec_cand *b)
{
    if (a->total != b->total)
        return a->total > b->total ? -1 : 1;
    return prefix_cmp(ws, cand_prefix(ws, a), cand_prefix(ws, b));
}

/* The trie node of `parent` extended by `label`, created if absent: one node
 * per distinct prefix, so node identity is prefix identity. */
static int64_t child_node(dec_ws *ws, int64_t *count, int64_t parent, int64_t label)
{
    for (int64_t c = ws->node_child[parent]; c >= 0; c = ws->node_sibling[c])
        if (ws->node_label[c] == label)
            return c;
    const int64_t id = (*count)++; /* at most 1 + Tb * B nodes: within node_cap */
    ws->node_parent[id] = parent;
    ws->node_label[id] = label;
    ws->node_depth[id] = ws->node_depth[parent] + 1;
    /* jump: two equal jumps from the parent merge into one twice as long */
    const int64_t j = ws->node_jump[parent], jj = ws->node_jump[j];
    ws->node_jump[id] = ws->node_depth[parent] - ws->node_depth[j] ==
                                ws->node_depth[j] - ws->node_depth[jj]
                            ? jj
                            : parent;
    ws->node_child[id] = -1;
    ws->node_slot[id] = -1;
    ws->node_sibling[id] = ws->node_child[parent];
    ws->node_child[parent] = id;
    return id;
}

static int beam_sample(const dec_job *job, dec_ws *ws, int64_t n)
{
    const ctcb_decode_input *in = job->in;
    const int64_t T = in->max_time, C = in->alphabet, Tb = job->input_lengths[n];
    const int64_t B = job->opt.beam_width, K = job->opt.top_paths, blank = job->opt.blank;
    const double NEG = -INFINITY;
    int status = 0;

    /* the root: the empty prefix, probability 1, ending in a blank */
    int64_t nodes = 1, nb = 1;
    ws->node_parent[0] = -1;
    ws->node_label[0] = -1;
    ws->node_depth[0] = 0;
    ws->node_child[0] = -1;
    ws->node_sibling[0] = -1;
    ws->node_slot[0] = -1;
    ws->node_jump[0] = 0;
    ws->beam_node[0] = 0;
    ws->beam_pb[0] = 0.0;
    ws->beam_pnb[0] = NEG;
    dec_cand *cand = ws->cand;
    for (int64_t t = 0; t < Tb && status == 0; ++t) {
        if (cancelled(job)) /* every frame: a frame costs beam_width x C cells */
            return -1;
        const dec_row row = read_row(job, n, t);
        if (row.bad) {
            status = 1; /* a NaN sample */
            break;
        }
        double *y = ws->lp;
        row_log_probs(job, &row, y);
        /* 1. every prefix of the beam continues: a blank, or its last label again */
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t node = ws->beam_node[i], last = ws->node_label[node];
            const double total = log_add(ws->beam_pb[i], ws->beam_pnb[i]);
            cand[i].node = node;
            cand[i].label = -1;
            cand[i].pb = total + y[blank];
            cand[i].pnb = last >= 0 ? ws->beam_pnb[i] + y[last] : NEG;
            cand[i].total = total; /* the beam's, until the selection below */
            ws->node_slot[node] = i;
            for (int64_t c = 0; c < C; ++c)
                ws->ext_target[i * C + c] = -1;
        }
        /* 2. a beam prefix whose parent is in the beam is that parent's extension */
        for (int64_t j = 0; j < nb; ++j) {
            const int64_t node = ws->beam_node[j], parent = ws->node_parent[node];
            if (parent >= 0 && ws->node_slot[parent] >= 0)
                ws->ext_target[ws->node_slot[parent] * C + ws->node_label[node]] = j;
        }
        /* A full beam's continuations are kept or beaten: a new prefix below
         * the least of their totals (which merges only raise) can never
         * make the cut, and is not stored. */
        double bound = NEG;
        if (nb == B) {
            bound = INFINITY;
            for (int64_t i = 0; i < nb; ++i) {
                const double total = log_add(cand[i].pb, cand[i].pnb);
                bound = total < bound ? total : bound;
            }
        }
        /* 3. extensions by every label: a repeat of the last label only
         * from paths ending in a blank */
        int64_t nc = nb;
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t node = ws->beam_node[i], last = ws->node_label[node];
            const double total = cand[i].total;
            for (int64_t c = 0; c < C; ++c) {
                if (c == blank)
                    continue;
                const double v = (c == last ? ws->beam_pb[i] : total) + y[c];
                const int64_t j = ws->ext_target[i * C + c];
                if (j >= 0) {
                    cand[j].pnb = log_add(cand[j].pnb, v);
                } else if (v > NEG && v >= bound) {
                    cand[nc].node = node;
                    cand[nc].label = c;
                    cand[nc].pb = NEG;
                    cand[nc].pnb = v;
                    ++nc;
                }
            }
        }
        for (int64_t i = 0; i < nb; ++i)
            ws->node_slot[ws->beam_node[i]] = -1;
        /* 4. the B best candidates, by insertion into a sorted list */
        int64_t kept = 0;
        for (int64_t i = 0; i < nc; ++i) {
            cand[i].total = log_add(cand[i].pb, cand[i].pnb);
            if (!(cand[i].total > NEG))
                continue; /* probability 0 */
            if (kept == B) { /* below the last kept: out (the totals first, inline) */
                const double worst = cand[ws->top[B - 1]].total;
                if (cand[i].total < worst ||
                    (cand[i].total == worst && cand_cmp(ws, &cand[i], &cand[ws->top[B - 1]]) >= 0))
                    continue;
            }
            int64_t lo = 0, hi = kept; /* first position ranking after cand i */
            while (lo < hi) {
                const int64_t mid = lo + (hi - lo) / 2;
                if (cand_cmp(ws, &cand[ws->top[mid]], &cand[i]) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (kept < B)
                ++kept;
            memmove(ws->top + lo + 1, ws->top + lo, (size_t)(kept - 1 - lo) * sizeof(int64_t));
            ws->top[lo] = i;
        }
        /* 5. the new beam */
        for (int64_t k = 0; k < kept; ++k) {
            const dec_cand *c = &cand[ws->top[k]];
            ws->beam_node[k] = c->label < 0 ? c->node : child_node(ws, &nodes, c->node, c->label);
            ws->beam_pb[k] = c->pb;
            ws->beam_pnb[k] = c->pnb;
        }
        nb = kept;
    }
    for (int64_t k = 0; k < K; ++k) {
        int64_t *seq = job->ints_out + (n * K + k) * T;
        int64_t len = 0;
        double score = NEG;
        if (status > 0) {
            score = NAN;
        } else if (k < nb) {
            int64_t node = ws->beam_node[k];
            len = ws->node_depth[node];
            for (int64_t i = len - 1; i >= 0; --i, node = ws->node_parent[node])
                seq[i] = ws->node_label[node];
            score = log_add(ws->beam_pb[k], ws->beam_pnb[k]);
        }
        for (int64_t i = len; i < T; ++i)
            seq[i] = job->opt.pad;
        job->ints_out2[n * K + k] = len;
        if (job->reals_out)
            store_real(job->reals_out, in->dtype, n * K + k, score);
    }
    return 0;
}

/* --------------------------------------------------------------- workers */

typedef struct dec_pool {
    const dec_job *job;
    int64_t next;   /* next sample to take (atomic) */
    int status;     /* first workspace failure (atomic) */
} dec_pool;

static void *worker(void *arg)
{
    dec_pool *pool = (dec_pool *)arg;
    const dec_job *job = pool->job;
    dec_ws ws;
    int status = ws_alloc(&ws, job);
    if (status != CTCB_OK) {
        int expected = CTCB_OK;
        __atomic_compare_exchange_n(&pool->status, &expected, status, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST);
        return NULL;
    }
    int (*sample)(const dec_job *, dec_ws *, int64_t) =
        job->kind == DEC_ALIGN        ? align_sample
        : job->kind == DEC_POSTERIORS ? posteriors_sample
        : job->kind == DEC_GREEDY     ? greedy_sample
                                      : beam_sample;
    for (;;) {
        /* dynamic sharing: each sample is computed by exactly one thread with
         * the same code, so results do not depend on the thread count */
        const int64_t n = __atomic_fetch_add(&pool->next, 1, __ATOMIC_RELAXED);
        if (n >= job->in->batch || cancelled(job))
            break;
        if (sample(job, &ws, n) < 0)
            break;
    }
    ws_free(&ws);
    return NULL;
}

/* Validate, snapshot, run the pool.  The output pointers are in `job`. */
static int run(dec_job *job, const ctcb_decode_input *input, const ctcb_decode_options *options,
               int outputs_status)
{
    int status = outputs_status;
    if (status)
        return status;
    const int64_t N = input->batch;
    if (N == 0)
        return CTCB_OK;
    if ((status = take_snapshot(job))) {
        job_free(job);
        return status;
    }
    (void)options;
    dec_pool pool = {job, 0, CTCB_OK};
    /* A worker thread costs tens of microseconds to start and join: a small job
     * (greedy decoding of a batch is a few hundred microseconds) left to choose
     * its threads (num_threads 0) runs on this thread alone; an explicit count
     * is obeyed.  Which thread computes a sample never changes its result. */
    const uint64_t C = (uint64_t)input->alphabet, S = 2u * (uint64_t)job->max_label + 1u;
    const uint64_t per_frame = job->kind == DEC_GREEDY ? C
                               : job->kind == DEC_BEAM ? C * (uint64_t)job->opt.beam_width
                                                       : C + 4u * S;
    const int small = (uint64_t)N * (uint64_t)job->max_input * per_frame < DEC_SMALL_JOB;
    const int64_t threads =
        ctcb_run_workers(small && job->opt.num_threads == 0 ? 1 : job->opt.num_threads, N,
                         worker, &pool);
    const int64_t max_input = job->max_input, max_label = job->max_label;
    job_free(job);
    if (cancelled(job))
        return ctcb_fail(CTCB_ERR_CANCELLED, "cancelled by options.cancel; the outputs are unspecified");
    if (pool.status == CTCB_ERR_OUT_OF_MEMORY)
        return ctcb_fail(CTCB_ERR_OUT_OF_MEMORY,
                     "could not allocate the workspace of a thread (%lld threads; max_time %lld, "
                     "longest label %lld, alphabet %lld)",
                     (long long)threads, (long long)max_input, (long long)max_label,
                     (long long)input->alphabet);
    if (pool.status != CTCB_OK)
        return ctcb_fail(pool.status, "workspace size overflow (max_time %lld, alphabet %lld)",
                     (long long)max_input, (long long)input->alphabet);
    return CTCB_OK;
}

/* Options, input struct, shape: the part every function shares. */
static int begin(dec_job *job, int kind, const ctcb_decode_input *input,
                 const ctcb_decode_options *options)
{
    ctcb_clear_error();
    memset(job, 0, sizeof *job);
    job->kind = kind;
    job->in = input;
    if (!input)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "input is NULL");
    if (input->struct_size != sizeof *input)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "input.struct_size = %zu, expected %zu",
                     input->struct_size, sizeof *input);
    int status = read_options(options, &job->opt, kind);
    if (status)
        return status;
    return CTCB_OK;
}

/* A required output of `count` elements must not be NULL (unless empty). */
static int need(const void *p, uint64_t count, const char *name)
{
    if (count > 0 && !p)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "%s is NULL", name);
    return CTCB_OK;
}

CTCB_API int ctcb_forced_align(const ctcb_decode_input *input, const ctcb_decode_options *options,
                               int64_t *path, void *path_scores, int64_t *label_index)
{
    dec_job job;
    int status = begin(&job, DEC_ALIGN, input, options);
    if (!status)
        status = validate_input(input, &job);
    if (!status)
        status = need(path, (uint64_t)input->max_time * (uint64_t)input->batch, "path");
    job.ints_out = path;
    job.ints_out2 = label_index;
    job.reals_out = path_scores;
    return run(&job, input, options, status);
}

CTCB_API int ctcb_posteriors(const ctcb_decode_input *input, const ctcb_decode_options *options,
                             void *posteriors, const int64_t post_strides[3])
{
    dec_job job;
    int status = begin(&job, DEC_POSTERIORS, input, options);
    const uint64_t count = input ? (uint64_t)input->max_time * (uint64_t)input->batch : 0;
    if (!status && input->batch > 0 && !post_strides)
        status = ctcb_fail(CTCB_ERR_NULL_POINTER, "post_strides is NULL");
    if (!status && input->batch > 0)
        memcpy(job.post_strides, post_strides, sizeof job.post_strides);
    if (!status)
        status = validate_input(input, &job);
    if (!status && input->alphabet > 0)
        status = need(posteriors, count, "posteriors");
    job.reals_out = posteriors;
    return run(&job, input, options, status);
}

/* Greedy and beam search write the same outputs: `width` T-wide sequences
 * and lengths per sample (top_paths for beam search, 1 for greedy). */
static int decode_call(int kind, const ctcb_decode_input *input,
                       const ctcb_decode_options *options, int64_t *sequences, int64_t *lengths,
                       void *scores)
{
    dec_job job;
    int status = begin(&job, kind, input, options);
    if (!status)
        status = validate_input(input, &job);
    const uint64_t width = kind == DEC_BEAM ? (uint64_t)job.opt.top_paths : 1u;
    if (!status)
        status = need(sequences, (uint64_t)input->max_time * (uint64_t)input->batch * width,
                      "sequences");
    if (!status)
        status = need(lengths, (uint64_t)input->batch, "lengths");
    job.ints_out = sequences;
    job.ints_out2 = lengths;
    job.reals_out = scores;
    return run(&job, input, options, status);
}

CTCB_API int ctcb_decode_greedy(const ctcb_decode_input *input, const ctcb_decode_options *options,
                                int64_t *sequences, int64_t *lengths, void *scores)
{
    return decode_call(DEC_GREEDY, input, options, sequences, lengths, scores);
}

CTCB_API int ctcb_decode_beam(const ctcb_decode_input *input, const ctcb_decode_options *options,
                              int64_t *sequences, int64_t *lengths, void *scores)
{
    return decode_call(DEC_BEAM, input, options, sequences, lengths, scores);
}
