"""Hypothesis strategies for property tests of a CTC implementation against the reference.

    from hypothesis import given
    from ctcbridge.testing import assert_conforms
    from ctcbridge.testing.strategies import ctc_problems

    @given(ctc_problems(max_frames=12, max_classes=5))
    def test_my_ctc(case):
        assert_conforms(my_ctc, "torch.ctc_loss", cases=[case])

Needs ``hypothesis`` (not a dependency of ctcbridge).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from .._numerics import required_frames
from ..conform.corpus import Case

__all__ = ["ctc_problems"]


@st.composite
def ctc_problems(draw, max_frames: int = 16, max_batch: int = 3, max_classes: int = 6,
                 max_label_length: int = 6, blank: int | str | None = None,
                 inputs: str = "logits", feasible: bool | None = True, scale: float = 4.0,
                 min_frames: int = 0):
    """CTC problems as :class:`ctcbridge.conform.corpus.Case` (time-major activations
    (T, N, C), labels padded with the blank, lengths), which ``assert_conforms`` and
    ``check_conformance`` take as ``cases=[case]``.

    `blank`: a class index, ``"last"``, or None (drawn); `inputs`: ``"logits"`` or
    ``"log_probs"`` (log_softmax applied); `feasible`: True keeps every label within
    its input length's reach (L + repeats frames), None leaves it to the draw (a loss
    of +inf where not); `scale`: logits drawn in [-scale, scale] (float32 values).
    Labels draw repeats often (a repeat needs a blank between, the classic bug)."""
    C = draw(st.integers(2, max(2, max_classes)), label="C")
    T = draw(st.integers(min_frames, max(min_frames, max_frames)), label="T")
    N = draw(st.integers(1, max(1, max_batch)), label="N")
    b = C - 1 if blank == "last" else (draw(st.integers(0, C - 1), label="blank")
                                       if blank is None else int(blank))
    others = [c for c in range(C) if c != b]
    input_lengths = [draw(st.integers(0, T), label="input_length") for _ in range(N)]
    seqs = []
    for n in range(N):
        seq = []
        for _ in range(draw(st.integers(0, max_label_length), label="label_length")):
            if seq and draw(st.booleans(), label="repeat"):
                seq.append(seq[-1])
            else:
                seq.append(draw(st.sampled_from(others), label="label"))
        if feasible:
            while seq and required_frames(np.array(seq)) > input_lengths[n]:
                seq.pop()
        seqs.append(seq)
    width = max([0] + [len(q) for q in seqs])
    labels = np.full((N, width), b, dtype=np.int64)
    for n, q in enumerate(seqs):
        labels[n, :len(q)] = q
    x = draw(arrays(np.float32, (T, N, C), elements=st.floats(
        -scale, scale, width=32, allow_nan=False, allow_infinity=False)), label="activations")
    x = x.astype(np.float64)
    if inputs == "log_probs":
        from .._numerics import log_softmax

        x = log_softmax(x).astype(np.float32).astype(np.float64)
    return Case("hypothesis", x, labels, np.array(input_lengths, dtype=np.int64),
                np.array([len(q) for q in seqs], dtype=np.int64), b, inputs, ("hypothesis",),
                f"drawn by ctcbridge.testing.strategies.ctc_problems: T={T} N={N} C={C} "
                f"blank={b}")
