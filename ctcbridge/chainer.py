"""Chainer's CTC signature, on any framework's arrays.

Mirrors ``chainer.functions.connectionist_temporal_classification(x, t,
blank_symbol, input_length=None, label_length=None, reduce='mean')``
(chainer 7.8.1):

- ``x``: a list or tuple of T arrays (or ``chainer.Variable``) of shape
  (B, V), unnormalised logits (softmax is applied inside); float16, float32
  or float64.  A single 3-D array is refused, as in Chainer.
- ``t``: (B, M) int32 labels; the padding past ``label_length`` must still be
  a valid index (Chainer indexes with it).  Negative labels count from the
  end (``-1`` is class V - 1), as Chainer's indexing reads them.
- ``blank_symbol``: a Python ``int`` in [0, V) (a numpy integer is refused).
- ``input_length``, ``label_length``: (B,) int32, or None for T and M.
- ``reduce``: ``'mean'`` (the batch mean of the losses; no division by the
  label lengths) or ``'no'`` ((B,) per-sample losses).

A sample without a valid alignment gets Chainer's own finite value: the
arithmetic of its log(0) stand-in -1e10 (-1e4 for float16), about 1e10 plus a
partial NLL, and the gradient of that arithmetic, from a port of Chainer's
lattice computed in the input's dtype (as Chainer does).  Feasible samples get
the exact loss and gradient (computed in double; Chainer's recursion runs in
the input dtype).

Where Chainer is broken or undefined ctcbridge differs (see the divergence
file): no NaN gradient on the padded frames of such samples; an input length
of 0 means no frame (Chainer reads the whole sequence); lengths outside [0, T]
and [0, M] raise (Chainer wraps indices around); a sample mixing a negative
label with the class it aliases raises (Chainer's gradient then drops one of
them); feasible samples stay exact where float32/float16 softmax underflows
(Chainer's log(0) stand-in turns them into ~1e10).

Errors keep Chainer's types and messages: ``TypeError`` for ``x`` and
``blank_symbol``, ``AssertionError`` for the blank's range, ``ValueError``
for ``reduce``, ``chainer.utils.type_check.InvalidType`` (when chainer is
imported; :class:`~ctcbridge.errors.CTCTypeError` otherwise, with the same
message) for dtypes and shapes, ``IndexError`` for labels out of range.
Every one is also a :class:`~ctcbridge.errors.CTCError`.

On chainer Variables the loss is a ``chainer.FunctionNode`` (differentiable
w.r.t. ``x`` only); on torch, jax or tensorflow arrays it is that
framework's differentiable op; on numpy arrays a numpy result.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, factory, make, shape_of
from ._natives import chainer as chainer_native
from .errors import (ChainerAssertionError, ChainerIndexError, CTCTypeError, CTCValueError,
                     chainer_invalid_type)

__all__ = ["connectionist_temporal_classification"]

_REDUCE = ("mean", "no")
_NODE = "ConnectionistTemporalClassification"


def invalid_type(expect: str, actual: str, function: str = _NODE) -> Exception:
    """Chainer's ``InvalidType`` (type_check) with its message (see
    :func:`ctcbridge.errors.chainer_invalid_type`)."""
    msg = (f"\nInvalid operation is performed in: {function} (Forward)\n\n"
           f"Expect: {expect}\nActual: {actual}")
    return chainer_invalid_type(msg, expect, actual)


_INT32 = "<class 'numpy.int32'>"


def _check_types(x, t, input_length, label_length):
    """Chainer's check_type_forward, in its order (numpy arrays)."""
    def expect(ok, what, actual, wanted):
        if not ok:
            raise invalid_type(what, f"{actual} != {wanted}")

    for name, arr in (("input_length", input_length), ("label_length", label_length)):
        expect(arr.dtype == np.int32, f"{name}.dtype == {_INT32}", arr.dtype, _INT32)
        expect(arr.ndim == 1, f"{name}.ndim == 1", arr.ndim, 1)
    expect(t.ndim == 2, "t.ndim == 2", t.ndim, 2)
    expect(t.dtype == np.int32, f"t.dtype == {_INT32}", t.dtype, _INT32)
    expect(x.ndim == 3, "x.ndim == 3", x.ndim, 3)
    expect(x.dtype.kind == "f", "x.dtype.kind == f", x.dtype.kind, "f")
    B = x.shape[1]
    for name, arr in (("t", t), ("input_length", input_length), ("label_length", label_length)):
        expect(arr.shape[0] == B, f"{name}.shape[0] == x.shape[1]", arr.shape[0], B)


def _check_labels(t, input_length, label_length, V, T):
    """Chainer's indexing errors, and ours where it is undefined."""
    bad = (t < -V) | (t >= V)
    if bad.any():  # Chainer indexes with every entry of t, padding included
        raise ChainerIndexError(f"index {int(t[bad][0])} is out of bounds for axis 2 with "
                                f"size {V}")
    M = t.shape[1]
    for name, arr, hi in (("input_length", input_length, T), ("label_length", label_length, M)):
        out = np.flatnonzero((arr < 0) | (arr > hi))
        if out.size:
            b = int(out[0])
            raise ChainerAssertionError(f"{name}[{b}] = {int(arr[b])} is outside [0, {hi}] "
                                        f"({'T' if hi == T else 'M'} = {hi})")


def _wrapped(t, label_length, blank, V):
    """Labels in [0, V); a sample whose used labels (or blank) alias one class by two
    values (-k and V - k) is refused."""
    labels = np.where(t < 0, t + V, t).astype(np.int64)
    for b in np.flatnonzero((t < 0).any(1)):
        used = t[b, : label_length[b]]
        raw = np.unique(np.append(used, blank))
        if np.unique(np.where(raw < 0, raw + V, raw)).size != raw.size:
            raise CTCValueError(
                f"sample {b} holds labels that name the same class by two values "
                f"({', '.join(map(str, raw))} with V = {V}): Chainer treats them as different "
                "symbols in its transitions and keeps only one of them in its gradient")
    return labels


def _prepare(x, t, input_length, label_length, *, blank):
    _check_types(x, t, input_length, label_length)
    T, _B, V = x.shape
    _check_labels(t, input_length, label_length, V, T)
    labels = _wrapped(t, label_length, blank, V)

    def post(losses, grad):
        # samples of probability 0 (no valid alignment, or emissions of probability
        # 0 on every alignment): Chainer's sentinel arithmetic
        return chainer_native.values(losses, grad, x, t, input_length, label_length, blank)

    return Prepared(x, labels, dict(input_lengths=input_length, label_lengths=label_length,
                                    blank=blank, layout="TNC", inputs="logits"),
                    post=post)


@factory("chainer.ctc")
def _call(blank):
    return CTCCall(prepare=partial(_prepare, blank=blank), batch_size=lambda s: s[1],
                   batch_axis=1)


def _check_frames(x, blank_symbol):
    """Chainer's checks before its type checks: the list, the blank, 2-D frames."""
    if not isinstance(x, Sequence):
        raise CTCTypeError("x must be a list of Variables")
    if not isinstance(blank_symbol, int):
        raise CTCTypeError("blank_symbol must be non-negative integer.")
    if not x:
        raise ChainerIndexError("x is empty: at least one frame (B, V) is needed")
    shape = shape_of(x[0])
    if len(shape) < 2:
        raise ChainerIndexError(f"x[0] must be 2-D (B, V), got shape {shape}")
    if shape[1] is not None and not 0 <= blank_symbol < shape[1]:  # else checked at run time
        raise ChainerAssertionError(f"blank_symbol = {blank_symbol} is outside [0, V = "
                                    f"{shape[1]})")
    if len(shape) != 2:
        raise ChainerAssertionError(f"x[0] must be 2-D (B, V), got shape {shape}")
    for i, xi in enumerate(x[1:], 1):  # Chainer's Stack checks dtype, then shape
        for what, a, b in (("dtype", _dtype_name(xi), _dtype_name(x[0])),
                           ("shape", shape_of(xi), shape)):
            if a != b:
                raise invalid_type(f"in_types[{i}].{what} == in_types[0].{what}",
                                   f"{a} != {b}", "Stack")
    return shape


def _dtype_name(a) -> str:
    """numpy's name of an array's dtype, for any framework (torch.float32 -> float32)."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        return np.asarray(a).dtype.name
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]


def connectionist_temporal_classification(x, t, blank_symbol, input_length=None,
                                          label_length=None, reduce="mean"):
    """``chainer.functions.connectionist_temporal_classification`` with ctcbridge's
    engine (see the module doc): a scalar for ``reduce='mean'``, (B,) for ``'no'``."""
    B, _V = _check_frames(x, blank_symbol)
    T = len(x)
    t_shape = shape_of(t)
    if input_length is None:
        input_length = np.full(B, T, dtype=np.int32)
    if label_length is None:
        if len(t_shape) < 2:
            raise ChainerIndexError(f"t must be 2-D (B, M), got shape {t_shape}")
        label_length = np.full(t_shape[0], t_shape[1], dtype=np.int32)
    if reduce not in _REDUCE:
        raise CTCValueError(f"only 'mean' and 'no' are valid for 'reduce', but '{reduce}' is "
                            "given")
    bridge = bridge_for(*x, t, input_length, label_length)
    xs = bridge.stack(list(x), 0)
    losses = bridge.ctc(make("chainer.ctc", blank_symbol), xs, [t, input_length, label_length])
    return bridge.mean(losses) if reduce == "mean" else losses
