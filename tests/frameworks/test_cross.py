"""Every signature on every framework's arrays (nox session `cross`: torch,
tensorflow and jax in one environment): the same losses and gradients as on
numpy, returned as that framework's arrays, differentiable there."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")  # the module skips where a framework it needs is absent
pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import torch

import ctcbridge.chainer as cc
import ctcbridge.gluon as cg
import ctcbridge.keras as ck
import ctcbridge.mxnet as cm
import ctcbridge.optax as co
import ctcbridge.tensorflow as ctf
import ctcbridge.theano as cth
import ctcbridge.torch as ct
from ctcbridge.conform.rows import ROWS
from ctcbridge.conform.compare import run_matrix
from ctcbridge.convert import Labels
from ctcbridge.conform.corpus import load
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
VALID = np.arange(LAB.shape[1])[None] < LL[:, None]
MINUS_ONE_PADDED = np.where(VALID, LAB, -1).astype(np.int32)  # theano: negatives removed
GLUON_LAB = np.where(VALID, BLANK_LAST, -1).astype(np.int32)  # gluon: blank C-1, -1 padding
FLAT = TNC.reshape(T * N, C)  # WarpCTC: row t * N + n


def _sparse(labels):
    """The valid labels as a tf.SparseTensor: TensorFlow's sparse form, which its
    signatures take beside any framework's activations."""
    return tf.SparseTensor(*Labels.from_padded(labels, LL).sparse(np.int32))


def _steps(x):
    """Chainer's input form: a list of T arrays (N, C) of x's framework."""
    return [x[t] for t in range(T)]


# signature name -> (function of (x, to) where `to` converts the other arguments, input x)
SIGNATURES = {
    "torch": (lambda x, to: ct.ctc_loss(x, to(LAB), to(IL), to(LL), reduction="sum"), TNC),
    "optax": (lambda x, to: co.ctc_loss(x, to(LOGIT_PAD), to(LAB), to(LABEL_PAD)), NTC),
    "tensorflow": (lambda x, to: ctf.ctc_loss(to(LAB), x, to(LL), to(IL)), TNC),
    "tensorflow_sparse": (lambda x, to: ctf.ctc_loss(_sparse(LAB), x, None, to(IL),
                                                     blank_index=0), TNC),
    "tensorflow_v1": (lambda x, to: ctf.ctc_loss_v1(_sparse(BLANK_LAST), x, to(IL)), TNC),
    "keras": (lambda x, to: ck.ctc_loss(to(LAB), x, to(LL), to(IL)), NTC),
    "keras_batch_cost": (lambda x, to: ck.ctc_batch_cost(to(BLANK_LAST), x, to(IL[:, None]),
                                                         to(LL[:, None])), PROBS),
    "mxnet": (lambda x, to: cm.ctc_loss(x, to(LAB), to(IL), to(LL), use_data_lengths=True,
                                        use_label_lengths=True), TNC),
    "mxnet_padding": (lambda x, to: cm.ctc_loss(x, to(LAB)), TNC),  # length = first 0
    "gluon": (lambda x, to: cg.CTCLoss()(x, to(GLUON_LAB), to(IL), to(LL)), NTC),
    "warpctc": (lambda x, to: cm.WarpCTC(x, to(LAB.reshape(-1)), LAB.shape[1], T), FLAT),
    "chainer": (lambda x, to: cc.connectionist_temporal_classification(
        _steps(x), to(LAB), 0, to(IL), to(LL), reduce="no"), TNC),
    "theano": (lambda x, to: cth.ctc(x, to(MINUS_ONE_PADDED), to(IL)), TNC),
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


# ---- the torch, jax and tensorflow columns of `ctcbridge conform` ------------


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_conform_row_on_every_framework(row):
    """Each row of `ctcbridge conform` passes the whole shipped corpus on torch, jax
    and tensorflow arrays (the numpy column runs in the `tests` session)."""
    assert row.available()
    [entry] = run_matrix(load(), [row], ["torch", "jax", "tensorflow"])
    assert set(entry["cells"]) == {"torch", "jax", "tensorflow"}
    for fw, cell in entry["cells"].items():
        assert cell["cases"] >= 10, (fw, cell["cases"])
        failed = [r for r in cell["results"] if not r["passed"]]
        assert cell["passed"] and not failed, (fw, failed[:3])
