"""ctcbridge.convert: every conversion round-trips, and converted calls give the same loss."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import ctcbridge
from ctcbridge import convert
from ctcbridge.convert import Labels
from ctcbridge.errors import CTCValueError

REQUIRED = {f for f in os.environ.get("CTCBRIDGE_REQUIRE_FRAMEWORKS", "").split(",") if f}


def random_labels(rng, N=4, C=7, S=5, empty=True):
    lengths = rng.integers(0 if empty else 1, S + 1, N)
    return Labels.from_list([rng.integers(1, C, L) for L in lengths])


@pytest.mark.parametrize("seed", range(20))
def test_label_containers_round_trip(seed):
    rng = np.random.default_rng(seed)
    labs = random_labels(rng, N=int(rng.integers(1, 6)))
    assert Labels.from_padded(labs.padded(), labs.lengths) == labs
    assert Labels.from_padded(labs.padded(pad=9), labs.lengths) == labs
    assert Labels.from_sentinel(labs.sentinel(-1), -1) == labs
    assert Labels.from_sentinel(labs.sentinel(0), 0) == labs  # labels are >= 1 here
    assert Labels.from_sentinel(labs.sentinel(-1), "negative", rule="anywhere") == labs
    assert Labels.from_concatenated(labs.concatenated(), labs.lengths) == labs
    assert Labels.from_sparse(*labs.sparse()) == labs
    assert Labels.from_masks(*labs.masks()) == labs
    assert Labels.from_flat(labs.flat(), labs.padded().shape[1]) == labs
    assert Labels.from_list(labs.list()) == labs
    width = labs.padded().shape[1] + 2
    assert labs.padded(width=width).shape == (labs.batch, width)
    assert Labels.from_masks(*labs.masks(width=width)) == labs


def test_label_rules_of_the_natives():
    # MXNet: the first padding value ends the sequence, later values are ignored
    assert Labels.from_sentinel([[3, 4, 0, 5]], 0).list()[0].tolist() == [3, 4]
    # Theano / warp-ctc: every negative removed wherever it sits
    assert Labels.from_sentinel([[3, -1, 4, -2]], "negative", rule="anywhere").list()[0].tolist() \
        == [3, 4]
    # optax: only the sum of the paddings matters
    assert Labels.from_masks([[1, 2, 3]], [[1.0, 0.0, 0.0]]).lengths.tolist() == [2]
    # sparse rows are read in column order whatever the order of the entries
    labs = Labels.from_sparse([[0, 1], [0, 0], [1, 0]], [5, 4, 6], [2, 2])
    assert [s.tolist() for s in labs.list()] == [[4, 5], [6]]
    with pytest.raises(CTCValueError):
        Labels.from_concatenated([1, 2, 3], [1, 1])
    with pytest.raises(CTCValueError):
        Labels.from_list([[0, 1]]).flat()  # 0 is WarpCTC's padding
    with pytest.raises(CTCValueError):
        Labels.from_list([[1, 2, 3]]).padded(width=2)


@pytest.mark.parametrize("src", convert.LAYOUTS)
@pytest.mark.parametrize("dst", convert.LAYOUTS)
def test_layouts_round_trip(src, dst):
    x = np.random.default_rng(0).standard_normal((5, 3, 4))  # TNC
    a = convert.layout(x, "TNC", src)
    b = convert.layout(a, src, dst, batch=3)
    back = convert.layout(convert.layout(b, dst, src, batch=3), src, "TNC", batch=3)
    np.testing.assert_array_equal(back, x)
    if dst == "NTC":
        np.testing.assert_array_equal(b, x.transpose(1, 0, 2))
    if dst == "flat":
        np.testing.assert_array_equal(b[2 * 3 + 1], x[2, 1])  # row t*N + n


def test_layout_errors():
    with pytest.raises(CTCValueError, match="batch=N"):
        convert.layout(np.zeros((6, 2)), "flat", "TNC")
    with pytest.raises(CTCValueError, match="not T \\* N"):
        convert.layout(np.zeros((7, 2)), "flat", "TNC", batch=2)
    with pytest.raises(CTCValueError):
        convert.layout(np.zeros((2, 2)), "TNC", "CTN")


@pytest.mark.parametrize("src", convert.INPUT_KINDS)
@pytest.mark.parametrize("dst", convert.INPUT_KINDS)
def test_input_kinds_round_trip_and_keep_the_loss(src, dst):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 2, 5))
    labels, lengths = [[1, 2], [3, 0]], [2, 1]
    a = convert.inputs(z, "logits", src)
    b = convert.inputs(a, src, dst)
    # the same distribution over classes whatever the form
    np.testing.assert_allclose(convert.inputs(b, dst, "probs"), convert.inputs(z, "logits", "probs"),
                               rtol=1e-12)
    as_logits = convert.inputs(b, dst, "logits")
    np.testing.assert_allclose(ctcbridge.ctc_loss(as_logits, labels, label_lengths=lengths),
                               ctcbridge.ctc_loss(z, labels, label_lengths=lengths), rtol=1e-12)


def test_probabilities_with_keras_epsilon():
    p = convert.inputs(np.array([[0.0, 0.0, 50.0]]), "logits", "probs")
    lp = convert.inputs(p, "probs", "log_probs", eps=1e-7)
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0)
    assert np.isfinite(lp).all()  # log(p + eps) even where p underflows


@pytest.mark.parametrize("seed", range(10))
def test_move_blank_keeps_the_loss_and_round_trips(seed):
    rng = np.random.default_rng(seed)
    T, N, C = 12, 3, 6
    x = rng.standard_normal((T, N, C))
    blank = int(rng.integers(C))
    labs = Labels.from_list([rng.choice([c for c in range(C) if c != blank], L)
                             for L in (4, 2, 0)])
    want = ctcbridge.ctc_loss(x, labs.padded(), label_lengths=labs.lengths, blank=blank)
    for dst in ("first", "last", int(rng.integers(C)), -2):
        y, moved = convert.move_blank(x, labs, blank, dst)
        b = convert.blank_index(dst, C)
        got = ctcbridge.ctc_loss(y, moved.padded(), label_lengths=moved.lengths, blank=b)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        back, labs2 = convert.move_blank(y, moved, dst, blank)
        np.testing.assert_array_equal(back, x)
        assert labs2 == labs


def test_move_blank_on_arrays_keeps_padding_values():
    _, lab = convert.move_blank(None, np.array([[1, 2, -1]]), 0, "last", num_classes=3)
    assert lab.tolist() == [[0, 1, -1]]
    steps = convert.layout(np.zeros((2, 1, 3)), "TNC", "steps")
    moved, _ = convert.move_blank(steps, np.array([[1]]), 0, "last")
    assert len(moved) == 2 and moved[0].shape == (1, 3)


def test_blank_index():
    assert [convert.blank_index(b, 5) for b in ("first", "last", 3, -1, -5)] == [0, 4, 3, 4, 0]
    for bad in (5, -6):
        with pytest.raises(CTCValueError):
            convert.blank_index(bad, 5)
    with pytest.raises(TypeError):
        convert.blank_index(1.0, 5)


def test_lengths_and_masks_round_trip():
    lengths = np.array([0, 3, 5, 1])
    masks = convert.lengths_to_masks(lengths, 5)
    np.testing.assert_array_equal(convert.masks_to_lengths(masks), lengths)
    with pytest.raises(CTCValueError, match="middle"):
        convert.masks_to_lengths([[0, 1, 0]])


def test_reductions_give_each_signatures_scale():
    losses = np.array([4.0, 9.0, 1.0])
    lengths = np.array([2, 3, 0])
    assert convert.reduce(losses, "sum") == 14.0
    assert convert.reduce(losses, "mean") == pytest.approx(14 / 3)
    assert convert.reduce(losses, "mean_per_label", label_lengths=lengths) == pytest.approx(
        (2 + 3 + 1) / 3)  # torch: divided by max(L, 1)
    np.testing.assert_allclose(convert.reduce(losses, "weighted", sample_weight=[1, 2, 0],
                                              weight=0.5), [2.0, 9.0, 0.0])
    np.testing.assert_array_equal(convert.reduce(losses, "none"), losses)
    # the canonical API's reductions are the same
    x = np.random.default_rng(2).standard_normal((8, 3, 4))
    labels = [[1, 2], [3, 3], [1, 0]]
    per = ctcbridge.ctc_loss(x, labels, label_lengths=[2, 2, 1])
    for red in ("sum", "mean"):
        assert ctcbridge.ctc_loss(x, labels, label_lengths=[2, 2, 1], reduction=red) == \
            pytest.approx(convert.reduce(per, red))


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_activation_conversions_stay_in_the_framework(framework):
    """layout, inputs and move_blank on framework arrays return that framework's arrays
    (differentiable there); run where the framework is installed."""
    if importlib.util.find_spec(framework) is None:
        if framework in REQUIRED:
            raise AssertionError(f"{framework} is required in this session")
        pytest.skip(f"needs {framework}")
    x = np.random.default_rng(3).standard_normal((4, 2, 5)).astype(np.float32)
    if framework == "torch":
        import torch

        arr = torch.tensor(x)
    elif framework == "jax":
        import jax.numpy as jnp

        arr = jnp.asarray(x)
    else:
        import tensorflow as tf

        arr = tf.constant(x)
    y = convert.inputs(convert.layout(arr, "TNC", "NTC"), "logits", "log_probs")
    y, _ = convert.move_blank(y, np.array([[1, 2], [3, 4]]), 0, "last")
    assert type(y).__module__.split(".")[0] in (framework, "jaxlib")
    want, _ = convert.move_blank(convert.inputs(x.transpose(1, 0, 2), "logits", "log_probs"),
                                 np.array([[1]]), 0, "last")
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6)
    flat = convert.layout(arr, "TNC", "flat")
    np.testing.assert_allclose(np.asarray(convert.layout(flat, "flat", "TNC", batch=2)), x)
    steps = convert.layout(arr, "TNC", "steps")
    assert len(steps) == 4
    np.testing.assert_allclose(np.asarray(convert.layout(steps, "steps", "NTC")),
                               x.transpose(1, 0, 2))
