/*
 * ctcb_xla_ffi.h - the engine library's XLA FFI handler, apart from the
 * engine's own API (ctcbridge.h): only a program embedding the engine in XLA
 * needs it.
 */
#ifndef CTCB_XLA_FFI_H
#define CTCB_XLA_FFI_H

#include "ctcbridge.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XLA FFI handler (xla/ffi/api/c_api.h, API 0.x) running ctcb_ctc_loss as a
 * custom call, for JAX's jax.ffi.register_ffi_target; operands, results and
 * attributes are described in backends/src/ctcb_xla_ffi.c. */
struct XLA_FFI_CallFrame;
struct XLA_FFI_Error;
CTCB_API struct XLA_FFI_Error *ctcb_xla_ffi_ctc_loss(struct XLA_FFI_CallFrame *frame);

#ifdef __cplusplus
}
#endif

#endif /* CTCB_XLA_FFI_H */
