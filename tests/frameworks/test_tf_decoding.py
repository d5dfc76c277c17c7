"""ctcbridge's TensorFlow and Keras decoders against the natives (tf.nn,
tf.compat.v1.nn, keras.ops, the legacy keras.backend), in the tensorflow session."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import ctcbridge  # noqa: E402
from ctcbridge import keras as ck  # noqa: E402
from ctcbridge import tensorflow as ctf  # noqa: E402


def _case(seed, T=12, B=4, C=6, ties=False, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (T, B, C)) if ties else rng.standard_normal((T, B, C)) * 2
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = T
    return x.astype(dtype), lengths.astype(np.int32)


def _same_sparse(ours, theirs):
    assert isinstance(ours, tf.SparseTensor)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
    np.testing.assert_array_equal(ours.dense_shape.numpy(), theirs.dense_shape.numpy())
    assert ours.values.dtype == theirs.values.dtype


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("merge_repeated", [True, False])
@pytest.mark.parametrize("blank_index", [None, 0, 2, -2])
def test_greedy_decoder_matches_tf(seed, ties, merge_repeated, blank_index):
    x, lengths = _case(seed, ties=ties)
    want, want_score = tf.nn.ctc_greedy_decoder(tf.constant(x), lengths, merge_repeated,
                                                blank_index=blank_index)
    got, score = ctf.ctc_greedy_decoder(tf.constant(x), lengths, merge_repeated, blank_index)
    _same_sparse(got[0], want[0])
    assert score.dtype == want_score.dtype and score.shape == want_score.shape
    np.testing.assert_allclose(score.numpy(), want_score.numpy(), rtol=1e-6, atol=1e-5)


def test_greedy_decoder_float64_and_compat_v1():
    x, lengths = _case(9, dtype=np.float64)
    want, want_score = tf.compat.v1.nn.ctc_greedy_decoder(x, lengths, merge_repeated=False)
    got, score = ctf.ctc_greedy_decoder(x, lengths, merge_repeated=False)
    _same_sparse(got[0], want[0])
    assert score.dtype == tf.float64
    # divergence tf-greedy-float64-score: TF sums the maxima in float32, we in float64
    used = np.arange(x.shape[0])[:, None] < lengths[None, :]
    exact = -np.where(used, x.max(axis=2), 0.0).sum(axis=0)
    np.testing.assert_allclose(score.numpy()[:, 0], exact, rtol=1e-14)
    np.testing.assert_allclose(score.numpy(), want_score.numpy(), rtol=1e-6)
    assert not np.array_equal(score.numpy(), want_score.numpy())


# A beam at least as wide as the number of prefixes (sum of 2^k for k <= 6 with
# two labels) prunes nothing: both searches are then exact, and equal.
WIDE = dict(T=6, C=3)
FULL_BEAM = 128


def _wide_case(seed):
    x, lengths = _case(seed, **WIDE)
    return x, np.maximum(lengths, 2)  # at least 7 prefixes: TF errors below top_paths


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_paths", [1, 3, 5])
def test_beam_search_decoder_matches_tf(seed, top_paths):
    x, lengths = _wide_case(seed)
    want, want_lp = tf.nn.ctc_beam_search_decoder(x, lengths, FULL_BEAM, top_paths)
    got, lp = ctf.ctc_beam_search_decoder(tf.constant(x), lengths, FULL_BEAM, top_paths)
    assert len(got) == len(want) == top_paths
    for g, w in zip(got, want):
        _same_sparse(g, w)
    assert lp.dtype == want_lp.dtype
    np.testing.assert_allclose(lp.numpy(), want_lp.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("merge_repeated", [True, False])
def test_beam_search_decoder_v1_merge_repeated(seed, merge_repeated):
    # two labels and six frames: "a", blank, "a" prefixes abound
    x, lengths = _wide_case(seed)
    want, want_lp = tf.compat.v1.nn.ctc_beam_search_decoder(x, lengths, FULL_BEAM, 5,
                                                            merge_repeated=merge_repeated)
    got, lp = ctf.ctc_beam_search_decoder_v1(x, lengths, FULL_BEAM, 5,
                                             merge_repeated=merge_repeated)
    for g, w in zip(got, want):
        _same_sparse(g, w)
    np.testing.assert_allclose(lp.numpy(), want_lp.numpy(), rtol=1e-5, atol=1e-5)


def test_beam_search_pruning_divergence():
    """Divergence tf-beam-search-pruning: where the beam prunes, TF's search
    (children kept only if they beat the beam's bottom while it is refilled)
    and ours (every extension scored, equal prefixes merged, then cut) may keep
    different prefixes: the best path agrees on most inputs, not all."""
    agree = total = 0
    for seed in range(20):
        x, lengths = _case(seed, T=20, C=6)
        want, _ = tf.nn.ctc_beam_search_decoder(x, np.maximum(lengths, 1), 4, 1)
        got, _ = ctf.ctc_beam_search_decoder(x, np.maximum(lengths, 1), 4, 1)
        w = tf.sparse.to_dense(want[0], default_value=-1).numpy()
        g = tf.sparse.to_dense(got[0], default_value=-1).numpy()
        for n in range(x.shape[1]):
            total += 1
            agree += np.array_equal(w[n][w[n] >= 0], g[n][g[n] >= 0])
    assert agree >= 0.9 * total


def test_beam_search_fewer_leaves_than_top_paths():
    x, _ = _case(0, **WIDE)
    lengths = np.array([6, 0, 6, 6], dtype=np.int32)  # a zero-length input holds one prefix
    with pytest.raises(tf.errors.InvalidArgumentError, match="Less leaves"):
        tf.nn.ctc_beam_search_decoder(x, lengths, FULL_BEAM, 2)
    with pytest.raises(ctcbridge.CTCValueError, match="Less leaves.*sample 1"):
        ctf.ctc_beam_search_decoder(x, lengths, FULL_BEAM, 2)


def test_beam_search_bad_arguments_are_ctc_errors():
    x, lengths = _case(0)
    with pytest.raises(ctcbridge.CTCValueError, match="beam_width"):
        ctf.ctc_beam_search_decoder(x, lengths, beam_width=0)
    with pytest.raises(ctcbridge.CTCValueError, match="top_paths"):
        ctf.ctc_beam_search_decoder(x, lengths, beam_width=2, top_paths=3)
    with pytest.raises(ctcbridge.CTCValueError, match="input_lengths"):
        ctf.ctc_greedy_decoder(x, lengths + 100)
    with pytest.raises(ctcbridge.CTCValueError, match="blank_index = 6"):
        ctf.ctc_greedy_decoder(x, lengths, blank_index=6)
    with pytest.raises(ctcbridge.CTCValueError, match="mask_index = -7"):
        ck.ctc_decode(x.transpose(1, 0, 2), lengths, mask_index=-7)


# ------------------------------------------------------------------- keras


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strategy", ["greedy", "beam_search"])
@pytest.mark.parametrize("mask_index", [0, 1, None])
@pytest.mark.parametrize("merge_repeated", [True, False])
def test_keras_ctc_decode_matches_keras(seed, strategy, mask_index, merge_repeated):
    x, lengths = _wide_case(seed)
    bx = tf.constant(x.transpose(1, 0, 2))
    kw = dict(strategy=strategy, beam_width=FULL_BEAM, top_paths=2, merge_repeated=merge_repeated,
              mask_index=mask_index)
    if strategy == "greedy":
        kw.update(top_paths=1)
    want, want_scores = keras.ops.ctc_decode(bx, lengths, **kw)
    got, scores = ck.ctc_decode(bx, lengths, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert scores.dtype == want_scores.dtype and scores.shape == want_scores.shape
    np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("greedy", [True, False])
def test_legacy_keras_ctc_decode_matches(greedy):
    from keras.src.legacy.backend import ctc_decode as native

    x, lengths = _wide_case(5)
    probs = tf.nn.softmax(tf.constant(x.transpose(1, 0, 2))).numpy()
    want, want_lp = native(probs, lengths, greedy=greedy, beam_width=FULL_BEAM,
                   top_paths=2)
    got, lp = ck.ctc_decode_legacy(probs, lengths, greedy=greedy, beam_width=FULL_BEAM,
                   top_paths=2)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), w.numpy())
    np.testing.assert_allclose(np.asarray(lp), want_lp.numpy(), rtol=1e-5, atol=1e-4)


def test_keras_ctc_decode_bad_strategy():
    x, lengths = _case(0)
    with pytest.raises(ValueError, match="strategy"):
        ck.ctc_decode(x.transpose(1, 0, 2), lengths, strategy="prefix")


def test_decoders_in_tf_function():
    x, lengths = _wide_case(1)

    @tf.function
    def ours(x, lengths):
        (g,), gs = ctf.ctc_greedy_decoder(x, lengths)
        b, bs = ctf.ctc_beam_search_decoder(x, lengths, FULL_BEAM, 2)
        return tf.sparse.to_dense(g), gs, tf.sparse.to_dense(b[1]), bs

    @tf.function
    def native(x, lengths):
        (g,), gs = tf.nn.ctc_greedy_decoder(x, lengths)
        b, bs = tf.nn.ctc_beam_search_decoder(x, lengths, FULL_BEAM, 2)
        return tf.sparse.to_dense(g), gs, tf.sparse.to_dense(b[1]), bs

    for got, want in zip(ours(tf.constant(x), lengths), native(tf.constant(x), lengths)):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
