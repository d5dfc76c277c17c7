"""The JAX bridge: ``jax.custom_jvp`` around the engine.

With concrete arrays the engine runs directly (errors keep their types).
Under tracing (``jax.jit``, ``grad``, ``vmap``) there are two routes:

- the custom call: a signature whose call carries a ``traced["jax"]`` (its
  numpy ``prepare`` written with jnp ops, returning a
  :class:`~ctcbridge._contract.Traced`) runs the
  engine as an XLA FFI custom call (``ctcb_xla_ffi_ctc_loss`` in the engine
  library, registered with ``jax.ffi``), on CPU, for float32/float64: a
  jitted program calls C directly, with no Python per call.  Inputs the jnp
  preparation does not settle (invalid values that must raise the numpy
  path's errors, a native's own value for infeasible samples) switch, inside
  the program (``lax.cond``), to the route below.
- ``jax.pure_callback`` (``vmap_method="sequential"``) around the numpy path:
  every other signature, other platforms and dtypes, and the cases above.

Derivatives use the engine's own gradient either way: ``jax.jvp`` and
``jacfwd`` through the JVP rule (the loss is linear in its tangent given the
gradient), ``jax.grad``, ``vjp`` and ``jacrev`` through JAX's transpose of that
rule.  Second derivatives raise ``CTCSecondDerivativeError``.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compute, _engine as _lib, _threads
from .._options import EngineOptions
from .._contract import CTCCall, run, shape_of
from .._numerics import logsumexp
from ..errors import CTCSecondDerivativeError
from .base import Bridge


def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


_FFI_TARGET = "ctcbridge_ctc_loss"
_FFI_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ffi_lock = threading.Lock()
_ffi_ready: bool | None = None


# the custom call is used from the jax versions it was tested with (0.10.2, 0.11.2)
_FFI_MIN_JAX = (0, 10)


def _as_jax(a):
    """``jnp.asarray(a)``, except that a jax array (or tracer) is returned as is:
    under eager autodiff ``asarray`` of a tracer binds a conversion primitive,
    which JAX then linearizes and transposes, op by op (so does a same-dtype
    ``astype``)."""
    return a if isinstance(a, jax.Array) else jnp.asarray(a)


def _jax_version() -> tuple:
    parts = []
    for p in jax.__version__.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _ffi_registered() -> bool:
    """Register the engine's XLA FFI handler once; False if the library lacks it."""
    global _ffi_ready
    with _ffi_lock:
        if _ffi_ready is None and _jax_version() < _FFI_MIN_JAX:
            # older XLA runtimes do not read the handler's API version the way
            # the handler answers it (seen with jax 0.7.1: "handler's API version
            # (0.0) is incompatible"): keep pure_callback there
            _ffi_ready = False
        if _ffi_ready is None:
            try:
                handler = _lib.load().ctcb_xla_ffi_ctc_loss
                jax.ffi.register_ffi_target(_FFI_TARGET, jax.ffi.pycapsule(handler),
                                            platform="cpu")
                _ffi_ready = True
            except (AttributeError, ImportError):  # an engine built before the handler
                _ffi_ready = False
    return _ffi_ready


def _ffi_options(options: dict) -> dict:
    """_compute.compute's options -> the custom call's attributes (int64 and a
    float64 ``log_zero``: the types the handler declares)."""
    attrs = EngineOptions.of(options).attributes()
    return {k: np.float64(v) if k == "log_zero" else np.int64(v) for k, v in attrs.items()}


def _custom_call(call: CTCCall, x, aux, want_grad: bool):
    """The engine as an XLA custom call, or None where that route does not apply."""
    prepare = call.traced.get("jax")
    if prepare is None or x.dtype not in _FFI_DTYPES or not _ffi_registered():
        return None
    t = prepare(x, *aux)
    if t is None:
        return None
    acts = t.activations
    n = call.batch_size(tuple(x.shape))
    outs = [jax.ShapeDtypeStruct((n,), acts.dtype)]
    if want_grad:
        outs.append(jax.ShapeDtypeStruct(acts.shape, acts.dtype))
    ints = [jnp.asarray(a).astype(jnp.int32) for a in (t.labels, t.input_lengths,
                                                       t.label_lengths)]
    # read when the program is traced: a compiled program keeps its thread count
    attrs = _ffi_options({"num_threads": BRIDGE.num_threads(), **t.options})
    # XLA allocates the gradient of this route: refuse, while tracing, a call that
    # cannot fit (the numpy path checks the same before allocating)
    T, N, C = (acts.shape if t.options.get("layout", "TNC") == "TNC"
               else (acts.shape[1], acts.shape[0], acts.shape[2]))
    _compute.check_memory(T, t.labels.shape[1], T, N, C, int(attrs["num_threads"]), want_grad,
                          acts.dtype.itemsize)

    def on_cpu():
        res = jax.ffi.ffi_call(_FFI_TARGET, outs, vmap_method="sequential")(acts, *ints, **attrs)
        losses = res[0]
        grad = res[1] if want_grad else None
        if grad is not None and t.grad_back is not None:
            grad = t.grad_back(grad)
        if t.needs_numpy is None:
            return losses, grad
        return jax.lax.cond(t.needs_numpy(losses),
                            lambda: _callback(call, x, aux, want_grad),
                            lambda: (losses, grad))

    # the handler is registered for the CPU only; elsewhere the callback runs
    return jax.lax.platform_dependent(cpu=on_cpu,
                                      default=lambda: _callback(call, x, aux, want_grad))


# XLA's CPU client aliases a host buffer instead of copying it when it is aligned so
_XLA_ALIGNMENT = 64


def _from_host(arr: np.ndarray, dtype):
    """An engine result as a jax array: the numpy buffer itself where XLA can alias it
    (``device_put`` of a C-contiguous, 64-byte aligned array of the right dtype on
    the CPU: no copy), else one copy.  The result is ours alone, never written again."""
    arr = np.asarray(arr)
    if (arr.dtype == dtype and arr.flags.c_contiguous
            and arr.ctypes.data % _XLA_ALIGNMENT == 0):
        return jax.device_put(arr)
    return jnp.asarray(arr, dtype)  # unaligned: jnp's copy is cheaper than device_put's


def _engine(call: CTCCall, x, aux, want_grad: bool):
    dtype = x.dtype
    if _is_concrete(x, *aux):
        # np.asarray of a CPU jax.Array is a read-only view of its buffer: the engine
        # reads the activations in place (a device array is copied to the host once)
        losses, grad = run(call, np.asarray(x), *[np.asarray(a) for a in aux],
                           want_grad=want_grad, bridge=BRIDGE)
        return _from_host(losses, dtype), (_from_host(grad, dtype) if want_grad else None)
    done = _custom_call(call, x, aux, want_grad)
    losses, grad = done if done is not None else _callback(call, x, aux, want_grad)
    return _vary_like(x, losses), (None if grad is None else _vary_like(x, grad))


def _vary_like(ref, y):
    """``y`` varying over the manual mesh axes ``ref`` varies over (``shard_map``):
    the engine's outputs depend on its inputs, and ``custom_vjp`` requires the
    gradient to have the activations' exact type."""
    if not hasattr(jax, "typeof") or not hasattr(jax.lax, "pcast"):  # older JAX: no such types
        return y
    missing = tuple(sorted(_varying(ref) - _varying(y)))
    return jax.lax.pcast(y, missing, to="varying") if missing else y


def _varying(x) -> frozenset:
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))  # JAX 0.7 - 0.9


def _callback(call: CTCCall, x, aux, want_grad: bool):
    """The numpy path through jax.pure_callback."""
    n = call.batch_size(tuple(x.shape))
    dtype = x.dtype

    def callback(xv, *av):
        losses, grad = run(call, np.asarray(xv), *[np.asarray(a) for a in av],
                           want_grad=want_grad, bridge=BRIDGE)
        losses = np.asarray(losses, dtype)
        return (losses, np.asarray(grad, dtype)) if want_grad else losses

    shapes = jax.ShapeDtypeStruct((n,), dtype)
    if want_grad:
        shapes = (shapes, jax.ShapeDtypeStruct(x.shape, dtype))
        losses, grad = jax.pure_callback(callback, shapes, x, *aux, vmap_method="sequential")
        return losses, grad
    return jax.pure_callback(callback, shapes, x, *aux, vmap_method="sequential"), None


# The loss is a ``jax.custom_jvp``: given the engine's gradient G, the loss is
# linear in its tangent, d loss[n] = <G[n], dx[n]>.  Forward mode (``jax.jvp``,
# ``jacfwd``) uses that rule directly; reverse mode (``grad``, ``vjp``, ``jacrev``)
# is JAX's transpose of the same linear map (the cotangent g[n] times G[n]), with
# the engine run once, in the forward, for the losses and G together.


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _ctc(call, x, *aux):
    return _engine(call, x, aux, want_grad=False)[0]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _ctc_and_grad(call, x, *aux):
    """(losses, the engine's gradient): the rule's residual, whose own derivative
    (a second derivative of the loss) is refused in its rule below."""
    return _engine(call, x, aux, want_grad=True)


@_ctc_and_grad.defjvp
def _ctc_and_grad_jvp(call, primals, tangents):
    raise CTCSecondDerivativeError(
        "ctcbridge computes first derivatives of the CTC loss only: a second derivative "
        "(jax.hessian, a jvp or grad of the gradient) is not implemented; use optax.ctc_loss "
        "where second derivatives are needed")


def _per_sample_dot(grad, tangent, batch_axis, shape):
    """sum over each sample's entries of grad * tangent: the losses' tangent."""
    prod = grad * tangent.astype(grad.dtype)
    axes = tuple(i for i in range(prod.ndim) if i != batch_axis)
    return prod.sum(axis=axes).reshape(shape)


@_ctc.defjvp
def _ctc_jvp(call, primals, tangents):
    x, *aux = primals
    losses, grad = _ctc_and_grad(call, x, *aux)
    # the paddings' and lengths' tangents are ignored: the loss is piecewise constant
    # in them (the divergence optax-padding-gradient)
    dx = tangents[0]
    return losses, _vary_like(losses, _per_sample_dot(grad, dx, call.batch_axis,
                                                         losses.shape))


_jitted: dict = {}


def _compiled(call: CTCCall):
    """``_ctc`` for one call, under ``jax.jit`` (one per call key).

    Traced but not jitted (eager ``jax.grad``, ``vmap``) the loss would run
    the custom call's jnp preparation op by op; inside ``jit`` it compiles
    once, and under an enclosing ``jit`` it is simply inlined."""
    # repr: a NaN static must still find its entry; the thread count is traced in
    key = (repr(call.key), BRIDGE.num_threads())
    fn = _jitted.get(key)
    if fn is None:
        fn = _jitted[key] = jax.jit(partial(_ctc, call))
    return fn


@lru_cache(maxsize=None)  # XLA's flags and devices are fixed once its backend is up
def _default_threads() -> int:
    # XLA has no public intra-op setting: its CPU pool spans every core (one thread
    # without eigen's multithreading), shared by the local devices
    if "--xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", ""):
        return 1
    return max(1, _threads.available_cores() // jax.local_device_count())


class JaxBridge(Bridge):
    name = "jax"
    converts = True

    def ctc(self, call: CTCCall, activations, aux):
        x = self.asarray(activations)
        aux = [self.asarray(a) for a in aux]
        if _is_concrete(x, *aux) or not call.key:  # concrete: numpy path, errors keep types
            losses = _ctc(call, x, *aux)
        else:
            losses = _compiled(call)(x, *aux)
        if call.at_least_default_float:  # e.g. optax: float64 under JAX_ENABLE_X64
            dtype = jnp.promote_types(losses.dtype, jnp.result_type(float))
            if dtype != losses.dtype:
                losses = losses.astype(dtype)
        return losses

    def default_threads(self) -> int:
        return _default_threads()

    def asarray(self, x, like=None):
        return _as_jax(x)

    def astype(self, x, like):
        return _as_jax(x).astype(like.dtype)

    def sum(self, x):
        return x.sum()

    def mean(self, x):
        return x.mean()

    def maximum(self, x, value):
        return jnp.maximum(x, value)

    def reshape(self, x, shape):
        return jnp.reshape(x, shape)

    def stack(self, arrays, axis):
        return jnp.stack([_as_jax(a) for a in arrays], axis)

    def convert_asarray(self, x):
        return x

    def transpose(self, x, axes):
        return jnp.transpose(x, axes)

    def take_classes(self, x, index):
        return x[..., jnp.asarray(index)]

    def log(self, x):
        return jnp.log(x)

    def class_log_softmax(self, x):
        return x - logsumexp(x, keepdims=True, xp=jnp)

    def class_softmax(self, x):
        return jnp.exp(x - logsumexp(x, keepdims=True, xp=jnp))

    def unstack(self, x):
        return [x[t] for t in range(x.shape[0])]

    def grad_of_sum(self, fn, x, arrays, statics, order):
        conv = {k: jnp.asarray(v) for k, v in arrays.items()}
        f = lambda z: fn(**order(fn, z, conv), **statics)  # noqa: E731
        out = f(jnp.asarray(x))
        grad = jax.grad(lambda z: f(z).sum())(jnp.asarray(x))
        return np.asarray(out), np.asarray(grad)

    def device_moves(self, device):
        dev = jax.devices(device)[0]
        return (lambda v: jax.device_put(v, dev) if isinstance(v, jax.Array) else v,
                lambda out: jax.device_put(out, jax.devices("cpu")[0]))

    def log_softmax(self, x):
        return jax.nn.log_softmax(x, axis=-1)

    def call_with_frames(self, fn, x, **kwargs):
        # split and reshape, whose gradient is one concatenation: jax.grad through T
        # indexings x[i] costs O(T^2) (minutes for T = 2048); and under one jit, as
        # eager jax compiles the T-way split and the adapter's T-way stack op by op
        # (about a minute for T = 2048, ~4 s jitted)
        T = shape_of(x)[0]
        return jax.jit(lambda z: fn(x=[f.reshape(f.shape[1:]) for f in jnp.split(z, T)],
                                    **kwargs))(x)


BRIDGE = JaxBridge()
