"""The numpy bridge: losses as numpy arrays, no autodiff."""

from __future__ import annotations

import numpy as np

from .._contract import CTCCall, run


class NumpyBridge:
    name = "numpy"

    def ctc(self, call: CTCCall, activations, aux):
        losses, _ = run(call, np.asarray(activations), *aux, want_grad=False)
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


BRIDGE = NumpyBridge()


def grad_of_sum(fn, x, arrays, statics, order):
    """Conformance runner (see ``conform.rows.run_on``): numpy has no autodiff."""
    return np.asarray(fn(**order(fn, x, arrays), **statics)), None
