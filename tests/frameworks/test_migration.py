"""Migration (nox session `migration`): the legacy environment -- mxnet 1.9.1, chainer
7.8.1, theano 1.0.5, torch 2.13.0, numpy < 1.24 -- where a model moving from Chainer
or Gluon to PyTorch keeps its loss: ctcbridge.chainer and ctcbridge.gluon on torch
tensors give the losses and gradients of native chainer and native mxnet Gluon."""

from __future__ import annotations

import pytest

pytest.importorskip("chainer")  # the module skips where a framework it needs is absent
pytest.importorskip("mxnet")
pytest.importorskip("torch")

import chainer
import mxnet as mx
import numpy as np
import torch
from mxnet import autograd, gluon

import ctcbridge.chainer as cc
import ctcbridge.gluon as cg
from chainer_cases import check_against_native
from native_cases import close, make_case


def test_versions():
    assert mx.__version__ == "1.9.1" and chainer.__version__ == "7.8.1"
    assert torch.__version__.startswith("2.13.0")
    assert tuple(int(v) for v in np.__version__.split(".")[:2]) < (1, 24)


def _chainer_on_torch(c, reduce):
    """ctcbridge.chainer on a list of torch tensors: a torch result, torch autograd."""
    x = torch.tensor(c["x"], requires_grad=True)
    lengths = [None if a is None else torch.from_numpy(a) for a in (c["il"], c["ll"])]
    loss = cc.connectionist_temporal_classification(list(x.unbind(0)), torch.from_numpy(c["t"]),
                                                    c["blank"], *lengths, reduce=reduce)
    assert isinstance(loss, torch.Tensor) and loss.dtype == x.dtype
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("seed", range(120))
def test_chainer_on_torch(seed):
    """Every option, dtype (float16/32/64) and edge case of the chainer session's
    corpus, on torch tensors, against native chainer."""
    check_against_native(seed, _chainer_on_torch)


def gluon_case(seed):
    """A case in Gluon's conventions: blank C - 1, labels padded with -1, layouts NTC or
    TNC and NT or TN, lengths given or not, sample and constructor weights."""
    case = make_case(seed, blank="last")
    if case.labels.shape[1] == 0 or not case.label_lengths.any():
        # MXNet fails on labels of width 0 and returns uninitialised memory for a batch of
        # empty labels only (a divergence of the mxnet session): some labels, please
        case = make_case(seed, blank="last", min_label=1)
    T, N, C = case.logits.shape
    labels = case.labels.astype(np.float32)
    labels[np.arange(labels.shape[1])[None] >= case.label_lengths[:, None]] = -1
    layout = "TNC" if seed % 2 else "NTC"
    label_layout = "TN" if seed % 3 == 0 else "NT"
    x = case.logits.astype(np.float32)
    return dict(
        x=x if layout == "TNC" else np.ascontiguousarray(x.transpose(1, 0, 2)),
        label=labels if label_layout == "NT" else np.ascontiguousarray(labels.T),
        pred_lengths=case.input_lengths.astype(np.float32) if seed % 3 else None,
        label_lengths=case.label_lengths.astype(np.float32) if seed % 4 in (1, 2) else None,
        sample_weight=(np.random.default_rng(seed).random(N) + 0.5).astype(np.float32)
        if seed % 5 == 0 else None,
        ctor=dict(layout=layout, label_layout=label_layout, weight=0.5 if seed % 7 == 0 else None),
        feasible=~case.infeasible(),
    )


def _call_args(c, to):
    args = [to(c["x"]), to(c["label"])]
    for name in ("pred_lengths", "label_lengths", "sample_weight"):
        args.append(None if c[name] is None else to(c[name]))
    return args


def _native_gluon(c):
    args = _call_args(c, mx.nd.array)
    args[0].attach_grad()
    with autograd.record():
        loss = gluon.loss.CTCLoss(**c["ctor"])(*args)
    loss.backward()
    return loss.asnumpy(), args[0].grad.asnumpy()


def _gluon_on_torch(c):
    args = _call_args(c, torch.from_numpy)
    args[0].requires_grad_()
    loss = cg.CTCLoss(**c["ctor"])(*args)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float32
    loss.sum().backward()
    return loss.detach().numpy(), args[0].grad.numpy()


@pytest.mark.parametrize("seed", range(120))
def test_gluon_on_torch(seed):
    """Gluon's CTCLoss (every constructor and call option) on torch tensors against
    mxnet.gluon.loss.CTCLoss; MXNet computes in float32.  Samples without a valid
    alignment: loss 0 in both (MXNet's gradient there is uninitialised memory,
    ctcbridge's 0: not compared)."""
    c = gluon_case(seed)
    lo, go = _gluon_on_torch(c)
    ln, gn = _native_gluon(c)
    assert lo.shape == ln.shape
    close(lo, ln, 1e-5, 1e-5)
    feasible = c["feasible"]
    batch_axis = 1 if c["ctor"]["layout"] == "TNC" else 0
    take = (lambda g: g[:, feasible]) if batch_axis else (lambda g: g[feasible])
    # MXNet's float32 recursion drifts on long sequences (gradients off by up to ~1e-2
    # beyond a few hundred frames); ctcbridge computes in double
    T = c["x"].shape[1 - batch_axis]
    close(take(go), take(gn), 0, 1e-3 if T < 100 else 1.5e-2)
    assert not (go[:, ~feasible] if batch_axis else go[~feasible]).any()
