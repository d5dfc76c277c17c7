"""TensorFlow's CTC signatures, on any framework's arrays.

- ``ctc_loss(labels, logits, label_length, logit_length, logits_time_major=True,
  unique=None, blank_index=None, name=None)`` mirrors ``tf.nn.ctc_loss``:
  dense padded labels with ``label_length`` (``blank_index`` defaults to 0), or a
  ``tf.SparseTensor`` (``blank_index`` required, as in TF), logits (T, B, C)
  or (B, T, C); per-sample losses (B,).  ``unique`` is accepted and ignored
  (a TPU speed hint in TF).  A negative ``blank_index`` counts from the end.
- ``ctc_loss_v1(labels, inputs=None, sequence_length=None,
  preprocess_collapse_repeated=False, ctc_merge_repeated=True,
  ignore_longer_outputs_than_inputs=False, time_major=True, logits=None)``
  mirrors ``tf.compat.v1.nn.ctc_loss``: SparseTensor labels, blank C - 1,
  ``ctc_merge_repeated=False`` (label states without self-loops, repeats need
  no blank), ``preprocess_collapse_repeated``, the length rules (more labels
  than frames is an error, or loss 0 and gradient 0 with
  ``ignore_longer_outputs_than_inputs``; an empty label sequence is an error).

float16/bfloat16 are computed in float32; float64 is supported on both paths
(TF's dense path rejects it).  Eager and inside ``tf.function``; gradients
through ``tf.GradientTape``.  On torch/jax/numpy arrays the dense signature
works the same way (a SparseTensor is TensorFlow's own).

A dense sample without a valid alignment gets TF's own finite value (its
log(1e-307) sentinel: about 707 plus a partial NLL) and gradient, from a port
of TF's dense lattice; v1/sparse follow TF's kernel (+inf with a softmax
gradient for repeat-infeasible samples, errors or 0 for too-long ones).

Where TF is undefined ctcbridge raises instead (see the divergence file):
labels outside [0, C) or equal to a non-zero dense ``blank_index`` (TF reads
them as another class).  Feasible samples always get the exact loss, also
beyond ~707 nats where TF's sentinel paths undercut the true ones.
"""

from __future__ import annotations

import functools
from functools import partial

import numpy as np

from ._bridges import bridge_for, framework_of
from ._contract import CTCCall, Prepared, Traced, as_int, factory, integral, make, shape_of
from ._natives import tensorflow as tf_native
from .errors import CTCTypeError, CTCValueError, EngineError, tf_invalid_argument

__all__ = ["ctc_loss", "ctc_loss_v1"]


def tf_errors(fn):
    """Decorator of the TF and Keras signatures: an invalid value raises TF's own
    ``tf.errors.InvalidArgumentError`` (as a ``CTCInvalidArgumentError``, also a
    ``CTCValueError``), eagerly as inside ``tf.function``, where TF's and Keras'
    CTC raise it; without tensorflow imported the ``CTCValueError`` stays."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CTCValueError as exc:
            if isinstance(exc, EngineError) or type(exc) is not CTCValueError:
                raise  # already TF's type, or another builtin the native raises
            raise tf_invalid_argument(str(exc)) from None

    return inner


def _check_batch(B):
    """TF's CTC kernel refuses an empty batch (its message)."""
    if B == 0:
        raise CTCValueError("batch_size must not be 0")


def _is_sparse(x) -> bool:
    return framework_of(x) == "tensorflow" and type(x).__name__ == "SparseTensor"


def _to_tnc(x, time_major):
    if x.ndim != 3:
        raise CTCValueError(f"logits must be 3-D, got shape {x.shape}")
    if time_major:
        return x, None
    return x.transpose(1, 0, 2), partial(np.transpose, axes=(1, 0, 2))


def _padded(rows):
    S = max((r.size for r in rows), default=0)
    labels = np.zeros((len(rows), S), dtype=np.int64)
    for n, r in enumerate(rows):
        labels[n, : r.size] = r
    return labels, np.array([r.size for r in rows], dtype=np.int64)


def _prepare_dense(logits, labels, label_length, logit_length, *, time_major, blank_index):
    # the engine reads either layout in place and writes the gradient in it; `acts`
    # is the time-major view the checks and TF's sentinel arithmetic read
    acts, _ = _to_tnc(logits, time_major)
    T, B, C = acts.shape
    _check_batch(B)
    blank = blank_index + C if blank_index < 0 else blank_index
    if not 0 <= blank < C:
        raise CTCValueError(f"blank_index = {blank_index} is outside [-C, C) with C = {C}")
    labels = integral(labels, "labels")
    label_length = integral(label_length, "label_length").reshape(-1)
    logit_length = integral(logit_length, "logit_length").reshape(-1)
    if labels.ndim != 2 or labels.shape[0] != B:
        raise CTCValueError(f"labels must be (batch={B}, S), got {labels.shape}")
    if blank != 0:  # TF rotates the blank to 0: a label equal to it becomes another class
        for n in range(B):
            used = labels[n, : max(0, min(int(label_length[n]), labels.shape[1]))]
            if (used == blank).any():
                raise CTCValueError(
                    f"label {int(np.flatnonzero(used == blank)[0])} of sample {n} equals "
                    f"blank_index {blank_index} (TF's dense path would read it as class "
                    f"{blank - 1})")
    def post(losses, grad):
        # samples without a valid alignment: TF's log(1e-307) sentinel arithmetic
        return tf_native.dense_values(losses, grad, acts, labels, logit_length, label_length,
                                      blank, time_major)

    return Prepared(logits, labels, dict(input_lengths=logit_length, label_lengths=label_length,
                                         blank=blank, layout="TNC" if time_major else "NTC",
                                         inputs="logits"),
                    post=post)


def _tf_prepare_dense(logits, labels, label_length, logit_length, *, time_major, blank_index):
    """``_prepare_dense`` with TF ops, for the TF bridge's custom-op route (tf.function).

    The engine reads either layout in place and validates labels and lengths
    itself (the same messages as the numpy path); infeasible samples (TF's
    sentinel arithmetic) and labels equal to a non-zero blank go to the numpy
    ``_prepare_dense`` through ``needs_numpy``.  Returns None (numpy path) where
    static shapes or dtypes do not settle the call.
    """
    import tensorflow as tf

    # tf.compat.dimension_value: under TF1 behaviour a static size is a Dimension
    C = tf.compat.dimension_value(logits.shape[-1]) if logits.shape.rank == 3 else None
    if C is None or labels.shape.rank != 2:
        return None
    blank = blank_index + C if blank_index < 0 else blank_index
    if not 0 <= blank < C or not all(a.dtype.is_integer
                                     for a in (labels, label_length, logit_length)):
        return None  # the numpy path raises
    label_length = tf.reshape(label_length, [-1])
    logit_length = tf.reshape(logit_length, [-1])

    def needs_numpy(losses):
        # an empty batch: the numpy path's error
        special = tf.reduce_any(tf.math.is_inf(losses) & (losses > 0)) | tf.equal(tf.size(losses), 0)
        if blank != 0:  # a label equal to the blank: the numpy path's error
            width = tf.shape(labels, out_type=tf.int64)[1]
            used = tf.range(width)[None, :] < tf.cast(label_length, tf.int64)[:, None]
            special |= tf.reduce_any(used & tf.equal(labels, tf.cast(blank, labels.dtype)))
        return special

    return Traced(logits, labels, logit_length, label_length,
                  dict(blank=blank, inputs="logits", layout="TNC" if time_major else "NTC"),
                  needs_numpy=needs_numpy)


def _prepare_sparse(logits, indices, values, dense_shape, logit_length, *, time_major, blank,
                    collapse, merge_repeated, ignore_longer):
    acts, back = _to_tnc(logits, time_major)
    T, B, C = acts.shape
    _check_batch(B)
    blank = blank + C if blank < 0 else blank
    if not 0 <= blank < C:
        raise CTCValueError(f"blank index {blank} is outside [0, C = {C})")
    rows = tf_native.sparse_rows(indices, values, dense_shape)
    if len(rows) != B:
        raise CTCValueError(f"labels has {len(rows)} rows but logits {B} samples")
    logit_length = integral(logit_length, "sequence_length").reshape(-1)
    if logit_length.shape != (B,):
        raise CTCValueError(f"sequence_length must have {B} entries, got {logit_length.size}")
    rows = tf_native.end_at_blank(rows, blank, C)
    raw_lengths = np.array([r.size for r in rows])
    for n, r in enumerate(rows):
        if r.size == 0:
            raise CTCValueError(f"Labels length is zero in batch {n}")
        if collapse and r.size:
            rows[n] = r[np.concatenate([[True], r[1:] != r[:-1]])]
    labels, lengths = _padded(rows)
    too_long = raw_lengths > logit_length  # TF's check, on the uncollapsed length
    if too_long.any() and not ignore_longer:
        n = int(np.flatnonzero(too_long)[0])
        raise CTCValueError(
            f"Not enough time for target transition sequence (required: {raw_lengths[n]}, "
            f"available: {logit_length[n]}) in batch {n}; pass "
            "ignore_longer_outputs_than_inputs=True to give such samples loss 0")

    def post(losses, grad):
        return tf_native.v1_values(losses, grad, logits, logit_length, too_long, time_major)

    return Prepared(acts, labels, dict(input_lengths=logit_length, label_lengths=lengths,
                                       blank=blank, layout="TNC", inputs="logits",
                                       merge_repeated=merge_repeated),
                    grad_back=back, post=post)


def _run(call, logits, aux):
    if len(shape_of(logits)) == 3:
        _check_batch(call.batch_size(shape_of(logits)))  # known when traced: TF raises then
    bridge = bridge_for(logits, *aux)
    return bridge.ctc(call, logits, aux)


@factory("tf.sparse")
def _sparse_factory(time_major, blank, collapse, merge, ignore):
    return CTCCall(
        prepare=partial(_prepare_sparse, time_major=time_major, blank=blank, collapse=collapse,
                        merge_repeated=merge, ignore_longer=ignore),
        batch_size=(lambda s: s[1]) if time_major else (lambda s: s[0]),
        batch_axis=1 if time_major else 0)


@factory("tf.dense")
def _dense_factory(time_major, blank):
    return CTCCall(prepare=partial(_prepare_dense, time_major=time_major, blank_index=blank),
                   batch_size=(lambda s: s[1]) if time_major else (lambda s: s[0]),
                   batch_axis=1 if time_major else 0,
                   # the TF bridge's custom-op route in tf.function (_bridges/tensorflow.py)
                   traced={"tensorflow": partial(_tf_prepare_dense, time_major=time_major,
                                                 blank_index=blank)})


def _sparse_call(labels, logits, logit_length, time_major, blank, collapse, merge, ignore):
    call = make("tf.sparse", time_major, blank, collapse, merge, ignore)
    return _run(call, logits, [labels.indices, labels.values, labels.dense_shape, logit_length])


@tf_errors
def ctc_loss(labels, logits, label_length, logit_length, logits_time_major=True, unique=None,
             blank_index=None, name=None):
    """``tf.nn.ctc_loss`` with ctcbridge's engine (see the module doc); returns (B,)."""
    del unique, name  # a TPU speed hint and an op name: no effect on the result
    if len(shape_of(logits)) != 3:
        raise CTCValueError(f"logits must be 3-D, got shape {shape_of(logits)}")
    time_major = bool(logits_time_major)
    if _is_sparse(labels):
        if blank_index is None:
            raise CTCValueError("Argument `blank_index` must be provided when labels is a "
                                "SparseTensor.")
        return _sparse_call(labels, logits, logit_length, time_major,
                            as_int(blank_index, "blank_index"), False, True, False)
    blank = 0 if blank_index is None else as_int(blank_index, "blank_index")
    call = make("tf.dense", time_major, blank)
    return _run(call, logits, [labels, label_length, logit_length])


@tf_errors
def ctc_loss_v1(labels, inputs=None, sequence_length=None, preprocess_collapse_repeated=False,
                ctc_merge_repeated=True, ignore_longer_outputs_than_inputs=False,
                time_major=True, logits=None):
    """``tf.compat.v1.nn.ctc_loss`` with ctcbridge's engine (see the module doc)."""
    if inputs is not None and logits is not None:
        raise CTCValueError("Cannot specify both `inputs` and `logits`: they are aliases")
    inputs = logits if inputs is None else inputs
    if inputs is None:
        raise CTCValueError("`inputs` (or its alias `logits`) is required")
    if not _is_sparse(labels):
        raise CTCTypeError("Expected labels (first argument) to be a SparseTensor")
    if sequence_length is None:
        raise CTCValueError("`sequence_length` is required")
    shape = shape_of(inputs)
    if len(shape) != 3:
        raise CTCValueError(f"inputs must be 3-D, got shape {shape}")
    return _sparse_call(labels, inputs, sequence_length, bool(time_major), -1,
                        bool(preprocess_collapse_repeated), bool(ctc_merge_repeated),
                        bool(ignore_longer_outputs_than_inputs))

from .tensorflow_decoding import ctc_beam_search_decoder, ctc_beam_search_decoder_v1, ctc_greedy_decoder  # noqa: E402,F401
