"""`ctcbridge conform`'s aligner and decoder rows with the frameworks installed: ours
on the frameworks' arrays, and the natives (the torchaudio session for torchaudio,
the tensorflow session for TF and Keras)."""

from __future__ import annotations

import importlib.util

import pytest

from ctcbridge.conform import decoders
from ctcbridge.conform.corpus import shipped_cases

INSTALLED = [fw for fw in ("torch", "tensorflow") if importlib.util.find_spec(fw)]
if not INSTALLED:
    pytest.skip("neither torch nor tensorflow is installed here", allow_module_level=True)

# the rows whose native runs on the arrays installed here
ROWS = [r for r in decoders.ROWS if r.available() and set(r.native_frameworks) & set(INSTALLED)
        and importlib.util.find_spec(r.native.split(":")[0].split(".")[0])]


@pytest.fixture(scope="module")
def matrix():
    return decoders.run_decoder_matrix(shipped_cases(), ["numpy", *INSTALLED], native=True,
                                       rows=ROWS)


def test_rows_exist_for_the_installed_natives():
    names = {r.name for r in ROWS}
    if importlib.util.find_spec("torchaudio"):
        assert {"torchaudio.forced_align", "torchaudio.merge_tokens"} <= names
    if importlib.util.find_spec("tensorflow"):
        assert {"tensorflow.ctc_greedy_decoder", "tensorflow.ctc_beam_search_decoder",
                "tensorflow.ctc_beam_search_decoder_v1 (merge_repeated=True)",
                "keras.ctc_decode (greedy)", "keras.ctc_decode (beam_search)"} <= names


def test_ours_pass_on_every_framework(matrix):
    for m in matrix:
        if m["native"]:
            continue
        for fw, cell in m["cells"].items():
            assert cell["passed"] and cell["cases"] > 0, (m["signature"], fw,
                                                         cell["failed_cases"])


def test_natives_run_and_mostly_agree(matrix):
    """Every native accepts the cases its row gives it (no exception); the greedy
    decoders and merge_tokens agree exactly (paths) and within the score tolerance;
    torchaudio's aligner and TF's beam searches agree on some cases and differ on
    others for the documented reasons (torchaudio's paths through probability-0
    cells, docs/c_api.md; TF's pruning, divergence tf-beam-search-pruning: about
    12 of the 30 corpus cases with beam width 8)."""
    natives = [m for m in matrix if m["native"]]
    assert natives
    for m in natives:
        for fw, cell in m["cells"].items():
            errors = [r["error"] for r in cell["results"] if r["error"]]
            assert not errors, (m["signature"], errors[:2])
            name = m["signature"].split(" ", 1)[1]
            if "greedy" in name or "merge_tokens" in name:
                assert cell["passed"], (name, cell["failed_cases"])
            else:  # some cases agree: the rows convert the conventions right
                assert len(cell["failed_cases"]) < cell["cases"], name
