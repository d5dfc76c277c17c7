"""ctcbridge.keras.ctc_decode against keras.ops.ctc_decode on Keras's JAX and torch
backends (the tensorflow session, which installs jax and torch beside TensorFlow).

Keras picks its backend once per process from KERAS_BACKEND, so each backend runs in
a fresh subprocess (as tests/frameworks/test_keras_fit.py does), which prints what it
measured as JSON.  The JAX and torch backends decode with their own implementations
(keras/src/backend/{jax,torch}/nn.py), not with TensorFlow's; ctcbridge.keras follows
the TensorFlow backend, and the outputs are equal except for the two divergences of
ctcbridge/divergences.json tested below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("keras")

BACKENDS = ("jax", "torch")

# Runs under KERAS_BACKEND=<backend>: random beam searches (no ties), then the two
# divergent cases; prints one JSON line.
_PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import keras
    import ctcbridge.keras as ck
    from ctcbridge import CTCValueError

    def np_(a):
        return keras.ops.convert_to_numpy(a)

    rng = np.random.default_rng(0)
    out = {"backend": keras.backend.backend(), "compared": 0, "mismatches": [],
           "score_error": 0.0}
    # few shapes and settings: JAX compiles the search for each
    for trial in range(16):
        B, T, C = ((3, 8, 5), (2, 6, 4))[trial % 2]
        x = (rng.standard_normal((B, T, C)) * 2).astype(np.float32)
        lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
        beam_width = int(rng.integers(1, 6))
        mask_index = int(rng.integers(0, C))
        # every sample's beam holds at least min(C - 1, beam_width) + 1 prefixes
        # after one frame: ask for no more (the first divergence is tested below)
        top_paths = int(rng.integers(1, min(beam_width, C - 1) + 1))
        kw = dict(strategy="beam_search", beam_width=beam_width, top_paths=top_paths,
                  mask_index=mask_index)
        want, want_scores = keras.ops.ctc_decode(x, lengths, **kw)
        got, scores = ck.ctc_decode(x, lengths, **kw)
        out["compared"] += 1
        if np_(want).shape != np_(got).shape or (np_(want) != np_(got)).any():
            out["mismatches"].append(trial)
        else:
            out["score_error"] = max(out["score_error"], float(np.max(np.abs(
                np_(want_scores) - np_(scores)), initial=0.0)))
        assert np_(scores).dtype == np_(want_scores).dtype, (np_(scores).dtype,
                                                              np_(want_scores).dtype)

    # more top paths than the beam holds prefixes (one frame of 3 classes: 3 prefixes)
    x = rng.standard_normal((1, 1, 3)).astype(np.float32)
    kw = dict(strategy="beam_search", beam_width=6, top_paths=5, mask_index=0)
    d, s = keras.ops.ctc_decode(x, np.array([1], np.int32), **kw)
    out["fewer_native"] = [np_(d)[:, 0].tolist(), np_(s)[0].tolist()]
    try:
        ck.ctc_decode(x, np.array([1], np.int32), **kw)
        out["fewer_ours"] = "returned"
    except CTCValueError as exc:
        out["fewer_ours"] = str(exc)

    # a zero-length sample
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    x[0, 0] = [0.0, 5.0, 0.0]  # frame 0 of sample 0 says class 1
    kw = dict(strategy="beam_search", beam_width=4, top_paths=1, mask_index=0)
    zero, one = np.array([0, 4], np.int32), np.array([1, 4], np.int32)
    d0, s0 = keras.ops.ctc_decode(x, zero, **kw)
    d1, s1 = keras.ops.ctc_decode(x, one, **kw)
    g0, gs0 = ck.ctc_decode(x, zero, **kw)
    out["zero_native"] = [np_(d0)[0, 0].tolist(), float(np_(s0)[0, 0])]
    out["one_native"] = [np_(d1)[0, 0].tolist(), float(np_(s1)[0, 0])]
    out["zero_ours"] = [np_(g0)[0, 0].tolist(), float(np_(gs0)[0, 0])]
    print(json.dumps(out))
""")


def _probe(backend: str) -> dict:
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=BACKENDS)
def probe(request) -> dict:
    return _probe(request.param)


def test_beam_search_equals_the_backend(probe):
    """Random inputs (no ties): the same paths in the same order, the same scores
    within float32 rounding (the backends sum in float32, we in float64)."""
    assert probe["backend"] in BACKENDS
    assert probe["compared"] == 16
    assert probe["mismatches"] == []
    assert probe["score_error"] < 1e-4


def test_fewer_prefixes_than_top_paths_divergence(probe):
    """Divergence keras-beam-fewer-prefixes: the JAX and torch backends fill the paths
    the beam does not have with empty sequences scored -inf; ctcbridge (and Keras's
    TensorFlow backend) raise "Less leaves in the beam search than requested"."""
    decoded, scores = probe["fewer_native"]
    assert decoded[3:] == [[-1], [-1]] and scores[3:] == [float("-inf")] * 2
    assert all(s > float("-inf") for s in scores[:3])
    assert probe["fewer_ours"].startswith("Less leaves in the beam search than requested")


def test_zero_length_sample_divergence(probe):
    """Divergence keras-beam-zero-length: the JAX and torch backends start their search
    with frame 0 whatever the length, so a sample of length 0 decodes like one of
    length 1; ctcbridge (and the TensorFlow backend) decode no frame: the empty
    sequence, score 0."""
    assert probe["zero_native"] == probe["one_native"]
    assert probe["zero_native"][0][0] == 1  # frame 0 was decoded
    assert probe["zero_ours"] == [[-1, -1, -1, -1], 0.0]
