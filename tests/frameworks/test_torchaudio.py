"""ctcbridge.torchaudio against torchaudio.functional.forced_align and
merge_tokens, in the torchaudio session."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchaudio = pytest.importorskip("torchaudio")
import torchaudio.functional as F  # noqa: E402

import ctcbridge  # noqa: E402
from ctcbridge.errors import CTCRuntimeError  # noqa: E402
from ctcbridge import torchaudio as cta  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning, module="torchaudio")


def _case(seed, T=30, C=8, L=6, repeats=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(1, T, C, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)
    targets = torch.randint(1, C, (1, L), generator=g)
    if repeats:
        targets[0, 1::2] = targets[0, 0::2][: targets[0, 1::2].numel()]
    return lp.to(dtype), targets


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("repeats", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forced_align_matches_torchaudio(seed, repeats, dtype):
    lp, targets = _case(seed, repeats=repeats, dtype=dtype)
    want_path, want_scores = F.forced_align(lp, targets, blank=0)
    path, scores = cta.forced_align(lp, targets, blank=0)
    assert isinstance(path, torch.Tensor) and path.dtype == want_path.dtype
    assert scores.dtype == want_scores.dtype and scores.shape == want_scores.shape
    torch.testing.assert_close(path, want_path, rtol=0, atol=0)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=0)  # the same entries


@pytest.mark.parametrize("seed", range(6))
def test_forced_align_ties_and_other_blank(seed):
    # integer log-probs (many equal paths): torchaudio's tie rule decides
    g = torch.Generator().manual_seed(seed)
    lp = -torch.randint(0, 3, (1, 12, 5), generator=g).float()
    blank = seed % 5
    targets = torch.tensor([[k for k in (1, 2, 3, 4, 2) if k != blank][:3]], dtype=torch.int32)
    want = F.forced_align(lp, targets, blank=blank)
    got = cta.forced_align(lp, targets, input_lengths=torch.tensor([12]),
                           target_lengths=torch.tensor([3]), blank=blank)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_forced_align_tight_fit():
    lp, targets = _case(3, T=11, L=6, repeats=True)  # L + repeats = 6 + 5 frames exactly
    want = F.forced_align(lp, targets)
    got = cta.forced_align(lp, targets)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)


def test_forced_align_numpy_in_numpy_out():
    lp, targets = _case(1)
    path, scores = cta.forced_align(lp.numpy(), targets.numpy())
    assert isinstance(path, np.ndarray) and path.dtype == np.int64
    np.testing.assert_array_equal(path, F.forced_align(lp, targets)[0].numpy())


def test_forced_align_requires_no_grad_and_float16():
    lp, targets = _case(2)
    path, scores = cta.forced_align(lp.clone().requires_grad_(), targets)
    assert not scores.requires_grad
    half = cta.forced_align(lp.half(), targets)[1]
    assert half.dtype == torch.float16


@pytest.mark.parametrize("seed", range(5))
def test_merge_tokens_matches_torchaudio(seed):
    lp, targets = _case(seed, repeats=True)
    path, scores = F.forced_align(lp, targets)
    want = F.merge_tokens(path[0], scores[0])
    got = cta.merge_tokens(path[0], scores[0])
    assert [(s.token, s.start, s.end) for s in got] == [(s.token, s.start, s.end) for s in want]
    np.testing.assert_allclose([s.score for s in got], [s.score for s in want], rtol=1e-6)
    assert [len(s) for s in got] == [len(s) for s in want]


@pytest.mark.parametrize("call, native_error, ours_error, match", [
    (lambda m, lp, t: m.forced_align(lp, torch.tensor([[1, 0, 2]])), ValueError,
     ctcbridge.CTCValueError, "blank"),
    (lambda m, lp, t: m.forced_align(lp, torch.tensor([[1, 8]])), ValueError,
     ctcbridge.CTCValueError, "less than the CTC dimension"),
    (lambda m, lp, t: m.forced_align(torch.cat([lp, lp]), torch.cat([t, t])), RuntimeError,
     CTCRuntimeError, "batch"),
    (lambda m, lp, t: m.forced_align(lp, t, torch.tensor([20])), RuntimeError,
     CTCRuntimeError, "input length mismatch"),
    (lambda m, lp, t: m.forced_align(lp, t, None, torch.tensor([3])), RuntimeError,
     CTCRuntimeError, "target length mismatch"),
    (lambda m, lp, t: m.forced_align(lp[:, :5], torch.tensor([[1, 1, 1, 1]])), RuntimeError,
     CTCRuntimeError, "cannot be aligned|too long"),
    (lambda m, lp, t: m.forced_align(lp[0], t), RuntimeError, CTCRuntimeError,
     "3-D"),
    (lambda m, lp, t: m.forced_align(lp, t.float()), RuntimeError, CTCRuntimeError,
     "int32 or int64"),
    (lambda m, lp, t: m.merge_tokens(t, lp[0, 0]), ValueError, ctcbridge.CTCValueError, "1D"),
])
def test_errors_like_torchaudio(call, native_error, ours_error, match):
    lp, targets = _case(0)
    with pytest.raises(native_error):
        call(F, lp, targets)
    with pytest.raises(ours_error, match=match):
        call(cta, lp, targets)


def test_negative_target_divergence():
    """Divergence torchaudio-negative-target: torchaudio does not check targets
    below 0 (it reads outside the lattice and returns a path holding -1)."""
    lp, _ = _case(0)
    path, _ = F.forced_align(lp, torch.tensor([[1, -1]]))
    assert (path < 0).any()  # not an alignment of the targets
    with pytest.raises(ctcbridge.CTCValueError, match="targets values must be in"):
        cta.forced_align(lp, torch.tensor([[1, -1]]))


def test_empty_targets_divergence():
    """Divergence torchaudio-empty-targets: torchaudio fails on (1, 0) targets
    (torch.max of an empty tensor); the only alignment is all blanks."""
    lp, _ = _case(0)
    empty = torch.zeros((1, 0), dtype=torch.int64)
    with pytest.raises(RuntimeError):
        F.forced_align(lp, empty)
    path, scores = cta.forced_align(lp, empty)
    assert (path == 0).all()
    torch.testing.assert_close(scores, lp[:, :, 0])


def test_first_call_in_a_fresh_process():
    code = ("import torch, ctcbridge.torchaudio as cta;"
            "p, s = cta.forced_align(torch.randn(1, 9, 4).log_softmax(-1), torch.tensor([[1, 2]]));"
            "assert p.shape == (1, 9) and s.dtype == torch.float32")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the other decoders' signatures on torch arrays (no TF, no Keras installed here)


@pytest.mark.parametrize("strategy", ["greedy", "beam_search"])
def test_keras_ctc_decode_on_torch_arrays(strategy):
    from ctcbridge import keras as ck

    x = torch.randn(3, 9, 5, generator=torch.Generator().manual_seed(4))
    lengths = torch.tensor([9, 4, 0], dtype=torch.int32)
    decoded, scores = ck.ctc_decode(x, lengths, strategy=strategy, top_paths=1)
    assert isinstance(decoded, torch.Tensor) and decoded.dtype == torch.int32
    assert isinstance(scores, torch.Tensor) and scores.dtype == torch.float32
    want, want_scores = ck.ctc_decode(x.numpy(), lengths.numpy(), strategy=strategy)
    np.testing.assert_array_equal(decoded.numpy(), want)
    np.testing.assert_array_equal(scores.numpy(), want_scores)
    # the canonical decoder, read the same way: batch-major, blank 0
    best = ctcbridge.decode_greedy(x.numpy(), lengths.numpy(), layout="NTC")
    if strategy == "greedy":
        for n in range(3):
            np.testing.assert_array_equal(decoded[0, n, : best.lengths[n]].numpy(),
                                          best.sequences[n, : best.lengths[n]])
