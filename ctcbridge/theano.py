"""Theano's CTC signature (``theano.tensor.nnet.ctc``, Baidu warp-ctc), on any framework's arrays.

Mirrors ``theano.tensor.nnet.ctc.ctc(activations, labels, input_lengths)`` and
``ConnectionistTemporalClassification(compute_grad=True, openmp=None)`` of
Theano 1.0.5 (whose Op needs warp-ctc; ours needs none):

- ``activations`` (T, B, C) float32 unnormalised logits, time-major; the
  softmax is applied inside.  The gradient is ``softmax - gamma`` on frames
  ``t < input_lengths[b]``, 0 beyond.
- ``labels`` (B, S) int32: every negative value is padding and is removed
  wherever it sits (``[[1, -1, 2]]`` is the label sequence 1, 2); the blank
  is 0 and a 0 inside a label sequence is kept, with warp-ctc's meaning (a
  state equal to the blank is never entered by a skip).
- ``input_lengths`` (B,) int32 frames per sample.
- Returns the costs (B,) float32, the negative log-likelihoods.  warp-ctc's
  defined results are kept: a sample needing more frames than it has
  (``L + repeats > input_lengths[b]``) costs 0 with a zero gradient; an empty
  label with ``input_lengths[b] = 0`` costs +inf (gradient 0); a sample that
  passes warp-ctc's frame count but has no alignment of nonzero probability
  (0s inside its labels, -inf logits) costs +inf with the gradient
  ``softmax`` (no occupancy).
- Type and rank errors are Theano's (``TypeError: activations must use the
  float32 type!``, ``ValueError: activations must have 3 dimensions.``, ...);
  an empty batch or alphabet raises warp-ctc's ``RuntimeError``.  Where
  warp-ctc is undefined (labels >= C, lengths beyond T, lengths or label
  rows not matching the batch: out-of-bounds reads) ctcbridge raises a
  ``ValueError`` (see the divergence file).
- ``compute_grad=False``: on PyTensor/Theano variables the node has the
  costs only and differentiating it raises an ``AssertionError`` as in
  Theano; the other frameworks compute the gradient only when asked anyway.
  ``openmp``: the engine's threads (False: 1; True: every core; None:
  ``ctcbridge.set_num_threads``'s setting or the framework's default); the
  results are identical for any thread count.

Works on numpy arrays (numpy out), PyTensor and Theano 1.0.5 variables (an
``Op`` differentiable with ``pytensor.grad`` / ``theano.grad``, in compiled
functions), torch, jax and tensorflow arrays (differentiable there).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, factory, make, shape_of
from ._natives import warpctc
from .errors import CTCRuntimeError, CTCTypeError, CTCValueError

__all__ = ["ctc", "ConnectionistTemporalClassification"]

# (argument, dtype, ndim, Theano's rank message)
_ARGS = (("activations", "float32", 3, "activations must have 3 dimensions."),
         ("labels", "int32", 2, "labels must have 2 dimensions."),
         ("input_lengths", "int32", 1, "input_lengths must have 1 dimension."))


def _dtype_name(x) -> str:
    """The dtype name of an array of any framework ('float32', 'int32', ...)."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    if isinstance(dt, str):  # theano / pytensor variables
        return dt
    name = getattr(dt, "name", None)
    if isinstance(name, str):  # numpy, jax, tensorflow
        return name
    try:
        return np.dtype(dt).name  # numpy scalar types (mxnet)
    except TypeError:
        return str(dt).rsplit(".", 1)[-1]  # torch.float32


def _check_types(arrays) -> None:
    """Theano's make_node checks, in its order: dtype then rank, argument by argument."""
    for x, (name, dtype, ndim, rank_msg) in zip(arrays, _ARGS):
        if _dtype_name(x) != dtype:
            raise CTCTypeError(f"{name} must use the {dtype} type!")
        rank = getattr(x, "ndim", None)  # symbolic variables know their rank, not their shape
        if (rank if isinstance(rank, int) else len(shape_of(x))) != ndim:
            raise CTCValueError(rank_msg)


def _prepare(activations, labels, input_lengths, *, num_threads):
    T, B, C = activations.shape
    if B == 0 or C == 0:  # warp-ctc's get_workspace_size refuses them
        raise CTCRuntimeError("ConnectionistTemporalClassification: Failed to obtain CTC "
                              "workspace size. CTC error: invalid value")
    if labels.shape[0] != B:
        raise CTCValueError(f"labels has {labels.shape[0]} rows but the batch has {B} samples")
    if input_lengths.shape != (B,):
        raise CTCValueError(f"input_lengths must have {B} entries (the batch size), got "
                            f"{input_lengths.size}")
    keep = labels >= 0  # negatives are padding wherever they are (Theano's create_flat_labels)
    rows = [labels[b][keep[b]].astype(np.int64) for b in range(B)]
    label_lengths = keep.sum(1).astype(np.int64)
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    lengths = input_lengths.astype(np.int64)

    def post(losses, grad):
        # the engine ran with infeasible="inf": +inf exactly where no alignment has a
        # nonzero probability; warp-ctc's own answers replace it sample by sample
        return warpctc.theano_values(activations, rows, lengths, losses, grad)

    return Prepared(activations, flat,
                    dict(input_lengths=lengths, label_lengths=label_lengths, blank=0,
                         layout="TNC", inputs="logits", infeasible="inf",
                         warp_blank_labels=True,
                         **({} if num_threads is None else dict(num_threads=num_threads))),
                    post=post)


@factory("theano.ctc")
def _call(num_threads):
    return CTCCall(prepare=partial(_prepare, num_threads=num_threads),
                   batch_size=lambda s: s[1], batch_axis=1)


class ConnectionistTemporalClassification:
    """``theano.tensor.nnet.ctc.ConnectionistTemporalClassification(compute_grad=True,
    openmp=None)`` on ctcbridge's engine: called as ``(activations, labels,
    input_lengths)``, it returns the costs (B,) (see the module doc)."""

    def __init__(self, compute_grad=True, openmp=None):
        self.compute_grad = compute_grad
        self.openmp = openmp

    def __call__(self, activations, labels, input_lengths):
        _check_types((activations, labels, input_lengths))
        # openmp: True every core, False one thread, None the ctcbridge default
        # (ctcbridge.set_num_threads, else the framework's own setting)
        call = make("theano.ctc", None if self.openmp is None else (0 if self.openmp else 1))
        call.compute_grad = bool(self.compute_grad)  # graphs: an Op without the gradient output
        bridge = bridge_for(activations, labels, input_lengths)
        return bridge.ctc(call, activations, [labels, input_lengths])

    def __repr__(self):
        return (f"ConnectionistTemporalClassification(compute_grad={self.compute_grad!r}, "
                f"openmp={self.openmp!r})")


def ctc(activations, labels, input_lengths):
    """``theano.tensor.nnet.ctc.ctc`` with ctcbridge's engine: costs (B,) (see the module doc)."""
    return ConnectionistTemporalClassification()(activations, labels, input_lengths)
