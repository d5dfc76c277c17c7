"""The MXNet bridge: NDArrays through ``mx.autograd``, Symbols through a CustomOp.

- NDArray inputs: the engine runs synchronously inside an
  ``mx.autograd.Function`` (errors keep their ctcbridge types and surface at
  the call, not asynchronously as MXNet's own errors do); the result is an
  NDArray on the activations' context, differentiable with ``mx.autograd``.
- Symbol inputs (the Symbol API, hybridized Gluon blocks): the same call is
  the CustomOp ``ctcbridge_ctc`` (``mx.sym.Custom``), whose forward runs the
  engine on MXNet's worker thread and keeps the gradient as a hidden second
  output that its backward scales by the head gradient.

A call with ``head_grad=False`` (WarpCTC's) makes the backward ignore the head
gradient and write the engine's gradient as is, as MXNet's WarpCTC plugin did.
The gradient is scaled on numpy values, by the numpy bridge's rule.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from .._contract import CTCCall, call_of as _get, run
from ..errors import CTCTypeError
from .base import Bridge
from .numpy import BRIDGE as NUMPY

_OP_TYPE = "ctcbridge_ctc"  # CustomOp parameters are strings: the call travels as its key


def _is_symbol(x) -> bool:
    return isinstance(x, mx.sym.Symbol)


def _nd(arr: np.ndarray, ctx) -> mx.nd.NDArray:
    return mx.nd.array(arr, ctx=ctx, dtype=arr.dtype)


class _EagerCTC(mx.autograd.Function):
    """One engine call on NDArrays (an ``autograd.Function`` is single-use).

    ``fixed``: the aux values that are not NDArrays (numpy arrays, lists; MXNet
    has no zero-size NDArrays), None where the NDArray inputs go, in order."""

    def __init__(self, call: CTCCall, head_grad: bool, fixed: list):
        super().__init__()
        self._call = call
        self._head_grad = head_grad
        self._fixed = fixed

    def forward(self, x, *aux):
        given = iter(aux)
        values = [next(given).asnumpy() if f is None else f for f in self._fixed]
        losses, grad = run(self._call, x.asnumpy(), *values, bridge=BRIDGE)
        self._grad = grad
        self._aux = aux
        self._x = x
        return _nd(np.ascontiguousarray(losses), x.context)

    def backward(self, g):
        grad = self._grad
        if self._head_grad:
            grad = NUMPY.scale_per_sample(grad, g.asnumpy(), self._call.batch_axis)
        zeros = [mx.nd.zeros(a.shape, ctx=a.context, dtype=a.dtype) for a in self._aux]
        return (_nd(np.ascontiguousarray(grad, dtype=grad.dtype).astype(self._x.dtype),
                    self._x.context), *zeros)


class _CustomCTC(mx.operator.CustomOp):
    def __init__(self, call: CTCCall, head_grad: bool):
        super().__init__()
        self._call = call
        self._head_grad = head_grad
        self._have_grad = False

    def _run(self, in_data, want_grad):
        return run(self._call, in_data[0].asnumpy(), *[a.asnumpy() for a in in_data[1:]],
                   want_grad=want_grad, bridge=BRIDGE)

    def forward(self, is_train, req, in_data, out_data, aux):
        losses, grad = self._run(in_data, want_grad=is_train)
        self.assign(out_data[0], req[0], _nd(np.ascontiguousarray(losses), in_data[0].context))
        if grad is not None:
            self.assign(out_data[1], req[1], _nd(np.ascontiguousarray(grad),
                                                 in_data[0].context))
        self._have_grad = grad is not None

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        # recorded with train_mode=False: the forward did not compute the gradient
        grad = out_data[1].asnumpy() if self._have_grad else self._run(in_data, True)[1]
        if self._head_grad:
            grad = NUMPY.scale_per_sample(grad, out_grad[0].asnumpy(), self._call.batch_axis)
        self.assign(in_grad[0], req[0], _nd(np.ascontiguousarray(grad).astype(
            in_data[0].dtype), in_data[0].context))
        for i in range(1, len(in_data)):
            self.assign(in_grad[i], req[i], mx.nd.zeros_like(in_data[i]))


@mx.operator.register(_OP_TYPE)
class _CustomCTCProp(mx.operator.CustomOpProp):
    """Parameters (strings): ``key``, the call's key; ``n_aux``; ``head_grad``; and the
    Symbol's attributes, which MXNet passes along."""

    def __init__(self, key, n_aux, head_grad="1", **symbol_attributes):
        # MXNet hands a Custom op's Symbol attributes (``attr=``, ``mx.AttrScope``:
        # ``__ctx_group__``, ``__lr_mult__``...) to its Prop with the parameters:
        # they are MXNet's, not the op's
        # head_grad="0" (WarpCTC): the backward ignores the head gradient, so the op
        # declares itself a loss (no top gradient): a Symbol or Module graph ending
        # in it trains without head gradients, as MXNet's WarpCTC plugin did
        self._head_grad = head_grad == "1"
        super().__init__(need_top_grad=self._head_grad)
        self._key = key
        self._n_aux = int(n_aux)

    def list_arguments(self):
        return ["data"] + [f"aux{i}" for i in range(self._n_aux)]

    def list_outputs(self):
        return ["output", "grad"]  # the gradient rides along as a hidden output

    def infer_shape(self, in_shape):
        data = tuple(in_shape[0])
        n = _get(self._key).batch_size(data)
        return in_shape, [(n,), data], []

    def infer_type(self, in_type):
        return in_type, [in_type[0], in_type[0]], []

    def create_operator(self, ctx, in_shapes, in_dtypes):
        return _CustomCTC(_get(self._key), self._head_grad)


def _symbol_ctc(call: CTCCall, x, aux, head_grad: bool):
    key = repr(call.key)
    out = mx.sym.Custom(x, *aux, key=key, n_aux=str(len(aux)),
                        head_grad="1" if head_grad else "0", op_type=_OP_TYPE)
    return out[0]


class MXNetBridge(Bridge):
    name = "mxnet"

    def ctc(self, call: CTCCall, activations, aux):
        if _is_symbol(activations):
            return _symbol_ctc(call, activations, [self.asarray(a) for a in aux],
                               call.head_grad)
        x = self.asarray(activations)
        fixed = [None if isinstance(a, mx.nd.NDArray) else np.asarray(a) for a in aux]
        nd_aux = [a for a in aux if isinstance(a, mx.nd.NDArray)]
        return _EagerCTC(call, call.head_grad, fixed)(x, *nd_aux)

    def with_operator_args(self, build, *, name=None, attr=None, out=None):
        """``build()`` with the arguments of MXNet's generated operators: ``attr``
        (a dict of strings) on every node the call creates (``mx.AttrScope``);
        ``name`` names a Symbol's output (``<name>_output``; NDArray operators
        ignore it); ``out``, an NDArray, receives the result, which is returned."""
        scope = mx.AttrScope(**{k: str(v) for k, v in (attr or {}).items()})
        with scope:
            result = build()
            if _is_symbol(result):
                if name is not None:
                    result = mx.sym.identity(result, name=name)
                return result
        if out is not None:
            if not isinstance(out, mx.nd.NDArray):
                raise CTCTypeError(f"out must be an NDArray, got {type(out).__name__}")
            # an operator writing into `out`: recorded by autograd like the native's
            mx.nd.identity(result, out=out)
            return out
        return result

    def asarray(self, x, like=None):
        if isinstance(x, (mx.nd.NDArray, mx.sym.Symbol)):
            return x
        arr = np.asarray(x)
        if arr.dtype == np.float64 and not isinstance(x, np.ndarray):
            arr = arr.astype(np.float32)  # Python floats: MXNet's default dtype
        ctx = like.context if isinstance(like, mx.nd.NDArray) else None
        return mx.nd.array(arr, ctx=ctx, dtype=arr.dtype)

    def astype(self, x, like):
        x = self.asarray(x, like)
        if _is_symbol(like) or _is_symbol(x):
            return x  # a Symbol's dtype is known only after binding
        return x.astype(like.dtype)

    def sum(self, x):
        return mx.sym.sum(x) if _is_symbol(x) else x.sum()

    def mean(self, x):
        return mx.sym.mean(x) if _is_symbol(x) else x.mean()

    def maximum(self, x, value):
        return (mx.sym if _is_symbol(x) else mx.nd).maximum(x, value)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def stack(self, arrays, axis):
        first = next((a for a in arrays if isinstance(a, (mx.nd.NDArray, mx.sym.Symbol))),
                     None)
        items = [self.asarray(a, first) for a in arrays]
        return (mx.sym if any(map(_is_symbol, items)) else mx.nd).stack(*items, axis=axis)

    def reshape_like(self, x, like):
        return (mx.sym if _is_symbol(x) else mx.nd).reshape_like(x, like)

    def broadcast_mul(self, x, y):
        """MXNet's broadcasting product (Gluon's sample weights)."""
        y = self.asarray(y, x)
        return (mx.sym if _is_symbol(x) or _is_symbol(y) else mx.nd).broadcast_mul(x, y)

    def grad_of_sum(self, fn, x, arrays, statics, order):
        xt = mx.nd.array(x, dtype=x.dtype)
        xt.attach_grad()
        # MXNet has no zero-size NDArrays: those stay numpy (signatures take mixed arrays)
        conv = {k: mx.nd.array(v, dtype=v.dtype) if v.size else v for k, v in arrays.items()}
        with mx.autograd.record():
            out = fn(**order(fn, xt, conv), **statics)
            total = out.sum()
        total.backward()
        return out.asnumpy(), xt.grad.asnumpy()


BRIDGE = MXNetBridge()
