"""``ctcbridge explain FROM TO``: the printed conversion runs and keeps the losses, for every pair."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ctcbridge

from ctcbridge import cli
from ctcbridge import conventions as cv
from ctcbridge import explain as explain_module
from ctcbridge.explain import call, conversion, convert_arguments, explain

from test_conventions import arguments, framework_needed, make_case

NAMES = ("ctcbridge",) + cv.NAMES


def _per_sample(out):
    return np.asarray(out, dtype=np.float64).reshape(-1)


@pytest.mark.parametrize("src", NAMES)
def test_every_pair_keeps_the_per_sample_losses(src):
    """src's call (built from a canonical case) -> the printed conversion -> every dst."""
    conv = cv.get(src)
    fixed = conv.input_lengths == "fixed" or any(
        cv.get(d).input_lengths == "fixed" for d in NAMES)
    cases = [make_case(seed=11, lengths=False)]
    if conv.input_lengths != "fixed":
        cases.append(make_case(seed=12, lengths=True))
    assert fixed or len(cases) == 2
    checked = 0
    for case in cases:
        src_args = arguments(src, case) if src != "ctcbridge" else dict(case)
        want = ctcbridge.ctc_loss(**case)  # src's own per-sample losses (test_conventions)
        for dst in NAMES:
            d = cv.get(dst)
            if dst == src or (d.input_lengths == "fixed" and len(set(case["input_lengths"])) > 1):
                continue
            try:
                arguments(dst, case)  # skips signatures being written or missing a framework
            except pytest.skip.Exception:
                continue
            with framework_needed(dst):
                got = _per_sample(call(dst, **convert_arguments(src, dst, **src_args)))
            if d.output != "softmax":  # WarpCTC returns softmax(data): see test_conventions
                rtol = 1e-4 if "probs" in (conv.inputs, d.inputs) else 2e-5
                np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"{src} -> {dst}")
            # the code explain prints is the code that ran
            ns = {p.name: p.default for p in conv.params if p.default != "<required>"}
            ns.update(src_args)
            exec(conversion(src, dst), ns)
            np.testing.assert_allclose(_per_sample(ns["loss"]), got, rtol=1e-6)
            checked += 1
    assert checked > 0


def test_explain_text_names_every_difference():
    text = explain("gluon", "torch")
    for part in ("Conventions that differ:", "Argument conversion", "Loss value", "Gradient:",
                 "Edge cases:", "b = acts.shape[-1] - 1", "blank=b", "convert.layout(pred, layout",
                 "reduction='none'", "zero_infinity=True", "0, gradient 0"):
        assert part in text, part
    assert "infeasible sample" in text and "blank" in text


@pytest.mark.parametrize("src,dst", list(itertools.permutations(NAMES, 2)))
def test_every_pair_is_explained_from_the_table(src, dst):
    text = explain(src, dst)
    a, b = cv.get(src), cv.get(dst)
    w = max(len(src), len(dst))
    for title, attr, _ in cv.FIELDS:  # every differing axis is listed, with both sides
        if cv.describe(a, attr) != cv.describe(b, attr):
            title = explain_module._EDGE_ATTRS.get(attr, title)
            assert f"  {title}:\n    {src:<{w}} {cv.describe(a, attr)}\n    {dst:<{w}} " \
                f"{cv.describe(b, attr)}" in text
    compile(conversion(src, dst), "<conversion>", "exec")


def test_same_signature_has_no_difference():
    assert "No convention differs." in explain("torch", "torch")


def test_cli(capsys):
    assert cli.main(["explain", "gluon", "torch"]) == 0
    out = capsys.readouterr().out
    assert out == explain("gluon", "torch")
    assert cli.main(["explain", "--table"]) == 0
    assert capsys.readouterr().out == cv.markdown_table()
    assert cli.main(["explain", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in NAMES)
    assert cli.main(["explain", "torch"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["explain", "torch", "caffe"])


def test_convert_arguments_rejects_unknown_parameters():
    with pytest.raises(TypeError, match="no parameter 'logits'"):
        convert_arguments("torch", "optax", logits=np.zeros((1, 1, 2)))
