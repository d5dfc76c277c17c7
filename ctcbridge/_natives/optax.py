"""optax's own arithmetic for samples without a valid alignment (``optax.ctc_loss``).

optax computes in log space with ``log_epsilon`` (default -1e5) where other
implementations have log 0, so an infeasible sample gets a finite loss of
about ``-log_epsilon`` per impossible step.  :func:`values` gives those
samples that loss and its gradient; the signature (:mod:`ctcbridge.optax`)
and its conformance row both use it.
"""

from __future__ import annotations

import numpy as np

from .._numerics import logsumexp


def values(losses, grad, logits, paddings, labels, label_lengths, blank, log_epsilon):
    """In place: optax's loss (and gradient, unless `grad` is None) for every sample
    whose exact loss is +inf.  Batch-major: `logits` (B, T, K), `paddings` (B, T)
    true on padded frames, `grad` like `logits`."""
    for b in np.flatnonzero(np.isposinf(losses)):
        loss, g = lattice(logits[b], paddings[b], labels[b], label_lengths[b], blank,
                          log_epsilon)
        losses[b] = loss
        if grad is not None:
            grad[b] = g
    return losses, grad


def lattice(logits, pad, labels, length, blank, log_eps):
    """optax's recursion for one sample, as a log-space lattice, in float64.

    States are optax's ``phi[0..N]`` (n labels emitted, last frame blank or
    none) then ``emit[0..N-1]`` (emitting label n).  Impossible moves carry
    ``log_eps`` instead of -inf, exactly where optax adds it.  Returns the
    loss and d loss / d logits (T, K); used only for samples without a valid
    alignment, where that arithmetic is the result.
    """
    T, K = logits.shape
    N = labels.size
    D = 2 * N + 1
    phi = np.arange(N + 1)
    emit = N + 1 + np.arange(N)
    rep = np.zeros(N)
    rep[:-1] = labels[:-1] == labels[1:]
    lp = logits.astype(np.float64)
    lp = lp - logsumexp(lp, -1)[..., None]
    NEG = -np.inf

    # epsilon move before each frame: emit[n] -> phi[n+1], log weight eps*rep[n]
    eps_move = np.full((D, D), NEG)
    eps_move[np.arange(D), np.arange(D)] = 0.0
    eps_move[emit, phi[1:]] = log_eps * rep
    final_move = np.full((D, D), NEG)
    final_move[np.arange(D), np.arange(D)] = 0.0
    final_move[emit, phi[1:]] = 0.0

    def logmatmul(a, w):  # a (D,), w (D, D) -> (D,)
        return logsumexp(a[:, None] + w, 0)

    def frame_move(t):
        w = np.full((D, D), NEG)
        lp_emit, lp_phi = lp[t, labels], lp[t, blank]
        w[phi[:-1], emit] = lp_emit  # phi[n] -> emit[n]
        w[emit, emit] = lp_emit  # emit self-loop
        w[phi, phi] = lp_phi  # phi self-loop (blank)
        w[emit, phi[1:]] = lp_phi + log_eps * (1.0 - rep)  # emit -> phi by a blank
        return w

    # a used frame applies the epsilon move, then the frame's move
    alpha = np.full(D, log_eps)
    alpha[0] = 0.0
    alphas, moves = [], []
    for t in range(T):
        if pad[t]:
            moves.append(None)
        else:
            w = frame_move(t)
            alpha = logmatmul(logmatmul(alpha, eps_move), w)
            moves.append(w)
        alphas.append(alpha)
    final = logmatmul(alpha, final_move)
    log_z = final[phi[length]]

    # backward: beta[j] = log weight from state j (after frame t) to the end
    beta = final_move[:, phi[length]].copy()
    grad = np.zeros((T, K))
    for t in range(T - 1, -1, -1):
        if moves[t] is None:
            continue
        with np.errstate(invalid="ignore"):
            marg = np.exp(alphas[t] + beta - log_z)  # P(state j after frame t)
        marg = np.nan_to_num(marg)  # -inf + -inf: a state no path visits
        g = np.zeros(K)
        np.add.at(g, labels, marg[emit])
        g[blank] += marg[phi].sum()
        # loss = -log_z; d loss / d logits = -(g - softmax * sum(g))
        grad[t] = -(g - np.exp(lp[t]) * g.sum())
        beta = logsumexp(eps_move + logsumexp(moves[t] + beta[None, :], 1)[None, :], 1)
    return -log_z, grad
