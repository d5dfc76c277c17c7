"""What a signature asks of the engine, independent of any framework.

A signature module builds a :class:`CTCCall`: a ``prepare`` function that
receives the activations and the auxiliary arrays (labels, lengths,
paddings...) as numpy arrays and returns the canonical engine call, and the
shape facts a framework needs before it has the values (batch size and axis,
for symbolic tracing).  Bridges run :func:`run` on numpy values, eagerly or
inside their framework's callback mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _compute as canonical, _threads


@dataclass
class Prepared:
    """The canonical call for concrete arrays, and how to map its gradient back."""

    activations: np.ndarray
    labels: Any
    kwargs: dict
    grad_back: Callable[[np.ndarray], np.ndarray] | None = None  # engine grad -> input layout
    post: Callable[[np.ndarray, Any], tuple] | None = None  # (losses, grad or None) -> same


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
    # the same preparation with the framework's own ops on traced arrays, for the
    # compiled routes (the XLA custom call, the TF custom op); None: numpy only
    jax_prepare: Callable | None = None
    tf_prepare: Callable | None = None


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


def run(call: CTCCall, activations: np.ndarray, *aux: np.ndarray, want_grad: bool = True,
        framework: str = "numpy"):
    """(losses (N,), grad shaped like `activations` or None), numpy.

    ``framework``: the bridge calling, whose intra-op thread setting the engine
    follows unless ``ctcbridge.set_num_threads`` says otherwise; it is read
    here, at every engine call, on whatever thread the framework runs it."""
    prep = call.prepare(np.asarray(activations), *[np.asarray(a) for a in aux])
    kwargs = {"num_threads": _threads.engine_threads(framework), **prep.kwargs}
    losses, grad = canonical.compute(prep.activations, prep.labels, want_grad=want_grad,
                                     **kwargs)
    if grad is not None and prep.grad_back is not None:
        grad = prep.grad_back(grad)
    if prep.post is not None:  # e.g. a native's own value for infeasible samples
        losses, grad = prep.post(losses, grad)
    return losses, grad
