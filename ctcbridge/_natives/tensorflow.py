"""TensorFlow's own arithmetic where the exact loss is +inf, and TF's readings.

- ``tf.nn.ctc_loss`` with dense labels (and ``keras.ops.ctc_loss``) runs its
  lattice with log(1e-307) for log 0: a sample without a valid alignment gets
  a finite loss of about 707 plus a partial NLL (:func:`dense_values`).
- ``tf.compat.v1.nn.ctc_loss`` (and the sparse ``tf.nn.ctc_loss``, Keras'
  ``ctc_batch_cost``) follow TF's kernel: a blank ends a label sequence
  (:func:`end_at_blank`); more labels than frames is an error or, with
  ``ignore_longer_outputs_than_inputs``, loss 0 and gradient 0; a sample made
  infeasible by its repeats costs +inf with the softmax as its gradient
  (:func:`v1_values`).

The signatures (:mod:`ctcbridge.tensorflow`, :mod:`ctcbridge.keras`) and their
conformance rows both use these.  No TensorFlow is imported here.
"""

from __future__ import annotations

import numpy as np

from .._contract import integral
from .._numerics import logsumexp, softmax
from ..errors import CTCValueError


def sparse_rows(indices, values, dense_shape):
    """A SparseTensor's values per row, in column order."""
    indices = integral(indices, "labels.indices").reshape(-1, 2)
    values = integral(values, "labels.values").reshape(-1)
    B = int(np.asarray(dense_shape).reshape(-1)[0])
    order = np.lexsort((indices[:, 1], indices[:, 0]))
    rows = [[] for _ in range(B)]
    for k in order:
        rows[int(indices[k, 0])].append(int(values[k]))
    return [np.asarray(r, dtype=np.int64) for r in rows]


LOG_0 = float(np.float32(np.log(1e-307)))  # TF dense's log(0): -706.8936


def dense_lattice(logits, labels, length, blank):
    """TF's dense CTC for one sample (tf.nn.ctc_loss, ctc_loss_dense), in float64.

    States: ``label[0..S]`` (label[0] the start, emitting nothing) then
    ``blank[0..S]``, over the padded width S.  The loss is read from the
    backward pass from the start state, with the final weights log(1e-307)
    for every state but label[L] and blank[L]; the gradient is softmax minus
    the per-frame normalised forward-backward posterior, where the forward
    pass also starts every state but the start at log(1e-307).  Used for
    samples without a valid alignment, where TF's sentinel is its answer.
    ``logits`` holds the sample's used frames (T_b, C).
    """
    T, C = logits.shape
    S = labels.size
    D = 2 * (S + 1)
    lab = np.arange(S + 1)
    blk = S + 1 + np.arange(S + 1)
    NEG = -np.inf
    trans = np.full((D, D), NEG)  # trans[to, from]
    trans[np.arange(D), np.arange(D)] = 0.0
    trans[lab[1:], blk[:-1]] = 0.0  # blank i -> label i+1
    trans[blk, lab] = 0.0  # label i -> blank i (the start included)
    trans[1, 0] = 0.0  # start -> label 1
    if S >= 2:  # label i -> label i+1 unless a repeat
        allowed = labels[:-1] != labels[1:]
        trans[lab[2:][allowed], lab[1:-1][allowed]] = 0.0
    lp = logits - logsumexp(logits, -1)[:, None]
    obs = np.full((T, D), NEG)
    obs[:, lab[1:]] = lp[:, labels]
    obs[:, blk] = lp[:, [blank]]
    final = np.full(D, LOG_0)
    final[[lab[length], blk[length]]] = 0.0
    initial = np.full(D, LOG_0)
    initial[0] = 0.0

    bwd = [final]  # bwd[k]: weight of frames T-k.. given the state before them
    for t in range(T - 1, -1, -1):
        bwd.append(logsumexp(trans + (obs[t] + bwd[-1])[:, None], 0))
    loss = -bwd[-1][0]
    bwd = bwd[::-1]  # bwd[t]: given the state before frame t
    fwd = initial
    grad = np.zeros((T, C))
    for t in range(T):
        fwd = logsumexp(trans + fwd[None, :], 1) + obs[t]
        post = fwd + bwd[t + 1]
        post = np.exp(post - logsumexp(post, 0))
        gamma = np.zeros(C)
        np.add.at(gamma, labels, post[lab[1:]])
        gamma[blank] += post[blk].sum()
        grad[t] = np.exp(lp[t]) - gamma
    return loss, grad


def dense_values(losses, grad, acts, labels, input_lengths, label_lengths, blank,
                 time_major=True):
    """In place: TF dense's loss (and gradient, unless `grad` is None) for every sample
    whose exact loss is +inf.  `acts` (T, B, C) time-major; `grad` in the layout
    `time_major` says."""
    for n in np.flatnonzero(np.isposinf(losses)):
        Tb = int(input_lengths[n])
        loss, g = dense_lattice(acts[:Tb, n].astype(np.float64), labels[n],
                                int(label_lengths[n]), blank)
        losses[n] = loss
        if grad is not None:
            g_full = np.zeros((acts.shape[0], acts.shape[2]))
            g_full[:Tb] = g
            if time_major:
                grad[:, n] = g_full
            else:
                grad[n] = g_full
    return losses, grad


def end_at_blank(rows, blank, C):
    """TF v1's kernel rule: a blank ends a label sequence (trailing blanks are
    dropped); a label after a blank is an error."""
    rows = list(rows)
    for n, r in enumerate(rows):
        hit = np.flatnonzero(r == blank)
        if hit.size:
            if (r[hit[0]:] != blank).any():
                raise CTCValueError(
                    f"Saw a non-null label (index >= num_classes - 1) following a null label, "
                    f"batch: {n} num_classes: {C} labels: {','.join(map(str, r))}")
            rows[n] = r[: hit[0]]
    return rows


def v1_values(losses, grad, logits, input_lengths, too_long, time_major=True):
    """In place: TF v1's kernel values where the exact loss is +inf.  `too_long`: the
    samples with more labels than frames (ignore_longer_outputs_than_inputs: loss 0,
    gradient 0); the others infeasible by their repeats keep +inf, with the softmax
    of their frames as gradient (no alignment carries occupancy)."""
    for n in np.flatnonzero(too_long):
        losses[n] = 0.0
        if grad is not None:
            (grad[:, n] if time_major else grad[n])[...] = 0.0
    for n in np.flatnonzero(np.isposinf(losses)):
        if grad is not None:
            sample = logits[:, n] if time_major else logits[n]
            g = softmax(sample.astype(np.float64))
            g[int(input_lengths[n]):] = 0.0
            (grad[:, n] if time_major else grad[n])[...] = g
    return losses, grad
