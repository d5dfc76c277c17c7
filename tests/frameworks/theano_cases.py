"""Theano-style CTC cases and their expected results, and the checks that the
``pytensor`` and ``theano`` sessions share (the two libraries have the same
graph API: ``grad``, ``function``, ``tensor.ftensor3``...).

Expected results come from the float64 reference (``warp_blank_labels``)
with warp-ctc's defined conventions applied (``conform.rows.warp_reference``,
also what ``ctcbridge conform`` checks the signature against).
"""

from __future__ import annotations

import inspect
import pickle
import re

import numpy as np
import pytest

import ctcbridge.theano as cth
from ctcbridge.conform.rows import warp_reference
from native_cases import close, make_case

LOSS_RTOL, GRAD_ATOL = 2e-5, 2e-4  # float32 against the float64 reference


def theano_case(seed: int):
    """(activations (T, B, C) float32, labels (B, S) int32 with negatives anywhere,
    input_lengths (B,) int32, the label sequences without negatives)."""
    case = make_case(seed, allow_infeasible=True)
    rng = np.random.default_rng(seed + 10_000)
    x = case.logits.astype(np.float32)
    seqs = [case.labels[b, : case.label_lengths[b]].copy() for b in range(case.N)]
    if seed % 5 == 2:  # the blank 0 inside label sequences
        for s in seqs:
            s[rng.random(s.size) < 0.2] = 0
    rows = []
    for s in seqs:  # negative padding inserted anywhere, not only at the end
        row = list(s)
        for _ in range(int(rng.integers(0, 4))):
            row.insert(int(rng.integers(0, len(row) + 1)), -int(rng.integers(1, 5)))
        rows.append(row)
    width = max(len(r) for r in rows)
    labels = np.full((case.N, width), -1, np.int32)
    for b, r in enumerate(rows):
        labels[b, : len(r)] = r
    il = case.input_lengths.astype(np.int32)
    if seed % 11 == 4:  # zero-length inputs, with and without labels
        il[0] = 0
    return x, labels, il, seqs


def expected(x, seqs, il):
    """Theano/warp-ctc's costs and d sum(costs) / d activations, float64."""
    return warp_reference(x, seqs, il)


def check_signature(ctc, cls):
    """Theano 1.0.5's signatures (its module imports without warp-ctc)."""
    for ours, native in ((cth.ctc, ctc), (cth.ConnectionistTemporalClassification.__init__,
                                          cls.__init__)):
        a, b = inspect.signature(ours).parameters, inspect.signature(native).parameters
        assert list(a) == list(b)
        assert [p.kind for p in a.values()] == [p.kind for p in b.values()]
        assert [p.default for p in a.values()] == [p.default for p in b.values()]


def compiled_loss_and_grad(lib, tensor):
    """One compiled function (symbolic shapes) for every case: (costs, d mean / d x)."""
    x, labels, il = tensor.ftensor3(), tensor.imatrix(), tensor.ivector()
    cost = cth.ctc(x, labels, il)
    # the mean exercises the per-sample scaling of the gradient (1/B each)
    return lib.function([x, labels, il], [cost, lib.grad(cost.mean(), x)])


def check_against_reference(fn, seed):
    x, labels, il, seqs = theano_case(seed)
    ref_loss, ref_grad = expected(x, seqs, il)
    numeric = cth.ctc(x, labels, il)
    assert isinstance(numeric, np.ndarray) and numeric.dtype == np.float32
    cost, grad = fn(x, labels, il)
    assert cost.dtype == np.float32 and cost.shape == (x.shape[1],)
    for loss in (numeric, cost):
        close(loss, ref_loss, LOSS_RTOL, LOSS_RTOL)
    close(grad * x.shape[1], ref_grad, 0, GRAD_ATOL)


def check_grad_of_sum(bridge):
    """The conformance runner of a bridge (``ctcbridge conform``): losses, d sum / d x."""
    x, labels, il, seqs = theano_case(7)
    ref_loss, ref_grad = expected(x, seqs, il)
    loss, grad = bridge.BRIDGE.grad_of_sum(cth.ctc, x, dict(labels=labels, input_lengths=il), {},
                                           lambda fn, xv, arrays: {"activations": xv, **arrays})
    close(loss, ref_loss, LOSS_RTOL, LOSS_RTOL)
    close(grad, ref_grad, 0, GRAD_ATOL)


def check_idioms(lib, tensor):
    """Symbolic and numeric inputs, grad, compiled functions, the no-grad rewrite,
    compute_grad=False, shape inference, shared variables."""
    x, labels, il, seqs = theano_case(3)
    ref_loss, ref_grad = expected(x, seqs, il)
    # constants (numeric inputs wrapped in the graph) and .eval()
    const = cth.ctc(tensor.constant(x), tensor.constant(labels), tensor.constant(il))
    close(const.eval(), ref_loss, LOSS_RTOL, LOSS_RTOL)
    # a shared variable differentiated inside a compiled function
    w = lib.shared(x)
    cost = cth.ctc(w, labels, il)
    assert cost.dtype == "float32" and cost.ndim == 1
    f = lib.function([], [cost, lib.grad(cost.sum(), w)])
    loss, grad = f()
    close(loss, ref_loss, LOSS_RTOL, LOSS_RTOL)
    close(grad, ref_grad, 0, GRAD_ATOL)
    # compiled functions pickle (the Op is found in its bridge module, its props are data)
    again = pickle.loads(pickle.dumps(f))()
    close(again[0], ref_loss, LOSS_RTOL, LOSS_RTOL)
    # the gradient is scaled per sample by the costs' output gradient
    weights = np.arange(1, x.shape[1] + 1, dtype=np.float32)
    wgrad = lib.function([], lib.grad((cost * weights).sum(), w))()
    close(wgrad, ref_grad * weights[None, :, None], 0, GRAD_ATOL * x.shape[1])
    # forward-only: the rewrite drops the gradient output, as Theano's CTC rewrite
    fwd = lib.function([], cost)
    nodes = [n for n in fwd.maker.fgraph.toposort() if "CTCBridgeOp" in type(n.op).__name__]
    assert len(nodes) == 1 and len(nodes[0].outputs) == 1 and not nodes[0].op.compute_grad
    close(fwd(), ref_loss, LOSS_RTOL, LOSS_RTOL)
    # shape inference without running the engine
    assert tuple(cost.shape.eval()) == (x.shape[1],)
    # compute_grad=False: the costs only, and no gradient (Theano asserts)
    op = cth.ConnectionistTemporalClassification(compute_grad=False, openmp=False)
    no_grad = op(w, labels, il)
    close(no_grad.eval(), ref_loss, LOSS_RTOL, LOSS_RTOL)
    with pytest.raises(AssertionError, match="compute_grad=False"):
        lib.grad(no_grad.sum(), w)
    # labels and lengths have no gradient
    lab = lib.shared(labels)
    with pytest.raises(Exception, match="labels and lengths are integers"):
        lib.grad(cth.ctc(w, lab, il).sum(), lab)


ERRORS = [  # (activations, labels, input_lengths, error type, Theano's message)
    (np.zeros((2, 1, 3), np.float64), np.zeros((1, 1), np.int32), np.ones(1, np.int32),
     TypeError, "activations must use the float32 type!"),
    (np.zeros((2, 3), np.float32), np.zeros((1, 1), np.int32), np.ones(1, np.int32),
     ValueError, "activations must have 3 dimensions."),
    (np.zeros((2, 1, 3), np.float32), np.zeros((1, 1), np.int64), np.ones(1, np.int32),
     TypeError, "labels must use the int32 type!"),
    (np.zeros((2, 1, 3), np.float32), np.zeros(1, np.int32), np.ones(1, np.int32),
     ValueError, "labels must have 2 dimensions."),
    (np.zeros((2, 1, 3), np.float32), np.zeros((1, 1), np.int32), np.ones(1, np.float32),
     TypeError, "input_lengths must use the int32 type!"),
    (np.zeros((2, 1, 3), np.float32), np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32),
     ValueError, "input_lengths must have 1 dimension."),
]

# runtime errors: where warp-ctc reads out of bounds, a ValueError naming the value;
# an empty batch, warp-ctc's own RuntimeError
VALUE_ERRORS = [
    (np.zeros((2, 1, 3), np.float32), np.array([[1, 3]], np.int32), np.array([2], np.int32),
     ValueError, "is 3, outside [0, alphabet = 3)"),
    (np.zeros((2, 1, 3), np.float32), np.array([[1]], np.int32), np.array([3], np.int32),
     ValueError, "input_lengths"),
    (np.zeros((2, 1, 3), np.float32), np.array([[1]], np.int32), np.array([-1], np.int32),
     ValueError, "input_lengths"),
    (np.zeros((2, 2, 3), np.float32), np.array([[1]], np.int32), np.array([2, 2], np.int32),
     ValueError, "labels has 1 rows"),
    (np.zeros((2, 2, 3), np.float32), np.array([[1], [1]], np.int32), np.array([2], np.int32),
     ValueError, "input_lengths must have 2 entries"),
    (np.zeros((2, 0, 3), np.float32), np.zeros((0, 1), np.int32), np.zeros(0, np.int32),
     RuntimeError, "Failed to obtain CTC workspace size. CTC error: invalid value"),
]


def check_error(lib, tensor, args, symbolic):
    *arrays, error, match = args
    if symbolic:  # type checks at graph construction, value checks when run
        with pytest.raises(error, match=re.escape(match)):
            cth.ctc(*[lib.shared(a) for a in arrays]).eval()
    else:
        with pytest.raises(error, match=re.escape(match)):
            cth.ctc(*arrays)
