"""The engine's options, built once for every route to the engine.

:class:`EngineOptions` holds a call's options by their Python names and
makes what each route needs: the ctypes ``struct ctcb_options`` of the
numpy path (:meth:`struct`) and the integer and float attributes of the
compiled routes, the XLA custom call and the TF custom op
(:meth:`attributes`), which the C glue of ``ctcb_ffi_glue.h`` reads back
into the same struct.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import _engine

LAYOUTS = ("TNC", "NTC")  # the attribute is the index
INPUT_KINDS = {"logits": _engine.INPUT_LOGITS, "log_probs": _engine.INPUT_LOG_PROBS}
INFEASIBLE = {
    "inf": _engine.INFEASIBLE_INF,
    "zero": _engine.INFEASIBLE_ZERO,
    "sentinel": _engine.INFEASIBLE_SENTINEL,
}


@dataclass(frozen=True)
class EngineOptions:
    """Everything of an engine call but its arrays (see ``_compute.compute``)."""

    blank: int = 0
    layout: str = "TNC"  # of the activations and the gradient
    inputs: str = "logits"  # key of INPUT_KINDS
    infeasible: str = "inf"  # key of INFEASIBLE
    log_zero: float = -1e10  # log 0 with infeasible="sentinel"
    merge_repeated: bool = True  # False: no self-loops on label states (TF v1)
    warp_blank_labels: bool = False  # never skip into a label equal to the blank (warp-ctc)
    log_space: bool = False
    num_threads: int = 0  # 0: every core

    @classmethod
    def of(cls, options: dict, **defaults) -> "EngineOptions":
        """From a dict of option names (a Traced's ``options``), over `defaults`."""
        known = {f.name for f in fields(cls)}
        return replace(cls(**defaults), **{k: v for k, v in options.items() if k in known})

    @property
    def flags(self) -> int:
        return ((0 if self.merge_repeated else _engine.FLAG_NO_MERGE_REPEATED)
                | (_engine.FLAG_WARP_BLANK_LABELS if self.warp_blank_labels else 0)
                | (_engine.FLAG_LOG_SPACE if self.log_space else 0))

    def struct(self) -> _engine.Options:
        """The ctypes ``struct ctcb_options`` (the layout travels in the problem)."""
        options = _engine.default_options()
        options.blank = self.blank
        options.input_kind = INPUT_KINDS[self.inputs]
        options.infeasible = INFEASIBLE[self.infeasible]
        options.log_zero = float(self.log_zero)
        options.num_threads = self.num_threads
        options.flags = self.flags
        return options

    def attributes(self) -> dict:
        """The compiled routes' attributes: Python ints, and the float ``log_zero``."""
        return dict(blank=int(self.blank), layout=LAYOUTS.index(self.layout),
                    input_kind=INPUT_KINDS[self.inputs], infeasible=INFEASIBLE[self.infeasible],
                    flags=self.flags, num_threads=int(self.num_threads),
                    log_zero=float(self.log_zero))
