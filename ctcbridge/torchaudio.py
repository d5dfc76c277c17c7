"""torchaudio's CTC aligner, from ctcbridge's engine, on any framework's arrays.

- ``forced_align(log_probs, targets, input_lengths=None, target_lengths=None, blank=0)``
  mirrors ``torchaudio.functional.forced_align``: log-probabilities (1, T, C)
  (used as given), targets (1, L) int32 or int64 without the blank; returns
  ``(alignments, scores)``, both (1, T): the class of the best path at each
  frame (the targets' dtype) and the frame's log-probability of that class
  (the log-probabilities' dtype).  Like torchaudio: batch size 1, the input
  length must be T and the target length L, T >= L + repeats.  Ties follow
  torchaudio's rule, so the paths are equal wherever the best path has a
  non-zero probability.
- ``merge_tokens(tokens, scores, blank=0)`` mirrors
  ``torchaudio.functional.merge_tokens``: the spans of one path (1-D) as
  ``TokenSpan(token, start, end, score)``, ``end`` exclusive, ``score`` the
  mean of the span's frame scores.

The arrays may be torch tensors (any device: the results come back on it),
numpy, JAX or TF arrays; the results are arrays of the framework of
``log_probs``.  No gradient (torchaudio's aligner has none either).
"""

from __future__ import annotations

import numpy as np

from ._bridges import bridge_for
from .decoding import TokenSpan, as_numpy
from .decoding import forced_align as _forced_align
from .decoding import merge_tokens as _merge_tokens
from .errors import CTCError, CTCRuntimeError, CTCValueError, EngineError

__all__ = ["forced_align", "merge_tokens", "TokenSpan"]


def _lengths(value, name: str, want: int) -> None:
    """torchaudio takes the lengths only to check them: T and L exactly."""
    if value is None:
        return
    arr = as_numpy(value, name).reshape(-1)
    if arr.dtype.kind not in "iu":
        raise CTCRuntimeError(f"{name} must be int32 or int64 type, got {arr.dtype}")
    if arr.size != 1:
        raise CTCRuntimeError(f"{name} must have one entry (batch size 1), got {arr.size}")
    if int(arr[0]) != want:
        what = "input" if name == "input_lengths" else "target"
        raise CTCRuntimeError(f"{what} length mismatch: {name}[0] = {int(arr[0])}, but the "
                              f"{'log_probs have' if what == 'input' else 'targets have'} "
                              f"{want}")


def forced_align(log_probs, targets, input_lengths=None, target_lengths=None, blank=0):
    """``torchaudio.functional.forced_align`` with ctcbridge's engine:
    ``(alignments (1, T), scores (1, T))``."""
    lp = as_numpy(log_probs, "log_probs")
    tg = as_numpy(targets, "targets")
    if lp.ndim != 3:
        raise CTCRuntimeError(f"log_probs must be 3-D (batch_size, input length, num class), "
                              f"got shape {lp.shape}")
    if tg.ndim != 2:
        raise CTCRuntimeError(f"targets must be 2-D (batch_size, target length), got shape "
                              f"{tg.shape}")
    if tg.dtype not in (np.int32, np.int64):
        raise CTCRuntimeError(f"targets must be int32 or int64 type, got {tg.dtype}")
    if lp.shape[0] != 1 or tg.shape[0] != 1:
        raise CTCRuntimeError("The batch dimension for log_probs and targets must be 1 at the "
                              f"current version, got {lp.shape[0]} and {tg.shape[0]}")
    C = lp.shape[2]
    if (tg == blank).any():
        raise CTCValueError(f"targets Tensor shouldn't contain blank index {blank}. Found "
                            f"{tg.tolist()}.")
    if tg.size and (tg >= C).any():
        raise CTCValueError(f"targets values must be less than the CTC dimension {C}, got "
                            f"{int(tg.max())}")
    if tg.size and (tg < 0).any():  # undefined in torchaudio (it reads out of bounds)
        raise CTCValueError(f"targets values must be in [0, {C}), got {int(tg.min())}")
    _lengths(input_lengths, "input_lengths", lp.shape[1])
    _lengths(target_lengths, "target_lengths", tg.shape[1])
    try:
        path, scores, _ = _forced_align(lp, tg, blank=blank, layout="NTC", inputs="log_probs",
                                        pad=0)
    except EngineError:
        raise
    except CTCError as exc:  # torchaudio's C++ checks raise RuntimeError
        raise CTCRuntimeError(str(exc)) from None
    bridge = bridge_for(log_probs, targets)
    return (bridge.asarray(path.astype(tg.dtype), like=log_probs),
            bridge.asarray(scores, like=log_probs))


def merge_tokens(tokens, scores, blank=0) -> list:
    """``torchaudio.functional.merge_tokens`` with ctcbridge: a list of ``TokenSpan``."""
    tk = as_numpy(tokens, "tokens")
    sc = as_numpy(scores, "scores")
    if tk.ndim != 1 or sc.ndim != 1:
        raise CTCValueError("`tokens` and `scores` must be 1D Tensor.")
    if len(tk) != len(sc):
        raise CTCValueError("`tokens` and `scores` must be the same length.")
    return _merge_tokens(tk, sc, blank=blank)
