"""Helpers shared by the signature modules."""

from __future__ import annotations

import functools

import numpy as np

from .errors import CTCError, EngineError


def shape_of(x) -> tuple:
    """The shape of an array of any framework (or of nested lists); for symbolic
    variables (PyTensor, Theano) the static shape, None where a size is unknown."""
    root = type(x).__module__.split(".", 1)[0]  # no framework is imported to ask
    if root == "pytensor":
        return tuple(x.type.shape)
    if root == "theano":  # Theano 1.0.5 knows only which sizes are 1
        return tuple(1 if b else None for b in x.broadcastable)
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
        from .errors import CTCTypeError

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
