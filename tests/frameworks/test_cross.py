"""Every signature on every framework's arrays (nox session `cross`: torch,
tensorflow and jax in one environment): the same losses and gradients as on
numpy, returned as that framework's arrays, differentiable there."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import torch

import ctcbridge.keras as ck
import ctcbridge.optax as co
import ctcbridge.tensorflow as ctf
import ctcbridge.torch as ct
from native_cases import close, make_case

CASE = make_case(12, allow_infeasible=False, min_label=1)
T, N, C = CASE.logits.shape
TNC = CASE.logits.astype(np.float32)
NTC = np.ascontiguousarray(TNC.transpose(1, 0, 2))
LAB = CASE.labels.astype(np.int32)
LL = CASE.label_lengths.astype(np.int32)
IL = CASE.input_lengths.astype(np.int32)
LOGIT_PAD = (np.arange(T)[None] >= IL[:, None]).astype(np.float32)
LABEL_PAD = (np.arange(LAB.shape[1])[None] >= LL[:, None]).astype(np.float32)
PROBS = np.exp(NTC - NTC.max(-1, keepdims=True))
PROBS /= PROBS.sum(-1, keepdims=True)
BLANK_LAST = np.where(LAB == C - 1, 1, LAB)

# signature name -> (function of (x, to) where `to` converts the other arguments, input x)
SIGNATURES = {
    "torch": (lambda x, to: ct.ctc_loss(x, to(LAB), to(IL), to(LL), reduction="sum"), TNC),
    "optax": (lambda x, to: co.ctc_loss(x, to(LOGIT_PAD), to(LAB), to(LABEL_PAD)), NTC),
    "tensorflow": (lambda x, to: ctf.ctc_loss(to(LAB), x, to(LL), to(IL)), TNC),
    "keras": (lambda x, to: ck.ctc_loss(to(LAB), x, to(LL), to(IL)), NTC),
    "keras_batch_cost": (lambda x, to: ck.ctc_batch_cost(to(BLANK_LAST), x, to(IL[:, None]),
                                                         to(LL[:, None])), PROBS),
}


def _numpy(fn, x):
    return np.asarray(fn(x, np.asarray))


def _torch(fn, x):
    xt = torch.tensor(x, requires_grad=True)
    out = fn(xt, torch.as_tensor)
    assert isinstance(out, torch.Tensor)
    out.sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


def _jax(fn, x):
    out = fn(jnp.asarray(x), jnp.asarray)
    assert isinstance(out, jax.Array)
    grad = jax.grad(lambda z: fn(z, jnp.asarray).sum())(jnp.asarray(x))
    return np.asarray(out), np.asarray(grad)


def _tf(fn, x):
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        out = fn(xv, tf.constant)
        total = tf.reduce_sum(out)
    assert isinstance(out, tf.Tensor)
    return out.numpy(), tape.gradient(total, xv).numpy()


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_on_every_framework(name):
    fn, x = SIGNATURES[name]
    base = _numpy(fn, x)
    results = {"torch": _torch(fn, x), "jax": _jax(fn, x), "tensorflow": _tf(fn, x)}
    grads = []
    for fw, (loss, grad) in results.items():
        close(loss, base, 1e-6, 1e-6)
        assert grad.shape == x.shape, fw
        grads.append(grad)
    for g in grads[1:]:
        close(g, grads[0], 1e-6, 1e-6)
    assert np.abs(grads[0]).sum() > 0
