"""The framework signatures as rows of ``ctcbridge conform``.

Each :class:`SignatureRow` converts a corpus case (time-major logits, padded
labels, blank anywhere) into that signature's conventions, calls it (ours, or
with ``native=True`` the framework's own) on one framework's arrays, and
returns per-sample losses and the gradient w.r.t. its activations, with the
float64 reference's values converted to the same conventions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import reference
from .corpus import Case, required_frames

EPS = 1e-7  # keras.backend.epsilon()


@dataclass
class Prepared:
    x: np.ndarray  # the signature's activations
    args: dict  # the other arguments, numpy
    ref_loss: np.ndarray
    ref_grad: np.ndarray  # d sum(losses) / d x


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _feasible(case: Case) -> bool:
    return all(required_frames(case.labels[n, : case.label_lengths[n]]) <= case.input_lengths[n]
               for n in range(case.shape[1]))


def _ref(case, x, **kw):
    return reference.ctc_loss_and_grad(x, case.labels, case.input_lengths, case.label_lengths,
                                       blank=case.blank, **kw)


def _torch_prep(case, dtype):
    lp = _log_softmax(case.activations) if case.inputs == "logits" else case.activations
    loss, grad = _ref(case, lp, inputs="log_probs")
    return Prepared(lp.astype(dtype), dict(targets=case.labels, input_lengths=case.input_lengths,
                                           target_lengths=case.label_lengths, blank=case.blank,
                                           reduction="none"),
                    loss, grad)


def _logits(case):
    return case.activations  # log-probabilities are valid logits too (log_softmax is idempotent)


def _optax_prep(case, dtype):
    x = _logits(case)
    loss, grad = _ref(case, x)
    T, N, _ = x.shape
    S = case.labels.shape[1]
    return Prepared(np.ascontiguousarray(x.transpose(1, 0, 2)).astype(dtype),
                    dict(logit_paddings=(np.arange(T)[None] >= case.input_lengths[:, None]).astype(dtype),
                         labels=case.labels,
                         label_paddings=(np.arange(S)[None] >= case.label_lengths[:, None]).astype(dtype),
                         blank_id=case.blank),
                    loss, grad.transpose(1, 0, 2))


def _tf_prep(case, dtype):
    x = _logits(case)
    loss, grad = _ref(case, x)
    # TF's dense convention for samples without an alignment: its log(1e-307)
    # sentinel arithmetic (ctcbridge.tensorflow ports it; the native rows check it)
    from .tensorflow import _tf_dense_lattice

    for n in np.flatnonzero(np.isposinf(loss)):
        Tb = int(case.input_lengths[n])
        loss[n], g = _tf_dense_lattice(x[:Tb, n], case.labels[n], int(case.label_lengths[n]),
                                       case.blank)
        grad[:, n] = 0.0
        grad[:Tb, n] = g
    return Prepared(x.astype(dtype), dict(labels=case.labels, label_length=case.label_lengths,
                                          logit_length=case.input_lengths, blank_index=case.blank),
                    loss, grad)


def _keras_prep(case, dtype):
    p = _tf_prep(case, dtype)
    p.x = np.ascontiguousarray(p.x.transpose(1, 0, 2))
    p.ref_grad = p.ref_grad.transpose(1, 0, 2)
    p.args = dict(target=case.labels, target_length=case.label_lengths,
                  output_length=case.input_lengths, mask_index=case.blank)
    return p


def _batch_cost_prep(case, dtype):
    # blank moved to the last class (ctc_batch_cost's convention), labels relabelled
    C = case.shape[2]
    order = [c for c in range(C) if c != case.blank] + [case.blank]
    relabel = np.argsort(order)
    x = _logits(case)[:, :, order]
    probs = np.exp(_log_softmax(x)).transpose(1, 0, 2).astype(dtype)
    y = np.log(probs.astype(np.float64) + EPS)
    labels = relabel[case.labels]
    loss, grad = reference.ctc_loss_and_grad(y, labels, case.input_lengths, case.label_lengths,
                                             blank=C - 1, layout="NTC")
    return Prepared(probs, dict(y_true=labels, input_length=case.input_lengths[:, None],
                                label_length=case.label_lengths[:, None]),
                    loss, grad / (probs.astype(np.float64) + EPS))


@dataclass
class SignatureRow:
    name: str
    module: str  # ctcbridge module
    function: str
    native: str | None  # "module:attr" of the native
    frameworks: tuple  # array frameworks it runs on
    prepare: Callable[[Case, str], Prepared]
    applicable: Callable[[Case], bool]
    native_frameworks: tuple = ()
    flatten: bool = False  # output (N, 1) -> (N,)
    relative_grad: bool = False  # gradient w.r.t. probabilities: 1/(p + eps) scales it

    def call(self, prep: Prepared, fw: str, native: bool = False):
        if native:
            mod, attr = self.native.split(":")
            fn = importlib.import_module(mod)
            for part in attr.split("."):
                fn = getattr(fn, part)
        else:
            fn = getattr(importlib.import_module(self.module), self.function)
        return run_on(fw, fn, prep, self.flatten)


def _all(case):
    return True


def _batch_cost_ok(case):
    return _feasible(case) and (case.label_lengths > 0).all() and \
        (case.label_lengths <= case.input_lengths).all()


ROWS = [
    SignatureRow("torch.ctc_loss", "ctcbridge.torch", "ctc_loss",
                 "torch.nn.functional:ctc_loss", ("numpy", "torch", "jax", "tensorflow"),
                 _torch_prep, _all, ("torch",)),
    SignatureRow("optax.ctc_loss", "ctcbridge.optax", "ctc_loss", "optax:ctc_loss",
                 ("numpy", "torch", "jax", "tensorflow"), _optax_prep, _feasible, ("jax",)),
    SignatureRow("tensorflow.ctc_loss", "ctcbridge.tensorflow", "ctc_loss", "tensorflow:nn.ctc_loss",
                 ("numpy", "torch", "jax", "tensorflow"), _tf_prep, _all, ("tensorflow",)),
    SignatureRow("keras.ctc_loss", "ctcbridge.keras", "ctc_loss", "keras:ops.ctc_loss",
                 ("numpy", "torch", "jax", "tensorflow"), _keras_prep, _all, ("tensorflow",)),
    SignatureRow("keras.ctc_batch_cost", "ctcbridge.keras", "ctc_batch_cost",
                 "keras.src.legacy.backend:ctc_batch_cost", ("numpy", "torch", "jax", "tensorflow"),
                 _batch_cost_prep, _batch_cost_ok, ("tensorflow",), flatten=True,
                 relative_grad=True),
]


def run_on(fw: str, fn, prep: Prepared, flatten: bool):
    """(losses, grad or None) of fn(x, **args) computed on framework `fw`.

    Each bridge module (``ctcbridge._arrays.<fw>``) knows how to differentiate
    in its framework: its ``grad_of_sum(fn, x, arrays, statics, order)``
    returns (losses, d sum(finite losses) / d x), both numpy."""
    x, args = prep.x, prep.args
    statics = {k: v for k, v in args.items() if not isinstance(v, np.ndarray)}
    arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
    bridge = importlib.import_module(f"ctcbridge._arrays.{fw}")
    out, grad = bridge.grad_of_sum(fn, x, arrays, statics, _order)
    out = np.asarray(out)
    return (out.reshape(-1) if flatten else out), grad


_X_NAMES = ("log_probs", "logits", "output", "y_pred", "data", "pred", "x", "activations")


def _order(fn, x, arrays):
    import inspect

    params = inspect.signature(fn).parameters
    name = next(p for p in params if p in _X_NAMES)
    return {name: x, **arrays}
