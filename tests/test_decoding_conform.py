"""The aligner and decoder rows of `ctcbridge conform` (ctcbridge/conform/decoders.py):
their float64 references against the engine, and the rows on numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

import ctcbridge
from ctcbridge.conform import decoders
from ctcbridge.conform.corpus import shipped_cases


def _lp(rng, T, C):
    x = rng.standard_normal((T, C)) * 2
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_reference_is_the_engines_path(seed):
    rng = np.random.default_rng(seed)
    T, C = 12, 5
    lp = _lp(rng, T, C)
    labels = [1, 2, 2, 4] if seed % 2 else [3, 1]
    path, scores = decoders.viterbi_reference(lp, labels, 0)
    got = ctcbridge.forced_align(lp[:, None], np.array([labels]), inputs="log_probs")
    np.testing.assert_array_equal(got.path[0], path)
    np.testing.assert_array_equal(got.scores[0], scores)


def test_viterbi_reference_ties_follow_torchaudio():
    # every frame uniform: stay beats s-1, s-1 beats s-2, the last label beats the
    # final blank
    lp = np.full((6, 3), np.log(1 / 3))
    path, _ = decoders.viterbi_reference(lp, [1, 2], 0)
    got = ctcbridge.forced_align(lp[:, None], np.array([[1, 2]]), inputs="log_probs")
    np.testing.assert_array_equal(got.path[0], path)


@pytest.mark.parametrize("seed", range(6))
def test_beam_reference_is_the_engines_search(seed):
    rng = np.random.default_rng(seed)
    T, C, B, K = 7, 4, 3 + seed % 3, 2
    lp = _lp(rng, T, C)
    want = decoders.beam_reference(lp, C - 1, B, K)
    got = ctcbridge.decode_beam(lp[:, None], beam_width=B, top_paths=K, blank=C - 1,
                                inputs="log_probs")
    for k, (prefix, score) in enumerate(want):
        assert got.sequences[0, k, : got.lengths[0, k]].tolist() == list(prefix)
        assert got.scores[0, k] == pytest.approx(score, rel=1e-12)


def test_greedy_reference():
    x = np.array([[0.0, 2.0, 2.0], [1.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 3.0, 0.0]])
    assert decoders.greedy_reference(x, 0, True) == ([1, 1], 9.0)
    assert decoders.greedy_reference(x, 0, False) == ([1, 1, 1], 9.0)


def test_rows_pass_on_numpy():
    cases = shipped_cases()[:12]
    rows = [r for r in decoders.ROWS if "numpy" in r.frameworks and r.available()]
    assert any(r.name == "torchaudio.forced_align" for r in rows)
    matrix = decoders.run_decoder_matrix(cases, ["numpy"], rows=rows)
    for m in matrix:
        cell = m["cells"]["numpy"]
        assert cell["passed"], (m["signature"], cell["failed_cases"])
        assert cell["cases"] > 0


def test_a_wrong_aligner_fails():
    """The row compares: an aligner that shifts the path by a frame is caught."""
    row = next(r for r in decoders.ROWS if r.name == "torchaudio.forced_align")
    case = next(c for c in shipped_cases()
                if c.shape[0] >= 4 and decoders._prep_align(c) is not None)

    def shifted(log_probs, targets, blank=0):
        ali, scores = ctcbridge.torchaudio.forced_align(log_probs, targets, blank=blank)
        return np.roll(ali, 1, axis=1), scores

    import ctcbridge.torchaudio  # noqa: F401

    broken = decoders.DecoderRow(row.name, row.ours_spec, row.native, row.frameworks,
                                 row.native_frameworks, row.prepare, row.outputs)
    broken.function = lambda native: shifted  # type: ignore[method-assign]
    result = decoders.check_decoder(broken, case, "numpy")
    assert result is not None and not result.passed
    assert "paths differ" in result.details[0]


def test_a_native_beam_with_other_paths_is_explained_by_tf_pruning():
    """divergences.json's `differs_in: paths` names TF's pruning for a native beam
    search that returned other label sequences, not for one that raised."""
    from ctcbridge.conform.divergences import explain_case

    case = shipped_cases()[0]
    differs = dict(passed=False, error="", loss_error=float("inf"), grad_error=None,
                   details=["paths differ ((1, 2, 5) vs the reference's (1, 2, 5)) in 1 sample(s)"])
    raised = dict(differs, error="InvalidArgumentError: ...", details=["raised ..."])
    for name in ("tensorflow.ctc_beam_search_decoder", "keras.ctc_decode (beam_search)",
                 "tensorflow.ctc_beam_search_decoder_v1 (merge_repeated=True)"):
        assert "tf-beam-search-pruning" in explain_case(name, case, differs)
        assert "tf-beam-search-pruning" not in explain_case(name, case, raised)
    assert explain_case("tensorflow.ctc_greedy_decoder", case, differs) == []
