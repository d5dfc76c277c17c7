"""ctcbridge.theano against Theano 1.0.5 (nox session `theano`, numpy<1.24).

Theano's CTC Op needs Baidu's warp-ctc, which is not installed here: its
module still imports, so the signatures and the graph-construction checks
(make_node's errors, L_op with compute_grad=False) are compared with the
native directly.  The numbers are compared with the float64 reference under
warp-ctc's conventions and with mxnet 1.9.1's contrib.ctc_loss, blank_label=
'first', a port of warp-ctc's CPU code with the same semantics.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("mxnet")  # the module skips where a framework it needs is absent
pytest.importorskip("theano")

import mxnet as mx
import numpy as np
import theano
import theano.tensor as tt
from theano.tensor.nnet import ctc as native

import ctcbridge.theano as cth
from ctcbridge._bridges import theano as bridge
from native_cases import close
from theano_cases import (ERRORS, GRAD_ATOL, LOSS_RTOL, VALUE_ERRORS, check_against_reference,
                          check_error, check_grad_of_sum, check_idioms, check_signature,
                          compiled_loss_and_grad, expected, theano_case)


def test_signature_parity():
    check_signature(native.ctc, native.ConnectionistTemporalClassification)


def _native_op(compute_grad=True):
    """Theano's Op without warp-ctc: its constructor refuses, but make_node and
    L_op are plain Python and can be measured."""
    op = object.__new__(native.ConnectionistTemporalClassification)
    op.compute_grad = compute_grad
    op.default_output = 0
    return op


@pytest.mark.parametrize("args", ERRORS, ids=lambda a: a[-1][:30])
def test_type_errors_match_native(args):
    *arrays, error, message = args
    shared = [theano.shared(a) for a in arrays]
    with pytest.raises(error, match=re.escape(message)) as nat:
        _native_op().make_node(*shared)
    with pytest.raises(error, match=re.escape(message)) as ours:
        cth.ctc(*shared)
    assert str(nat.value) == str(ours.value) == message


@pytest.mark.parametrize("args", ERRORS + VALUE_ERRORS, ids=lambda a: a[-1][:30])
@pytest.mark.parametrize("symbolic", [False, True])
def test_errors(args, symbolic):
    check_error(theano, tt, args, symbolic)


def test_compute_grad_false_like_native():
    x, labels, il = tt.ftensor3(), tt.imatrix(), tt.ivector()
    node = _native_op(compute_grad=False).make_node(x, labels, il)
    assert len(node.outputs) == 1
    with pytest.raises(AssertionError):
        node.op.L_op(node.inputs, node.outputs, [tt.fvector()])
    ours = cth.ConnectionistTemporalClassification(compute_grad=False)(x, labels, il)
    assert len(ours.owner.outputs) == 1
    with pytest.raises(AssertionError):
        theano.grad(ours.sum(), x)
    # with the gradient: two outputs, costs by default, as Theano's node
    both = cth.ctc(x, labels, il)
    assert len(both.owner.outputs) == 2 and both is both.owner.outputs[0]
    assert both.type == _native_op().make_node(x, labels, il).outputs[0].type


@pytest.fixture(scope="module")
def compiled():
    return compiled_loss_and_grad(theano, tt)


@pytest.mark.parametrize("seed", range(220))
def test_against_reference(compiled, seed):
    check_against_reference(compiled, seed)


def test_idioms():
    check_idioms(theano, tt)


def test_grad_of_sum_runner():
    check_grad_of_sum(bridge)


# --- mxnet's warp-ctc ------------------------------------------------------------------


def mxnet_ctc(x, seqs, il):
    """mx.nd.contrib.ctc_loss with explicit lengths, blank 0: (losses, d sum / d x) of
    the samples it is defined on (``keep``), NaN for the others.

    A sample with no frame and an empty label is left out: mxnet's warp-ctc
    backward writes the gradient of frame -1, outside its buffer, and the
    process dies of heap corruption (divergence theano-zero-frames-empty-label)."""
    ll = np.array([s.size for s in seqs], np.int32)
    keep = ~((il == 0) & (ll == 0))
    lab = np.zeros((len(seqs), max(1, ll.max())), np.int32)
    for b, s in enumerate(seqs):
        lab[b, : s.size] = s
    data = mx.nd.array(x[:, keep])
    data.attach_grad()
    with mx.autograd.record():
        loss = mx.nd.contrib.ctc_loss(data, mx.nd.array(lab[keep], dtype="int32"),
                                      mx.nd.array(il[keep].astype(np.float32)),
                                      mx.nd.array(ll[keep], dtype="int32"), use_data_lengths=True,
                                      use_label_lengths=True, blank_label="first")
    loss.backward()
    losses, grad = np.full(len(seqs), np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    losses[keep], grad[:, keep] = loss.asnumpy(), data.grad.asnumpy()
    return losses, grad, keep


def _mxnet_applicable(x, seqs):
    # mxnet refuses a label width above T, and an all-empty batch returns
    # uninitialised memory (SEMANTICS.md)
    widths = [s.size for s in seqs]
    return max(widths) <= x.shape[0] and max(widths) > 0


def _mxnet_seeds(count):
    seeds = []
    for seed in range(2 * count):
        x, _, _, seqs = theano_case(seed)
        if _mxnet_applicable(x, seqs):
            seeds.append(seed)
    return seeds[:count]


@pytest.mark.parametrize("seed", _mxnet_seeds(220))
def test_against_mxnet(compiled, seed):
    x, labels, il, seqs = theano_case(seed)
    ours, grad = compiled(x, labels, il)
    grad = grad * x.shape[1]  # compiled: d mean / d x
    ln, gn, keep = mxnet_ctc(x, seqs, il)
    close(ours[keep], ln[keep], 1e-5, 1e-5)
    # mxnet leaves the gradient of a sample it gives up on (L + repeats > T_b)
    # uninitialised, and its gradient with 0s inside the labels is not the
    # derivative of its cost (test_blank_label_gradient): compare the others
    same = keep & np.array([s.size + np.count_nonzero(s[1:] == s[:-1]) <= il[b]
                            and not (s == 0).any() for b, s in enumerate(seqs)])
    # warp-ctc's float32 recursion drifts on long sequences (divergence file)
    close(grad[:, same], gn[:, same], 0, 1e-3 if x.shape[0] < 100 else 2e-2)


def test_edge_cases_against_mxnet_and_reference():
    """warp-ctc's defined results, sample by sample, in one batch."""
    rng = np.random.default_rng(5)
    T, C = 6, 5
    x = (rng.standard_normal((T, 8, C)) * 2).astype(np.float32)
    labels = np.array([[1, 1, -1],     # T_b = 2 < L + repeats: cost 0, gradient 0
                       [-1, -1, -1],   # T_b = 0, empty label: +inf, gradient 0
                       [2, -1, -1],    # T_b = 0, L = 1: cost 0
                       [-3, -1, -2],   # empty label: -sum log p(blank)
                       [-1, 3, -7],    # negatives anywhere are removed: label [3]
                       [1, 0, 2],      # T_b = 3: warp-ctc's count passes, no alignment
                       [1, 0, 2],      # T_b = 4: the 0 is a label, never skipped into
                       [4, -1, 4]],    # a repeat after removal: needs 3 frames
                      np.int32)
    il = np.array([2, 0, 0, 5, 6, 3, 4, 3], np.int32)
    seqs = [r[r >= 0] for r in labels]
    ref_loss, ref_grad = expected(x, seqs, il)
    assert ref_loss[0] == 0 and np.isposinf(ref_loss[1]) and ref_loss[2] == 0
    assert np.isposinf(ref_loss[5]) and np.isfinite(ref_loss[6])
    xs = tt.ftensor3()
    cost = cth.ctc(xs, labels, il)
    loss, grad = theano.function([xs], [cost, theano.grad(cost.sum(), xs)])(x)
    close(loss, ref_loss, LOSS_RTOL, LOSS_RTOL)
    close(grad, ref_grad, 0, GRAD_ATOL)
    assert not grad[:, :3].any()  # infeasible and zero-frame samples: zero gradient
    ln, gn, keep = mxnet_ctc(x, seqs, il)
    assert keep.tolist() == [True, False] + [True] * 6  # sample 1: see mxnet_ctc
    close(loss[keep], ln[keep], 1e-5, 1e-5)
    # not sample 0 (uninitialised in mxnet) nor 6 (0 inside the labels)
    defined = [2, 3, 4, 5, 7]
    close(grad[:, defined], gn[:, defined], 0, 1e-4)


def test_blank_label_gradient():
    """Divergence theano-blank-label-gradient: with 0s inside the labels warp-ctc's
    cost is right but its gradient is not the derivative of that cost."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, 2, 4)).astype(np.float32)
    labels = np.array([[1, 0, 2], [0, 3, -1]], np.int32)
    il = np.array([7, 6], np.int32)
    seqs = [r[r >= 0] for r in labels]
    xs = tt.ftensor3()
    cost = cth.ctc(xs, labels, il)
    loss, grad = theano.function([xs], [cost, theano.grad(cost.sum(), xs)])(x)
    ln, gn, _ = mxnet_ctc(x, seqs, il)
    close(loss, ln, 1e-5, 1e-5)  # the same cost
    assert np.abs(grad - gn).max() > 0.05  # not the same gradient
    # ours is the derivative of the cost: central differences in float64
    x64 = x.astype(np.float64)
    for t, b, c in [(0, 0, 0), (2, 0, 1), (3, 1, 0), (4, 1, 3), (1, 0, 2)]:
        step = np.zeros_like(x64)
        step[t, b, c] = 1e-6
        up = expected(x64 + step, seqs, il)[0].sum()
        down = expected(x64 - step, seqs, il)[0].sum()
        assert abs((up - down) / 2e-6 - grad[t, b, c]) < 1e-4


def test_zero_frames_empty_label():
    """Divergence theano-zero-frames-empty-label: warp-ctc's cost +inf is kept, with
    a zero gradient (warp-ctc writes the gradient of frame -1, out of bounds)."""
    x = np.random.default_rng(3).standard_normal((4, 2, 5)).astype(np.float32)
    labels = np.array([[-1, -1], [1, 2]], np.int32)
    il = np.array([0, 4], np.int32)
    xs = tt.ftensor3()
    cost = cth.ctc(xs, labels, il)
    loss, grad = theano.function([xs], [cost, theano.grad(cost.sum(), xs)])(x)
    assert np.isposinf(loss[0]) and np.isfinite(loss[1])
    assert not grad[:, 0].any() and np.isfinite(grad).all()


def test_on_mxnet_arrays():
    """The signature on mxnet NDArrays: mxnet out, differentiable with mx.autograd."""
    x, labels, il, seqs = theano_case(7)
    ref_loss, ref_grad = expected(x, seqs, il)
    data = mx.nd.array(x)
    data.attach_grad()
    with mx.autograd.record():
        out = cth.ctc(data, mx.nd.array(labels, dtype="int32"), mx.nd.array(il, dtype="int32"))
    out.backward()
    assert isinstance(out, mx.nd.NDArray)
    close(out.asnumpy(), ref_loss, LOSS_RTOL, LOSS_RTOL)
    close(data.grad.asnumpy(), ref_grad, 0, GRAD_ATOL)
    with pytest.raises(TypeError, match="activations must use the float32 type!"):
        cth.ctc(mx.nd.array(x, dtype="float64"), mx.nd.array(labels, dtype="int32"),
                mx.nd.array(il, dtype="int32"))


# --- Theano's own Op, where warp-ctc is available ---------------------------------------

FLT_MIN_LOG = float(np.log(np.finfo(np.float32).tiny))  # warp-ctc floors probabilities here


@pytest.fixture(scope="module")
def native_compiled():
    if not native.ctc_available():
        pytest.skip("Theano's CTC Op needs warp-ctc: set CTCBRIDGE_WARPCTC_ROOT for the nox "
                    "session (a warp-ctc checkout with build/libwarpctc.so)")
    x, labels, il = tt.ftensor3(), tt.imatrix(), tt.ivector()
    cost = native.ctc(x, labels, il)
    return theano.function([x, labels, il], [cost, theano.grad(cost.sum(), x)])


@pytest.mark.parametrize("seed", range(220))
def test_against_native_op(native_compiled, compiled, seed):
    """Theano 1.0.5's Op over warp-ctc (measured with warp-ctc 94b2fa1 built for the CPU)."""
    x, labels, il, seqs = theano_case(seed)
    ll = np.array([s.size for s in seqs])
    keep = ~((il == 0) & (ll == 0))  # warp-ctc writes out of bounds there (divergence file)
    if not keep.any():
        return
    x, labels, il, seqs = x[:, keep], labels[keep], il[keep], [s for s, k in zip(seqs, keep) if k]
    ln, gn = native_compiled(x, labels, il)
    lo, go = compiled(x, labels, il)
    go = go * x.shape[1]  # compiled: d mean / d x
    shifted = x - x.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted.astype(np.float64)).sum(-1, keepdims=True))
    floored = np.array([(log_p[: il[b], b] < FLT_MIN_LOG).any() for b in range(len(seqs))])
    close(lo[~floored], ln[~floored], 1e-5, 1e-5)
    # probabilities floored at FLT_MIN can only make warp-ctc's cost smaller
    assert (ln[floored] <= lo[floored] * (1 + 1e-6)).all()
    same = ~floored & np.array([not (s == 0).any() for s in seqs])
    close(go[:, same], gn[:, same], 0, 1e-3 if x.shape[0] < 100 else 2e-2)


def test_warpctc_near_zero_loss():
    """Divergence theano-warpctc-near-zero-loss: a sample whose loss rounds to 0 in
    float32 (one frame, the label's logit 19 above the rest).  warp-ctc gives the
    cost -0.0 and a gradient of +1.0 on the label (measured with Theano 1.0.5's Op
    over warp-ctc 94b2fa1; here through mxnet's port of the same code, and through
    Theano's Op where warp-ctc is installed); the exact gradient there is about
    -5.6e-9, which ctcbridge gives."""
    x = np.zeros((1, 1, 2), np.float32)
    x[0, 0, 1] = 19.0
    labels, il = np.array([[1]], np.int32), np.array([1], np.int32)
    natives = [mxnet_ctc(x, [np.array([1])], il)[:2]]
    if native.ctc_available():
        xs, ls, ils = tt.ftensor3(), tt.imatrix(), tt.ivector()
        cost = native.ctc(xs, ls, ils)
        natives.append(theano.function([xs, ls, ils], [cost, theano.grad(cost.sum(), xs)])(
            x, labels, il))
    for ln, gn in natives:
        assert ln[0] == 0 and np.signbit(ln[0]) and gn[0, 0, 1] == 1.0
    xs = tt.ftensor3()
    cost = cth.ctc(xs, labels, il)
    loss, grad = theano.function([xs], [cost, theano.grad(cost.sum(), xs)])(x)
    exact = np.exp(-19.0) / (1 + np.exp(-19.0))
    assert loss[0] == pytest.approx(exact, rel=1e-5)
    close(grad[0, 0], [exact, -exact], 1e-5, 0)
