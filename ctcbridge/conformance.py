"""Compare an implementation with the float64 reference on corpus cases.

This is what ``ctcbridge conform`` runs.  For now the rows are the canonical
engine API in float32 and float64; the framework signatures add theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference
from .canonical import ctc_loss_and_grad
from .corpus import Case

# Worst errors allowed, (loss relative, gradient absolute), per dtype.  float32
# carries ~7 significant digits through sums over thousands of frames.
TOLERANCES = {
    "float64": (1e-9, 1e-9),
    "float32": (2e-5, 2e-4),
}


@dataclass
class Result:
    case: str
    row: str
    loss_error: float
    grad_error: float
    passed: bool


def _loss_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst relative loss error; equal infinities and NaNs count as exact."""
    ours = ours.astype(np.float64)
    same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        err = np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)
    err = np.where(same, 0.0, err)
    err = np.where(np.isnan(err), np.inf, err)
    return float(err.max(initial=0.0))


def _grad_error(ours: np.ndarray, ref: np.ndarray) -> float:
    ours = ours.astype(np.float64)
    same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        err = np.abs(ours - ref)
    err = np.where(same, 0.0, err)
    err = np.where(np.isnan(err), np.inf, err)
    return float(err.max(initial=0.0))


def reference_result(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The float64 reference's (losses, grad) for a case."""
    return reference.ctc_loss_and_grad(case.activations, case.labels, **case.kwargs())


def check_engine(case: Case, dtype: str, ref=None) -> Result:
    """The canonical engine API on `case` in `dtype` against the reference."""
    ref_loss, ref_grad = ref if ref is not None else reference_result(case)
    x = case.activations.astype(dtype)
    loss, grad = ctc_loss_and_grad(x, case.labels, **case.kwargs())
    loss_tol, grad_tol = TOLERANCES[dtype]
    le, ge = _loss_error(loss, ref_loss), _grad_error(grad, ref_grad)
    return Result(case.name, f"engine {dtype}", le, ge, le <= loss_tol and ge <= grad_tol)


def installed_frameworks() -> list[str]:
    """numpy plus the array frameworks importable here (found without importing them)."""
    from importlib.util import find_spec

    return ["numpy"] + [fw for fw in ARRAY_FRAMEWORKS
                        if find_spec(fw) is not None and find_spec(f"ctcbridge._arrays.{fw}")]


# The array frameworks with a bridge module ctcbridge._arrays.<name>, in matrix order.
ARRAY_FRAMEWORKS = ("torch", "jax", "tensorflow", "mxnet", "chainer", "pytensor", "theano")


def check_signature(row, case: Case, fw: str, native: bool = False, cache: dict | None = None):
    """One signature (ours, or the native with native=True) on one framework's arrays,
    float32, against the reference converted to its conventions.  None if the case
    does not apply to the signature."""
    if not row.applicable(case):
        return None
    key = (row.name, case.name)
    prep = cache.get(key) if cache is not None else None
    if prep is None:
        prep = row.prepare(case, "float32")
        if cache is not None:
            cache[key] = prep
    label = ("native " if native else "") + row.name
    try:
        loss, grad = row.call(prep, fw, native=native)
    except Exception as exc:  # a native that rejects the case: a failed cell with the reason
        return Result(case.name, f"{label} [{fw}]: {type(exc).__name__}", float("inf"),
                      float("inf"), False)
    loss_tol, grad_tol = TOLERANCES["float32"]
    le = _loss_error(np.asarray(loss), prep.ref_loss)
    if grad is None:
        ge = 0.0
    elif row.relative_grad:
        scale = np.maximum(np.abs(np.nan_to_num(prep.ref_grad)), 1.0)
        ge = _grad_error(np.asarray(grad) / scale, prep.ref_grad / scale)
    else:
        ge = _grad_error(np.asarray(grad), prep.ref_grad)
    return Result(case.name, f"{label} [{fw}]", le, ge, le <= loss_tol and ge <= grad_tol)
