/*
 * test_safety.c - the engine's safety guarantees, in C (run by ctest, under
 * Valgrind in `nox -s ctests` and under ASan + UBSan in `nox -s sanitize`):
 *  - a thread writing to the caller's labels and lengths during calls causes
 *    at most an error or a change of that sample's result;
 *  - the cancel flag stops a call (set before it, or by another thread
 *    during it) with CTCB_ERR_CANCELLED and no leak;
 *  - emissions far below the double range on the fast path stay exact;
 *  - huge tied logits are the uniform distribution.
 */
#include "ctcbridge.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define CLOSE(a, b, tol) CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%.17g vs %.17g", (double)(a), (double)(b))

static ctcb_problem padded(int64_t T, int64_t N, int64_t C, const double *acts, const int64_t *in_len,
                           const int64_t *labels, int64_t S, const int64_t *lab_len, double *losses,
                           double *grad)
{
    ctcb_problem p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.dtype = CTCB_FLOAT64;
    p.label_format = CTCB_LABELS_PADDED;
    p.max_time = T;
    p.batch = N;
    p.alphabet = C;
    p.activations = acts;
    p.act_strides[0] = N * C;
    p.act_strides[1] = C;
    p.act_strides[2] = 1;
    p.input_lengths = in_len;
    p.labels = labels;
    p.label_stride = S;
    p.label_lengths = lab_len;
    p.losses = losses;
    p.grad = grad;
    memcpy(p.grad_strides, p.act_strides, sizeof p.grad_strides);
    return p;
}

static double uniform(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) / 9007199254740992.0;
}

/* --------------------------------------------------- concurrent writers */

enum { FT = 30, FN = 4, FC = 7, FS = 6, CALLS = 300 };

typedef struct flip_args {
    int64_t *labels, *in_len, *lab_len;
    int stop;
} flip_args;

static void *flip(void *arg)
{
    flip_args *f = (flip_args *)arg;
    const int64_t last = (FN - 1) * FS + FS - 1;
    while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
        __atomic_store_n(&f->labels[last], (int64_t)1 << 40, __ATOMIC_RELAXED);
        __atomic_store_n(&f->lab_len[FN - 1], (int64_t)1 << 40, __ATOMIC_RELAXED);
        __atomic_store_n(&f->in_len[FN - 1], -((int64_t)1 << 40), __ATOMIC_RELAXED);
        __atomic_store_n(&f->labels[last], 2, __ATOMIC_RELAXED);
        __atomic_store_n(&f->lab_len[FN - 1], FS, __ATOMIC_RELAXED);
        __atomic_store_n(&f->in_len[FN - 1], FT, __ATOMIC_RELAXED);
        sched_yield(); /* lets Valgrind, which runs one thread at a time, switch */
    }
    return NULL;
}

static void test_concurrent_writer(void)
{
    double acts[FT * FN * FC], grad[FT * FN * FC], ref_grad[FT * FN * FC];
    double losses[FN], ref[FN];
    int64_t labels[FN * FS], in_len[FN], lab_len[FN];
    uint64_t seed = 7;
    for (int i = 0; i < FT * FN * FC; ++i)
        acts[i] = 4.0 * uniform(&seed) - 2.0;
    for (int i = 0; i < FN * FS; ++i)
        labels[i] = 1 + (int64_t)(uniform(&seed) * (FC - 1));
    for (int n = 0; n < FN; ++n) {
        in_len[n] = FT;
        lab_len[n] = FS;
    }
    labels[FN * FS - 1] = 2;
    ctcb_options o;
    ctcb_options_init(&o);
    o.num_threads = 2;
    ctcb_problem p = padded(FT, FN, FC, acts, in_len, labels, FS, lab_len, ref, ref_grad);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());

    flip_args f = {labels, in_len, lab_len, 0};
    pthread_t writer;
    CHECK(pthread_create(&writer, NULL, flip, &f) == 0, "pthread_create");
    p = padded(FT, FN, FC, acts, in_len, labels, FS, lab_len, losses, grad);
    int ok = 0, errors = 0;
    for (int call = 0; call < CALLS; ++call) {
        const int status = ctcb_ctc_loss(&p, &o);
        if (status != CTCB_OK) {
            CHECK(status == CTCB_ERR_INVALID_LABEL || status == CTCB_ERR_INVALID_LENGTH,
                  "status %d: %s", status, ctcb_last_error());
            ++errors;
            continue;
        }
        ++ok;
        /* the samples nobody writes to are untouched, bit for bit */
        CHECK(memcmp(losses, ref, (FN - 1) * sizeof *losses) == 0, "call %d: losses changed", call);
        for (int t = 0; t < FT; ++t)
            CHECK(memcmp(&grad[t * FN * FC], &ref_grad[t * FN * FC],
                         (FN - 1) * FC * sizeof *grad) == 0,
                  "call %d: gradient of frame %d changed", call, t);
    }
    __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
    pthread_join(writer, NULL);
    CHECK(ok + errors == CALLS, "%d + %d calls", ok, errors);
    printf("concurrent writer: %d calls succeeded, %d reported the changed sample\n", ok, errors);
}

/* ------------------------------------------------------------ cancel */

typedef struct cancel_args {
    int32_t *flag;
    long delay_ns;
} cancel_args;

static void *cancel_later(void *arg)
{
    cancel_args *c = (cancel_args *)arg;
    struct timespec ts = {0, c->delay_ns};
    nanosleep(&ts, NULL);
    __atomic_store_n(c->flag, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void test_cancel(void)
{
    /* long enough that the call is still running when the flag is set */
    const int64_t T = 60000, N = 2, C = 5, S = 300;
    double *acts = (double *)calloc((size_t)(T * N * C), sizeof *acts);
    int64_t *labels = (int64_t *)malloc((size_t)(N * S) * sizeof *labels);
    double losses[2];
    CHECK(acts && labels, "allocation");
    if (!acts || !labels)
        return;
    for (int64_t i = 0; i < N * S; ++i)
        labels[i] = 1 + i % (C - 1);
    ctcb_problem p = padded(T, N, C, acts, NULL, labels, S, NULL, losses, NULL);
    int32_t flag = 1;
    ctcb_options o;
    ctcb_options_init(&o);
    o.cancel = &flag;
    o.num_threads = 2;
    /* set before the call: nothing is computed */
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_ERR_CANCELLED, "%s", ctcb_last_error());
    CHECK(strstr(ctcb_last_error(), "cancelled") != NULL, "%s", ctcb_last_error());
    CHECK(strcmp(ctcb_status_string(CTCB_ERR_CANCELLED), "cancelled") == 0, "status string");
    /* set by another thread during the call, in the scaled recursion and in log space */
    for (int log_space = 0; log_space < 2; ++log_space) {
        flag = 0;
        o.flags = log_space ? CTCB_FLAG_LOG_SPACE : 0;
        cancel_args c = {&flag, 2000000L};
        pthread_t canceller;
        CHECK(pthread_create(&canceller, NULL, cancel_later, &c) == 0, "pthread_create");
        const int status = ctcb_ctc_loss(&p, &o);
        pthread_join(canceller, NULL);
        CHECK(status == CTCB_ERR_CANCELLED, "log_space %d: status %d", log_space, status);
    }
    /* a NULL flag, and an unset one, change nothing */
    flag = 0;
    double a[2], b[2];
    p.max_time = 50;
    p.losses = a;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    o.cancel = NULL;
    p.losses = b;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(a[0] == b[0] && a[1] == b[1], "%g %g vs %g %g", a[0], a[1], b[0], b[1]);
    free(acts);
    free(labels);
}

/* ------------------------------------------------------------ numerics */

static void test_underflowing_emissions(void)
{
    /* T=2, C=2, empty label: the blank's probabilities exp(-460), exp(-300)
     * multiplied to 1e-330 once, and the loss became +inf (exact: 760) */
    double acts[4] = {0.0, 460.0, 0.0, 300.0}, loss, grad[4];
    int64_t zero = 0;
    ctcb_problem p = padded(2, 1, 2, acts, NULL, &zero, 0, NULL, &loss, grad);
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(loss, 760.0, 1e-9);
    CLOSE(grad[0], -1.0, 1e-12);
    CLOSE(grad[1], 1.0, 1e-12);
}

static void test_huge_ties(void)
{
    /* every logit 1e300: uniform, exactly the loss of all-zero logits */
    double huge[5 * 8], zeros[5 * 8] = {0}, a, b, ga[5 * 8], gb[5 * 8];
    for (int i = 0; i < 5 * 8; ++i)
        huge[i] = 1e300;
    int64_t labels[2] = {1, 2};
    ctcb_problem p = padded(5, 1, 8, huge, NULL, labels, 2, NULL, &a, ga);
    ctcb_problem q = padded(5, 1, 8, zeros, NULL, labels, 2, NULL, &b, gb);
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(ctcb_ctc_loss(&q, NULL) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(a, b, 1e-12);
    for (int i = 0; i < 5 * 8; ++i)
        CLOSE(ga[i], gb[i], 1e-12);
}

static void test_grad_overlapping_activations(void)
{
    /* the kernel keeps a frame's exps in the gradient row while it still
     * reads the activations: an overlapping gradient is refused, a disjoint
     * one (even in the same buffer) is fine */
    double buf[2 * 3 * 4] = {0}, loss;
    int64_t label = 1;
    ctcb_problem p = padded(3, 1, 4, buf, NULL, &label, 1, NULL, &loss, buf + 1);
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_ERR_INVALID_SIZE, "overlap: %s", ctcb_last_error());
    CHECK(strstr(ctcb_last_error(), "overlaps activations") != NULL, "%s", ctcb_last_error());
    p.grad = buf; /* in place */
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_ERR_INVALID_SIZE, "in place: %s", ctcb_last_error());
    p.grad = buf + 12;
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "disjoint: %s", ctcb_last_error());
    /* negative strides: the span runs downwards from the base */
    p.activations = buf + 11;
    p.act_strides[0] = -4;
    p.act_strides[2] = -1;
    p.grad = buf + 12;
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "reversed, disjoint: %s", ctcb_last_error());
    p.grad = buf + 11;
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_ERR_INVALID_SIZE, "reversed, overlap: %s",
          ctcb_last_error());
}

int main(void)
{
    test_grad_overlapping_activations();
    test_concurrent_writer();
    test_cancel();
    test_underflowing_emissions();
    test_huge_ties();
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures != 0;
}
