"""`ctcbridge explain --decoding`: the aligners' and decoders' conventions, and the
claims it makes about ctcbridge's own functions, checked on the engine."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np

import ctcbridge
from ctcbridge.explain import DECODING, explain_decoding


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctcbridge", "explain", *args],
                          capture_output=True, text=True, timeout=120)


def test_every_decoder_is_described():
    text = explain_decoding()
    for name, conv in DECODING.items():
        assert f"{name} ({conv.entry})" in text
    for title in ("blank:", "repeated labels:", "ties:", "scores returned:"):
        assert text.count(title) == len(DECODING)


def test_the_command_prints_them():
    done = _cli("--decoding")
    assert done.returncode == 0 and "tensorflow.ctc_beam_search_decoder_v1" in done.stdout
    pair = _cli("tensorflow.ctc_greedy_decoder", "keras.ctc_decode")
    assert pair.returncode == 0, pair.stderr
    assert "The default blank moves (C-1 -> 0)" in pair.stdout
    assert "activations' layout:" in pair.stdout and "NTC" in pair.stdout
    same = _cli("--decoding", "ctcbridge.decode_greedy", "ctcbridge.decode_greedy")
    assert same.returncode == 0 and "the same" in same.stdout


def test_a_loss_and_a_decoder_do_not_mix():
    done = _cli("torch", "keras.ctc_decode")
    assert done.returncode == 2 and "must both be losses or both aligners/decoders" in done.stderr
    bad = _cli("torch", "nonsense")
    assert bad.returncode == 2 and "tensorflow.ctc_greedy_decoder" in bad.stderr


def test_ctcbridges_claims_hold():
    """The default blank is 0; greedy ties go to the smallest class; beam-search ties
    to the lexicographically smaller label sequence; forced alignment's ties to staying."""
    for name in ("forced_align", "decode_greedy", "decode_beam"):
        default = inspect.signature(getattr(ctcbridge, name)).parameters["blank"].default
        assert str(default) == DECODING[f"ctcbridge.{name}"].default_blank
    x = np.log(np.full((3, 1, 4), 0.25))  # every frame uniform
    assert ctcbridge.decode_greedy(x, blank=3).sequences[0, :1].tolist() == [0]
    beam = ctcbridge.decode_beam(x[:1], beam_width=4, top_paths=3, blank=3)
    # equal scores 1/4 each: the empty prefix (a prefix before its extensions), [0], [1]
    got = [beam.sequences[0, k, : beam.lengths[0, k]].tolist() for k in range(3)]
    assert got == [[], [0], [1]]
    assert beam.scores[0, 0] == beam.scores[0, 2]
    ali = ctcbridge.forced_align(x, np.array([[1]]), inputs="log_probs")
    # the path ends in the label (not strictly worse than the final blank), and going
    # back each frame stays rather than coming from s-1: the label on every frame
    assert ali.path[0].tolist() == [1, 1, 1]
