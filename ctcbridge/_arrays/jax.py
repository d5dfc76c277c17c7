"""The JAX bridge: ``jax.custom_vjp`` around the engine.

With concrete arrays the engine runs directly (errors keep their types);
under ``jax.jit``/``vmap`` tracing it runs through ``jax.pure_callback``
(``vmap_method="sequential"``), so the loss works inside compiled and
vectorised code; ``jax.grad`` uses the engine's own gradient.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .call import CTCCall, run


def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _engine(call: CTCCall, x, aux, want_grad: bool):
    n = call.batch_size(tuple(x.shape))
    dtype = x.dtype
    if _is_concrete(x, *aux):
        losses, grad = run(call, np.asarray(x), *[np.asarray(a) for a in aux],
                           want_grad=want_grad)
        return jnp.asarray(losses, dtype), (jnp.asarray(grad, dtype) if want_grad else None)

    def callback(xv, *av):
        losses, grad = run(call, np.asarray(xv), *[np.asarray(a) for a in av],
                           want_grad=want_grad)
        losses = np.asarray(losses, dtype)
        return (losses, np.asarray(grad, dtype)) if want_grad else losses

    shapes = jax.ShapeDtypeStruct((n,), dtype)
    if want_grad:
        shapes = (shapes, jax.ShapeDtypeStruct(x.shape, dtype))
        losses, grad = jax.pure_callback(callback, shapes, x, *aux, vmap_method="sequential")
        return losses, grad
    return jax.pure_callback(callback, shapes, x, *aux, vmap_method="sequential"), None


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ctc(call, x, *aux):
    return _engine(call, x, aux, want_grad=False)[0]


def _ctc_fwd(call, x, *aux):
    losses, grad = _engine(call, x, aux, want_grad=True)
    return losses, (grad, aux)


def _ctc_bwd(call, residuals, g):
    grad, aux = residuals
    if call.batch_axis is None:
        scaled = grad * g.reshape(())
    else:
        shape = [1] * grad.ndim
        shape[call.batch_axis] = -1
        scaled = grad * g.reshape(shape).astype(grad.dtype)
    return (scaled,) + tuple(None for _ in aux)


_ctc.defvjp(_ctc_fwd, _ctc_bwd)


class JaxBridge:
    name = "jax"

    def ctc(self, call: CTCCall, activations, aux):
        x = jnp.asarray(activations)
        return _ctc(call, x, *[jnp.asarray(a) for a in aux])

    def asarray(self, x, like=None):
        return jnp.asarray(x)

    def astype(self, x, like):
        return jnp.asarray(x).astype(like.dtype)

    def sum(self, x):
        return x.sum()

    def mean(self, x):
        return x.mean()

    def maximum(self, x, value):
        return jnp.maximum(x, value)

    def reshape(self, x, shape):
        return jnp.reshape(x, shape)


BRIDGE = JaxBridge()


def grad_of_sum(fn, x, arrays, statics, order):
    """Conformance runner (see ``_signature_rows.run_on``): losses and d sum / d x."""
    conv = {k: jnp.asarray(v) for k, v in arrays.items()}
    f = lambda z: fn(**order(fn, z, conv), **statics)  # noqa: E731
    out = f(jnp.asarray(x))
    grad = jax.grad(lambda z: f(z).sum())(jnp.asarray(x))
    return np.asarray(out), np.asarray(grad)
