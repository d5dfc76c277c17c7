"""The contract between the signature modules and the bridges.

A signature module builds a :class:`CTCCall`: a ``prepare`` function that
receives the activations and the auxiliary arrays (labels, lengths,
paddings...) as numpy arrays and returns the canonical engine call, and the
shape facts a framework needs before it has the values (batch size and axis,
for symbolic tracing).  Bridges run :func:`run` on numpy values, eagerly or
inside their framework's callback mechanism.

Signatures speak only this module (and :mod:`ctcbridge.errors`): besides the
call it holds the few helpers every signature needs to read its arguments
(:func:`shape_of`, :func:`integral`, :func:`as_int`, :func:`reraise_as`).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _compute, _threads
from ._compute import _as_int as as_int
from .errors import CTCError, CTCTypeError, EngineError

__all__ = ["CTCCall", "Prepared", "Traced", "factory", "make", "rebuild", "call_of", "run", "shape_of",
           "integral", "as_int", "reraise_as"]


@dataclass
class Prepared:
    """The canonical call for concrete arrays, and how to map its gradient back."""

    activations: np.ndarray
    labels: Any
    kwargs: dict
    grad_back: Callable[[np.ndarray], np.ndarray] | None = None  # engine grad -> input layout
    post: Callable[[np.ndarray, Any], tuple] | None = None  # (losses, grad or None) -> same


@dataclass
class Traced:
    """A signature's ``prepare`` done with one framework's ops on traced arrays, for
    that framework's compiled route (the XLA custom call, the TF custom op).

    The canonical engine call: padded ``labels`` (N, S), ``input_lengths`` and
    ``label_lengths`` (N,), integer arrays; ``options`` as for
    ``_compute.compute`` (blank, layout, inputs, infeasible, log_zero...);
    ``grad_back`` maps the engine's gradient to the activations' layout, and
    ``needs_numpy(losses)`` is a boolean scalar, true where the numpy path must
    decide instead (it raises the errors, or applies a ``post``)."""

    activations: Any
    labels: Any
    input_lengths: Any
    label_lengths: Any
    options: dict
    grad_back: Callable | None = None
    needs_numpy: Callable | None = None


@dataclass
class CTCCall:
    """A deferred canonical call.

    prepare(activations, *aux) -> Prepared, all numpy.
    batch_size(shape) -> N from the activations' shape; batch_axis: the axis of
    the activations that indexes samples (None: one unbatched sample).
    """

    prepare: Callable[..., Prepared]
    batch_size: Callable[[tuple], int]
    batch_axis: int | None
    key: tuple = field(default=())
    # the same preparation with a framework's own ops, by bridge name, for its
    # compiled route: traced[name](activations, *aux) -> Traced, or None where
    # the numpy path must run; a framework without an entry runs numpy only
    traced: dict = field(default_factory=dict)
    # per-call flags, set by the signature, honoured by the bridges that have the idiom:
    # compute_grad=False: a graph node without the gradient output (Theano's Op; the
    #   other frameworks compute the gradient only when asked anyway)
    compute_grad: bool = True
    # head_grad=False: the backward ignores the output's gradient, as MXNet's WarpCTC
    #   plugin did (on MXNet arrays; elsewhere autodiff needs the chain rule)
    head_grad: bool = True
    # the result has at least the framework's default float precision, where the
    #   framework has that rule (jax: jnp.result_type(float), optax's result)
    at_least_default_float: bool = False
    # float32/float64 activations only, as torch's own ctc_loss: half precision raises
    #   NotImplementedError outside autocast (torch bridge; the other signatures compute
    #   it in float32 and return its dtype)
    full_precision_only: bool = False


_FACTORIES: dict = {}


def factory(name: str):
    """Register how a signature builds its CTCCall from its static arguments.

    ``make(name, *static)`` then builds (and keys) a call, and ``rebuild(key)``
    rebuilds one from its key alone: torch.compile's fake kernels see only the
    key string, never the Python objects of the traced code."""

    def register(fn):
        _FACTORIES[name] = fn
        return fn

    return register


def make(name: str, *static) -> CTCCall:
    call = _FACTORIES[name](*static)
    call.key = (name, *static)
    return call


def rebuild(key: tuple) -> CTCCall:
    return make(*key)


_BY_KEY: dict = {}


def call_of(key) -> CTCCall:
    """The call of a key, a tuple or its ``repr`` string, rebuilt the first time and
    kept: compiled code (torch.compile's fake kernels, MXNet CustomOp parameters,
    PyTensor/Theano Op props) carries only the key, never the Python objects."""
    call = _BY_KEY.get(key)
    if call is None:
        call = _BY_KEY[key] = rebuild(ast.literal_eval(key) if isinstance(key, str) else key)
    return call


def run(call: CTCCall, activations: np.ndarray, *aux: np.ndarray, want_grad: bool = True,
        bridge=None):
    """(losses (N,), grad shaped like `activations` or None), numpy.

    ``bridge``: the bridge calling, whose thread count (``engine_threads()``:
    the framework's intra-op setting unless ``ctcbridge.set_num_threads`` says
    otherwise) the engine follows; it is read here, at every engine call, on
    whatever thread the framework runs it.  None: numpy's (every core)."""
    prep = call.prepare(np.asarray(activations), *[np.asarray(a) for a in aux])
    threads = bridge.engine_threads() if bridge is not None else (_threads.setting() or 0)
    kwargs = {"num_threads": threads, **prep.kwargs}
    losses, grad = _compute.compute(prep.activations, prep.labels, want_grad=want_grad,
                                    **kwargs)
    if grad is not None and prep.grad_back is not None:
        grad = prep.grad_back(grad)
    if prep.post is not None:  # e.g. a native's own value for infeasible samples
        losses, grad = prep.post(losses, grad)
    return losses, grad


# --- reading a signature's arguments


def shape_of(x) -> tuple:
    """The shape of an array of any framework (or of nested lists); for symbolic
    variables (PyTensor, Theano) the static shape, None where a size is unknown."""
    root = type(x).__module__.split(".", 1)[0]  # no framework is imported to ask
    if root == "pytensor":
        return tuple(x.type.shape)
    if root == "theano":  # Theano 1.0.5 knows only which sizes are 1
        return tuple(1 if b else None for b in x.broadcastable)
    if root == "mxnet" and not hasattr(x, "shape"):  # a Symbol's is known only at binding
        return ()
    shape = getattr(x, "shape", None)
    if shape is None:
        return np.shape(x)
    try:
        return tuple(shape)
    except TypeError:  # TF TensorShape with unknown rank
        return ()


def integral(arr: np.ndarray, name: str, error=None) -> np.ndarray:
    """An int64 copy of integer values; `error` (a CTCError subclass) otherwise."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise (error or CTCTypeError)(f"{name} must be integral, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def reraise_as(error_type):
    """Decorator: re-raise every ctcbridge error of the call as `error_type`
    (keeping the message), for signatures whose native raises one type."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except CTCError as exc:
                # an engine failure (memory) is not about the input: it keeps its type
                if isinstance(exc, (error_type, EngineError)):
                    raise
                raise error_type(str(exc)) from None

        return inner

    return wrap
