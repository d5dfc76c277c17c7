/*
 * ctcb_kernels.c - instantiates ctcb_kernel.inc for float and double.
 *
 * On x86-64 with GCC or Clang each instantiation is also compiled for
 * x86-64-v3 (AVX2 + FMA) and the loader picks the best clone for the CPU at
 * run time (target_clones), so one binary is portable and fast.
 */
#include "ctcb_internal.h"

#include <math.h>

#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
     (defined(__clang__) && __clang_major__ >= 14)) && !defined(CTCB_NO_CLONES)
#  define CTCB_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#  define CTCB_KERNEL
#endif

#define REAL float
#define SFX(name) name##_f32
#define EXP_NONPOS_REAL ctcb_exp_nonpos_f32
#include "ctcb_kernel.inc"
#undef REAL
#undef SFX
#undef EXP_NONPOS_REAL

#define REAL double
#define SFX(name) name##_f64
#define EXP_NONPOS_REAL ctcb_exp_nonpos_f64
#include "ctcb_kernel.inc"
#undef REAL
#undef SFX
#undef EXP_NONPOS_REAL
