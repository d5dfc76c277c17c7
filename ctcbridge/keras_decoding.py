"""Keras's CTC decoders, from ctcbridge's engine (re-exported by :mod:`ctcbridge.keras`).

- ``ctc_decode(inputs, sequence_lengths, strategy="greedy", beam_width=100,
  top_paths=1, merge_repeated=True, mask_index=0)`` mirrors
  ``keras.ops.ctc_decode`` as its TensorFlow backend computes it: batch-major
  (B, T, C) logits, blank ``mask_index`` (None: C - 1); returns
  ``(decoded, scores)``, ``decoded`` int32 (top_paths, B, T) padded with -1.
  Greedy: ``scores`` (B, 1) is minus the sum of the frames' largest raw
  inputs (``tf.nn.ctc_greedy_decoder``'s); beam search: (B, top_paths),
  ``tf.nn.ctc_beam_search_decoder``'s log-probabilities, and
  ``merge_repeated`` is not applied (Keras's TF backend calls the v2 beam
  decoder, which has none).  ``scores`` is at least float32.
- ``ctc_decode_legacy(y_pred, input_length, greedy=True, beam_width=100, top_paths=1)``
  mirrors the legacy ``keras.backend.ctc_decode``: softmax *probabilities*
  (B, T, C), read as ``log(p + 1e-7)``, blank C - 1, repeats merged (TF v1's
  beam decoder); returns ``([decoded (B, T) padded with -1] per path, log_prob)``.

On any framework's arrays: the results are arrays of the framework of ``inputs``.
"""

from __future__ import annotations

import numpy as np

from ._bridges import bridge_for
from .conventions import KERAS_EPSILON  # keras.backend.epsilon()
from ._contract import as_int
from .decoding import as_numpy
from .errors import CTCValueError
from .tensorflow_decoding import _beam_numpy, _greedy_numpy

__all__ = ["ctc_decode", "ctc_decode_legacy"]


def _dense(seqs: np.ndarray, lens: np.ndarray, T: int) -> np.ndarray:
    """(K, B, T) from the decoders' (B, K, width) and (B, K): -1 past each length."""
    out = np.full((seqs.shape[1], seqs.shape[0], T), -1, dtype=np.int64)
    for k in range(seqs.shape[1]):
        for b in range(seqs.shape[0]):
            out[k, b, : lens[b, k]] = seqs[b, k, : lens[b, k]]
    return out


def _batch_major(inputs, name):
    x = as_numpy(inputs, name)
    if x.ndim != 3:
        raise CTCValueError(f"{name} must be 3-D (batch, time, classes), got shape {x.shape}")
    return x, x.transpose(1, 0, 2)


def ctc_decode(inputs, sequence_lengths, strategy="greedy", beam_width=100, top_paths=1,
               merge_repeated=True, mask_index=0):
    """``keras.ops.ctc_decode`` with ctcbridge's engine: ``(decoded, scores)``."""
    x, tnc = _batch_major(inputs, "inputs")
    if x.dtype.itemsize < 4:  # Keras computes in result_type(dtype, "float32")
        tnc = tnc.astype(np.float32)
    lengths = as_numpy(sequence_lengths, "sequence_lengths")
    C = x.shape[2]
    blank = C - 1 if mask_index is None else as_int(mask_index, "mask_index")
    if not -C <= blank < C:
        raise CTCValueError(f"mask_index = {mask_index} is outside [-{C}, {C}) (C = {C} classes)")
    blank %= C
    if strategy == "greedy":
        seqs, lens, scores = _greedy_numpy(tnc, lengths, bool(merge_repeated), blank)
    elif strategy == "beam_search":
        seqs, lens, scores = _beam_numpy(tnc, lengths, beam_width, top_paths, False, blank)
    else:
        raise CTCValueError(f"Invalid strategy {strategy}. Supported values are 'greedy' and "
                            "'beam_search'.")
    bridge = bridge_for(inputs)
    decoded = _dense(seqs, lens, x.shape[1]).astype(np.int32)
    return (bridge.asarray(decoded, like=inputs),
            bridge.asarray(scores.astype(tnc.dtype), like=inputs))


def ctc_decode_legacy(y_pred, input_length, greedy=True, beam_width=100, top_paths=1):
    """The legacy ``keras.backend.ctc_decode`` with ctcbridge's engine:
    ``(decoded, log_prob)``, ``decoded`` a list of (B, T) arrays padded with -1."""
    y, tnc = _batch_major(y_pred, "y_pred")
    eps = tnc.dtype.type(KERAS_EPSILON)
    logs = np.log(tnc + eps)
    lengths = as_numpy(input_length, "input_length").reshape(-1)
    C = y.shape[2]
    if greedy:
        seqs, lens, scores = _greedy_numpy(logs, lengths, True, C - 1)
    else:
        seqs, lens, scores = _beam_numpy(logs, lengths, beam_width, top_paths, True, C - 1)
    bridge = bridge_for(y_pred)
    decoded = _dense(seqs, lens, y.shape[1])
    return ([bridge.asarray(d, like=y_pred) for d in decoded],
            bridge.asarray(scores.astype(logs.dtype), like=y_pred))
