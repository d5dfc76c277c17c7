"""The PyTorch bridge: one ``torch.library`` custom operator, ``ctcbridge::ctc``.

The engine runs inside the operator's CPU kernel; the operator has what
torch's own operators have, so that every torch tool composes with it:

- an autograd formula (:class:`_CTC`, with ``setup_context``): the backward
  scales the engine's gradient per sample and branches on a tensor's values
  only where the backward is neither vmapped nor traced (:func:`_input_grad`),
  so ``torch.func.grad``, ``vmap`` over it, ``jacrev`` and
  ``gradcheck(check_batched_grad=True)`` work;
- a fake kernel (output shapes without running the engine), for
  ``torch.compile(fullgraph=True)`` and ``torch.export``; inside a
  ``torch.func`` transform Dynamo breaks the graph at the loss instead, as
  for torch's own ``ctc_loss`` (:meth:`TorchBridge.ctc`);
- a vmap rule (the engine once per vmapped slice);
- autocast's float32 policy, the one torch's ``ctc_loss`` has: under
  ``torch.autocast`` bfloat16 and float16 activations are computed in float32.

A plain eager call (CPU tensors of the engine's float types, nothing that must
see a torch operator: see :func:`_plain_eager`) skips the operator and runs the
engine from :class:`_CTCEager`, with the same backward and the same bits: the
operator's dispatch layers cost about a quarter of the engine's time on a
speech batch.

Second derivatives are refused as torch refuses them for its own CTC: the
gradient is differentiable only in the incoming gradient; differentiating it
in the activations raises a ``RuntimeError`` (never a silently wrong or
detached result).  Tensors on another device are computed on the host and the
results copied back to the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

from .._contract import CTCCall, call_of as _get, run
from ..errors import CTCNotImplementedError, GradientNotComputedError
from .base import Bridge

_COMPUTED = (torch.float32, torch.float64)  # what the engine reads (numpy's float types)


def _key(call: CTCCall) -> str:
    return repr(call.key)  # the operator (and its fake kernel) sees only this string


def _check_dtype(activations: torch.Tensor, key: str) -> None:
    # torch's ctc_loss has no bfloat16/float16 kernel: outside autocast (which
    # casts them to float32 before the call) it raises NotImplementedError.  That
    # is torch's signature's rule (CTCCall.full_precision_only); the other
    # signatures on torch tensors compute half precision in float32.
    if activations.dtype not in _COMPUTED and _get(key).full_precision_only:
        raise CTCNotImplementedError(
            f"ctcbridge's ctc_loss is not implemented for log_probs of dtype "
            f"{activations.dtype} (as torch's ctc_loss): cast them to float32, or call it "
            "under torch.autocast, which computes it in float32")


def _host(t: torch.Tensor) -> np.ndarray:
    """The tensor's values as numpy: a view of the tensor's own memory on the CPU
    (strided where the tensor is: the engine reads any strides in place), a copy
    to the host from another device."""
    return t.detach().numpy() if t.is_cpu else t.detach().cpu().numpy()


def _on_host(call: CTCCall, x: torch.Tensor, aux, want_grad: bool):
    """The engine on the tensors' values: (losses, grad or None) as CPU tensors.
    The engine returns new C-contiguous arrays: from_numpy shares them, no copy."""
    losses, grad = run(call, _host(x), *[_host(a) for a in aux], want_grad=want_grad,
                       bridge=BRIDGE)
    return (torch.from_numpy(np.ascontiguousarray(losses)),
            None if grad is None else torch.from_numpy(np.ascontiguousarray(grad)))


@torch.library.custom_op("ctcbridge::ctc", mutates_args=())
def _ctc_op(activations: torch.Tensor, aux: list[torch.Tensor], key: str,
            want_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample losses (N,), d sum(losses) / d activations, or an empty tensor
    where ``want_grad`` is false)."""
    _check_dtype(activations, key)
    losses, grad = _on_host(_get(key), activations, aux, want_grad)
    device = activations.device
    grad = grad if grad is not None else activations.new_empty((0,))
    return losses.to(device), grad.to(device)


@_ctc_op.register_fake
def _(activations, aux, key, want_grad):
    _check_dtype(activations, key)
    n = _get(key).batch_size(tuple(activations.shape))
    grad = torch.empty_like(activations) if want_grad else activations.new_empty((0,))
    return activations.new_empty((n,)), grad


class _CTC(torch.autograd.Function):
    """The loss as a differentiable function: the operator forward, the engine's
    gradient scaled per sample backward.

    An ``autograd.Function`` with ``setup_context`` rather than the operator's
    ``register_autograd``: torch 2.13 runs a custom operator's autograd formula
    in a Function without ``setup_context``, which ``torch.func.grad``, ``jacrev``
    and ``vmap`` over a gradient refuse.  This one composes with them (its
    forward is vmapped through the operator's vmap rule, its backward is torch
    operations), and Dynamo traces it, with the operator inside."""

    generate_vmap_rule = True

    @staticmethod
    def forward(activations, key, want_grad, *aux):
        return _ctc_op(activations, list(aux), key, want_grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        activations, key, _want, *_aux = inputs
        ctx.batch_axis = _get(key).batch_axis
        ctx.n_aux = len(_aux)
        ctx.dtype = activations.dtype  # bfloat16 under autocast, computed in float32
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros (N x the activations) for output[1]
        ctx.save_for_backward(output[1], activations)

    @staticmethod
    def backward(ctx, g_losses, _g_grad):
        grad, activations = ctx.saved_tensors
        if g_losses is None:  # no gradient reached the losses (grads are not materialized)
            return (None, None, None) + (None,) * ctx.n_aux
        if grad.numel() == 0 and g_losses.numel():  # a shape, not a value: vmap allows it
            raise GradientNotComputedError(
                "ctcbridge: the gradient was not computed (the activations did not require "
                "grad when the loss was computed)")
        scaled = _input_grad(grad, activations, g_losses, ctx.batch_axis)
        return (scaled.to(ctx.dtype), None, None) + (None,) * ctx.n_aux


def _input_grad(grad, activations, g_losses, batch_axis):
    """The backward of both routes: d sum_n g[n] loss[n] / d activations from the
    engine's gradient of the sum.  Under create_graph=True (or inside torch.func's
    transforms) the result is linked to the activations by a derivative that
    raises; the gradient of a plain sum (g all 1) is the engine's own, with no
    pass over it, where a branch on g's values is allowed (:func:`_has_values`);
    otherwise each sample's rows are scaled by its g[n]."""
    if torch.is_grad_enabled():
        grad = _NoSecondDerivative.apply(grad, activations)
    elif _has_values(g_losses) and bool((g_losses == 1).all()):
        return grad
    return BRIDGE.scale_per_sample(grad, g_losses, batch_axis)


class _NoSecondDerivative(torch.autograd.Function):
    """The engine's gradient, as a function of the activations whose derivative
    raises: the engine gives no second derivative, and without this link the
    gradient of ``create_graph=True`` would be silently detached (or, through the
    incoming gradient alone, a wrong Hessian)."""

    generate_vmap_rule = True  # pure torch forward: vmap, grad and jacrev compose

    @staticmethod
    def forward(grad, activations):
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _g):
        # the native's type and wording (torch: "derivative for
        # aten::_ctc_loss_backward is not implemented")
        raise RuntimeError("derivative for ctcbridge::ctc's backward is not implemented "
                           "(second derivatives of the CTC loss are not computed, as in "
                           "torch's ctc_loss)")


def _vmap(info, in_dims, activations, aux, key, want_grad):
    """vmap: the operator once per slice of the vmapped dimension, stacked."""
    x_dim, aux_dims = in_dims[0], in_dims[1]
    losses, grads = [], []
    for i in range(info.batch_size):
        x = activations if x_dim is None else activations.select(x_dim, i)
        a = [t if d is None else t.select(d, i) for t, d in zip(aux, aux_dims)]
        loss, grad = _ctc_op(x, a, key, want_grad)
        losses.append(loss)
        grads.append(grad)
    return (torch.stack(losses), torch.stack(grads)), (0, 0)


_ctc_op.register_vmap(_vmap)
for _device in ("cpu", "cuda"):  # torch's ctc_loss is on both float32 lists
    _ctc_op.register_autocast(_device, torch.float32)


class _CTCEager(torch.autograd.Function):
    """The same loss for the plain eager call (see :func:`_plain_eager`): the engine
    called directly, without the operator's dispatch layers (the autograd
    wrapper, the redispatch, the Dynamo-disable wrapper) and without the
    signature binding that ``Function.apply`` does through ``inspect`` for every
    Function with ``setup_context``.  Those cost about 0.3 ms a call, a quarter
    of the engine's time on a speech batch.  Its backward is :class:`_CTC`'s
    (:func:`_input_grad`)."""

    @staticmethod
    def forward(ctx, activations, call, *aux):
        losses, grad = _on_host(call, activations, aux, want_grad=True)
        ctx.batch_axis = call.batch_axis
        ctx.n_aux = len(aux)
        ctx.save_for_backward(grad, activations)
        return losses

    @staticmethod
    def backward(ctx, g_losses):
        grad, activations = ctx.saved_tensors
        return ((_input_grad(grad, activations, g_losses, ctx.batch_axis), None)
                + (None,) * ctx.n_aux)


def _has_values(g: torch.Tensor) -> bool:
    """Whether a backward may branch on `g`'s values: not when the backward is
    vmapped (``autograd.grad(is_grads_batched=True)``, which gradcheck's batched
    check uses, batches with the legacy vmap; ``torch.func`` with functorch's)
    nor traced (compiled autograd)."""
    return not (torch.compiler.is_compiling()
                or torch._C._are_functorch_transforms_active()
                or torch._C._functorch.is_legacy_batchedtensor(g)
                or torch._C._functorch.is_batchedtensor(g))


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # a Parameter has no __torch_function__


def _plain_eager(x: torch.Tensor, aux: list) -> bool:
    """Whether this call can take the direct route (:class:`_CTCEager`): plain CPU
    tensors of the engine's float types, eagerly, with nothing that must see a
    torch operator: no compiling or JIT tracing, no ``torch.func`` transform, no
    Python dispatch or function mode (fake tensors, ``torch.device`` contexts,
    FlopCounter), no autocast (whose policy the operator carries), no tensor
    subclass but ``nn.Parameter``.  Everything else goes through the operator."""
    # is_compiling first: Dynamo folds it to True and reads no further.  The
    # checks are the cheap forms (is_cpu, not .device, which builds a device
    # object; any autocast at all, not one device's, which parses a string):
    # this runs on every call
    return (not torch.compiler.is_compiling()
            and type(x) in _PLAIN and x.is_cpu and x.dtype in _COMPUTED
            and all(type(a) is torch.Tensor and a.is_cpu for a in aux)
            and not torch._C._are_functorch_transforms_active()
            and not torch._C._len_torch_dispatch_stack()
            and not torch._C._is_torch_function_mode_enabled()
            and not torch._C._is_any_autocast_enabled()
            and torch._C._get_tracing_state() is None)


@torch._dynamo.disable(recursive=True)
def _apply_eagerly(x, key, want, *aux):
    """``_CTC.apply``, never traced by Dynamo: a call is a graph break."""
    return _CTC.apply(x, key, want, *aux)[0]


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
        want = bool(x.requires_grad and torch.is_grad_enabled())
        aux = [_tensor(a) for a in aux]
        if _plain_eager(x, aux):
            return _CTCEager.apply(x, call, *aux) if want else _on_host(call, x, aux, False)[0]
        if torch.compiler.is_compiling() and torch._C._functorch.maybe_current_level() is not None:
            # Dynamo tracing inside a torch.func transform (torch.compile(grad(f)),
            # compile(vmap(f)), compile(jacrev(f))): torch 2.13's Dynamo fails
            # internally on an autograd.Function calling a custom operator there
            # (it hands the Function's ctx to the operator).  A graph break
            # instead, where torch's own ctc_loss breaks the graph too (a dynamic
            # shape operator): compile runs the transform eagerly around it, and
            # fullgraph=True raises Unsupported, as for the native.
            return _apply_eagerly(x, _key(call), want, *aux)
        losses, _ = _CTC.apply(x, _key(call), want, *aux)
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
