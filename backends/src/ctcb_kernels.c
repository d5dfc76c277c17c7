/*
 * ctcb_kernels.c - instantiates ctcb_kernel.inc for float and double.
 *
 * On x86-64 with GCC or Clang each instantiation is also compiled for
 * x86-64-v3 (AVX2 + FMA) and the loader picks the best clone for the CPU at
 * run time (target_clones), so one binary is portable and fast.
 */
#include "ctcb_internal.h"

#include <math.h>

#define CTCB_KERNEL CTCB_CLONES /* ctcb_internal.h */

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
