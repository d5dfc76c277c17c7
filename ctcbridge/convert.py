"""Turn one CTC convention's arguments into another's (the migration aid).

Every function here converts one axis on which the frameworks' CTC signatures
differ (see ``ctcbridge.conventions`` and ``ctcbridge explain FROM TO``):

- :func:`layout` -- activations between ``"TNC"``, ``"NTC"``, ``"steps"`` (a
  list of T arrays (N, C), Chainer) and ``"flat"`` ((T*N, C), row t*N + n,
  WarpCTC).
- :func:`inputs` -- between ``"logits"``, ``"log_probs"`` and ``"probs"``.
- :func:`blank_index` and :func:`move_blank` -- the blank's position
  (``"first"``, ``"last"`` or any index): the class axis is permuted and the
  labels renumbered, so the loss is unchanged.
- :class:`Labels` -- label containers: padded with lengths, padded with a
  sentinel, concatenated, sparse (indices, values, dense_shape), padding
  masks, WarpCTC's flat zero-padded vector, lists.
- :func:`lengths_to_masks`, :func:`masks_to_lengths` -- frame lengths and
  padding masks (optax's ``logit_paddings``).
- :func:`reduce` -- every signature's reduction from per-sample losses (the
  batch mean, torch's mean of loss / target length, Gluon's weights...).

Activations may be numpy, torch, jax or tensorflow arrays (the result is of
the same framework, and differentiable there); other arrays are converted
with ``numpy.asarray``.  Labels and lengths are converted as numpy arrays:
they are data, not parameters.

>>> import numpy as np
>>> from ctcbridge import convert
>>> labels = convert.Labels.from_concatenated([1, 2, 2, 3, 1], lengths=[3, 2])
>>> labels.padded(pad=-1)
array([[ 1,  2,  2],
       [ 3,  1, -1]])
>>> convert.Labels.from_sentinel(labels.padded(pad=-1), sentinel=-1) == labels
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._bridges import bridge_for, bridge_named
from .errors import CTCTypeError, CTCValueError

__all__ = [
    "LAYOUTS",
    "INPUT_KINDS",
    "REDUCTIONS",
    "layout",
    "inputs",
    "blank_index",
    "move_blank",
    "Labels",
    "lengths_to_masks",
    "masks_to_lengths",
    "reduce",
]

LAYOUTS = ("TNC", "NTC", "steps", "flat")
INPUT_KINDS = ("logits", "log_probs", "probs")
REDUCTIONS = ("none", "sum", "mean", "mean_per_label", "weighted")


# --------------------------------------------------------------- array operations
def _ops(x):
    """The bridge whose operations convert `x` (numpy's for the arrays of a framework
    whose bridge offers no conversions: they are converted as numpy arrays)."""
    bridge = bridge_for(x)
    return bridge if bridge.converts else bridge_named("numpy")


def _check(value, name, allowed):
    if value not in allowed:
        raise CTCValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


# ---------------------------------------------------------------- layouts
def layout(x, src: str, dst: str, *, batch: int | None = None):
    """Activations from layout ``src`` to ``dst``.

    ``"TNC"`` (time-major), ``"NTC"`` (batch-major), ``"steps"`` (a list of T
    arrays (N, C), Chainer's ``x``), ``"flat"`` ((T*N, C), row ``t*N + n``,
    WarpCTC's ``data``; reading it needs ``batch=N``).

    >>> x = np.arange(24.0).reshape(2, 3, 4)          # (T=2, N=3, C=4)
    >>> layout(x, "TNC", "NTC").shape
    (3, 2, 4)
    >>> flat = layout(x, "TNC", "flat")                 # (6, 4)
    >>> bool((layout(flat, "flat", "steps", batch=3)[1] == x[1]).all())
    True
    """
    _check(src, "src", LAYOUTS)
    _check(dst, "dst", LAYOUTS)
    if src == dst:
        return x
    if src == "steps":
        if not len(x):
            raise CTCValueError("a 'steps' layout needs at least one time step to know N and C")
        ops = _ops(x[0])
        tnc = ops.stack(list(x), 0)
    else:
        ops = _ops(x)
        x = ops.convert_asarray(x)
        if src == "flat":
            if batch is None:
                raise CTCValueError("reading the 'flat' layout (T*N, C) needs batch=N")
            rows, C = tuple(x.shape)
            if batch <= 0 or rows % batch:
                raise CTCValueError(f"{rows} rows of the 'flat' layout are not T * N with N = "
                                    f"{batch}")
            tnc = ops.reshape(x, (rows // batch, batch, C))
        elif len(x.shape) != 3:
            raise CTCValueError(f"activations in layout {src!r} must be 3-D, got shape "
                                f"{tuple(x.shape)}")
        else:
            tnc = x if src == "TNC" else ops.transpose(x, (1, 0, 2))
    if dst == "TNC":
        return tnc
    if dst == "NTC":
        return ops.transpose(tnc, (1, 0, 2))
    if dst == "steps":
        return ops.unstack(tnc)
    T, N, C = tuple(tnc.shape)
    return ops.reshape(tnc, (T * N, C))


# ------------------------------------------------------------ input kinds
def inputs(x, src: str, dst: str, *, eps: float = 0.0):
    """Activations from one input kind to another along the last (class) axis.

    ``"logits"`` (unnormalised; log_softmax is applied by the loss),
    ``"log_probs"`` (used as given) or ``"probs"`` (softmax outputs).
    log-probabilities are valid logits (log_softmax leaves them unchanged), so
    ``log_probs -> logits`` returns ``x`` itself.  ``probs -> *`` takes
    ``log(p + eps)``: Keras's legacy ``ctc_batch_cost`` reads its input with
    ``eps = 1e-7``; pass that to reproduce its numbers exactly.

    >>> z = np.array([[0.0, 1.0, 2.0]])
    >>> p = inputs(z, "logits", "probs")
    >>> bool(np.allclose(inputs(p, "probs", "log_probs"), inputs(z, "logits", "log_probs")))
    True
    """
    _check(src, "src", INPUT_KINDS)
    _check(dst, "dst", INPUT_KINDS)
    if src == dst or (src, dst) == ("log_probs", "logits"):
        return x
    ops = _ops(x)
    x = ops.convert_asarray(x)
    if src == "probs":
        if not eps:
            return ops.log(x)  # log-probabilities, hence valid logits too
        logits = ops.log(x + eps)  # no longer normalised: log_softmax for log_probs
        return logits if dst == "logits" else ops.class_log_softmax(logits)
    if dst == "log_probs":
        return ops.class_log_softmax(x)
    return ops.class_softmax(x)  # logits or log_probs -> probs


# ------------------------------------------------------------------- blank
def blank_index(blank, num_classes: int) -> int:
    """The blank's index from ``"first"``, ``"last"``, or an integer (negative
    counts from the end, as TF's ``blank_index``).

    >>> blank_index("last", 6), blank_index(-1, 6), blank_index(2, 6)
    (5, 5, 2)
    """
    if blank == "first":
        return 0
    if blank == "last":
        return num_classes - 1
    if isinstance(blank, (bool, np.bool_)) or not isinstance(blank, (int, np.integer)):
        raise CTCTypeError(f"blank must be 'first', 'last' or an integer, got {blank!r}")
    index = int(blank) + num_classes if blank < 0 else int(blank)
    if not 0 <= index < num_classes:
        raise CTCValueError(f"blank {blank!r} is outside [-{num_classes}, {num_classes})")
    return index


def _blank_order(src: int, dst: int, C: int) -> np.ndarray:
    """new class j holds old class order[j]: the blank moved, the rest in order."""
    order = [c for c in range(C) if c != src]
    order.insert(dst, src)
    return np.asarray(order)


def move_blank(x, labels, src, dst, *, num_classes: int | None = None):
    """Move the blank from ``src`` to ``dst`` (``"first"``, ``"last"`` or an index).

    The class axis (last) of ``x`` is permuted so that the blank lands at
    ``dst`` and the other classes keep their order; ``labels`` (a
    :class:`Labels`, or an integer array whose values outside [0, C), such as
    padding, are left alone) are renumbered to match.  The loss is unchanged.
    Returns ``(x, labels)``.  ``x`` may be ``None`` (then give
    ``num_classes``) to renumber labels only.

    >>> x = np.log(np.full((4, 1, 3), 1 / 3))
    >>> x2, lab = move_blank(x, np.array([[1, 2]]), "first", "last")
    >>> lab                                 # class 1 -> 0, 2 -> 1, blank 0 -> 2
    array([[0, 1]])
    """
    if x is None:
        if num_classes is None:
            raise CTCValueError("move_blank without activations needs num_classes")
        C = num_classes
    else:
        C = int(tuple(x.shape if not isinstance(x, (list, tuple)) else x[0].shape)[-1])
    s, d = blank_index(src, C), blank_index(dst, C)
    if s == d:
        return x, labels
    order = _blank_order(s, d, C)
    renumber = np.argsort(order)  # old class -> new class
    if x is not None:
        if isinstance(x, (list, tuple)):  # the 'steps' layout
            x = [_ops(step).take_classes(step, order) for step in x]
        else:
            x = _ops(x).take_classes(x, order)
    return x, _renumber(labels, renumber)


def _renumber(labels, renumber):
    if isinstance(labels, Labels):
        return labels.map(renumber)
    arr = np.asarray(labels)
    valid = (arr >= 0) & (arr < renumber.size)
    out = arr.copy()
    out[valid] = renumber[arr[valid]]
    return out


# ------------------------------------------------------------------ labels
def _ints(value, name) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.size and not np.array_equal(arr, np.round(arr)):
        raise CTCValueError(f"{name} holds non-integer values")
    if arr.dtype.kind not in "iuf" and arr.size:
        raise CTCTypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Labels:
    """A batch of label sequences in a neutral form, converted from and to every
    container the CTC signatures use.

    ``values`` is (N, S) int64, zero past each sequence's length; ``lengths``
    (N,) int64.  Build one with a ``from_*`` class method, read it with the
    method named after the target container.  Two ``Labels`` are equal when
    they hold the same sequences.
    """

    values: np.ndarray
    lengths: np.ndarray

    def __post_init__(self):
        values = np.asarray(self.values)
        if values.ndim != 2:
            raise CTCValueError(f"values must be (N, S), got shape {values.shape}")
        lengths = np.asarray(self.lengths).reshape(-1)
        if lengths.shape != (values.shape[0],):
            raise CTCValueError(f"lengths must have {values.shape[0]} entries, got {lengths.size}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > values.shape[1]):
            raise CTCValueError(f"lengths must lie in [0, S = {values.shape[1]}], got "
                                f"{lengths.tolist()}")
        keep = np.arange(values.shape[1])[None, :] < lengths[:, None]
        object.__setattr__(self, "values", np.where(keep, values, 0).astype(np.int64))
        object.__setattr__(self, "lengths", lengths.astype(np.int64))

    # -- constructors
    @classmethod
    def from_list(cls, sequences: Sequence[Sequence[int]]) -> "Labels":
        """From a list of sequences, one per sample."""
        seqs = [_ints(s, "labels").reshape(-1) for s in sequences]
        width = max((s.size for s in seqs), default=0)
        values = np.zeros((len(seqs), width), dtype=np.int64)
        for n, s in enumerate(seqs):
            values[n, : s.size] = s
        return cls(values, np.array([s.size for s in seqs], dtype=np.int64))

    @classmethod
    def from_padded(cls, labels, lengths=None) -> "Labels":
        """From padded (N, S) labels and their lengths (default: every row full)."""
        values = _ints(labels, "labels")
        if values.ndim != 2:
            raise CTCValueError(f"padded labels must be (N, S), got shape {values.shape}")
        if lengths is None:
            lengths = np.full(values.shape[0], values.shape[1])
        return cls(values, _ints(lengths, "lengths").reshape(-1))

    @classmethod
    def from_sentinel(cls, labels, sentinel=-1, *, rule: str = "first") -> "Labels":
        """From padded (N, S) labels whose padding is a sentinel value.

        ``rule="first"``: a sequence ends at the first sentinel (MXNet without
        ``label_lengths``: 0 with ``blank_label='first'``, -1 with ``'last'``).
        ``rule="anywhere"``: every sentinel is removed wherever it sits;
        ``sentinel="negative"`` removes every negative value (Theano's
        ``ctc``, warp-ctc); WarpCTC's zeros are ``sentinel=0``.
        """
        _check(rule, "rule", ("first", "anywhere"))
        values = _ints(labels, "labels")
        if values.ndim != 2:
            raise CTCValueError(f"sentinel-padded labels must be (N, S), got {values.shape}")
        pad = values < 0 if sentinel == "negative" else values == sentinel
        if rule == "anywhere":
            return cls.from_list([row[~p] for row, p in zip(values, pad)])
        lengths = np.where(pad.any(1), pad.argmax(1), values.shape[1])
        return cls(values, lengths)

    @classmethod
    def from_concatenated(cls, labels, lengths) -> "Labels":
        """From 1-D concatenated labels and the per-sample lengths (torch)."""
        flat = _ints(labels, "labels").reshape(-1)
        lengths = _ints(lengths, "lengths").reshape(-1)
        if lengths.size and lengths.min() < 0 or int(lengths.sum()) != flat.size:
            raise CTCValueError(f"lengths {lengths.tolist()} do not partition {flat.size} labels")
        return cls.from_list(np.split(flat, np.cumsum(lengths)[:-1]))

    @classmethod
    def from_sparse(cls, indices, values=None, dense_shape=None) -> "Labels":
        """From a sparse matrix: ``(indices (K, 2), values (K,), dense_shape)``
        or one object with those attributes (a ``tf.SparseTensor``).  Each
        row's values are read in column order."""
        if values is None:
            indices, values, dense_shape = indices.indices, indices.values, indices.dense_shape
        from ._natives.tensorflow import sparse_rows  # TF's reading (imports no TF)

        return cls.from_list(sparse_rows(np.asarray(indices), np.asarray(values),
                                          np.asarray(dense_shape)))

    @classmethod
    def from_masks(cls, labels, paddings) -> "Labels":
        """From padded labels and padding masks, 1 = padded (optax's
        ``label_paddings``; as in optax, the length is S minus the mask's sum)."""
        values = _ints(labels, "labels")
        pads = np.asarray(paddings, dtype=np.float64)
        if pads.shape != values.shape:
            raise CTCValueError(f"paddings {pads.shape} and labels {values.shape} differ in shape")
        return cls(values, (values.shape[1] - pads.sum(1)).astype(np.int64))

    @classmethod
    def from_flat(cls, labels, label_length: int, *, sentinel: int = 0) -> "Labels":
        """From WarpCTC's flat vector (N * label_length,): each sample's
        ``label_length`` slots, padded with ``sentinel`` (0, the blank), every
        sentinel removed."""
        flat = _ints(labels, "labels").reshape(-1)
        if label_length <= 0 or flat.size % label_length:
            raise CTCValueError(f"{flat.size} labels are not N * label_length = {label_length}")
        return cls.from_sentinel(flat.reshape(-1, label_length), sentinel, rule="anywhere")

    # -- readers
    @property
    def batch(self) -> int:
        return self.values.shape[0]

    def list(self) -> list:
        """One int64 array per sample."""
        return [row[:n].copy() for row, n in zip(self.values, self.lengths)]

    def padded(self, pad: int = 0, *, width: int | None = None, dtype=np.int64) -> np.ndarray:
        """(N, width) labels padded with ``pad``; width default: the longest sequence
        (at least 1, since several natives reject zero-width labels)."""
        width = self._width(width)
        out = np.full((self.batch, width), pad, dtype=dtype)
        for n, seq in enumerate(self.list()):
            out[n, : seq.size] = seq
        return out

    def sentinel(self, sentinel: int = -1, *, width: int | None = None, dtype=np.int64):
        """Padded with ``sentinel`` (MXNet/Gluon: -1, or 0 when the blank is first)."""
        return self.padded(sentinel, width=width, dtype=dtype)

    def concatenated(self, dtype=np.int64) -> np.ndarray:
        """1-D: the sequences one after another (torch; use with ``lengths``)."""
        seqs = self.list()
        return np.concatenate(seqs).astype(dtype) if seqs else np.zeros(0, dtype)

    def sparse(self, dtype=np.int64):
        """(indices (K, 2) int64, values (K,), dense_shape (2,) int64): pass them
        to ``tf.SparseTensor(*labels.sparse(np.int32))``."""
        idx = [(n, s) for n, L in enumerate(self.lengths) for s in range(L)]
        indices = np.asarray(idx, dtype=np.int64).reshape(-1, 2)
        values = self.values[indices[:, 0], indices[:, 1]].astype(dtype)
        shape = np.array([self.batch, int(self.lengths.max(initial=0))], dtype=np.int64)
        return indices, values, shape

    def masks(self, *, width: int | None = None, dtype=np.float32):
        """(labels (N, width), paddings (N, width)): optax's ``labels`` and
        ``label_paddings`` (1.0 = padded)."""
        width = self._width(width)
        pads = (np.arange(width)[None, :] >= self.lengths[:, None]).astype(dtype)
        return self.padded(0, width=width), pads

    def flat(self, label_length: int | None = None, dtype=np.int32) -> np.ndarray:
        """WarpCTC's (N * label_length,) vector, zero-padded.  A label 0 would be
        read as padding: move the blank to 0 first (see :func:`move_blank`)."""
        if any((seq == 0).any() for seq in self.list()):
            raise CTCValueError("a label 0 cannot be written in WarpCTC's zero-padded labels "
                                "(0 is its blank); move the blank to index 0 first")
        return self.padded(0, width=self._width(label_length), dtype=dtype).reshape(-1)

    def map(self, table) -> "Labels":
        """Every label renumbered through ``table`` (old class -> new class)."""
        table = np.asarray(table)
        inside = (self.values >= 0) & (self.values < table.size)  # others are kept as they are
        mapped = np.where(inside, table[np.clip(self.values, 0, table.size - 1)], self.values)
        return Labels(mapped, self.lengths)

    def _width(self, width):
        longest = int(self.lengths.max(initial=0))
        if width is None:
            return max(longest, 1)
        if width < longest:
            raise CTCValueError(f"width {width} is below the longest sequence ({longest})")
        return width

    def __eq__(self, other):
        if not isinstance(other, Labels):
            return NotImplemented
        return self.batch == other.batch and all(
            np.array_equal(a, b) for a, b in zip(self.list(), other.list()))

    __hash__ = None


# ----------------------------------------------------------------- lengths
def lengths_to_masks(lengths, width: int, dtype=np.float32) -> np.ndarray:
    """(N, width) padding masks, 1 past each length (optax's ``logit_paddings``).

    >>> lengths_to_masks([2, 3], 3)
    array([[0., 0., 1.],
           [0., 0., 0.]], dtype=float32)
    """
    lengths = _ints(lengths, "lengths").reshape(-1)
    if lengths.size and (lengths.min() < 0 or lengths.max() > width):
        raise CTCValueError(f"lengths {lengths.tolist()} outside [0, {width}]")
    return (np.arange(width)[None, :] >= lengths[:, None]).astype(dtype)


def masks_to_lengths(paddings) -> np.ndarray:
    """Lengths from padding masks (1 = padded): the number of unpadded entries.
    optax skips a padded frame wherever it sits; every other signature reads
    the first ``length`` frames, so the masks must pad a suffix (checked).

    >>> masks_to_lengths([[0, 0, 1], [0, 0, 0]])
    array([2, 3])
    """
    pads = np.asarray(paddings, dtype=np.float64)
    if pads.ndim != 2 or not np.isin(pads, (0, 1)).all():
        raise CTCValueError("paddings must be (N, T) of 0 (used) and 1 (padded)")
    lengths = (pads == 0).sum(1)
    if not (pads == lengths_to_masks(lengths, pads.shape[1], np.float64)).all():
        raise CTCValueError("paddings pad frames in the middle of a sequence: only optax skips "
                            "those; gather the used frames to the front first")
    return lengths.astype(np.int64)


# --------------------------------------------------------------- reduction
def reduce(losses, reduction: str, *, label_lengths=None, sample_weight=None, weight=None):
    """Reduce per-sample losses (N,) the way a signature does.

    ``"none"``; ``"sum"``; ``"mean"`` (batch mean: Chainer's ``'mean'``);
    ``"mean_per_label"`` (torch's ``'mean'``: the batch mean of each loss
    divided by its label length clamped to 1; needs ``label_lengths``);
    ``"weighted"`` (Gluon: ``loss * sample_weight * weight``, per sample).
    Gradients scale the same way (each sample's gradient by its factor).

    >>> reduce(np.array([2.0, 6.0]), "mean_per_label", label_lengths=[2, 3])
    1.5
    """
    _check(reduction, "reduction", REDUCTIONS)
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return float(losses.sum())
    if reduction == "mean":
        return float(losses.mean()) if losses.size else float("nan")
    if reduction == "mean_per_label":
        if label_lengths is None:
            raise CTCValueError("reduction 'mean_per_label' needs label_lengths")
        lengths = np.maximum(_ints(label_lengths, "label_lengths").reshape(-1), 1)
        return float((losses / lengths).mean()) if losses.size else float("nan")
    out = losses
    if sample_weight is not None:
        out = out * np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    return out * (1.0 if weight is None else float(weight))

