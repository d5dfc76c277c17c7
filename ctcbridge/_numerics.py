"""The few numpy formulas the signatures, the natives' ports and ``conform`` share.

Each is written once here.  The reference (:mod:`ctcbridge.reference`) keeps
its own, on purpose: it is the independent float64 check of everything else.
"""

from __future__ import annotations

import numpy as np


def logsumexp(x, axis: int = -1, keepdims: bool = False, xp=np):
    """log(sum(exp(x))) along `axis`; where the maximum is not finite it is not
    subtracted (-inf - -inf would be NaN): all -inf gives -inf.  `xp`: numpy or an
    array module with its API (``jax.numpy``)."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log_softmax over the last (class) axis, by the usual max shift (NaN for a frame
    of only -inf, or holding +inf)."""
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """softmax over the last (class) axis, in x's dtype."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def required_frames(label) -> int:
    """Frames the shortest alignment of a label sequence needs: L plus one per
    repeat (a blank must separate equal neighbours).  warp-ctc's feasibility count."""
    label = np.asarray(label)
    return int(label.size + np.count_nonzero(label[1:] == label[:-1]))
