"""The exceptions ctcbridge raises.

Every exception derives from :class:`CTCError`, so ``except ctcbridge.CTCError``
catches anything the package raises on purpose.  Invalid input also derives
from the matching builtin (``ValueError``, ``TypeError``), so code written for
a framework's own CTC keeps working.
"""

from __future__ import annotations


class CTCError(Exception):
    """Base class of every ctcbridge error."""


class CTCValueError(CTCError, ValueError):
    """An argument has an invalid value (out-of-range label, bad length...)."""


class CTCTypeError(CTCError, TypeError):
    """An argument has an unsupported type or dtype."""


class EngineError(CTCError, RuntimeError):
    """The C engine failed for a reason other than invalid input (memory...)."""


class EngineMemoryError(EngineError, MemoryError):
    """The engine could not allocate its working memory."""


class EngineLoadError(CTCError, ImportError):
    """The compiled engine library could not be found or loaded."""


class CTCRuntimeError(CTCValueError, RuntimeError):
    """Invalid input, raised as a ``RuntimeError`` too: the type PyTorch's CTC raises."""
