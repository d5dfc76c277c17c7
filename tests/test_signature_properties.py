"""Property-based tests of every framework signature on numpy arrays (no
framework needed): valid calls agree with the reference in the signature's
conventions, invalid ones raise a clear ValueError/TypeError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctcbridge.keras as ck
import ctcbridge.optax as co
import ctcbridge.tensorflow as ctf
import ctcbridge.torch as ct
from ctcbridge import reference
from ctcbridge._numerics import required_frames

from helpers import assert_close_losses

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    T, N, C = draw(st.integers(1, 10)), draw(st.integers(1, 4)), draw(st.integers(2, 6))
    blank = draw(st.integers(0, C - 1))
    S = draw(st.integers(1, 5))
    non_blank = [c for c in range(C) if c != blank]
    labels = np.array(draw(st.lists(st.lists(st.sampled_from(non_blank), min_size=S, max_size=S),
                                    min_size=N, max_size=N)), dtype=np.int64)
    ll = np.array([draw(st.integers(0, S)) for _ in range(N)])
    il = np.array([draw(st.integers(0, T)) for _ in range(N)])
    x = np.random.default_rng(draw(st.integers(0, 2**31))).standard_normal((T, N, C)) * 3
    return x, labels, il, ll, blank


def _feasible(labels, il, ll):
    return np.array([required_frames(labels[n, : ll[n]]) <= il[n] for n in range(len(ll))])


@SETTINGS
@given(batches())
def test_every_signature_matches_the_reference(batch):
    x, labels, il, ll, blank = batch
    T, N, C = x.shape
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    ref = reference.ctc_loss(x, labels, il, ll, blank=blank)
    ok = _feasible(labels, il, ll)
    # torch: log-probs, reduction none: +inf where infeasible, like the reference
    assert_close_losses(ct.ctc_loss(lp, labels, il, ll, blank=blank, reduction="none"), ref,
                        rtol=1e-9, atol=1e-9)
    # optax: batch-major logits and padding masks (infeasible: its log_epsilon value)
    optax_loss = co.ctc_loss(x.transpose(1, 0, 2), (np.arange(T)[None] >= il[:, None]) * 1.0,
                             labels, (np.arange(labels.shape[1])[None] >= ll[:, None]) * 1.0,
                             blank_id=blank)
    assert_close_losses(optax_loss[ok], ref[ok], rtol=1e-9, atol=1e-9)
    assert (optax_loss[~ok] > 1e4).all()
    # TF dense and Keras (infeasible: TF's log(1e-307) sentinel, about 707 and more)
    tf_loss = ctf.ctc_loss(labels, x, ll, il, blank_index=blank)
    keras_loss = ck.ctc_loss(labels, x.transpose(1, 0, 2), ll, il, mask_index=blank)
    for loss in (tf_loss, keras_loss):
        assert_close_losses(loss[ok], ref[ok], rtol=1e-9, atol=1e-9)
        assert (loss[~ok] > 700).all() and np.isfinite(loss).all()


@SETTINGS
@given(batches(), st.sampled_from(["label_high", "label_negative", "input_long", "input_neg"]),
       st.integers(1, 10**6))
def test_every_signature_rejects_bad_input(batch, kind, value):
    x, labels, il, ll, blank = batch
    T, N, C = x.shape
    labels, il, ll = labels.copy(), il.copy(), np.maximum(ll, 1)
    if kind == "label_high":
        labels[0, 0] = C - 1 + value
    elif kind == "label_negative":
        labels[0, 0] = -value
    elif kind == "input_long":
        il[0] = T + value
    else:
        il[0] = -value
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    calls = [
        lambda: ct.ctc_loss(lp, labels, il, ll, blank=blank),
        lambda: ctf.ctc_loss(labels, x, ll, il, blank_index=blank),
        lambda: ck.ctc_loss(labels, x.transpose(1, 0, 2), ll, il, mask_index=blank),
    ]
    if kind.startswith("label"):  # optax has no input lengths (masks cannot be out of range)
        calls.append(lambda: co.ctc_loss(x.transpose(1, 0, 2), np.zeros((N, T)), labels,
                                         np.zeros(labels.shape), blank_id=blank))
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value)
