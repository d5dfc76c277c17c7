"""The TensorFlow bridge: ``tf.custom_gradient`` around the engine.

Eagerly the engine runs directly on the tensors' memory (DLPack views), its
result arrays become tensors without a copy, and the call is recorded on the
tapes as one operation (:meth:`TensorFlowBridge._eager`).  Inside a
``tf.function``, a signature whose call carries a ``traced["tensorflow"]`` (its
numpy ``prepare`` written with TF ops, returning a
:class:`~ctcbridge._contract.Traced`) runs the
engine as the custom op ``CtcbridgeCtcLoss`` (``libctcbridge_tf``, built
beside the engine and loaded with ``tf.load_op_library``) on float32/float64
activations: no Python and no copies per call.  Cases the TF-op preparation
does not settle switch, inside the graph (``tf.cond``), to the numpy path
through ``tf.numpy_function``, which every other signature uses.  Gradients
come from the engine (``tf.GradientTape`` sees a custom gradient).

Under XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile=True``) a TF
op needs an XLA kernel, which neither the custom op nor ``numpy_function``
has.  There the same two routes are XLA FFI custom calls, registered with the
XLA inside TensorFlow through its FFI C API (``xla::ffi::GetXlaFfiApi``,
exported by ``libtensorflow_cc``) and called through ``XlaCallModule`` (a
StableHLO module, as jax2tf emits; dynamic dimensions are refined by XLA at
compile time): the engine's handler ``ctcb_xla_ffi_ctc_loss`` (the one the
JAX bridge uses), and a Python handler running the numpy path, for the
cases above and the other signatures.

The engine runs on the CPU, which an XLA program compiled for a GPU (or a TPU)
cannot call.  There a call whose signature has a traced preparation (the dense
``tf.nn.ctc_loss`` and ``keras.ops.ctc_loss``, the ones whose native compiles
for the GPU) is computed by TF's own dense CTC, the algorithm those natives
run under XLA (:func:`_xla_on_device`): the native's numbers, on the device,
and Keras ``fit`` with ``jit_compile="auto"`` (XLA wherever a GPU exists)
trains.  Other signatures (v1, ``ctc_batch_cost``: their native compiles
nowhere) are refused when the function is traced.
"""

from __future__ import annotations

import ctypes
import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np
import tensorflow as tf

from .. import _engine, _threads
from .._contract import CTCCall, run
from .._options import EngineOptions
from ..errors import CTCCompileError, CTCError, CTCNoSecondGradientError, EngineError
from .base import Bridge

try:  # recording an eager operation on the tapes: TF >= 2.13, then TF 2.12's module
    from tensorflow.python.eager import record as _record
except ImportError:  # pragma: no cover
    from tensorflow.python.eager import tape as _record


_op_lock = threading.Lock()
_op_module: Any = None  # None: not tried yet; False: unavailable


def _custom_op():
    """The loaded op library (its Python module), or None."""
    global _op_module
    with _op_lock:
        if _op_module is None:
            path = _engine.companion("ctcbridge_tf")
            try:
                module = tf.load_op_library(str(path)) if path is not None else None
            except (tf.errors.NotFoundError, OSError):  # a foreign or stale build
                module = None
            _op_module = module if hasattr(module, "ctcbridge_ctc_loss") else False
    return _op_module or None


def _op_call(call: CTCCall, xv, aux):
    """(losses, grad) from the custom op, or None where that route does not apply."""
    prepare = call.traced.get("tensorflow")
    if prepare is None or xv.dtype not in (tf.float32, tf.float64) or _custom_op() is None:
        return None
    t = prepare(xv, *aux)
    if t is None:
        return None
    attrs = EngineOptions.of(t.options, num_threads=BRIDGE.num_threads()).attributes()
    log_zero = tf.constant(attrs.pop("log_zero"), tf.float64)  # an input of the op
    ints = [tf.cast(a, tf.int64) for a in (t.labels, t.input_lengths, t.label_lengths)]
    losses, grad = _custom_op().ctcbridge_ctc_loss(t.activations, *ints, log_zero, **attrs)
    if t.needs_numpy is None:
        return losses, grad
    return tf.cond(t.needs_numpy(losses), lambda: _numpy_function(call, xv, aux),
                   lambda: (losses, grad))


def _numpy_function(call: CTCCall, xv, aux):
    def callback(xn, *an):
        return run(call, xn, *an, bridge=BRIDGE)

    losses, grad = tf.numpy_function(callback, [xv, *aux], [xv.dtype, xv.dtype], stateful=False)
    return losses, grad


# --- XLA: the engine and the numpy path as XLA FFI custom calls (see the module doc)

_XLA_ENGINE = "ctcbridge_ctc_loss"  # the engine's own handler, ctcb_xla_ffi_ctc_loss
_XLA_NUMPY = "ctcbridge_tf_numpy_path"  # _numpy_handler below


def _in_xla() -> bool:
    """Whether the graph being built is compiled by XLA (jit_compile=True)."""
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


class _Span(ctypes.Structure):  # XLA_FFI_ByteSpan
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Bundle(ctypes.Structure):  # XLA_FFI_Handler_Bundle
    _fields_ = [("instantiate", ctypes.c_void_p), ("prepare", ctypes.c_void_p),
                ("initialize", ctypes.c_void_p), ("execute", ctypes.c_void_p)]


class _RegisterArgs(ctypes.Structure):  # XLA_FFI_Handler_Register_Args
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("name", _Span), ("platform", _Span), ("bundle", _Bundle),
                ("traits", ctypes.c_uint32)]


class _Buffer(ctypes.Structure):  # XLA_FFI_Buffer
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("dtype", ctypes.c_int), ("data", ctypes.c_void_p), ("rank", ctypes.c_int64),
                ("dims", ctypes.POINTER(ctypes.c_int64))]


class _List(ctypes.Structure):  # XLA_FFI_Args, XLA_FFI_Rets
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.POINTER(ctypes.c_int)),
                ("items", ctypes.POINTER(ctypes.c_void_p))]


class _Attrs(ctypes.Structure):  # XLA_FFI_Attrs
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.POINTER(ctypes.c_int)),
                ("names", ctypes.POINTER(ctypes.POINTER(_Span))),
                ("attrs", ctypes.POINTER(ctypes.c_void_p))]


class _Extension(ctypes.Structure):  # XLA_FFI_Extension_Base + the metadata pointer
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int),
                ("next", ctypes.c_void_p), ("metadata", ctypes.c_void_p)]


class _Frame(ctypes.Structure):  # XLA_FFI_CallFrame
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("extension_start", ctypes.POINTER(_Extension)),
                ("api", ctypes.c_void_p), ("ctx", ctypes.c_void_p), ("stage", ctypes.c_int),
                ("args", _List), ("rets", _List), ("attrs", _Attrs)]


class _ErrorArgs(ctypes.Structure):  # XLA_FFI_Error_Create_Args
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_HANDLER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_Frame))
_ERROR_CREATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorArgs))
_REGISTER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_RegisterArgs))
_FFI_NUMPY = {2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.uint8, 7: np.uint16,
              8: np.uint32, 9: np.uint64, 10: np.float16, 11: np.float32, 12: np.float64,
              1: np.bool_}
_XLA_CALLS: list = []  # the calls the numpy handler runs, by the index its attribute holds
_XLA_INDEX: dict = {}


def _buffer_array(address) -> np.ndarray:
    """A numpy view of an XLA_FFI_Buffer."""
    buf = _Buffer.from_address(address)
    shape = tuple(buf.dims[i] for i in range(buf.rank))
    dtype = np.dtype(_FFI_NUMPY[buf.dtype])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return np.zeros(shape, dtype)
    raw = (ctypes.c_char * size).from_address(buf.data)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _ffi_error(api: int, errc: int, message: str):
    create = _ERROR_CREATE(ctypes.c_void_p.from_address(api + 48).value)  # api->Error_Create
    args = _ErrorArgs(ctypes.sizeof(_ErrorArgs), None, message.encode("utf-8", "replace"), errc)
    return create(ctypes.byref(args))


def _numpy_handler_impl(frame_p):
    frame = frame_p.contents
    ext = frame.extension_start
    if ext and ext.contents.type == 1:  # the runtime asks for the handler's API version
        metadata = ext.contents.metadata  # XLA_FFI_Metadata: {size, {size, ext, 0, 1}, traits}
        ctypes.memmove(metadata + 8, ctypes.byref((ctypes.c_size_t * 2)(24, 0)), 16)
        ctypes.memmove(metadata + 24, ctypes.byref((ctypes.c_int * 2)(0, 1)), 8)
        ctypes.c_uint32.from_address(metadata + 32).value = 0
        return None
    if frame.stage != 3:  # only the execute stage does anything
        return None
    try:
        index = None
        for i in range(frame.attrs.size):
            name = frame.attrs.names[i].contents
            if ctypes.string_at(name.ptr, name.len) == b"call":
                value = ctypes.c_void_p.from_address(frame.attrs.attrs[i] + 8).value
                index = ctypes.c_int64.from_address(value).value
        call = _XLA_CALLS[index]
        arrays = [_buffer_array(frame.args.items[i]) for i in range(frame.args.size)]
        losses, grad = run(call, arrays[0], *arrays[1:], bridge=BRIDGE)
        outs = [_buffer_array(frame.rets.items[i]) for i in range(frame.rets.size)]
        for out, value in zip(outs, (losses, grad)):
            if out.shape != np.shape(value):
                raise EngineError(f"ctcbridge: XLA result of shape {out.shape}, computed "
                                  f"{np.shape(value)}")
            out.flags.writeable = True
            out[...] = value
        return None
    except Exception as exc:  # reported by XLA; TF raises it as InvalidArgumentError
        invalid = isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, EngineError)
        return _ffi_error(frame.api, 3 if invalid else 13, f"{type(exc).__name__}: {exc}")


_numpy_handler = _HANDLER(_numpy_handler_impl)  # kept alive: XLA holds its address
_xla_lock = threading.Lock()
_xla_state: Any = None  # None: not tried; a string: why the route is unavailable; True


def _xla_registered() -> bool | str:
    """Register both handlers with TF's XLA once: True, or why it cannot be."""
    global _xla_state
    with _xla_lock:
        if _xla_state is None:
            _xla_state = _register()
    return _xla_state


def _register() -> bool | str:
    path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
    try:
        get_api = ctypes.CDLL(path)._ZN3xla3ffi12GetXlaFfiApiEv  # xla::ffi::GetXlaFfiApi()
        engine = ctypes.cast(_engine.load().ctcb_xla_ffi_ctc_loss, ctypes.c_void_p).value
    except (OSError, AttributeError, CTCError) as exc:
        return f"this TensorFlow exports no XLA FFI API, or the engine lacks its handler ({exc})"
    get_api.restype = ctypes.c_void_p
    api = get_api()
    if ctypes.c_int.from_address(api + 16 + 16).value != 0:  # api_version.major_version
        return "this TensorFlow's XLA FFI API is not version 0.x"
    register = _REGISTER(ctypes.c_void_p.from_address(api + 72).value)  # api->Handler_Register
    keep = []
    for name, handler in ((_XLA_ENGINE, engine),
                          (_XLA_NUMPY, ctypes.cast(_numpy_handler, ctypes.c_void_p).value)):
        name_b, platform = ctypes.create_string_buffer(name.encode()), ctypes.create_string_buffer(b"Host")
        keep += [name_b, platform]
        args = _RegisterArgs(ctypes.sizeof(_RegisterArgs), None,
                             _Span(ctypes.addressof(name_b), len(name)),
                             _Span(ctypes.addressof(platform), 4),
                             _Bundle(None, None, None, handler), 0)
        if register(args) is not None:  # an XLA_FFI_Error: e.g. registered by another copy
            return f"XLA refused the custom call {name}"
    return True


_MLIR_TYPES = {tf.float16: "f16", tf.float32: "f32", tf.float64: "f64", tf.int8: "i8",
               tf.int16: "i16", tf.int32: "i32", tf.int64: "i64", tf.uint8: "ui8",
               tf.bool: "i1"}


def _tensor_type(rank: int, dtype) -> str:
    return f"tensor<{'?x' * rank}{_MLIR_TYPES[dtype]}>"


def _xla_custom_call(target: str, operands, batch_axis: int, attrs: dict):
    """(losses, grad) of the custom call `target` on `operands` (the activations
    first), through XlaCallModule: every dimension dynamic in the module, refined by
    XLA to the operands' shapes when it compiles; the losses have the activations'
    size along `batch_axis`, the gradient their shape."""
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    for o in operands:
        if o.shape.rank is None or o.dtype not in _MLIR_TYPES:
            raise CTCCompileError(f"ctcbridge under jit_compile=True: an operand of unknown "
                                  f"rank or of dtype {o.dtype.name}")
    x = operands[0]
    rank = x.shape.rank
    types = [_tensor_type(o.shape.rank, o.dtype) for o in operands]
    x_type, loss_type = types[0], _tensor_type(1, x.dtype)
    lines = [f"%d{i} = stablehlo.get_dimension_size %a0, dim = {i} : ({x_type}) -> tensor<i32>"
             for i in range(rank)]
    lines += [f"%r{i} = stablehlo.reshape %d{i} : (tensor<i32>) -> tensor<1xi32>"
              for i in range(rank)]
    dims = ", ".join(f"%r{i}" for i in range(rank))
    lines += [f"%g32 = stablehlo.concatenate {dims}, dim = 0 : "
              f"({', '.join(['tensor<1xi32>'] * rank)}) -> tensor<{rank}xi32>",
              f"%gs = stablehlo.convert %g32 : (tensor<{rank}xi32>) -> tensor<{rank}xi64>",
              f"%ls = stablehlo.convert %r{batch_axis} : (tensor<1xi32>) -> tensor<1xi64>"]
    n = len(operands)
    config = ", ".join(f"{k} = {v}" for k, v in sorted(attrs.items()))
    args = ", ".join(f"%a{i}" for i in range(n))
    lines.append(
        f"%out:2 = stablehlo.custom_call @{target}({args}, %ls, %gs) {{api_version = 4 : i32, "
        f"indices_of_shape_operands = dense<[{n}, {n + 1}]> : tensor<2xi64>, "
        f"backend_config = {{{config}}}}} : ({', '.join(types)}, tensor<1xi64>, "
        f"tensor<{rank}xi64>) -> ({loss_type}, {x_type})")
    lines.append(f"return %out#0, %out#1 : {loss_type}, {x_type}")
    params = ", ".join(f"%a{i}: {t}" for i, t in enumerate(types))
    module = ("module @ctcbridge attributes {jax.uses_shape_polymorphism = true, "
              "mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {\n"
              f"  func.func public @main({params}) -> ({loss_type}, {x_type}) {{\n    "
              + "\n    ".join(lines) + "\n  }\n}\n")
    losses, grad = tfxla.call_module(
        list(operands), version=tfxla.call_module_maximum_supported_version(), module=module,
        Tout=[x.dtype, x.dtype], Sout=[tf.TensorShape([x.shape[batch_axis]]), x.shape],
        platforms=["CPU"])
    return losses, grad


def _xla_numpy(call: CTCCall, xv, aux):
    """The numpy path (run) inside XLA, through the Python handler."""
    key = call.key or id(call)
    with _xla_lock:
        index = _XLA_INDEX.get(key)
        if index is None:
            index = _XLA_INDEX[key] = len(_XLA_CALLS)
            _XLA_CALLS.append(call)
    return _xla_custom_call(_XLA_NUMPY, [xv, *aux], call.batch_axis,
                            {"call": f"{index} : i64"})


def _xla_on_host(xv) -> bool:
    """Whether XLA compiles `xv`'s function for the CPU: no GPU or TPU exists, or
    the call is placed on a CPU (``with tf.device('/CPU:0')`` inside the function,
    which places a new op, or around its call, which is the tracing context's
    device).  Unplaced, TF places a compiled function on the GPU."""
    accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
    if not accelerators:
        return True
    from tensorflow.python.eager import context

    device = xv.device or tf.identity(xv).device or context.context().device_name or ""
    return "CPU" in device.upper()


# the engine options TF's dense CTC expresses (as tf.nn.ctc_loss's arguments)
_DEVICE_OPTIONS = {"blank", "inputs", "layout"}


def _xla_on_device(call: CTCCall, xv, aux):
    """(losses, grad) under XLA compiled for a GPU or TPU: the call's canonical form
    (its traced preparation) computed by ``tf.nn.ctc_loss`` on dense labels, TF's
    own forward-backward in TF ops (``ctc_loss_dense``), which XLA compiles for any
    device.  That is the native of the signatures with a traced preparation
    (``tf.nn.ctc_loss``, and ``keras.ops.ctc_loss``, which calls it): its value for
    a sample without a valid alignment is TF's sentinel arithmetic, which the
    numpy path's ``post`` reproduces elsewhere; its gradient, the tape's through
    TF's custom gradient, is TF's.  TF's dense CTC is float32 only: float64 is
    computed in float32 here (and cast back).

    XLA cannot raise at run time, so the input errors of the other routes (labels
    outside [0, C), lengths beyond the arrays, the signature's own checks in
    ``needs_numpy``, such as a label equal to a non-zero blank) make every loss and
    gradient of the call NaN instead.  Raises CTCCompileError (at trace time) for
    a call without a traced preparation or with options TF's dense CTC lacks."""
    prepare = call.traced.get("tensorflow")
    t = prepare(xv, *aux) if prepare is not None else None
    if t is None or t.options.get("inputs") != "logits" or set(t.options) - _DEVICE_OPTIONS:
        why = ("this signature's native does not compile for it either" if prepare is None
               else "the call's static shapes or dtypes do not settle it" if t is None
               else f"its options {t.options} are not tf.nn.ctc_loss's")
        raise CTCCompileError(
            f"ctcbridge under tf.function(jit_compile=True) on a GPU or TPU: the engine runs "
            f"on the CPU, which an XLA program compiled for the device cannot call, and "
            f"{why}; use jit_compile=False (Keras: model.compile(..., jit_compile=False)), "
            f"or compile the function on the CPU (with tf.device('/CPU:0'))")
    x = t.activations
    time_major = t.options.get("layout", "TNC") == "TNC"
    x32 = tf.cast(x, tf.float32)
    labels, input_lengths, label_lengths = (tf.cast(a, tf.int32) for a in
                                            (t.labels, t.input_lengths, t.label_lengths))
    with tf.GradientTape() as tape:  # a symbolic tape: the graph of TF's custom gradient
        tape.watch(x32)
        losses = tf.nn.ctc_loss(labels, x32, label_lengths, input_lengths,
                                logits_time_major=time_major, blank_index=t.options["blank"])
    grad = tf.cast(tape.gradient(losses, x32), x.dtype)  # per sample: d sum = stacked d loss_n
    losses = tf.cast(losses, x.dtype)
    if t.grad_back is not None:
        grad = t.grad_back(grad)
    invalid = _rejected(t, x, time_major)
    nan = tf.constant(float("nan"), x.dtype)
    return tf.where(invalid, nan, losses), tf.where(invalid, nan, grad)


def _rejected(t, x, time_major: bool):
    """Whether the other routes would raise for the traced call `t` (a boolean
    scalar): the engine's input checks and the signature's own (``needs_numpy``
    asked with finite losses, so that only its input checks answer)."""
    shape = tf.shape(x, out_type=tf.int64)
    T = shape[0] if time_major else shape[1]
    labels = tf.cast(t.labels, tf.int64)
    width = tf.shape(labels, out_type=tf.int64)[1]
    il, ll = tf.cast(t.input_lengths, tf.int64), tf.cast(t.label_lengths, tf.int64)
    used = tf.range(width)[None, :] < ll[:, None]
    bad = tf.reduce_any((il < 0) | (il > T)) | tf.reduce_any((ll < 0) | (ll > width))
    bad |= tf.reduce_any(used & ((labels < 0) | (labels >= shape[2])))
    if t.needs_numpy is not None:
        bad |= t.needs_numpy(tf.zeros_like(il, x.dtype))
    return bad


@tf.autograph.experimental.do_not_convert
def _xla_call(call: CTCCall, xv, aux):
    """(losses, grad) under XLA; raises CTCCompileError (at trace time) where the
    route does not exist."""
    if not _xla_on_host(xv):
        return _xla_on_device(call, xv, aux)
    state = _xla_registered()
    if state is not True:
        raise CTCCompileError(f"ctcbridge cannot run under tf.function(jit_compile=True): "
                              f"{state}; use jit_compile=False (Keras: "
                              f"model.compile(..., jit_compile=False))")
    if call.batch_axis is None:
        raise CTCCompileError("ctcbridge under jit_compile=True: an unbatched call")
    prepare = call.traced.get("tensorflow")
    t = prepare(xv, *aux) if prepare is not None and xv.dtype in (tf.float32, tf.float64) \
        else None
    if t is None:
        return _xla_numpy(call, xv, aux)
    attrs = EngineOptions.of(t.options, num_threads=BRIDGE.num_threads()).attributes()
    attrs = {k: (f"{v:.17e} : f64" if k == "log_zero" else f"{int(v)} : i64")
             for k, v in attrs.items()}
    ints = [tf.cast(a, tf.int64) for a in (t.labels, t.input_lengths, t.label_lengths)]
    batch_axis = 0 if t.options.get("layout") == "NTC" else 1
    losses, grad = _xla_custom_call(_XLA_ENGINE, [t.activations, *ints], batch_axis, attrs)
    if t.needs_numpy is None:
        return losses, grad
    return tf.cond(t.needs_numpy(losses), lambda: _xla_numpy(call, xv, aux),
                   lambda: (losses, grad))


# --- eager: the tensors' own memory in, the engine's arrays out, through DLPack

_ADOPTABLE = (np.dtype(np.float32), np.dtype(np.float64))
_TF_ALIGN = 64  # TF's tensors must start on 64 bytes: from_dlpack of another address aborts


def _host(t) -> np.ndarray:
    """An eager tensor's values as numpy: a read-only view of its memory on the CPU
    (DLPack), a copy where DLPack cannot give one (another device, bfloat16)."""
    try:
        return np.from_dlpack(t)
    except (RuntimeError, BufferError, TypeError, ValueError):
        return t.numpy()


def _adopt(a: np.ndarray, dtype) -> tf.Tensor:
    """A tensor of the engine's new array `a` (referenced nowhere else) in `dtype`:
    `a`'s own memory, through DLPack, where TF can take it (float32/float64,
    contiguous, 64-byte aligned, as _compute allocates it); a copy otherwise."""
    if (a.dtype in _ADOPTABLE and a.dtype == dtype.as_numpy_dtype and a.size
            and a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % _TF_ALIGN == 0):
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.constant(a, dtype=dtype)


@lru_cache(maxsize=None)  # both are fixed once TF's context exists (a tensor does)
def _default_threads() -> int:
    # TF's intra-op threads (0, TF's "all cores", is this process's cores), shared by
    # the logical CPU devices, whose replicas run their losses concurrently
    threads = tf.config.threading.get_intra_op_parallelism_threads() or \
        _threads.available_cores()
    devices = len(tf.config.list_logical_devices("CPU")) or 1
    return max(1, threads // devices)


def _refuse_second_derivative(*_):
    raise CTCNoSecondGradientError(
        "ctcbridge: the CTC loss has no second derivative in TensorFlow (as in graph "
        "mode: gradient registry has no entry for the gradient of CtcbridgeCtcLoss); the "
        "engine gives the exact first derivative only")


class TensorFlowBridge(Bridge):
    name = "tensorflow"
    converts = True

    def default_threads(self) -> int:
        return _default_threads()

    # AutoGraph converts what a traced function calls, down to here: the bridge has no
    # Python control flow on tensors to convert, and converting it would reach the
    # engine's first load (importlib.resources imports through _gcd_import, whose
    # source AutoGraph cannot read: it warns on the process's first traced call)
    @tf.autograph.experimental.do_not_convert
    def ctc(self, call: CTCCall, activations, aux):
        # a tf.Variable is read here, outside the custom gradient: one read inside it
        # would make tf.custom_gradient ask grad_fn for the variables' gradients
        x = tf.convert_to_tensor(activations)
        if tf.executing_eagerly():
            return self._eager(call, x, [_host(tf.convert_to_tensor(a))
                                         if isinstance(a, (tf.Tensor, tf.Variable))
                                         else np.asarray(a) for a in aux])
        aux = [tf.convert_to_tensor(a) if isinstance(a, (tf.Tensor, tf.Variable))
               else tf.convert_to_tensor(np.asarray(a)) for a in aux]

        @tf.custom_gradient
        def op(xv):
            if _in_xla():  # jit_compile=True: XLA custom calls
                low = xv.dtype not in (tf.float32, tf.float64)  # computed in float32
                xc = tf.cast(xv, tf.float32) if low else xv
                losses, grad = _xla_call(call, xc, aux)
                if low:
                    losses, grad = tf.cast(losses, xv.dtype), tf.cast(grad, xv.dtype)
                n = call.batch_size(tuple(xv.shape)) if xv.shape.is_fully_defined() else None
                losses.set_shape([n])
                grad.set_shape(xv.shape)
            else:
                done = _op_call(call, xv, aux)
                losses, grad = done if done is not None else _numpy_function(call, xv, aux)
                n = call.batch_size(tuple(xv.shape)) if xv.shape.is_fully_defined() else None
                losses.set_shape([n])
                grad.set_shape(xv.shape)

            def grad_fn(g, variables=None):
                if variables:  # nothing is read inside but the activations (see above)
                    return self.scale_per_sample(grad, g, call.batch_axis), [None] * len(variables)
                return self.scale_per_sample(grad, g, call.batch_axis)

            return losses, grad_fn

        return op(x)

    def _eager(self, call: CTCCall, x, aux):
        """The losses of an eager call, recorded on the active tapes as one operation
        whose backward is the engine's gradient (what ``tf.custom_gradient`` records
        in eager mode, without its per-call inspection of the function); the
        gradient is computed only where a tape or an accumulator could use it."""
        want = _record.could_possibly_record()
        losses, grad = run(call, _host(x), *aux, want_grad=want, bridge=BRIDGE)
        losses = _adopt(losses, x.dtype)
        if want:
            grad = _adopt(grad, x.dtype)

            def backward(g):
                if bool((_host(g) == 1).all()):
                    out = grad  # d sum(losses): no new tensor
                else:
                    out = self.scale_per_sample(grad, g, call.batch_axis)
                if _record.could_possibly_record():
                    # an outer tape records this backward (a second derivative):
                    # the engine's gradient is a constant to it, so it would come
                    # back None (read as zero).  Refuse, as graph mode does
                    out = tf.identity(out)
                    _record.record_operation("CtcbridgeCtcLossGrad", [out], [x, g],
                                             _refuse_second_derivative)
                return [out]

            def forward(dx):  # forward mode: d loss[n] = <grad[n], dx[n]>
                axes = [i for i in range(len(grad.shape)) if i != call.batch_axis]
                return [tf.reduce_sum(grad * tf.cast(dx, grad.dtype), axis=axes)]

            _record.record_operation("CtcbridgeCtcLoss", [losses], [x], backward, forward)
        return losses

    def asarray(self, x, like=None):
        return tf.convert_to_tensor(x)

    def astype(self, x, like):
        return tf.cast(tf.convert_to_tensor(x), like.dtype)

    def sum(self, x):
        return tf.reduce_sum(x)

    def mean(self, x):
        return tf.reduce_mean(x)

    def maximum(self, x, value):
        return tf.maximum(x, tf.cast(value, x.dtype))

    def reshape(self, x, shape):
        return tf.reshape(x, shape)

    def stack(self, arrays, axis):
        return tf.stack([tf.convert_to_tensor(a) for a in arrays], axis)

    def convert_asarray(self, x):
        return x

    def transpose(self, x, axes):
        return tf.transpose(x, axes)

    def take_classes(self, x, index):
        return tf.gather(x, index, axis=-1)

    def log(self, x):
        return tf.math.log(x)

    def class_log_softmax(self, x):
        return tf.nn.log_softmax(x, -1)

    def class_softmax(self, x):
        return tf.nn.softmax(x, -1)

    def unstack(self, x):
        return tf.unstack(x, axis=0)

    def grad_of_sum(self, fn, x, arrays, statics, order):
        # as the other runners: an infinite loss keeps its defined gradient (e.g.
        # warp-ctc's softmax for a sample without an alignment)
        xv = tf.Variable(x)
        conv = {k: tf.constant(v) for k, v in arrays.items()}
        with tf.GradientTape() as tape:
            out = fn(**order(fn, xv, conv), **statics)
            total = tf.reduce_sum(out)
        grad = tape.gradient(total, xv)
        return np.asarray(out), (None if grad is None else grad.numpy())

    def log_softmax(self, x):
        return tf.nn.log_softmax(x, axis=-1)


BRIDGE = TensorFlowBridge()
