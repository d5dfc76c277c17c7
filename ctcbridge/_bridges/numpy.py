"""The numpy bridge: losses as numpy arrays, no autodiff."""

from __future__ import annotations

import numpy as np

from .._contract import CTCCall, run
from .._numerics import logsumexp
from .base import Bridge


class NumpyBridge(Bridge):
    name = "numpy"
    converts = True

    def ctc(self, call: CTCCall, activations, aux):
        losses, _ = run(call, np.asarray(activations), *aux, want_grad=False, bridge=self)
        return losses

    def asarray(self, x, like=None):
        return np.asarray(x)

    def astype(self, x, like):
        return np.asarray(x).astype(np.asarray(like).dtype)

    def sum(self, x):
        return x.sum(dtype=x.dtype)

    def mean(self, x):
        return x.mean(dtype=x.dtype) if x.size else x.dtype.type(np.nan)

    def maximum(self, x, value):
        return np.maximum(x, value)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def stack(self, arrays, axis):
        return np.stack([np.asarray(a) for a in arrays], axis)

    def convert_asarray(self, x):
        return np.asarray(x)

    def transpose(self, x, axes):
        return np.transpose(x, axes)

    def take_classes(self, x, index):
        return x[..., np.asarray(index)]

    def log(self, x):
        return np.log(x)

    def class_log_softmax(self, x):
        return x - logsumexp(x, keepdims=True)

    def class_softmax(self, x):
        return np.exp(x - logsumexp(x, keepdims=True))

    def unstack(self, x):
        return [x[t] for t in range(x.shape[0])]

    def grad_of_sum(self, fn, x, arrays, statics, order):
        return np.asarray(fn(**order(fn, x, arrays), **statics)), None  # no autodiff

    def log_softmax(self, x):
        from ..reference import _log_softmax  # the reference's own: conform compares with it

        return _log_softmax(x)


BRIDGE = NumpyBridge()
