"""Chainer cases and the comparison with native chainer, shared by the `chainer`
session (ctcbridge.chainer on chainer Variables and jax arrays) and the `migration`
session (on torch tensors)."""

from __future__ import annotations

import warnings

import chainer
import chainer.functions as F
import numpy as np

from ctcbridge._numerics import required_frames
from native_cases import close, make_case

NATIVE = F.connectionist_temporal_classification
DTYPES = {0: np.float64, 1: np.float32, 2: np.float64, 3: np.float32, 4: np.float16}


def run(fn, x, t, blank, il=None, ll=None, reduce="no"):
    """(loss, d sum(loss) / d x stacked (T, B, V)) through a list of Variables."""
    xs = [chainer.Variable(a) for a in x]
    with warnings.catch_warnings():  # the native's overflow in its padded frames
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = fn(xs, t, blank, il, ll, reduce=reduce)
        F.sum(loss).backward()
    return np.asarray(loss.array), np.stack([v.grad for v in xs])


def chainer_case(seed):
    """A native case in Chainer's conventions, with every option varied by seed: dtype,
    blank anywhere, infeasible and empty-label samples, junk (and negative) padding,
    negative labels, lengths None or given, reduce."""
    case = make_case(seed, blank=("zero", "last", "any")[seed % 3])
    rng = np.random.default_rng(seed + 7919)
    dtype = DTYPES[seed % 5]
    x = case.logits / (10.0 if dtype == np.float16 and seed % 7 == 3 else 1.0)
    x = x.astype(dtype)
    T, B, V = x.shape
    t = case.labels.astype(np.int32)
    il = case.input_lengths.astype(np.int32)
    ll = case.label_lengths.astype(np.int32)
    M = t.shape[1]
    if seed % 4 == 1:  # one sample without a valid alignment (a frame short)
        b = int(np.argmax(ll))
        need = required_frames(t[b, : ll[b]])
        if need >= 2:
            il[b] = need - 1
    if seed % 5 == 2:
        ll[rng.integers(B)] = 0  # an empty label sequence
    full_labels = seed % 9 == 0 and M > 0  # label_length=None: all M entries are labels
    if full_labels:
        ll[:] = M
    if not full_labels and seed % 2 == 0:  # padding is read as indices: any valid one
        pad = np.arange(M)[None] >= ll[:, None]
        t[pad] = rng.integers(0, V, size=int(pad.sum()))
    if not full_labels and seed % 6 == 4:  # negative labels count from the end
        b = int(rng.integers(B))
        t[b, : ll[b]] -= V
    return dict(x=x, t=t, blank=case.blank, il=None if (il == T).all() and seed % 3 == 0 else il,
                ll=None if full_labels else ll, reduce="mean" if seed % 2 else "no")


def check_against_native(seed, ours):
    """Loss and gradient of ``ours(c, reduce) -> (loss, grad (T, B, V))`` on
    ``chainer_case(seed)`` against chainer's own CTC.

    Feasible samples are held to chainer's float64 result on the same (rounded)
    inputs, tightly; chainer's own float32/float16 recursion drifts (and its
    softmax underflows) while ctcbridge computes in double (divergence file), so
    it is checked loosely.  Samples without a valid alignment get exactly
    chainer's sentinel value and gradient in the input dtype, with 0 instead of
    chainer's NaN on their padded frames."""
    c = chainer_case(seed)
    x, dtype = c["x"], c["x"].dtype
    args = (c["t"], c["blank"], c["il"], c["ll"])
    T, B, _ = x.shape
    il = c["il"] if c["il"] is not None else np.full(B, T)
    used = (np.arange(T)[:, None] < il[None, :])[..., None]  # (T, B, 1)

    lo, go = ours(c, "no")
    ln64, gn64 = run(NATIVE, x.astype(np.float64), *args)
    ln, gn = (ln64, gn64) if dtype == np.float64 else run(NATIVE, x, *args)
    assert lo.dtype == ln.dtype == dtype and lo.shape == ln.shape == (B,)
    assert go.dtype == dtype

    sentinel = ln64 > 1e9  # no valid alignment: chainer's -1e10 arithmetic
    np.testing.assert_array_equal(lo[sentinel], ln[sentinel])
    np.testing.assert_array_equal(np.where(used, go, 0)[:, sentinel],
                                  np.where(used, gn, 0)[:, sentinel])
    assert not go[:, sentinel][~np.broadcast_to(used, go.shape)[:, sentinel]].any()

    # float32: the engine's softmax of the dominant class carries the rounding of
    # x - logsumexp(x) in float32, ~ulp(|x|)/2 (4e-6 for logits near 100)
    rtol, atol = {np.dtype(np.float64): (1e-10, 1e-9),
                  np.dtype(np.float32): (1e-6, 1e-6 + 6e-8 * np.abs(x).max()),
                  np.dtype(np.float16): (1e-3, 1e-3)}[dtype]
    ok = ~sentinel
    close(lo[ok], ln64[ok], rtol, rtol)
    close(go[:, ok], gn64[:, ok], 0, atol)
    assert not go[:, ok][~np.broadcast_to(used, go.shape)[:, ok]].any()
    if dtype != np.float64 and seed % 7 != 3:
        # chainer's own recursion in the input dtype (divergence chainer-low-precision),
        # away from the extreme logits where its softmax underflows: float32 within
        # ~1e-4 in the gradient; float16 losses within ~1e-2 (its gradients are not
        # compared: float16 softmax underflow puts them off by up to ~0.8)
        close(lo[ok], ln[ok], *((1e-5, 1e-5) if dtype == np.float32 else (1e-2, 1e-2)))
        if dtype == np.float32:
            close(go[:, ok], gn[:, ok], 0, 1e-3)

    if c["reduce"] == "mean":  # the batch mean, no division by label lengths; grad / B
        lm, gm = ours(c, "mean")
        nm, _ = run(NATIVE, x, *args, reduce="mean")
        assert lm.shape == nm.shape == () and lm.dtype == nm.dtype == dtype
        np.testing.assert_allclose(lm, lo.astype(np.float64).mean(), rtol=max(rtol, 1e-6))
        np.testing.assert_allclose(gm, go.astype(np.float64) / B, rtol=1e-3, atol=atol / B)
        if not sentinel.any():
            np.testing.assert_allclose(lm, ln64.mean(), rtol=max(rtol, 1e-6))


