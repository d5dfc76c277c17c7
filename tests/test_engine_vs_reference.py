"""The engine against the float64 numpy reference on seeded random cases."""

from __future__ import annotations

import numpy as np
import pytest

import ctcbridge
from ctcbridge import reference
from ctcbridge._compute import compute
from ctcbridge.conform.corpus import builtin_cases, random_case

from helpers import assert_close_grads, assert_close_losses

TOL = {np.float64: (1e-9, 1e-9), np.float32: (2e-5, 2e-4)}


def _run(case, dtype, layout):
    x = case.activations.astype(dtype)
    if layout == "NTC":
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    loss, grad = ctcbridge.ctc_loss_and_grad(x, case.labels, layout=layout, **case.kwargs())
    assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
    if layout == "NTC":
        grad = grad.transpose(1, 0, 2)
    return loss, grad


def _check(case, dtype, layout):
    ref_loss, ref_grad = reference.ctc_loss_and_grad(case.activations, case.labels,
                                                     **case.kwargs())
    loss, grad = _run(case, dtype, layout)
    rtol, atol = TOL[dtype]
    assert_close_losses(loss, ref_loss, rtol=rtol, atol=rtol)
    assert_close_grads(grad, ref_grad, atol=atol)


@pytest.mark.parametrize("seed", range(300))
def test_random_small(seed):
    rng = np.random.default_rng(seed)
    C = int(rng.integers(2, 40))
    blank = [0, C - 1, int(rng.integers(0, C))][seed % 3]
    case = random_case(
        rng, f"seed{seed}", T=int(rng.integers(1, 80)), N=int(rng.integers(1, 5)), C=C,
        max_label=int(rng.integers(0, 20)), blank=blank,
        inputs="log_probs" if seed % 4 == 3 else "logits",
        scale=[1.0, 3.0, 10.0][seed % 3], repeat_prob=0.3, min_input=0,
        feasible=None if seed % 5 == 0 else True,
    )
    dtype = np.float64 if seed % 2 else np.float32
    _check(case, dtype, "NTC" if seed % 7 < 3 else "TNC")


@pytest.mark.parametrize(
    "T,N,C,L",
    [(1000, 2, 30, 200), (400, 3, 5000, 60), (200, 8, 2, 40), (1000, 1, 5000, 300)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_large(T, N, C, L, dtype):
    rng = np.random.default_rng(T * 7 + C)
    case = random_case(rng, "large", T, N, C, L, min_input=T // 2)
    _check(case, dtype, "TNC")


@pytest.mark.parametrize("case", builtin_cases(), ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_builtin_corpus(case, dtype):
    _check(case, dtype, "TNC")


@pytest.mark.parametrize("seed", range(20))
def test_scaled_equals_log_space(seed):
    """Both engine recursions agree (the fallback is exercised on its own)."""
    rng = np.random.default_rng(1000 + seed)
    case = random_case(rng, "x", 60, 3, 9, 20, min_input=0, scale=5.0, blank=None)
    a = compute(case.activations, case.labels, **case.kwargs())
    b = compute(case.activations, case.labels, log_space=True, **case.kwargs())
    assert_close_losses(a[0], b[0], rtol=1e-12, atol=1e-12)
    assert_close_grads(a[1], b[1], atol=1e-12)


def test_flags_match_reference(rng):
    """merge_repeated=False and warp_blank_labels, against the reference."""
    x = rng.standard_normal((20, 3, 5))
    labels = np.array([[1, 1, 2, 2], [3, 0, 3, 0], [2, 0, 0, 4]])
    for kw in (dict(merge_repeated=False), dict(warp_blank_labels=True)):
        ours = compute(x, labels, **kw)
        ref = reference.ctc_loss_and_grad(x, labels, **kw)
        assert_close_losses(ours[0], ref[0], rtol=1e-10)
        assert_close_grads(ours[1], ref[1], atol=1e-10)


def test_fallback_on_lost_state():
    """Huge logit gaps push states below double range; the result stays exact."""
    rng = np.random.default_rng(5)
    x = rng.choice([-400.0, 400.0], size=(60, 2, 4))
    labels = np.array([[1, 2, 3, 1, 2, 3], [3, 3, 3, 1, 1, 2]])
    ours = compute(x, labels)
    ref = reference.ctc_loss_and_grad(x, labels)
    assert_close_losses(ours[0], ref[0], rtol=1e-10)
    assert_close_grads(ours[1], ref[1], atol=1e-9)


def test_tiny_forward_backward_overlap_goes_to_log_space():
    """Extreme logits where sum_s alpha_t beta_t underflows at some frame
    (found by the optax comparison, seed 150): the gradient stays finite."""
    rng = np.random.default_rng(150)
    x = rng.standard_normal((200, 1, 4)) * 30
    labels = rng.integers(1, 4, size=(1, 9))
    loss, grad = compute(x, labels)
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x, labels)
    assert np.isfinite(grad).all()
    assert_close_losses(loss, ref_loss, rtol=1e-10)
    assert_close_grads(grad, ref_grad, atol=1e-8)
