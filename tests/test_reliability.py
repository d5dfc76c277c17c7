"""Reliability of the canonical API: property-based valid and invalid inputs,
long float32 sequences, non-negative losses, memory limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctcbridge
from ctcbridge import CTCTypeError, CTCValueError, EngineMemoryError, _compute, reference

from helpers import assert_close_grads, assert_close_losses

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def valid_batches(draw):
    T = draw(st.integers(0, 12))
    N = draw(st.integers(0, 4))
    C = draw(st.integers(1, 6))
    blank = draw(st.integers(0, C - 1))
    S = draw(st.integers(0, 5))
    labels = np.array(draw(st.lists(st.lists(st.integers(0, C - 1), min_size=S, max_size=S),
                                    min_size=N, max_size=N)), dtype=np.int64).reshape(N, S)
    label_lengths = np.array([draw(st.integers(0, S)) for _ in range(N)], dtype=np.int64)
    input_lengths = np.array([draw(st.integers(0, T)) for _ in range(N)], dtype=np.int64)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 80.0]))
    x = draw(st.integers(0, 2**32 - 1))
    acts = np.random.default_rng(x).standard_normal((T, N, C)) * scale
    layout = draw(st.sampled_from(["TNC", "NTC"]))
    inputs = draw(st.sampled_from(["logits", "log_probs"]))
    if inputs == "log_probs" and C:
        acts = acts - np.log(np.exp(acts - acts.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - acts.max(-1, keepdims=True)
    return acts, labels, input_lengths, label_lengths, blank, layout, inputs


@SETTINGS
@given(valid_batches(), st.sampled_from([np.float64, np.float32]))
def test_valid_inputs_match_the_reference(batch, dtype):
    acts, labels, il, ll, blank, layout, inputs = batch
    x = acts if layout == "TNC" else np.ascontiguousarray(acts.transpose(1, 0, 2))
    loss, grad = ctcbridge.ctc_loss_and_grad(x.astype(dtype), labels, il, ll, blank=blank,
                                             layout=layout, inputs=inputs)
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x.astype(dtype).astype(np.float64),
                                                     labels, il, ll, blank=blank,
                                                     layout=layout, inputs=inputs)
    tol = 1e-9 if dtype == np.float64 else 3e-5
    assert_close_losses(loss, ref_loss, rtol=tol, atol=tol)
    assert_close_grads(grad, ref_grad, atol=tol * 10)
    if inputs == "logits":  # probabilities: never a negative loss, not even by rounding
        proper = np.array([(labels[n, : ll[n]] != blank).all() for n in range(len(ll))],
                          dtype=bool)
        assert not (loss[proper] < 0).any()


@st.composite
def invalid_calls(draw):
    """A valid call with one thing broken; returns (kwargs, expected exception)."""
    T, N, C = 5, 2, 4
    kw = dict(activations=np.zeros((T, N, C)), labels=np.array([[1, 2], [3, 3]]),
              input_lengths=np.array([5, 5]), label_lengths=np.array([2, 2]))
    kind = draw(st.sampled_from(["label_high", "label_negative", "input_negative",
                                 "input_too_long", "label_length_high", "label_length_negative",
                                 "batch_mismatch", "rank", "dtype", "blank", "float_lengths",
                                 "empty_alphabet", "huge_shape", "object"]))
    value = draw(st.integers(1, 2**40))
    if kind == "label_high":
        kw["labels"] = np.array([[1, C + value % 1000], [3, 3]])  # C - 1 is still valid
        return kw, CTCValueError
    if kind == "label_negative":
        kw["labels"] = np.array([[1, -value], [3, 3]])
        return kw, CTCValueError
    if kind == "input_negative":
        kw["input_lengths"] = np.array([5, -value])
        return kw, CTCValueError
    if kind == "input_too_long":
        kw["input_lengths"] = np.array([T + value, 5])
        return kw, CTCValueError
    if kind == "label_length_high":
        kw["label_lengths"] = np.array([2 + value, 2])
        return kw, CTCValueError
    if kind == "label_length_negative":
        kw["label_lengths"] = np.array([-value, 2])
        return kw, CTCValueError
    if kind == "batch_mismatch":
        kw["input_lengths"] = np.array([5, 5, 5])
        return kw, CTCValueError
    if kind == "rank":
        kw["activations"] = np.zeros((T, N))
        return kw, CTCValueError
    if kind == "dtype":
        kw["activations"] = np.zeros((T, N, C), dtype=draw(st.sampled_from([np.int32, np.bool_,
                                                                              np.complex64])))
        return kw, CTCTypeError
    if kind == "blank":
        return dict(kw, blank=C + value % 100), CTCValueError
    if kind == "float_lengths":
        kw["label_lengths"] = np.array([2.0, 2.0])
        return kw, CTCTypeError
    if kind == "empty_alphabet":
        kw["activations"] = np.zeros((T, N, 0))
        return kw, CTCValueError
    if kind == "huge_shape":  # a broadcast view of 2^57 elements: no memory for it
        kw["activations"] = np.broadcast_to(np.zeros(1), (2**36, 2, 2**20))
        kw["labels"] = np.zeros((2, 0), dtype=np.int64)
        kw["input_lengths"] = kw["label_lengths"] = None
        return kw, EngineMemoryError
    kw["labels"] = [[1, "a"], [3, 3]]
    return kw, CTCTypeError


@SETTINGS
@given(invalid_calls())
def test_invalid_inputs_raise_clear_errors(case):
    kwargs, exc = case
    with pytest.raises(exc) as info:
        ctcbridge.ctc_loss_and_grad(**kwargs)
    assert str(info.value)


def test_nan_and_inf_activations_give_nan_not_garbage():
    x = np.zeros((4, 3, 3))
    x[1, 0, 2] = np.nan
    x[2, 1, 0] = np.inf
    loss, grad = ctcbridge.ctc_loss_and_grad(x, [[1], [1], [1]])
    assert np.isnan(loss[:2]).all() and np.isfinite(loss[2])
    assert np.isnan(grad[:, :2]).all() and np.isfinite(grad[:, 2]).all()


def test_float32_stays_finite_for_100k_frames():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((100_000, 1, 30)) * 2).astype(np.float32)
    labels = rng.integers(1, 30, size=(1, 50))
    loss, grad = ctcbridge.ctc_loss_and_grad(x, labels)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    loss64 = ctcbridge.ctc_loss(x.astype(np.float64), labels)
    np.testing.assert_allclose(loss, loss64, rtol=1e-5)


def test_request_beyond_available_memory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_compute, "_available_memory", lambda: 1 << 20)
    monkeypatch.setattr(_compute, "_SMALL_REQUEST", 0)  # check even this small request
    with pytest.raises(EngineMemoryError, match="GiB are available"):
        ctcbridge.ctc_loss_and_grad(np.zeros((1000, 4, 100), np.float32), np.ones((4, 200), int))
    assert issubclass(EngineMemoryError, MemoryError)


@pytest.mark.parametrize("T,L,C", [(1, 0, 1), (150, 40, 28), (150, 40, 5000), (1500, 300, 40),
                                   (7, 3, 7), (7, 3, 8)])
def test_the_documented_workspace_formula_is_the_engines(T, L, C):
    """docs/c_api.md and docs/reliability.md state the workspace per thread; the
    engine's ctcb_workspace_bytes must give exactly that (the Python memory check
    and users sizing a machine rely on it)."""
    from ctcbridge import _engine

    S = 2 * L + 1
    documented = 8 * (2 * T * (S + 4) + 4 * T + 2 * (S + 4) + 4 * (S + 2) + C)
    documented += 8 * T * C if C <= S else 0
    assert _engine.workspace_bytes(T, L, C) == documented
    assert documented == 8 * (2 * T * (2 * L + 5) + 4 * T + 2 * (2 * L + 5) + 4 * (2 * L + 3)
                              + C) + (8 * T * C if C <= 2 * L + 1 else 0)  # reliability.md's form
