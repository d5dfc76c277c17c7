"""Engine safety: exact on every valid input, memory-safe when the caller's
arrays change during a call, strict about integers, memory-checked before any
copy, interruptible.

Each test reproduces a way the engine or the canonical API once broke (a
crash, a wrong number, the wrong exception); docs/reliability.md lists the
guarantees they stand for.  The sanitize session runs this file on the
ASan + UBSan build of the engine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ctcbridge
from ctcbridge import reference
from ctcbridge._compute import _available_memory, compute
from ctcbridge.errors import CTCError, CTCTypeError, CTCValueError, EngineMemoryError
from helpers import subprocess_env

# ------------------------------------------------- concurrent mutation (item 1)


def _flipper(stop: threading.Event, writes):
    def run():
        while not stop.is_set():
            for arr, index, bad, good in writes:
                arr[index] = bad
                arr[index] = good
    return threading.Thread(target=run, daemon=True)


@pytest.mark.parametrize("container", ["padded", "concatenated"])
def test_a_writer_thread_changes_only_its_own_sample(container):
    """Another thread flips one sample's label and both lengths to absurd
    values and back while calls run: each call either raises a CTCError or
    returns, and every other sample's loss and gradient are bit-identical
    to the undisturbed ones (the engine reads each integer once)."""
    rng = np.random.default_rng(0)
    T, N, C, L = 60, 8, 20, 12
    acts = rng.standard_normal((T, N, C)).astype(np.float32)
    padded = rng.integers(1, C, size=(N, L))
    in_len = np.full(N, T, dtype=np.int64)
    lab_len = np.full(N, L, dtype=np.int64)
    if container == "padded":
        labels = padded.copy()
        last = (N - 1, L - 1)
    else:
        labels = padded.reshape(-1).copy()
        last = N * L - 1
    ref_loss, ref_grad = ctcbridge.ctc_loss_and_grad(acts, labels, in_len, lab_len, num_threads=2)
    stop = threading.Event()
    writer = _flipper(stop, [(labels, last, 2**40, 1), (lab_len, N - 1, 2**40, L),
                             (in_len, N - 1, -(2**40), T)])
    writer.start()
    outcomes = {"ok": 0, "error": 0}
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                loss, grad = ctcbridge.ctc_loss_and_grad(acts, labels, in_len, lab_len,
                                                         num_threads=2)
            except CTCError:
                outcomes["error"] += 1
                continue
            outcomes["ok"] += 1
            np.testing.assert_array_equal(loss[:-1], ref_loss[:-1])
            np.testing.assert_array_equal(grad[:, :-1], ref_grad[:, :-1])
    finally:
        stop.set()
        writer.join()
    assert outcomes["ok"] + outcomes["error"] > 5, outcomes


def test_a_writer_thread_on_the_activations_breaks_nothing_else():
    """Activations written during the call: that sample's numbers are
    unspecified, the other samples' are exact and nothing crashes."""
    rng = np.random.default_rng(1)
    acts = rng.standard_normal((80, 4, 10))
    labels = rng.integers(1, 10, size=(4, 20))
    ref_loss, ref_grad = ctcbridge.ctc_loss_and_grad(acts, labels, num_threads=2)
    stop = threading.Event()
    writer = _flipper(stop, [(acts, (40, 3, 0), np.nan, 1e30), (acts, (41, 3, 1), -np.inf, 0.0)])
    writer.start()
    try:
        for _ in range(200):
            loss, grad = ctcbridge.ctc_loss_and_grad(acts, labels, num_threads=2)
            np.testing.assert_array_equal(loss[:3], ref_loss[:3])
            np.testing.assert_array_equal(grad[:, :3], ref_grad[:, :3])
    finally:
        stop.set()
        writer.join()


# ----------------------------------------------------- exact numbers (item 2)


def test_emissions_below_the_double_range_on_the_fast_path():
    """A confident frame whose class is not in the label once made the scaled
    recursion's running product subnormal, then 0: loss +inf, which
    zero_infinity did not clear (the sample counted as feasible)."""
    x = np.array([[[0.0, 460.0]], [[0.0, 300.0]]])
    empty = np.zeros((1, 0), np.int64)
    np.testing.assert_allclose(ctcbridge.ctc_loss(x, empty), [760.0], rtol=1e-12)
    np.testing.assert_allclose(ctcbridge.ctc_loss(x, empty, zero_infinity=True), [760.0],
                               rtol=1e-12)
    y = np.zeros((4, 1, 3))
    y[1, 0, 2] = 460
    y[2, 0, 2] = 300
    loss, grad = ctcbridge.ctc_loss_and_grad(y, [[1]])
    ref_loss, ref_grad = reference.ctc_loss_and_grad(y, [[1]])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(loss, [759.8946], rtol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-12)


def _random_problem(rng, T, N, C, L, scale):
    x = rng.standard_normal((T, N, C)) * scale
    labels = rng.integers(1, C, size=(N, L))
    in_len = rng.integers(max(1, T // 2), T + 1, size=N)
    return x, labels, in_len


@pytest.mark.parametrize("scale", [1.0, 10.0, 80.0, 300.0, 1000.0])
def test_large_logit_scales_match_the_reference(scale):
    """Differential test: random valid problems with logits scaled up to
    1000, float64 within 1e-9 relative of the float64 reference (float32
    within 2e-5, the reference run on the same float32 values); every
    feasible loss finite."""
    rng = np.random.default_rng(int(scale))
    for _ in range(40):
        T = int(rng.choice([2, 3, 5, 10, 30, 60]))
        C = int(rng.integers(2, 12))
        L = int(rng.integers(0, min(T, 8) + 1))
        x, labels, in_len = _random_problem(rng, T, 3, C, L, scale)
        # atol: a loss near 0 is -log of a probability near 1, known to about
        # the precision of that probability, whatever its relative error
        for dtype, rtol, atol, gtol in ((np.float64, 1e-9, 1e-12, 1e-9),
                                        (np.float32, 2e-5, 1e-6, 1e-4)):
            xd = x.astype(dtype)
            loss, grad = ctcbridge.ctc_loss_and_grad(xd, labels, in_len)
            ref_loss, ref_grad = reference.ctc_loss_and_grad(xd.astype(np.float64), labels,
                                                             in_len)
            feasible = np.isfinite(ref_loss)
            assert np.isfinite(loss[feasible]).all(), (loss, ref_loss)
            np.testing.assert_allclose(loss[feasible], ref_loss[feasible], rtol=rtol, atol=atol)
            np.testing.assert_allclose(grad[:, feasible], ref_grad[:, feasible], atol=gtol)


@pytest.mark.slow
@pytest.mark.parametrize("T,scale", [(5000, 1000.0), (5000, 80.0), (3000, 1.0)])
def test_long_sequences_at_large_scales_match_the_reference(T, scale):
    rng = np.random.default_rng(T + int(scale))
    x = rng.standard_normal((T, 1, 6)) * scale
    labels = rng.integers(1, 6, size=(1, 60))
    loss, grad = ctcbridge.ctc_loss_and_grad(x, labels)
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x, labels)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-9)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-8)
    loss32 = ctcbridge.ctc_loss(x.astype(np.float32), labels)
    ref32 = reference.ctc_loss(x.astype(np.float32).astype(np.float64), labels)
    np.testing.assert_allclose(loss32, ref32, rtol=2e-5)


# ----------------------------------------------------- extreme logits (item 3)


@pytest.mark.parametrize("dtype,value", [(np.float32, 1e30), (np.float32, -1e30),
                                         (np.float64, 1e300), (np.float64, -1e300)])
@pytest.mark.parametrize("C", [8, 3])  # more classes than states, and fewer
def test_huge_tied_logits_are_shift_invariant(dtype, value, C):
    """All logits equal to a huge value are the uniform distribution: the
    loss of zeros, a gradient whose rows sum to 0.  Both the engine and the
    reference (the conformance oracle) once gave -2.3026 and rows summing
    to 7."""
    labels = [[1, 2]]
    x = np.full((5, 1, C), value, dtype=dtype)
    want_loss, want_grad = reference.ctc_loss_and_grad(np.zeros((5, 1, C)), labels)
    np.testing.assert_allclose(reference.ctc_loss(x.astype(np.float64), labels), want_loss,
                               rtol=1e-12)
    for log_space in (False, True):
        loss, grad = compute(x, labels, log_space=log_space)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
        np.testing.assert_allclose(grad, want_grad, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inputs", ["logits", "log_probs"])
def test_a_class_at_minus_1e30_on_every_frame(dtype, inputs):
    """warp-ctc's inf_test: a label's class at -1e30 on every frame.  The loss
    is finite (about 1e30 per required visit) and the gradient bounded:
    every entry in [-1, 1], each frame summing to 0 (logits) or -1
    (log-probs), as the reference gives.  It once went down to -10.96."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 1, 15)).astype(dtype)
    x[:, 0, 2] = -1e30
    labels = rng.integers(3, 15, size=(1, 10))
    labels[0, 0] = 2
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x.astype(np.float64), labels, inputs=inputs)
    for log_space in (False, True):
        loss, grad = compute(x, labels, inputs=inputs, log_space=log_space)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        assert (grad >= -1 - 1e-6).all() and (grad <= 1 + 1e-6).all()
        np.testing.assert_allclose(grad.sum(-1), 0.0 if inputs == "logits" else -1.0, atol=1e-5)
        np.testing.assert_allclose(grad, ref_grad, atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6, 1e8])
@pytest.mark.parametrize("C", [20, 4])
def test_float32_gradient_does_not_depend_on_a_common_offset(offset, C):
    """softmax is shift-invariant: with float32 logits around 1e8 the gradient
    once erred by 0.92 (exp(x - (float)lse)); it must stay within 1e-4 of the
    reference computed on the same float32 values."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((30, 2, C)) * 3 + offset).astype(np.float32)
    labels = rng.integers(1, C, size=(2, 3))
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x.astype(np.float64), labels)
    for log_space in (False, True):
        loss, grad = compute(x, labels, log_space=log_space)
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
        np.testing.assert_allclose(grad, ref_grad, atol=1e-4)


# ------------------------------------------------------- integers (item 4)

X = np.zeros((12, 3, 5))
LABELS = [[1], [2], [3]]


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(input_lengths=[12, True, 12]), CTCTypeError, "input_lengths must hold integers, got a bool"),
    (dict(input_lengths=np.array([12, 11, np.True_], dtype=object)), CTCTypeError, "input_lengths.*bool"),
    (dict(input_lengths=np.array([12.0, 11.7, 10.2], dtype=object)), CTCTypeError,
     "input_lengths must hold integers, got 12.0"),
    (dict(input_lengths=[12.0, 11.0, 10.0]), CTCTypeError, "input_lengths must hold integers"),
    (dict(label_lengths=np.array([True, True, True])), CTCTypeError, "label_lengths.*bool"),
    (dict(labels=[[2**70], [1], [1]]), CTCValueError, "labels holds 1180591620717411303424"),
    (dict(input_lengths=[2**64, 1, 1]), CTCValueError, "input_lengths holds 18446744073709551616"),
    (dict(input_lengths=np.array([2**63, 1, 1], dtype=np.uint64)), CTCValueError, "beyond int64"),
    (dict(labels=[[1, 2], [1], [3]]), CTCValueError, "labels must be a rectangular array"),
    (dict(labels=[[True], [1], [1]]), CTCTypeError, "labels must hold integers, got a bool"),
    (dict(num_threads=2**32 + 1), CTCValueError, "num_threads = 4294967297 is outside"),
    (dict(num_threads=2**31), CTCValueError, "num_threads = 2147483648 is outside"),
    (dict(num_threads=True), CTCTypeError, "num_threads must be an integer"),
    (dict(blank=2.0), CTCTypeError, "blank must be an integer"),
])
def test_integer_arguments_strictly(kwargs, error, message):
    kwargs = {"labels": LABELS, **kwargs}
    labels = kwargs.pop("labels")
    with pytest.raises(error, match=message):
        ctcbridge.ctc_loss(X, labels, **kwargs)


def test_every_error_of_odd_activations_is_a_ctc_error():
    with pytest.raises(CTCValueError, match="activations must be a rectangular array"):
        ctcbridge.ctc_loss([[[0.0, 1.0]], [[0.0]]], [[1]])
    with pytest.raises(CTCTypeError, match="activations must be a floating-point array"):
        ctcbridge.ctc_loss(np.array([[[None]]]), [[1]])


def test_integers_that_are_fine():
    """numpy integer scalars, unsigned arrays in range and exact Python ints pass."""
    want = ctcbridge.ctc_loss(X, LABELS, [12, 11, 10])
    for lengths in ([np.int32(12), np.int64(11), 10], np.array([12, 11, 10], np.uint16),
                    np.array([12, 11, 10], dtype=object), (12, 11, 10)):
        np.testing.assert_array_equal(ctcbridge.ctc_loss(X, LABELS, lengths), want)


# --------------------------------------------- memory before copies (item 5)


def _past_available(bytes_per_element: int) -> int:
    available = _available_memory()
    if available is None:
        pytest.skip("no /proc/meminfo: the memory check has nothing to compare with")
    return 1 << int(np.ceil(np.log2(2 * available / bytes_per_element)))


def test_a_broadcast_label_view_is_checked_before_its_int64_copy():
    """A free int8 view whose int64 copy would not fit: EngineMemoryError, not
    numpy's MemoryError or the OOM killer."""
    n = _past_available(8)
    N = 1 << 14
    labels = np.broadcast_to(np.int8(1), (N, n // N))
    acts = np.broadcast_to(np.float32(0), (1, N, 2))
    with pytest.raises(EngineMemoryError, match="copies of the inputs"):
        ctcbridge.ctc_loss(acts, labels, label_lengths=np.zeros(N, np.int64))


def test_a_broadcast_float16_view_is_checked_before_its_float32_copy():
    n = _past_available(4)
    acts = np.broadcast_to(np.float16(0), (n // 1024, 1, 1024))
    with pytest.raises(EngineMemoryError, match="copies of the inputs"):
        ctcbridge.ctc_loss(acts, np.zeros((1, 0), np.int64))


# ------------------------------------------------------------ Ctrl-C (item 6)

_CHILD = textwrap.dedent("""
    import signal, threading, time
    # Python installs its KeyboardInterrupt handler only where SIGINT is not
    # ignored at start, and a child started from a background job of a shell
    # without job control inherits SIG_IGN: the test must not depend on that
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np, ctcbridge
    rng = np.random.default_rng(0)
    # ten samples of 20 000 frames: tens of seconds of work, in 1.3 GB of
    # workspace per engine thread (one sample of 200 000 frames needed 12 GB,
    # more than a busy machine has free)
    x = rng.standard_normal((20_000, 10, 30)).astype(np.float32)
    labels = rng.integers(1, 30, size=(10, 2000))
    print("ready", flush=True)
    try:
        ctcbridge.ctc_loss(x, labels)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    time.sleep(0.2)
    alive = [t.name for t in threading.enumerate() if t.is_alive()]
    small = ctcbridge.ctc_loss(np.zeros((3, 1, 3)), [[1]])[0]
    print("after", alive, repr(float(small)), flush=True)
""")


def test_ctrl_c_stops_a_long_call_quickly(tmp_path):
    """A long loss-only call (T = 200 000 frames, or ten samples of 20 000)
    once ignored SIGINT for 20-30 s.  Now KeyboardInterrupt comes within about a second,
    the engine's threads are gone and the process computes again."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True,
                             cwd=tmp_path, env=subprocess_env(PYTHONUNBUFFERED="1"))
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # well inside the call
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=120)
    finally:
        child.kill()
    lines = out.splitlines()
    assert lines[0].startswith("interrupted"), out
    # Generous for a loaded machine (it is about 0.1 s); the uninterrupted call
    # takes tens of seconds, and before the fix the interrupt waited for it.
    assert float(lines[0].split()[1]) - sent < 10.0, out
    small = float(ctcbridge.ctc_loss(np.zeros((3, 1, 3)), [[1]])[0])
    assert lines[1] == f"after ['MainThread'] {small!r}", out
    assert child.returncode == 0


def test_short_calls_stay_on_the_calling_thread(monkeypatch):
    """Only calls long enough to matter pay for the helper thread."""
    started = []
    real = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name),
                                                                 real(self))[1])
    ctcbridge.ctc_loss_and_grad(np.zeros((50, 4, 6)), [[1, 2]] * 4)
    assert "ctcbridge-engine" not in started


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [2, 4, 8, 5000])
def test_a_confident_frame_keeps_its_small_loss(dtype, C):
    """One frame whose label leads by 19 nats: the loss is the rest of the
    softmax, about 5.6e-9 x (C - 1).  Summed as 1 + rest in float32, the rest
    was rounded away (loss 3e-17, gradient 0 instead of -1.7e-8)."""
    x = np.zeros((1, 1, C), dtype=dtype)
    x[0, 0, 1] = 19
    ref_loss, ref_grad = reference.ctc_loss_and_grad(x.astype(np.float64), [[1]])
    for log_space in (False, True):
        loss, grad = compute(x, [[1]], log_space=log_space)
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
        np.testing.assert_allclose(grad[0, 0, 1], ref_grad[0, 0, 1], rtol=2e-5)
