"""Gluon's CTC loss, ``CTCLoss``, on any framework's arrays.

Mirrors ``mxnet.gluon.loss.CTCLoss(layout='NTC', label_layout='NT', weight=None)``
called as ``loss(pred, label, pred_lengths=None, label_lengths=None,
sample_weight=None)`` (positional, as Gluon's blocks are called):

- ``pred``: unnormalised logits, (N, T, C) for ``layout='NTC'`` or (T, N, C)
  for ``'TNC'``; ``label`` (N, S) for ``label_layout='NT'`` or (S, N) for
  ``'TN'``, padded with -1; the blank is the last class, C - 1.
- ``pred_lengths``/``label_lengths`` optional: without ``label_lengths`` a
  label ends at its first -1.  Everything else as
  :func:`ctcbridge.mxnet.ctc_loss` with ``blank_label='last'`` (infeasible
  samples: 0, gradient 0; float lengths rounded; the padded label width must
  not exceed T).
- Output ``loss * sample_weight * weight``, not averaged: ``sample_weight``
  broadcasts against the (N,) losses as MXNet broadcasts (an (N, 1) weight
  gives an (N, N) result, as in Gluon), ``weight`` must be a number.

With MXNet installed, ``CTCLoss`` is a ``mxnet.gluon.loss.Loss`` (a
``HybridBlock``: ``hybridize()`` works, through ctcbridge's CustomOp) that
also accepts the arrays of other frameworks (numpy, torch, jax, tensorflow),
returning theirs, differentiable there; without MXNet it is a plain callable
with the same semantics.  Importing this module does not import MXNet: the
class is built on first access.
"""

from __future__ import annotations

from numbers import Number

from ._bridges import bridge_for, framework_of
from ._contract import reraise_as
from .errors import CTCAssertionError, CTCRuntimeError
from .mxnet import _ctc

__all__ = ["CTCLoss"]


def _check_layouts(layout, label_layout):
    # Gluon asserts these in the constructor, with these messages
    if layout not in ("NTC", "TNC"):
        raise CTCAssertionError(f"Only 'NTC' and 'TNC' layouts for pred are supported. Got: {layout}")
    if label_layout not in ("NT", "TN"):
        raise CTCAssertionError(
            f"Only 'NT' and 'TN' layouts for label are supported. Got: {label_layout}")


@reraise_as(CTCRuntimeError)
def _ctc_loss(pred, label, pred_lengths=None, label_lengths=None, sample_weight=None, *,
              layout="NTC", label_layout="NT", weight=None):
    """Gluon's CTCLoss forward on any framework's arrays (pred's framework out)."""
    loss = _ctc(pred, label, pred_lengths, label_lengths, blank_last=True, layout=layout,
                label_layout=label_layout)
    if sample_weight is not None:
        bridge = bridge_for(pred, label, pred_lengths, label_lengths, sample_weight)
        loss = bridge.broadcast_mul(loss, sample_weight)  # MXNet's: (N,) * (N, 1) -> (N, N)
    if weight is not None:
        loss = loss * weight
    return loss


class _Shared:
    """What both forms of CTCLoss share: the constructor's checks and the call."""

    def _configure(self, layout, label_layout):
        _check_layouts(layout, label_layout)
        self._layout = layout
        self._label_layout = label_layout

    def _loss(self, pred, label, pred_lengths=None, label_lengths=None, sample_weight=None):
        if self._weight is not None and not isinstance(self._weight, Number):
            raise CTCAssertionError("weight must be a number")  # Gluon asserts it per call
        return _ctc_loss(pred, label, pred_lengths, label_lengths, sample_weight,
                         layout=self._layout, label_layout=self._label_layout,
                         weight=self._weight)


def _make_class():
    try:
        from mxnet.gluon.loss import Loss
    except (ImportError, AttributeError):  # no MXNet (or one broken by numpy >= 1.24)
        Loss = None

    if Loss is None:
        class CTCLoss(_Shared):
            """``mxnet.gluon.loss.CTCLoss(layout='NTC', label_layout='NT', weight=None)`` on
            ctcbridge's engine, as a plain callable (MXNet is not installed)."""

            def __init__(self, layout="NTC", label_layout="NT", weight=None, **kwargs):
                self._configure(layout, label_layout)
                self._weight = weight

            __call__ = _Shared._loss

        return CTCLoss

    class CTCLoss(_Shared, Loss):
        """``mxnet.gluon.loss.CTCLoss(layout='NTC', label_layout='NT', weight=None)`` on
        ctcbridge's engine: a Gluon ``Loss`` (hybridizable) that also takes other
        frameworks' arrays."""

        def __init__(self, layout="NTC", label_layout="NT", weight=None, **kwargs):
            self._configure(layout, label_layout)
            super().__init__(weight, label_layout.find("N"), **kwargs)

        def forward(self, pred, *args):
            if framework_of(pred) == "mxnet":  # NDArray or Symbol: Gluon's own dispatch
                return super().forward(pred, *args)
            return self._loss(pred, *args)

        def hybrid_forward(self, F, pred, label, pred_lengths=None, label_lengths=None,
                           sample_weight=None):
            return self._loss(pred, label, pred_lengths, label_lengths, sample_weight)

    return CTCLoss


def __getattr__(name):
    # built on first use, so importing this module never imports MXNet
    if name == "CTCLoss":
        cls = _make_class()
        cls.__qualname__ = cls.__name__ = "CTCLoss"
        cls.__module__ = __name__
        globals()["CTCLoss"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
