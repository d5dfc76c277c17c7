"""Arrays on an accelerator: computed on the CPU, results returned on the input's device.

CI has no GPU, so these tests run only where one is present (they were run on
an NVIDIA H200: see docs/development.md); without one each test is skipped
with the reason.  They compare with the framework's own CTC on that device.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from native_cases import make_case


def _torch_cuda():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def _jax_gpu():
    if importlib.util.find_spec("jax") is None:
        return None
    import jax

    try:
        return jax if jax.devices("gpu") else None
    except RuntimeError:
        return None


needs_cuda = pytest.mark.skipif(_torch_cuda() is None, reason="no CUDA device for torch")
needs_jax_gpu = pytest.mark.skipif(_jax_gpu() is None, reason="no GPU device for jax")


@needs_cuda
@pytest.mark.parametrize("seed", range(20))
def test_torch_cuda_tensors(seed):
    """ctcbridge.torch on CUDA tensors: loss and gradient on the input's device,
    equal to torch's own CTC on the same device (float64: cuDNN is not used)."""
    import torch
    import torch.nn.functional as F

    import ctcbridge.torch as ct

    case = make_case(seed, allow_infeasible=False)
    dev = torch.device("cuda")
    x = torch.tensor(case.logits, dtype=torch.float64, device=dev)
    targets = torch.from_numpy(case.labels).to(dev)
    il = torch.from_numpy(case.input_lengths).to(dev)
    tl = torch.from_numpy(case.label_lengths).to(dev)
    out = []
    for fn in (ct.ctc_loss, F.ctc_loss):
        xg = x.clone().requires_grad_()
        loss = fn(xg.log_softmax(-1), targets, il, tl, blank=case.blank, reduction="none")
        assert loss.device == xg.device
        loss.sum().backward()
        assert xg.grad.device == xg.device
        out.append((loss.detach().cpu().numpy(), xg.grad.cpu().numpy()))
    (lo, go), (ln, gn) = out
    np.testing.assert_allclose(lo, ln, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(go, gn, rtol=0, atol=1e-9)


@needs_cuda
def test_torch_cuda_module_and_mean():
    """CTCLoss as a module on CUDA, 'mean' reduction, float32 against float64 native."""
    import torch
    import torch.nn.functional as F

    import ctcbridge.torch as ct

    case = make_case(7, allow_infeasible=False)
    dev = torch.device("cuda")
    x = torch.tensor(case.logits, dtype=torch.float32, device=dev, requires_grad=True)
    args = (torch.from_numpy(case.labels).to(dev), torch.from_numpy(case.input_lengths).to(dev),
            torch.from_numpy(case.label_lengths).to(dev))
    loss = ct.CTCLoss(blank=case.blank).to(dev)(x.log_softmax(-1), *args)
    loss.backward()
    assert loss.is_cuda and loss.dtype == torch.float32 and x.grad.is_cuda
    x64 = x.detach().double().requires_grad_()
    ref = F.ctc_loss(x64.log_softmax(-1), *args, blank=case.blank)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.cpu().numpy(), x64.grad.cpu().numpy(), atol=1e-5)


@needs_jax_gpu
@pytest.mark.parametrize("jit", [False, True])
def test_jax_gpu_arrays(jit):
    """ctcbridge.optax on arrays placed on the GPU, eagerly and under jit, against optax."""
    import jax
    import jax.numpy as jnp
    import optax

    import ctcbridge.optax as co

    case = make_case(3, allow_infeasible=False, blank="zero")
    gpu = jax.devices("gpu")[0]
    logits = jax.device_put(jnp.asarray(case.logits.transpose(1, 0, 2), jnp.float32), gpu)
    T, S = case.T, case.labels.shape[1]
    lp = jax.device_put(jnp.asarray(np.arange(T)[None] >= case.input_lengths[:, None],
                                    jnp.float32), gpu)
    labels = jax.device_put(jnp.asarray(case.labels, jnp.int32), gpu)
    sp = jax.device_put(jnp.asarray(np.arange(S)[None] >= case.label_lengths[:, None],
                                    jnp.float32), gpu)
    results = []
    for fn in (co.ctc_loss, optax.ctc_loss):
        f = jax.value_and_grad(lambda z, fn=fn: fn(z, lp, labels, sp).sum())
        if jit:
            f = jax.jit(f)
        value, grad = f(logits)
        assert grad.devices() == {gpu}
        results.append((float(value), np.asarray(grad)))
    (vo, go), (vn, gn) = results
    np.testing.assert_allclose(vo, vn, rtol=1e-4)
    np.testing.assert_allclose(go, gn, atol=2e-3)
