"""ctcbridge: one C engine for the CTC loss, every framework's signature.

``import ctcbridge`` imports numpy and nothing else; framework adapters are
imported only by the users who ask for them.

>>> import numpy as np, ctcbridge
>>> rng = np.random.default_rng(0)
>>> logits = rng.standard_normal((50, 2, 6)).astype(np.float32)   # (T, N, C)
>>> loss, grad = ctcbridge.ctc_loss_and_grad(logits, [[1, 2, 3], [4, 4, 0]],
...                                          label_lengths=[3, 2])
>>> loss.shape, grad.shape
((2,), (50, 2, 6))
"""

from __future__ import annotations

from ._bridges import get_num_threads
from ._threads import set_num_threads
from ._version import __version__
from .canonical import ctc_loss, ctc_loss_and_grad
from .decoding import decode_beam, decode_greedy, forced_align, merge_tokens, posteriors
from .errors import (
    CTCError,
    CTCTypeError,
    CTCValueError,
    EngineError,
    EngineLoadError,
    EngineMemoryError,
)


def engine_version() -> str:
    """Version of the compiled C engine."""
    from ._engine import engine_version as _v

    return _v()


__all__ = [
    "__version__",
    "ctc_loss",
    "ctc_loss_and_grad",
    "forced_align",
    "merge_tokens",
    "posteriors",
    "decode_greedy",
    "decode_beam",
    "engine_version",
    "get_num_threads",
    "set_num_threads",
    "CTCError",
    "CTCTypeError",
    "CTCValueError",
    "EngineError",
    "EngineLoadError",
    "EngineMemoryError",
]
