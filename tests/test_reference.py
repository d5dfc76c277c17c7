"""The float64 reference against brute-force enumeration and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from ctcbridge import reference


def _log_softmax(x):
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("seed", range(120))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, C = int(rng.integers(1, 6)), int(rng.integers(2, 5))
    blank = int(rng.integers(0, C))
    merge = bool(seed % 3)
    L = int(rng.integers(0, 4))
    label = rng.integers(0, C, size=L)
    # no path collapses to a label holding the blank: that case is defined by
    # the recursion alone (see test_warp_blank_labels_removes_paths)
    label = np.array([v if v != blank else (v + 1) % C for v in label], dtype=np.int64)
    if seed % 5 == 0 and L >= 2:
        label[1] = label[0]  # a repeat
    lp = _log_softmax(rng.standard_normal((T, C)) * 2)
    T_used = int(rng.integers(0, T + 1)) if seed % 7 == 0 else T
    x = lp[:, None, :]
    ref = reference.ctc_loss(x, [label], [T_used], [L], blank=blank, inputs="log_probs",
                             merge_repeated=merge)[0]
    brute = reference.brute_force_nll(lp[:T_used], label, blank=blank, merge_repeated=merge)
    if np.isinf(brute):
        assert np.isinf(ref) and ref > 0
    else:
        assert ref == pytest.approx(brute, rel=1e-12, abs=1e-12)


def test_known_answers():
    # T=1, C=2: the only path is the label itself
    lp = np.log([[0.25, 0.75]])
    assert reference.ctc_loss(lp[:, None], [[1]], inputs="log_probs")[0] == pytest.approx(-np.log(0.75))
    # T=2, label [1]: paths 11, 01, 10
    a0, a1 = 0.3, 0.6
    lp = np.log([[1 - a0, a0], [1 - a1, a1]])
    assert reference.ctc_loss(lp[:, None], [[1]], inputs="log_probs")[0] == pytest.approx(
        -np.log(a0 + a1 - a0 * a1))
    # empty label: all blanks
    lp = _log_softmax(np.random.default_rng(0).standard_normal((5, 3)))
    assert reference.ctc_loss(lp[:, None], np.zeros((1, 0), int), inputs="log_probs")[0] == \
        pytest.approx(-lp[:, 0].sum())


@pytest.mark.parametrize("inputs", ["logits", "log_probs"])
def test_gradient_finite_differences(inputs):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2, 4))
    if inputs == "log_probs":
        x = _log_softmax(x)
    labels = np.array([[1, 1, 2], [3, 2, 0]])
    kw = dict(input_lengths=[7, 5], label_lengths=[3, 2], inputs=inputs)
    _, grad = reference.ctc_loss_and_grad(x, labels, **kw)
    fd = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (reference.ctc_loss(xp, labels, **kw).sum()
                   - reference.ctc_loss(xm, labels, **kw).sum()) / (2 * h)
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    assert np.all(grad[5:, 1] == 0)


def test_infeasible_and_layouts_and_containers():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5))
    loss, grad = reference.ctc_loss_and_grad(x, [[1, 1, 1], [1, 2, 3], [4, 0, 0]],
                                             label_lengths=[3, 3, 1])
    assert np.isinf(loss[0]) and np.isnan(grad[:, 0]).all() and np.isfinite(loss[1:]).all()
    a = reference.ctc_loss_and_grad(x, [[1, 2], [3, 3], [4, 0]], label_lengths=[2, 2, 1])
    b = reference.ctc_loss_and_grad(x.transpose(1, 0, 2), [[1, 2], [3, 3], [4]], layout="NTC")
    c = reference.ctc_loss_and_grad(x, [1, 2, 3, 3, 4], label_lengths=[2, 2, 1])
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1].transpose(1, 0, 2))
    np.testing.assert_allclose(a[0], c[0])


def test_warp_blank_labels_removes_paths():
    x = np.random.default_rng(3).standard_normal((6, 1, 3))
    default = reference.ctc_loss(x, [[1, 0, 2]])[0]
    warp = reference.ctc_loss(x, [[1, 0, 2]], warp_blank_labels=True)[0]
    assert warp > default  # fewer alignments, lower probability
    same = reference.ctc_loss(x, [[1, 2]], warp_blank_labels=True)[0]
    assert same == pytest.approx(reference.ctc_loss(x, [[1, 2]])[0])
