"""The engine as an ``Op`` of a Theano-family graph library (PyTensor, Theano 1.0.5).

PyTensor descends from Theano and both define graph operations the same way:
an ``Op`` with ``__props__``, ``make_node`` returning an ``Apply``,
``perform`` on numpy values and ``L_op`` for the gradient.  The Op class is
written once here and bound to a library by ``ctcbridge._bridges.pytensor``
and ``ctcbridge._bridges.theano``, which differ only in where those names live
and in how a graph rewrite is registered.

How the static call reaches a compiled graph: the Op's ``__props__`` are the
call's key (``("theano.ctc", num_threads)``, hashable, built by a registered
factory) and ``compute_grad``.  Props define the Op's identity (equal props:
the graph optimizer may merge two applications) and are all ``perform``
needs: it rebuilds the call from its key (cached), so the Op pickles and
compiles without carrying Python closures.

Like Theano's own CTC Op the node has two outputs, the per-sample costs
(default output) and the engine's gradient, and ``L_op`` scales the gradient
per sample by the cost's output gradient (Theano: ``batched_dot``).  A
rewrite swaps in a ``compute_grad=False`` Op when the gradient output is not
used, so a forward-only compiled function does not compute it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .._contract import CTCCall, call_of as _call, run
from ..errors import CTCGradientError
from .base import Bridge


def _scale_per_sample(grad, g, batch_axis):
    """The gradient of sum_n g[n] * cost[n] (Theano: ``batched_dot``), symbolically."""
    if batch_axis is None:
        return grad * g.reshape(())
    pattern = ["x"] * grad.ndim  # each sample's rows times its cost's output gradient
    pattern[batch_axis] = 0
    return grad * g.dimshuffle(*pattern)


def make_op_class(lib: SimpleNamespace, bridge: Bridge):
    """The Op class for `lib`: a namespace with ``name`` (the bridge's), ``Op``, ``Apply``,
    ``as_tensor_variable``, ``vector`` (a symbolic vector constructor taking
    ``dtype``) and ``grad_undefined``; `bridge` is the library's bridge."""

    class CTCBridgeOp(lib.Op):
        __props__ = ("key", "compute_grad")
        default_output = 0  # calling the Op gives the costs, as Theano's CTC Op

        def __init__(self, key: tuple, compute_grad: bool = True):
            self.key = tuple(key)
            self.compute_grad = bool(compute_grad)

        def make_node(self, activations, *aux):
            x = lib.as_tensor_variable(activations)
            aux = [lib.as_tensor_variable(a) for a in aux]
            outputs = [lib.vector(dtype=x.dtype)]
            if self.compute_grad:
                outputs.append(x.type())
            return lib.Apply(self, [x, *aux], outputs)

        def perform(self, node, inputs, output_storage, *params):
            x, *aux = inputs
            losses, grad = run(_call(self.key), x, *aux, want_grad=self.compute_grad,
                               bridge=bridge)
            dtype = node.outputs[0].dtype
            output_storage[0][0] = np.asarray(losses, dtype=dtype)
            if self.compute_grad:
                output_storage[1][0] = np.asarray(grad, dtype=dtype)

        def infer_shape(self, *args):
            # theano: (node, shapes); pytensor: (fgraph, node, shapes)
            shapes = args[-1]
            call = _call(self.key)
            x_shape = shapes[0]
            batch = x_shape[call.batch_axis] if call.batch_axis is not None else 1
            out = [(batch,)]
            if self.compute_grad:
                out.append(tuple(x_shape))
            return out

        def L_op(self, inputs, outputs, output_grads):
            if not self.compute_grad or len(outputs) < 2:
                raise CTCGradientError(
                    "this CTC Op was built with compute_grad=False and has no gradient "
                    "(Theano asserts the same); use compute_grad=True")
            scaled = _scale_per_sample(outputs[1], output_grads[0], _call(self.key).batch_axis)
            return [scaled] + [lib.grad_undefined(self, i, inp, "labels and lengths are integers")
                               for i, inp in enumerate(inputs) if i > 0]

        pullback = L_op  # PyTensor 3's name for it (Theano knows only L_op)

    # pickle finds the class where the bridge binds it (graphs and compiled functions pickle)
    CTCBridgeOp.__module__ = f"{__package__}.{lib.name}"
    CTCBridgeOp.__qualname__ = CTCBridgeOp.__name__ = "CTCBridgeOp"
    return CTCBridgeOp


def no_grad_replacement(op_class, node, gradient_unused: bool):
    """The rewrite's result: the costs of a ``compute_grad=False`` Op when the
    gradient output of `node` has no client (Theano's ``local_ctc_no_grad``)."""
    if not isinstance(node.op, op_class) or len(node.outputs) < 2 or not gradient_unused:
        return False
    return [op_class(node.op.key, compute_grad=False)(*node.inputs), None]


class GraphBridge(Bridge):
    """The bridge of a Theano-family library: symbolic inputs give a node of
    the Op (with the gradient output unless the call says ``compute_grad=False``);
    the array operations are the library's tensor functions."""

    def __init__(self, lib: SimpleNamespace, tensor, function, grad):
        self.name = lib.name
        self._t = tensor
        self._function = function
        self._grad = grad
        self.op_class = self._op = make_op_class(lib, self)

    def ctc(self, call: CTCCall, activations, aux):
        return self._op(call.key, call.compute_grad)(activations, *aux)

    def scale_per_sample(self, grad, g, batch_axis):
        return _scale_per_sample(grad, g, batch_axis)

    def asarray(self, x, like=None):
        return self._t.as_tensor_variable(x)

    def astype(self, x, like):
        return self._t.cast(self._t.as_tensor_variable(x), like.dtype)

    def sum(self, x):
        return x.sum()

    def mean(self, x):
        return x.mean()

    def maximum(self, x, value):
        return self._t.maximum(x, value)

    def stack(self, arrays, axis):
        return self._t.stack([self.asarray(a) for a in arrays], axis=axis)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def grad_of_sum(self, fn, x, arrays, statics, order):
        # a symbolic activations input, the other arrays as constants, one compiled
        # function giving the losses and d sum / d x (FAST_COMPILE: no C compilation
        # per case)
        xs = self._t.tensor3(dtype=str(x.dtype))
        conv = {k: self._t.as_tensor_variable(v) for k, v in arrays.items()}
        out = fn(**order(fn, xs, conv), **statics)
        grad = self._grad(out.sum(), xs)
        f = self._function([xs], [out, grad], mode="FAST_COMPILE")
        loss, g = f(x)
        return np.asarray(loss), np.asarray(g)
