"""A readable float64 numpy reference of the CTC loss and its gradient.

This module is the yardstick that the C engine, every framework adapter and
``ctcbridge conform`` are measured against, so it is written to be obviously
right rather than fast: it works in log space, one sample and one frame at a
time, and uses numpy only to vectorise over the states of the extended label
sequence.  It is itself checked against :func:`brute_force_nll`, which sums
the probability of every path explicitly (``tests/test_reference.py``).

It imports numpy and the standard library only, so it keeps working when the
compiled engine is missing or broken.

Definition (one sample)
-----------------------
Let y_t(k) be the log-probability of class k at frame t (t < T_b, the
sample's input length) and l = (l_1, ..., l_L) its label.  The extended
sequence puts a blank around every label,

    l' = (blank, l_1, blank, l_2, ..., blank, l_L, blank),   S' = 2L + 1 states,

so even states are blanks and odd states are labels.  The forward variable
alpha_t(s) is the log-probability of all partial paths that emit frames
0..t and sit in state s at frame t:

    alpha_0(0) = y_0(blank),  alpha_0(1) = y_0(l_1)
    alpha_t(s) = logsumexp(alpha_{t-1}(s)      [self-loop, if allowed],
                           alpha_{t-1}(s - 1),
                           alpha_{t-1}(s - 2)  [skip, if allowed]) + y_t(l'_s)
    loss = -logsumexp(alpha_{T_b-1}(S'-1), alpha_{T_b-1}(S'-2))

(only state 0 ends a path when L = 0; with T_b = 0 the loss is 0 for an
empty label and +inf otherwise).

Transition rules:

* default: every state has a self-loop; the skip into label state s (odd
  s >= 3) is allowed iff l'_s != l'_{s-2}, i.e. two equal consecutive labels
  need a blank between them (otherwise they would merge).
* ``merge_repeated=False`` (TF's ``ctc_merge_repeated=False``): label states
  have no self-loop (each label is emitted by exactly one frame) and the
  skip is always allowed, since repeats are not merged and need no blank.
* ``warp_blank_labels=True`` (warp-ctc): a label state whose value equals
  the blank can never be entered by a skip.

Gradient
--------
With beta_t(s) the log-probability of the rest of the path (frames t+1 ..
T_b-1) given state s at frame t -- i.e. *excluding* the emission at t -- the
posterior occupancy of state s at frame t is exp(alpha_t(s) + beta_t(s) +
loss), and

    gamma_t(k) = sum_{s : l'_s = k} exp(alpha_t(s) + beta_t(s) + loss)
    d loss / d y_t(k) = -gamma_t(k)                 (inputs="log_probs")
    d loss / d z_t(k) = softmax(z_t)(k) - gamma_t(k)  (inputs="logits")

for t < T_b, and 0 for t >= T_b.  An infeasible sample (probability 0) has
loss +inf and a NaN gradient on its frames t < T_b.  A NaN or +inf logit, or a
frame of -inf logits, in a used frame (or a NaN or +inf log-probability of the
blank or a label class there) gives loss NaN and the same NaN gradient;
log-probabilities of classes the sample's paths never visit are not read.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["ctc_loss", "ctc_loss_and_grad", "brute_force_nll"]

NEG_INF = -np.inf


# --------------------------------------------------------------------------
# log-space helpers
# --------------------------------------------------------------------------


def _logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(sum(exp(a))) along `axis`, stable and warning-free.

    All -inf gives -inf (log 0), a NaN anywhere gives NaN.  The usual
    max-shift is skipped where the maximum is not finite: shifting by -inf
    would compute -inf - (-inf) = NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.log(np.sum(np.exp(a - shift), axis=axis, keepdims=True)) + shift
    return np.squeeze(out, axis=axis)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log_softmax over the last (class) axis (NaN for a frame holding +inf or only -inf).

    Computed as ``(z - max) - log(sum(exp(z - max)))``: subtracting
    ``max + log(sum)`` as one number would round ``log(sum)`` away once the
    logits are huge (all tied at 1e300 gave log-probabilities of 0 instead of
    ``-log C``), and softmax is shift-invariant, so the result must be too.
    """
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=-1, keepdims=True) if z.shape[-1] else np.zeros(z.shape[:-1] + (1,))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = z - m  # NaN where the max is +inf or -inf: the defined result
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _shift(v: np.ndarray, k: int) -> np.ndarray:
    """out[s] = v[s - k], with -inf (log 0) where s - k is out of range.

    k > 0 moves values to higher states (a predecessor's value seen from its
    successor); k < 0 moves them to lower states (a successor seen from its
    predecessor).
    """
    out = np.full_like(v, NEG_INF)
    n = v.shape[-1]
    if 0 < k < n:
        out[k:] = v[:-k]
    elif -n < k < 0:
        out[:k] = v[-k:]
    elif k == 0:
        out[:] = v
    return out


# --------------------------------------------------------------------------
# one sample
# --------------------------------------------------------------------------


def _extended(label: np.ndarray, blank: int) -> np.ndarray:
    """l' = (blank, l_1, blank, ..., l_L, blank)."""
    ext = np.full(2 * label.size + 1, blank, dtype=np.int64)
    ext[1::2] = label
    return ext


def _transitions(ext: np.ndarray, blank: int, merge_repeated: bool,
                 warp_blank_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the S' states, indexed by the *target* state.

    stay[s]: the self-loop s -> s is allowed.
    skip[s]: the skip s - 2 -> s is allowed.
    (The step s - 1 -> s is always allowed.)
    """
    S = ext.size
    is_label = np.arange(S) % 2 == 1
    stay = np.ones(S, dtype=bool) if merge_repeated else ~is_label
    skip = np.zeros(S, dtype=bool)
    # Only label states s >= 3 can be skipped into: skipping into a blank
    # state would jump over a label, and states 0 and 1 have no s - 2.
    if merge_repeated:
        # Equal neighbours need the blank between them, or they would merge.
        skip[3::2] = ext[3::2] != ext[1:-2:2]
    else:
        skip[3::2] = True
    if warp_blank_labels:
        skip &= ext != blank
    return stay, skip


def _forward(emit: np.ndarray, stay: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """alpha (T, S'), including the emission at each frame."""
    T, S = emit.shape
    alpha = np.full((T, S), NEG_INF)
    alpha[0, :2] = emit[0, :2]  # a path starts with the first blank or the first label
    for t in range(1, T):
        prev = alpha[t - 1]
        alpha[t] = _logsumexp(np.stack([
            np.where(stay, prev, NEG_INF),               # s     -> s
            _shift(prev, 1),                             # s - 1 -> s
            np.where(skip, _shift(prev, 2), NEG_INF),    # s - 2 -> s
        ])) + emit[t]
    return alpha


def _backward(emit: np.ndarray, stay: np.ndarray, skip: np.ndarray,
              final: np.ndarray) -> np.ndarray:
    """beta (T, S'), *excluding* the emission at each frame.

    beta_t(s) = log P(frames t+1 .. T-1 | state s at frame t), so that
    alpha_t(s) + beta_t(s) is the log-probability of all complete paths
    through state s at frame t.
    """
    T, S = emit.shape
    beta = np.full((T, S), NEG_INF)
    beta[T - 1, final] = 0.0
    for t in range(T - 2, -1, -1):
        nxt = beta[t + 1] + emit[t + 1]  # value of being in state r at frame t + 1
        # The masks are indexed by the target state r, so mask before shifting
        # the target's value back onto its source s = r, r - 1, r - 2.
        beta[t] = _logsumexp(np.stack([
            np.where(stay, nxt, NEG_INF),                # s -> s
            _shift(nxt, -1),                             # s -> s + 1
            _shift(np.where(skip, nxt, NEG_INF), -2),    # s -> s + 2
        ]))
    return beta


def _one_sample(y: np.ndarray, label: np.ndarray, blank: int, merge_repeated: bool,
                warp_blank_labels: bool) -> tuple[float, np.ndarray]:
    """(loss, d loss / d y) of one sample; y (T_b, C) holds its used frames' log-probs."""
    T, C = y.shape
    L = label.size
    if T == 0:
        # No frames: only the empty label has a (single, empty) path.
        return (0.0 if L == 0 else np.inf), np.zeros((0, C))

    ext = _extended(label, blank)
    S = ext.size
    stay, skip = _transitions(ext, blank, merge_repeated, warp_blank_labels)
    final = np.array([S - 1, S - 2] if L > 0 else [0])  # a path ends on the last label or blank
    emit = y[:, ext]  # (T, S') log-emission of each state

    alpha = _forward(emit, stay, skip)
    log_p = float(_logsumexp(alpha[T - 1, final]))
    if not np.isfinite(log_p):
        # Infeasible (log_p = -inf): loss +inf.  A NaN or a +inf log-probability
        # in a used frame is not a distribution (log_p NaN or +inf): loss NaN,
        # like the engine, rather than an accidental -inf.  Either way the
        # gradient is undefined on every used frame.
        return (np.inf if log_p == NEG_INF else np.nan), np.full((T, C), np.nan)

    beta = _backward(emit, stay, skip, final)
    # (T, S') posterior of each state.  Every frame's alpha + beta adds up to
    # log_p in exact arithmetic; normalising each frame by its own sum instead
    # keeps the rows distributions where huge log-probabilities (a class at
    # -1e30) make alpha + beta - log_p cancel catastrophically.
    # (Dividing in the linear domain: subtracting a log-sum-exp would round the
    # log of the sum away at -1e30 as well.)
    occupancy = alpha + beta
    occupancy = np.exp(occupancy - occupancy.max(axis=1, keepdims=True))
    occupancy /= occupancy.sum(axis=1, keepdims=True)
    # gamma_t(k): add up the occupancies of all states that emit class k
    # (the blank and repeated labels own several states).
    gamma = np.zeros((T, C))
    np.add.at(gamma.T, ext, occupancy.T)
    return -log_p, -gamma


# --------------------------------------------------------------------------
# batch API
# --------------------------------------------------------------------------


def _split_labels(labels, label_lengths, N: int) -> list[np.ndarray]:
    """One int64 label array per sample, from any of the accepted label forms.

    * 2-D (N, S) padded array: row n, truncated to label_lengths[n] (default S);
    * 1-D concatenated array: consecutive runs of label_lengths[n] entries
      (label_lengths may be omitted when N == 1);
    * a list/tuple of N 1-D sequences (ragged allowed), truncated to
      label_lengths[n] when given.
    """
    if isinstance(labels, (list, tuple)) and any(np.ndim(seq) > 0 for seq in labels):
        seqs = [np.asarray(seq, dtype=np.int64).reshape(-1) for seq in labels]
        if len(seqs) != N:
            raise ValueError(f"labels holds {len(seqs)} sequences but the batch has {N} samples")
        lengths = [seq.size for seq in seqs] if label_lengths is None else _ints(label_lengths)
    else:
        arr = np.asarray(labels, dtype=np.int64)
        if arr.ndim == 2:
            if arr.shape[0] != N:
                raise ValueError(f"labels has {arr.shape[0]} rows but the batch has {N} samples")
            seqs = list(arr)
            lengths = [arr.shape[1]] * N if label_lengths is None else _ints(label_lengths)
        elif arr.ndim == 1:
            if label_lengths is None:
                if N != 1:
                    raise ValueError("label_lengths is required with 1-D (concatenated) labels "
                                     f"and a batch of {N} samples")
                label_lengths = [arr.size]
            lengths = _ints(label_lengths)
            if len(lengths) != N or min(lengths, default=0) < 0 or sum(lengths) != arr.size:
                raise ValueError(f"label_lengths {lengths} do not split {arr.size} "
                                 f"concatenated labels into {N} samples")
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
            seqs = [arr[offsets[n]:offsets[n + 1]] for n in range(N)]
        else:
            raise ValueError("labels must be 2-D padded, 1-D concatenated or a list of "
                             f"sequences, got shape {arr.shape}")
    if len(lengths) != N:
        raise ValueError(f"label_lengths has {len(lengths)} entries but the batch has {N} samples")
    for n, (seq, length) in enumerate(zip(seqs, lengths)):
        if not 0 <= length <= seq.size:
            raise ValueError(f"label_lengths[{n}] = {length} is outside [0, {seq.size}]")
    return [seq[:length] for seq, length in zip(seqs, lengths)]


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def ctc_loss_and_grad(activations, labels, input_lengths=None, label_lengths=None, *,
                      blank=0, layout="TNC", inputs="logits",
                      merge_repeated=True, warp_blank_labels=False):
    """Per-sample CTC losses and the gradient of their sum, in float64.

    Parameters
    ----------
    activations : array (T, N, C) for ``layout="TNC"`` or (N, T, C) for "NTC".
    labels : 2-D (N, S) padded, 1-D concatenated (with ``label_lengths``) or
        a list of N 1-D sequences.
    input_lengths : (N,) ints in [0, T]; default T.  Frames t >= T_b are
        ignored and get gradient 0.
    label_lengths : (N,) ints; default the full rows / sequences.
    blank : class index of the blank, in [0, C).
    inputs : "logits" (log_softmax is applied over C) or "log_probs" (used
        as given; -inf entries are fine).
    merge_repeated, warp_blank_labels : transition rules, see the module
        docstring.

    Returns
    -------
    losses : (N,) float64, +inf for an infeasible sample.
    grad : float64, shaped like ``activations``: d sum(losses) / d activations,
        NaN on the used frames of an infeasible sample.
    """
    if layout not in ("TNC", "NTC"):
        raise ValueError(f"layout must be 'TNC' or 'NTC', got {layout!r}")
    if inputs not in ("logits", "log_probs"):
        raise ValueError(f"inputs must be 'logits' or 'log_probs', got {inputs!r}")
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"activations must be 3-D, got shape {x.shape}")
    tnc = x if layout == "TNC" else x.transpose(1, 0, 2)  # a view; work in (T, N, C)
    T, N, C = tnc.shape
    blank = int(blank)
    if not 0 <= blank < C:
        raise ValueError(f"blank = {blank} is outside [0, C = {C})")

    frames = [T] * N if input_lengths is None else _ints(input_lengths)
    if len(frames) != N:
        raise ValueError(f"input_lengths has {len(frames)} entries but the batch has {N} samples")
    seqs = _split_labels(labels, label_lengths, N)

    losses = np.zeros(N)
    grad = np.zeros((T, N, C))
    for n in range(N):
        Tb, label = frames[n], seqs[n]
        if not 0 <= Tb <= T:
            raise ValueError(f"input_lengths[{n}] = {Tb} is outside [0, T = {T}]")
        if label.size and (label.min() < 0 or label.max() >= C):
            # checked because a negative label would silently index from the end
            raise ValueError(f"sample {n}'s labels {label.tolist()} are not all in [0, {C})")
        z = tnc[:Tb, n]
        y = _log_softmax(z) if inputs == "logits" else z
        losses[n], dy = _one_sample(y, label, blank, merge_repeated, warp_blank_labels)
        if inputs == "logits":
            # d loss / d z = softmax(z) - gamma, and dy = -gamma (NaN stays NaN).
            grad[:Tb, n] = np.exp(y) + dy
        else:
            grad[:Tb, n] = dy
    if layout == "NTC":
        grad = np.ascontiguousarray(grad.transpose(1, 0, 2))
    return losses, grad


def ctc_loss(activations, labels, input_lengths=None, label_lengths=None, *,
             blank=0, layout="TNC", inputs="logits",
             merge_repeated=True, warp_blank_labels=False):
    """Per-sample losses (N,) float64; see :func:`ctc_loss_and_grad`."""
    return ctc_loss_and_grad(activations, labels, input_lengths, label_lengths, blank=blank,
                             layout=layout, inputs=inputs, merge_repeated=merge_repeated,
                             warp_blank_labels=warp_blank_labels)[0]


# --------------------------------------------------------------------------
# the definition itself, for tiny cases
# --------------------------------------------------------------------------


def _collapse(path, blank: int, merge_repeated: bool) -> tuple[int, ...]:
    """The label a path emits: merge consecutive repeats (if asked), then drop blanks."""
    if merge_repeated:
        path = [k for i, k in enumerate(path) if i == 0 or path[i - 1] != k]
    return tuple(k for k in path if k != blank)


def brute_force_nll(log_probs, label, blank=0, merge_repeated=True):
    """-log of the total probability of every length-T path that collapses to `label`.

    ``log_probs`` is (T, C) for one sample.  All C**T paths are enumerated,
    so this is for tiny T and C only.  Returns +inf when no path collapses
    to `label` (in particular whenever `label` contains the blank, which the
    collapse always removes).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T, C = lp.shape
    target = tuple(int(v) for v in np.asarray(label).reshape(-1))
    scores = [float(lp[np.arange(T), list(path)].sum())
              for path in itertools.product(range(C), repeat=T)
              if _collapse(path, blank, merge_repeated) == target]
    if not scores:
        return np.inf
    return -float(_logsumexp(np.array(scores)))
