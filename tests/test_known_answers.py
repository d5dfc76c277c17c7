"""Known answers from outside: CTC losses and gradients that other projects publish.

``ctcbridge/data/known_answers.json`` records each case as published (inputs,
labels, blank, losses, gradients), where it comes from, and the tolerance the
source itself uses.  Here we check that

* ``ctcbridge.reference`` reproduces every published loss and gradient to that
  tolerance, after converting the published inputs the way the source feeds
  them to its own CTC function (see ``_problem``);
* the engine (``ctcbridge.ctc_loss_and_grad``) agrees with the reference to
  1e-9 in float64 on the same inputs.

Where a source does not print a number but an expression (warp-ctc's expected
scores), the expression is evaluated here from the published inputs and the
value recorded in the file is checked against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ctcbridge
from ctcbridge import reference

DATA = Path(ctcbridge.__file__).resolve().parent / "data" / "known_answers.json"
DOC = json.loads(DATA.read_text())
CASES = {case["name"]: case for case in DOC["cases"]}
WITH_LOSS = [name for name, case in CASES.items() if case["loss"] is not None]
WITH_GRAD = [name for name, case in CASES.items() if case["grad"] is not None]
FROM_PROBABILITIES = [name for name in WITH_GRAD if CASES[name]["inputs"] == "probabilities"]

ENGINE_ATOL = 1e-9  # engine vs reference, float64


def _time_axis(case) -> int:
    return 0 if case["layout"] == "TNC" else 1


def _problem(case) -> dict:
    """The published inputs converted to keyword arguments of both CTC functions.

    Activations: the sources hold them as float32 (``source_dtype``).  Both
    sources that publish probabilities feed ``log(p)`` (taken in float32) to a
    function that applies a softmax over the classes itself -- TF's CTCLoss
    and warp-ctc's compute_ctc_loss -- and publish the gradient w.r.t. that
    input.  So ``transform = "log"`` with ``reference_inputs = "logits"``
    gives the reference the input the source gave its own implementation
    (widened to float64).
    Padding frames past the input lengths are appended as published (NaN
    in TF's testBasic): they must not be read.
    """
    x = np.asarray(case["activations"], dtype=case["source_dtype"])
    if case["transform"] == "log":
        x = np.log(x)
    else:
        assert case["transform"] == "none", case["transform"]
    x = x.astype(np.float64)
    pad = case.get("padding")
    if pad:
        shape = list(x.shape)
        shape[_time_axis(case)] = pad["frames"]
        x = np.concatenate([x, np.full(shape, float(pad["value"]))], axis=_time_axis(case))
    labels = case["labels"]
    if case.get("labels_format") == "concatenated":
        labels = np.asarray(labels, dtype=np.int64)
    else:  # one sequence per sample, padded to a 2-D array
        width = max(len(seq) for seq in labels)
        labels = np.array([list(seq) + [0] * (width - len(seq)) for seq in labels], dtype=np.int64)
    return dict(activations=x, labels=labels,
                input_lengths=np.asarray(case["input_lengths"], dtype=np.int64),
                label_lengths=np.asarray(case["label_lengths"], dtype=np.int64),
                blank=case["blank"], layout=case["layout"], inputs=case["reference_inputs"])


def _reference(case, **override):
    kwargs = {**_problem(case), **override}
    return reference.ctc_loss_and_grad(kwargs.pop("activations"), kwargs.pop("labels"), **kwargs)


def _published_grad(case) -> np.ndarray:
    """The published gradient, with the padded frames (expected 0) appended."""
    g = np.asarray(case["grad"], dtype=np.float64)
    pad = case.get("padding")
    if pad:
        shape = list(g.shape)
        shape[_time_axis(case)] = pad["frames"]
        g = np.concatenate([g, np.full(shape, pad["expected_grad"])], axis=_time_axis(case))
    return g


def _within(actual, expected, tol, what):
    """The source's own test: |actual - expected| <= atol + rtol * |expected|.

    (warp-ctc compares with a strict ``<``; no value here is near the edge.)
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    bound = tol.get("atol", 0.0) + tol.get("rtol", 0.0) * np.abs(expected)
    err = np.abs(actual - expected)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
    assert np.all(err <= bound), (
        f"{what}: largest error {err.max():.3g} (allowed {np.max(bound):.3g}); "
        f"actual {actual.ravel()[np.argmax(err)]!r}, published {expected.ravel()[np.argmax(err)]!r}")


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_catalogue_is_complete():
    required = {"name", "provenance", "description", "layout", "inputs", "transform",
                "reference_inputs", "source_dtype", "activations", "labels", "input_lengths",
                "label_lengths", "blank", "loss", "loss_as_published", "grad", "precision"}
    assert {"tensorflow-testBasic", "warp-ctc-small_test", "warp-ctc-options_test"} <= set(CASES)
    for name, case in CASES.items():
        assert required <= set(case), (name, required - set(case))
        assert {"repository", "path", "test", "commit", "url"} <= set(case["provenance"]), name
        assert case["provenance"]["url"].startswith("https://github.com/" + case["provenance"]["repository"])
        assert case["precision"].get("source"), name
        if case["grad"] is not None:
            assert case.get("grad_wrt"), name
    assert "graves_publications" in DOC  # what was (not) found in Graves' papers


@pytest.mark.parametrize("name", WITH_LOSS)
def test_reference_reproduces_published_loss(name):
    case = CASES[name]
    losses, _ = _reference(case)
    _within(losses, case["loss"], case["precision"]["loss"], f"{name} loss")


@pytest.mark.parametrize("name", WITH_GRAD)
def test_reference_reproduces_published_grad(name):
    # The published gradients are w.r.t. the input the source fed (log p,
    # treated as logits): d loss / d z = softmax(z) - gamma, which is what the
    # reference returns for inputs="logits".  Padded frames must come out 0.
    case = CASES[name]
    _, grad = _reference(case)
    _within(grad, _published_grad(case), case["precision"]["grad"], f"{name} grad")


@pytest.mark.parametrize("name", FROM_PROBABILITIES)
def test_graves_convention(name):
    """The published inputs taken as normalised log-probabilities instead (Graves' convention).

    The printed probabilities are rounded to 6 digits, so their rows sum to
    1 only within ~1e-6; run as logits (as the sources run them) they are
    renormalised.  Used as log-probabilities directly:

    * the loss differs from the logits run by exactly sum_t logsumexp(z_t)
      (every path visits every frame once);
    * the gradient w.r.t. the log-probabilities is -gamma, and Graves'
      ``outputDerivs`` (the published gradient) is y - gamma = p + d loss / d log p,
      within the source's tolerance;
    * the loss is within the source's tolerance, or, where the case records
      the digits it printed, rounds to the printed value (see
      test_tensorflow_printed_digits_are_coarser_than_its_tolerance).
    """
    case = CASES[name]
    losses, dlogp = _reference(case, inputs="log_probs")
    logit_losses, _ = _reference(case)
    problem = _problem(case)
    z = problem["activations"]
    if case["layout"] == "NTC":
        z = z.transpose(1, 0, 2)
    for n, frames in enumerate(problem["input_lengths"]):
        zn = z[:frames, n]
        lse = zn.max(axis=1) + np.log(np.exp(zn - zn.max(axis=1, keepdims=True)).sum(axis=1))
        assert logit_losses[n] - losses[n] == pytest.approx(lse.sum(), abs=1e-12)

    p = np.asarray(case["activations"], dtype=case["source_dtype"]).astype(np.float64)
    frames = (slice(None),) * _time_axis(case) + (slice(0, p.shape[_time_axis(case)]),)
    graves = dlogp.copy()  # 0 on padded frames
    graves[frames] += p
    _within(graves, _published_grad(case), case["precision"]["grad"], f"{name} y - gamma")

    digits = case["precision"].get("significant_digits")
    if digits:
        assert [f"{x:.{digits}g}" for x in losses] == [f"{x:.{digits}g}" for x in case["loss"]]
    else:
        _within(losses, case["loss"], case["precision"]["loss"], f"{name} loss (log-probs)")


def test_tensorflow_printed_digits_are_coarser_than_its_tolerance():
    """Why Graves' convention misses TF's own check on sample 0 (the case's note).

    TF prints 3.34211 (6 significant digits: up to 5e-6 of rounding) and
    tests it with atol + rtol * |expected| = 4.34e-6.  The unnormalised path
    loss, 3.3421144, rounds to 3.34211 but lies 4.39e-6 away; the
    renormalised one (what TF computes) is 3.3421127, 2.7e-6 away.
    """
    case = CASES["tensorflow-testBasic"]
    tol = case["precision"]["loss"]
    published = case["loss"][0]
    bound = tol["atol"] + tol["rtol"] * published
    half_unit = 0.5 * 10.0 ** (np.floor(np.log10(published)) - case["precision"]["significant_digits"] + 1)
    assert bound < half_unit
    unnormalised = _reference(case, inputs="log_probs")[0][0]
    renormalised = _reference(case)[0][0]
    assert bound < abs(unnormalised - published) <= half_unit
    assert abs(renormalised - published) <= bound


def test_warp_ctc_small_test_likelihood():
    """warp-ctc publishes an expression, not a number: exp(-loss) = softmax(a_0)[1] * softmax(a_1)[2]."""
    case = CASES["warp-ctc-small_test"]
    z = np.asarray(case["activations"], dtype=case["source_dtype"]).astype(np.float64)[:, 0]
    likelihood = _softmax(z[0])[1] * _softmax(z[1])[2]
    assert likelihood == pytest.approx(case["likelihood_evaluated"], rel=1e-12)
    losses, grad = _reference(case)
    _within(np.exp(-losses), [likelihood], case["precision"]["likelihood"], "small_test likelihood")
    # The only path is "1 2", so gamma is one-hot on it and the gradient is
    # softmax - onehot; not published by warp-ctc, checked here for free.
    expected = _softmax(z)
    expected[0, 1] -= 1.0
    expected[1, 2] -= 1.0
    np.testing.assert_allclose(grad[:, 0], expected, rtol=0, atol=1e-12)


def test_warp_ctc_options_test_sample_0_expression():
    """options_test computes sample 0's expected score from the probabilities along the only path."""
    case = CASES["warp-ctc-options_test"]
    p = np.asarray(case["activations"], dtype=case["source_dtype"]).astype(np.float64)
    path = [0, 1, 2, 1, 0]  # labels 0 1 2 1 0 in 5 frames
    value = -np.log(np.prod([p[t, 0, k] for t, k in enumerate(path)]))
    assert value == pytest.approx(case["loss"][0], rel=1e-15)


@pytest.mark.parametrize("name", list(CASES))
def test_engine_agrees_with_reference(name):
    case = CASES[name]
    problem = _problem(case)
    ref_loss, ref_grad = _reference(case)
    x = problem.pop("activations")
    labels = problem.pop("labels")
    loss, grad = ctcbridge.ctc_loss_and_grad(x, labels, problem.pop("input_lengths"),
                                             problem.pop("label_lengths"), **problem)
    assert loss.dtype == np.float64 and grad.shape == x.shape
    np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=ENGINE_ATOL)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=ENGINE_ATOL)
