/*
 * ctcb_engine.c - the public entry points: option handling, validation of
 * every argument (the last line of defence: nothing is read out of bounds),
 * workspace sizing, and the worker threads that share the batch.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include "ctcb_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#  include <sched.h>
#endif

/* ---------------------------------------------------------------- errors */

/* The detail message is per thread, so concurrent callers never see each
 * other's errors; it is the only state the library keeps. */
static __thread char ctcb_error_buffer[512];

int ctcb_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctcb_error_buffer, sizeof ctcb_error_buffer, fmt, ap);
    va_end(ap);
    return status;
}

CTCB_API const char *ctcb_last_error(void) { return ctcb_error_buffer; }

void ctcb_clear_error(void) { ctcb_error_buffer[0] = '\0'; }

CTCB_API const char *ctcb_status_string(int status)
{
    static const char *const names[CTCB_STATUS_COUNT_] = {
        "ok",
        "null pointer",
        "invalid size",
        "invalid blank index",
        "invalid label",
        "invalid length",
        "invalid option",
        "size overflow",
        "out of memory",
        "cancelled",
    };
    if (status < 0 || status >= CTCB_STATUS_COUNT_)
        return "unknown status";
    return names[status];
}

CTCB_API int ctcb_abi_version(void) { return CTCB_ABI_VERSION; }

#define CTCB_STR2(x) #x
#define CTCB_STR(x) CTCB_STR2(x)
CTCB_API const char *ctcb_version(void)
{
    return CTCB_STR(CTCB_VERSION_MAJOR) "." CTCB_STR(CTCB_VERSION_MINOR) "." CTCB_STR(
        CTCB_VERSION_PATCH);
}

/* --------------------------------------------------------------- options */

CTCB_API int ctcb_options_init(ctcb_options *options)
{
    if (!options)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "options is NULL");
    memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->blank = 0;
    options->input_kind = CTCB_INPUT_LOGITS;
    options->infeasible = CTCB_INFEASIBLE_INF;
    options->num_threads = 0;
    options->flags = 0;
    options->log_zero = -1e10;
    options->cancel = NULL;
    return CTCB_OK;
}

/* Copy the caller's options over the defaults: an older, smaller struct
 * keeps the defaults of the fields it does not know. */
static int read_options(const ctcb_options *given, ctcb_options *out)
{
    ctcb_options_init(out);
    if (!given)
        return CTCB_OK;
    const size_t minimum = offsetof(ctcb_options, blank) + sizeof given->blank;
    if (given->struct_size < minimum || given->struct_size > sizeof *out)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION,
                    "options.struct_size = %zu is not a known size (expected %zu..%zu)",
                    given->struct_size, minimum, sizeof *out);
    memcpy(out, given, given->struct_size);
    out->struct_size = sizeof *out;
    if (out->input_kind != CTCB_INPUT_LOGITS && out->input_kind != CTCB_INPUT_LOG_PROBS)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.input_kind = %d is not a ctcb_input_kind",
                    (int)out->input_kind);
    if (out->infeasible < CTCB_INFEASIBLE_INF || out->infeasible > CTCB_INFEASIBLE_SENTINEL)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.infeasible = %d is not a ctcb_infeasible",
                    (int)out->infeasible);
    if (out->flags & ~CTCB_KNOWN_FLAGS_)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.flags = 0x%x has unknown bits 0x%x",
                    out->flags, out->flags & ~CTCB_KNOWN_FLAGS_);
    if (out->num_threads < 0)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "options.num_threads = %d is negative",
                    (int)out->num_threads);
    if (out->infeasible == CTCB_INFEASIBLE_SENTINEL &&
        !(out->log_zero < 0.0 && out->log_zero > -INFINITY))
        return ctcb_fail(CTCB_ERR_INVALID_OPTION,
                    "options.log_zero = %g must be finite and negative for the sentinel policy",
                    out->log_zero);
    return CTCB_OK;
}

/* ------------------------------------------------------------ workspace */

/* Sizes in doubles of the workspace parts, in allocation order; 0 on overflow. */
static size_t workspace_doubles(int64_t max_time, int64_t max_label, int64_t alphabet)
{
    if (max_time < 0 || max_label < 0 || alphabet < 0)
        return 0;
    uint64_t S, W, rows, total;
    if (__builtin_mul_overflow((uint64_t)max_label, 2u, &S) || __builtin_add_overflow(S, 1u, &S) ||
        __builtin_add_overflow(S, 4u, &W))
        return 0;
    /* alpha and emit: T x W each; scale, fmax, lsum, eshift: T each;
     * beta, beta_next: W; stay, skip, bmask: S + 2 each; acc: alphabet;
     * ext: S + 2 int64; probs: T x alphabet when alphabet <= S. */
    uint64_t T = max_time > 0 ? (uint64_t)max_time : 1u;
    if (__builtin_mul_overflow(T, W, &rows) || __builtin_mul_overflow(rows, 2u, &total) ||
        __builtin_add_overflow(total, 4u * T, &total) || __builtin_add_overflow(total, 2u * W, &total) ||
        __builtin_add_overflow(total, 4u * (S + 2u), &total) ||
        __builtin_add_overflow(total, (uint64_t)alphabet, &total))
        return 0;
    /* probs: T x alphabet, for the samples whose states outnumber the classes */
    uint64_t probs = 0;
    if ((uint64_t)alphabet <= S &&
        (__builtin_mul_overflow(T, (uint64_t)alphabet, &probs) ||
         __builtin_add_overflow(total, probs, &total)))
        return 0;
    if (total > (uint64_t)(SIZE_MAX / sizeof(double)))
        return 0;
    return (size_t)total;
}

CTCB_API size_t ctcb_workspace_bytes(int64_t max_time, int64_t max_label, int64_t alphabet)
{
    return workspace_doubles(max_time, max_label, alphabet) * sizeof(double);
}

int ctcb_workspace_alloc(ctcb_workspace *ws, int64_t max_time, int64_t max_label, int64_t alphabet)
{
    memset(ws, 0, sizeof *ws);
    const size_t total = workspace_doubles(max_time, max_label, alphabet);
    if (total == 0)
        return CTCB_ERR_SIZE_OVERFLOW;
    double *block = (double *)malloc(total * sizeof(double));
    if (!block)
        return CTCB_ERR_OUT_OF_MEMORY;
    const size_t T = max_time > 0 ? (size_t)max_time : 1u;
    const size_t S = 2u * (size_t)max_label + 1u, W = S + 4u;
    double *cursor = block;
    ws->alpha = cursor;     cursor += T * W;
    ws->emit = cursor;      cursor += T * W;
    ws->scale = cursor;     cursor += T;
    ws->fmax = cursor;      cursor += T;
    ws->lsum = cursor;      cursor += T;
    ws->eshift = cursor;    cursor += T;
    ws->beta = cursor;      cursor += W;
    ws->beta_next = cursor; cursor += W;
    ws->stay = cursor;      cursor += S + 2u;
    ws->skip = cursor;      cursor += S + 2u;
    ws->bmask = cursor;     cursor += S + 2u;
    ws->ext = (int64_t *)cursor; cursor += S + 2u;
    ws->acc = cursor;       cursor += (size_t)alphabet;
    ws->probs = (size_t)alphabet <= S ? cursor : NULL;
    memset(ws->acc, 0, (size_t)alphabet * sizeof(double)); /* the gradient rows keep it zeroed */
    ws->block = block;
    return CTCB_OK;
}

void ctcb_workspace_free(ctcb_workspace *ws)
{
    free(ws->block);
    ws->block = NULL;
}

/* ------------------------------------------------------------ validation */

int ctcb_check_strides(const char *name, const int64_t strides[3], int64_t T, int64_t N,
                       int64_t C)
{
    /* The largest |offset| reachable must fit in int64 (and so in memory). */
    const int64_t extent[3] = {T, N, C};
    uint64_t reach = 0;
    for (int d = 0; d < 3; ++d) {
        if (extent[d] == 0)
            return CTCB_OK; /* an empty array is never read */
        uint64_t mag = strides[d] < 0 ? (uint64_t)0 - (uint64_t)strides[d] : (uint64_t)strides[d];
        uint64_t part;
        if (strides[d] == INT64_MIN || __builtin_mul_overflow(mag, (uint64_t)(extent[d] - 1), &part) ||
            __builtin_add_overflow(reach, part, &reach) || reach > (uint64_t)INT64_MAX)
            return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW,
                        "%s = {%lld, %lld, %lld} with shape (T=%lld, N=%lld, C=%lld) addresses "
                        "beyond 2^63 elements",
                        name, (long long)strides[0], (long long)strides[1], (long long)strides[2],
                        (long long)T, (long long)N, (long long)C);
    }
    return CTCB_OK;
}

void ctcb_snapshot_free(ctcb_snapshot *snap)
{
    free(snap->ints);
    free(snap->labels);
    snap->ints = snap->labels = NULL;
}

/* The byte range [lo, hi) an array of shape (T, N, C) spans from base. */
static void byte_span(const void *base, const int64_t strides[3], int64_t T, int64_t N, int64_t C,
                      size_t size, uintptr_t *lo, uintptr_t *hi)
{
    const int64_t extent[3] = {T, N, C};
    int64_t first = 0, last = 0; /* fits: ctcb_check_strides bounds the reach by 2^63 */
    for (int d = 0; d < 3; ++d) {
        const int64_t part = strides[d] * (extent[d] - 1);
        if (part < 0)
            first += part;
        else
            last += part;
    }
    *lo = (uintptr_t)base + (uintptr_t)first * size;
    *hi = (uintptr_t)base + (uintptr_t)(last + 1) * size;
}

/* Whether the gradient and the activations share any byte. */
static int spans_overlap(const ctcb_problem *p, int64_t T, int64_t N, int64_t C)
{
    const size_t size = p->dtype == CTCB_FLOAT32 ? sizeof(float) : sizeof(double);
    uintptr_t alo, ahi, glo, ghi;
    byte_span(p->activations, p->act_strides, T, N, C, size, &alo, &ahi);
    byte_span(p->grad, p->grad_strides, T, N, C, size, &glo, &ghi);
    return alo < ghi && glo < ahi;
}

/* Sizes, options and strides: everything that reads no array. */
static int validate_shape(const ctcb_problem *p, const ctcb_options *o)
{
    const int64_t T = p->max_time, N = p->batch, C = p->alphabet;
    if (T < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "max_time = %lld is negative", (long long)T);
    if (N < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "batch = %lld is negative", (long long)N);
    if (C < 1)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "alphabet = %lld must be at least 1 (the blank)",
                    (long long)C);
    if (o->blank < 0 || o->blank >= C)
        return ctcb_fail(CTCB_ERR_INVALID_BLANK, "blank = %d is outside [0, alphabet = %lld)",
                    (int)o->blank, (long long)C);
    if (p->dtype != CTCB_FLOAT32 && p->dtype != CTCB_FLOAT64)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "dtype = %d is not a ctcb_dtype", (int)p->dtype);
    if (p->label_format != CTCB_LABELS_PADDED && p->label_format != CTCB_LABELS_CONCATENATED)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "label_format = %d is not a ctcb_label_format",
                    (int)p->label_format);
    uint64_t elements;
    if (__builtin_mul_overflow((uint64_t)T, (uint64_t)N, &elements) ||
        __builtin_mul_overflow(elements, (uint64_t)C, &elements) || elements > (uint64_t)INT64_MAX)
        return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW, "T * N * C = %lld * %lld * %lld overflows",
                    (long long)T, (long long)N, (long long)C);
    if (N == 0)
        return CTCB_OK;
    if (!p->losses)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "losses is NULL");
    if (elements > 0 && !p->activations)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "activations is NULL");
    int status = ctcb_check_strides("act_strides", p->act_strides, T, N, C);
    if (status)
        return status;
    if (p->grad && (status = ctcb_check_strides("grad_strides", p->grad_strides, T, N, C)))
        return status;
    if (p->grad && elements > 0 && spans_overlap(p, T, N, C))
        /* the kernel keeps each frame's exps in the gradient row while it
         * still reads the activations (and any in-place gradient would read
         * back its own writes) */
        return ctcb_fail(CTCB_ERR_INVALID_SIZE,
                         "grad overlaps activations in memory: the gradient needs its own array");
    if (p->label_format == CTCB_LABELS_PADDED && p->label_stride < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "label_stride = %lld is negative",
                    (long long)p->label_stride);
    if (p->label_format == CTCB_LABELS_CONCATENATED && !p->label_lengths)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "label_lengths is NULL with concatenated labels");
    if (p->label_format == CTCB_LABELS_CONCATENATED && p->label_count < 0)
        return ctcb_fail(CTCB_ERR_INVALID_SIZE, "label_count = %lld is negative",
                    (long long)p->label_count);
    return CTCB_OK;
}

int ctcb_snapshot_take(const ctcb_int_inputs *p, ctcb_snapshot *snap)
{
    const int64_t T = p->max_time, N = p->batch, C = p->alphabet;
    memset(snap, 0, sizeof *snap);
    if ((uint64_t)N > SIZE_MAX / (3u * sizeof(int64_t)) ||
        !(snap->ints = (int64_t *)calloc((size_t)N * 3u + 1u, sizeof(int64_t))))
        return ctcb_fail(CTCB_ERR_OUT_OF_MEMORY, "no memory for the lengths of %lld samples",
                         (long long)N);
    int64_t *in_len = snap->ints, *lab_len = in_len + N, *offsets = lab_len + N;
    snap->input_lengths = in_len;
    snap->label_lengths = lab_len;
    snap->label_offsets = offsets;

    for (int64_t n = 0; n < N; ++n) {
        const int64_t len = p->input_lengths ? ctcb_read_once(&p->input_lengths[n]) : T;
        if (len < 0 || len > T)
            return ctcb_fail(CTCB_ERR_INVALID_LENGTH,
                             "input_lengths[%lld] = %lld is outside [0, max_time = %lld]",
                             (long long)n, (long long)len, (long long)T);
        in_len[n] = len;
        if (len > snap->max_input)
            snap->max_input = len;
    }
    if (!p->read_labels)
        return CTCB_OK;

    /* label lengths, and where each sample's labels start in the caller's array */
    const int padded = p->label_format == CTCB_LABELS_PADDED;
    uint64_t source = 0, total = 0;
    for (int64_t n = 0; n < N; ++n) {
        const int64_t len = p->label_lengths ? ctcb_read_once(&p->label_lengths[n]) : p->label_stride;
        if (len < 0)
            return ctcb_fail(CTCB_ERR_INVALID_LENGTH, "label_lengths[%lld] = %lld is negative",
                             (long long)n, (long long)len);
        if (padded && len > p->label_stride)
            return ctcb_fail(CTCB_ERR_INVALID_LENGTH,
                             "label_lengths[%lld] = %lld exceeds the padded label width %lld",
                             (long long)n, (long long)len, (long long)p->label_stride);
        if (padded && (__builtin_mul_overflow((uint64_t)n, (uint64_t)p->label_stride, &source) ||
                       source > (uint64_t)INT64_MAX))
            return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW, "label offset of sample %lld overflows",
                             (long long)n);
        if (!padded && (len > p->label_count || source > (uint64_t)(p->label_count - len)))
            return ctcb_fail(CTCB_ERR_INVALID_LENGTH,
                             "label_lengths add up to more than the %lld concatenated labels "
                             "(at sample %lld, label_lengths[%lld] = %lld)",
                             (long long)p->label_count, (long long)n, (long long)n,
                             (long long)len);
        lab_len[n] = len;
        offsets[n] = (int64_t)total; /* where the copy of its labels starts */
        if (!padded)
            source += (uint64_t)len; /* bounded by label_count */
        total += (uint64_t)len;      /* at most N * stride or label_count: no overflow */
        if (len > snap->max_label)
            snap->max_label = len;
    }
    if (total > 0 && !p->labels)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "labels is NULL");
    if (total > SIZE_MAX / sizeof(int64_t) ||
        !(snap->labels = (int64_t *)malloc((size_t)(total ? total : 1u) * sizeof(int64_t))))
        return ctcb_fail(CTCB_ERR_OUT_OF_MEMORY, "no memory for a copy of %llu labels",
                         (unsigned long long)total);
    for (int64_t n = 0; n < N; ++n) {
        const int64_t *src = p->labels + (padded ? (uint64_t)n * (uint64_t)p->label_stride
                                                 : (uint64_t)offsets[n]);
        int64_t *dst = snap->labels + offsets[n];
        for (int64_t i = 0; i < lab_len[n]; ++i) {
            const int64_t v = ctcb_read_once(&src[i]);
            if (v < 0 || v >= C)
                return ctcb_fail(CTCB_ERR_INVALID_LABEL,
                                 "label %lld of sample %lld is %lld, outside [0, alphabet = %lld)",
                                 (long long)i, (long long)n, (long long)v, (long long)C);
            dst[i] = v;
        }
    }
    return CTCB_OK;
}

/* The loss's snapshot: ctcb_snapshot_take on the problem, then the
 * workspace size check; fills the job's views. */
static int take_snapshot(const ctcb_problem *p, ctcb_job *job, ctcb_snapshot *snap)
{
    const ctcb_int_inputs in = {p->max_time, p->batch, p->alphabet, p->label_format,
                                p->input_lengths, p->labels, p->label_stride, p->label_count,
                                p->label_lengths, 1};
    int status = ctcb_snapshot_take(&in, snap);
    if (status)
        return status;
    job->max_input = snap->max_input;
    job->max_label = snap->max_label;
    if (ctcb_workspace_bytes(job->max_input, job->max_label, p->alphabet) == 0)
        return ctcb_fail(CTCB_ERR_SIZE_OVERFLOW,
                         "workspace for max_time %lld, longest label %lld, alphabet %lld overflows",
                         (long long)job->max_input, (long long)job->max_label,
                         (long long)p->alphabet);
    job->input_lengths = snap->input_lengths;
    job->label_lengths = snap->label_lengths;
    job->label_offsets = snap->label_offsets;
    job->labels = snap->labels;
    return CTCB_OK;
}

/* --------------------------------------------------------------- workers */

typedef struct ctcb_pool {
    const ctcb_job *job;
    int64_t next;   /* next sample to take (atomic) */
    int status;     /* first allocation failure (atomic) */
} ctcb_pool;

static void *worker(void *arg)
{
    ctcb_pool *pool = (ctcb_pool *)arg;
    const ctcb_job *job = pool->job;
    ctcb_workspace ws;
    int status = ctcb_workspace_alloc(&ws, job->max_input, job->max_label, job->problem->alphabet);
    if (status != CTCB_OK) {
        int expected = CTCB_OK;
        __atomic_compare_exchange_n(&pool->status, &expected, status, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST);
        return NULL;
    }
    int (*sample)(const ctcb_job *, ctcb_workspace *, int64_t) =
        job->problem->dtype == CTCB_FLOAT32 ? ctcb_sample_f32 : ctcb_sample_f64;
    for (;;) {
        /* dynamic sharing: each sample is computed by exactly one thread with
         * the same code, so results do not depend on the thread count */
        const int64_t n = __atomic_fetch_add(&pool->next, 1, __ATOMIC_RELAXED);
        if (n >= job->problem->batch || ctcb_cancelled(job))
            break;
        if (sample(job, &ws, n) == SAMPLE_CANCELLED)
            break;
    }
    ctcb_workspace_free(&ws);
    return NULL;
}

static int64_t available_cores(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int count = CPU_COUNT(&set);
        if (count > 0)
            return count;
    }
#endif
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int64_t)online : 1;
}

int64_t ctcb_run_workers(int32_t requested, int64_t batch, void *(*work)(void *), void *arg)
{
    int64_t threads = requested > 0 ? requested : available_cores();
    if (threads > batch)
        threads = batch;
    pthread_t *ids = NULL;
    int64_t started = 0;
    if (threads > 1 && (ids = (pthread_t *)malloc((size_t)(threads - 1) * sizeof *ids))) {
        for (; started < threads - 1; ++started)
            if (pthread_create(&ids[started], NULL, work, arg) != 0)
                break; /* the threads already running, and this one, do the rest */
    }
    work(arg);
    for (int64_t i = 0; i < started; ++i)
        pthread_join(ids[i], NULL);
    free(ids);
    return threads;
}

CTCB_API int ctcb_ctc_loss(const ctcb_problem *problem, const ctcb_options *options)
{
    ctcb_clear_error();
    if (!problem)
        return ctcb_fail(CTCB_ERR_NULL_POINTER, "problem is NULL");
    if (problem->struct_size != sizeof *problem)
        return ctcb_fail(CTCB_ERR_INVALID_OPTION, "problem.struct_size = %zu, expected %zu",
                    problem->struct_size, sizeof *problem);
    ctcb_job job;
    memset(&job, 0, sizeof job);
    int status = read_options(options, &job.options);
    if (status)
        return status;
    const int64_t N = problem->batch;
    if ((status = validate_shape(problem, &job.options)) || N == 0)
        return status;
    ctcb_snapshot snap;
    if ((status = take_snapshot(problem, &job, &snap))) {
        ctcb_snapshot_free(&snap);
        return status;
    }
    job.problem = problem;

    ctcb_pool pool = {&job, 0, CTCB_OK};
    const int64_t threads = ctcb_run_workers(job.options.num_threads, N, worker, &pool);
    ctcb_snapshot_free(&snap);
    if (ctcb_cancelled(&job))
        return ctcb_fail(CTCB_ERR_CANCELLED, "cancelled by options.cancel; the outputs are unspecified");
    if (pool.status == CTCB_ERR_OUT_OF_MEMORY) {
        return ctcb_fail(CTCB_ERR_OUT_OF_MEMORY,
                    "could not allocate %zu bytes of workspace per thread (%lld threads; "
                    "max_time %lld, longest label %lld, alphabet %lld)",
                    ctcb_workspace_bytes(job.max_input, job.max_label, problem->alphabet),
                    (long long)threads, (long long)job.max_input, (long long)job.max_label,
                    (long long)problem->alphabet);
    }
    if (pool.status != CTCB_OK)
        return ctcb_fail(pool.status, "workspace size overflow");
    return CTCB_OK;
}
