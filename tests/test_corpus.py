"""The shipped conformance corpus: its file, its coverage, its reference values.

The shipped file (ctcbridge/data/corpus-v*.npz) must equal what the generator
and the float64 reference produce today; if a test here fails after a change
to the cases, bump CORPUS_VERSION and regenerate with `nox -s corpus`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctcbridge import reference
from ctcbridge.conform import corpus
from ctcbridge.conform.compare import check_engine
from ctcbridge.conform.divergences import (DOCS_BEGIN, DOCS_END, divergences_markdown,
                                           divergences_text, load_divergences)
from ctcbridge._numerics import required_frames
from ctcbridge.conform.corpus import Case

from helpers import assert_close_grads, assert_close_losses

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = corpus.load()
BY_NAME = {c.name: c for c in SHIPPED}
REGENERATE = "regenerate with `nox -s corpus` (and bump CORPUS_VERSION if the cases changed)"


def test_file_is_versioned_small_and_in_the_package():
    path = corpus.corpus_path()
    assert path.parent == Path(corpus.__file__).parent.parent / "data"
    assert corpus.corpus_version(path) == corpus.CORPUS_VERSION
    assert path.stat().st_size < 4 * 2**20  # a few MB at most
    assert len(SHIPPED) == len(BY_NAME) >= 30


def test_shipped_inputs_are_the_generators():
    generated = corpus.builtin_cases()
    assert [c.name for c in generated] == [c.name for c in SHIPPED], REGENERATE
    for gen, shipped in zip(generated, SHIPPED):
        for field in ("activations", "labels", "input_lengths", "label_lengths"):
            np.testing.assert_array_equal(getattr(gen, field), getattr(shipped, field),
                                          err_msg=f"{gen.name}.{field}: {REGENERATE}")
        assert (gen.blank, gen.inputs, gen.tags, gen.description) == \
            (shipped.blank, shipped.inputs, shipped.tags, shipped.description), REGENERATE


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: c.name)
def test_shipped_results_are_the_references(case):
    """The stored losses and gradients are what the reference computes now."""
    with np.errstate(all="ignore"):
        loss, grad = reference.ctc_loss_and_grad(case.activations, case.labels,
                                                 **case.kwargs())
    assert_close_losses(case.ref_loss, loss, rtol=1e-12, atol=1e-12)
    assert_close_grads(case.ref_grad, grad, atol=1e-12)
    assert case.ref_grad.shape == case.shape and case.ref_loss.shape == (case.shape[1],)


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_engine_matches_the_shipped_results(case, dtype):
    result = check_engine(case, dtype)
    assert result.passed, result


def test_stored_inputs_are_float32_values():
    for case in SHIPPED:
        with np.errstate(invalid="ignore", over="ignore"):
            back = case.activations.astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(back, case.activations, err_msg=case.name)


def _samples(pred):
    return [(c, n) for c in SHIPPED for n in range(c.shape[1]) if pred(c, n)]


def _label(c, n):
    return c.labels[n, : c.label_lengths[n]]


def test_coverage():
    """Every behaviour the issue lists has cases, checked on the numbers, not the names."""
    shapes = {c.shape for c in SHIPPED}
    assert len(shapes) >= 20
    assert any(T >= 2000 for T, _, _ in shapes) and any(C >= 5000 for _, _, C in shapes)
    assert max(c.label_lengths.max(initial=0) for c in SHIPPED) >= 300
    blanks = {("first" if c.blank == 0 else "last" if c.blank == c.shape[2] - 1 else "middle")
              for c in SHIPPED}
    assert blanks == {"first", "middle", "last"}
    assert {"logits", "log_probs"} == {c.inputs for c in SHIPPED}
    assert _samples(lambda c, n: np.any(_label(c, n)[1:] == _label(c, n)[:-1]))  # repeats
    at_boundary = _samples(lambda c, n: c.label_lengths[n] > 0 and
                           required_frames(_label(c, n)) == c.input_lengths[n])
    assert len(at_boundary) >= 3
    assert any(np.any(_label(c, n)[1:] == _label(c, n)[:-1]) for c, n in at_boundary)
    assert len(_samples(lambda c, n: required_frames(_label(c, n)) > c.input_lengths[n])) >= 5
    assert _samples(lambda c, n: c.label_lengths[n] == 0 and c.input_lengths[n] > 0)
    assert _samples(lambda c, n: c.input_lengths[n] == 0 and c.label_lengths[n] == 0)
    assert _samples(lambda c, n: c.input_lengths[n] == 0 and c.label_lengths[n] > 0)
    assert any(c.labels.shape[1] == 0 for c in SHIPPED)  # padded width 0
    assert any(np.abs(c.activations[np.isfinite(c.activations)]).max() >= 300 for c in SHIPPED)


def _used(c, n):
    return c.activations[: c.input_lengths[n], n]


def _padding(c, n):
    return c.activations[c.input_lengths[n]:, n]


def test_non_finite_inputs_have_defined_results():
    """NaN, +inf and -inf, in used frames and in padding, with the documented results
    (docs/conformance.md): padding is never read; NaN or +inf on a path gives NaN;
    -inf is probability 0 (finite, or +inf when it leaves no alignment)."""
    seen = set()
    for c in SHIPPED:
        loss, grad = c.ref_loss, c.ref_grad
        for n in range(c.shape[1]):
            used, pad = _used(c, n), _padding(c, n)
            if not np.isfinite(pad).all():
                seen.add("padding")
                assert not np.isnan(loss[n]) and (grad[c.input_lengths[n]:, n] == 0).all()
            if c.inputs == "logits" and (np.isnan(used).any() or np.isposinf(used).any()):
                seen.add("nan/+inf logit")
                assert np.isnan(loss[n]) and np.isnan(grad[: c.input_lengths[n], n]).all()
            if c.inputs == "logits" and np.isneginf(used).all(axis=-1).any():
                seen.add("-inf frame")
                assert np.isnan(loss[n])
            if np.isneginf(used).any() and np.isfinite(loss[n]):
                seen.add("-inf finite")
                g = grad[: c.input_lengths[n], n]
                assert np.isfinite(g).all() and (g[np.isneginf(used)] == 0).all()
            if np.isneginf(used).any() and np.isposinf(loss[n]) and \
                    required_frames(_label(c, n)) <= c.input_lengths[n]:
                seen.add("-inf infeasible")
            if c.inputs == "log_probs" and np.isposinf(used).any():
                seen.add("+inf log-prob")
                assert np.isnan(loss[n])
            if c.inputs == "log_probs" and np.isnan(used).any() and np.isfinite(loss[n]):
                seen.add("NaN off every path")
    assert seen == {"padding", "nan/+inf logit", "-inf frame", "-inf finite", "-inf infeasible",
                    "+inf log-prob", "NaN off every path"}


def test_zero_length_inputs():
    c = BY_NAME["zero-length"]
    assert c.ref_loss[0] == 0.0 and c.ref_loss[1] == np.inf
    assert (c.ref_grad[:, :2] == 0).all()  # no frame is read


def test_save_load_roundtrip(tmp_path):
    cases = [c for c in SHIPPED if c.shape[0] < 100][:5]
    path = tmp_path / "mine.npz"
    corpus.save(cases, path, version=7)
    back = corpus.load(path)
    assert corpus.corpus_version(path) == 7
    for a, b in zip(cases, back):
        assert a.name == b.name and a.tags == b.tags and a.blank == b.blank
        np.testing.assert_array_equal(a.activations, b.activations)
        np.testing.assert_array_equal(a.ref_grad, b.ref_grad)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ctcbridge corpus"):
        corpus.load(path)


def test_reference_computed_when_not_stored():
    c = corpus.builtin_cases()[0]
    assert c.ref_loss is None
    loss, grad = c.reference()
    assert loss.shape == (c.shape[1],) and grad.shape == c.shape
    assert isinstance(c, Case)


def test_divergence_docs_are_generated_from_the_file():
    """docs/conformance.md renders ctcbridge/divergences.json; refresh it with
    `python -m ctcbridge.conform.divergences docs/conformance.md`."""
    text = (ROOT / "docs" / "conformance.md").read_text()
    start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
    assert text[start:end] + "\n" == divergences_markdown(), \
        "stale: run `python -m ctcbridge.conform.divergences docs/conformance.md`"
    plain = divergences_text()
    for entry in load_divergences()["divergences"]:
        assert entry["id"] in plain and entry["id"] in text


def test_known_answers_are_corpus_cases():
    """The published known answers (ctcbridge/data/known_answers.json) join the shipped
    corpus at load time, tagged known-answer, converted so that the reference's losses
    and gradients are the published ones to the source's precision."""
    import json

    doc = json.loads(corpus.KNOWN_ANSWERS.read_text())
    cases = corpus.known_answer_cases()
    assert [c.name for c in cases] == [f"known-answer-{e['name']}" for e in doc["cases"]]
    assert [c.name for c in corpus.select(corpus.shipped_cases(), "known-answer")] == \
        [c.name for c in cases]
    for case, entry in zip(cases, doc["cases"]):
        assert case.tags == ("known-answer",) and entry["provenance"]["repository"] in \
            case.description
        loss, grad = case.reference()
        tol = entry["precision"]
        if entry["loss"] is not None:
            bound = tol["loss"].get("atol", 0) + tol["loss"].get("rtol", 0) * np.abs(entry["loss"])
            assert (np.abs(loss - entry["loss"]) <= bound).all(), case.name
        else:  # warp-ctc's small_test: a likelihood expression
            assert abs(np.exp(-loss[0]) - entry["likelihood_evaluated"]) <= \
                tol["likelihood"]["atol"]
        if entry["grad"] is not None:
            published = np.asarray(entry["grad"], dtype=np.float64)
            if entry["layout"] == "NTC":
                published = published.transpose(1, 0, 2)
            T = published.shape[0]
            assert np.abs(grad[:T] - published).max() <= tol["grad"]["atol"] + \
                tol["grad"].get("rtol", 0) * np.abs(published).max(), case.name
            assert (grad[T:] == 0).all()  # the padded frames (NaN inputs) are not read
