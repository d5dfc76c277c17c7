"""TensorFlow's CTC decoders, from ctcbridge's engine (re-exported by
:mod:`ctcbridge.tensorflow`).

- ``ctc_greedy_decoder(inputs, sequence_length, merge_repeated=True, blank_index=None)``
  mirrors ``tf.nn.ctc_greedy_decoder`` (also ``tf.compat.v1.nn``'s, the same
  function): time-major (T, B, C) logits, blank ``blank_index`` (default
  C - 1, negative values count from C); returns ``([decoded], neg_sum_logits)``
  with ``decoded`` a ``tf.SparseTensor`` of int64 labels (dense shape
  (B, longest decoded)) and ``neg_sum_logits`` (B, 1): minus the sum over the
  frames of the largest *raw* input (TF does not normalise).
- ``ctc_beam_search_decoder(inputs, sequence_length, beam_width=100, top_paths=1)``
  mirrors ``tf.nn.ctc_beam_search_decoder``: blank C - 1, ``top_paths``
  SparseTensors and ``log_probabilities`` (B, top_paths): the log of each
  prefix's probability under softmax(inputs), the beam's sum over the paths
  that collapse to it (measured with TF 2.21).
- ``ctc_beam_search_decoder_v1(..., merge_repeated=True)`` mirrors
  ``tf.compat.v1.nn.ctc_beam_search_decoder``: with ``merge_repeated`` TF
  merges runs of equal labels in each returned prefix after the search
  ("a", blank, "a" is returned as "a").

The inputs may be any framework's arrays (they are read as numpy: decoding
has no gradient); the results are TensorFlow's types, as the natives'.  In a
``tf.function`` the engine runs through ``tf.numpy_function``.  The beams can differ from TF's where TF's pruning ties or its
unspecified order of equal totals decide (``docs/decoding.md``).
"""

from __future__ import annotations

import numpy as np

from ._contract import as_int
from .decoding import as_numpy, collapse_repeated, decode_beam, decode_greedy
from .errors import CTCValueError

__all__ = ["ctc_greedy_decoder", "ctc_beam_search_decoder", "ctc_beam_search_decoder_v1"]


def _inputs(inputs, sequence_length):
    x = as_numpy(inputs, "inputs")
    if x.ndim != 3:
        raise CTCValueError(f"inputs must be 3-D (max_time, batch_size, num_classes), got "
                            f"shape {x.shape}")
    lengths = as_numpy(sequence_length, "sequence_length")
    if lengths.ndim != 1:
        raise CTCValueError(f"sequence_length must be 1-D (batch_size,), got shape "
                            f"{lengths.shape}")
    return x, lengths


def _components(seqs: np.ndarray, lens: np.ndarray, scores: np.ndarray, dtype) -> list:
    """Per path k of (B, K, T) sequences the SparseTensor's indices, values and dense
    shape (B, longest), then the scores in ``dtype``: the decoders' outputs as arrays."""
    out = []
    for k in range(seqs.shape[1]):
        rows, cols = np.nonzero(np.arange(seqs.shape[2])[None, :] < lens[:, k, None])
        width = int(lens[:, k].max()) if lens.size else 0
        out += [np.stack([rows, cols], axis=1).astype(np.int64).reshape(-1, 2),
                seqs[rows, k, cols].astype(np.int64), np.array([seqs.shape[0], width], np.int64)]
    return out + [scores.astype(dtype)]


def _run(decode, inputs, sequence_length, paths: int):
    """``(decoded SparseTensors, scores)`` of ``decode(x, lengths) -> (sequences (B, K, T),
    lengths (B, K), scores)`` on numpy; in a graph (tf.function) through
    ``tf.numpy_function``, as TF's own decoders run there too."""
    import tensorflow as tf

    def numpy_call(x, lengths):
        x, lengths = _inputs(x, lengths)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        return _components(*decode(x, lengths), dtype)

    if tf.executing_eagerly():
        parts = [tf.constant(p) for p in numpy_call(inputs, sequence_length)]
    else:
        inputs = tf.convert_to_tensor(inputs)
        dtype = inputs.dtype if inputs.dtype in (tf.float32, tf.float64) else tf.float32
        parts = tf.numpy_function(numpy_call, [inputs, sequence_length],
                                  [tf.int64] * (3 * paths) + [dtype], stateful=False)
        for k in range(paths):
            parts[3 * k].set_shape([None, 2])
            parts[3 * k + 1].set_shape([None])
            parts[3 * k + 2].set_shape([2])
        parts[-1].set_shape([inputs.shape[1], None])
    decoded = [tf.SparseTensor(*parts[3 * k: 3 * k + 3]) for k in range(paths)]
    return decoded, parts[-1]


def _greedy_numpy(x, lengths, merge_repeated: bool, blank: int):
    """TF's greedy decoder on numpy (T, B, C): (sequences (B, 1, T), lengths (B, 1),
    neg_sum_logits (B, 1) float64)."""
    # TF's argmax is of the raw inputs, its score minus the sum of their maxima:
    # the engine's greedy score of the inputs read as log-probabilities, negated
    d = decode_greedy(x, lengths, blank=blank, inputs="log_probs", merge_repeated=merge_repeated)
    return d.sequences[:, None], d.lengths[:, None], -d.scores.astype(np.float64)[:, None]


def _beam_numpy(x, lengths, beam_width, top_paths, merge_repeated: bool, blank: int):
    """TF's beam decoder on numpy (T, B, C) (its blank is C - 1; Keras moves its
    mask_index there): (sequences (B, K, T), lengths (B, K), log-probs (B, K) float64)."""
    # TF's log-probabilities are of the prefixes under softmax(x) (measured with
    # TF 2.21): the engine's scores of the inputs as logits
    d = decode_beam(x, lengths, beam_width=beam_width, top_paths=top_paths, blank=blank)
    seqs, lens = d.sequences, d.lengths
    short = np.isneginf(d.scores) & (lens == 0)  # paths the beam does not hold
    if short.any():
        n = int(np.flatnonzero(short.any(axis=1))[0])
        raise CTCValueError(
            f"Less leaves in the beam search than requested: top_paths = {top_paths} but the "
            f"beam of sample {n} holds {int((~short[n]).sum())} label sequence(s) "
            f"(sequence_length[{n}] = {int(np.asarray(lengths)[n])})")
    if merge_repeated:
        seqs, lens = collapse_repeated(seqs, lens, -1)
    return seqs, lens, d.scores.astype(np.float64)


def ctc_greedy_decoder(inputs, sequence_length, merge_repeated=True, blank_index=None):
    """``tf.nn.ctc_greedy_decoder`` with ctcbridge's engine: ``([decoded], neg_sum_logits)``."""

    def decode(x, lengths):
        C = x.shape[2]
        blank = C - 1 if blank_index is None else as_int(blank_index, "blank_index")
        if not -C <= blank < C:
            raise CTCValueError(f"blank_index = {blank_index} is outside [-{C}, {C}) "
                                f"(C = {C} classes)")
        return _greedy_numpy(x, lengths, bool(merge_repeated), blank % C)

    return _run(decode, inputs, sequence_length, 1)


def _beam(inputs, sequence_length, beam_width, top_paths, merge_repeated):
    def decode(x, lengths):
        return _beam_numpy(x, lengths, beam_width, top_paths, merge_repeated, x.shape[2] - 1)

    return _run(decode, inputs, sequence_length, int(top_paths))


def ctc_beam_search_decoder(inputs, sequence_length, beam_width=100, top_paths=1):
    """``tf.nn.ctc_beam_search_decoder`` with ctcbridge's engine:
    ``(decoded, log_probabilities)``, ``top_paths`` SparseTensors."""
    return _beam(inputs, sequence_length, beam_width, top_paths, merge_repeated=False)


def ctc_beam_search_decoder_v1(inputs, sequence_length, beam_width=100, top_paths=1,
                               merge_repeated=True):
    """``tf.compat.v1.nn.ctc_beam_search_decoder`` with ctcbridge's engine."""
    return _beam(inputs, sequence_length, beam_width, top_paths, bool(merge_repeated))
