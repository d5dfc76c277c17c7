"""Every entry of ctcbridge.conventions holds: each adapter is probed on numpy arrays.

The probes call each signature through the conversion code ``ctcbridge
explain`` prints (ctcbridge.explain.convert_arguments, from the canonical
call), so a wrong entry -- blank position, layout, input kind, label
container, length encoding -- gives wrong losses here.  Then the default
reduction and output shape, the infeasible value, empty labels, zero-length
inputs and labels equal to the blank are checked against the table's rule.

Signatures whose module is not written yet are skipped (the MXNet, Gluon,
WarpCTC, Chainer and Theano ones while they are being written); a signature
that needs a framework to run (a SparseTensor, a Gluon block) is skipped
where that framework is missing, unless the framework is named in
CTCBRIDGE_REQUIRE_FRAMEWORKS (the docs session, which installs them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os

import numpy as np
import pytest

import ctcbridge
from ctcbridge import _compute, convert
from ctcbridge import conventions as cv
from ctcbridge._natives import tensorflow as tf_native
from ctcbridge.explain import call, convert_arguments

REQUIRED = {f for f in os.environ.get("CTCBRIDGE_REQUIRE_FRAMEWORKS", "").split(",") if f}
FRAMEWORKS = ("tensorflow", "torch", "jax", "mxnet", "chainer", "theano", "pytensor")


def module_ready(conv) -> bool:
    return importlib.util.find_spec(conv.module) is not None


@contextlib.contextmanager
def framework_needed(name):
    """Skip when the signature needs a framework that is not installed (unless required)."""
    try:
        yield
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in FRAMEWORKS and missing not in REQUIRED:
            pytest.skip(f"{name} needs {missing}")
        raise


def arguments(name, case):
    """The signature's arguments for a canonical case (dict of ctcbridge.ctc_loss
    arguments), converted by the table-driven code ``ctcbridge explain`` prints."""
    conv = cv.get(name)
    if not module_ready(conv):
        pytest.skip(f"{conv.module} is being written")
    with framework_needed(name):
        return convert_arguments("ctcbridge", name, **case)


def run(name, case, default_reduction=False, **extra):
    """The signature's losses for a canonical case."""
    conv = cv.get(name)
    if conv.output == "softmax":
        pytest.skip(f"{name} returns softmax(data), no loss: its loss is checked through its "
                    "gradient (test_gradient_is_with_respect_to_the_table_input)")
    args = arguments(name, case)
    if default_reduction and conv.reductions:  # the code asks for per-sample losses
        del args[conv.param("reduction").name]
    args.update(extra)
    with framework_needed(name):
        return call(name, **args)


def make_case(seed=0, N=3, T=9, C=6, blank=2, lengths=True, dtype=np.float32):
    rng = np.random.default_rng(seed)
    classes = [c for c in range(C) if c != blank]
    labels = rng.choice(classes, size=(N, 3))
    label_lengths = np.array([3, 2, 1, 0, 2][:N]) if N > 1 else np.array([3])
    label_lengths = np.maximum(label_lengths, 1)  # non-empty: every signature accepts them
    labels[np.arange(3)[None, :] >= label_lengths[:, None]] = 0
    input_lengths = np.array([T, T - 2, T - 4][:N]) if lengths else np.full(N, T)
    return dict(activations=rng.standard_normal((T, N, C)).astype(dtype), labels=labels,
                input_lengths=input_lengths, label_lengths=label_lengths, blank=blank)


NAMES = cv.NAMES


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_losses_follow_the_table(name):
    """input kind, layout, blank rule, label container, length encodings."""
    conv = cv.get(name)
    case = make_case(lengths=conv.input_lengths != "fixed")
    expected = ctcbridge.ctc_loss(**case)
    got = np.asarray(run(name, case), dtype=np.float64).reshape(-1)  # per sample
    rtol = 1e-4 if conv.inputs == "probs" else 1e-5  # log(p + 1e-7)
    np.testing.assert_allclose(got, expected, rtol=rtol)


@pytest.mark.parametrize("name", NAMES)
def test_default_reduction_and_output_shape(name):
    conv = cv.get(name)
    case = make_case(seed=1, lengths=conv.input_lengths != "fixed")
    losses = ctcbridge.ctc_loss(**case)
    out = run(name, case, default_reduction=True)
    shape = {"(N,)": (3,), "(N, 1)": (3, 1), "()": ()}[conv.output]
    assert np.shape(out) == shape
    expected = convert.reduce(losses, conv.reduction, label_lengths=case["label_lengths"])
    rtol = 1e-4 if conv.inputs == "probs" else 1e-5
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64).reshape(np.shape(expected)),
                               expected, rtol=rtol)
    if conv.reductions:  # every option is the reduction the table says
        for option, kind in conv.reductions.items():
            got = run(name, case, **{conv.param("reduction").name: option})
            want = convert.reduce(losses, kind, label_lengths=case["label_lengths"])
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-5)


def single(labels, T, C=5, blank=0, seed=3, label_length=None):
    rng = np.random.default_rng(seed)
    labels = np.asarray([labels if labels else [1]])
    frames = max(T, labels.shape[1], 1)  # MXNet: the padded width must not exceed the frames
    return dict(activations=rng.standard_normal((frames, 1, C)).astype(np.float32),
                labels=labels, input_lengths=np.array([T]),
                label_lengths=np.array([len(labels[0]) if label_length is None
                                        else label_length]), blank=blank)


def value_or_error(name, case):
    try:
        return np.asarray(run(name, case), dtype=np.float64).reshape(-1)[0]
    except (ValueError, RuntimeError) as exc:
        return exc


def _feasible_partial(value, low, high):
    return not isinstance(value, Exception) and low <= value < high


INFEASIBLE_RULES = {
    # rule: (check for L > T, check for repeats needing a blank)
    "inf": (math.isinf, math.isinf),
    "inf|zero": (math.isinf, math.isinf),
    "sentinel": (lambda v: _feasible_partial(v, 706.8, 800),) * 2,
    "log_epsilon": (lambda v: _feasible_partial(v, 9e4, 5e5),) * 2,
    "zero": (lambda v: v == 0,) * 2,
    "1e10": (lambda v: _feasible_partial(v, 1e10, 1.1e10),) * 2,
    "error|inf": (lambda v: isinstance(v, ValueError), math.isinf),
}


@pytest.mark.parametrize("name", NAMES)
def test_infeasible_value(name):
    conv = cv.get(name)
    too_long, repeats = INFEASIBLE_RULES[conv.infeasible]
    v = value_or_error(name, single([1, 2, 3], T=2, blank=0 if conv.blank != "last" else 4))
    assert too_long(v), f"{name}: {v!r} for more labels than frames ({conv.infeasible})"
    v = value_or_error(name, single([2, 2], T=2, blank=0 if conv.blank != "last" else 4))
    assert repeats(v), f"{name}: {v!r} for a repeat without room for a blank"
    if conv.infeasible == "inf|zero" and conv.param("option") is not None:
        case = single([1, 2, 3], T=2)
        out = run(name, case, zero_infinity=True, reduction="none")
        assert np.asarray(out).reshape(-1)[0] == 0


@pytest.mark.parametrize("name", NAMES)
def test_empty_label(name):
    conv = cv.get(name)
    case = single([], T=5, blank=0 if conv.blank != "last" else 4, label_length=0)
    v = value_or_error(name, case)
    if conv.empty_label == "error":
        assert isinstance(v, ValueError), v
    else:
        exact = ctcbridge.ctc_loss(**case)[0]
        assert not isinstance(v, Exception), v
        np.testing.assert_allclose(v, exact, rtol=1e-5)


ZERO_RULES = {  # (empty label, non-empty label) for T_b = 0
    "0|inf": (0.0, math.inf),
    "0|sentinel": (0.0, 706.8936),
    "0|log_epsilon": (0.0, 1e5 - math.log(2)),
    "inf|0": (math.inf, 0.0),
    "0|0": (0.0, 0.0),
    "0|1e10": (0.0, 1e10),
}


@pytest.mark.parametrize("name", NAMES)
def test_zero_length_input(name):
    conv = cv.get(name)
    if conv.input_lengths == "fixed":
        pytest.skip("one input length for the batch: a zero-length sample is the whole batch")
    blank = 0 if conv.blank != "last" else 4
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 5)).astype(np.float32)
    for label_length in (0, 1):
        case = dict(activations=x, labels=np.array([[1], [2]]), input_lengths=np.array([0, 4]),
                    label_lengths=np.array([label_length, 1]), blank=blank)
        v = value_or_error(name, case)
        if conv.zero_length == "error":
            assert isinstance(v, ValueError), v
        elif conv.zero_length == "full":
            full = ctcbridge.ctc_loss(**{**case, "input_lengths": np.array([4, 4])})[0]
            np.testing.assert_allclose(v, full, rtol=1e-5)
        else:
            want = ZERO_RULES[conv.zero_length][label_length]
            assert not isinstance(v, Exception), v
            np.testing.assert_allclose(v, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_label_equal_to_blank(name):
    conv = cv.get(name)
    rule = conv.blank_in_labels
    C = 5
    blank = C - 1 if conv.blank == "last" else 0
    case = single([1, blank, 2], T=6, C=C, blank=blank)
    v = value_or_error(name, case)
    if rule == "ends":
        assert isinstance(v, ValueError), v
        return
    if rule == "skip|error":  # an error for a non-zero blank
        assert isinstance(value_or_error(name, single([1, 2, 3], T=6, C=C, blank=2)), ValueError)
        rule = "skip"
    assert not isinstance(v, Exception), v
    if rule == "skip":
        want = ctcbridge.ctc_loss(**case)[0]
    elif rule == "warp":
        want = _compute.compute(case["activations"], case["labels"], case["input_lengths"],
                                 case["label_lengths"], blank=blank, warp_blank_labels=True,
                                 want_grad=False)[0][0]
    else:  # padding: the label is removed
        want = ctcbridge.ctc_loss(**{**case, "labels": np.array([[1, 2]]),
                                     "label_lengths": np.array([2])})[0]
    np.testing.assert_allclose(v, want, rtol=1e-5)


def torch_gradient(name, case):
    """(the signature's arguments, d sum(output) / d activations) on torch tensors, where
    torch is installed; Chainer's list of steps gets one leaf per step (stacked back)."""
    conv = cv.get(name)
    if not module_ready(conv):
        pytest.skip(f"{conv.module} is being written")
    if importlib.util.find_spec("torch") is None:
        if "torch" in REQUIRED:
            raise AssertionError("torch is required here")
        pytest.skip("needs torch")
    import torch

    args = arguments(name, case)
    act = conv.param("activations").name
    steps = isinstance(args[act], list)
    leaves = [torch.tensor(np.asarray(a), requires_grad=True)
              for a in (args[act] if steps else [args[act]])]
    call(name, **{**args, act: leaves if steps else leaves[0]}).sum().backward()
    grads = [leaf.grad.numpy() for leaf in leaves]
    return args, np.stack(grads) if steps else grads[0]


@pytest.mark.parametrize("name", NAMES)
def test_gradient_is_with_respect_to_the_table_input(name):
    """d sum(losses) / d input is the gradient w.r.t. the table's input kind and layout."""
    conv = cv.get(name)
    f32 = conv.dtypes.startswith("float32 ")  # the native computes in float32 only
    case = make_case(seed=7, N=2, lengths=conv.input_lengths != "fixed",
                     dtype=np.float32 if f32 else np.float64)
    args, got = torch_gradient(name, case)
    kind = conv.inputs
    if kind == "probs":
        p = np.asarray(args[conv.param("activations").name])
        logits = convert.inputs(convert.layout(p, conv.layout, "TNC"), "probs", "logits",
                                eps=cv.KERAS_EPSILON)
        _, g = ctcbridge.ctc_loss_and_grad(logits, **_rest(case, conv, logits))
        g = convert.layout(g, "TNC", conv.layout) / (p + cv.KERAS_EPSILON)
    else:
        acts = convert.inputs(case["activations"], "logits", kind)
        acts, labs = convert.move_blank(acts, case["labels"], case["blank"],
                                        _blank_of(conv, case))
        _, g = ctcbridge.ctc_loss_and_grad(
            acts, labs, case["input_lengths"], case["label_lengths"],
            blank=convert.blank_index(_blank_of(conv, case), acts.shape[-1]),
            inputs="log_probs" if kind == "log_probs" else "logits")
        if conv.layout != "steps":  # the steps' gradients are stacked to TNC
            g = convert.layout(g, "TNC", conv.layout, batch=2)
    np.testing.assert_allclose(got, g, atol=1e-5 if f32 else 1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES
                                  if cv.get(n).infeasible in ("inf", "inf|zero", "zero")])
def test_gradient_of_an_infeasible_sample(name):
    """'inf': NaN on the sample's frames; 'zero': 0."""
    conv = cv.get(name)
    case = single([1, 2, 3], T=2, blank=0 if conv.blank != "last" else 4)
    if conv.input_lengths == "fixed":  # WarpCTC: every sample uses all frames
        case["activations"] = case["activations"][:2]
    _, grad = torch_gradient(name, case)
    if conv.infeasible == "zero":
        assert (grad == 0).all()
    else:
        assert np.isnan(grad).any()


def _blank_of(conv, case):
    """Where the conversion code puts the blank: kept where the signature takes any
    index, first where it takes 'first' or 'last', its fixed place otherwise."""
    return {"arg": case["blank"], "first|last": "first"}.get(conv.blank, conv.blank)


def _rest(case, conv, acts):
    _, labs = convert.move_blank(acts, case["labels"], case["blank"], _blank_of(conv, case))
    return dict(labels=labs, input_lengths=case["input_lengths"],
                label_lengths=case["label_lengths"],
                blank=convert.blank_index(_blank_of(conv, case), acts.shape[-1]))


def test_names_are_documented_and_complete():
    assert cv.NAMES == ("torch", "tensorflow", "tensorflow-v1", "keras", "keras-batch-cost",
                        "optax", "mxnet", "gluon", "warpctc", "chainer", "theano")
    for conv in cv.CONVENTIONS.values():
        for _, attr, vocab in cv.FIELDS:
            if vocab is not None:
                assert getattr(conv, attr) in vocab, (conv.name, attr)
        assert conv.reduction in cv.REDUCTIONS
        assert set(conv.reductions.values()) <= set(cv.REDUCTIONS)


def test_markdown_table_has_a_row_per_signature():
    table = cv.markdown_table()
    assert len(table.strip().splitlines()) == 2 + len(cv.CONVENTIONS)
    for name in cv.CONVENTIONS:
        assert f"`{name}`" in table


def test_constants_are_the_adapters_own():
    import ctcbridge.keras

    # one definition: the adapter reads Keras' epsilon from the conventions
    assert ctcbridge.keras.KERAS_EPSILON is cv.KERAS_EPSILON == 1e-7  # keras.backend.epsilon()
    assert "706.9" in cv.INFEASIBLE["sentinel"] and round(-tf_native.LOG_0, 1) == 706.9
