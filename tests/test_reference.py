"""The float64 reference (ctcbridge/reference.py) checked from first principles.

Everything else in the project is compared with the reference, so here it is
compared with things that do not share its recursions: brute-force sums over
every path, finite differences, hand-computed answers and invariances.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

REFERENCE_PY = Path(__file__).resolve().parents[1] / "ctcbridge" / "reference.py"

try:
    from ctcbridge import reference
except Exception:  # pragma: no cover - only when the package itself fails to import
    # The reference imports numpy only; a broken engine build or a package
    # __init__ in mid-edit must not hide its own tests.
    _spec = importlib.util.spec_from_file_location("ctcbridge_reference", REFERENCE_PY)
    reference = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(reference)

# -inf log-probabilities and infeasible samples must not raise numpy warnings.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


# --------------------------------------------------------------------------
# helpers (independent of the reference's own helpers)
# --------------------------------------------------------------------------


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def brute_force_posteriors(lp, label, blank=0, merge_repeated=True):
    """(nll, gamma (T, C)) by enumeration: gamma_t(k) = P(path_t = k | label)."""
    T, C = lp.shape
    total, gamma = 0.0, np.zeros((T, C))
    for path in itertools.product(range(C), repeat=T):
        merged = [k for i, k in enumerate(path)
                  if not (merge_repeated and i > 0 and path[i - 1] == k)]
        if tuple(k for k in merged if k != blank) == tuple(label):
            p = np.exp(lp[np.arange(T), list(path)].sum())
            total += p
            gamma[np.arange(T), list(path)] += p
    return -np.log(total), gamma / total


def finite_difference(fn, x, h=1e-6):
    """Central differences of the scalar fn at x, one entry at a time."""
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (fn(xp) - fn(xm)) / (2 * h)
    return fd


def random_label(rng, L, C, blank, repeat=False):
    """L labels in [0, C) avoiding the blank; optionally force a repeat."""
    non_blank = [c for c in range(C) if c != blank]
    label = rng.choice(non_blank, size=L).astype(np.int64)
    if repeat and L >= 2:
        i = int(rng.integers(1, L))
        label[i] = label[i - 1]
    return label


# --------------------------------------------------------------------------
# against brute force
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(150))
def test_loss_matches_brute_force(seed):
    """Random tiny batches: every sample's loss equals the sum over all its paths.

    Covers T 1..5, C 2..4, L 0..3, any blank position, repeats, both
    merge_repeated values, logits and log_probs (with -inf entries), and
    per-sample input lengths including 0.
    """
    rng = np.random.default_rng(seed)
    T, C, N = int(rng.integers(1, 6)), int(rng.integers(2, 5)), 3
    blank = int(rng.integers(0, C))
    merge = bool(rng.integers(0, 2))
    inputs = ["logits", "log_probs"][seed % 2]
    labels = [random_label(rng, int(rng.integers(0, 4)), C, blank, repeat=seed % 3 == 0)
              for _ in range(N)]
    input_lengths = rng.integers(0, T + 1, size=N)
    input_lengths[0] = T
    x = rng.standard_normal((T, N, C)) * 2
    if inputs == "log_probs":
        x = log_softmax(x)
        if seed % 4 == 1:
            x[rng.random(x.shape) < 0.2] = -np.inf  # impossible classes
    losses = reference.ctc_loss(x, labels, input_lengths, blank=blank, inputs=inputs,
                                merge_repeated=merge)
    lp = log_softmax(x) if inputs == "logits" else x
    for n in range(N):
        brute = reference.brute_force_nll(lp[: input_lengths[n], n], labels[n], blank=blank,
                                          merge_repeated=merge)
        if np.isinf(brute):
            assert losses[n] == np.inf
        else:
            assert losses[n] == pytest.approx(brute, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(60))
def test_gradient_matches_brute_force_posteriors(seed):
    """d loss / d log_probs = -P(path_t = k | label), enumerated exactly."""
    rng = np.random.default_rng(1000 + seed)
    T, C = int(rng.integers(1, 6)), int(rng.integers(2, 5))
    blank = int(rng.integers(0, C))
    merge = bool(seed % 2)
    label = random_label(rng, int(rng.integers(0, 4)), C, blank, repeat=seed % 3 == 0)
    lp = log_softmax(rng.standard_normal((T, C)) * 2)
    loss, grad = reference.ctc_loss_and_grad(lp[:, None], [label], blank=blank,
                                             inputs="log_probs", merge_repeated=merge)
    if reference.brute_force_nll(lp, label, blank, merge) == np.inf:
        assert loss[0] == np.inf and np.isnan(grad).all()
        return
    nll, gamma = brute_force_posteriors(lp, label, blank, merge)
    assert loss[0] == pytest.approx(nll, rel=1e-12)
    np.testing.assert_allclose(grad[:, 0], -gamma, atol=1e-12)
    # and w.r.t. logits: softmax - gamma
    _, grad_z = reference.ctc_loss_and_grad(lp[:, None], [label], blank=blank,
                                            merge_repeated=merge)
    np.testing.assert_allclose(grad_z[:, 0], np.exp(lp) - gamma, atol=1e-12)


def test_brute_force_itself():
    """The enumerator on cases small enough to list by hand."""
    lp = np.log([[0.2, 0.8], [0.6, 0.4]])  # T=2, C=2, blank 0
    # label [1]: paths 11, 10, 01
    assert reference.brute_force_nll(lp, [1]) == pytest.approx(
        -np.log(0.8 * 0.4 + 0.8 * 0.6 + 0.2 * 0.4))
    # without merging, 11 emits [1, 1] and only 10, 01 emit [1]
    assert reference.brute_force_nll(lp, [1], merge_repeated=False) == pytest.approx(
        -np.log(0.8 * 0.6 + 0.2 * 0.4))
    assert reference.brute_force_nll(lp, [1, 1], merge_repeated=False) == pytest.approx(
        -np.log(0.8 * 0.4))
    assert reference.brute_force_nll(lp, [1, 1]) == np.inf
    assert reference.brute_force_nll(lp, []) == pytest.approx(-np.log(0.2 * 0.6))
    assert reference.brute_force_nll(np.zeros((0, 2)), []) == 0.0
    assert reference.brute_force_nll(np.zeros((0, 2)), [1]) == np.inf


# --------------------------------------------------------------------------
# finite differences
# --------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", ["logits", "log_probs"])
@pytest.mark.parametrize("flags", [{}, {"merge_repeated": False}, {"warp_blank_labels": True}])
def test_gradient_finite_differences(inputs, flags):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2, 4))
    if inputs == "log_probs":
        x = log_softmax(x)  # any values work; realistic ones keep the check meaningful
    labels = np.array([[1, 1, 2], [3, 0, 0]])  # sample 1: label [3, 0] holds the blank
    kw = dict(input_lengths=[7, 5], label_lengths=[3, 2], inputs=inputs, **flags)
    loss, grad = reference.ctc_loss_and_grad(x, labels, **kw)
    assert np.isfinite(loss).all()
    fd = finite_difference(lambda v: reference.ctc_loss(v, labels, **kw).sum(), x)
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    assert np.all(grad[5:, 1] == 0)  # frames past the input length


def test_cross_check_case_finite_differences():
    """The shared cross-check batch: T=12, N=3, C=6, ragged inputs and labels."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((12, 3, 6))
    labels = [[1, 2, 2, 3], [5, 4, 1, 1, 2], [3]]
    kw = dict(input_lengths=[12, 9, 7])
    loss, grad = reference.ctc_loss_and_grad(x, labels, **kw)
    assert np.isfinite(loss).all() and (loss > 0).all()
    assert grad.shape == x.shape
    fd = finite_difference(lambda v: reference.ctc_loss(v, labels, **kw).sum(), x)
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    assert np.all(grad[9:, 1] == 0) and np.all(grad[7:, 2] == 0)
    # logits gradients of a feasible frame sum to zero over the classes
    np.testing.assert_allclose(grad.sum(axis=-1), 0, atol=1e-12)


# --------------------------------------------------------------------------
# known answers and edge cases
# --------------------------------------------------------------------------


def test_known_answers():
    # T=1, C=2: the only path is the label itself
    lp = np.log([[0.25, 0.75]])
    loss, grad = reference.ctc_loss_and_grad(lp[:, None], [[1]], inputs="log_probs")
    assert loss[0] == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(grad[0, 0], [0.0, -1.0])
    # same from logits: gradient softmax - onehot
    z = np.array([[[0.3, -1.2]]])
    loss, grad = reference.ctc_loss_and_grad(z, [[1]])
    p = np.exp(z[0, 0]) / np.exp(z[0, 0]).sum()
    assert loss[0] == pytest.approx(-np.log(p[1]))
    np.testing.assert_allclose(grad[0, 0], p - [0, 1])
    # T=2, label [1]: paths 11, 01, 10
    a0, a1 = 0.3, 0.6
    lp = np.log([[1 - a0, a0], [1 - a1, a1]])
    assert reference.ctc_loss(lp[:, None], [[1]], inputs="log_probs")[0] == pytest.approx(
        -np.log(a0 * a1 + (1 - a0) * a1 + a0 * (1 - a1)))
    # T=3, label [1, 1]: the only path is 1 0 1
    lp = np.log([[0.1, 0.9], [0.7, 0.3], [0.4, 0.6]])
    assert reference.ctc_loss(lp[:, None], [[1, 1]], inputs="log_probs")[0] == pytest.approx(
        -np.log(0.9 * 0.7 * 0.6))


def test_empty_label_is_all_blanks():
    rng = np.random.default_rng(0)
    lp = log_softmax(rng.standard_normal((5, 3)))
    for blank in range(3):
        loss, grad = reference.ctc_loss_and_grad(lp[:, None], np.zeros((1, 0), int),
                                                 blank=blank, inputs="log_probs")
        assert loss[0] == pytest.approx(-lp[:, blank].sum())
        expected = np.zeros((5, 3))
        expected[:, blank] = -1.0
        np.testing.assert_allclose(grad[:, 0], expected)


def test_zero_input_length():
    x = np.random.default_rng(0).standard_normal((3, 2, 4))
    loss, grad = reference.ctc_loss_and_grad(x, [[], [2]], input_lengths=[0, 0])
    assert loss[0] == 0.0 and loss[1] == np.inf
    assert np.all(grad == 0)  # no used frames, so nothing to be NaN


def test_infeasible_is_inf_with_nan_grad():
    x = np.random.default_rng(2).standard_normal((4, 3, 5))
    # [1, 1, 1] needs 5 frames; [2, 3] fits in 3; [1, 1] needs 3 but gets 2
    labels = [[1, 1, 1], [2, 3], [1, 1]]
    for inputs in ("logits", "log_probs"):
        loss, grad = reference.ctc_loss_and_grad(x, labels, input_lengths=[4, 3, 2],
                                                 inputs=inputs)
        assert loss[0] == np.inf and loss[2] == np.inf and np.isfinite(loss[1])
        assert np.isnan(grad[:, 0]).all()
        assert np.isnan(grad[:2, 2]).all() and np.all(grad[2:, 2] == 0)
        assert np.isfinite(grad[:, 1]).all()
    # infeasible through -inf log-probs rather than length: class 1 impossible
    lp = log_softmax(x)
    lp[:, 0, 1] = -np.inf
    loss, grad = reference.ctc_loss_and_grad(lp, [[1], [2], [3]], inputs="log_probs")
    assert loss[0] == np.inf and np.isnan(grad[:, 0]).all() and np.isfinite(loss[1:]).all()


def test_minus_inf_log_probs_feasible():
    """-inf entries off the useful paths: finite loss, finite gradient, no warnings."""
    rng = np.random.default_rng(5)
    lp = log_softmax(rng.standard_normal((6, 1, 4)))
    lp[:, 0, 3] = -np.inf
    lp[2, 0, 0] = -np.inf
    loss, grad = reference.ctc_loss_and_grad(lp, [[1, 2]], inputs="log_probs")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert np.all(grad[:, 0, 3] == 0) and grad[2, 0, 0] == 0
    assert loss[0] == pytest.approx(reference.brute_force_nll(lp[:, 0], [1, 2]), rel=1e-12)


def test_nan_only_matters_in_used_frames():
    x = np.random.default_rng(6).standard_normal((5, 2, 3))
    x[4, 0, :] = np.nan  # past sample 0's input length: ignored
    x[1, 1, 2] = np.nan  # inside sample 1's frames: poisons it
    loss, grad = reference.ctc_loss_and_grad(x, [[1], [2]], input_lengths=[4, 5])
    assert np.isfinite(loss[0]) and np.isfinite(grad[:, 0]).all() and np.all(grad[4, 0] == 0)
    assert np.isnan(loss[1]) and np.isnan(grad[:, 1]).all()


def test_logits_shift_invariance_and_extremes():
    """log_softmax is invariant to a per-frame shift; huge logits must not overflow."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 2, 5))
    labels = [[1, 2], [4]]
    base = reference.ctc_loss_and_grad(x, labels)
    shifted = reference.ctc_loss_and_grad(x + 1e3 * rng.standard_normal((6, 2, 1)), labels)
    np.testing.assert_allclose(shifted[0], base[0], rtol=1e-9)
    np.testing.assert_allclose(shifted[1], base[1], atol=1e-9)
    loss, grad = reference.ctc_loss_and_grad(x * 1e4, labels)  # near-one-hot softmax
    assert not np.isnan(loss).any() and not np.isnan(grad).any()


# --------------------------------------------------------------------------
# transition options
# --------------------------------------------------------------------------


def test_merge_repeated_false_known_answers():
    lp = np.log([[0.2, 0.8], [0.6, 0.4]])[:, None]
    # [1, 1] in two frames: impossible when merging, path "1 1" when not
    assert reference.ctc_loss(lp, [[1, 1]], inputs="log_probs")[0] == np.inf
    assert reference.ctc_loss(lp, [[1, 1]], inputs="log_probs", merge_repeated=False)[0] == \
        pytest.approx(-np.log(0.8 * 0.4))
    # [1]: "1 1" no longer counts, leaving "1 0" and "0 1"
    assert reference.ctc_loss(lp, [[1]], inputs="log_probs", merge_repeated=False)[0] == \
        pytest.approx(-np.log(0.8 * 0.6 + 0.2 * 0.4))


def test_warp_blank_labels_removes_paths():
    """Label [1, 0, 2] with blank 0: warp-ctc forbids skipping into the label-0 state."""
    rng = np.random.default_rng(3)
    for T in (3, 4, 6):
        lp = log_softmax(rng.standard_normal((T, 1, 3)))
        y = lp[:, 0]
        default = reference.ctc_loss(lp, [[1, 0, 2]], inputs="log_probs")[0]
        warp = reference.ctc_loss(lp, [[1, 0, 2]], inputs="log_probs",
                                  warp_blank_labels=True)[0]
        assert default < warp  # fewer alignments, lower probability
        if T == 3:
            # states (0,1,0,0,0,2,0): only 1 -> 3 -> 5, skipping into both labels
            assert default == pytest.approx(-(y[0, 1] + y[1, 0] + y[2, 2]))
            assert warp == np.inf
        if T == 4:
            # warp: 1 -> 2 -> 3 -> 5, i.e. emissions 1 0 0 2, is the only path
            assert warp == pytest.approx(-(y[0, 1] + y[1, 0] + y[2, 0] + y[3, 2]))
    # labels without the blank are unaffected
    x = rng.standard_normal((6, 1, 3))
    assert reference.ctc_loss(x, [[1, 2]], warp_blank_labels=True)[0] == pytest.approx(
        reference.ctc_loss(x, [[1, 2]])[0], rel=1e-14)


# --------------------------------------------------------------------------
# layouts and label containers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", ["logits", "log_probs"])
def test_layout_ntc_is_tnc_transposed(inputs):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 3, 4))
    kw = dict(input_lengths=[5, 3, 4], inputs=inputs)
    a = reference.ctc_loss_and_grad(x, [[1, 2], [3, 3], [2]], **kw)
    b = reference.ctc_loss_and_grad(x.transpose(1, 0, 2), [[1, 2], [3, 3], [2]],
                                    layout="NTC", **kw)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1].transpose(1, 0, 2))


def test_label_containers_agree():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3, 5))
    lengths = [2, 0, 3]
    padded = np.array([[1, 2, -1], [-1, -1, -1], [4, 4, 3]])  # padding is never read
    forms = [
        (padded, lengths),
        (np.array([1, 2, 4, 4, 3]), lengths),             # concatenated
        ([1, 2, 4, 4, 3], lengths),                       # concatenated, as a list
        ([[1, 2], [], [4, 4, 3]], None),                  # ragged list
        ([[1, 2, 9], [7], [4, 4, 3]], lengths),           # ragged list, truncated
        ([np.array([1, 2]), np.array([], int), np.array([4, 4, 3])], None),
    ]
    results = [reference.ctc_loss_and_grad(x, labels, label_lengths=ll) for labels, ll in forms]
    for loss, grad in results[1:]:
        np.testing.assert_array_equal(loss, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    # a padded array without label_lengths uses whole rows
    full = reference.ctc_loss(x, np.array([[1, 2], [3, 3], [4, 1]]))
    np.testing.assert_array_equal(full, reference.ctc_loss(x, [[1, 2], [3, 3], [4, 1]]))


def test_bad_arguments_raise():
    x = np.zeros((2, 1, 3))
    with pytest.raises(ValueError):
        reference.ctc_loss(x, [[1]], layout="CTN")
    with pytest.raises(ValueError):
        reference.ctc_loss(x, [[1]], inputs="probs")
    with pytest.raises(ValueError):
        reference.ctc_loss(x[0], [[1]])
    with pytest.raises(ValueError):
        reference.ctc_loss(x, [[-1]])  # would otherwise wrap around to class C - 1
    with pytest.raises(ValueError):
        reference.ctc_loss(x, [[1]], input_lengths=[3])
    with pytest.raises(ValueError):
        reference.ctc_loss(x, [[1]], blank=3)
    with pytest.raises(ValueError):
        reference.ctc_loss(np.zeros((2, 2, 3)), [1, 2, 1])  # concatenated, no lengths


def test_imports_only_numpy_and_stdlib():
    """The reference must keep working without the compiled engine."""
    tree = ast.parse(REFERENCE_PY.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"numpy"}
