"""MXNet's CTC signatures: ``ctc_loss`` (alias ``CTCLoss``) and ``WarpCTC``, on any
framework's arrays.

``ctc_loss(data, label, data_lengths=None, label_lengths=None, use_data_lengths=False,
use_label_lengths=False, blank_label='first')`` mirrors ``mx.nd.contrib.ctc_loss``
(= ``mx.nd.ctc_loss``, ``mx.nd.contrib.CTCLoss``, ``mx.sym.contrib.ctc_loss``):

- ``data`` (T, N, C) unnormalised logits, time-major; returns (N,) losses in
  ``data``'s dtype.  Gradient ``softmax - gamma``, 0 on frames past
  ``data_lengths``, scaled per sample by the head gradient.
- ``blank_label='first'``: blank 0, labels 1..C-1, padding value 0;
  ``'last'``: blank C-1, labels 0..C-2, padding value -1.  Without
  ``use_label_lengths`` a label ends at the first padding value of its row;
  with it, ``label_lengths`` gives the length and the rest of the row is
  ignored.  A label equal to the blank inside a label is a label state that
  can never be skipped into (warp-ctc's rule, MXNet's engine).
- ``data_lengths``/``label_lengths`` are read only with their ``use_*`` flag,
  and giving one without its flag (or the flag without the array) is an
  error, as in MXNet.  Float labels and lengths are rounded half away from
  zero (MXNet's ``std::lround``).
- The padded label width must not exceed T (MXNet's shape check).
- A sample without a valid alignment (more labels and repeats than frames)
  has loss 0 and gradient 0, MXNet's choice.

Where MXNet is undefined ctcbridge raises :class:`~ctcbridge.errors.CTCRuntimeError`
(a ``RuntimeError`` like ``MXNetError``, and a ``ValueError``) at the call,
naming the argument: labels outside [0, C) (MXNet reads garbage, or crashes on
negative ones), negative or too large lengths (segfault / garbage).  It
returns the exact value where MXNet returns uninitialised memory (the
gradient of an infeasible sample, a batch whose labels are all empty) or
``inf`` (an empty label on zero frames: probability 1, loss 0); see
``ctcbridge/divergences.json``.  ``data`` may be float16/32/64 and the lengths
any numeric dtype (MXNet: float32 data and data_lengths, label_lengths of the
labels' dtype).

The generated operators' ``out``, ``name`` and ``attr`` are accepted with their
meaning on MXNet arrays: ``out=`` writes into the given NDArray, ``name`` names
a Symbol's output (``<name>_output``), ``attr`` sets Symbol attributes.

``WarpCTC(data, label, label_length=0, input_length=0)`` mirrors the WarpCTC
plugin (``mx.sym.WarpCTC``, not in the 1.9.1 wheel): ``data`` (T*N, C) logits,
row ``t*N + n``; ``label`` flat integers, ``label_length`` per sample, where
every 0 (the blank, also the padding) is removed wherever it is; all samples
use ``input_length`` frames.  The output is ``softmax(data)`` and the
backward writes ``softmax - gamma`` (0 for a sample without an alignment).  On
MXNet arrays the head gradient is ignored, as in the plugin (the op declares
itself a loss: a Symbol or ``mx.mod.Module`` ending in it trains without head
gradients, e.g. ``Module.fit``); on other
frameworks the gradient of ``out`` is ``(softmax - gamma) * head``
elementwise, so ``out.sum()`` (or a head of ones) gives the plugin's gradient.

Works on MXNet NDArrays (``mx.autograd``) and Symbols (a CustomOp, so also in
hybridized Gluon blocks), numpy, torch, jax and tensorflow arrays; the result
is of the ``data``'s framework.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, as_int, factory, integral, make, reraise_as, shape_of
from ._natives import warpctc
from ._numerics import softmax
from .errors import CTCRuntimeError, CTCTypeError

__all__ = ["ctc_loss", "CTCLoss", "WarpCTC"]

_BLANKS = ("first", "last")
_ERR = CTCRuntimeError


def _indices(arr: np.ndarray, name: str) -> np.ndarray:
    """int64 indices; floats rounded half away from zero as MXNet's std::lround does."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise _ERR(f"{name} holds {arr[~np.isfinite(arr)].flat[0]}, not an index")
        rounded = np.sign(arr) * np.floor(np.abs(arr) + 0.5)
        if rounded.size and np.abs(rounded).max() >= 2.0 ** 62:
            raise _ERR(f"{name} holds {rounded.flat[np.abs(rounded).argmax()]}, beyond int64")
        return rounded.astype(np.int64)
    return integral(arr, name, _ERR)


def _lengths(arr, name: str, n: int, limit: int, limit_name: str) -> np.ndarray:
    arr = _indices(arr, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _ERR(f"{name} must be a vector of {n} entries (the batch size), got shape "
                   f"{arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr > limit))
    if bad.size:
        b = int(bad[0])
        raise _ERR(f"{name}[{b}] = {arr[b]} is outside [0, {limit}] ({limit_name})")
    return arr


def _padding_lengths(labels: np.ndarray, pad: int) -> np.ndarray:
    """Each row's length: the index of its first padding value (the row's width if none)."""
    if labels.shape[1] == 0:
        return np.zeros(labels.shape[0], dtype=np.int64)
    is_pad = labels == pad
    return np.where(is_pad.any(1), is_pad.argmax(1), labels.shape[1]).astype(np.int64)


def _prepare_ctc(data, label, *lengths, blank_last, use_dl, use_ll, layout="TNC",
                 label_layout="NT"):
    """contrib.ctc_loss's conventions (Gluon's too: ``layout``, ``label_layout``)."""
    if data.ndim != 3:
        raise _ERR(f"The number of dimensions of data array must be 3, got shape {data.shape}")
    if label.ndim != 2:
        raise _ERR(f"The number of dimensions of labels array must be 2, got shape "
                   f"{label.shape}")
    if label_layout == "TN":
        label = label.T
    T, N, C = data.shape if layout == "TNC" else (data.shape[1], data.shape[0], data.shape[2])
    if label.shape[0] != N:
        raise _ERR(f"The batch size for the labels and data arrays must be the same: "
                   f"{label.shape[0]} vs {N}")
    S = label.shape[1]
    if S > T:
        raise _ERR(f"The max number of labels cannot exceed the maximum sequence length of the "
                   f"data: {S} labels, {T} frames")
    labels = _indices(label, "label")
    lengths = list(lengths)
    input_lengths = (_lengths(lengths.pop(0), "data_lengths", N, T, "the data's T")
                     if use_dl else np.full(N, T, dtype=np.int64))
    if use_ll:
        label_lengths = _lengths(lengths.pop(0), "label_lengths", N, S, "the label width")
    else:
        label_lengths = _padding_lengths(labels, -1 if blank_last else 0)
    # entries past each length are padding: never read (they may be -1)
    labels = np.where(np.arange(S)[None, :] < label_lengths[:, None], labels, 0)
    return Prepared(
        data,
        labels,
        dict(input_lengths=input_lengths, label_lengths=label_lengths,
             blank=C - 1 if blank_last else 0, layout=layout, inputs="logits",
             infeasible="inf", warp_blank_labels=True),
        post=partial(warpctc.mxnet_values, data, labels, input_lengths, label_lengths,
                     layout == "TNC"),
    )


@factory("mxnet.ctc_loss")
def _ctc_call(blank_last, use_dl, use_ll, layout="TNC", label_layout="NT"):
    return CTCCall(prepare=partial(_prepare_ctc, blank_last=blank_last, use_dl=use_dl,
                                   use_ll=use_ll, layout=layout, label_layout=label_layout),
                   batch_size=(lambda s: s[1]) if layout == "TNC" else (lambda s: s[0]),
                   batch_axis=1 if layout == "TNC" else 0)


def _check_flags(data_lengths, label_lengths, use_data_lengths, use_label_lengths):
    for arr, flag, name in ((data_lengths, use_data_lengths, "data_lengths"),
                            (label_lengths, use_label_lengths, "label_lengths")):
        if flag and arr is None:
            raise _ERR(f"use_{name}=True needs {name} (MXNet: the operator expects one more "
                       "input)")
        if not flag and arr is not None:
            raise _ERR(f"{name} is given but use_{name} is False (MXNet: the operator expects "
                       "one input less)")


def _ctc(data, label, data_lengths, label_lengths, *, blank_last, layout="TNC",
         label_layout="NT", operator_args=None):
    """The loss on the data's framework; lengths None = not used."""
    use_dl, use_ll = data_lengths is not None, label_lengths is not None
    shape = shape_of(data)
    if shape and len(shape) != 3:
        raise _ERR(f"The number of dimensions of data array must be 3, got shape {shape}")
    call = make("mxnet.ctc_loss", bool(blank_last), use_dl, use_ll, layout, label_layout)
    aux = [label] + [a for a in (data_lengths, label_lengths) if a is not None]
    bridge = bridge_for(data, *aux)
    return _with_operator_args(bridge, lambda: bridge.ctc(call, data, aux),
                               **(operator_args or {}))


def _with_operator_args(bridge, build, name=None, attr=None, out=None):
    """``build()`` given MXNet's generated-operator arguments ``name``, ``attr`` and
    ``out``, which a bridge offering ``with_operator_args`` (MXNet's) applies.  On
    other frameworks' arrays ``name`` and ``attr`` have nothing to name (as
    ``name`` on NDArrays) and are ignored; ``out`` is refused."""
    if attr is not None and not isinstance(attr, dict):
        raise _ERR(f"attr must be a dict of strings, got {type(attr).__name__}")
    apply = getattr(bridge, "with_operator_args", None)  # a capability, like `converts`
    if apply is not None:
        return apply(build, name=name, attr=attr, out=out)
    if out is not None:
        raise CTCTypeError("out= writes into an MXNet NDArray, and the inputs are "
                           "arrays of another framework here: use the returned array")
    return build()


@reraise_as(CTCRuntimeError)
def ctc_loss(data, label, data_lengths=None, label_lengths=None, use_data_lengths=False,
             use_label_lengths=False, blank_label="first", out=None, name=None, attr=None):
    """``mx.nd.contrib.ctc_loss`` with ctcbridge's engine (see the module doc); (N,).

    ``out``, ``name`` and ``attr`` are the generated operators' arguments: ``out``
    an NDArray the result is written into (and returned), ``name`` the Symbol's
    name, ``attr`` a dict of Symbol attributes (``mx.AttrScope``'s)."""
    if blank_label not in _BLANKS:
        raise _ERR(f"Invalid Input: {blank_label!r}, valid values are: {{'first', 'last'}} "
                   "(blank_label)")
    use_data_lengths, use_label_lengths = bool(use_data_lengths), bool(use_label_lengths)
    _check_flags(data_lengths, label_lengths, use_data_lengths, use_label_lengths)
    return _ctc(data, label, data_lengths, label_lengths, blank_last=blank_label == "last",
                operator_args=dict(name=name, attr=attr, out=out))


CTCLoss = ctc_loss  # MXNet's alias (mx.nd.contrib.CTCLoss is the same operator)


# --- WarpCTC ---------------------------------------------------------------


def _prepare_warpctc(flat, data, label, *, label_length, input_length):
    """``flat`` is ``data`` reshaped to (T*N*C, 1): one "sample" per output element,
    so that every framework's bridge maps the output's gradient element by element."""
    if data.ndim != 2:
        raise _ERR(f"input data shape should be 2 (t*n, p), got shape {data.shape}")
    rows, C = data.shape
    if input_length <= 0 or rows % input_length:
        raise _ERR(f"input_length = {input_length} must be positive and divide the {rows} "
                   "rows of data (T*N)")
    T, N = input_length, rows // input_length
    flat_labels = np.asarray(label).reshape(-1)
    if flat_labels.dtype.kind == "f":  # MXNet casts float labels into its int32 input
        if not np.array_equal(flat_labels, np.trunc(flat_labels)):
            raise _ERR("label must hold integers")
        flat_labels = flat_labels.astype(np.int64)
    flat_labels = integral(flat_labels, "label", _ERR)
    if flat_labels.size != label_length * N:
        raise _ERR(f"label size should = label_length * minibatch: {flat_labels.size} != "
                   f"{label_length} * {N}")
    rows_of = flat_labels.reshape(N, label_length) if N else np.zeros((0, label_length),
                                                                       np.int64)
    lengths = (rows_of != 0).sum(1).astype(np.int64)  # every 0 (the blank) is removed
    packed = np.zeros_like(rows_of)
    for n in range(N):
        seq = rows_of[n][rows_of[n] != 0]
        packed[n, : seq.size] = seq
    bad = np.flatnonzero((packed < 0) | (packed >= C))
    if bad.size:
        n, i = divmod(int(bad[0]), max(label_length, 1))
        raise _ERR(f"label {i} of sample {n} is {packed[n, i]}, outside [1, C = {C}) "
                   "(0 is the blank, removed)")

    x = data.reshape(T, N, C)
    input_lengths = np.full(N, T, dtype=np.int64)

    def post(losses, grad):
        # warp-ctc's values without an alignment, then the plugin's outputs: the
        # softmax, and the gradient for the flat input (T*N*C, 1)
        _, grad = warpctc.mxnet_values(x, packed, input_lengths, lengths, True, losses, grad)
        return (softmax(data.astype(np.float64)).reshape(-1).astype(data.dtype),
                None if grad is None else grad.reshape(-1, 1))

    return Prepared(x, packed,
                    dict(input_lengths=input_lengths, label_lengths=lengths, blank=0,
                         layout="TNC", inputs="logits", infeasible="inf"),
                    post=post)


@factory("mxnet.WarpCTC")
def _warpctc_call(label_length, input_length):
    return CTCCall(prepare=partial(_prepare_warpctc, label_length=label_length,
                                   input_length=input_length),
                   batch_size=lambda s: s[0], batch_axis=0,
                   head_grad=False)  # on MXNet arrays: the plugin ignores the head gradient


@reraise_as(CTCRuntimeError)
def WarpCTC(data, label, label_length=0, input_length=0, name=None, attr=None, out=None):
    """MXNet's WarpCTC plugin with ctcbridge's engine (see the module doc): returns
    ``softmax(data)``, (T*N, C); its backward gives ``softmax - gamma``.  ``name``,
    ``attr`` and ``out`` as for :func:`ctc_loss` (the order of ``mx.sym.WarpCTC``)."""
    label_length = as_int(label_length, "label_length")
    input_length = as_int(input_length, "input_length")
    if label_length < 0:
        raise _ERR(f"label_length = {label_length} is negative")
    if input_length <= 0:
        raise _ERR(f"input_length = {input_length} must be positive (the frames per sample)")
    shape = shape_of(data)
    if shape and len(shape) != 2:
        raise _ERR(f"input data shape should be 2 (t*n, p), got shape {shape}")
    call = make("mxnet.WarpCTC", label_length, input_length)
    bridge = bridge_for(data, label)

    def build():
        flat = bridge.reshape(data, (-1, 1))
        # the values travel as an aux array too (a reshaped copy: TF's custom_gradient
        # refuses functions that read a tf.Variable)
        values = bridge.reshape_like(data, data)
        return bridge.reshape_like(bridge.ctc(call, flat, [values, label]), data)

    return _with_operator_args(bridge, build, name=name, attr=attr, out=out)
