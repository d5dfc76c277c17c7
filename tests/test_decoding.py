"""The canonical alignment and decoding API (ctcbridge.decoding) against brute force:
every path of a small problem enumerated, collapsed and scored in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ctcbridge
from ctcbridge.decoding import TokenSpan


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _collapse(path, blank, merge=True):
    out = [k for i, k in enumerate(path) if not (merge and i and path[i - 1] == k)]
    return tuple(k for k in out if k != blank)


def _paths(y, blank, merge=True):
    """{collapsed label sequence: [(log-prob, path), ...]} over every path of y (T, C)."""
    T, C = y.shape
    out: dict = {}
    for path in itertools.product(range(C), repeat=T):
        lp = float(sum(y[t, k] for t, k in enumerate(path)))
        out.setdefault(_collapse(path, blank, merge), []).append((lp, path))
    return out


def _lse(v):
    v = np.asarray(v)
    m = v.max()
    return m + np.log(np.exp(v - m).sum()) if np.isfinite(m) else m


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    T, N, C = 6, 3, 4
    x = rng.standard_normal((T, N, C)) * 2
    labels = np.array([[1, 2, 2], [3, 1, 0], [2, 0, 0]])
    return x, labels, np.array([6, 5, 4]), np.array([3, 2, 1])


@pytest.mark.parametrize("blank", [0, 3])
def test_forced_align_is_the_best_path(problem, blank):
    x, labels, in_len, lab_len = problem
    if blank == 3:
        labels = np.where(labels == 3, 0, labels)
    a = ctcbridge.forced_align(x, labels, in_len, lab_len, blank=blank)
    assert a.path.shape == a.scores.shape == a.label_index.shape == (3, 6)
    for n in range(3):
        T = in_len[n]
        y = _log_softmax(x[:T, n])
        target = tuple(labels[n, : lab_len[n]])
        best = max(lp for lp, _ in _paths(y, blank)[target])
        path = a.path[n, :T]
        assert _collapse(path, blank) == target
        np.testing.assert_allclose(a.scores[n, :T], y[np.arange(T), path], rtol=1e-12)
        np.testing.assert_allclose(a.scores[n, :T].sum(), best, rtol=1e-10)
        assert (a.path[n, T:] == -1).all() and (a.scores[n, T:] == 0).all()
        # label_index: -1 on blanks, the label's position otherwise, non-decreasing
        idx = a.label_index[n, :T]
        assert ((idx == -1) == (path == blank)).all()
        np.testing.assert_array_equal(np.asarray(target)[idx[idx >= 0]], path[idx >= 0])
        assert (np.diff(idx[idx >= 0]) >= 0).all()


def test_forced_align_v1_lattice_and_layouts(problem):
    x, labels, in_len, lab_len = problem
    a = ctcbridge.forced_align(x, labels, in_len, lab_len, merge_repeated=False)
    y = _log_softmax(x[:, 0])
    best = max(lp for lp, _ in _paths(y, 0, merge=False)[(1, 2, 2)])
    np.testing.assert_allclose(a.scores[0].sum(), best, rtol=1e-10)
    assert _collapse(a.path[0], 0, merge=False) == (1, 2, 2)
    # batch-major, concatenated labels, log-probs, float32: the same path
    lp = _log_softmax(x).astype(np.float32).transpose(1, 0, 2)
    b = ctcbridge.forced_align(lp, [1, 2, 2, 3, 1, 2], in_len, lab_len, layout="NTC",
                               inputs="log_probs")
    c = ctcbridge.forced_align(x, labels, in_len, lab_len)
    np.testing.assert_array_equal(b.path, c.path)
    assert b.scores.dtype == np.float32


def test_merge_tokens():
    path = np.array([0, 1, 1, 0, 2, 2, 2, 0, 2, -1, -1])
    scores = np.log(np.linspace(0.1, 1.0, path.size))
    spans = ctcbridge.merge_tokens(path, scores)
    assert spans == [TokenSpan(1, 1, 3, pytest.approx(scores[1:3].mean())),
                     TokenSpan(2, 4, 7, pytest.approx(scores[4:7].mean())),
                     TokenSpan(2, 8, 9, pytest.approx(scores[8]))]
    assert [len(s) for s in spans] == [2, 3, 1]
    # TF v1's lattice: "2 2" without a blank between, told apart by label_index
    index = np.array([-1, 0, 0, -1, 1, 2, 2, -1, 3, -1, -1])
    spans = ctcbridge.merge_tokens(path, scores, label_index=index)
    assert [(s.token, s.start, s.end) for s in spans] == [(1, 1, 3), (2, 4, 5), (2, 5, 7),
                                                          (2, 8, 9)]
    with pytest.raises(ctcbridge.CTCValueError, match="scores"):
        ctcbridge.merge_tokens(path, scores[:3])
    with pytest.raises(ctcbridge.CTCValueError, match="path"):
        ctcbridge.merge_tokens(path.reshape(1, -1), scores.reshape(1, -1))


def test_merge_tokens_of_an_alignment(problem):
    x, labels, in_len, lab_len = problem
    a = ctcbridge.forced_align(x, labels, in_len, lab_len)
    spans = ctcbridge.merge_tokens(a.path[0], a.scores[0], label_index=a.label_index[0])
    assert [s.token for s in spans] == [1, 2, 2]


def test_posteriors_are_the_gradient_occupancies(problem):
    x, labels, in_len, lab_len = problem
    lp = _log_softmax(x)
    gamma = ctcbridge.posteriors(lp, labels, in_len, lab_len, inputs="log_probs")
    _, grad = ctcbridge.ctc_loss_and_grad(lp, labels, in_len, lab_len, inputs="log_probs")
    np.testing.assert_allclose(gamma, -grad, atol=1e-12)
    for n in range(3):
        np.testing.assert_allclose(gamma[: in_len[n], n].sum(-1), 1.0, rtol=1e-12)
        assert (gamma[in_len[n]:, n] == 0).all()
    # brute force: gamma_t(k) = sum over the target's paths with class k at t
    y = lp[:, 0]
    paths = _paths(y, 0)[(1, 2, 2)]
    total = _lse([p for p, _ in paths])
    for t in range(6):
        for k in range(4):
            v = [p for p, path in paths if path[t] == k]
            want = np.exp(_lse(v) - total) if v else 0.0
            assert gamma[t, 0, k] == pytest.approx(want, abs=1e-12)
    nt = ctcbridge.posteriors(x.transpose(1, 0, 2), labels, in_len, lab_len, layout="NTC")
    np.testing.assert_allclose(nt.transpose(1, 0, 2), gamma, atol=1e-12)


def test_posteriors_of_an_infeasible_sample_are_nan():
    x = np.zeros((2, 1, 3))
    gamma = ctcbridge.posteriors(x, [[1, 1]])
    assert np.isnan(gamma).all()


@pytest.mark.parametrize("merge", [True, False])
def test_decode_greedy(problem, merge):
    x, _, in_len, _ = problem
    x = x.copy()
    x[0, 1] = [1.0, 1.0, 0.0, 0.0]  # a tie: the smallest class wins
    d = ctcbridge.decode_greedy(x, in_len, merge_repeated=merge)
    for n in range(3):
        T = in_len[n]
        best = x[:T, n].argmax(-1)
        want = _collapse(best, 0, merge)
        assert tuple(d.sequences[n, : d.lengths[n]]) == want
        assert (d.sequences[n, d.lengths[n]:] == -1).all()
        np.testing.assert_allclose(d.scores[n], _log_softmax(x[:T, n]).max(-1).sum(),
                                   rtol=1e-12)
    b = ctcbridge.decode_greedy(x, in_len, blank=3, pad=7, merge_repeated=merge)
    for n in range(3):
        want = _collapse(x[: in_len[n], n].argmax(-1), 3, merge)
        assert tuple(b.sequences[n, : b.lengths[n]]) == want
        assert (b.sequences[n, b.lengths[n]:] == 7).all()


def test_decode_beam_scores_are_prefix_probabilities(problem):
    x, _, in_len, _ = problem
    K = 5
    d = ctcbridge.decode_beam(x, in_len, beam_width=4 ** 6, top_paths=K)
    assert d.sequences.shape == (3, K, 6) and d.lengths.shape == d.scores.shape == (3, K)
    for n in range(3):
        T = in_len[n]
        probs = {seq: _lse([p for p, _ in v])
                 for seq, v in _paths(_log_softmax(x[:T, n]), 0).items()}
        ranked = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))[:K]
        for k, (seq, lp) in enumerate(ranked):
            assert tuple(d.sequences[n, k, : d.lengths[n, k]]) == seq
            assert d.scores[n, k] == pytest.approx(lp, rel=1e-10)
    # the defaults: one path, a beam of 100
    one = ctcbridge.decode_beam(x, in_len)
    np.testing.assert_array_equal(one.sequences[:, 0], d.sequences[:, 0])


def test_decode_beam_zero_length_input():
    d = ctcbridge.decode_beam(np.zeros((3, 1, 4)), [0], beam_width=3, top_paths=2)
    assert d.lengths.tolist() == [[0, 0]]
    assert d.scores[0, 0] == 0 and d.scores[0, 1] == -np.inf


def test_threads_give_identical_results():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 9, 6)).astype(np.float32)
    labels = rng.integers(1, 6, (9, 5))
    for fn, args, kw in [(ctcbridge.forced_align, (labels,), {}),
                         (ctcbridge.posteriors, (labels,), {}),
                         (ctcbridge.decode_greedy, (), {}),
                         (ctcbridge.decode_beam, (), {"beam_width": 8, "top_paths": 3})]:
        one = fn(x, *args, num_threads=1, **kw)
        many = fn(x, *args, num_threads=4, **kw)
        for a, b in zip(np.atleast_1d(one) if isinstance(one, np.ndarray) else one,
                        np.atleast_1d(many) if isinstance(many, np.ndarray) else many):
            np.testing.assert_array_equal(a, b)


def test_dtypes_are_kept():
    x = np.zeros((4, 1, 3), dtype=np.float16)
    assert ctcbridge.forced_align(x, [[1]]).scores.dtype == np.float16
    assert ctcbridge.posteriors(x, [[1]]).dtype == np.float16
    assert ctcbridge.decode_greedy(x).scores.dtype == np.float16
    assert ctcbridge.decode_beam(x.astype(np.float64)).scores.dtype == np.float64


@pytest.mark.parametrize("call, match", [
    (lambda x: ctcbridge.forced_align(x, [[1, 0]]), "blank"),
    (lambda x: ctcbridge.forced_align(x, [[1, 2]], blank=2), "blank"),
    (lambda x: ctcbridge.forced_align(x, [[1, 1, 1]]), "cannot be aligned"),
    (lambda x: ctcbridge.forced_align(x, [[1, 2]], [5]), "input_lengths"),
    (lambda x: ctcbridge.forced_align(x, [[1, 5]]), "label"),
    (lambda x: ctcbridge.posteriors(x, [[1, 2]], layout="TCN"), "layout"),
    (lambda x: ctcbridge.decode_greedy(x, blank=3), "blank"),
    (lambda x: ctcbridge.decode_greedy(x[0]), "3-D"),
    (lambda x: ctcbridge.decode_beam(x, beam_width=0), "beam_width"),
    (lambda x: ctcbridge.decode_beam(x, beam_width=2, top_paths=3), "top_paths"),
    (lambda x: ctcbridge.decode_beam(x, top_paths=0), "top_paths"),
    (lambda x: ctcbridge.decode_beam(x, inputs="probs"), "inputs"),
])
def test_bad_input_is_a_ctc_error_naming_the_argument(call, match):
    with pytest.raises(ctcbridge.CTCValueError, match=match):
        call(np.zeros((4, 1, 3), dtype=np.float32))


def test_bad_types():
    x = np.zeros((4, 1, 3), dtype=np.float32)
    with pytest.raises(ctcbridge.CTCTypeError, match="beam_width"):
        ctcbridge.decode_beam(x, beam_width=2.5)
    with pytest.raises(ctcbridge.CTCTypeError, match="activations"):
        ctcbridge.decode_greedy(x.astype(np.int32))
    with pytest.raises(ctcbridge.CTCTypeError, match="labels"):
        ctcbridge.forced_align(x, [[1.5]])
