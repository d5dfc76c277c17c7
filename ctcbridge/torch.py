"""PyTorch's CTC signature: ``ctc_loss`` and ``CTCLoss``, on any framework's arrays.

Mirrors ``torch.nn.functional.ctc_loss(log_probs, targets, input_lengths,
target_lengths, blank=0, reduction='mean', zero_infinity=False)`` and
``torch.nn.CTCLoss(blank=0, reduction='mean', zero_infinity=False)``:

- ``log_probs`` (T, N, C) log-probabilities (or unbatched (T, C)), used as
  given; the gradient is the exact ``-gamma`` (torch returns
  ``exp(log_probs) - gamma``, which equals it only through a ``log_softmax``).
- ``targets`` padded (N, S) (entries past ``target_lengths`` ignored) or
  concatenated 1-D with exactly ``sum(target_lengths)`` entries (as torch
  requires); any integer (or float, cast like torch) dtype.
- lengths: integer tensors, arrays, tuples or lists.
- ``reduction``: 'none' (N,), 'sum', 'mean' = mean over the batch of each
  loss divided by its target length clamped to at least 1.
- ``zero_infinity``: infinite losses (infeasible samples) and their gradients
  become 0 (they still count in the mean's denominator).

Invalid values raise :class:`ctcbridge.errors.CTCRuntimeError`, a
``RuntimeError`` like torch's (and a ``ValueError``), empty ``log_probs`` (N,
T or C of 0) included; a bad ``reduction`` a ``ValueError`` with torch's
message.  Works on torch tensors (autograd,
``gradcheck`` with batched gradients, ``torch.compile(fullgraph=True)``,
``torch.autocast``'s float32 policy, ``torch.func``; second derivatives raise
as torch's do; device tensors are computed on the host), numpy, jax and
tensorflow arrays; the result is of the activations' framework.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, as_int, factory, integral, make, reraise_as, shape_of
from .errors import CTCRuntimeError, CTCValueError

__all__ = ["ctc_loss", "CTCLoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _prepare(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             unbatched):
    err = CTCRuntimeError
    if log_probs.ndim != (2 if unbatched else 3):
        raise err(f"log_probs must be 2-D (T, C) or 3-D (T, N, C), got shape {log_probs.shape}")
    if targets.dtype.kind == "f":  # torch casts targets to long
        targets = targets.astype(np.int64)
    targets = integral(targets, "targets", err)
    input_lengths = integral(input_lengths, "input_lengths", err).reshape(-1)
    target_lengths = integral(target_lengths, "target_lengths", err).reshape(-1)
    grad_back = None
    if unbatched:  # one sample; targets stay 1-D concatenated or (1, S) padded
        log_probs = log_probs[:, None, :]
        grad_back = partial(np.squeeze, axis=1)
    N = log_probs.shape[1]
    for name, arr in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if arr.shape != (N,):
            raise err(f"{name} must have {N} entries (the batch size), got {arr.size}")
    if targets.ndim == 1:  # concatenated: exactly sum(target_lengths) entries, as in torch
        total = int(target_lengths[target_lengths > 0].sum())
        if total != targets.size:
            raise err(f"Expected tensor to have size {total} at dimension 0, but got size "
                      f"{targets.size} for argument #2 'targets' (the sum of target_lengths)")
    elif targets.ndim != 2 or targets.shape[0] != N:
        raise err(f"targets must be (N={N}, S) padded or 1-D concatenated, got {targets.shape}")
    return Prepared(
        log_probs,
        targets,
        dict(input_lengths=input_lengths, label_lengths=target_lengths, blank=blank,
             layout="TNC", inputs="log_probs", infeasible="zero" if zero_infinity else "inf"),
        grad_back=grad_back,
    )


@factory("torch.ctc_loss")
def _call(blank, zero_infinity, unbatched):
    return CTCCall(prepare=partial(_prepare, blank=blank, zero_infinity=zero_infinity,
                                   unbatched=unbatched),
                   batch_size=(lambda s: 1) if unbatched else (lambda s: s[1]),
                   batch_axis=None if unbatched else 1, full_precision_only=True)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    """``torch.nn.functional.ctc_loss`` with ctcbridge's engine (see the module doc)."""
    if reduction not in _REDUCTIONS:  # a ValueError in torch, not its RuntimeError
        raise CTCValueError(f"{reduction} is not a valid value for reduction")
    return _ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, reduction,
                     zero_infinity)


@reraise_as(CTCRuntimeError)
def _ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, reduction,
              zero_infinity):
    blank = as_int(blank, "blank")
    shape = shape_of(log_probs)
    if 0 in shape:  # torch checks this first (before the blank's range, with C = 0 too)
        raise CTCRuntimeError(f"log_probs tensor must not be empty (shape {tuple(shape)}: an "
                              "empty batch, no frames or no classes)")
    unbatched = len(shape) == 2
    if len(shape) in (2, 3) and shape[-1] is not None and not 0 <= blank < shape[-1]:
        raise CTCRuntimeError(f"blank must be in label range (blank = {blank}, C = {shape[-1]})")
    call = make("torch.ctc_loss", blank, bool(zero_infinity), unbatched)
    bridge = bridge_for(log_probs, targets, input_lengths, target_lengths)
    if isinstance(input_lengths, (list, tuple)):
        input_lengths = np.asarray(input_lengths)
    if isinstance(target_lengths, (list, tuple)):
        target_lengths = np.asarray(target_lengths)
    losses = bridge.ctc(call, log_probs, [targets, input_lengths, target_lengths])
    if reduction == "sum":
        return bridge.sum(losses)
    if reduction == "mean":
        lengths = bridge.astype(bridge.reshape(bridge.asarray(target_lengths, losses), (-1,)),
                                losses)
        return bridge.mean(losses / bridge.maximum(lengths, 1))
    return losses[0] if unbatched else losses


def _make_ctc_loss_class():
    try:
        import torch.nn
    except ImportError:  # plain callable without torch
        base = object
    else:
        base = torch.nn.Module

    class CTCLoss(base):
        """``torch.nn.CTCLoss(blank=0, reduction='mean', zero_infinity=False)`` on
        ctcbridge's engine: a ``torch.nn.Module`` when torch is installed, called as
        ``(log_probs, targets, input_lengths, target_lengths)``."""

        def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
            super().__init__()
            self.blank = blank
            self.reduction = reduction
            self.zero_infinity = zero_infinity

        def forward(self, log_probs, targets, input_lengths, target_lengths):
            return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank,
                            self.reduction, self.zero_infinity)

        if base is object:
            __call__ = forward

    CTCLoss.__qualname__ = "CTCLoss"
    return CTCLoss


def __getattr__(name):
    # built on first use, so importing this module never imports torch
    if name == "CTCLoss":
        cls = _make_ctc_loss_class()
        globals()["CTCLoss"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
