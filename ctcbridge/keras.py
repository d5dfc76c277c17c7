"""Keras's CTC signatures, on any framework's arrays.

- ``ctc_loss(target, output, target_length, output_length, mask_index=0)``
  mirrors ``keras.ops.ctc_loss``: batch-major logits (B, T, C), dense padded
  targets, blank ``mask_index``; per-sample losses (B,), at least float32
  (float64 stays float64).
- ``ctc_batch_cost(y_true, y_pred, input_length, label_length)`` mirrors the
  legacy ``keras.backend.ctc_batch_cost``: softmax *probabilities* in
  (B, T, C) (read as log(p + 1e-7), as Keras does), blank C - 1, lengths of
  shape (B, 1), result (B, 1); TF v1's rules (an empty label or more labels
  than frames is an error).

Same engine, same divergences as :mod:`ctcbridge.tensorflow` (Keras's TF
backend calls ``tf.nn.ctc_loss``).
"""

from __future__ import annotations

import re
import sys
from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, as_int, factory, integral, make, shape_of
from .errors import CTCValueError
from ._natives import tensorflow as tf_native
from .conventions import KERAS_EPSILON  # keras.backend.epsilon()
from .tensorflow import _check_batch, _padded, _prepare_dense, _tf_prepare_dense, tf_errors

__all__ = ["ctc_loss", "ctc_batch_cost"]


def _integral_target(target):
    """Keras casts ``target`` to int32, so ``model.compile(loss=...)``, which hands
    the loss a float32 ``y_true``, works: integral float values are read as their
    integers; a fractional or non-finite value (which Keras would truncate) raises."""
    target = np.asarray(target)
    if target.dtype.kind != "f":
        return target
    bad = ~np.isfinite(target) | (target != np.trunc(target))
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CTCValueError(f"target must hold integer values, got {target[at]} at {list(at)}")
    return target.astype(np.int64)


def _prepare_loss(output, target, target_length, output_length, *, blank):
    return _prepare_dense(output, _integral_target(target), target_length, output_length,
                          time_major=False, blank_index=blank)


def _tf_prepare_loss(output, target, target_length, output_length, *, blank):
    """``_tf_prepare_dense`` on integral targets; float targets go to the numpy path
    (which checks their values) unless they are integral, checked in the graph."""
    import tensorflow as tf

    if not target.dtype.is_floating:
        return _tf_prepare_dense(output, target, target_length, output_length,
                                 time_major=False, blank_index=blank)
    ints = tf.cast(target, tf.int64)
    t = _tf_prepare_dense(output, ints, target_length, output_length, time_major=False,
                          blank_index=blank)
    if t is None:
        return None
    fractional = tf.reduce_any(tf.not_equal(tf.cast(ints, target.dtype), target))
    base = t.needs_numpy
    t.needs_numpy = lambda losses: base(losses) | fractional  # the numpy path raises
    return t


@factory("keras.ctc_loss")
def _loss_call(blank):
    return CTCCall(prepare=partial(_prepare_loss, blank=blank),
                   batch_size=lambda s: s[0], batch_axis=0,
                   # the TF bridge's custom-op route in tf.function (_bridges/tensorflow.py)
                   traced={"tensorflow": partial(_tf_prepare_loss, blank=blank)})


@factory("keras.ctc_batch_cost")
def _batch_cost_call():
    return CTCCall(prepare=_prepare_batch_cost, batch_size=lambda s: s[0], batch_axis=0)


def _result_dtype(x) -> str:
    """Keras' ``result_type(output.dtype, "float32")``: float16/bfloat16 -> float32;
    asked of Keras itself where it is imported (its torch backend also computes
    float64 in float32)."""
    dtype = getattr(x, "dtype", None)
    dtype = np.asarray(x).dtype if dtype is None else dtype  # nested lists
    name = str(dtype)
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return keras.backend.result_type(keras.backend.standardize_dtype(dtype), "float32")
        except Exception:  # an array Keras' backend does not know: the rule below
            pass
    return "float32" if re.search(r"float16\b", name) else re.sub(r".*\b(\w+)'?>?$", r"\1", name)


@tf_errors
def ctc_loss(target, output, target_length, output_length, mask_index=0):
    """``keras.ops.ctc_loss`` with ctcbridge's engine; returns (B,).

    As Keras on every backend: the result has at least float32 precision
    (float16/bfloat16 logits are cast to float32 first, float64 stays), and a
    float ``target`` with integral values is read as integers."""
    if len(shape_of(output)) != 3:
        raise CTCValueError(f"output must be 3-D (B, T, C), got shape {shape_of(output)}")
    blank = as_int(mask_index, "mask_index")
    _check_batch(shape_of(output)[0])  # known when traced: TF raises then
    call = make("keras.ctc_loss", blank)
    bridge = bridge_for(output, target, target_length, output_length)
    dtype = _result_dtype(output)
    if dtype in ("float32", "float64") and not str(getattr(output, "dtype", "")).endswith(dtype):
        output = bridge.astype(output, bridge.asarray(np.zeros(0, dtype), output))
    return bridge.ctc(call, output, [target, target_length, output_length])


def _prepare_batch_cost(y_pred, y_true, input_length, label_length):
    if y_pred.ndim != 3:
        raise CTCValueError(f"y_pred must be 3-D (B, T, C), got shape {y_pred.shape}")
    B, T, C = y_pred.shape
    _check_batch(B)
    eps = y_pred.dtype.type(KERAS_EPSILON) if y_pred.dtype.kind == "f" else KERAS_EPSILON
    logits = np.log(y_pred + eps)
    labels = np.asarray(y_true)
    labels = labels.astype(np.int64) if labels.dtype.kind == "f" else integral(labels, "y_true")
    input_length = integral(input_length, "input_length").reshape(-1)
    label_length = integral(label_length, "label_length").reshape(-1)
    for name, arr in (("input_length", input_length), ("label_length", label_length)):
        if arr.shape != (B,):
            raise CTCValueError(f"{name} must have shape ({B}, 1), got {arr.size} values")
    # the labels reach TF v1's kernel (blank C - 1): a blank ends the sequence
    rows = tf_native.end_at_blank([labels[n, : max(int(label_length[n]), 0)] for n in range(B)],
                         C - 1, C)
    labels, label_length = _padded(rows)
    for n in range(B):
        if label_length[n] == 0:
            raise CTCValueError(f"Labels length is zero in batch {n}")
        if label_length[n] > input_length[n]:
            raise CTCValueError(
                f"Not enough time for target transition sequence (required: "
                f"{label_length[n]}, available: {input_length[n]}) in batch {n}")

    def grad_back(g):  # d/dp of f(log(p + eps)) = f'(.) / (p + eps)
        return g / (y_pred + eps)

    return Prepared(logits, labels, dict(input_lengths=input_length, label_lengths=label_length,
                                         blank=C - 1, layout="NTC", inputs="logits"),
                    grad_back=grad_back)


@tf_errors
def ctc_batch_cost(y_true, y_pred, input_length, label_length):
    """Legacy ``keras.backend.ctc_batch_cost`` with ctcbridge's engine; returns (B, 1)."""
    if len(shape_of(y_pred)) == 3:
        _check_batch(shape_of(y_pred)[0])  # known when traced: TF raises then
    call = make("keras.ctc_batch_cost")
    bridge = bridge_for(y_pred, y_true, input_length, label_length)
    losses = bridge.ctc(call, y_pred, [y_true, input_length, label_length])
    return bridge.reshape(losses, (-1, 1))
from .keras_decoding import ctc_decode, ctc_decode_legacy  # noqa: E402,F401
