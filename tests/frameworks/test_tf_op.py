"""The engine as a TensorFlow custom op inside tf.function (nox session `cross`):
the op library loads, the dense signatures use it, and it gives the eager (numpy
path) losses and gradients on generated cases in both layouts, float32 and
float64, including infeasible samples (TF's sentinel value, from the numpy path
inside the graph); invalid inputs raise with the engine's or the numpy path's
message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # the module skips where a framework it needs is absent

import tensorflow as tf

import ctcbridge.keras as ck
import ctcbridge.tensorflow as ctf
from ctcbridge._bridges import tensorflow as bridge
from native_cases import close, make_case


def _ops(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


def test_op_library_loads_and_is_used():
    assert bridge._custom_op() is not None
    x = tf.zeros((5, 2, 4))
    lab, ll, il = tf.constant([[1, 2], [3, 0]]), tf.constant([2, 1]), tf.constant([5, 5])
    assert "CtcbridgeCtcLoss" in _ops(lambda z: ctf.ctc_loss(lab, z, ll, il), x)
    xb = tf.zeros((2, 5, 4))
    assert "CtcbridgeCtcLoss" in _ops(lambda z: ck.ctc_loss(lab, z, ll, il), xb)


def _loss_and_grad(loss_fn, z):
    with tf.GradientTape() as tape:
        tape.watch(z)
        losses = loss_fn(z)
        total = tf.reduce_sum(tf.where(tf.math.is_finite(losses), losses,
                                       tf.zeros_like(losses)))
    return losses, tape.gradient(total, z)


@pytest.mark.parametrize("seed", range(40))
def test_tf_function_matches_eager(seed):
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero")
    time_major = seed % 2 == 0
    dtype = np.float64 if seed % 5 == 0 else np.float32
    x = case.logits if time_major else case.logits.transpose(1, 0, 2)
    x = tf.constant(x.astype(dtype))
    lab = tf.constant(case.labels.astype(np.int32))
    ll, il = (tf.constant(a.astype(np.int64)) for a in (case.label_lengths, case.input_lengths))
    if seed % 3 == 0 and not time_major:  # Keras: batch-major, blank through mask_index
        fn = lambda z: ck.ctc_loss(lab, z, ll, il, mask_index=case.blank)  # noqa: E731
    else:
        fn = lambda z: ctf.ctc_loss(lab, z, ll, il, logits_time_major=time_major,  # noqa: E731
                                    blank_index=case.blank)
    eager = _loss_and_grad(fn, x)
    graph = tf.function(lambda z: _loss_and_grad(fn, z))(x)
    assert graph[0].dtype == eager[0].dtype == x.dtype
    close(graph[0].numpy(), eager[0].numpy(), 1e-6, 1e-6)
    close(graph[1].numpy(), eager[1].numpy(), 1e-6, 1e-6)


@pytest.mark.parametrize(
    "labels,blank,match",
    [([[1, 9]], 0, "is 9"),  # the engine's own check, from the op
     ([[1, 3]], 3, "equals blank_index")],  # a non-zero blank inside a label: numpy path
)
def test_errors_inside_tf_function(labels, blank, match):
    x = tf.zeros((6, 1, 4))
    lab, ll, il = tf.constant(labels), tf.constant([2]), tf.constant([6])
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        tf.function(lambda z: ctf.ctc_loss(lab, z, ll, il, blank_index=blank))(x)
