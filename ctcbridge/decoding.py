"""Alignment and decoding, numpy in and out: the rest of CTC from the loss's engine.

- :func:`forced_align`: the best path (Viterbi over the loss's lattice), a
  class per frame and the frame's log-probability of it;
  :func:`merge_tokens` turns a path into token spans.
- :func:`posteriors`: gamma_t(k), the per-frame posterior occupancy of each
  class (the occupancies of the loss gradient).
- :func:`decode_greedy`: best-path decoding, repeats merged or not.
- :func:`decode_beam`: CTC prefix beam search without a language model.

Same conventions as :func:`ctcbridge.ctc_loss`: time-major (T, N, C) or
batch-major (N, T, C) activations, logits or log-probabilities, any blank,
padded (N, S) or concatenated labels, optional lengths, the same validation
and errors.  Ties are broken by the engine's documented rules
(``docs/c_api.md``, "Alignment and decoding"): torchaudio's in the Viterbi
recursion, the smallest class in greedy decoding, score then lexicographic
order in the beam.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import _engine
from ._compute import (
    _NATIVE,
    _INT32_MAX,
    _Labels,
    _as_int,
    _common_arguments,
    _int64,
    _int64_copy_bytes,
    _int_array,
    _lengths,
    _needs_copy,
    _ptr,
    _strides,
    check_memory,
)
from ._options import INPUT_KINDS
from .canonical import Inputs, IntArray, Layout
from .errors import CTCValueError

__all__ = ["forced_align", "merge_tokens", "posteriors", "decode_greedy", "decode_beam",
           "Alignment", "Decoded", "TokenSpan"]


class Alignment(NamedTuple):
    """What :func:`forced_align` returns, each (N, T)."""

    path: np.ndarray  # int64: the class of the best path at each frame; pad past the input
    scores: np.ndarray  # the frame's log-probability of that class; 0 past the input
    label_index: np.ndarray  # int64: the position in [0, L) of the label, -1 on blanks; pad


class Decoded(NamedTuple):
    """What the decoders return: (N, T), (N,), (N,) greedy; (N, K, T), (N, K), (N, K) beam."""

    sequences: np.ndarray  # int64: the labels, then pad
    lengths: np.ndarray  # int64
    scores: np.ndarray  # log-probabilities: of the best path (greedy), of the prefix (beam)


@dataclass
class TokenSpan:
    """A token's frames ``[start, end)`` and its mean frame score (torchaudio's TokenSpan)."""

    token: int
    start: int
    end: int
    score: float

    def __len__(self) -> int:
        return self.end - self.start


# ------------------------------------------------------------------ the input


class _Input:
    """The checked, converted arrays of one call, their ctypes input struct, and
    the output helpers (the arrays stay referenced as long as this object)."""

    def __init__(self, activations, labels, input_lengths, label_lengths, *, blank, layout,
                 inputs, num_threads, with_labels: bool, workspace) -> None:
        (acts, dt, self.out_dtype, (T, N, C), (self.t_ax, self.n_ax), blank,
         num_threads) = _common_arguments(activations, layout, inputs, blank, num_threads)
        labs = _Labels(labels, label_lengths, N) if with_labels else None
        in_len = _lengths(input_lengths, "input_lengths", N)
        max_input = max(0, min(int(in_len.max()) if in_len is not None and in_len.size else T, T))
        max_label = labs.longest() if labs is not None else 0
        threads = min(num_threads or _threads_available(), max(N, 1))
        copies = ((acts.size * dt.itemsize if _needs_copy(acts, dt) else 0)
                  + (_int64_copy_bytes(labs.values) + 8 * N * max_label if labs else 0)
                  + 40 * N + threads * workspace(max_input, 2 * max_label + 1, C))
        check_memory(max_input, 0, T, N, C, num_threads, False, dt.itemsize, copies)

        if _needs_copy(acts, dt):
            acts = np.array(acts, dtype=dt)  # a converted, aligned, native copy
        self.acts, self.dtype = acts, dt
        self.T, self.N, self.C, self.blank = T, N, C, blank
        self.in_len = None if in_len is None else _int64(in_len)
        self.values = _int64(labs.values) if labs is not None else None
        self.lab_len = None if labs is None or labs.lengths is None else _int64(labs.lengths)
        self.cells = N * max_input * (2 * max_label + 1 + C)
        self.struct = _engine.DecodeInput(
            dtype=_NATIVE[dt],
            label_format=labs.format if labs is not None else _engine.LABELS_PADDED,
            max_time=T, batch=N, alphabet=C,
            activations=acts.ctypes.data,
            act_strides=_strides(acts, self.t_ax, self.n_ax),
            input_lengths=_ptr(self.in_len),
            labels=_ptr(self.values),
            label_stride=labs.stride if labs is not None else 0,
            label_count=self.values.size if self.values is not None else 0,
            label_lengths=_ptr(self.lab_len),
        )
        self.options = _engine.default_decode_options()
        self.options.blank = blank
        self.options.input_kind = INPUT_KINDS[inputs]
        self.options.num_threads = num_threads

    def floats(self, *shape) -> np.ndarray:
        return np.empty(shape, dtype=self.dtype)

    def result(self, arr: np.ndarray) -> np.ndarray:
        """A floating output in the activations' own dtype (float16 stays float16)."""
        return arr if arr.dtype == self.out_dtype else arr.astype(self.out_dtype)

    def run(self, name: str, *outputs) -> None:
        _engine.call_decode(name, self.struct, self.options, *outputs, cells=self.cells)


def _threads_available() -> int:
    import os

    return os.cpu_count() or 1


_P_INT64 = ctypes.POINTER(ctypes.c_int64)


def _p64(arr: np.ndarray | None) -> Any:
    """An int64 array's pointer (NULL for None): a cast of its address, which costs
    less than ``arr.ctypes.data_as`` on the small calls where it shows."""
    return None if arr is None else ctypes.cast(arr.ctypes.data, _P_INT64)


def _pad(pad) -> int:
    pad = _as_int(pad, "pad")
    if not np.iinfo(np.int64).min <= pad <= np.iinfo(np.int64).max:
        raise CTCValueError(f"pad = {pad} is outside the int64 range")
    return pad


# Workspace per engine thread (docs/c_api.md), S = 2 L + 1 lattice states; the
# aligner keeps J = min(L + 1, C) classes per frame.
def _align_workspace(T, S, C):
    return 8 * T * min((S + 1) // 2, C) + T * S + 56 * S


def _posterior_workspace(T, S, C):
    return 8 * (T * min((S + 1) // 2, C) + T * S + C) + 40 * S


# ------------------------------------------------------------------ the API


def forced_align(
    activations: np.ndarray,
    labels: IntArray,
    input_lengths: IntArray | None = None,
    label_lengths: IntArray | None = None,
    *,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    merge_repeated: bool = True,
    pad: int = -1,
    num_threads: int = 0,
) -> Alignment:
    """The most probable alignment of each sample's labels: ``Alignment(path,
    scores, label_index)``, each (N, T).

    The Viterbi recursion (max instead of the loss's sum) over the lattice
    ``(blank, l_1, blank, ..., l_L, blank)``.  ``path[n, t]`` is the class at
    frame t, ``scores[n, t]`` the frame's log-probability of it (their sum is
    the path's log-probability; torchaudio's ``scores``) and
    ``label_index[n, t]`` the position of the label occupied (-1 on blank
    frames), which tells repeated tokens apart.  Frames past
    ``input_lengths[n]`` get ``pad`` (scores 0).

    Arguments as for :func:`ctcbridge.ctc_loss`; ``merge_repeated=False``
    aligns on TF v1's lattice (label states without self-loops).  Ties follow
    torchaudio's rule (``docs/decoding.md``).

    Raises :class:`~ctcbridge.CTCValueError` for a label equal to the blank
    and for a sample with fewer frames than its labels need (L plus one per
    repeat), naming the sample.
    """
    inp = _Input(activations, labels, input_lengths, label_lengths, blank=blank, layout=layout,
                 inputs=inputs, num_threads=num_threads, with_labels=True,
                 workspace=_align_workspace)
    inp.options.flags = 0 if merge_repeated else _engine.FLAG_NO_MERGE_REPEATED
    inp.options.pad = _pad(pad)
    path = np.empty((inp.N, inp.T), dtype=np.int64)
    index = np.empty((inp.N, inp.T), dtype=np.int64)
    scores = inp.floats(inp.N, inp.T)
    inp.run("ctcb_forced_align", _p64(path), scores.ctypes.data, _p64(index))
    return Alignment(path, inp.result(scores), index)


def merge_tokens(
    path: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    blank: int = 0,
    label_index: Sequence[int] | np.ndarray | None = None,
) -> list[TokenSpan]:
    """The token spans of one sample's path (1-D): each run of a non-blank
    class as ``TokenSpan(token, start, end, score)``, frames ``[start, end)``,
    ``score`` the mean of its frames' scores (torchaudio's ``merge_tokens``).

    Frames holding a negative value (the ``pad`` of :func:`forced_align`)
    end the path.  With ``label_index`` (from :func:`forced_align`) a run of
    one class is split where the label position changes: on TF v1's lattice
    (``merge_repeated=False``) two equal labels may follow each other without
    a blank between them.
    """
    tokens = _int_array(path, "path")
    if tokens.ndim != 1:
        raise CTCValueError(f"path must be 1-D (one sample's frames), got shape {tokens.shape}")
    values = np.asarray(scores)
    if values.shape != tokens.shape:
        raise CTCValueError(f"scores must have the shape of path {tokens.shape}, got "
                            f"{values.shape}")
    blank = _as_int(blank, "blank")
    where = None
    if label_index is not None:
        where = _int_array(label_index, "label_index")
        if where.shape != tokens.shape:
            raise CTCValueError(f"label_index must have the shape of path {tokens.shape}, got "
                                f"{where.shape}")
    stop = np.flatnonzero(tokens < 0)
    end = int(stop[0]) if stop.size else tokens.size
    tokens = tokens[:end].astype(np.int64)
    # a span starts where the class (or the label position) changes
    key = tokens if where is None else np.stack([tokens, where[:end].astype(np.int64)])
    change = np.ones(end, dtype=bool)
    if end > 1:
        diff = key[..., 1:] != key[..., :-1]
        change[1:] = diff if diff.ndim == 1 else diff.any(axis=0)
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], end)
    return [TokenSpan(int(tokens[s]), int(s), int(e), float(values[s:e].mean()))
            for s, e in zip(starts, ends) if tokens[s] != blank]


def posteriors(
    activations: np.ndarray,
    labels: IntArray,
    input_lengths: IntArray | None = None,
    label_lengths: IntArray | None = None,
    *,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    merge_repeated: bool = True,
    warp_blank_labels: bool = False,
    num_threads: int = 0,
) -> np.ndarray:
    """gamma_t(k): the posterior probability that the lattice of each sample's
    labels is in a state of class k at frame t, shaped and laid out like
    ``activations`` (each used row sums to 1; rows past the input length are
    0; an infeasible sample gets NaN rows).

    These are the occupancies the loss gradient computes (the gradient w.r.t.
    logits is ``softmax - gamma``).  Arguments as for :func:`ctcbridge.ctc_loss`;
    ``merge_repeated`` and ``warp_blank_labels`` choose the lattice as for
    the signatures (TF v1, warp-ctc).
    """
    inp = _Input(activations, labels, input_lengths, label_lengths, blank=blank, layout=layout,
                 inputs=inputs, num_threads=num_threads, with_labels=True,
                 workspace=_posterior_workspace)
    inp.options.flags = ((0 if merge_repeated else _engine.FLAG_NO_MERGE_REPEATED)
                         | (_engine.FLAG_WARP_BLANK_LABELS if warp_blank_labels else 0))
    post = inp.floats(*inp.acts.shape)
    inp.run("ctcb_posteriors", post.ctypes.data, _strides(post, inp.t_ax, inp.n_ax))
    return inp.result(post)


def decode_greedy(
    activations: np.ndarray,
    input_lengths: IntArray | None = None,
    *,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    merge_repeated: bool = True,
    pad: int = -1,
    num_threads: int = 0,
) -> Decoded:
    """Best-path decoding: ``Decoded(sequences (N, T), lengths (N,), scores (N,))``.

    Per frame the class of the largest activation (ties: the smallest
    class), then runs of equal classes merged (unless ``merge_repeated`` is
    False, TF v1's option), then blanks dropped; ``sequences`` is padded with
    ``pad``.  ``scores`` is the log-probability of the best path, the sum
    over the used frames of the chosen class's log-probability.
    """
    inp = _Input(activations, None, input_lengths, None, blank=blank, layout=layout,
                 inputs=inputs, num_threads=num_threads, with_labels=False,
                 workspace=lambda T, S, C: 0)
    inp.options.merge_repeated = 1 if merge_repeated else 0
    inp.options.pad = _pad(pad)
    seqs = np.empty((inp.N, inp.T), dtype=np.int64)
    lengths = np.empty(inp.N, dtype=np.int64)
    scores = inp.floats(inp.N)
    inp.run("ctcb_decode_greedy", _p64(seqs), _p64(lengths), scores.ctypes.data)
    return Decoded(seqs, lengths, inp.result(scores))


def decode_beam(
    activations: np.ndarray,
    input_lengths: IntArray | None = None,
    *,
    beam_width: int = 100,
    top_paths: int = 1,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    pad: int = -1,
    num_threads: int = 0,
) -> Decoded:
    """CTC prefix beam search without a language model: ``Decoded(sequences
    (N, K, T), lengths (N, K), scores (N, K))`` for the K = ``top_paths`` best
    label sequences, best first.

    Each prefix keeps the probability of the paths collapsing to it that end
    in a blank and in a label; the ``beam_width`` best prefixes survive each
    frame.  ``scores`` is the log of a prefix's probability (the sum over the
    beam's paths that collapse to it).  Order: score descending, equal scores
    by the label sequences in lexicographic order.  Paths beyond the prefixes
    the beam holds get length 0, ``pad`` and score -inf.

    Raises :class:`~ctcbridge.CTCValueError` when ``beam_width < 1`` or
    ``top_paths`` is outside [1, beam_width].
    """
    beam_width = _as_int(beam_width, "beam_width")
    top_paths = _as_int(top_paths, "top_paths")
    if not 1 <= beam_width <= _INT32_MAX:
        raise CTCValueError(f"beam_width = {beam_width} must be at least 1")
    if not 1 <= top_paths <= beam_width:
        raise CTCValueError(f"top_paths = {top_paths} must be in [1, beam_width = {beam_width}]")
    B = beam_width
    inp = _Input(activations, None, input_lengths, None, blank=blank, layout=layout,
                 inputs=inputs, num_threads=num_threads, with_labels=False,
                 workspace=lambda T, S, C: 8 * C + 56 * (1 + T * B) + 48 * B * C + 32 * B)
    inp.options.beam_width = beam_width
    inp.options.top_paths = top_paths
    inp.options.pad = _pad(pad)
    seqs = np.empty((inp.N, top_paths, inp.T), dtype=np.int64)
    lengths = np.empty((inp.N, top_paths), dtype=np.int64)
    scores = inp.floats(inp.N, top_paths)
    inp.run("ctcb_decode_beam", _p64(seqs), _p64(lengths), scores.ctypes.data)
    return Decoded(seqs, lengths, inp.result(scores))


# ------------------------------------------------- for the signature modules


def as_numpy(x: Any, name: str) -> np.ndarray:
    """A framework's array (torch, TF, JAX... any device) or a Python value as numpy,
    for the decoders, which need no gradient: a torch tensor is detached and
    moved to the host, the others go through ``np.asarray``."""
    if type(x).__module__.split(".", 1)[0] == "torch":
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # TF eager tensors
        return np.asarray(x.numpy())
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise CTCValueError(f"{name} could not be read as an array: {exc}") from None


def collapse_repeated(sequences: np.ndarray, lengths: np.ndarray, pad: int) -> tuple:
    """``(sequences, lengths)`` with the runs of equal labels of each sequence
    (the last axis, up to its length) merged: TF v1's ``merge_repeated`` applied
    to beam search's prefixes after the search."""
    seqs = np.full_like(sequences, pad)
    out_len = np.zeros_like(lengths)
    for idx in np.ndindex(*lengths.shape):
        row = sequences[idx][: lengths[idx]]
        keep = np.ones(row.size, dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        kept = row[keep]
        seqs[idx][: kept.size] = kept
        out_len[idx] = kept.size
    return seqs, out_len
