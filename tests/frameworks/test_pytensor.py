"""ctcbridge.theano on PyTensor variables (nox session `pytensor`): the Op in
graphs, pytensor.grad, compiled functions, against the float64 reference with
warp-ctc's conventions.  PyTensor has no CTC of its own; the native
comparisons (Theano 1.0.5's signature, mxnet's warp-ctc) run in the `theano`
session."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("pytensor")  # the module skips where a framework it needs is absent

import pytensor
import pytensor.tensor as pt

import ctcbridge.theano as cth
from ctcbridge._bridges import pytensor as bridge
from theano_cases import (ERRORS, VALUE_ERRORS, check_against_reference, check_error,
                          check_grad_of_sum, check_idioms, compiled_loss_and_grad, theano_case)

# PyTensor's numba backend runs Python Ops in object mode and says so at each compile
pytestmark = pytest.mark.filterwarnings("ignore:Numba will use object mode:UserWarning")


def test_ops_pickled_before_the_bridges_moved_still_load():
    """Graphs pickled while the bridges lived in ctcbridge._arrays name the Op's class
    there; that module still hands it on."""
    op = bridge.CTCBridgeOp(("theano.ctc", None))
    old = pickle.dumps(op, protocol=0).replace(b"ctcbridge._bridges.pytensor",
                                               b"ctcbridge._arrays.pytensor")
    assert b"ctcbridge._arrays.pytensor" in old
    assert pickle.loads(old) == op


def test_signature():
    import inspect

    assert list(inspect.signature(cth.ctc).parameters) == ["activations", "labels",
                                                            "input_lengths"]
    init = inspect.signature(cth.ConnectionistTemporalClassification.__init__).parameters
    assert [(p.name, p.default) for p in init.values()][1:] == [("compute_grad", True),
                                                               ("openmp", None)]


@pytest.fixture(scope="module")
def compiled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return compiled_loss_and_grad(pytensor, pt)


@pytest.mark.parametrize("seed", range(220))
def test_against_reference(compiled, seed):
    check_against_reference(compiled, seed)


def test_idioms():
    check_idioms(pytensor, pt)


def test_returns_pytensor_variables():
    x, labels, il, _ = theano_case(5)
    out = cth.ctc(pt.as_tensor_variable(x), labels, il)  # mixed: numpy labels and lengths
    assert isinstance(out, pt.TensorVariable)
    assert isinstance(cth.ctc(x, labels, il), np.ndarray)


def test_grad_of_sum_runner():
    check_grad_of_sum(bridge)


@pytest.mark.parametrize("args", ERRORS + VALUE_ERRORS, ids=lambda a: a[-1][:30])
@pytest.mark.parametrize("symbolic", [False, True])
def test_errors(args, symbolic):
    check_error(pytensor, pt, args, symbolic)


def _every_signature():
    """Each signature's call on the same case, as (fn(x, to), x) with `to` converting
    the other arguments into the framework's values (as in test_cross.py)."""
    import ctcbridge.chainer as cc
    import ctcbridge.gluon as cg
    import ctcbridge.keras as ck
    import ctcbridge.mxnet as cm
    import ctcbridge.optax as co
    import ctcbridge.tensorflow as ctf
    import ctcbridge.torch as ct
    from native_cases import make_case

    case = make_case(12, allow_infeasible=False, min_label=1)
    T, N, C = case.logits.shape
    tnc = case.logits  # float64: finite differences below
    ntc = np.ascontiguousarray(tnc.transpose(1, 0, 2))
    lab, ll, il = (a.astype(np.int32) for a in (case.labels, case.label_lengths,
                                                  case.input_lengths))
    valid = np.arange(lab.shape[1])[None] < ll[:, None]
    logit_pad = (np.arange(T)[None] >= il[:, None]).astype(np.float64)
    label_pad = (~valid).astype(np.float64)
    gluon_lab = np.where(valid, np.where(lab == C - 1, 1, lab), -1).astype(np.int32)
    return {
        "torch": (lambda x, to: ct.ctc_loss(x, to(lab), to(il), to(ll), reduction="none"), tnc),
        "optax": (lambda x, to: co.ctc_loss(x, to(logit_pad), to(lab), to(label_pad)), ntc),
        "tensorflow": (lambda x, to: ctf.ctc_loss(to(lab), x, to(ll), to(il)), tnc),
        "keras": (lambda x, to: ck.ctc_loss(to(lab), x, to(ll), to(il)), ntc),
        "mxnet": (lambda x, to: cm.ctc_loss(x, to(lab), to(il), to(ll), use_data_lengths=True,
                                            use_label_lengths=True), tnc),
        "gluon": (lambda x, to: cg.CTCLoss()(x, to(gluon_lab), to(il), to(ll)), ntc),
        "chainer": (lambda x, to: cc.connectionist_temporal_classification(
            [x[t] for t in range(T)], to(lab), 0, to(il), to(ll), reduce="no"), tnc),
    }


@pytest.mark.parametrize("name", sorted(_every_signature()))
def test_every_signature_on_pytensor_variables(name):
    """Every signature on symbolic PyTensor variables: the numpy losses, and a
    gradient through pytensor.grad that matches central finite differences."""
    fn, x = _every_signature()[name]
    xv = pt.tensor3("x", dtype="float64")
    out = fn(xv, pt.as_tensor_variable)
    loss_fn = pytensor.function([xv], out.sum())
    grad_fn = pytensor.function([xv], pytensor.grad(out.sum(), xv))
    np.testing.assert_allclose(pytensor.function([xv], out)(x), np.asarray(fn(x, np.asarray)),
                               rtol=1e-12)
    grad = grad_fn(x)
    assert grad.shape == x.shape and np.abs(grad).sum() > 0
    rng = np.random.default_rng(0)
    for idx in zip(*(rng.integers(0, s, size=4) for s in x.shape)):
        step = np.zeros_like(x)
        step[idx] = 1e-6
        numeric = (loss_fn(x + step) - loss_fn(x - step)) / 2e-6
        np.testing.assert_allclose(grad[idx], numeric, atol=1e-5)
