"""The TensorFlow bridge: ``tf.custom_gradient`` around the engine.

Eagerly the engine runs directly on the tensors' numpy values.  Inside a
``tf.function``, a signature whose call carries a ``traced["tensorflow"]`` (its
numpy ``prepare`` written with TF ops, returning a
:class:`~ctcbridge._contract.Traced`) runs the
engine as the custom op ``CtcbridgeCtcLoss`` (``libctcbridge_tf``, built
beside the engine and loaded with ``tf.load_op_library``) on float32/float64
activations: no Python and no copies per call.  Cases the TF-op preparation
does not settle switch, inside the graph (``tf.cond``), to the numpy path
through ``tf.numpy_function``, which every other signature uses.  Gradients
come from the engine (``tf.GradientTape`` sees a custom gradient).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np
import tensorflow as tf

from .. import _engine, _threads
from .._contract import CTCCall, run
from .._options import EngineOptions
from .base import Bridge


_op_lock = threading.Lock()
_op_module: Any = None  # None: not tried yet; False: unavailable


def _custom_op():
    """The loaded op library (its Python module), or None."""
    global _op_module
    with _op_lock:
        if _op_module is None:
            path = _engine.companion("ctcbridge_tf")
            try:
                module = tf.load_op_library(str(path)) if path is not None else None
            except (tf.errors.NotFoundError, OSError):  # a foreign or stale build
                module = None
            _op_module = module if hasattr(module, "ctcbridge_ctc_loss") else False
    return _op_module or None


def _op_call(call: CTCCall, xv, aux):
    """(losses, grad) from the custom op, or None where that route does not apply."""
    prepare = call.traced.get("tensorflow")
    if prepare is None or xv.dtype not in (tf.float32, tf.float64) or _custom_op() is None:
        return None
    t = prepare(xv, *aux)
    if t is None:
        return None
    attrs = EngineOptions.of(t.options, num_threads=BRIDGE.num_threads()).attributes()
    log_zero = tf.constant(attrs.pop("log_zero"), tf.float64)  # an input of the op
    ints = [tf.cast(a, tf.int64) for a in (t.labels, t.input_lengths, t.label_lengths)]
    losses, grad = _custom_op().ctcbridge_ctc_loss(t.activations, *ints, log_zero, **attrs)
    if t.needs_numpy is None:
        return losses, grad
    return tf.cond(t.needs_numpy(losses), lambda: _numpy_function(call, xv, aux),
                   lambda: (losses, grad))


def _numpy_function(call: CTCCall, xv, aux):
    def callback(xn, *an):
        return run(call, xn, *an, bridge=BRIDGE)

    losses, grad = tf.numpy_function(callback, [xv, *aux], [xv.dtype, xv.dtype], stateful=False)
    return losses, grad


@lru_cache(maxsize=None)  # both are fixed once TF's context exists (a tensor does)
def _default_threads() -> int:
    # TF's intra-op threads (0, TF's "all cores", is this process's cores), shared by
    # the logical CPU devices, whose replicas run their losses concurrently
    threads = tf.config.threading.get_intra_op_parallelism_threads() or \
        _threads.available_cores()
    devices = len(tf.config.list_logical_devices("CPU")) or 1
    return max(1, threads // devices)


class TensorFlowBridge(Bridge):
    name = "tensorflow"
    converts = True

    def default_threads(self) -> int:
        return _default_threads()

    def ctc(self, call: CTCCall, activations, aux):
        x = tf.convert_to_tensor(activations)
        aux = [a if isinstance(a, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(np.asarray(a))
               for a in aux]

        @tf.custom_gradient
        def op(xv):
            if tf.executing_eagerly():
                losses, grad = run(call, xv.numpy(), *[np.asarray(a) for a in aux],
                                   bridge=BRIDGE)
                losses = tf.constant(losses, dtype=xv.dtype)
                grad = tf.constant(grad, dtype=xv.dtype)
            else:
                done = _op_call(call, xv, aux)
                losses, grad = done if done is not None else _numpy_function(call, xv, aux)
                n = call.batch_size(tuple(xv.shape)) if xv.shape.is_fully_defined() else None
                losses.set_shape([n])
                grad.set_shape(xv.shape)

            def grad_fn(g):
                if tf.executing_eagerly() and bool(tf.reduce_all(tf.equal(g, 1))):
                    return grad  # d sum(losses): no copy needed
                return self.scale_per_sample(grad, g, call.batch_axis)

            return losses, grad_fn

        return op(x)

    def asarray(self, x, like=None):
        return tf.convert_to_tensor(x)

    def astype(self, x, like):
        return tf.cast(tf.convert_to_tensor(x), like.dtype)

    def sum(self, x):
        return tf.reduce_sum(x)

    def mean(self, x):
        return tf.reduce_mean(x)

    def maximum(self, x, value):
        return tf.maximum(x, tf.cast(value, x.dtype))

    def reshape(self, x, shape):
        return tf.reshape(x, shape)

    def stack(self, arrays, axis):
        return tf.stack([tf.convert_to_tensor(a) for a in arrays], axis)

    def convert_asarray(self, x):
        return x

    def transpose(self, x, axes):
        return tf.transpose(x, axes)

    def take_classes(self, x, index):
        return tf.gather(x, index, axis=-1)

    def log(self, x):
        return tf.math.log(x)

    def class_log_softmax(self, x):
        return tf.nn.log_softmax(x, -1)

    def class_softmax(self, x):
        return tf.nn.softmax(x, -1)

    def unstack(self, x):
        return tf.unstack(x, axis=0)

    def grad_of_sum(self, fn, x, arrays, statics, order):
        # as the other runners: an infinite loss keeps its defined gradient (e.g.
        # warp-ctc's softmax for a sample without an alignment)
        xv = tf.Variable(x)
        conv = {k: tf.constant(v) for k, v in arrays.items()}
        with tf.GradientTape() as tape:
            out = fn(**order(fn, xv, conv), **statics)
            total = tf.reduce_sum(out)
        grad = tape.gradient(total, xv)
        return np.asarray(out), (None if grad is None else grad.numpy())

    def log_softmax(self, x):
        return tf.nn.log_softmax(x, axis=-1)


BRIDGE = TensorFlowBridge()
