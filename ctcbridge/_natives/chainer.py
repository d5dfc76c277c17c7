"""Chainer's own arithmetic for samples of probability 0
(``chainer.functions.connectionist_temporal_classification``, chainer 7.8.1).

Chainer computes in log space with -1e10 (-1e4 in float16) standing for
log 0, in the input's dtype, so a sample without a valid alignment gets a
finite loss of about 1e10 plus a partial NLL: :func:`values` gives those
samples Chainer's loss and gradient, from a port of its lattice.  The
signature (:mod:`ctcbridge.chainer`) and its conformance row both use it.
"""

from __future__ import annotations

import numpy as np


def log_zero(dtype) -> float:
    """Chainer's stand-in for log(0) (its ``zero_padding``)."""
    return -1e4 if dtype == np.float16 else -1e10


def values(losses, grad, x, t, input_length, label_length, blank):
    """In place: Chainer's loss (and gradient, unless `grad` is None) for every sample
    whose exact loss is +inf.  `x` (T, B, V) in the signature's dtype (Chainer's
    arithmetic runs in it), `t` (B, M) Chainer's labels; a sample of no frame costs
    -log_zero (log P = log 0 itself) with a zero gradient."""
    zero_prob = np.isposinf(losses)
    port = np.flatnonzero(zero_prob & (input_length > 0))
    if port.size:
        loss, g = lattice(x[:, port], t[port], input_length[port], label_length[port], blank,
                          grad is not None)
        losses[port] = loss
        if grad is not None:
            grad[:, port] = g
    empty = zero_prob & (input_length == 0)
    losses[empty] = -log_zero(x.dtype)
    if grad is not None:
        grad[:, empty] = 0.0
    return losses, grad


# --- a port of Chainer's numpy lattice (chainer/functions/loss/ctc.py, MIT
# licence, Preferred Networks), operation for operation in the input dtype, so
# that its sentinel arithmetic gives the same numbers.  Used only for samples
# without a valid alignment, where that arithmetic is Chainer's answer.

def _lse(a, axis):
    vmax = np.amax(a, axis=axis, keepdims=True)
    vmax += np.log(np.sum(np.exp(a - vmax), axis=axis, keepdims=True, dtype=a.dtype))
    return np.squeeze(vmax, axis=axis)


def _transition(prev, path, path_length, cum, y, zero):
    B, P = path.shape
    mat = np.full((3, B, P), zero, y.dtype)
    mat[0] = prev
    mat[1, :, 1:] = prev[:, :-1]
    mat[2, :, 2:] = prev[:, :-2]
    mat[2, :, 2:][path[:, :-2] == path[:, 2:]] = zero  # no skip between equal symbols
    prob = _lse(mat, 0)
    prob[np.arange(P) >= path_length[:, None]] = zero
    cum += prob
    prob += y[np.arange(B)[:, None], path]
    return prob


def _rotate_time(a, input_length):
    """a[(i + input_length[b]) % T, b] reversed in i: frames from the last used one."""
    T, B = a.shape[:2]
    i = (np.arange(T)[:, None] + input_length) % T
    return a[i, np.arange(B)[None, :]][::-1]


def _rotate_states(a, path_length):
    """a[..., b, (k + path_length[b]) % P] reversed in k: states from the last used one."""
    P = a.shape[-1]
    s = (np.arange(P) + path_length[:, None]) % P
    return np.take_along_axis(a, np.broadcast_to(s, a.shape), -1)[..., ::-1]


def lattice(x, t, input_length, label_length, blank, want_grad=True):
    """Chainer's forward-backward for a batch: (losses (B,), d sum / d x or None), in
    x's dtype, with Chainer's masking of frames past each input length."""
    zero = log_zero(x.dtype)
    T, B, V = x.shape
    e = np.exp(x - np.amax(x, axis=2, keepdims=True))
    e /= np.sum(e, axis=2, keepdims=True)  # softmax, in the input dtype
    with np.errstate(divide="ignore"):
        log_y = np.where(e > 0, np.log(np.where(e > 0, e, 1)), x.dtype.type(zero)).astype(x.dtype)
    path = np.full((B, 2 * t.shape[1] + 1), blank, dtype=np.int32)
    path[:, 1::2] = t
    path_length = 2 * label_length.astype(np.int64) + 1
    start = np.full(path.shape, zero, dtype=x.dtype)
    start[:, 0] = 0
    prob = log_y[np.arange(T)[:, None, None], np.arange(B)[:, None], path]
    fwd = start
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(T):
            fwd = _transition(fwd, path, path_length, prob[i], log_y[i], zero)
        r_path = _rotate_states(path, path_length)
        prob = _rotate_states(_rotate_time(prob, input_length), path_length)
        bwd = start
        for i, y in enumerate(_rotate_time(log_y, input_length)):
            bwd = _transition(bwd, r_path, path_length, prob[i], y, zero)
        trans = _rotate_states(_rotate_time(prob, input_length), path_length)
        total = _lse(trans[0], 1)
        if not want_grad:
            return -total, None
        occupancy = np.exp(trans - total[:, None])
    grad = np.zeros_like(e)
    for b in range(B):
        used = path[b, : path_length[b]]
        for c in set(used.tolist()):
            grad[:, b, c] = np.sum(occupancy[:, b, : path_length[b]][:, used == c], axis=1)
    grad = e - grad
    # Chainer multiplies by the frame mask, which keeps NaN (inf - inf) on the
    # padded frames; zeroing them is a divergence
    grad[np.arange(T)[:, None] >= input_length[None, :]] = 0
    return -total, grad
