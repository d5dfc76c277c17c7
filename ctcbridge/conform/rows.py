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
from functools import partial
from typing import Callable

import numpy as np

from .. import reference
from .._bridges import bridge_named
from .._numerics import log_softmax, required_frames
from .._natives import (chainer as chainer_native, optax as optax_native,
                        tensorflow as tf_native, warpctc)
from ..convert import Labels
from ..conventions import CONVENTIONS, KERAS_EPSILON, Convention, dotted_name
from .corpus import Case


@dataclass
class Prepared:
    x: np.ndarray  # the signature's activations
    args: dict  # the other arguments, numpy
    ref_loss: np.ndarray
    ref_grad: np.ndarray  # d sum(losses) / d x
    split_time: bool = False  # x goes in as a list of its T frames (Chainer)


def _feasible(case: Case) -> bool:
    return all(required_frames(case.labels[n, : case.label_lengths[n]]) <= case.input_lengths[n]
               for n in range(case.shape[1]))


def _ref(case, x, **kw):
    if x is case.activations and not kw and case.inputs == "logits" and \
            getattr(case, "ref_loss", None) is not None:
        # the shipped corpus stores this very call's result (copies: preps edit them)
        return case.ref_loss.copy(), case.ref_grad.copy()
    return reference.ctc_loss_and_grad(x, case.labels, case.input_lengths, case.label_lengths,
                                       blank=case.blank, **kw)


def _torch_prep(case, dtype):
    lp = log_softmax(case.activations) if case.inputs == "logits" else case.activations
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
    grad = grad.transpose(1, 0, 2).copy()
    # optax's convention for samples without an alignment (an impossible label
    # class, -inf logits): its log_epsilon arithmetic
    pads = np.arange(T)[None] >= case.input_lengths[:, None]
    optax_native.values(loss, grad, x.transpose(1, 0, 2), pads, case.labels,
                        case.label_lengths.astype(int), case.blank, -1e5)
    return Prepared(np.ascontiguousarray(x.transpose(1, 0, 2)).astype(dtype),
                    dict(logit_paddings=pads.astype(dtype),
                         labels=case.labels,
                         label_paddings=(np.arange(S)[None] >= case.label_lengths[:, None]).astype(dtype),
                         blank_id=case.blank),
                    loss, grad)


def _tf_prep(case, dtype):
    x = _logits(case)
    loss, grad = _ref(case, x)
    # TF's dense convention for samples without an alignment: its log(1e-307)
    # sentinel arithmetic (the native rows check it)
    tf_native.dense_values(loss, grad, x, case.labels, case.input_lengths, case.label_lengths,
                           case.blank)
    return Prepared(x.astype(dtype), dict(labels=case.labels, label_length=case.label_lengths,
                                          logit_length=case.input_lengths, blank_index=case.blank),
                    loss, grad)


def _v1_prep(case, dtype):
    """tf.compat.v1.nn.ctc_loss: blank C - 1, SparseTensor labels (so this row needs
    TensorFlow on every framework's arrays), with ignore_longer_outputs_than_inputs."""
    import tensorflow as tf

    x, labels, blank = _blank_moved(case, "last")
    loss, grad = reference.ctc_loss_and_grad(x, labels, case.input_lengths, case.label_lengths,
                                             blank=blank)
    # more labels than frames: 0 and no gradient (ignore_longer_outputs_than_inputs);
    # too few frames for the repeats: TF's kernel gives +inf and, with no path, the
    # gradient softmax(x) on the sample's frames
    tf_native.v1_values(loss, grad, x, case.input_lengths,
                        case.label_lengths > case.input_lengths)
    sparse = tf.SparseTensor(*Labels.from_padded(labels, case.label_lengths).sparse(np.int32))
    return Prepared(x.astype(dtype), dict(labels=sparse,
                                          sequence_length=case.input_lengths.astype(np.int32),
                                          ignore_longer_outputs_than_inputs=True),
                    loss, grad)


def _v1_ok(case):
    # an empty label sequence is an error in TF's v1 kernel
    return bool((case.label_lengths > 0).all())


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
    probs = np.exp(log_softmax(x)).transpose(1, 0, 2).astype(dtype)
    y = np.log(probs.astype(np.float64) + KERAS_EPSILON)
    labels = relabel[case.labels]
    loss, grad = reference.ctc_loss_and_grad(y, labels, case.input_lengths, case.label_lengths,
                                             blank=C - 1, layout="NTC")
    return Prepared(probs, dict(y_true=labels, input_length=case.input_lengths[:, None],
                                label_length=case.label_lengths[:, None]),
                    loss, grad / (probs.astype(np.float64) + KERAS_EPSILON))


def _chainer_prep(case, dtype):
    # Chainer's convention for samples without an alignment: its -1e10 sentinel
    # arithmetic, computed in the signature's dtype as Chainer does (the native row
    # checks it), and 1e10 with no frame at all
    x = _logits(case)
    loss, grad = _ref(case, x)
    t, il, ll = (a.astype(np.int32) for a in (case.labels, case.input_lengths,
                                                case.label_lengths))
    chainer_native.values(loss, grad, x.astype(dtype), t, il, ll, case.blank)
    return Prepared(x.astype(dtype), dict(t=t, input_length=il, label_length=ll,
                                          blank_symbol=int(case.blank), reduce="no"),
                    loss, grad, split_time=True)


def warp_reference(x, seqs, input_lengths):
    """Theano/warp-ctc's conventions on the float64 reference (blank 0): costs and
    d sum / d x (see :func:`ctcbridge._natives.warpctc.theano_values`)."""
    x = np.asarray(x, np.float64)
    loss, grad = reference.ctc_loss_and_grad(x, seqs, input_lengths, blank=0,
                                             warp_blank_labels=True)
    return warpctc.theano_values(x, seqs, input_lengths, loss, grad)


def _theano_prep(case, dtype):
    # Theano's blank is class 0: move the case's blank there and relabel
    C = case.shape[2]
    order = [case.blank] + [c for c in range(C) if c != case.blank]
    relabel = np.argsort(order)
    x = _logits(case)[:, :, order].astype(dtype)
    seqs = [relabel[case.labels[n, : case.label_lengths[n]]] for n in range(case.shape[1])]
    labels = np.full((len(seqs), max([1] + [s.size for s in seqs])), -1, np.int32)
    for n, s in enumerate(seqs):  # negative padding, which Theano removes
        labels[n, : s.size] = s
    loss, grad = warp_reference(x, seqs, case.input_lengths)
    return Prepared(x, dict(labels=labels, input_lengths=case.input_lengths.astype(np.int32)),
                    loss, grad)


def _blank_moved(case, where):
    """(logits, labels, blank) with the case's blank moved to class 0 ("first") or
    C - 1 ("last"), the other classes keeping their order, labels relabelled."""
    C = case.shape[2]
    others = [c for c in range(C) if c != case.blank]
    order = [case.blank] + others if where == "first" else others + [case.blank]
    return _logits(case)[:, :, order], np.argsort(order)[case.labels], \
        (0 if where == "first" else C - 1)


def _mxnet_reference(x, labels, input_lengths, label_lengths, blank):
    """MXNet's (warp-ctc's) conventions on the float64 reference (see
    :func:`ctcbridge._natives.warpctc.mxnet_values`)."""
    x = np.asarray(x, np.float64)
    loss, grad = reference.ctc_loss_and_grad(x, labels, input_lengths, label_lengths,
                                             blank=blank)
    return warpctc.mxnet_values(x, labels, input_lengths, label_lengths, True, loss, grad)


def _mxnet_width(case) -> int:
    return max(1, int(case.label_lengths.max(initial=0)))  # MXNet has no zero-size arrays


def _mxnet_padded(case, labels, pad):
    out = np.full((case.shape[1], _mxnet_width(case)), pad, dtype=np.int64)
    for n, L in enumerate(case.label_lengths):
        out[n, :L] = labels[n, :L]
    return out


def _mxnet_variant(case) -> int:
    import zlib

    return zlib.crc32(case.name.encode())


def _mxnet_prep(case, dtype):
    # blank first or last (by case), lengths given as float32 arrays, as MXNet wants
    where = ("first", "last")[_mxnet_variant(case) % 2]
    x, labels, blank = _blank_moved(case, where)
    labels = _mxnet_padded(case, labels, 0)
    loss, grad = _mxnet_reference(x, labels, case.input_lengths, case.label_lengths, blank)
    f32 = np.float32
    return Prepared(x.astype(dtype), dict(label=labels.astype(f32),
                                          data_lengths=case.input_lengths.astype(f32),
                                          label_lengths=case.label_lengths.astype(f32),
                                          use_data_lengths=True, use_label_lengths=True,
                                          blank_label=where),
                    loss, grad)


def _mxnet_ok(case):
    # MXNet: label width <= T.  -inf logits can leave a sample with enough frames
    # but no alignment: +inf with the softmax as gradient in MXNet, which the TF
    # runner (the gradient of the finite losses only) cannot see
    return _mxnet_width(case) <= case.shape[0] and not np.isneginf(case.activations).any()


def _gluon_prep(case, dtype):
    # Gluon: batch-major, blank last, labels padded with -1, per-sample weights
    x, labels, blank = _blank_moved(case, "last")
    labels = _mxnet_padded(case, labels, -1)
    loss, grad = _mxnet_reference(x, labels, case.input_lengths, case.label_lengths, blank)
    rng = np.random.default_rng(_mxnet_variant(case))
    weights = rng.uniform(0.5, 2.0, size=case.shape[1])
    return Prepared(np.ascontiguousarray(x.transpose(1, 0, 2)).astype(dtype),
                    dict(label=labels.astype(np.float32),
                         pred_lengths=case.input_lengths.astype(np.float32),
                         sample_weight=weights.astype(np.float32)),
                    loss * weights, (grad * weights[None, :, None]).transpose(1, 0, 2))


def gluon_ctc(pred, label, pred_lengths=None, label_lengths=None, sample_weight=None, *,
              layout="NTC", label_layout="NT", weight=None):
    """ctcbridge.gluon.CTCLoss(layout, label_layout, weight) called once."""
    from ..gluon import CTCLoss

    return CTCLoss(layout, label_layout, weight)(pred, label, pred_lengths, label_lengths,
                                                 sample_weight)


def _mxnet_crash_guard(lengths):
    """MXNet's CTC can corrupt the heap on frames-free samples (double free, a crash
    later in the process): refuse them, so a native row fails its cell instead."""
    if lengths is not None and (lengths.asnumpy() < 1).any():
        # a RuntimeError as the native would raise, and the text conform prints
        raise RuntimeError("not run: MXNet's CTC corrupts memory on zero-length inputs")


def native_mxnet_ctc(data, label, data_lengths=None, label_lengths=None, **kwargs):
    """mx.nd.contrib.ctc_loss, guarded against inputs that crash it."""
    import mxnet

    _mxnet_crash_guard(data_lengths)
    return mxnet.nd.contrib.ctc_loss(data, label, data_lengths, label_lengths, **kwargs)


def native_gluon_ctc(pred, label, pred_lengths=None, label_lengths=None, sample_weight=None, *,
                     layout="NTC", label_layout="NT", weight=None):
    """mxnet.gluon.loss.CTCLoss(layout, label_layout, weight) called once (guarded)."""
    from mxnet.gluon.loss import CTCLoss

    _mxnet_crash_guard(pred_lengths)
    return CTCLoss(layout, label_layout, weight)(pred, label, pred_lengths, label_lengths,
                                                 sample_weight)


def _warpctc_prep(case, dtype):
    # the WarpCTC plugin: blank 0, (T*N, C) rows t*N + n, every sample on all T
    # frames, labels flat with 0 as padding; output softmax, gradient softmax - gamma
    x, labels, _ = _blank_moved(case, "first")
    T, N, C = x.shape
    labels = _mxnet_padded(case, labels, 0)
    S = labels.shape[1]
    _, grad = _mxnet_reference(x, labels, np.full(N, T), case.label_lengths, 0)
    softmax = np.exp(log_softmax(x.astype(np.float64)))
    return Prepared(x.reshape(T * N, C).astype(dtype),
                    dict(label=labels.reshape(-1).astype(np.int32), label_length=S,
                         input_length=T),
                    softmax.reshape(T * N, C), grad.reshape(T * N, C))


def _warpctc_ok(case):
    # every sample runs on all T frames: the corpus' non-finite logits past a
    # sample's length would enter it
    return bool((case.input_lengths == case.shape[0]).all() or
                np.isfinite(case.activations).all()) and \
        not np.isneginf(case.activations).any()  # see _mxnet_ok


@dataclass
class SignatureRow:
    """One signature as a row of ``ctcbridge conform``: its convention (the one
    registry of signatures, :data:`ctcbridge.conventions.CONVENTIONS`), its native,
    and how a corpus case becomes its arguments."""

    convention: Convention
    native: str | None  # "module:attr" of the native
    frameworks: tuple  # array frameworks it runs on
    prepare: Callable[[Case, str], Prepared]
    applicable: Callable[[Case], bool]
    native_frameworks: tuple = ()
    flatten: bool = False  # output (N, 1) -> (N,)
    relative_grad: bool = False  # gradient w.r.t. probabilities: 1/(p + eps) scales it
    requires: tuple = ()  # modules the conversion itself needs (a tf.SparseTensor...)
    native_memory: Callable[[Case], float] | None = None  # the native's peak bytes, estimated
    # "module:attr" called as ours instead of the convention's entry (a class, Gluon's
    # CTCLoss, is constructed and called once by a function)
    ours_via: str | None = None

    @property
    def name(self) -> str:
        """``torch.ctc_loss``, ``gluon.CTCLoss``...: the convention's dotted name."""
        return dotted_name(self.convention)

    @property
    def activations(self) -> str:
        """The name of the parameter that takes the activations."""
        return self.convention.param("activations").name

    def available(self) -> bool:
        from importlib.util import find_spec

        return all(find_spec(m) is not None for m in self.requires)

    def ours(self) -> Callable:
        """ctcbridge's function for this signature."""
        if self.ours_via is not None:
            return _attribute(self.ours_via)
        return getattr(importlib.import_module(self.convention.module), self.convention.call)

    def call(self, prep: Prepared, fw: str, native: bool = False):
        fn = _attribute(self.native) if native else self.ours()
        return run_on(fw, fn, prep, self.flatten, self.activations)


def _attribute(spec: str):
    """The object named ``module:attr.attr...``."""
    mod, attr = spec.split(":")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _all(case):
    return True


def _batch_cost_ok(case):
    return _feasible(case) and (case.label_lengths > 0).all() and \
        (case.label_lengths <= case.input_lengths).all()


def _tf_dense_memory(case) -> float:
    """Peak bytes of TF's dense CTC (tf.nn.ctc_loss with dense labels, keras.ops.ctc_loss)
    with its gradient: it keeps a (2L+1)^2 state-transition product per frame and
    sample, about 23 bytes per T*B*(2L+1)^2 as measured with TF 2.21 (0.9 GiB for
    T=512, B=2, L=100; the corpus's T=2048, L=380 case would need ~50 GiB)."""
    T, B, _ = case.shape
    S = 2 * case.labels.shape[1] + 1
    return 24.0 * T * B * S * S


# the frameworks whose arrays every signature takes (symbolic ones: theano.ctc only)
EAGER = ("numpy", "torch", "jax", "tensorflow", "mxnet", "chainer")

_C = CONVENTIONS
ROWS = [
    SignatureRow(_C["torch"], "torch.nn.functional:ctc_loss", EAGER,
                 _torch_prep, _all, ("torch",)),
    SignatureRow(_C["optax"], "optax:ctc_loss", EAGER, _optax_prep, _feasible, ("jax",)),
    SignatureRow(_C["tensorflow"], "tensorflow:nn.ctc_loss",
                 EAGER, _tf_prep, _all, ("tensorflow",), native_memory=_tf_dense_memory),
    SignatureRow(_C["tensorflow-v1"], "tensorflow:compat.v1.nn.ctc_loss", EAGER, _v1_prep,
                 _v1_ok, ("tensorflow",), requires=("tensorflow",)),
    SignatureRow(_C["keras"], "keras:ops.ctc_loss",
                 EAGER, _keras_prep, _all, ("tensorflow",), native_memory=_tf_dense_memory),
    SignatureRow(_C["keras-batch-cost"], "keras.src.legacy.backend:ctc_batch_cost", EAGER,
                 _batch_cost_prep, _batch_cost_ok, ("tensorflow",), flatten=True,
                 relative_grad=True),
    SignatureRow(_C["chainer"], "chainer.functions:connectionist_temporal_classification",
                 EAGER, _chainer_prep, _all, ("chainer",)),
    # Theano's own Op needs Baidu's warp-ctc: no native row
    SignatureRow(_C["theano"], None, EAGER + ("pytensor", "theano"), _theano_prep, _all),
    SignatureRow(_C["mxnet"], "ctcbridge.conform.rows:native_mxnet_ctc",
                 EAGER, _mxnet_prep, _mxnet_ok, ("mxnet",)),
    SignatureRow(_C["gluon"], "ctcbridge.conform.rows:native_gluon_ctc",
                 EAGER, _gluon_prep, _mxnet_ok, ("mxnet",),
                 ours_via="ctcbridge.conform.rows:gluon_ctc"),
    # the WarpCTC plugin is not in MXNet's wheels: no native row
    SignatureRow(_C["warpctc"], None, EAGER, _warpctc_prep, _warpctc_ok),
]


def run_on(fw: str, fn, prep: Prepared, flatten: bool, x_name: str):
    """(losses, grad or None) of fn(**{x_name: x}, **args) computed on framework `fw`.

    Each bridge knows how to differentiate in its framework: its
    ``grad_of_sum(fn, x, arrays, statics, order)`` returns (losses,
    d sum(finite losses) / d x), both numpy."""
    x, args = prep.x, prep.args
    bridge = bridge_named(fw)
    if prep.split_time:  # fn takes a list of T frames `x` (Chainer's)
        fn = partial(bridge.call_with_frames, fn)
    statics = {k: v for k, v in args.items() if not isinstance(v, np.ndarray)}
    arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
    out, grad = bridge.grad_of_sum(fn, x, arrays, statics,
                                   lambda fn, x, arrays: {x_name: x, **arrays})
    out = np.asarray(out)
    return (out.reshape(-1) if flatten else out), grad
