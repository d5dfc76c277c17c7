"""The PyTorch bridge: an autograd Function, and a custom operator for compile.

Eagerly the engine runs inside a ``torch.autograd.Function`` (works with
``gradcheck``); under ``torch.compile(fullgraph=True)`` the same computation
is the ``torch.library.custom_op`` ``ctcbridge::ctc``, with autograd and a
fake kernel that gives output shapes without running the engine.  Tensors on another device are computed on the
CPU and the results returned on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

from .._contract import CTCCall, call_of as _get, run
from ..errors import GradientNotComputedError
from .base import Bridge


def _key(call: CTCCall) -> str:
    return repr(call.key)  # fake kernels under torch.compile see only this string


@torch.library.custom_op("ctcbridge::ctc", mutates_args=())
def _ctc_op(activations: torch.Tensor, aux: list[torch.Tensor], key: str,
            want_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    call = _get(key)
    x = activations.detach().cpu().numpy()
    losses, grad = run(call, x, *[a.detach().cpu().numpy() for a in aux], want_grad=want_grad,
                       bridge=BRIDGE)
    device = activations.device
    out_grad = torch.from_numpy(np.ascontiguousarray(grad)) if grad is not None else \
        activations.new_empty((0,), device="cpu")
    return torch.from_numpy(np.ascontiguousarray(losses)).to(device), out_grad.to(device)


@_ctc_op.register_fake
def _(activations, aux, key, want_grad):
    n = _get(key).batch_size(tuple(activations.shape))
    grad = torch.empty_like(activations) if want_grad else activations.new_empty((0,))
    return activations.new_empty((n,)), grad


def _setup_context(ctx, inputs, output):
    activations, aux, key, _want = inputs
    ctx.batch_axis = _get(key).batch_axis
    ctx.n_aux = len(aux)
    ctx.save_for_backward(output[1])


def _backward(ctx, g_losses, _g_grad):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0 and g_losses.numel():
        raise GradientNotComputedError("ctcbridge: the gradient was not computed (the activations did not "
                           "require grad when the loss was computed)")
    # traced code (this op exists for torch.compile) must not branch on values:
    # older torch versions trace this backward with is_compiling() False
    return _scale(grad, g_losses, ctx.batch_axis, traced=True), [None] * ctx.n_aux, None, None


def _scale(grad, g_losses, batch_axis, traced=False):
    """The gradient of sum_n g[n] * loss[n]: each sample's rows times g[n]."""
    if not traced and not torch.compiler.is_compiling() and bool((g_losses == 1).all()):
        return grad  # d sum(losses): no copy needed
    return BRIDGE.scale_per_sample(grad, g_losses, batch_axis)


_ctc_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerCTC(torch.autograd.Function):
    """The same operation for eager mode: ``torch.autograd.Function`` has less
    per-call overhead than the custom-op dispatcher, which only
    ``torch.compile`` needs."""

    @staticmethod
    def forward(ctx, activations, call, *aux):
        want = ctx.needs_input_grad[0]
        losses, grad = run(call, activations.detach().cpu().numpy(),
                           *[a.detach().cpu().numpy() for a in aux], want_grad=want,
                           bridge=BRIDGE)
        ctx.batch_axis = call.batch_axis
        ctx.n_aux = len(aux)
        if want:
            ctx.save_for_backward(torch.from_numpy(np.ascontiguousarray(grad)).to(
                activations.device))
        return torch.from_numpy(np.ascontiguousarray(losses)).to(activations.device)

    @staticmethod
    def backward(ctx, g_losses):
        (grad,) = ctx.saved_tensors
        return (_scale(grad, g_losses, ctx.batch_axis), None) + (None,) * ctx.n_aux


def _tensor(a):
    """`a` as a torch tensor.  Other frameworks' arrays arrive as read-only numpy
    views (a tf.SparseTensor's indices, say), which torch warns about sharing:
    those are copied."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.as_tensor(a if a.flags.writeable else a.copy())


class TorchBridge(Bridge):
    name = "torch"
    converts = True

    def default_threads(self) -> int:
        # torch's intra-op threads (torchrun sets OMP_NUM_THREADS=1 per worker)
        return torch.get_num_threads()

    def ctc(self, call: CTCCall, activations, aux):
        x = _tensor(activations)
        tensors = [_tensor(a) for a in aux]
        if not torch.compiler.is_compiling():
            return _EagerCTC.apply(x, call, *tensors)
        want = bool(x.requires_grad and torch.is_grad_enabled())
        losses, _ = _ctc_op(x, tensors, _key(call), want)
        return losses

    def asarray(self, x, like=None):
        device = like.device if isinstance(like, torch.Tensor) else None
        if isinstance(x, torch.Tensor):
            return x.to(device) if device is not None else x
        return torch.as_tensor(np.asarray(x), device=device)

    def astype(self, x, like):
        return self.asarray(x, like).to(like.dtype)

    def sum(self, x):
        return x.sum()

    def mean(self, x):
        return x.mean()

    def maximum(self, x, value):
        return torch.clamp(x, min=value)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def stack(self, arrays, axis):
        return torch.stack([self.asarray(a) for a in arrays], axis)

    def convert_asarray(self, x):
        return x

    def transpose(self, x, axes):
        return x.permute(*axes)

    def take_classes(self, x, index):
        return x[..., torch.as_tensor(index, device=x.device)]

    def log(self, x):
        return torch.log(x)

    def class_log_softmax(self, x):
        return torch.log_softmax(x, -1)

    def class_softmax(self, x):
        return torch.softmax(x, -1)

    def unstack(self, x):
        return list(torch.unbind(x, 0))

    def grad_of_sum(self, fn, x, arrays, statics, order):
        xt = torch.tensor(x, requires_grad=True)
        conv = {k: torch.as_tensor(v) for k, v in arrays.items()}
        out = fn(**order(fn, xt, conv), **statics)
        out.sum().backward()
        return out.detach().numpy(), xt.grad.numpy()

    def device_moves(self, device):
        return (lambda v: v.to(device) if isinstance(v, torch.Tensor) else v,
                lambda out: out.cpu())

    def log_softmax(self, x):
        return x.log_softmax(-1)


BRIDGE = TorchBridge()
