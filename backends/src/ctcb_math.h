/*
 * ctcb_math.h - branch-free exponentials that the compiler can vectorise.
 *
 * glibc's exp/expf are scalar calls through the PLT (about 4 ns each here);
 * the engine needs one exponential per (frame, class) for the softmax and one
 * per (frame, state) for the emissions, so these inline versions, written
 * with plain arithmetic, integer shifts and selects, let the loops that call
 * them run 4 (double) or 8 (float) lanes wide.
 *
 * Method: x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r)
 * by its Taylor polynomial (degree 12 for double: truncation < 2e-16; degree 7
 * for float: < 6e-9), 2^n built directly in the exponent bits.  Results below
 * the smallest normal number are flushed to 0 (exp(-708) for double,
 * exp(-87) for float), which is exact enough for probabilities that are
 * summed with terms of order 1; -inf gives 0, +inf gives +inf, NaN stays NaN.
 * The _nonpos variants take arguments <= 0 only (a softmax's exp(x - max)):
 * without the overflow clamp and select, their loops are markedly cheaper.
 */
#ifndef CTCB_MATH_H
#define CTCB_MATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__)
#  define CTCB_INLINE static inline __attribute__((always_inline))
#else
#  define CTCB_INLINE static inline
#endif

CTCB_INLINE double ctcb_exp_f64_impl(double x, int may_overflow)
{
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: rounds to an integer */
    /* Comparisons are false for NaN, so NaN flows through the clamps. */
    double xc = x < -708.0 ? -708.0 : x;
    if (may_overflow)
        xc = xc > 709.0 ? 709.0 : xc;
    double kd = xc * log2e + shifter;
    uint64_t ki;
    memcpy(&ki, &kd, sizeof ki); /* low bits of kd hold n = round(xc / ln2) */
    kd -= shifter;
    double r = (xc - kd * ln2_hi) - kd * ln2_lo;
    double p = 1.0 / 479001600.0;        /* 1/12! */
    p = p * r + 1.0 / 39916800.0;        /* 1/11! */
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* n + 1023 lies in [1, 2046] after the clamps: a normal exponent. */
    uint64_t bits = (ki + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double y = p * scale;
    y = x < -708.0 ? 0.0 : y;
    if (may_overflow)
        y = x > 709.0 ? (double)INFINITY : y;
    return y;
}

CTCB_INLINE double ctcb_exp_f64(double x)
{
    return ctcb_exp_f64_impl(x, 1);
}

/* exp(x) for x <= 0 (or NaN, or -inf), as a softmax's exp(x - max) is: no
 * overflow to guard, two selects fewer per element. */
CTCB_INLINE double ctcb_exp_nonpos_f64(double x)
{
    return ctcb_exp_f64_impl(x, 0);
}

/* exp(x) for x <= 0 (or NaN, or -inf): no overflow to guard (the engine's
 * float exps are all a softmax's exp(x - max)). */
CTCB_INLINE float ctcb_exp_nonpos_f32(float x)
{
    const float log2e = 1.44269504f;
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x < -87.0f ? -87.0f : x;
    float kf = xc * log2e + shifter;
    uint32_t ki;
    memcpy(&ki, &kf, sizeof ki);
    kf -= shifter;
    float r = (xc - kf * ln2_hi) - kf * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits = (ki + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < -87.0f ? 0.0f : y;
    return y;
}

#endif /* CTCB_MATH_H */
