"""The one engine call, numpy in and out, that everything else goes through.

Every framework signature of ctcbridge translates its arguments into one call
of :func:`compute`, which validates and converts numpy arrays, runs the C
engine and returns per-sample losses and the gradient.  The public,
framework-neutral API (:mod:`ctcbridge.canonical`) is built on it.
"""

from __future__ import annotations

import ctypes
import operator
from typing import Any

import numpy as np

from . import _engine
from ._options import INFEASIBLE, INPUT_KINDS, LAYOUTS, EngineOptions
from .errors import CTCTypeError, CTCValueError


_NATIVE = {np.dtype(np.float32): _engine.FLOAT32, np.dtype(np.float64): _engine.FLOAT64}


def _as_int(value: Any, name: str) -> int:
    """A Python int from an integer-like scalar, or a TypeError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise CTCTypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CTCTypeError(f"{name} must be an integer, got {value!r}") from None


def _float_array(activations: Any) -> tuple[np.ndarray, np.dtype]:
    """(array in float32/float64 the engine can read in place, dtype to return)."""
    arr = np.asarray(activations)
    dtype = arr.dtype
    is_float = dtype.kind == "f" or "float" in dtype.name  # ml_dtypes' bfloat16 is kind 'V'
    if not is_float or dtype.kind == "c":
        raise CTCTypeError(f"activations must be a floating-point array, got dtype {dtype}")
    native = dtype.newbyteorder("=")
    if native in _NATIVE:
        compute = native
    else:  # float16, bfloat16...: float32; longdouble: float64
        compute = np.dtype(np.float64) if dtype.itemsize > 8 else np.dtype(np.float32)
    if arr.dtype != compute or not arr.dtype.isnative or not arr.flags.aligned or any(
        s % compute.itemsize for s in arr.strides
    ):
        arr = np.array(arr, dtype=compute)  # a converted, aligned, native copy
    return arr, dtype


def _int_array(value: Any, name: str) -> np.ndarray:
    """An int64 array from integers (lists, tuples, integer arrays); TypeError otherwise."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        if arr.dtype.kind == "O" or arr.size == 0 and arr.dtype.kind == "f":
            try:  # e.g. a list of Python ints mixed with None, or an empty list
                arr = np.asarray(value, dtype=np.int64)
            except (TypeError, ValueError):
                raise CTCTypeError(f"{name} must hold integers, got {value!r}") from None
        else:
            raise CTCTypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise CTCValueError(f"{name} holds {arr.max()}, beyond int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _lengths(value: Any, name: str, batch: int, default: int) -> np.ndarray:
    if value is None:
        return np.full(batch, default, dtype=np.int64)
    arr = _int_array(value, name)
    if arr.shape != (batch,):
        raise CTCValueError(f"{name} must have shape ({batch},) (one per sample), got {arr.shape}")
    return arr


def _ptr(arr: np.ndarray | None) -> Any:
    if arr is None:
        return None
    return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


def _choice(value: Any, name: str, allowed) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise CTCValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _available_memory() -> int | None:
    """Bytes the kernel reports as available (Linux), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_SMALL_REQUEST = 64 << 20


def _check_memory(T, N, C, in_len, labs, lab_len, fmt, num_threads, want_grad, itemsize):
    """Refuse a call whose gradient and workspace cannot fit in memory.

    Linux overcommits: an allocation that cannot be backed succeeds and the
    process is killed later, when the pages are touched.  Checking the sizes
    first turns that into a clear error."""
    if N == 0:
        return
    # out-of-range lengths are reported by the engine's validation, naming them
    max_label = min(int(lab_len.max()) if lab_len.size else 0,
                    labs.shape[1] if fmt == _engine.LABELS_PADDED else labs.size)
    max_input = min(int(in_len.max()) if in_len.size else 0, T)
    check_memory(max(max_input, 0), max(max_label, 0), T, N, C, num_threads, want_grad,
                 itemsize)


def check_memory(max_input, max_label, T, N, C, num_threads, want_grad, itemsize):
    """:class:`EngineMemoryError` if ``num_threads`` workspaces for sequences of
    ``max_input`` frames and ``max_label`` labels, plus a (T, N, C) gradient when
    ``want_grad``, exceed the memory available; also used at trace time by the
    compiled routes (XLA allocates their gradient), from static shapes."""
    if N == 0:
        return
    import os

    threads = num_threads or os.cpu_count() or 1
    threads = min(threads, N)
    work = _engine.workspace_bytes(max_input, max_label, C)
    need = threads * work + (T * N * C * itemsize if want_grad else 0)
    if need < _SMALL_REQUEST:  # not worth reading /proc/meminfo on every small call
        return
    available = _available_memory()
    if available is not None and need > available:
        from .errors import EngineMemoryError

        raise EngineMemoryError(
            f"this call needs about {need / 2**30:.2f} GiB ({threads} engine thread(s) x "
            f"{work / 2**30:.2f} GiB of workspace for T = {max_input}, L = {max_label}, "
            f"C = {C}, plus the gradient) but only {available / 2**30:.2f} GiB are available; "
            "use fewer threads (num_threads), shorter sequences or a smaller batch")


def compute(
    activations: Any,
    labels: Any,
    input_lengths: Any = None,
    label_lengths: Any = None,
    *,
    blank: int = 0,
    layout: str = "TNC",
    inputs: str = "logits",
    infeasible: str = "inf",
    log_zero: float = -1e10,
    merge_repeated: bool = True,
    warp_blank_labels: bool = False,
    log_space: bool = False,
    want_grad: bool = True,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the engine once: ``(losses (N,), grad or None)``, both in the input's dtype.

    The full set of engine options, for signature adapters: ``infeasible`` is
    ``"inf"`` (loss +inf, gradient NaN), ``"zero"`` (loss and gradient 0) or
    ``"sentinel"`` (log-space with the finite ``log_zero`` for log 0);
    ``merge_repeated=False`` drops the label states' self-loops (TF v1
    ``ctc_merge_repeated=False``); ``warp_blank_labels`` forbids skipping
    into a label equal to the blank (warp-ctc).  The gradient is of the sum of
    the per-sample losses.
    """
    _choice(layout, "layout", LAYOUTS)
    _choice(inputs, "inputs", tuple(INPUT_KINDS))
    _choice(infeasible, "infeasible", tuple(INFEASIBLE))
    acts, out_dtype = _float_array(activations)
    if acts.ndim != 3:
        raise CTCValueError(
            f"activations must be 3-D ({' x '.join(layout)}), got shape {acts.shape}"
        )
    if layout == "TNC":
        T, N, C = acts.shape
        t_ax, n_ax = 0, 1
    else:
        N, T, C = acts.shape
        t_ax, n_ax = 1, 0
    if C < 1:
        raise CTCValueError(f"activations has an empty class axis (C = {C}); the blank needs one")
    blank = _as_int(blank, "blank")
    if not 0 <= blank < C:
        raise CTCValueError(f"blank = {blank} is outside [0, C = {C})")
    num_threads = _as_int(num_threads, "num_threads")
    if num_threads < 0:
        raise CTCValueError(f"num_threads = {num_threads} is negative (0 means all cores)")

    labs = _int_array(labels, "labels")
    if labs.ndim == 2:
        if labs.shape[0] != N:
            raise CTCValueError(
                f"labels has {labs.shape[0]} rows but the batch has {N} samples"
            )
        fmt, stride, count = _engine.LABELS_PADDED, labs.shape[1], labs.size
        lab_len = _lengths(label_lengths, "label_lengths", N, stride)
    elif labs.ndim == 1:
        fmt, stride, count = _engine.LABELS_CONCATENATED, 0, labs.size
        if label_lengths is None:
            if N != 1:
                raise CTCValueError(
                    "label_lengths is required with 1-D (concatenated) labels and a batch of "
                    f"{N} samples"
                )
            label_lengths = [labs.size]
        lab_len = _lengths(label_lengths, "label_lengths", N, 0)
        if lab_len.size and (lab_len < 0).any():
            bad = int(np.flatnonzero(lab_len < 0)[0])
            raise CTCValueError(f"label_lengths[{bad}] = {lab_len[bad]} is negative")
        if int(lab_len.sum()) != labs.size:
            raise CTCValueError(
                f"label_lengths add up to {int(lab_len.sum())} but the concatenated labels hold "
                f"{labs.size}"
            )
    else:
        raise CTCValueError(
            f"labels must be 2-D (N, S) padded or 1-D concatenated, got shape {labs.shape}"
        )
    in_len = _lengths(input_lengths, "input_lengths", N, T)

    dt = acts.dtype
    _check_memory(T, N, C, in_len, labs, lab_len, fmt, num_threads, want_grad, dt.itemsize)
    losses = np.empty(N, dtype=dt)
    grad = np.empty(acts.shape, dtype=dt) if want_grad else None
    item = dt.itemsize

    def strides3(arr: np.ndarray) -> Any:
        s = [st // item for st in arr.strides]
        return _engine._I64x3(s[t_ax], s[n_ax], s[2])

    problem = _engine.Problem(
        dtype=_NATIVE[dt],
        label_format=fmt,
        max_time=T,
        batch=N,
        alphabet=C,
        activations=acts.ctypes.data,
        act_strides=strides3(acts),
        input_lengths=_ptr(in_len),
        labels=_ptr(labs),
        label_stride=stride,
        label_count=count,
        label_lengths=_ptr(lab_len),
        losses=losses.ctypes.data,
        grad=grad.ctypes.data if grad is not None else None,
        grad_strides=strides3(grad) if grad is not None else _engine._I64x3(0, 0, 0),
    )
    options = EngineOptions(blank=blank, inputs=inputs, infeasible=infeasible, log_zero=log_zero,
                            merge_repeated=merge_repeated, warp_blank_labels=warp_blank_labels,
                            log_space=log_space, num_threads=num_threads)
    _engine.call(problem, options.struct())
    if out_dtype != dt:
        losses = losses.astype(out_dtype)
        grad = grad.astype(out_dtype) if grad is not None else None
    return losses, grad
