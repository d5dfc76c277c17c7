"""The canonical CTC API, numpy in and out: :func:`ctc_loss` and :func:`ctc_loss_and_grad`.

Framework-neutral: the engine's own conventions (time- or batch-major
activations, padded or concatenated labels, any blank), with the reductions
most frameworks offer.  Both are one call of :func:`ctcbridge._compute.compute`,
the core call every signature goes through.
"""

from __future__ import annotations

from typing import Literal, Sequence, Union

import numpy as np

from ._compute import _choice, compute

__all__ = ["ctc_loss", "ctc_loss_and_grad", "Layout", "Inputs", "Reduction"]

Layout = Literal["TNC", "NTC"]
Inputs = Literal["logits", "log_probs"]
Reduction = Literal["none", "sum", "mean"]
REDUCTIONS = ("none", "sum", "mean")

# what the integer arguments accept: arrays, or sequences of Python integers
IntArray = Union[np.ndarray, Sequence[int], Sequence[Sequence[int]]]


def _reduce(losses: np.ndarray, reduction: str):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum(dtype=losses.dtype)
    if losses.size == 0:
        return losses.dtype.type(np.nan)
    return losses.mean(dtype=losses.dtype)


def _canonical(activations, labels, input_lengths, label_lengths, blank, layout, inputs,
               reduction, zero_infinity, num_threads, want_grad):
    _choice(reduction, "reduction", REDUCTIONS)
    losses, grad = compute(
        activations,
        labels,
        input_lengths,
        label_lengths,
        blank=blank,
        layout=layout,
        inputs=inputs,
        infeasible="zero" if zero_infinity else "inf",
        want_grad=want_grad,
        num_threads=num_threads,
    )
    if grad is not None and reduction == "mean" and losses.size:
        grad /= grad.dtype.type(losses.size)
    return _reduce(losses, reduction), grad


def ctc_loss(
    activations: np.ndarray,
    labels: IntArray,
    input_lengths: IntArray | None = None,
    label_lengths: IntArray | None = None,
    *,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    reduction: Reduction = "none",
    zero_infinity: bool = False,
    num_threads: int = 0,
) -> np.ndarray:
    """CTC negative log-likelihood, numpy in and out.

    Parameters
    ----------
    activations : array (T, N, C) for ``layout="TNC"`` or (N, T, C) for ``"NTC"``
        Unnormalised logits (``inputs="logits"``; log-softmax is applied
        inside) or per-frame log-probabilities (``inputs="log_probs"``).
        float32 and float64 are kept; other float dtypes are computed in
        float32 (float64 for wider ones) and cast back.
    labels : int array (N, S) padded, or 1-D concatenated
        Padded rows are read up to ``label_lengths[n]``; concatenated labels
        need ``label_lengths`` (unless N = 1).  Any value in [0, C).
    input_lengths, label_lengths : int sequences of length N, optional
        Default: T frames, S labels for every sample.
    blank : int in [0, C)
    reduction : ``"none"`` (per-sample losses, shape (N,)), ``"sum"`` or
        ``"mean"`` (batch mean).
    zero_infinity : bool
        Infeasible samples give loss 0 (and gradient 0) instead of +inf.
    num_threads : int
        Engine threads over the batch; 0 uses every core available.

    Examples
    --------
    >>> import numpy as np, ctcbridge
    >>> x = np.zeros((4, 1, 3), dtype=np.float32)      # T=4, N=1, C=3
    >>> loss = ctcbridge.ctc_loss(x, [[1, 2]])
    >>> loss.shape, loss.dtype
    ((1,), dtype('float32'))
    """
    return _canonical(activations, labels, input_lengths, label_lengths, blank, layout, inputs,
                      reduction, zero_infinity, num_threads, want_grad=False)[0]


def ctc_loss_and_grad(
    activations: np.ndarray,
    labels: IntArray,
    input_lengths: IntArray | None = None,
    label_lengths: IntArray | None = None,
    *,
    blank: int = 0,
    layout: Layout = "TNC",
    inputs: Inputs = "logits",
    reduction: Reduction = "none",
    zero_infinity: bool = False,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(loss, grad)``: :func:`ctc_loss` and its gradient w.r.t. ``activations``.

    Same arguments as :func:`ctc_loss`.  ``grad`` has the shape and dtype of
    ``activations``: ``softmax - gamma`` for logits, the exact ``-gamma`` for
    log-probabilities, 0 on frames past each input length.  It is the
    gradient of the reduced loss: of the sum of the per-sample losses for
    ``"none"`` and ``"sum"``, divided by N for ``"mean"``.  An infeasible
    sample has loss +inf and gradient NaN (on its frames) unless
    ``zero_infinity``.
    """
    return _canonical(activations, labels, input_lengths, label_lengths, blank, layout, inputs,
                      reduction, zero_infinity, num_threads, want_grad=True)
