/*
 * test_engine.c - C tests of the engine, run by ctest (`nox -s ctests`).
 *
 * Known answers computed by hand, blank not at 0, infeasible samples under
 * each policy, finite-difference gradients, scaled vs log-space recursions,
 * thread-count invariance, strided layouts and every error status.
 */
#include "ctcbridge.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define CLOSE(a, b, tol) CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%.17g vs %.17g", (double)(a), (double)(b))

/* A time-major double problem over caller-owned buffers. */
static ctcb_problem problem_tnc(int64_t T, int64_t N, int64_t C, const double *acts,
                                const int64_t *in_len, const int64_t *labels, int64_t S,
                                const int64_t *lab_len, double *losses, double *grad)
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

static ctcb_options opts(int blank, int kind)
{
    ctcb_options o;
    ctcb_options_init(&o);
    o.blank = blank;
    o.input_kind = kind;
    return o;
}

static double uniform(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) / 9007199254740992.0;
}

/* T=3, C=3, uniform logits, label [1]: 6 of the 27 paths collapse to "1". */
static void test_known_uniform(void)
{
    double acts[9] = {0};
    int64_t labels[1] = {1};
    double loss, grad[9];
    ctcb_problem p = problem_tnc(3, 1, 3, acts, NULL, labels, 1, NULL, &loss, grad);
    ctcb_options o = opts(0, CTCB_INPUT_LOGITS);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(loss, log(27.0 / 6.0), 1e-14);
    /* occupancy of "1" at frame 0: paths 1xx collapsing to "1": 1bb,11b,111 -> 3/6 */
    CLOSE(grad[0 * 3 + 1], 1.0 / 3.0 - 0.5, 1e-14);
    CLOSE(grad[0 * 3 + 2], 1.0 / 3.0, 1e-14); /* class 2 never used: softmax only */
}

/* T=2, C=2, label [1], log-probs p_t(1) = a_t: P = a0 + a1 - a0 a1,
 * gamma_0(1) = a0 / P, gamma_0(0) = (1 - a0) a1 / P. */
static void test_known_log_probs(void)
{
    const double a0 = 0.3, a1 = 0.6, P = a0 + a1 - a0 * a1;
    double acts[4] = {log(1 - a0), log(a0), log(1 - a1), log(a1)};
    int64_t labels[1] = {1};
    double loss, grad[4];
    ctcb_problem p = problem_tnc(2, 1, 2, acts, NULL, labels, 1, NULL, &loss, grad);
    ctcb_options o = opts(0, CTCB_INPUT_LOG_PROBS);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(loss, -log(P), 1e-14);
    CLOSE(grad[1], -a0 / P, 1e-14);
    CLOSE(grad[0], -(1 - a0) * a1 / P, 1e-14);
    o.flags = CTCB_FLAG_LOG_SPACE;
    double loss2;
    p.losses = &loss2;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(loss2, -log(P), 1e-14);
}

/* Moving the blank to index 2 and relabelling gives the same loss. */
static void test_blank_not_zero(void)
{
    enum { T = 7, C = 4 };
    uint64_t seed = 42;
    double a[T * C], b[T * C];
    for (int i = 0; i < T * C; ++i)
        a[i] = 3 * uniform(&seed) - 1.5;
    /* b swaps classes 0 and 2 */
    for (int t = 0; t < T; ++t)
        for (int c = 0; c < C; ++c)
            b[t * C + (c == 0 ? 2 : c == 2 ? 0 : c)] = a[t * C + c];
    int64_t la[3] = {1, 2, 2}, lb[3] = {1, 0, 0};
    double loss_a, loss_b, ga[T * C], gb[T * C];
    ctcb_problem pa = problem_tnc(T, 1, C, a, NULL, la, 3, NULL, &loss_a, ga);
    ctcb_problem pb = problem_tnc(T, 1, C, b, NULL, lb, 3, NULL, &loss_b, gb);
    ctcb_options oa = opts(0, CTCB_INPUT_LOGITS), ob = opts(2, CTCB_INPUT_LOGITS);
    CHECK(ctcb_ctc_loss(&pa, &oa) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(ctcb_ctc_loss(&pb, &ob) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(loss_a, loss_b, 1e-12);
    for (int t = 0; t < T; ++t)
        CLOSE(ga[t * C + 0], gb[t * C + 2], 1e-12);
}

/* [1, 1] needs 3 frames; with 2 it is infeasible under every policy. */
static void test_infeasible(void)
{
    double acts[2 * 3] = {0.1, 0.2, 0.3, -0.1, 0.5, 0.0};
    int64_t labels[2] = {1, 1};
    double loss, grad[9]; /* room for the 3-frame cases below */
    ctcb_problem p = problem_tnc(2, 1, 3, acts, NULL, labels, 2, NULL, &loss, grad);
    ctcb_options o = opts(0, CTCB_INPUT_LOGITS);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(isinf(loss) && loss > 0, "loss %g", loss);
    CHECK(isnan(grad[0]) && isnan(grad[5]), "grad %g %g", grad[0], grad[5]);
    o.infeasible = CTCB_INFEASIBLE_ZERO;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(loss == 0.0 && grad[0] == 0.0 && grad[5] == 0.0, "loss %g grad %g", loss, grad[0]);
    o.infeasible = CTCB_INFEASIBLE_SENTINEL;
    o.log_zero = -1e10;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(loss > 0.99e10 && loss < 1.01e10, "sentinel loss %g", loss);
    CHECK(isfinite(grad[0]) && isfinite(grad[5]), "sentinel grad %g", grad[0]);
    /* three frames are enough */
    double acts3[9] = {0.1, 0.2, 0.3, -0.1, 0.5, 0.0, 0.2, 0.2, -0.3};
    p = problem_tnc(3, 1, 3, acts3, NULL, labels, 2, NULL, &loss, NULL);
    o = opts(0, CTCB_INPUT_LOGITS);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(isfinite(loss), "loss %g", loss);
    /* zero-length input: empty label -> 0, non-empty -> infeasible */
    int64_t zero = 0, lens[1] = {0};
    p = problem_tnc(3, 1, 3, acts3, &zero, labels, 2, lens, &loss, grad);
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(loss == 0.0 && grad[0] == 0.0 && grad[8] == 0.0, "empty loss %g", loss);
    p.label_lengths = NULL;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(isinf(loss) && grad[0] == 0.0, "zero-length loss %g grad %g", loss, grad[0]);
}

/* Central differences of the summed loss for logits and log-probs. */
static void test_finite_differences(void)
{
    enum { T = 8, N = 2, C = 5, S = 3 };
    uint64_t seed = 7;
    double acts[T * N * C], grad[T * N * C], losses[N];
    for (int i = 0; i < T * N * C; ++i)
        acts[i] = 2 * uniform(&seed) - 1;
    int64_t labels[N * S] = {1, 2, 2, 4, 3, 0}, lab_len[N] = {3, 2}, in_len[N] = {8, 6};
    for (int kind = 0; kind < 2; ++kind) {
        ctcb_problem p = problem_tnc(T, N, C, acts, in_len, labels, S, lab_len, losses, grad);
        ctcb_options o = opts(0, kind);
        CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
        double worst = 0;
        for (int i = 0; i < T * N * C; ++i) {
            const double keep = acts[i], h = 1e-6;
            double lp[N], lm[N];
            p.grad = NULL;
            acts[i] = keep + h;
            p.losses = lp;
            ctcb_ctc_loss(&p, &o);
            acts[i] = keep - h;
            p.losses = lm;
            ctcb_ctc_loss(&p, &o);
            acts[i] = keep;
            const double fd = ((lp[0] + lp[1]) - (lm[0] + lm[1])) / (2 * h);
            const double err = fabs(fd - grad[i]);
            worst = err > worst ? err : worst;
        }
        CHECK(worst < 1e-7, "input kind %d: worst |fd - grad| = %g", kind, worst);
    }
}

/* The scaled recursion and the log-space one agree; threads do not change
 * a single bit; a batch-major view gives the time-major result. */
static void test_scaled_log_threads_layouts(void)
{
    enum { T = 40, N = 9, C = 7, S = 12 };
    uint64_t seed = 11;
    static double acts[T * N * C], ntc[N * T * C];
    static double g1[T * N * C], g2[T * N * C], g3[T * N * C], g4[N * T * C];
    double l1[N], l2[N], l3[N], l4[N];
    int64_t labels[N * S], lab_len[N], in_len[N];
    for (int i = 0; i < T * N * C; ++i)
        acts[i] = 6 * uniform(&seed) - 3;
    for (int n = 0; n < N; ++n) {
        lab_len[n] = (int64_t)(uniform(&seed) * (S + 1));
        in_len[n] = T - (int64_t)(uniform(&seed) * 10);
        for (int i = 0; i < S; ++i)
            labels[n * S + i] = 1 + (int64_t)(uniform(&seed) * (C - 1));
        labels[n * S + 1] = labels[n * S]; /* a repeat in every sample */
    }
    ctcb_problem p = problem_tnc(T, N, C, acts, in_len, labels, S, lab_len, l1, g1);
    ctcb_options o = opts(0, CTCB_INPUT_LOGITS);
    o.num_threads = 1;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    o.num_threads = 4;
    p.losses = l2;
    p.grad = g2;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(memcmp(l1, l2, sizeof l1) == 0 && memcmp(g1, g2, sizeof g1) == 0,
          "results differ between 1 and 4 threads");
    o.flags = CTCB_FLAG_LOG_SPACE;
    p.losses = l3;
    p.grad = g3;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    for (int n = 0; n < N; ++n)
        CLOSE(l1[n], l3[n], 1e-11 * fabs(l3[n]) + 1e-12);
    double worst = 0;
    for (int i = 0; i < T * N * C; ++i)
        worst = fmax(worst, fabs(g1[i] - g3[i]));
    CHECK(worst < 1e-12, "scaled vs log-space gradient differs by %g", worst);
    /* batch-major copy, described by strides */
    for (int t = 0; t < T; ++t)
        for (int n = 0; n < N; ++n)
            for (int c = 0; c < C; ++c)
                ntc[(n * T + t) * C + c] = acts[(t * N + n) * C + c];
    o.flags = 0;
    p.activations = ntc;
    p.act_strides[0] = C;
    p.act_strides[1] = T * C;
    p.grad = g4;
    p.grad_strides[0] = C;
    p.grad_strides[1] = T * C;
    p.losses = l4;
    CHECK(ctcb_ctc_loss(&p, &o) == CTCB_OK, "%s", ctcb_last_error());
    CHECK(memcmp(l1, l4, sizeof l1) == 0, "NTC losses differ from TNC");
    for (int t = 0; t < T; ++t)
        for (int n = 0; n < N; ++n)
            CHECK(g4[(n * T + t) * C + 3] == g1[(t * N + n) * C + 3], "NTC gradient differs");
}

/* float32 agrees with float64 to float precision. */
static void test_float32(void)
{
    enum { T = 30, C = 6, S = 5 };
    uint64_t seed = 3;
    double a64[T * C], g64[T * C], l64;
    float a32[T * C], g32[T * C], l32;
    for (int i = 0; i < T * C; ++i)
        a32[i] = (float)(4 * uniform(&seed) - 2), a64[i] = a32[i];
    int64_t labels[S] = {3, 3, 1, 5, 2};
    ctcb_problem p = problem_tnc(T, 1, C, a64, NULL, labels, S, NULL, &l64, g64);
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "%s", ctcb_last_error());
    p.dtype = CTCB_FLOAT32;
    p.activations = a32;
    p.losses = &l32;
    p.grad = g32;
    CHECK(ctcb_ctc_loss(&p, NULL) == CTCB_OK, "%s", ctcb_last_error());
    CLOSE(l32, l64, 1e-5 * fabs(l64));
    for (int i = 0; i < T * C; ++i)
        CLOSE(g32[i], g64[i], 1e-6);
}

static void expect_status(ctcb_problem *p, const ctcb_options *o, int status, const char *needle)
{
    const int got = ctcb_ctc_loss(p, o);
    CHECK(got == status, "status %d (%s), expected %d; detail: %s", got, ctcb_status_string(got),
          status, ctcb_last_error());
    CHECK(strstr(ctcb_last_error(), needle) != NULL, "detail '%s' lacks '%s'", ctcb_last_error(),
          needle);
}

static void test_errors(void)
{
    double acts[4 * 2 * 3] = {0}, losses[2], grad[24];
    int64_t labels[4] = {1, 2, 1, 0}, in_len[2] = {4, 4}, lab_len[2] = {2, 1};
    ctcb_options o = opts(0, CTCB_INPUT_LOGITS);
    ctcb_problem base = problem_tnc(4, 2, 3, acts, in_len, labels, 2, lab_len, losses, grad);
    ctcb_problem p;

    CHECK(ctcb_ctc_loss(NULL, &o) == CTCB_ERR_NULL_POINTER, "NULL problem");
    p = base; p.losses = NULL;
    expect_status(&p, &o, CTCB_ERR_NULL_POINTER, "losses");
    p = base; p.activations = NULL;
    expect_status(&p, &o, CTCB_ERR_NULL_POINTER, "activations");
    p = base; p.alphabet = 0;
    expect_status(&p, &o, CTCB_ERR_INVALID_SIZE, "alphabet = 0");
    p = base; p.max_time = -1;
    expect_status(&p, &o, CTCB_ERR_INVALID_SIZE, "max_time = -1");
    p = base; o.blank = 3;
    expect_status(&p, &o, CTCB_ERR_INVALID_BLANK, "blank = 3");
    o.blank = 0;
    int64_t bad_labels[4] = {1, 3, 1, 0};
    p = base; p.labels = bad_labels;
    expect_status(&p, &o, CTCB_ERR_INVALID_LABEL, "label 1 of sample 0 is 3");
    int64_t neg_labels[4] = {1, 2, -1, 0};
    p = base; p.labels = neg_labels;
    expect_status(&p, &o, CTCB_ERR_INVALID_LABEL, "is -1");
    int64_t long_in[2] = {4, 5};
    p = base; p.input_lengths = long_in;
    expect_status(&p, &o, CTCB_ERR_INVALID_LENGTH, "input_lengths[1] = 5");
    int64_t neg_in[2] = {-2, 4};
    p = base; p.input_lengths = neg_in;
    expect_status(&p, &o, CTCB_ERR_INVALID_LENGTH, "input_lengths[0] = -2");
    int64_t long_lab[2] = {2, 3};
    p = base; p.label_lengths = long_lab;
    expect_status(&p, &o, CTCB_ERR_INVALID_LENGTH, "label_lengths[1] = 3");
    p = base; p.label_format = CTCB_LABELS_CONCATENATED; p.label_count = 2;
    expect_status(&p, &o, CTCB_ERR_INVALID_LENGTH, "add up to more than the 2");
    ctcb_options bad = o;
    bad.flags = 0x80;
    p = base;
    expect_status(&p, &bad, CTCB_ERR_INVALID_OPTION, "flags");
    bad = o;
    bad.struct_size = 3;
    expect_status(&p, &bad, CTCB_ERR_INVALID_OPTION, "struct_size");
    bad = o;
    bad.infeasible = CTCB_INFEASIBLE_SENTINEL;
    bad.log_zero = INFINITY;
    expect_status(&p, &bad, CTCB_ERR_INVALID_OPTION, "log_zero");
    p = base; p.struct_size = 8;
    expect_status(&p, &o, CTCB_ERR_INVALID_OPTION, "problem.struct_size");
    p = base; p.act_strides[0] = INT64_MAX / 2;
    expect_status(&p, &o, CTCB_ERR_SIZE_OVERFLOW, "act_strides");
    p = base; p.max_time = INT64_MAX / 2; p.batch = 4;
    expect_status(&p, &o, CTCB_ERR_SIZE_OVERFLOW, "overflows");
    /* a workspace nobody can allocate: 2^40 frames of a 1-class alphabet */
    int64_t huge_len[1] = {(int64_t)1 << 40}, no_labels[1] = {0};
    ctcb_problem huge = problem_tnc((int64_t)1 << 40, 1, 1, acts, huge_len, labels, 0, no_labels,
                                    losses, NULL);
    huge.act_strides[0] = 0; /* every frame reads the same element: never reached */
    expect_status(&huge, &o, CTCB_ERR_OUT_OF_MEMORY, "could not allocate");
    CHECK(strcmp(ctcb_status_string(CTCB_ERR_INVALID_LABEL), "invalid label") == 0, "string");
    CHECK(strcmp(ctcb_status_string(999), "unknown status") == 0, "unknown");
    CHECK(ctcb_ctc_loss(&base, &o) == CTCB_OK && ctcb_last_error()[0] == '\0',
          "success clears the message");
}

static void test_version(void)
{
    CHECK(ctcb_abi_version() == CTCB_ABI_VERSION, "abi %d", ctcb_abi_version());
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", CTCB_VERSION_MAJOR, CTCB_VERSION_MINOR,
             CTCB_VERSION_PATCH);
    CHECK(strcmp(ctcb_version(), expected) == 0, "version %s", ctcb_version());
    CHECK(ctcb_workspace_bytes(10, 2, 5) > 0, "workspace");
    CHECK(ctcb_workspace_bytes(INT64_MAX, INT64_MAX, 5) == 0, "overflowing workspace");
}

int main(void)
{
    test_known_uniform();
    test_known_log_probs();
    test_blank_not_zero();
    test_infeasible();
    test_finite_differences();
    test_scaled_log_threads_layouts();
    test_float32();
    test_errors();
    test_version();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all engine tests passed\n");
    return 0;
}
