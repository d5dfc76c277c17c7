/*
 * test_decode.c - C tests of forced alignment, posteriors, greedy and beam
 * decoding, run by ctest.
 *
 * Known answers by hand (including the tie rules), brute force over every
 * path for T <= 5 and C <= 3 (Viterbi = the best path that collapses to the
 * label; greedy = argmax; beam search as wide as C^T = the exact prefix
 * probabilities; posteriors = path-weighted occupancies), float32 against
 * float64, thread-count invariance (bit-identical), batch-major strides,
 * a thread writing to the integer inputs during calls, cancellation and
 * every error status.
 */
#include "ctcbridge.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../src/ctcb_glue.h" /* ctcb_dense_problem: the ctcb_problem of contiguous buffers */

#define CLOSE(a, b, tol) \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%.17g vs %.17g", (double)(a), (double)(b))

enum { MAXT = 8, MAXC = 4, MAXP = 6561 /* 3^8 */ };

static double uniform(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) / 9007199254740992.0;
}

/* A time-major (T, N, C) double input over caller buffers, padded labels. */
static ctcb_decode_input input_tnc(int64_t T, int64_t N, int64_t C, const double *acts,
                                   const int64_t *in_len, const int64_t *labels, int64_t S,
                                   const int64_t *lab_len)
{
    ctcb_decode_input in;
    memset(&in, 0, sizeof in);
    in.struct_size = sizeof in;
    in.dtype = CTCB_FLOAT64;
    in.label_format = CTCB_LABELS_PADDED;
    in.max_time = T;
    in.batch = N;
    in.alphabet = C;
    in.activations = acts;
    in.act_strides[0] = N * C;
    in.act_strides[1] = C;
    in.act_strides[2] = 1;
    in.input_lengths = in_len;
    in.labels = labels;
    in.label_stride = S;
    in.label_lengths = lab_len;
    return in;
}

static ctcb_decode_options dopts(int blank, int kind)
{
    ctcb_decode_options o;
    ctcb_decode_options_init(&o);
    o.blank = blank;
    o.input_kind = kind;
    o.num_threads = 1;
    return o;
}

/* ------------------------------------------------------------ brute force */

/* Collapse a path: merge runs (unless no_merge: TF v1's lattice, where a
 * label occupies one frame), drop blanks.  Returns the length. */
static int collapse_rule(const int *path, int T, int blank, int no_merge, int *out)
{
    int len = 0;
    for (int t = 0; t < T; ++t)
        if (path[t] != blank && (no_merge || t == 0 || path[t] != path[t - 1]))
            out[len++] = path[t];
    return len;
}

static int collapse(const int *path, int T, int blank, int *out)
{
    return collapse_rule(path, T, blank, 0, out);
}

/* Enumerate the C^T paths of log-probs y (T x C): calls visit for each. */
static void next_path(int *path, int T, int C)
{
    for (int t = T - 1; t >= 0; --t) {
        if (++path[t] < C)
            return;
        path[t] = 0;
    }
}

static int ipow(int b, int e)
{
    int r = 1;
    while (e-- > 0)
        r *= b;
    return r;
}

static double lse(double a, double b)
{
    double m = a > b ? a : b;
    return m == -INFINITY ? m : m + log(exp(a - m) + exp(b - m));
}

/* log-softmax rows of x (T x C) into y */
static void log_softmax(const double *x, int T, int C, double *y)
{
    for (int t = 0; t < T; ++t) {
        double m = -INFINITY, s = 0.0;
        for (int c = 0; c < C; ++c)
            m = x[t * C + c] > m ? x[t * C + c] : m;
        for (int c = 0; c < C; ++c)
            s += exp(x[t * C + c] - m);
        for (int c = 0; c < C; ++c)
            y[t * C + c] = (x[t * C + c] - m) - log(s);
    }
}

/* ---------------------------------------------------------- known answers */

static void test_known_align(void)
{
    /* label [1]: b 1 b = .6*.7*.8 beats every other path */
    const double p[6] = {.6, .4, .3, .7, .8, .2};
    double lp[6];
    for (int i = 0; i < 6; ++i)
        lp[i] = log(p[i]);
    int64_t lab[1] = {1}, path[3], idx[3];
    double sc[3];
    ctcb_decode_input in = input_tnc(3, 1, 2, lp, NULL, lab, 1, NULL);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOG_PROBS);
    CHECK(ctcb_forced_align(&in, &o, path, sc, idx) == CTCB_OK, "align");
    CHECK(path[0] == 0 && path[1] == 1 && path[2] == 0, "%lld %lld %lld", (long long)path[0],
          (long long)path[1], (long long)path[2]);
    CHECK(idx[0] == -1 && idx[1] == 0 && idx[2] == -1, "label index");
    CLOSE(sc[0] + sc[1] + sc[2], log(.6 * .7 * .8), 1e-15);

    /* all paths equal: the tie rule (stay first; last label over final blank) */
    double flat[6] = {0};
    CHECK(ctcb_forced_align(&in, &o, path, sc, idx) == CTCB_OK, "align");
    in.activations = flat;
    CHECK(ctcb_forced_align(&in, &o, path, sc, idx) == CTCB_OK, "align");
    CHECK(path[0] == 1 && path[1] == 1 && path[2] == 1, "tie: %lld %lld %lld",
          (long long)path[0], (long long)path[1], (long long)path[2]);

    /* repeated label [1 1] in T=3: the only alignment is 1 b 1; label positions 0, 1 */
    int64_t lab2[2] = {1, 1};
    ctcb_decode_input in2 = input_tnc(3, 1, 2, lp, NULL, lab2, 2, NULL);
    CHECK(ctcb_forced_align(&in2, &o, path, sc, idx) == CTCB_OK, "align");
    CHECK(path[0] == 1 && path[1] == 0 && path[2] == 1, "repeat");
    CHECK(idx[0] == 0 && idx[1] == -1 && idx[2] == 1, "repeat index");
    /* TF v1 no-merge lattice: 1 1 needs no blank; with T=2 it is the only path */
    in2.max_time = 2;
    in2.act_strides[0] = 2;
    o.flags = CTCB_FLAG_NO_MERGE_REPEATED;
    CHECK(ctcb_forced_align(&in2, &o, path, sc, idx) == CTCB_OK, "align no merge");
    CHECK(path[0] == 1 && path[1] == 1 && idx[0] == 0 && idx[1] == 1, "no merge");
    /* but the merge lattice cannot align [1 1] in 2 frames */
    o.flags = 0;
    CHECK(ctcb_forced_align(&in2, &o, path, sc, idx) == CTCB_ERR_INVALID_LENGTH, "infeasible");

    /* padding past the input length, blank not at 0, logits */
    int64_t len[1] = {2}, lab3[1] = {0};
    double x[6] = {1, 5, 2, 3, 0, 0}; /* blank = 1 */
    ctcb_decode_input in3 = input_tnc(3, 1, 2, x, len, lab3, 1, NULL);
    o = dopts(1, CTCB_INPUT_LOGITS);
    o.pad = -7;
    CHECK(ctcb_forced_align(&in3, &o, path, sc, NULL) == CTCB_OK, "align");
    /* b 0 = 5-lse(1,5) + 2-lse(2,3) vs 0 b, 0 0 */
    CHECK(path[0] == 1 && path[1] == 0 && path[2] == -7, "%lld %lld %lld", (long long)path[0],
          (long long)path[1], (long long)path[2]);
    CLOSE(sc[1], 2.0 - (3.0 + log1p(exp(-1.0))), 1e-15);
    CHECK(sc[2] == 0.0, "pad score");
}

static void test_known_greedy_beam(void)
{
    /* rows with argmax 1 1 0 1 (blank 0), and a tie row at the end -> 0 */
    const double x[15] = {0, 2, 1, 0, 3, 1, 5, 1, 1, 0, 4, 1, 2, 2, 2};
    int64_t seq[5], len;
    double score;
    ctcb_decode_input in = input_tnc(5, 1, 3, x, NULL, NULL, 0, NULL);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOG_PROBS);
    CHECK(ctcb_decode_greedy(&in, &o, seq, &len, &score) == CTCB_OK, "greedy");
    CHECK(len == 2 && seq[0] == 1 && seq[1] == 1 && seq[2] == -1, "merged: %lld", (long long)len);
    CLOSE(score, 2 + 3 + 5 + 4 + 2, 0);
    o.merge_repeated = 0;
    CHECK(ctcb_decode_greedy(&in, &o, seq, &len, &score) == CTCB_OK, "greedy");
    CHECK(len == 3 && seq[0] == 1 && seq[1] == 1 && seq[2] == 1, "unmerged: %lld", (long long)len);

    /* Graves's example (TF ctc_beam_search.h): blank last; P(a) = .58 beats
     * P() = .42, which best-path (and a beam of 1) chooses */
    const double p[4] = {.3, .7, .4, .6};
    double lp[4];
    for (int i = 0; i < 4; ++i)
        lp[i] = log(p[i]);
    ctcb_decode_input in2 = input_tnc(2, 1, 2, lp, NULL, NULL, 0, NULL);
    o = dopts(1, CTCB_INPUT_LOG_PROBS);
    o.beam_width = 2;
    o.top_paths = 2;
    int64_t seqs[4], lens[2];
    double scores[2];
    CHECK(ctcb_decode_beam(&in2, &o, seqs, lens, scores) == CTCB_OK, "beam");
    CHECK(lens[0] == 1 && seqs[0] == 0 && lens[1] == 0 && seqs[2] == -1, "beam paths");
    CLOSE(scores[0], log(.58), 1e-15);
    CLOSE(scores[1], log(.42), 1e-15);
    o.beam_width = 1;
    o.top_paths = 1;
    CHECK(ctcb_decode_beam(&in2, &o, seqs, lens, scores) == CTCB_OK, "beam");
    CHECK(lens[0] == 0, "narrow beam");
    CLOSE(scores[0], log(.42), 1e-15);
    /* more paths than prefixes: length 0, score -inf */
    int64_t zero_len[1] = {0};
    in2.input_lengths = zero_len;
    o.beam_width = 3;
    o.top_paths = 2;
    CHECK(ctcb_decode_beam(&in2, &o, seqs, lens, scores) == CTCB_OK, "beam");
    CHECK(lens[0] == 0 && scores[0] == 0.0 && lens[1] == 0 && scores[1] == -INFINITY,
          "empty input");
    /* ties between prefixes: uniform frames, the shorter/lexicographically first wins */
    double flat[6] = {0};
    ctcb_decode_input in3 = input_tnc(2, 1, 3, flat, NULL, NULL, 0, NULL);
    o = dopts(0, CTCB_INPUT_LOGITS);
    o.beam_width = 9;
    o.top_paths = 6;
    int64_t s3[12], l3[6];
    double sc3[6];
    CHECK(ctcb_decode_beam(&in3, &o, s3, l3, sc3) == CTCB_OK, "beam");
    /* prefixes: (1) and (2) 3/9 each, () 1/9, (1 2) (2 1) 1/9 each */
    CHECK(l3[0] == 1 && s3[0] == 1 && l3[1] == 1 && s3[2] == 2, "ties 1");
    CHECK(l3[2] == 0 && l3[3] == 2 && s3[6] == 1 && s3[7] == 2 && l3[4] == 2 && s3[8] == 2,
          "ties 2");
    CHECK(sc3[5] == -INFINITY, "only five prefixes");
}

static void test_known_posteriors(void)
{
    /* T=3, C=3 uniform, label [1]: 6 paths; frame 0: 1bb 11b 111 | b1b bb1 b11 */
    double x[9] = {0};
    int64_t lab[1] = {1};
    double g[9];
    const int64_t ps[3] = {3, 3, 1};
    ctcb_decode_input in = input_tnc(3, 1, 3, x, NULL, lab, 1, NULL);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOGITS);
    CHECK(ctcb_posteriors(&in, &o, g, ps) == CTCB_OK, "posteriors");
    CLOSE(g[0], 0.5, 1e-15);
    CLOSE(g[1], 0.5, 1e-15);
    CHECK(g[2] == 0.0, "class 2 unused");
    CLOSE(g[3 + 1], 4.0 / 6.0, 1e-15); /* frame 1: 11b 111 b1b b11 */
    /* infeasible: NaN rows, 0 past the length */
    int64_t lab2[2] = {1, 1}, len[1] = {2};
    in = input_tnc(3, 1, 3, x, len, lab2, 2, NULL);
    CHECK(ctcb_posteriors(&in, &o, g, ps) == CTCB_OK, "posteriors");
    CHECK(isnan(g[0]) && isnan(g[5]) && g[6] == 0.0 && g[8] == 0.0, "infeasible rows");
}

/* Flat frames tie many prefixes exactly, at every depth: the output must be
 * strictly ordered by (score descending, label sequence ascending), and a
 * beam holding every prefix must hold all the probability. */
static int lex_cmp(const int64_t *a, int64_t la, const int64_t *b, int64_t lb)
{
    for (int64_t i = 0; i < la && i < lb; ++i)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

static void test_beam_order(void)
{
    enum { T = 4, C = 3, B = 81 };
    static double x[T * C];
    static int64_t seq[B * T], len[B];
    static double sc[B];
    for (int blank = 0; blank < C; ++blank) {
        ctcb_decode_input in = input_tnc(T, 1, C, x, NULL, NULL, 0, NULL);
        ctcb_decode_options o = dopts(blank, CTCB_INPUT_LOGITS);
        o.beam_width = B;
        o.top_paths = B;
        CHECK(ctcb_decode_beam(&in, &o, seq, len, sc) == CTCB_OK, "beam");
        double mass = 0.0;
        for (int k = 0; k < B; ++k) {
            if (sc[k] == -INFINITY)
                break;
            mass += exp(sc[k]);
            for (int64_t i = 0; i < len[k]; ++i)
                CHECK(seq[k * T + i] != blank, "blank in a prefix");
            if (k + 1 < B && sc[k + 1] > -INFINITY)
                CHECK(sc[k] > sc[k + 1] ||
                          (sc[k] == sc[k + 1] &&
                           lex_cmp(seq + k * T, len[k], seq + (k + 1) * T, len[k + 1]) < 0),
                      "order at %d", k);
        }
        CLOSE(mass, 1.0, 1e-12);
    }
    /* a long flat input stays fast: ties are settled at the common ancestor */
    enum { LT = 120, LC = 6 };
    static double flat[LT * LC];
    static int64_t lseq[4 * LT], llen[4];
    double lsc[4];
    ctcb_decode_input in = input_tnc(LT, 1, LC, flat, NULL, NULL, 0, NULL);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOGITS);
    o.beam_width = 32;
    o.top_paths = 4;
    CHECK(ctcb_decode_beam(&in, &o, lseq, llen, lsc) == CTCB_OK, "long flat beam");
    for (int k = 0; k + 1 < 4; ++k)
        CHECK(lsc[k] > lsc[k + 1] ||
                  (lsc[k] == lsc[k + 1] &&
                   lex_cmp(lseq + k * LT, llen[k], lseq + (k + 1) * LT, llen[k + 1]) < 0),
              "long order at %d", k);
}

/* ------------------------------------------------- posteriors vs the loss */

/* With log-probability inputs the loss gradient is exactly -gamma: the two
 * engines must agree under every lattice flag, with labels equal to the
 * blank, and on infeasible samples (NaN rows under the +inf policy). */
static void test_posteriors_match_loss(void)
{
    enum { T = 12, N = 5, C = 4, S = 5 };
    static double x[T * N * C], y[T * N * C], grad[T * N * C], post[T * N * C];
    double losses[N];
    /* padded labels, then input lengths, then label lengths (ctcb_glue.h) */
    int64_t ints[N * S + 2 * N] = {0};
    int64_t *labels = ints, *in_len = ints + N * S, *lab_len = ints + N * S + N;
    const int64_t lengths[2 * N] = {12, 9, 4, 12, 7, 5, 3, 4, 0, 5};
    memcpy(in_len, lengths, sizeof lengths);
    uint64_t rng = 77;
    for (int i = 0; i < T * N * C; ++i)
        x[i] = 3.0 * (uniform(&rng) - 0.5);
    log_softmax(x, T * N, C, y); /* rows of (T, N, C) */
    for (int i = 0; i < N * S; ++i)
        labels[i] = (int64_t)(uniform(&rng) * C); /* blank-valued labels too */
    labels[1] = labels[0];                        /* a repeat */
    const unsigned flag_sets[3] = {0, CTCB_FLAG_NO_MERGE_REPEATED, CTCB_FLAG_WARP_BLANK_LABELS};
    for (int f = 0; f < 3; ++f) {
        ctcb_problem p;
        ctcb_dense_problem(&p, CTCB_FLOAT64, 0, T, N, C, S, y, ints, losses, grad);
        ctcb_options lo;
        ctcb_options_init(&lo);
        lo.input_kind = CTCB_INPUT_LOG_PROBS;
        lo.flags = flag_sets[f];
        lo.blank = 1;
        CHECK(ctcb_ctc_loss(&p, &lo) == CTCB_OK, "loss: %s", ctcb_last_error());
        ctcb_decode_input in = input_tnc(T, N, C, y, in_len, labels, S, lab_len);
        ctcb_decode_options o = dopts(1, CTCB_INPUT_LOG_PROBS);
        o.flags = flag_sets[f];
        const int64_t ps[3] = {N * C, C, 1};
        CHECK(ctcb_posteriors(&in, &o, post, ps) == CTCB_OK, "posteriors");
        int nan_rows = 0;
        for (int i = 0; i < T * N * C; ++i) {
            if (isnan(grad[i])) {
                CHECK(isnan(post[i]), "flags %u, element %d: NaN expected", flag_sets[f], i);
                ++nan_rows;
            } else {
                CLOSE(post[i], -grad[i] + 0.0, 1e-12);
            }
        }
        if (f == 0)
            CHECK(nan_rows > 0, "an infeasible sample expected (sample 2)");
    }
}

/* ------------------------------------------------------------ brute force */

static void test_brute_force(void)
{
    uint64_t rng = 12345;
    int path[MAXT], col[MAXT];
    for (int iter = 0; iter < 80; ++iter) {
        const int T = 1 + (int)(uniform(&rng) * 5);      /* 1..5 */
        const int C = 2 + (int)(uniform(&rng) * 2);      /* 2..3 */
        const int blank = (int)(uniform(&rng) * C);
        const int logits = iter & 1;
        const int no_merge = (iter & 2) != 0; /* the lattice of align and posteriors */
        double x[MAXT * MAXC], y[MAXT * MAXC];
        for (int i = 0; i < T * C; ++i)
            x[i] = 3.0 * (uniform(&rng) - 0.5);
        if (logits)
            log_softmax(x, T, C, y);
        else
            memcpy(y, x, sizeof(double) * (size_t)(T * C)); /* unnormalised log-probs */
        /* a random feasible label without the blank */
        int64_t lab[MAXT];
        int L = (int)(uniform(&rng) * (T + 1));
        for (int i = 0; i < L; ++i) {
            int v = (int)(uniform(&rng) * (C - 1));
            lab[i] = v >= blank ? v + 1 : v;
        }
        while (L > 0) {
            int need = L;
            for (int i = 1; i < L && !no_merge; ++i)
                need += lab[i] == lab[i - 1];
            if (need <= T)
                break;
            --L;
        }
        /* enumerate */
        const int P = ipow(C, T);
        double best = -INFINITY, total = -INFINITY, occ[MAXT * MAXC];
        for (int i = 0; i < T * C; ++i)
            occ[i] = -INFINITY;
        /* exact prefix probabilities: index prefixes by their path id */
        static double prefix_lp[MAXP];
        static int prefix_of[MAXP];
        memset(path, 0, sizeof path);
        for (int q = 0; q < P; ++q, next_path(path, T, C)) {
            double lp = 0.0;
            for (int t = 0; t < T; ++t)
                lp += y[t * C + path[t]];
            const int len = collapse_rule(path, T, blank, no_merge, col);
            /* a canonical id of the collapsed sequence: the first path seen */
            prefix_of[q] = q;
            prefix_lp[q] = -INFINITY;
            int same = len == L;
            for (int i = 0; same && i < L; ++i)
                same = col[i] == lab[i];
            if (same) {
                best = lp > best ? lp : best;
                total = lse(total, lp);
                for (int t = 0; t < T; ++t)
                    occ[t * C + path[t]] = lse(occ[t * C + path[t]], lp);
            }
        }
        /* prefix table: for each path, the sum over paths with the same collapse */
        int nprefix = 0;
        static int pre_len[MAXP], pre_seq[MAXP][MAXT];
        static double pre_lp[MAXP];
        memset(path, 0, sizeof path);
        for (int q = 0; q < P; ++q, next_path(path, T, C)) {
            double lp = 0.0;
            for (int t = 0; t < T; ++t)
                lp += y[t * C + path[t]];
            const int len = collapse(path, T, blank, col);
            int k = 0;
            for (; k < nprefix; ++k)
                if (pre_len[k] == len && !memcmp(pre_seq[k], col, sizeof(int) * (size_t)len))
                    break;
            if (k == nprefix) {
                pre_len[k] = len;
                memcpy(pre_seq[k], col, sizeof(int) * (size_t)len);
                pre_lp[k] = -INFINITY;
                ++nprefix;
            }
            pre_lp[k] = lse(pre_lp[k], lp);
        }
        ctcb_decode_options o = dopts(blank, logits ? CTCB_INPUT_LOGITS : CTCB_INPUT_LOG_PROBS);
        o.flags = no_merge ? CTCB_FLAG_NO_MERGE_REPEATED : 0;
        ctcb_decode_input in = input_tnc(T, 1, C, x, NULL, lab, L, NULL);

        /* Viterbi */
        int64_t ap[MAXT], ai[MAXT];
        double as[MAXT];
        CHECK(ctcb_forced_align(&in, &o, ap, as, ai) == CTCB_OK, "align iter %d", iter);
        int apath[MAXT];
        double sum = 0.0;
        for (int t = 0; t < T; ++t) {
            apath[t] = (int)ap[t];
            sum += as[t];
            CHECK(as[t] == y[t * C + ap[t]] || fabs(as[t] - y[t * C + ap[t]]) < 1e-15,
                  "frame score iter %d", iter);
        }
        int alen = collapse_rule(apath, T, blank, no_merge, col);
        int ok = alen == L;
        for (int i = 0; ok && i < L; ++i)
            ok = col[i] == lab[i];
        CHECK(ok, "iter %d: the Viterbi path does not collapse to the label", iter);
        CLOSE(sum, best, 1e-12);

        /* posteriors */
        double g[MAXT * MAXC];
        const int64_t ps[3] = {C, C, 1};
        CHECK(ctcb_posteriors(&in, &o, g, ps) == CTCB_OK, "posteriors iter %d", iter);
        for (int t = 0; t < T; ++t) {
            double rs = 0.0;
            for (int c = 0; c < C; ++c) {
                rs += g[t * C + c];
                CLOSE(g[t * C + c], exp(occ[t * C + c] - total), 1e-12);
            }
            CLOSE(rs, 1.0, 1e-12);
        }

        /* greedy */
        int64_t gs[MAXT], gl;
        double gsc;
        CHECK(ctcb_decode_greedy(&in, &o, gs, &gl, &gsc) == CTCB_OK, "greedy iter %d", iter);
        int am[MAXT];
        double amsum = 0.0;
        for (int t = 0; t < T; ++t) {
            am[t] = 0;
            for (int c = 1; c < C; ++c)
                if (x[t * C + c] > x[t * C + am[t]])
                    am[t] = c;
            amsum += y[t * C + am[t]];
        }
        int glen = collapse(am, T, blank, col);
        ok = glen == gl;
        for (int i = 0; ok && i < glen; ++i)
            ok = col[i] == gs[i];
        CHECK(ok, "greedy iter %d", iter);
        CLOSE(gsc, amsum, 1e-12);
        o.merge_repeated = 0; /* TF v1: only the blanks go */
        CHECK(ctcb_decode_greedy(&in, &o, gs, &gl, &gsc) == CTCB_OK, "greedy iter %d", iter);
        glen = collapse_rule(am, T, blank, 1, col);
        ok = glen == gl;
        for (int i = 0; ok && i < glen; ++i)
            ok = col[i] == gs[i];
        CHECK(ok, "greedy without merging, iter %d", iter);

        /* beam as wide as the number of paths: exact prefix probabilities */
        o.beam_width = P;
        o.top_paths = nprefix < 4 ? nprefix : 4;
        const int K = o.top_paths;
        int64_t bs[4 * MAXT], bl[4];
        double bsc[4];
        CHECK(ctcb_decode_beam(&in, &o, bs, bl, bsc) == CTCB_OK, "beam iter %d", iter);
        /* the exact top K by selection */
        int used[MAXP] = {0};
        for (int k = 0; k < K; ++k) {
            int arg = -1;
            for (int q = 0; q < nprefix; ++q)
                if (!used[q] && (arg < 0 || pre_lp[q] > pre_lp[arg]))
                    arg = q;
            used[arg] = 1;
            CLOSE(bsc[k], pre_lp[arg], 1e-12);
            ok = bl[k] == pre_len[arg];
            for (int i = 0; ok && i < pre_len[arg]; ++i)
                ok = bs[k * T + i] == pre_seq[arg][i];
            CHECK(ok, "beam iter %d path %d", iter, k);
        }
    }
}

/* ----------------------------------------- threads, layouts, float32 */

enum { BN = 7, BT = 24, BC = 5, BS = 6, BK = 3 };

typedef struct outputs {
    int64_t path[BN * BT], idx[BN * BT], gseq[BN * BT], glen[BN], bseq[BN * BK * BT],
        blen[BN * BK];
    double ascore[BN * BT], post[BT * BN * BC], gscore[BN], bscore[BN * BK];
    float fascore[BN * BT], fpost[BT * BN * BC], fgscore[BN], fbscore[BN * BK];
} outputs;

static void run_all(const ctcb_decode_input *in, ctcb_decode_options o, outputs *out,
                    const int64_t post_strides[3])
{
    const int f32 = in->dtype == CTCB_FLOAT32;
    CHECK(ctcb_forced_align(in, &o, out->path, f32 ? (void *)out->fascore : out->ascore,
                            out->idx) == CTCB_OK,
          "align");
    CHECK(ctcb_posteriors(in, &o, f32 ? (void *)out->fpost : out->post, post_strides) == CTCB_OK,
          "posteriors");
    CHECK(ctcb_decode_greedy(in, &o, out->gseq, out->glen,
                             f32 ? (void *)out->fgscore : out->gscore) == CTCB_OK,
          "greedy");
    o.beam_width = 8;
    o.top_paths = BK;
    CHECK(ctcb_decode_beam(in, &o, out->bseq, out->blen,
                           f32 ? (void *)out->fbscore : out->bscore) == CTCB_OK,
          "beam");
}

static void test_batch_properties(void)
{
    static double x[BT * BN * BC], xb[BN * BT * BC];
    static float xf[BT * BN * BC];
    int64_t in_len[BN], lab_len[BN], labels[BN * BS];
    uint64_t rng = 99;
    for (int i = 0; i < BT * BN * BC; ++i) {
        x[i] = 4.0 * (uniform(&rng) - 0.5);
        xf[i] = (float)x[i];
    }
    for (int n = 0; n < BN; ++n) {
        in_len[n] = n == 3 ? 0 : BT - 3 * n;
        lab_len[n] = n == 3 ? 0 : (n * 5) % (BS + 1);
        for (int i = 0; i < BS; ++i)
            labels[n * BS + i] = 1 + (int64_t)(uniform(&rng) * (BC - 1)); /* blank 0 */
        labels[n * BS + 1] = labels[n * BS]; /* a repeat */
        for (int t = 0; t < BT; ++t)
            for (int c = 0; c < BC; ++c)
                xb[(n * BT + t) * BC + c] = x[(t * BN + n) * BC + c];
    }
    ctcb_decode_input in = input_tnc(BT, BN, BC, x, in_len, labels, BS, lab_len);
    const int64_t ps[3] = {BN * BC, BC, 1};
    static outputs one, other;
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOGITS);
    run_all(&in, o, &one, ps);
    for (int threads = 2; threads <= 3; ++threads) {
        o.num_threads = threads;
        memset(&other, 0x55, sizeof other);
        run_all(&in, o, &other, ps);
        CHECK(!memcmp(one.path, other.path, sizeof one.path) &&
                  !memcmp(one.ascore, other.ascore, sizeof one.ascore) &&
                  !memcmp(one.idx, other.idx, sizeof one.idx) &&
                  !memcmp(one.post, other.post, sizeof one.post) &&
                  !memcmp(one.gseq, other.gseq, sizeof one.gseq) &&
                  !memcmp(one.glen, other.glen, sizeof one.glen) &&
                  !memcmp(one.gscore, other.gscore, sizeof one.gscore) &&
                  !memcmp(one.bseq, other.bseq, sizeof one.bseq) &&
                  !memcmp(one.blen, other.blen, sizeof one.blen) &&
                  !memcmp(one.bscore, other.bscore, sizeof one.bscore),
              "%d threads differ from 1", threads);
    }
    /* batch-major (N, T, C) input, posteriors written batch-major too */
    ctcb_decode_input inb = in;
    inb.activations = xb;
    inb.act_strides[0] = BC;
    inb.act_strides[1] = BT * BC;
    const int64_t psb[3] = {BC, BT * BC, 1};
    o.num_threads = 2;
    memset(&other, 0, sizeof other);
    run_all(&inb, o, &other, psb);
    int same = !memcmp(one.path, other.path, sizeof one.path) &&
               !memcmp(one.ascore, other.ascore, sizeof one.ascore) &&
               !memcmp(one.gseq, other.gseq, sizeof one.gseq) &&
               !memcmp(one.bseq, other.bseq, sizeof one.bseq) &&
               !memcmp(one.bscore, other.bscore, sizeof one.bscore);
    for (int n = 0; n < BN; ++n)
        for (int t = 0; t < BT; ++t)
            for (int c = 0; c < BC; ++c)
                same &= one.post[(t * BN + n) * BC + c] == other.post[(n * BT + t) * BC + c];
    CHECK(same, "batch-major layout differs");
    /* every used posterior row sums to 1, rows past the length are 0 */
    for (int n = 0; n < BN; ++n)
        for (int t = 0; t < BT; ++t) {
            double s = 0.0;
            for (int c = 0; c < BC; ++c)
                s += one.post[(t * BN + n) * BC + c];
            CLOSE(s, t < in_len[n] ? 1.0 : 0.0, 1e-12);
        }
    /* float32: the same paths, scores within float rounding */
    ctcb_decode_input inf = in;
    inf.dtype = CTCB_FLOAT32;
    inf.activations = xf;
    memset(&other, 0, sizeof other);
    run_all(&inf, o, &other, ps);
    CHECK(!memcmp(one.path, other.path, sizeof one.path), "float32 path");
    CHECK(!memcmp(one.gseq, other.gseq, sizeof one.gseq), "float32 greedy");
    CHECK(!memcmp(one.bseq, other.bseq, sizeof one.bseq), "float32 beam");
    for (int i = 0; i < BN * BT; ++i)
        CLOSE(other.fascore[i], one.ascore[i], 1e-5);
    for (int i = 0; i < BT * BN * BC; ++i)
        CLOSE(other.fpost[i], one.post[i], 1e-5);
    for (int i = 0; i < BN; ++i)
        CLOSE(other.fgscore[i], one.gscore[i], 1e-4);
    for (int i = 0; i < BN * BK; ++i)
        CHECK(fabs(other.fbscore[i] - one.bscore[i]) <= 1e-4 ||
                  (one.bscore[i] == -INFINITY && other.fbscore[i] == -INFINITY),
              "float32 beam score");
    /* a NaN in a used frame: NaN results for that sample only */
    x[(2 * BN + 1) * BC + 3] = NAN;
    o.num_threads = 1;
    memset(&other, 0, sizeof other);
    run_all(&in, o, &other, ps);
    CHECK(isnan(other.ascore[1 * BT + 0]) && other.path[1 * BT] == -1, "NaN align");
    CHECK(isnan(other.post[(0 * BN + 1) * BC]), "NaN posteriors");
    CHECK(isnan(other.gscore[1]) && other.glen[1] == 0, "NaN greedy");
    CHECK(isnan(other.bscore[1 * BK]) && other.blen[1 * BK] == 0, "NaN beam");
    CHECK(other.gscore[0] == one.gscore[0] && other.bscore[0] == one.bscore[0], "other samples");
    x[(2 * BN + 1) * BC + 3] = 0.0;
}

/* ------------------------------------------------------------ wide rows */

/* Rows wider than the scan's block (the vectorised path of a contiguous row):
 * the greedy argmax is the first maximum wherever it lies, strided rows
 * agree, NaN and +inf anywhere in a row make the sample NaN; the aligner on
 * log-probabilities reads only the lattice's classes of a large alphabet
 * and finds what it finds on those classes alone. */
enum { WIDE_C = 300, WIDE_T = 6 };

static void test_wide_rows(void)
{
    static double x[WIDE_T * WIDE_C], xs[WIDE_T * WIDE_C * 2];
    static float xf[WIDE_T * WIDE_C];
    uint64_t st = 99;
    for (int i = 0; i < WIDE_T * WIDE_C; ++i)
        x[i] = -10.0 + uniform(&st);
    /* the maxima: first at 5 (ties at 70, 200), at 64 (a block edge), at 299
     * (the last block), at 0, ties at 63 and 64, one row all equal */
    const int at[WIDE_T] = {5, 64, 299, 0, 63, 0};
    for (int t = 0; t < WIDE_T; ++t)
        x[t * WIDE_C + at[t]] = 3.0;
    x[0 * WIDE_C + 70] = x[0 * WIDE_C + 200] = 3.0;
    x[4 * WIDE_C + 64] = 3.0;
    for (int c = 0; c < WIDE_C; ++c)
        x[5 * WIDE_C + c] = -1.0;
    for (int i = 0; i < WIDE_T * WIDE_C; ++i) {
        xf[i] = (float)x[i];
        xs[2 * i] = x[i];
        xs[2 * i + 1] = 1e9; /* strided rows: every other element, never read */
    }
    ctcb_decode_input in = input_tnc(WIDE_T, 1, WIDE_C, x, NULL, NULL, 0, NULL);
    ctcb_decode_input inf = in, ins = in;
    inf.dtype = CTCB_FLOAT32;
    inf.activations = xf;
    ins.activations = xs;
    for (int k = 0; k < 3; ++k)
        ins.act_strides[k] *= 2;
    ctcb_decode_options o = dopts(7, CTCB_INPUT_LOG_PROBS); /* no frame's argmax */
    o.merge_repeated = 0;
    const ctcb_decode_input *ins_all[3] = {&in, &inf, &ins};
    for (int v = 0; v < 3; ++v) {
        int64_t seq[WIDE_T], len = -1;
        double score = 0.0;
        float fscore = 0.0f;
        CHECK(ctcb_decode_greedy(ins_all[v], &o, seq, &len,
                                 v == 1 ? (void *)&fscore : (void *)&score) == CTCB_OK,
              "wide greedy %d", v);
        CHECK(len == WIDE_T, "wide greedy %d: length %lld", v, (long long)len);
        for (int t = 0; t < WIDE_T; ++t)
            CHECK(seq[t] == at[t], "wide greedy %d, frame %d: %lld, expected %d", v, t,
                  (long long)seq[t], at[t]);
        CLOSE(v == 1 ? fscore : score, 5 * 3.0 - 1.0, 1e-6);
    }
    /* logits: the score is the sum of the frames' log-softmax at the argmax */
    o.input_kind = CTCB_INPUT_LOGITS;
    double expected = 0.0;
    for (int t = 0; t < WIDE_T; ++t) {
        double sum = 0.0;
        for (int c = 0; c < WIDE_C; ++c)
            sum += exp(x[t * WIDE_C + c] - x[t * WIDE_C + at[t]]);
        expected -= log(sum);
    }
    for (int v = 0; v < 3; ++v) {
        int64_t seq[WIDE_T], len;
        double score = 0.0;
        float fscore = 0.0f;
        CHECK(ctcb_decode_greedy(ins_all[v], &o, seq, &len,
                                 v == 1 ? (void *)&fscore : (void *)&score) == CTCB_OK,
              "wide greedy logits %d", v);
        CLOSE(v == 1 ? fscore : score, expected, v == 1 ? 1e-5 : 1e-12);
    }
    /* NaN or +inf anywhere in a row, -inf allowed */
    const double poison[2] = {NAN, INFINITY};
    for (int p = 0; p < 2; ++p)
        for (int c = 0; c < WIDE_C; c += 37) {
            const double keep = x[3 * WIDE_C + c];
            x[3 * WIDE_C + c] = poison[p];
            x[2 * WIDE_C + 1] = -INFINITY;
            int64_t seq[WIDE_T], len;
            double score = 0.0;
            o.input_kind = CTCB_INPUT_LOG_PROBS;
            CHECK(ctcb_decode_greedy(&in, &o, seq, &len, &score) == CTCB_OK, "poisoned greedy");
            CHECK(isnan(score) && len == 0, "greedy: %g at class %d is not seen", poison[p], c);
            x[3 * WIDE_C + c] = keep;
        }
    x[2 * WIDE_C + 1] = -10.0;

    /* alignment of 2 labels over 300 classes = alignment over the 3 classes
     * it reads (log-probabilities are used as given) */
    enum { AL = 2, AC = 3 };
    int64_t lab[AL] = {70, 5}, lab3[AL] = {1, 2};
    const int64_t keep_cls[AC] = {WIDE_C - 1, 70, 5}; /* blank, labels */
    double x3[WIDE_T * AC];
    for (int t = 0; t < WIDE_T; ++t)
        for (int j = 0; j < AC; ++j)
            x3[t * AC + j] = x[t * WIDE_C + keep_cls[j]];
    ctcb_decode_input wide = input_tnc(WIDE_T, 1, WIDE_C, x, NULL, lab, AL, NULL);
    ctcb_decode_input narrow = input_tnc(WIDE_T, 1, AC, x3, NULL, lab3, AL, NULL);
    ctcb_decode_options ow = dopts(WIDE_C - 1, CTCB_INPUT_LOG_PROBS), on = dopts(0, CTCB_INPUT_LOG_PROBS);
    int64_t pw[WIDE_T], pn[WIDE_T], iw[WIDE_T], in3[WIDE_T];
    double sw[WIDE_T], sn[WIDE_T];
    CHECK(ctcb_forced_align(&wide, &ow, pw, sw, iw) == CTCB_OK, "wide align");
    CHECK(ctcb_forced_align(&narrow, &on, pn, sn, in3) == CTCB_OK, "narrow align");
    for (int t = 0; t < WIDE_T; ++t) {
        CHECK(pw[t] == keep_cls[pn[t]] && iw[t] == in3[t] && sw[t] == sn[t],
              "frame %d: wide %lld (%g), narrow %lld (%g)", t, (long long)pw[t], sw[t],
              (long long)pn[t], sn[t]);
    }
    /* log-probs: a NaN in a class the lattice does not read changes nothing,
     * one in a class it reads makes the sample NaN; logits read every class */
    x[2 * WIDE_C + 150] = NAN;
    int64_t p2[WIDE_T], i2[WIDE_T];
    double s2[WIDE_T];
    CHECK(ctcb_forced_align(&wide, &ow, p2, s2, i2) == CTCB_OK, "align, NaN elsewhere");
    CHECK(!memcmp(p2, pw, sizeof pw) && !memcmp(s2, sw, sizeof sw), "a NaN outside the lattice");
    ctcb_decode_options ol = dopts(WIDE_C - 1, CTCB_INPUT_LOGITS);
    CHECK(ctcb_forced_align(&wide, &ol, p2, s2, i2) == CTCB_OK, "align logits, NaN");
    CHECK(isnan(s2[0]) && p2[0] == -1, "logits: a NaN anywhere makes the sample NaN");
    x[2 * WIDE_C + 150] = -10.0;
    x[2 * WIDE_C + 70] = INFINITY;
    CHECK(ctcb_forced_align(&wide, &ow, p2, s2, i2) == CTCB_OK, "align, +inf in a label");
    CHECK(isnan(s2[0]) && p2[0] == -1, "log-probs: +inf in a label's class makes the sample NaN");
}

/* --------------------------------------------------- concurrent writers */

/* Another thread flips the last sample's label, label length and input
 * length between valid and absurd values during the calls: each call sees
 * one read of each, so it fails with a clear status or succeeds, and the
 * other samples' results never change. */
enum { WT = 20, WN = 3, WC = 5, WS = 4, WCALLS = 120 };

typedef struct writer_args {
    int64_t *labels, *in_len, *lab_len;
    int stop;
} writer_args;

static void *writer(void *arg)
{
    writer_args *w = (writer_args *)arg;
    const int64_t last = WN * WS - 1;
    for (unsigned round = 0; !__atomic_load_n(&w->stop, __ATOMIC_RELAXED); ++round) {
        __atomic_store_n(&w->labels[last], (int64_t)1 << 40, __ATOMIC_RELAXED);
        __atomic_store_n(&w->lab_len[WN - 1], (int64_t)1 << 40, __ATOMIC_RELAXED);
        __atomic_store_n(&w->in_len[WN - 1], -((int64_t)1 << 40), __ATOMIC_RELAXED);
        if (round & 1)
            sched_yield(); /* so that both states are seen */
        __atomic_store_n(&w->labels[last], 2, __ATOMIC_RELAXED);
        __atomic_store_n(&w->lab_len[WN - 1], WS, __ATOMIC_RELAXED);
        __atomic_store_n(&w->in_len[WN - 1], WT, __ATOMIC_RELAXED);
        sched_yield(); /* lets Valgrind, which runs one thread at a time, switch */
    }
    return NULL;
}

static void test_concurrent_writer(void)
{
    static double x[WT * WN * WC], post[WT * WN * WC], ref_post[WT * WN * WC];
    int64_t labels[WN * WS], in_len[WN], lab_len[WN];
    int64_t path[WN * WT], ref_path[WN * WT], seq[WN * WT], len[WN], ref_seq[WN * WT];
    uint64_t rng = 5;
    for (int i = 0; i < WT * WN * WC; ++i)
        x[i] = 4.0 * uniform(&rng) - 2.0;
    for (int i = 0; i < WN * WS; ++i)
        labels[i] = 1 + (int64_t)(uniform(&rng) * (WC - 1));
    labels[WN * WS - 1] = 2;
    for (int n = 0; n < WN; ++n) {
        in_len[n] = WT;
        lab_len[n] = WS;
    }
    const int64_t ps[3] = {WN * WC, WC, 1};
    ctcb_decode_input in = input_tnc(WT, WN, WC, x, in_len, labels, WS, lab_len);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOGITS);
    o.num_threads = 2;
    o.beam_width = 4;
    CHECK(ctcb_forced_align(&in, &o, ref_path, NULL, NULL) == CTCB_OK, "reference");
    CHECK(ctcb_posteriors(&in, &o, ref_post, ps) == CTCB_OK, "reference");
    CHECK(ctcb_decode_beam(&in, &o, ref_seq, len, NULL) == CTCB_OK, "reference");
    writer_args w = {labels, in_len, lab_len, 0};
    pthread_t id;
    CHECK(pthread_create(&id, NULL, writer, &w) == 0, "pthread_create");
    int ok = 0, errors = 0;
    for (int call = 0; call < WCALLS; ++call) {
        const int kind = call % 3;
        const int status = kind == 0   ? ctcb_forced_align(&in, &o, path, NULL, NULL)
                           : kind == 1 ? ctcb_posteriors(&in, &o, post, ps)
                                       : ctcb_decode_beam(&in, &o, seq, len, NULL);
        if (status != CTCB_OK) {
            CHECK(status == CTCB_ERR_INVALID_LABEL || status == CTCB_ERR_INVALID_LENGTH,
                  "call %d: status %d", call, status);
            ++errors;
            continue;
        }
        ++ok;
        /* the samples nobody writes to are untouched, bit for bit */
        if (kind == 0)
            CHECK(!memcmp(path, ref_path, (WN - 1) * WT * sizeof *path), "call %d: path", call);
        else if (kind == 2)
            CHECK(!memcmp(seq, ref_seq, (WN - 1) * WT * sizeof *seq), "call %d: beam", call);
        else
            for (int t = 0; t < WT; ++t)
                CHECK(!memcmp(&post[t * WN * WC], &ref_post[t * WN * WC],
                              (WN - 1) * WC * sizeof *post),
                      "call %d: posteriors of frame %d", call, t);
    }
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
    pthread_join(id, NULL);
    printf("concurrent writer: %d calls succeeded, %d reported the changed sample\n", ok, errors);
}

/* ---------------------------------------------------------------- errors */

static void test_errors(void)
{
    double x[12] = {0};
    int64_t lab[2] = {1, 2}, len[2] = {3, 3}, path[6], seq[6], lens[2];
    double g[12];
    const int64_t ps[3] = {4, 2, 1};
    ctcb_decode_input in = input_tnc(3, 2, 2, x, len, lab, 1, NULL);
    ctcb_decode_options o = dopts(0, CTCB_INPUT_LOGITS);
    in.alphabet = 2;
    lab[1] = 1;
    CHECK(ctcb_forced_align(&in, &o, path, NULL, NULL) == CTCB_OK, "baseline");
    CHECK(ctcb_forced_align(NULL, &o, path, NULL, NULL) == CTCB_ERR_NULL_POINTER, "null input");
    CHECK(ctcb_forced_align(&in, &o, NULL, NULL, NULL) == CTCB_ERR_NULL_POINTER, "null path");
    CHECK(ctcb_decode_greedy(&in, &o, NULL, lens, NULL) == CTCB_ERR_NULL_POINTER, "null seq");
    CHECK(ctcb_decode_greedy(&in, &o, seq, NULL, NULL) == CTCB_ERR_NULL_POINTER, "null lengths");
    CHECK(ctcb_posteriors(&in, &o, NULL, ps) == CTCB_ERR_NULL_POINTER, "null posteriors");
    CHECK(ctcb_posteriors(&in, &o, g, NULL) == CTCB_ERR_NULL_POINTER, "null post_strides");
    CHECK(ctcb_decode_options_init(NULL) == CTCB_ERR_NULL_POINTER, "null options");
    ctcb_decode_input bad = in;
    bad.struct_size = 8;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "input size");
    ctcb_decode_options bo = o;
    bo.struct_size = 4;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "opt size");
    bo = o;
    bo.input_kind = 7;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "kind");
    bo = o;
    bo.flags = 0x100;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "flags");
    bo = o;
    bo.num_threads = -1;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "threads");
    bo = o;
    bo.merge_repeated = 2;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "merge");
    bo = o;
    bo.beam_width = 0;
    CHECK(ctcb_decode_beam(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "beam 0");
    bo.beam_width = 2;
    bo.top_paths = 3;
    CHECK(ctcb_decode_beam(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "top > beam");
    bo.top_paths = 0;
    CHECK(ctcb_decode_beam(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "top 0");
    bad = in;
    bad.max_time = -1;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_INVALID_SIZE, "T < 0");
    bad = in;
    bad.batch = -1;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_INVALID_SIZE, "N < 0");
    bad = in;
    bad.alphabet = 0;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_INVALID_SIZE, "C < 1");
    bo = o;
    bo.blank = 2;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_ERR_INVALID_BLANK, "blank");
    bad = in;
    bad.dtype = 5;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_INVALID_OPTION, "dtype");
    bad = in;
    bad.label_format = 5;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_OPTION, "format");
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_OK, "decoders ignore labels");
    bad = in;
    bad.act_strides[1] = INT64_MAX;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_SIZE_OVERFLOW, "strides");
    const int64_t huge[3] = {INT64_MIN, 1, 1};
    CHECK(ctcb_posteriors(&in, &o, g, huge) == CTCB_ERR_SIZE_OVERFLOW, "post strides");
    bad = in;
    bad.activations = NULL;
    CHECK(ctcb_decode_greedy(&bad, &o, seq, lens, NULL) == CTCB_ERR_NULL_POINTER, "acts");
    len[1] = 4;
    CHECK(ctcb_decode_greedy(&in, &o, seq, lens, NULL) == CTCB_ERR_INVALID_LENGTH, "in len");
    len[1] = 3;
    int64_t lab_len[2] = {1, -1};
    bad = in;
    bad.label_lengths = lab_len;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LENGTH, "lab len");
    lab_len[1] = 2;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LENGTH, "> stride");
    bad = in;
    bad.label_format = CTCB_LABELS_CONCATENATED;
    bad.label_lengths = NULL;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_NULL_POINTER, "concat");
    lab_len[0] = lab_len[1] = 1;
    bad.label_lengths = lab_len;
    bad.label_count = 1;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LENGTH, "count");
    bad.label_count = -1;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_SIZE, "count < 0");
    bad.label_count = 2;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_OK, "concatenated ok");
    bad = in;
    bad.labels = NULL;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_NULL_POINTER, "labels");
    bad.label_stride = -1;
    CHECK(ctcb_forced_align(&bad, &o, path, NULL, NULL) == CTCB_ERR_INVALID_SIZE, "stride");
    lab[1] = 2;
    CHECK(ctcb_forced_align(&in, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LABEL, "label");
    lab[1] = 0;
    CHECK(ctcb_forced_align(&in, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LABEL, "blank label");
    CHECK(ctcb_posteriors(&in, &o, g, ps) == CTCB_OK, "posteriors accept a blank label");
    lab[1] = 1;
    len[1] = 0;
    CHECK(ctcb_forced_align(&in, &o, path, NULL, NULL) == CTCB_ERR_INVALID_LENGTH, "infeasible");
    len[1] = 3;
    /* cancel before the call: the engine stops at its first look */
    const int32_t stop = 1;
    bo = o;
    bo.cancel = &stop;
    CHECK(ctcb_decode_beam(&in, &bo, seq, lens, NULL) == CTCB_ERR_CANCELLED, "cancel");
    CHECK(ctcb_forced_align(&in, &bo, path, NULL, NULL) == CTCB_ERR_CANCELLED, "cancel");
    /* an empty batch is fine with NULL outputs */
    bad = in;
    bad.batch = 0;
    CHECK(ctcb_decode_beam(&bad, &o, NULL, NULL, NULL) == CTCB_OK, "empty batch");
    /* an older, smaller options struct gets the defaults for the rest */
    bo = o;
    bo.struct_size = offsetof(ctcb_decode_options, merge_repeated);
    bo.merge_repeated = 5;
    CHECK(ctcb_decode_greedy(&in, &bo, seq, lens, NULL) == CTCB_OK, "small options");
}

int main(void)
{
    test_known_align();
    test_known_greedy_beam();
    test_known_posteriors();
    test_beam_order();
    test_brute_force();
    test_posteriors_match_loss();
    test_batch_properties();
    test_wide_rows();
    test_errors();
    test_concurrent_writer();
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures != 0;
}
