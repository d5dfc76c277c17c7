"""A readable float64 numpy reference of the CTC loss and its gradient.

This is the yardstick the engine, every adapter and ``ctcbridge conform`` are
measured against.  It follows the textbook definition in log space, one
sample and one frame at a time, vectorised over the states of the extended
label sequence only; it is slow and meant to be obviously right.  It is in
turn checked against :func:`brute_force_nll`, which sums over every path.

Definition (one sample): with y_t(k) the log-probabilities of frame t and
l' = (blank, l_1, blank, ..., l_L, blank) the extended sequence (S = 2L+1
states),

    alpha_0(0) = y_0(blank), alpha_0(1) = y_0(l_1)
    alpha_t(s) = logsumexp(alpha_{t-1}(s)   [self-loop],
                           alpha_{t-1}(s-1),
                           alpha_{t-1}(s-2) [skip, when allowed]) + y_t(l'_s)
    loss = -logsumexp(alpha_{T-1}(S-1), alpha_{T-1}(S-2))

The skip into label state s is allowed when l'_s != l'_{s-2}.  Options:
``merge_repeated=False`` (TF's ``ctc_merge_repeated=False``) removes the
label states' self-loops and always allows the skip; ``warp_blank_labels``
(warp-ctc) never allows a skip into a label equal to the blank.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["ctc_loss", "ctc_loss_and_grad", "brute_force_nll"]

NEG_INF = -np.inf


def _logsumexp(*terms: np.ndarray) -> np.ndarray:
    """Elementwise log(sum(exp(terms))) that maps all -inf to -inf without warnings."""
    stack = np.stack(terms)
    m = stack.max(axis=0)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = safe + np.log(np.exp(stack - safe).sum(axis=0))
    return np.where(m == NEG_INF, NEG_INF, np.where(np.isnan(m) | (m == np.inf), m, out))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - _logsumexp(*np.moveaxis(x, -1, 0))[..., None]


def _transitions(ext: np.ndarray, blank: int, merge_repeated: bool, warp_blank_labels: bool):
    """(stay, skip) boolean masks of the S states."""
    S = ext.size
    is_label = np.arange(S) % 2 == 1
    stay = ~is_label | merge_repeated
    skip = np.zeros(S, dtype=bool)
    if S > 3:
        skip[3::2] = True if not merge_repeated else ext[3::2] != ext[1:-2:2]
        if warp_blank_labels:
            skip[3::2] &= ext[3::2] != blank
    return stay, skip


def _one_sample(y: np.ndarray, label: np.ndarray, blank: int, merge_repeated: bool,
                warp_blank_labels: bool):
    """loss and d loss / d y (T, C) of one sample, y its used frames' log-probabilities."""
    T, C = y.shape
    L = label.size
    S = 2 * L + 1
    ext = np.full(S, blank, dtype=np.int64)
    ext[1::2] = label
    if T == 0:
        return (0.0 if L == 0 else np.inf), np.zeros((0, C))
    stay, skip = _transitions(ext, blank, merge_repeated, warp_blank_labels)
    emit = y[:, ext]  # (T, S) log-emission of each state

    def shifted(v: np.ndarray, k: int) -> np.ndarray:
        return np.concatenate([np.full(k, NEG_INF), v[:-k]]) if k < v.size else np.full(v.size, NEG_INF)

    alpha = np.full((T, S), NEG_INF)
    alpha[0, 0] = emit[0, 0]
    if S > 1:
        alpha[0, 1] = emit[0, 1]
    for t in range(1, T):
        prev = alpha[t - 1]
        alpha[t] = _logsumexp(
            np.where(stay, prev, NEG_INF), shifted(prev, 1), np.where(skip, shifted(prev, 2), NEG_INF)
        ) + emit[t]
    ends = [alpha[T - 1, S - 1]] + ([alpha[T - 1, S - 2]] if S > 1 else [])
    log_p = float(_logsumexp(*np.array(ends)[:, None])[0])

    # beta_t(s): log-probability of frames t+1.. given state s at t
    # (excluding the emission at t), so alpha + beta is the joint log-prob
    # of the paths through (t, s).
    beta = np.full((T, S), NEG_INF)
    beta[T - 1, S - 1] = 0.0
    if S > 1:
        beta[T - 1, S - 2] = 0.0

    def ahead(v: np.ndarray, k: int) -> np.ndarray:
        return np.concatenate([v[k:], np.full(k, NEG_INF)]) if k < v.size else np.full(v.size, NEG_INF)

    skip_from = np.zeros(S, dtype=bool)  # may state s+2 be entered from s?
    skip_from[: max(S - 2, 0)] = skip[2:]
    for t in range(T - 2, -1, -1):
        nxt = beta[t + 1] + emit[t + 1]
        beta[t] = _logsumexp(np.where(stay, nxt, NEG_INF), ahead(nxt, 1),
                             np.where(skip_from, ahead(nxt, 2), NEG_INF))

    if not np.isfinite(log_p):
        loss = -log_p if not np.isnan(log_p) else np.nan
        return loss, np.full((T, C), np.nan)
    with np.errstate(invalid="ignore"):
        occupancy = np.exp(alpha + beta - log_p)  # (T, S) posterior of each state
    gamma = np.zeros((T, C))
    for s in range(S):
        gamma[:, ext[s]] += occupancy[:, s]
    return -log_p, -gamma  # d(-log p)/dy_t(k) = -gamma_t(k)


def _split_labels(labels, label_lengths, N: int) -> list[np.ndarray]:
    if isinstance(labels, (list, tuple)) and labels and not np.isscalar(labels[0]) and (
        label_lengths is None or np.ndim(labels) != 2
    ):
        seqs = [np.asarray(seq, dtype=np.int64).ravel() for seq in labels]
        if label_lengths is not None:
            seqs = [seq[: int(n)] for seq, n in zip(seqs, label_lengths)]
        return seqs
    arr = np.asarray(labels, dtype=np.int64)
    if arr.ndim == 2:
        lengths = [arr.shape[1]] * N if label_lengths is None else label_lengths
        return [arr[n, : int(lengths[n])] for n in range(N)]
    if arr.ndim == 1:
        lengths = [arr.size] if label_lengths is None else label_lengths
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        return [arr[offsets[n]: offsets[n + 1]] for n in range(N)]
    raise ValueError(f"labels must be 2-D padded, 1-D concatenated or a list, got {arr.shape}")


def ctc_loss_and_grad(activations, labels, input_lengths=None, label_lengths=None, *, blank=0,
                      layout="TNC", inputs="logits", merge_repeated=True, warp_blank_labels=False):
    """(losses (N,), grad shaped like activations), both float64.

    Same conventions as :func:`ctcbridge.ctc_loss_and_grad` with
    ``reduction="none"``: an infeasible sample has loss +inf and NaN gradient
    on its frames; frames past an input length get gradient 0.
    """
    if layout not in ("TNC", "NTC"):
        raise ValueError(f"layout must be 'TNC' or 'NTC', got {layout!r}")
    if inputs not in ("logits", "log_probs"):
        raise ValueError(f"inputs must be 'logits' or 'log_probs', got {inputs!r}")
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"activations must be 3-D, got shape {x.shape}")
    tnc = x if layout == "TNC" else x.transpose(1, 0, 2)
    T, N, C = tnc.shape
    lengths = [T] * N if input_lengths is None else [int(v) for v in input_lengths]
    seqs = _split_labels(labels, label_lengths, N)
    losses = np.zeros(N)
    grad = np.zeros((T, N, C))
    for n in range(N):
        Tb = lengths[n]
        z = tnc[:Tb, n]
        y = _log_softmax(z) if inputs == "logits" else z
        loss, dy = _one_sample(y, seqs[n], blank, merge_repeated, warp_blank_labels)
        losses[n] = loss
        if inputs == "logits":
            # chain rule through log_softmax: dz = dy - softmax * sum(dy)
            grad[:Tb, n] = dy - np.exp(y) * dy.sum(axis=1, keepdims=True)
        else:
            grad[:Tb, n] = dy
    if layout == "NTC":
        grad = grad.transpose(1, 0, 2)
    return losses, grad


def ctc_loss(activations, labels, input_lengths=None, label_lengths=None, **kwargs):
    """Per-sample losses (N,) float64; see :func:`ctc_loss_and_grad`."""
    return ctc_loss_and_grad(activations, labels, input_lengths, label_lengths, **kwargs)[0]


def brute_force_nll(log_probs, label, blank=0, merge_repeated=True):
    """-log of the summed probability of every length-T path that collapses to `label`.

    ``log_probs`` is (T, C) for one sample; the collapse merges consecutive
    repeats (unless ``merge_repeated=False``) and then removes blanks.  It
    enumerates C**T paths: tiny cases only.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T, C = lp.shape
    target = tuple(int(v) for v in label)
    total = NEG_INF
    for path in itertools.product(range(C), repeat=T):
        collapsed = [k for i, k in enumerate(path)
                     if not (merge_repeated and i > 0 and path[i - 1] == k)]
        if tuple(k for k in collapsed if k != blank) == target:
            score = float(lp[np.arange(T), path].sum())
            total = np.logaddexp(total, score)
    return -total
