"""The canonical numpy API: arguments, conventions, reductions, dtypes, errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import ctcbridge
from ctcbridge import CTCTypeError, CTCValueError

T, N, C = 12, 3, 6
LABELS = np.array([[1, 2, 2, 3, 0], [5, 4, 1, 1, 2], [3, 0, 0, 0, 0]])
LAB_LEN = np.array([4, 5, 1])
IN_LEN = np.array([12, 9, 7])


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((T, N, C))


def test_signature():
    params = list(inspect.signature(ctcbridge.ctc_loss).parameters.values())
    assert [p.name for p in params] == [
        "activations", "labels", "input_lengths", "label_lengths", "blank", "layout", "inputs",
        "reduction", "zero_infinity", "num_threads"]
    assert [p.default for p in params[2:]] == [None, None, 0, "TNC", "logits", "none", False, 0]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[4:])
    assert inspect.signature(ctcbridge.ctc_loss_and_grad).parameters == inspect.signature(ctcbridge.ctc_loss).parameters


def test_reductions_and_grad_scale(x):
    none, g = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN)
    s, gs = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN, reduction="sum")
    m, gm = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN, reduction="mean")
    assert none.shape == (N,) and np.ndim(s) == 0 and np.ndim(m) == 0
    assert s == pytest.approx(none.sum()) and m == pytest.approx(none.mean())
    np.testing.assert_allclose(gs, g)
    np.testing.assert_allclose(gm, g / N)
    assert ctcbridge.ctc_loss(x, LABELS, IN_LEN, LAB_LEN, reduction="sum") == pytest.approx(s)


def test_frames_beyond_length_get_zero_gradient(x):
    _, g = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN)
    assert np.all(g[9:, 1] == 0) and np.all(g[7:, 2] == 0)
    assert np.abs(g[:7, 2]).sum() > 0
    # logits gradient rows sum to 0 (softmax and gamma both sum to 1)
    np.testing.assert_allclose(g.sum(-1), 0, atol=1e-12)


def test_padded_concatenated_and_defaults_agree(x):
    padded = ctcbridge.ctc_loss(x, LABELS, IN_LEN, LAB_LEN)
    flat = np.concatenate([LABELS[n, :LAB_LEN[n]] for n in range(N)])
    concat = ctcbridge.ctc_loss(x, flat, IN_LEN, LAB_LEN)
    np.testing.assert_array_equal(padded, concat)
    as_lists = ctcbridge.ctc_loss(x, LABELS.tolist(), IN_LEN.tolist(), tuple(LAB_LEN))
    np.testing.assert_array_equal(padded, as_lists)
    # default lengths: all frames, all labels
    full = ctcbridge.ctc_loss(x, LABELS)
    explicit = ctcbridge.ctc_loss(x, LABELS, [T] * N, [5] * N)
    np.testing.assert_array_equal(full, explicit)
    # padding values past the length are never read
    junk = LABELS.copy()
    for n in range(N):
        junk[n, LAB_LEN[n]:] = 10**9
    np.testing.assert_array_equal(ctcbridge.ctc_loss(x, junk, IN_LEN, LAB_LEN), padded)


def test_layouts_and_views(x):
    base, g = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN)
    ntc = np.ascontiguousarray(x.transpose(1, 0, 2))
    l2, g2 = ctcbridge.ctc_loss_and_grad(ntc, LABELS, IN_LEN, LAB_LEN, layout="NTC")
    np.testing.assert_array_equal(base, l2)
    np.testing.assert_array_equal(g, g2.transpose(1, 0, 2))
    # a non-contiguous, negative-stride, read-only view is read in place
    big = np.zeros((T, N, 2 * C))
    big[:, :, ::2] = x[:, :, ::-1]
    view = big[:, :, ::2][:, :, ::-1]
    view.flags.writeable = False
    np.testing.assert_array_equal(ctcbridge.ctc_loss(view, LABELS, IN_LEN, LAB_LEN), base)


def test_log_probs_input(x):
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    a, ga = ctcbridge.ctc_loss_and_grad(x, LABELS, IN_LEN, LAB_LEN)
    b, gb = ctcbridge.ctc_loss_and_grad(lp, LABELS, IN_LEN, LAB_LEN, inputs="log_probs")
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # -gamma w.r.t. log-probs; softmax - gamma w.r.t. logits
    used = np.arange(T)[:, None] < IN_LEN[None, :]  # (T, N): frames within each length
    np.testing.assert_allclose(ga, np.where(used[..., None], np.exp(lp) + gb, 0), atol=1e-12)
    assert np.all(gb <= 0)


def test_dtypes(x):
    l64 = ctcbridge.ctc_loss(x, LABELS, IN_LEN, LAB_LEN)
    for dt in (np.float32, np.float16):
        loss, grad = ctcbridge.ctc_loss_and_grad(x.astype(dt), LABELS, IN_LEN, LAB_LEN)
        assert loss.dtype == dt and grad.dtype == dt
        np.testing.assert_allclose(loss.astype(np.float64), l64, rtol=1e-2 if dt == np.float16 else 1e-5)
    big_endian = x.astype(">f8")
    np.testing.assert_array_equal(ctcbridge.ctc_loss(big_endian, LABELS, IN_LEN, LAB_LEN), l64)


def test_infeasible_and_zero_infinity(x):
    labels = np.array([[1, 1, 1], [1, 2, 3], [2, 2, 0]])
    lens = np.array([4, 3, 3])  # [1,1,1] needs 5 frames; [2,2] needs 3
    inputs = np.array([4, 3, 3])
    loss, g = ctcbridge.ctc_loss_and_grad(x, labels, inputs, [3, 3, 2])
    assert np.isinf(loss[0]) and np.isfinite(loss[1:]).all()
    assert np.isnan(g[:4, 0]).all() and (g[4:, 0] == 0).all()
    loss, g = ctcbridge.ctc_loss_and_grad(x, labels, inputs, [3, 3, 2], zero_infinity=True,
                                          reduction="mean")
    assert np.isfinite(loss) and (g[:, 0] == 0).all()
    del lens


def test_empty_and_zero_length(x):
    loss, g = ctcbridge.ctc_loss_and_grad(x, LABELS, [12, 0, 0], [0, 0, 1])
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    assert loss[0] == pytest.approx(-lp[:, 0, 0].sum())
    assert loss[1] == 0 and np.isinf(loss[2])
    assert (g[:, 1:] == 0).all()


def test_empty_batch():
    x = np.zeros((5, 0, 4), dtype=np.float32)
    loss, g = ctcbridge.ctc_loss_and_grad(x, np.zeros((0, 3), dtype=np.int64))
    assert loss.shape == (0,) and g.shape == (5, 0, 4)
    assert np.isnan(ctcbridge.ctc_loss(x, np.zeros((0, 3), dtype=int), reduction="mean"))
    assert ctcbridge.ctc_loss(x, np.zeros((0, 3), dtype=int), reduction="sum") == 0


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(labels=[[1, 6]]), CTCValueError, "label 1 of sample 0 is 6"),
        (dict(labels=[[1, -1]]), CTCValueError, "is -1"),
        (dict(input_lengths=[13]), CTCValueError, r"input_lengths\[0\] = 13"),
        (dict(input_lengths=[-1]), CTCValueError, r"input_lengths\[0\] = -1"),
        (dict(label_lengths=[3]), CTCValueError, r"label_lengths\[0\] = 3"),
        (dict(label_lengths=[-1]), CTCValueError, r"label_lengths\[0\] = -1"),
        (dict(input_lengths=[1.5]), CTCTypeError, "input_lengths must hold integers"),
        (dict(labels=[[1.0, 2.0]]), CTCTypeError, "labels must hold integers"),
        (dict(input_lengths=[3, 4]), CTCValueError, r"input_lengths must have shape \(1,\)"),
        (dict(labels=[[1], [2]]), CTCValueError, "labels has 2 rows but the batch has 1"),
        (dict(labels=[[[1]]]), CTCValueError, "labels must be 2-D"),
        (dict(blank=6), CTCValueError, r"blank = 6 is outside \[0, C = 6\)"),
        (dict(blank=-1), CTCValueError, "blank = -1"),
        (dict(blank=1.0), CTCTypeError, "blank must be an integer"),
        (dict(layout="TCN"), CTCValueError, "layout must be one of"),
        (dict(inputs="probs"), CTCValueError, "inputs must be one of"),
        (dict(reduction="avg"), CTCValueError, "reduction must be one of"),
        (dict(num_threads=-2), CTCValueError, "num_threads = -2"),
        (dict(activations=np.zeros((12, 1, 6), dtype=np.int32)), CTCTypeError, "floating-point"),
        (dict(activations=np.zeros((12, 6))), CTCValueError, "must be 3-D"),
        (dict(activations=np.zeros((12, 1, 0))), CTCValueError, "empty class axis"),
    ],
)
def test_errors_name_the_argument(kwargs, exc, match):
    args = dict(activations=np.zeros((12, 1, 6)), labels=[[1, 2]], input_lengths=None,
                label_lengths=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ctcbridge.ctc_loss_and_grad(**args)


def test_concatenated_length_mismatch():
    x = np.zeros((5, 2, 4))
    with pytest.raises(CTCValueError, match="add up to 3 but the concatenated labels hold 4"):
        ctcbridge.ctc_loss(x, [1, 2, 3, 1], label_lengths=[1, 2])
    with pytest.raises(CTCValueError, match="label_lengths is required"):
        ctcbridge.ctc_loss(x, [1, 2, 3, 1])


def test_errors_are_catchable_as_builtins():
    with pytest.raises(ValueError):
        ctcbridge.ctc_loss(np.zeros((3, 1, 2)), [[5]])
    with pytest.raises(TypeError):
        ctcbridge.ctc_loss(np.zeros((3, 1, 2), dtype=int), [[1]])
    assert issubclass(CTCValueError, ctcbridge.CTCError)


def test_supported_arrays_are_not_copied(x):
    """float32/float64 arrays with element-aligned strides go to the engine as they are."""
    from ctcbridge._compute import _activations, _needs_copy

    f32 = x.astype(np.float32)
    arr, dt, _ = _activations(f32)
    assert arr is f32 and not _needs_copy(arr, dt)
    view = x.transpose(1, 0, 2)[:, ::-1]  # batch-major, negative stride
    arr, dt, _ = _activations(view)
    assert np.shares_memory(arr, x) and not _needs_copy(arr, dt)
    arr, dt, out = _activations(x.astype(np.float16))
    assert dt == np.float32 and out == np.float16 and _needs_copy(arr, dt)
