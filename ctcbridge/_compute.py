"""The one engine call, numpy in and out, that everything else goes through.

Every framework signature of ctcbridge translates its arguments into one call
of :func:`compute`, which validates and converts numpy arrays, runs the C
engine and returns per-sample losses and the gradient.  The public,
framework-neutral API (:mod:`ctcbridge.canonical`) is built on it.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import _engine
from ._options import INFEASIBLE, INPUT_KINDS, LAYOUTS, EngineOptions
from .errors import CTCTypeError, CTCValueError


_NATIVE = {np.dtype(np.float32): _engine.FLOAT32, np.dtype(np.float64): _engine.FLOAT64}


_INT64 = np.iinfo(np.int64)
_INT32_MAX = np.iinfo(np.int32).max


def _as_int(value: Any, name: str) -> int:
    """A Python int from an integer-like scalar, or a TypeError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise CTCTypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise CTCTypeError(f"{name} must be an integer, got {value!r}") from None


def _as_array(value: Any, name: str) -> np.ndarray:
    """``np.asarray(value)``, with numpy's errors on ragged or odd input as a CTCError."""
    try:
        return np.asarray(value)
    except ValueError as exc:  # e.g. "setting an array element with a sequence... inhomogeneous"
        raise CTCValueError(f"{name} must be a rectangular array, got a ragged sequence "
                            f"({exc})") from None
    except (TypeError, OverflowError) as exc:
        raise CTCTypeError(f"{name} could not be read as an array: {exc}") from None


# ------------------------------------------------------------ activations


def _activations(activations: Any) -> tuple[np.ndarray, np.dtype, np.dtype]:
    """``(array, dtype to compute in, dtype to return)``, nothing converted yet:
    the conversion waits until the memory check has counted it."""
    arr = _as_array(activations, "activations")
    dtype = arr.dtype
    is_float = dtype.kind == "f" or "float" in dtype.name  # ml_dtypes' bfloat16 is kind 'V'
    if not is_float or dtype.kind == "c":
        raise CTCTypeError(f"activations must be a floating-point array, got dtype {dtype}")
    native = dtype.newbyteorder("=")
    if native in _NATIVE:
        compute = native
    else:  # float16, bfloat16...: float32; longdouble: float64
        compute = np.dtype(np.float64) if dtype.itemsize > 8 else np.dtype(np.float32)
    return arr, compute, dtype


def _needs_copy(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the engine cannot read ``arr`` in place as ``dtype`` (any strides are fine)."""
    return (arr.dtype != dtype or not arr.dtype.isnative or not arr.flags.aligned
            or any(s % dtype.itemsize for s in arr.strides))


# ------------------------------------------------------------------ integers


def _object_ints(arr: np.ndarray, name: str) -> np.ndarray:
    """int64 from an object array (a list holding Python ints beyond int64,
    numpy scalars, ...): each element must be an integer, not a bool or a
    float (numpy's own conversion would truncate 11.7 to 11)."""
    out = np.empty(arr.shape, dtype=np.int64)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.flat):
        if isinstance(v, (list, tuple, np.ndarray)):
            raise CTCValueError(f"{name} must be a rectangular array of integers, got a ragged "
                                "sequence")
        if isinstance(v, (bool, np.bool_)):
            raise CTCTypeError(f"{name} must hold integers, got the bool {v!r} at flat index {i}")
        try:
            k = operator.index(v)
        except TypeError:
            raise CTCTypeError(f"{name} must hold integers, got {v!r} ({type(v).__name__}) "
                               f"at flat index {i}") from None
        if not _INT64.min <= k <= _INT64.max:
            raise CTCValueError(f"{name} holds {k} at flat index {i}, outside the int64 range")
        flat[i] = k
    return out


def _int_array(value: Any, name: str) -> np.ndarray:
    """An integer array (any integer dtype, not yet int64: see _int64) from
    integers only: bools, floats and out-of-range values are errors naming
    ``name``, ragged sequences too."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        arr = _as_array(value, name)
        if arr.dtype.kind in "iub" and arr.size and not isinstance(value, np.generic):
            # numpy reads True in [12, True] as 1: look at the elements themselves
            items = np.asarray(value, dtype=object)
            if any(isinstance(v, (bool, np.bool_)) for v in items.flat):
                raise CTCTypeError(f"{name} must hold integers, got a bool in {value!r}")
    if arr.dtype.kind == "O":
        return _object_ints(arr, name)
    if arr.dtype.kind == "b":
        raise CTCTypeError(f"{name} must hold integers, got dtype bool")
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":  # [] is read as float64 by numpy
            return np.zeros(arr.shape, dtype=np.int64)
        raise CTCTypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > _INT64.max:
        raise CTCValueError(f"{name} holds {arr.max()}, beyond int64")
    return arr


def _int64(arr: np.ndarray) -> np.ndarray:
    """The engine's view of an integer array: int64, C-contiguous (a copy only if needed)."""
    return np.ascontiguousarray(arr, dtype=np.int64)


def _int64_copy_bytes(arr: np.ndarray) -> int:
    """Bytes _int64 allocates for ``arr`` (0 when it can use it in place)."""
    ok = arr.dtype == np.int64 and arr.dtype.isnative and arr.flags.c_contiguous
    return 0 if ok else arr.size * 8


def _lengths(value: Any, name: str, batch: int) -> np.ndarray | None:
    """Lengths as an integer array of shape (batch,), or None when not given."""
    if value is None:
        return None
    arr = _int_array(value, name)
    if arr.shape != (batch,):
        raise CTCValueError(f"{name} must have shape ({batch},) (one per sample), got {arr.shape}")
    return arr


def _ptr(arr: np.ndarray | None) -> int | None:
    """The address of an int64 array's first element, for the problem's pointers."""
    return None if arr is None else arr.ctypes.data


def _choice(value: Any, name: str, allowed) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise CTCValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


# -------------------------------------------------------------------- memory


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


def check_memory(max_input, max_label, T, N, C, num_threads, want_grad, itemsize, extra=0):
    """:class:`EngineMemoryError` if ``num_threads`` workspaces for sequences of
    ``max_input`` frames and ``max_label`` labels, plus a (T, N, C) gradient when
    ``want_grad``, plus ``extra`` bytes (the copies and conversions the call
    will make), exceed the memory available; also used at trace time by the
    compiled routes (XLA allocates their gradient), from static shapes.

    Linux overcommits: an allocation that cannot be backed succeeds and the
    process is killed later, when the pages are touched.  Checking the sizes
    first turns that into a clear error."""
    if N == 0:
        return
    import os

    threads = num_threads or os.cpu_count() or 1
    threads = min(threads, N)
    work = _engine.workspace_bytes(max_input, max_label, C)
    need = threads * work + (T * N * C * itemsize if want_grad else 0) + extra
    if need < _SMALL_REQUEST:  # not worth reading /proc/meminfo on every small call
        return
    available = _available_memory()
    if available is not None and need > available:
        from .errors import EngineMemoryError

        raise EngineMemoryError(
            f"this call needs about {need / 2**30:.2f} GiB ({threads} engine thread(s) x "
            f"{work / 2**30:.2f} GiB of workspace for T = {max_input}, L = {max_label}, "
            f"C = {C}, plus the gradient and {extra / 2**30:.2f} GiB of copies of the inputs) "
            f"but only {available / 2**30:.2f} GiB are available; use fewer threads "
            "(num_threads), shorter sequences or a smaller batch")


# ------------------------------------------------------------- the problem


class _Labels:
    """The labels in the engine's terms: container, width, lengths (not yet converted)."""

    def __init__(self, labels: Any, label_lengths: Any, N: int) -> None:
        labs = _int_array(labels, "labels")
        if labs.ndim == 2:
            if labs.shape[0] != N:
                raise CTCValueError(
                    f"labels has {labs.shape[0]} rows but the batch has {N} samples"
                )
            self.format, self.stride = _engine.LABELS_PADDED, labs.shape[1]
            self.lengths = _lengths(label_lengths, "label_lengths", N)
        elif labs.ndim == 1:
            self.format, self.stride = _engine.LABELS_CONCATENATED, 0
            if label_lengths is None:
                if N != 1:
                    raise CTCValueError(
                        "label_lengths is required with 1-D (concatenated) labels and a batch "
                        f"of {N} samples"
                    )
                label_lengths = [labs.size]
            lengths = _lengths(label_lengths, "label_lengths", N)
            if lengths.size and (lengths < 0).any():
                bad = int(np.flatnonzero(lengths < 0)[0])
                raise CTCValueError(f"label_lengths[{bad}] = {lengths[bad]} is negative")
            total = int(lengths.sum(dtype=object)) if lengths.size else 0  # no int64 wrap
            if total != labs.size:
                raise CTCValueError(
                    f"label_lengths add up to {total} but the concatenated labels hold "
                    f"{labs.size}"
                )
            self.lengths = lengths
        else:
            raise CTCValueError(
                f"labels must be 2-D (N, S) padded or 1-D concatenated, got shape {labs.shape}"
            )
        self.values = labs

    def longest(self) -> int:
        """The longest label sequence the engine may read (out-of-range lengths are
        reported by the engine's validation, naming them)."""
        width = self.stride if self.format == _engine.LABELS_PADDED else self.values.size
        if self.lengths is None:
            return width
        return max(0, min(int(self.lengths.max()) if self.lengths.size else 0, width))


def _strides(arr: np.ndarray, t_ax: int, n_ax: int) -> Any:
    item = arr.dtype.itemsize
    s = [st // item for st in arr.strides]
    return _engine._I64x3(s[t_ax], s[n_ax], s[2])


def _common_arguments(activations, layout, inputs, blank, num_threads):
    """The arguments every engine entry point reads the same way (the loss and the
    decoders): ``(activations not yet converted, dtype to compute in, dtype to
    return, (T, N, C), (time axis, batch axis), blank, num_threads)``, each checked."""
    _choice(layout, "layout", LAYOUTS)
    _choice(inputs, "inputs", tuple(INPUT_KINDS))
    acts, dt, out_dtype = _activations(activations)
    if acts.ndim != 3:
        raise CTCValueError(
            f"activations must be 3-D ({' x '.join(layout)}), got shape {acts.shape}"
        )
    T, N, C = acts.shape if layout == "TNC" else (acts.shape[1], acts.shape[0], acts.shape[2])
    axes = (0, 1) if layout == "TNC" else (1, 0)
    if C < 1:
        raise CTCValueError(f"activations has an empty class axis (C = {C}); the blank needs one")
    blank = _as_int(blank, "blank")
    if not 0 <= blank < C:
        raise CTCValueError(f"blank = {blank} is outside [0, C = {C})")
    num_threads = _as_int(num_threads, "num_threads")
    if not 0 <= num_threads <= _INT32_MAX:
        raise CTCValueError(f"num_threads = {num_threads} is outside [0, {_INT32_MAX}] "
                            "(0 means all cores)")
    return acts, dt, out_dtype, (T, N, C), axes, blank, num_threads


_ALIGN = 64  # bytes: TensorFlow's tensors (Eigen's widest vectors)


def _aligned_empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 64-byte boundary: TensorFlow adopts
    such an array as a tensor through DLPack without a copy (its tensors must be
    aligned so; numpy's allocator gives 16 bytes)."""
    nbytes = math.prod(shape) * dtype.itemsize  # (math.prod: a tenth of np.prod's time)
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


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

    Every argument is checked, and every copy or conversion the call needs
    is counted by the memory check, before anything is allocated.
    """
    _choice(infeasible, "infeasible", tuple(INFEASIBLE))
    acts, dt, out_dtype, (T, N, C), (t_ax, n_ax), blank, num_threads = _common_arguments(
        activations, layout, inputs, blank, num_threads)
    labs = _Labels(labels, label_lengths, N)
    in_len = _lengths(input_lengths, "input_lengths", N)

    # what the call allocates besides the engine's workspaces and the gradient
    max_input = max(0, min(int(in_len.max()) if in_len is not None and in_len.size else T, T))
    max_label = labs.longest()
    copies = (
        (acts.size * dt.itemsize if _needs_copy(acts, dt) else 0)
        + _int64_copy_bytes(labs.values)
        + 8 * N * max_label  # the engine's own copy of the labels it reads
        + 40 * N  # lengths: converted, and the engine's copies
        + (acts.size * out_dtype.itemsize if want_grad and out_dtype != dt else 0)
    )
    check_memory(max_input, max_label, T, N, C, num_threads, want_grad, dt.itemsize, copies)

    if _needs_copy(acts, dt):
        acts = np.array(acts, dtype=dt)  # a converted, aligned, native copy
    values = _int64(labs.values)
    in_len = None if in_len is None else _int64(in_len)
    lab_len = None if labs.lengths is None else _int64(labs.lengths)
    losses = _aligned_empty((N,), dt)
    grad = _aligned_empty(acts.shape, dt) if want_grad else None
    problem = _engine.Problem(
        dtype=_NATIVE[dt],
        label_format=labs.format,
        max_time=T,
        batch=N,
        alphabet=C,
        activations=acts.ctypes.data,
        act_strides=_strides(acts, t_ax, n_ax),
        input_lengths=_ptr(in_len),
        labels=_ptr(values),
        label_stride=labs.stride,
        label_count=values.size,
        label_lengths=_ptr(lab_len),
        losses=losses.ctypes.data,
        grad=grad.ctypes.data if grad is not None else None,
        grad_strides=_strides(grad, t_ax, n_ax) if grad is not None else _engine._I64x3(0, 0, 0),
    )
    options = EngineOptions(blank=blank, inputs=inputs, infeasible=infeasible, log_zero=log_zero,
                            merge_repeated=merge_repeated, warp_blank_labels=warp_blank_labels,
                            log_space=log_space, num_threads=num_threads)
    _engine.call(problem, options.struct(), cells=N * max_input * (2 * max_label + 1 + C))
    if out_dtype != dt:
        losses = losses.astype(out_dtype)
        grad = grad.astype(out_dtype) if grad is not None else None
    return losses, grad
