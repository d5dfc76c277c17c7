"""The TensorFlow bridge: ``tf.custom_gradient`` around the engine.

Eagerly the engine runs directly on the tensors' numpy values; inside a
``tf.function`` it runs through ``tf.numpy_function``.  Gradients come from
the engine (``tf.GradientTape`` sees a custom gradient).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .call import CTCCall, run


class TensorFlowBridge:
    name = "tensorflow"

    def ctc(self, call: CTCCall, activations, aux):
        x = tf.convert_to_tensor(activations)
        aux = [a if isinstance(a, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(np.asarray(a))
               for a in aux]

        @tf.custom_gradient
        def op(xv):
            if tf.executing_eagerly():
                losses, grad = run(call, xv.numpy(), *[np.asarray(a) for a in aux])
                losses = tf.constant(losses, dtype=xv.dtype)
                grad = tf.constant(grad, dtype=xv.dtype)
            else:
                def callback(xn, *an):
                    return run(call, xn, *an)

                losses, grad = tf.numpy_function(callback, [xv, *aux], [xv.dtype, xv.dtype],
                                                 stateful=False)
                n = call.batch_size(tuple(xv.shape)) if xv.shape.is_fully_defined() else None
                losses.set_shape([n])
                grad.set_shape(xv.shape)

            def grad_fn(g):
                if tf.executing_eagerly() and bool(tf.reduce_all(tf.equal(g, 1))):
                    return grad  # d sum(losses): no copy needed
                if call.batch_axis is None:
                    return grad * tf.reshape(tf.cast(g, grad.dtype), [])
                shape = [1] * len(xv.shape)
                shape[call.batch_axis] = -1
                return grad * tf.reshape(tf.cast(g, grad.dtype), shape)

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


BRIDGE = TensorFlowBridge()


def grad_of_sum(fn, x, arrays, statics, order):
    """Conformance runner (see ``_signature_rows.run_on``): losses and the gradient of
    the sum of the finite losses (TF natives return finite sentinels anyway)."""
    xv = tf.Variable(x)
    conv = {k: tf.constant(v) for k, v in arrays.items()}
    with tf.GradientTape() as tape:
        out = fn(**order(fn, xv, conv), **statics)
        finite = tf.where(tf.math.is_finite(out), out, tf.zeros_like(out))
        total = tf.reduce_sum(finite)
    grad = tape.gradient(total, xv)
    return np.asarray(out), (None if grad is None else grad.numpy())
