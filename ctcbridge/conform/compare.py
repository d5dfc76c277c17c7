"""Compare CTC implementations with the float64 reference on the corpus cases.

This is what ``ctcbridge conform`` runs:

* :func:`check_engine`: the canonical engine API in float32 and float64;
* :func:`check_signature`: one signature row (``ctcbridge.conform.rows``),
  ours or the framework's native, on one framework's arrays;
* :func:`check_impl`: a user's own function written in one signature's
  convention, with a description of where it differs;
* :func:`run_matrix`: every row on every framework installed here.

The divergence file and its renderings are :mod:`ctcbridge.conform.divergences`.

A case is converted into a row's conventions by the row's ``prepare`` (with
the reference's values converted the same way); the worst relative loss
error and the worst absolute gradient error are compared with
:data:`TOLERANCES`.  Equal infinities and NaNs count as exact.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._bridges import FRAMEWORKS, bridge_named
from ..canonical import ctc_loss_and_grad
from ..errors import CTCValueError
from .corpus import Case

# Worst errors allowed, (loss relative, gradient absolute), per dtype.  float32
# carries ~7 significant digits through sums over thousands of frames.
TOLERANCES = {
    "float64": (1e-9, 1e-9),
    "float32": (2e-5, 2e-4),
}

# The array frameworks with a bridge module ctcbridge._bridges.<name>, in matrix order.
ARRAY_FRAMEWORKS = FRAMEWORKS

# How many differing samples / an exception's text a report shows.
_MAX_SAMPLES = 4


@dataclass
class Result:
    case: str
    row: str
    loss_error: float
    grad_error: float | None  # None: no gradient was measured (numpy arrays have no autodiff)
    passed: bool
    error: str = ""  # the exception the implementation raised, if it did
    details: list = field(default_factory=list)  # where it differs, for people
    skipped: str = ""  # why the case was not run (a native that would exhaust memory)
    # results no CTC loss can have (a negative loss, NaN where the reference is finite,
    # gradient rows w.r.t. logits not summing to 0): the likeliest bugs
    impossible: list = field(default_factory=list)
    samples: list = field(default_factory=list)  # the indices of the differing samples


def _errors(ours, ref, relative: bool) -> np.ndarray:
    """Elementwise error; equal values (infinities, NaNs) 0, a NaN on one side only inf."""
    ours = np.asarray(ours, dtype=np.float64)
    same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(ours - ref)
        if relative:
            err = err / np.maximum(np.abs(ref), 1.0)
    err = np.where(same, 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


def _loss_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst relative loss error; equal infinities and NaNs count as exact."""
    return float(_errors(ours, ref, True).max(initial=0.0))


def _grad_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst absolute gradient error; NaN against NaN counts as exact."""
    return float(_errors(ours, ref, False).max(initial=0.0))


def check_engine(case: Case, dtype: str, ref=None) -> Result:
    """The canonical engine API on `case` in `dtype` against the reference."""
    ref_loss, ref_grad = ref if ref is not None else case.reference()
    x = case.activations.astype(dtype)
    loss, grad = ctc_loss_and_grad(x, case.labels, **case.kwargs())
    loss_tol, grad_tol = TOLERANCES[dtype]
    le, ge = _loss_error(loss, ref_loss), _grad_error(grad, ref_grad)
    return Result(case.name, f"engine {dtype}", le, ge, le <= loss_tol and ge <= grad_tol)


def installed_frameworks() -> list[str]:
    """numpy plus the array frameworks importable here (found without importing them)."""
    from importlib.util import find_spec

    return ["numpy"] + [fw for fw in ARRAY_FRAMEWORKS
                        if find_spec(fw) is not None and find_spec(f"ctcbridge._bridges.{fw}")]


def _prepared(row, case: Case, cache: dict | None):
    """The row's float32 conversion of `case`, cached per (row, case)."""
    key = (row.name, case.name)
    prep = cache.get(key) if cache is not None else None
    if prep is None:
        with np.errstate(all="ignore"):  # the reference on NaN/inf cases
            prep = row.prepare(case, "float32")
        if cache is not None:
            cache[key] = prep
    return prep


def sample_text(case: Case, n: int) -> str:
    """Sample `n` of `case` as a report names it: its frames, classes, blank and labels."""
    L = int(case.label_lengths[n])
    labels = case.labels[n, :L].tolist()
    shown = str(labels) if L <= 12 else str(labels[:12])[:-1] + ", ...]"
    return (f"sample {n}: T={int(case.input_lengths[n])} C={case.shape[2]} blank={case.blank} "
            f"labels {shown} (length {L})")


def _impossible(case: Case, prep, loss, grad) -> list:
    """What no CTC loss can return, where the reference shows the case allows it: a
    negative loss, NaN or inf where the reference is finite, gradient rows w.r.t.
    logits (rows that sum to 0 in the reference) that do not sum to 0."""
    out = []
    ref = prep.ref_loss
    if loss.shape == ref.shape == (case.shape[1],):
        with np.errstate(invalid="ignore"):
            lf = np.asarray(loss, dtype=np.float64)
        negative = np.flatnonzero(lf < -1e-4 * np.maximum(np.abs(ref), 1.0))
        if negative.size and (np.nan_to_num(ref, nan=0.0, posinf=0.0) >= 0).all():
            n = int(negative[0])
            out.append(f"impossible: negative loss {lf[n]:.6g} ({sample_text(case, n)}); "
                       "a CTC loss is -log of a probability")
        wild = np.flatnonzero(~np.isfinite(lf) & np.isfinite(ref))
        if wild.size:
            n = int(wild[0])
            out.append(f"impossible: loss {lf[n]} where the reference is finite "
                       f"({ref[n]:.6g}) in {wild.size} sample(s), first {sample_text(case, n)}")
    if grad is not None and grad.shape == prep.ref_grad.shape and grad.ndim >= 2:
        with np.errstate(invalid="ignore", over="ignore"):
            ref_sums = prep.ref_grad.sum(-1)
            sums = grad.sum(-1)
            # the reference's rows that sum to 0 (logits, used frames) and are not all 0
            logits_rows = np.isfinite(ref_sums) & (np.abs(ref_sums) < 1e-6) & \
                (np.abs(prep.ref_grad).max(-1) > 1e-6)
            off = logits_rows & ~(np.abs(sums) < 1e-3)
        if logits_rows.any() and off.any():
            idx = tuple(int(i) for i in np.argwhere(off)[0])
            out.append(f"impossible: {int(off.sum())} gradient row(s) w.r.t. the logits do not "
                       f"sum to 0 over the classes (first at {idx}: {sums[idx]:.6g}); a "
                       "softmax's gradient rows always do")
    return out


def _compare(row, case: Case, prep, loss, grad, label: str) -> Result:
    """A Result for (loss, grad) against the prepared reference, with where it differs."""
    try:
        return _compare_arrays(row, case, prep, loss, grad, label)
    except Exception as exc:  # an output no array can be made of: a report line
        return _failure(case, label, exc, "returned something not comparable: ")


def _compare_arrays(row, case: Case, prep, loss, grad, label: str) -> Result:
    loss_tol, grad_tol = TOLERANCES["float32"]
    loss = np.asarray(loss)
    details = []
    if loss.shape != prep.ref_loss.shape:
        details.append(f"losses have shape {loss.shape}; the convention's (reduction "
                       f"'none') are {prep.ref_loss.shape}")
        return Result(case.name, label, float("inf"), float("inf"), False, details=details)
    lerr = _errors(loss, prep.ref_loss, True)
    bad = np.flatnonzero(lerr > loss_tol)
    samples = []
    if lerr.shape == (case.shape[1],):  # per-sample losses
        samples = [int(n) for n in bad]
        for n in bad[:_MAX_SAMPLES]:
            details.append(f"{sample_text(case, n)}: loss {float(loss[n]):.9g}, reference "
                           f"{prep.ref_loss[n]:.9g}")
        if bad.size > _MAX_SAMPLES:
            details.append(f"... {bad.size} samples differ in all")
    elif bad.size:  # an output of another shape (WarpCTC's softmax)
        idx = np.unravel_index(int(np.argmax(lerr)), lerr.shape)
        details.append(f"output: {bad.size} of {lerr.size} entries differ; worst at index "
                       f"{tuple(map(int, idx))}: {float(loss[idx]):.9g}, reference "
                       f"{prep.ref_loss[idx]:.9g}")
    ge = None
    if grad is not None:
        grad, ref = np.asarray(grad, dtype=np.float64), prep.ref_grad
        if grad.shape != ref.shape:
            details.append(f"gradient has shape {grad.shape}, the activations {ref.shape}")
            ge = float("inf")
        else:
            if row.relative_grad:  # w.r.t. probabilities: 1/(p + eps) scales it
                scale = np.maximum(np.abs(np.nan_to_num(ref)), 1.0)
                grad, ref = grad / scale, ref / scale
            gerr = _errors(grad, ref, False)
            ge = float(gerr.max(initial=0.0))
            if ge > grad_tol:
                idx = np.unravel_index(int(np.argmax(gerr)), gerr.shape)
                details.append(
                    f"gradient: {np.count_nonzero(gerr > grad_tol)} of {gerr.size} entries "
                    f"off by more than {grad_tol:g}; worst at index {tuple(map(int, idx))} of "
                    f"the activations {grad.shape}: {grad[idx]:.9g}, reference {ref[idx]:.9g}")
    le = float(lerr.max(initial=0.0))
    passed = le <= loss_tol and (ge is None or ge <= grad_tol)
    impossible = [] if passed else \
        _impossible(case, prep, loss, None if row.relative_grad else grad)
    return Result(case.name, label, le, ge, passed, details=details, impossible=impossible,
                  samples=samples)


def _failure(case: Case, label: str, exc: BaseException, prefix: str = "raised ") -> Result:
    text = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300]
    return Result(case.name, label, float("inf"), float("inf"), False, error=text,
                  details=[f"{prefix}{text}"])


def available_memory() -> float:
    """Bytes available to a new allocation (Linux's MemAvailable; inf where unknown)."""
    from .._compute import _available_memory

    free = _available_memory()
    return float("inf") if free is None else float(free)


def check_signature(row, case: Case, fw: str, native: bool = False, cache: dict | None = None):
    """One signature (ours, or the native with native=True) on one framework's arrays,
    float32, against the reference converted to its conventions.  None if the case
    does not apply to the signature."""
    if not row.applicable(case):
        return None
    label = f"{'native ' if native else ''}{row.name} [{fw}]"
    if native and row.native_memory is not None:
        need, free = row.native_memory(case), available_memory()
        if need > free / 2:
            return Result(case.name, label, 0.0, 0.0, True, skipped=(
                f"{row.native} would need about {need / 2**30:.0f} GiB here "
                f"({free / 2**30:.0f} GiB available)"))
    prep = _prepared(row, case, cache)
    try:
        loss, grad = row.call(prep, fw, native=native)
    except Exception as exc:  # a native that rejects the case: a failed cell with the reason
        return _failure(case, label, exc)
    return _compare(row, case, prep, loss, grad, label)


# --------------------------------------------------------------------------
# a user's implementation
# --------------------------------------------------------------------------


def rows_by_name() -> dict:
    """Every signature row by its name (``torch.ctc_loss``), by its native's dotted
    path (``torch.nn.functional.ctc_loss``) and by the name ``ctcbridge explain``
    gives it (``torch``)."""
    from .rows import ROWS

    names = {}
    for row in ROWS:
        names.setdefault(row.name, row)
        if row.native:
            names.setdefault(row.native.replace(":", "."), row)
    for row in ROWS:
        names.setdefault(row.convention.name, row)
    return names


def find_convention(name: str):
    """The signature row called `name`; a ValueError listing the names otherwise."""
    rows = rows_by_name()
    if name not in rows:
        from .rows import ROWS

        raise CTCValueError(f"unknown convention {name!r}; the conventions are: "
                         + ", ".join(r.name for r in ROWS))
    return rows[name]


def load_impl(spec: str) -> Callable:
    """The function named by ``module:function`` (dotted attributes allowed) or
    ``path/to/file.py:function``; the current directory is importable."""
    if ":" not in spec:
        raise CTCValueError(f"--impl wants module:function or file.py:function, got {spec!r}")
    target, attr = spec.rsplit(":", 1)
    if target.endswith(".py"):
        from importlib.util import module_from_spec, spec_from_file_location
        from pathlib import Path

        path = Path(target).resolve()
        mod_spec = spec_from_file_location(path.stem, path)
        if mod_spec is None or not path.is_file():
            raise CTCValueError(f"no Python file {target}")
        module = module_from_spec(mod_spec)
        sys.modules.setdefault(path.stem, module)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # the file itself fails: its first line, exit 2
            raise CTCValueError(f"--impl {spec}: importing {target} raised "
                                f"{type(exc).__name__}: {exc}") from None
    else:
        if "" not in sys.path:  # a console script does not see the current directory
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(target)
        except ImportError as exc:  # a usage error, not a crash: one line, exit 2
            raise CTCValueError(f"--impl {spec}: cannot import {target!r} ({exc})") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CTCValueError(f"--impl {spec}: {getattr(fn, '__name__', target)} has no "
                                f"attribute {part!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise CTCValueError(f"{spec} is not callable")
    return fn


def _moved(fw: str, device: str):
    """(to_device, back) for one framework's arrays, or None when `device` is unset."""
    return bridge_named(fw).device_moves(device) if device else None


# Conventions whose activations are log-probabilities (time-major, like the corpus):
# --through-log-softmax applies to them.
LOG_PROB_CONVENTIONS = ("torch.ctc_loss",)


def _through_log_softmax(row, case: Case, prep, cache: dict | None):
    """`prep` with logits as the activations and the reference's gradient w.r.t. them:
    the function then gets log_softmax(logits) computed in the framework, as in a
    model, where torch's native gradient (softmax - gamma) is right too."""
    from dataclasses import replace

    if row.name not in LOG_PROB_CONVENTIONS:
        raise CTCValueError(f"--through-log-softmax is for the log-probability conventions "
                         f"({', '.join(LOG_PROB_CONVENTIONS)}), not {row.name}")
    key = ("through-log-softmax", row.name, case.name)
    if cache is not None and key in cache:
        return cache[key]
    if case.inputs == "logits":
        loss, grad = case.reference()
    else:  # log-probabilities are logits too (log_softmax is idempotent)
        from .. import reference

        with np.errstate(all="ignore"):
            loss, grad = reference.ctc_loss_and_grad(
                case.activations, case.labels, case.input_lengths, case.label_lengths,
                blank=case.blank, inputs="logits")
    out = replace(prep, x=case.activations.astype(prep.x.dtype), ref_loss=loss, ref_grad=grad)
    if cache is not None:
        cache[key] = out
    return out


def as_convention(fn: Callable, row, fw: str = "numpy", device: str = "",
                  through_log_softmax: bool = False) -> Callable:
    """`fn` callable the way a row calls ours: with the signature of ctcbridge's own
    function for that convention, forwarding the arguments in the convention's
    positional order (so ``autograd.Function.apply`` and C extensions work) and, with
    `device`, moving the framework's arrays there and the losses back.  With
    `through_log_softmax` the activations it is given are log_softmax(x)."""
    ours = row.ours()
    try:
        sig = inspect.signature(ours)
    except (TypeError, ValueError):
        sig = None
    move = _moved(fw, device)
    pre = bridge_named(fw).log_softmax if through_log_softmax else None
    x_name = row.activations

    def call(**kwargs):
        if move is not None:
            kwargs = {k: move[0](v) for k, v in kwargs.items()}
        if pre is not None:
            kwargs[x_name] = pre(kwargs[x_name])
        args, kw = (), kwargs
        if sig is not None:
            try:
                bound = sig.bind(**kwargs)
                args, kw = bound.args, bound.kwargs
            except TypeError:
                pass
        out = fn(*args, **kw)
        return out if move is None else move[1](out)

    if sig is not None:
        call.__signature__ = sig  # it looks like ours to inspect and help()
    call.__name__ = getattr(fn, "__name__", "impl")
    return call


def check_impl(fn: Callable, row, case: Case, fw: str, device: str = "",
               cache: dict | None = None, through_log_softmax: bool = False):
    """A user's `fn` in `row`'s convention on `fw` arrays against the reference; None
    when the convention does not accept the case.  `through_log_softmax`: feed it
    log_softmax(logits) and compare the gradient w.r.t. the logits."""
    from .rows import run_on

    if not row.applicable(case):
        return None
    if through_log_softmax and not np.isfinite(case.activations).all():
        # autodiff through log_softmax turns a NaN/inf anywhere in a frame (padding
        # included) into NaN gradients of the whole frame: these cases are checked
        # without --through-log-softmax
        return None
    prep = _prepared(row, case, cache)
    if through_log_softmax:
        prep = _through_log_softmax(row, case, prep, cache)
    label = f"{getattr(fn, '__name__', 'impl')} as {row.name} [{fw}]"
    try:
        call = as_convention(fn, row, fw, device, through_log_softmax)
        loss, grad = run_on(fw, call, prep, row.flatten, row.activations)
    except Exception as exc:
        return _failure(case, label, exc)
    return _compare(row, case, prep, loss, grad, label)


# --------------------------------------------------------------------------
# the matrix
# --------------------------------------------------------------------------


def matrix_plan(rows, frameworks: list[str], native: bool = False) -> list[tuple]:
    """(row, is_native, framework) for every cell the matrix runs, in order."""
    rows = [row for row in rows if row.available()]
    plan = [(row, False) for row in rows] + ([(row, True) for row in rows] if native else [])
    return [(row, is_native, fw) for row, is_native in plan for fw in frameworks
            if fw in (row.native_frameworks if is_native else row.frameworks)]


def worst_grad(results) -> float | None:
    """The worst measured gradient error; None when no result measured one."""
    measured = [r.grad_error for r in results if r.grad_error is not None]
    return max(measured) if measured else None


def run_matrix(cases: list[Case], rows, frameworks: list[str], native: bool = False,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every row (and with `native` every native) on every framework in `frameworks`
    that it runs on: one dict per row, ``{signature, native, cells: {fw: cell}}`` with
    ``cell = {passed, loss_error, grad_error, cases, failed_cases, results}`` (grad_error
    None where no gradient was measured: numpy arrays).  `progress` is called once per
    case run (``len(matrix_plan(...)) * len(cases)`` calls)."""
    cache: dict = {}
    available = [row for row in rows if row.available()]
    matrix = [dict(signature=("native " if is_native else "") + row.name, native=is_native,
                   cells={})
              for is_native in ((False, True) if native else (False,)) for row in available]
    by_row = {(m["signature"].replace("native ", "", 1), m["native"]): m for m in matrix}
    for row, is_native, fw in matrix_plan(rows, frameworks, native):
        key = (row.name, is_native)
        start = time.perf_counter()
        results = []
        for i, case in enumerate(cases):
            if progress is not None:
                progress(f"{'native ' if is_native else ''}{row.name} on {fw}: "
                         f"[{i + 1}/{len(cases)}] {case.name}")
            r = check_signature(row, case, fw, is_native, cache)
            if r is not None:
                results.append(r)
        skipped = [r for r in results if r.skipped]
        results = [r for r in results if not r.skipped]
        by_row[key]["cells"][fw] = dict(
            passed=all(r.passed for r in results),
            loss_error=max((r.loss_error for r in results), default=0.0),
            grad_error=worst_grad(results),
            cases=len(results), failed_cases=[r.case for r in results if not r.passed],
            not_run=[dict(case=r.case, reason=r.skipped) for r in skipped],
            seconds=round(time.perf_counter() - start, 3),
            results=[r.__dict__ for r in results],
        )
    return matrix
