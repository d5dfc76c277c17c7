"""How many threads the engine uses when a framework's arrays call it.

The framework signatures keep their native parameter lists, so the thread
count has its own channel: :func:`set_num_threads` (a process-wide setting,
also usable as a context manager), and otherwise a default that follows the
framework the arrays come from, so that a data-parallel job (N processes or
devices, each with the framework's M intra-op threads) never runs more engine
threads than the framework itself would:

- torch: ``torch.get_num_threads()`` (torchrun sets ``OMP_NUM_THREADS=1``
  per worker, so 1 there);
- tensorflow: ``tf.config.threading.get_intra_op_parallelism_threads()``
  (0, TF's "all cores", is this process's cores), shared by the logical CPU
  devices, whose replicas run their losses concurrently;
- jax: XLA has no public intra-op setting; its CPU pool spans every core
  (one thread with ``--xla_cpu_multi_thread_eigen=false``), shared by the
  local devices, whose ``pmap``/``shard_map`` shards run their callbacks
  concurrently: the cores divided by ``jax.local_device_count()``;
- numpy (and any other array): every core, as ``ctcbridge.ctc_loss``.

The setting is process-wide rather than thread-local on purpose: frameworks
run the loss of compiled code on their own threads (a ``pmap`` shard's
callback, a ``tf.function``'s ``numpy_function``), where a thread-local or
context variable set by the caller is not visible.  It is read at every engine
call made through Python (``_contract.run``); the engine's custom ops compiled
into a program (XLA custom call, TF op) carry the value read when it was traced.

This module holds the setting; each framework's default is its bridge's
(``Bridge.default_threads``), and :func:`ctcbridge.get_num_threads` asks it.
"""

from __future__ import annotations

import os
import threading

from .errors import CTCTypeError, CTCValueError

_lock = threading.Lock()
_setting: int | None = None  # None: follow the framework; 0: every core


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), as the engine counts them."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class set_num_threads:
    """Set the engine's thread count for every framework signature, process-wide.

    ``n`` >= 1 threads per call, 0 for every core, ``None`` to follow the
    framework again (the default; see the module doc).  Returns at once;
    used as a context manager it restores the previous setting on exit,
    like ``torch.set_grad_enabled``::

        ctcbridge.set_num_threads(1)
        with ctcbridge.set_num_threads(4):
            loss = ctcbridge.torch.ctc_loss(...)

    The canonical ``ctcbridge.ctc_loss(..., num_threads=)`` keeps its own
    argument.  Results never depend on the thread count.
    """

    def __init__(self, n: int | None) -> None:
        global _setting
        self.n = _validated(n)
        with _lock:
            self.previous, _setting = _setting, self.n

    def __repr__(self) -> str:
        return f"ctcbridge.set_num_threads({self.n!r})"

    def __enter__(self) -> "set_num_threads":
        return self

    def __exit__(self, *exc) -> None:
        global _setting
        with _lock:
            _setting = self.previous


def _validated(n):
    if n is None:
        return None
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise CTCTypeError(f"the number of threads must be an integer or None, got {n!r}")
    n = int(n.__index__())
    if n < 0:
        raise CTCValueError(f"the number of threads is {n}; use 0 for every core, None for "
                            "the framework's own setting")
    return n


def setting() -> int | None:
    """The process-wide setting: None (follow the framework), 0 (every core) or n."""
    return _setting
