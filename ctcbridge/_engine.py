"""Find, load and call the compiled engine (``backends/``) through ctypes.

The library is looked up, in order, at ``$CTCBRIDGE_LIBRARY`` (an explicit
path), inside the installed package (``ctcbridge/libctcbridge_engine.so``),
and in a development build tree (``build/``).  It is loaded lazily, on the
first call, and its ABI version is checked against the one this module was
written for.  Each ctypes declaration carries the C prototype it mirrors.

ctypes releases the GIL for the duration of every call into a ``CDLL``, so
several Python threads can run the engine at once.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

from .errors import CTCValueError, EngineError, EngineLoadError, EngineMemoryError

ABI_VERSION = 1  # CTCB_ABI_VERSION in backends/include/ctcbridge.h

# enum ctcb_status
OK = 0
ERR_NULL_POINTER = 1
ERR_INVALID_SIZE = 2
ERR_INVALID_BLANK = 3
ERR_INVALID_LABEL = 4
ERR_INVALID_LENGTH = 5
ERR_INVALID_OPTION = 6
ERR_SIZE_OVERFLOW = 7
ERR_OUT_OF_MEMORY = 8
ERR_CANCELLED = 9

FLOAT32, FLOAT64 = 0, 1  # enum ctcb_dtype
INPUT_LOGITS, INPUT_LOG_PROBS = 0, 1  # enum ctcb_input_kind
LABELS_PADDED, LABELS_CONCATENATED = 0, 1  # enum ctcb_label_format
INFEASIBLE_INF, INFEASIBLE_ZERO, INFEASIBLE_SENTINEL = 0, 1, 2  # enum ctcb_infeasible
FLAG_NO_MERGE_REPEATED = 0x1
FLAG_WARP_BLANK_LABELS = 0x2
FLAG_LOG_SPACE = 0x4

_LIB_NAMES = {
    "linux": "libctcbridge_engine.so",
    "darwin": "libctcbridge_engine.dylib",
    "win32": "ctcbridge_engine.dll",
}
LIBRARY_ENV = "CTCBRIDGE_LIBRARY"

_I64x3 = ctypes.c_int64 * 3
_P_I64 = ctypes.POINTER(ctypes.c_int64)


class Options(ctypes.Structure):
    """struct ctcb_options."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("blank", ctypes.c_int32),
        ("input_kind", ctypes.c_int32),
        ("infeasible", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("log_zero", ctypes.c_double),
        ("cancel", ctypes.POINTER(ctypes.c_int32)),
    ]


class Problem(ctypes.Structure):
    """struct ctcb_problem."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("dtype", ctypes.c_int32),
        ("label_format", ctypes.c_int32),
        ("max_time", ctypes.c_int64),
        ("batch", ctypes.c_int64),
        ("alphabet", ctypes.c_int64),
        ("activations", ctypes.c_void_p),
        ("act_strides", _I64x3),
        ("input_lengths", ctypes.c_void_p),  # const int64_t *: an address (cheaper to set)
        ("labels", ctypes.c_void_p),  # const int64_t *: an address (cheaper to set)
        ("label_stride", ctypes.c_int64),
        ("label_count", ctypes.c_int64),
        ("label_lengths", ctypes.c_void_p),  # const int64_t *: an address (cheaper to set)
        ("losses", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("grad_strides", _I64x3),
    ]


def _candidates() -> list[Path]:
    name = _LIB_NAMES.get(sys.platform, _LIB_NAMES["linux"])
    here = Path(__file__).resolve().parent
    found = [here / name]
    try:  # an installed (or editable) package may keep it elsewhere
        from importlib.resources import files

        found.append(Path(str(files("ctcbridge") / name)))
    except (ImportError, TypeError, ModuleNotFoundError):  # pragma: no cover
        pass
    root = here.parent
    found += sorted(root.glob(f"build/**/{name}"))
    return list(dict.fromkeys(found))


def _declare(lib: ctypes.CDLL) -> None:
    # int ctcb_ctc_loss(const ctcb_problem *problem, const ctcb_options *options);
    lib.ctcb_ctc_loss.argtypes = [ctypes.POINTER(Problem), ctypes.POINTER(Options)]
    lib.ctcb_ctc_loss.restype = ctypes.c_int
    # int ctcb_options_init(ctcb_options *options);
    lib.ctcb_options_init.argtypes = [ctypes.POINTER(Options)]
    lib.ctcb_options_init.restype = ctypes.c_int
    # const char *ctcb_status_string(int status);
    lib.ctcb_status_string.argtypes = [ctypes.c_int]
    lib.ctcb_status_string.restype = ctypes.c_char_p
    # const char *ctcb_last_error(void);
    lib.ctcb_last_error.argtypes = []
    lib.ctcb_last_error.restype = ctypes.c_char_p
    # int ctcb_abi_version(void);
    lib.ctcb_abi_version.argtypes = []
    lib.ctcb_abi_version.restype = ctypes.c_int
    # const char *ctcb_version(void);
    lib.ctcb_version.argtypes = []
    lib.ctcb_version.restype = ctypes.c_char_p
    # size_t ctcb_workspace_bytes(int64_t max_time, int64_t max_label, int64_t alphabet);
    lib.ctcb_workspace_bytes.argtypes = [ctypes.c_int64] * 3
    lib.ctcb_workspace_bytes.restype = ctypes.c_size_t


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The loaded engine library (loaded and checked on first use)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            _lib = _load()
    return _lib


def _load() -> ctypes.CDLL:
    override = os.environ.get(LIBRARY_ENV)
    paths = [Path(override)] if override else [p for p in _candidates() if p.is_file()]
    if not paths:
        tried = ", ".join(str(p) for p in _candidates())
        raise EngineLoadError(
            f"the ctcbridge engine library was not found (tried {tried}). "
            "Install the package with `pip install .` so that the C library is built, "
            f"or point ${LIBRARY_ENV} at a built libctcbridge_engine."
        )
    errors = []
    for path in paths:
        try:
            lib = ctypes.CDLL(str(path))
            _declare(lib)
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        abi = lib.ctcb_abi_version()
        if abi != ABI_VERSION:
            errors.append(f"{path}: ABI version {abi}, this package needs {ABI_VERSION}")
            continue
        return lib
    raise EngineLoadError(
        "the ctcbridge engine library could not be loaded: "
        + "; ".join(errors)
        + ". A stale or foreign build is the likely cause: reinstall with `pip install .`."
    )


def companion(name: str) -> Path | None:
    """A library built beside the loaded engine (e.g. "ctcbridge_tf", the
    TensorFlow op), in the same directory, or None if there is none."""
    lib = load()
    stem = _LIB_NAMES.get(sys.platform, _LIB_NAMES["linux"]).replace("ctcbridge_engine", name)
    path = Path(lib._name).resolve().with_name(stem)
    return path if path.is_file() else None


def engine_version() -> str:
    """The compiled engine's version string ("MAJOR.MINOR.PATCH")."""
    return load().ctcb_version().decode()


def workspace_bytes(max_time: int, max_label: int, alphabet: int) -> int:
    """Working memory (bytes) of one engine thread; see docs/c_api.md."""
    return int(load().ctcb_workspace_bytes(max_time, max_label, alphabet))


_DEFAULT_OPTIONS: bytes | None = None


def default_options() -> Options:
    """A new ``struct ctcb_options`` as ``ctcb_options_init`` fills it (asked once:
    the defaults are constants of the loaded library; a copy per call)."""
    global _DEFAULT_OPTIONS
    if _DEFAULT_OPTIONS is None:
        opts = Options()
        load().ctcb_options_init(ctypes.byref(opts))
        _DEFAULT_OPTIONS = bytes(opts)
    return Options.from_buffer_copy(_DEFAULT_OPTIONS)


# (ERR_NULL_POINTER is ctcbridge's own bug, never the user's: EngineError in check())
_VALUE_ERRORS = {
    ERR_INVALID_SIZE,
    ERR_INVALID_BLANK,
    ERR_INVALID_LABEL,
    ERR_INVALID_LENGTH,
    ERR_INVALID_OPTION,
    ERR_SIZE_OVERFLOW,
}


def _message(lib: ctypes.CDLL, status: int) -> str:
    """The status's description and this thread's detail message (the engine
    keeps the detail per thread: read it in the thread that made the call)."""
    what = lib.ctcb_status_string(status).decode()
    detail = lib.ctcb_last_error().decode()
    return f"{detail} ({what})" if detail else what


def check(status: int, message: str | None = None) -> None:
    """Turn a non-zero ctcb_status into the matching exception."""
    if status == OK:
        return
    if message is None:
        message = _message(load(), status)
    if status == ERR_OUT_OF_MEMORY:
        raise EngineMemoryError(message)
    if status == ERR_NULL_POINTER:  # our own bug, never the user's
        raise EngineError(message)
    if status in _VALUE_ERRORS:
        raise CTCValueError(message)
    raise EngineError(message)  # pragma: no cover - unknown status or a cancel not ours


# Calls with fewer lattice cells than this (tens of milliseconds of engine
# time at most) run on the calling thread; longer ones run on a helper
# thread so that Ctrl-C is seen within a fraction of a second (see call()).
INTERRUPTIBLE_CELLS = 1 << 24
_POLL_SECONDS = 0.05


def _run(lib: ctypes.CDLL, fn, args: tuple, options, cells: int, name: str) -> None:
    """Call the engine function ``fn(*args)``; raises on any non-zero status.

    ``cells`` estimates the work (frames x states over the batch).  Python
    runs signal handlers only between bytecodes, so a long call made
    directly would hold off KeyboardInterrupt until it returns (20-30 s were
    seen).  A long call made from the main thread (the only one that gets
    KeyboardInterrupt) therefore runs on a helper thread while the main
    thread waits in short, interruptible joins; on an interrupt it sets the
    engine's cancel flag (``options.cancel``), which every engine thread
    reads between samples and every few hundred frames, waits for the call
    to end (milliseconds), and re-raises.  Nothing is left running and
    nothing leaks.
    """
    if cells < INTERRUPTIBLE_CELLS or threading.current_thread() is not threading.main_thread():
        check(fn(*args))
        return
    flag = ctypes.c_int32(0)
    options.cancel = ctypes.pointer(flag)
    outcome: list = []

    def run() -> None:
        status = fn(*args)
        outcome.append((status, _message(lib, status) if status else ""))

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(_POLL_SECONDS)
    except BaseException:
        flag.value = 1  # the engine reads it with relaxed atomic loads
        worker.join()
        raise
    status, message = outcome[0]
    check(status, message)


def call(problem: Problem, options: Options, cells: int = 0) -> None:
    """Run ctcb_ctc_loss; raises on any non-zero status (interruptible when long:
    see :func:`_run`)."""
    lib = load()
    problem.struct_size = ctypes.sizeof(Problem)
    options.struct_size = ctypes.sizeof(Options)
    _run(lib, lib.ctcb_ctc_loss, (ctypes.byref(problem), ctypes.byref(options)), options, cells,
         "ctcbridge-engine")


__all__ = ["load", "call", "check", "companion", "engine_version", "workspace_bytes", "Options",
           "Problem"]


# ------------------------------------------------------- alignment and decoding
# The four functions of ctcb_decode.c (backends/include/ctcbridge.h, "alignment
# and decoding"); their prototypes are declared on first use, so that a library
# without them still serves the loss.


class DecodeOptions(ctypes.Structure):
    """struct ctcb_decode_options."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("blank", ctypes.c_int32),
        ("input_kind", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("merge_repeated", ctypes.c_int32),
        ("beam_width", ctypes.c_int32),
        ("top_paths", ctypes.c_int32),
        ("pad", ctypes.c_int64),
        ("cancel", ctypes.POINTER(ctypes.c_int32)),
    ]


class DecodeInput(ctypes.Structure):
    """struct ctcb_decode_input: the fields of ctcb_problem without its outputs."""

    _fields_ = Problem._fields_[: Problem._fields_.index(("losses", ctypes.c_void_p))]


_decode_declared = False


def decoder() -> ctypes.CDLL:
    """The engine library with the alignment and decoding prototypes declared."""
    global _decode_declared
    lib = load()
    if _decode_declared:
        return lib
    with _lock:
        _in, _opt = ctypes.POINTER(DecodeInput), ctypes.POINTER(DecodeOptions)
        try:
            # int ctcb_decode_options_init(ctcb_decode_options *options);
            lib.ctcb_decode_options_init.argtypes = [_opt]
            lib.ctcb_decode_options_init.restype = ctypes.c_int
            # int ctcb_forced_align(const ctcb_decode_input *input,
            #     const ctcb_decode_options *options, int64_t *path, void *path_scores,
            #     int64_t *label_index);
            lib.ctcb_forced_align.argtypes = [_in, _opt, _P_I64, ctypes.c_void_p, _P_I64]
            # int ctcb_posteriors(const ctcb_decode_input *input,
            #     const ctcb_decode_options *options, void *posteriors,
            #     const int64_t post_strides[3]);
            lib.ctcb_posteriors.argtypes = [_in, _opt, ctypes.c_void_p, _P_I64]
            # int ctcb_decode_greedy(const ctcb_decode_input *input,
            #     const ctcb_decode_options *options, int64_t *sequences, int64_t *lengths,
            #     void *scores);
            # int ctcb_decode_beam(... the same arguments ...);
            for name in ("ctcb_decode_greedy", "ctcb_decode_beam"):
                getattr(lib, name).argtypes = [_in, _opt, _P_I64, _P_I64, ctypes.c_void_p]
            for name in ("ctcb_forced_align", "ctcb_posteriors", "ctcb_decode_greedy",
                         "ctcb_decode_beam"):
                getattr(lib, name).restype = ctypes.c_int
        except AttributeError as exc:
            raise EngineLoadError(
                f"the loaded ctcbridge engine ({lib._name}) has no alignment and decoding "
                f"functions ({exc}): a stale build; reinstall with `pip install .`") from None
        _decode_declared = True
    return lib


def default_decode_options() -> DecodeOptions:
    opts = DecodeOptions()
    decoder().ctcb_decode_options_init(ctypes.byref(opts))
    return opts


def call_decode(name: str, inp: DecodeInput, options: DecodeOptions, *outputs,
                cells: int = 0) -> None:
    """Run the decode function ``name`` (e.g. "ctcb_forced_align") on ``inp``,
    ``options`` and its output pointers; raises on any non-zero status (a long
    call from the main thread is interruptible, as the loss: see :func:`_run`)."""
    lib = decoder()
    inp.struct_size = ctypes.sizeof(DecodeInput)
    options.struct_size = ctypes.sizeof(DecodeOptions)
    _run(lib, getattr(lib, name), (ctypes.byref(inp), ctypes.byref(options), *outputs), options,
         cells, "ctcbridge-decode")


__all__ += ["DecodeOptions", "DecodeInput", "decoder", "default_decode_options", "call_decode"]
