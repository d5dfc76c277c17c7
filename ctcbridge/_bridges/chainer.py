"""The Chainer bridge: a ``chainer.FunctionNode`` around the engine.

The node takes the activations and the auxiliary arrays (labels, lengths...)
as inputs, runs the engine on their CPU values in ``forward`` and keeps the
engine's gradient; ``backward`` scales it by each sample's output gradient
with Chainer functions, so double backpropagation through the scaling works
(the CTC gradient itself is a constant of the graph, as in Chainer's own CTC).
Arrays on a GPU (cupy) are copied to the CPU for the engine and the results
sent back to the input's device (written for, not exercised by the tests: they
run on CPU only).  Differentiable w.r.t. the activations only.
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import numpy as np
from chainer import backend

from .._contract import CTCCall, run
from ..errors import GradientNotComputedError
from .base import Bridge, per_sample_shape


def _cpu(a) -> np.ndarray:
    return np.asarray(backend.CpuDevice().send(a))


class CTCNode(chainer.FunctionNode):
    """losses (N,) = CTC(activations, *aux); gradient to the activations only."""

    def __init__(self, call: CTCCall, want_grad: bool):
        self.call = call
        self.want_grad = want_grad
        self._grad = None

    def forward(self, inputs):
        x, *aux = inputs
        device = backend.get_device_from_array(x)
        losses, grad = run(self.call, _cpu(x), *[_cpu(a) for a in aux],
                           want_grad=self.want_grad, bridge=BRIDGE)
        if self.want_grad:
            self._grad = device.send(np.ascontiguousarray(grad))
        return device.send(np.ascontiguousarray(losses)),

    def backward(self, indexes, grad_outputs):
        (gy,) = grad_outputs
        if self._grad is None:
            raise GradientNotComputedError("ctcbridge: the gradient was not computed (the activations did "
                               "not require grad, or backprop was disabled, when the loss was "
                               "computed)")
        gx = BRIDGE.scale_per_sample(self._grad, gy, self.call.batch_axis)
        return tuple(gx if i == 0 else None for i in indexes)


def _array(a, device):
    """An array on the activations' device from a Variable or any framework's array."""
    if isinstance(a, chainer.Variable):
        return a.array
    if backend.get_array_module(a) is np:  # numpy, lists, other frameworks' CPU arrays
        return device.send(np.asarray(a))
    return a  # already a cupy array


class ChainerBridge(Bridge):
    name = "chainer"

    def scale_per_sample(self, grad, g, batch_axis):
        # with Chainer functions, so that double backpropagation through the scaling
        # works; Chainer's product does not broadcast
        shape = per_sample_shape(grad.ndim, batch_axis) or (1,) * grad.ndim
        return F.broadcast_to(F.reshape(g, shape), grad.shape) * grad

    def ctc(self, call: CTCCall, activations, aux):
        x = chainer.as_variable(activations)
        device = backend.get_device_from_array(x.array)
        want = bool(chainer.config.enable_backprop and x.requires_grad)
        (losses,) = CTCNode(call, want).apply((x, *[_array(a, device) for a in aux]))
        return losses

    def asarray(self, x, like=None):
        if isinstance(x, chainer.Variable):
            return x
        device = backend.get_device_from_array(like.array if isinstance(like, chainer.Variable)
                                               else like) if like is not None else None
        arr = np.asarray(x)
        return chainer.Variable(device.send(arr) if device is not None else arr,
                                requires_grad=False)

    def astype(self, x, like):
        return F.cast(self.asarray(x, like), like.dtype)

    def sum(self, x):
        return F.sum(x)

    def mean(self, x):
        return F.mean(x)

    def maximum(self, x, value):
        xp = backend.get_array_module(x)
        return F.maximum(x, xp.full(x.shape, value, dtype=x.dtype))

    def reshape(self, x, shape):
        return F.reshape(x, shape)

    def stack(self, arrays, axis):
        return F.stack(list(arrays), axis)

    def grad_of_sum(self, fn, x, arrays, statics, order):
        xv = chainer.Variable(np.array(x))
        out = fn(**order(fn, xv, dict(arrays)), **statics)
        F.sum(out).backward()
        return np.asarray(out.array), (None if xv.grad is None else np.asarray(xv.grad))


BRIDGE = ChainerBridge()
