"""The Bridge protocol: everything ctcbridge needs from one framework.

einops' ``AbstractBackend`` is the model: one class per framework, found by
the type of the caller's arrays, holding every framework-specific operation,
so that no other module branches on a framework's name.  A bridge supplies

- ``ctc(call, activations, aux)``: the loss as a differentiable operation of
  the framework, running the engine through :func:`ctcbridge._contract.run`;
- the few array operations the signatures' reductions need (``asarray``,
  ``astype``, ``sum``, ``mean``, ``maximum``, ``reshape``, ``reshape_like``,
  ``stack``, ``broadcast_mul``);
- ``default_threads()``: the engine threads a call uses when
  ``ctcbridge.set_num_threads`` is not set;
- ``scale_per_sample(grad, g, batch_axis)``: the backward of every bridge, the
  engine's d sum(loss) turned into d sum_n g[n] loss[n];
- for ``ctcbridge.convert`` (where ``converts``): ``transpose``,
  ``take_classes``, ``log``, ``class_log_softmax``, ``class_softmax``,
  ``unstack``, with ``convert_asarray``, ``stack`` and ``reshape``; the
  arrays of a bridge without them are converted as numpy arrays;
- for ``ctcbridge conform``: ``grad_of_sum`` (losses and d sum / d x of a
  signature on this framework's arrays), ``device_moves``, ``log_softmax`` and
  ``call_with_frames`` (Chainer's list of frames).

Operations every framework shares are written here once.
"""

from __future__ import annotations

from typing import Callable

from .. import _threads
from .._contract import CTCCall, shape_of
from ..errors import CTCValueError


def per_sample_shape(ndim: int, batch_axis: int | None) -> tuple:
    """The shape that lays one value per sample along `batch_axis` of an `ndim`-D
    gradient: 1s with -1 on that axis; () for an unbatched call."""
    if batch_axis is None:
        return ()
    shape = [1] * ndim
    shape[batch_axis] = -1
    return tuple(shape)


class Bridge:
    """The protocol, with the operations every framework shares written once."""

    name: str
    converts = False  # offers the conversions of ctcbridge.convert on its own arrays

    # --- the loss -----------------------------------------------------------

    def ctc(self, call: CTCCall, activations, aux):
        """The per-sample losses (N,) of `call`, an array of this framework."""
        raise NotImplementedError

    # --- engine threads -------------------------------------------------------

    def default_threads(self) -> int:
        """The engine threads when ``set_num_threads`` is not set; 0: every core."""
        return 0

    def engine_threads(self) -> int:
        """The engine's ``num_threads`` for a call now (0: every core)."""
        n = _threads.setting()
        return self.default_threads() if n is None else n

    def num_threads(self) -> int:
        """:meth:`engine_threads` as a count (>= 1)."""
        return self.engine_threads() or _threads.available_cores()

    # --- the backward --------------------------------------------------------

    def scale_per_sample(self, grad, g, batch_axis: int | None):
        """The gradient of sum_n g[n] * loss[n] from the engine's d sum(loss): each
        sample's rows times its g[n]."""
        return grad * self.astype(self.reshape(g, per_sample_shape(len(grad.shape), batch_axis)),
                                  grad)

    # --- array operations of the signatures ----------------------------------

    def asarray(self, x, like=None):
        raise NotImplementedError

    def astype(self, x, like):
        raise NotImplementedError

    def sum(self, x):
        raise NotImplementedError

    def mean(self, x):
        raise NotImplementedError

    def maximum(self, x, value):
        raise NotImplementedError

    def reshape(self, x, shape):
        raise NotImplementedError

    def stack(self, arrays, axis):
        raise NotImplementedError

    def reshape_like(self, x, like):
        return self.reshape(x, shape_of(like))

    def broadcast_mul(self, x, y):
        """x * y broadcast as numpy broadcasts ((N,) * (N, 1) -> (N, N)), in x's dtype."""
        return x * self.astype(y, x)

    # --- for ctcbridge.convert, where ``converts`` --------------------------------

    def convert_asarray(self, x):
        """`x` as an array the conversions below take."""
        raise NotImplementedError

    def transpose(self, x, axes):
        raise NotImplementedError

    def take_classes(self, x, index):
        """x[..., index]: the classes (last axis) in the order `index` gives."""
        raise NotImplementedError

    def log(self, x):
        raise NotImplementedError

    def class_log_softmax(self, x):
        """log_softmax over the last axis, in x's dtype."""
        raise NotImplementedError

    def class_softmax(self, x):
        raise NotImplementedError

    def unstack(self, x) -> list:
        """x's entries along axis 0."""
        raise NotImplementedError

    # --- for ctcbridge conform ------------------------------------------------

    def grad_of_sum(self, fn, x, arrays: dict, statics: dict, order: Callable):
        """(losses, d sum(finite losses) / d x), both numpy, of ``fn`` called with `x`
        and `arrays` as this framework's arrays (``order(fn, x, arrays)`` names
        them) and `statics` as they are."""
        raise NotImplementedError

    def device_moves(self, device: str):
        """(to_device, back): move this framework's arrays to `device`, and an output
        back to the host (``conform --device``)."""
        raise CTCValueError(f"--device is supported for torch and jax arrays, not {self.name}")

    def log_softmax(self, x):
        """log_softmax over the last axis, differentiable in this framework
        (``conform --through-log-softmax``)."""
        raise CTCValueError("--through-log-softmax supports numpy, torch, jax and tensorflow, "
                            f"not {self.name}")

    def call_with_frames(self, fn, x, **kwargs):
        """``fn(x=[x[0], ..., x[T-1]], **kwargs)``: a signature taking a list of frames
        (Chainer's) called with one (T, ...) array."""
        return fn(x=[x[i] for i in range(shape_of(x)[0])], **kwargs)
