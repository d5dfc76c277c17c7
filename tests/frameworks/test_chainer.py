"""ctcbridge.chainer against chainer 7.8.1's connectionist_temporal_classification
(nox session `chainer`, numpy < 2; jax beside it for the signature on jax arrays)."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("chainer")  # the module skips where a framework it needs is absent
pytest.importorskip("jax")

import chainer
import chainer.functions as F
import chainer.links as L
import jax
import jax.numpy as jnp
import numpy as np
from chainer.utils.type_check import InvalidType

import ctcbridge.chainer as cc
from ctcbridge._bridges.chainer import CTCNode
from chainer_cases import NATIVE, chainer_case, check_against_native, run
from ctcbridge.conform.corpus import builtin_cases
from ctcbridge.errors import CTCError
from native_cases import close

OURS = cc.connectionist_temporal_classification


def test_signature_parity():
    ours = inspect.signature(OURS).parameters
    native = inspect.signature(NATIVE).parameters
    assert list(ours) == list(native)
    assert [p.kind for p in ours.values()] == [p.kind for p in native.values()]
    assert [p.default for p in ours.values()] == [p.default for p in native.values()]


@pytest.mark.parametrize("seed", range(240))
def test_against_native(seed):
    """Loss and gradient against chainer's own CTC (see check_against_native): every
    option, dtype and edge case of chainer_case."""
    check_against_native(seed, lambda c, reduce: run(OURS, c["x"], c["t"], c["blank"], c["il"],
                                                     c["ll"], reduce=reduce))


def test_function_node_and_variables():
    """A chainer.FunctionNode in the graph; gradients reach each frame's Variable (and
    through F.stack of a network's outputs); t and the lengths get none."""
    c = chainer_case(7)
    xs = [chainer.Variable(a) for a in c["x"]]
    t = chainer.Variable(c["t"])
    loss = OURS(xs, t, c["blank"], c["il"], c["ll"], reduce="mean")
    assert isinstance(loss, chainer.Variable) and loss.shape == ()
    node = loss.creator.inputs[0].creator
    assert isinstance(node, CTCNode) and isinstance(node, chainer.FunctionNode)
    loss.backward()
    _, native_grad = run(NATIVE, c["x"], c["t"], c["blank"], c["il"], c["ll"], reduce="mean")
    np.testing.assert_allclose(np.stack([v.grad for v in xs]), native_grad, atol=1e-9)
    assert t.grad is None
    # chainer.grad, a tuple of mixed Variables and arrays, and a second backward pass
    xs = [chainer.Variable(a) for a in c["x"]]
    frames = tuple(xs[:2]) + tuple(c["x"][2:])
    per_sample = OURS(frames, c["t"], c["blank"], c["il"], c["ll"], reduce="no")
    (g0,) = chainer.grad([F.sum(per_sample * 2.0)], [xs[0]])
    np.testing.assert_allclose(g0.array, 2.0 * native_grad[0] * len(c["t"]), atol=1e-9)


def test_no_backprop_mode_and_numpy_arrays():
    c = chainer_case(12)
    args = (c["t"], c["blank"], c["il"], c["ll"])
    with chainer.no_backprop_mode():
        loss = OURS([chainer.Variable(a) for a in c["x"]], *args, reduce="no")
    assert loss.creator is None
    expected, _ = run(NATIVE, c["x"], *args)
    np.testing.assert_allclose(loss.array, expected, rtol=1e-10)
    # on numpy arrays: a numpy result (no framework arrays, no autodiff)
    out = OURS(list(c["x"]), *args, reduce="no")
    assert type(out) is np.ndarray
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_training_step_matches_native():
    """The Chainer idiom: a Link producing per-frame logits, the loss, an optimizer step."""
    rng = np.random.default_rng(3)
    T, B, D, V = 20, 4, 8, 6
    feats = rng.standard_normal((T, B, D)).astype(np.float32)
    t = rng.integers(1, V, size=(B, 5)).astype(np.int32)
    il = np.array([20, 18, 15, 20], np.int32)
    ll = np.array([5, 3, 0, 4], np.int32)
    params = []
    for fn in (OURS, NATIVE):
        model = L.Linear(D, V, initialW=chainer.initializers.Normal(0.1, rng=np.random.RandomState(0)))
        opt = chainer.optimizers.Adam()
        opt.setup(model)
        for _ in range(3):
            loss = fn([model(f) for f in feats], t, 0, il, ll)
            model.cleargrads()
            loss.backward()
            opt.update()
        params.append(model.W.array.copy())
    np.testing.assert_allclose(params[0], params[1], atol=1e-5)


def test_jax_arrays():
    """Chainer's semantics on a list of jax arrays: a jax result, differentiable with
    jax.grad, with native chainer's losses and gradients."""
    c = chainer_case(15)
    x = c["x"].astype(np.float32)
    args = (c["blank"], *(None if a is None else jnp.asarray(a) for a in (c["il"], c["ll"])))
    expected, grad = run(NATIVE, x.astype(np.float64), c["t"], c["blank"], c["il"], c["ll"])

    def losses(z, reduce="no"):
        return OURS([z[i] for i in range(z.shape[0])], jnp.asarray(c["t"]), *args, reduce=reduce)

    out = losses(jnp.asarray(x))
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    close(np.asarray(out), expected, 1e-6, 1e-6)
    close(np.asarray(jax.grad(lambda z: losses(z).sum())(jnp.asarray(x))), grad, 0, 1e-6)
    mean = losses(jnp.asarray(x), "mean")
    assert mean.shape == () and np.isclose(float(mean), expected.mean(), rtol=1e-6)


def _bad_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 5)).astype(np.float32)
    base = dict(x=list(x), t=np.array([[1, 2], [3, 0]], np.int32), blank_symbol=0,
                input_length=np.array([6, 5], np.int32), label_length=np.array([2, 1], np.int32))
    cases = {
        "x-array": dict(x=x),
        "blank-numpy-int": dict(blank_symbol=np.int64(0)),
        "blank-float": dict(blank_symbol=0.0),
        "blank-too-large": dict(blank_symbol=5),
        "blank-negative": dict(blank_symbol=-1),
        "frame-3d": dict(x=[f[None] for f in x]),
        "frame-1d": dict(x=[f[0] for f in x]),
        "x-empty": dict(x=[]),
        "reduce-sum": dict(reduce="sum"),
        "t-int64": dict(t=np.array([[1, 2], [3, 0]])),
        "t-1d": dict(t=np.array([1, 2], np.int32)),
        "t-rows": dict(t=np.array([[1, 2], [3, 0], [1, 1]], np.int32)),
        "input-length-int64": dict(input_length=np.array([6, 5])),
        "input-length-2d": dict(input_length=np.array([[6], [5]], np.int32)),
        "input-length-size": dict(input_length=np.array([6, 5, 4], np.int32)),
        "label-length-float": dict(label_length=np.array([2.0, 1.0], np.float32)),
        "label-length-size": dict(label_length=np.array([2], np.int32)),
        "x-int": dict(x=[f.astype(np.int32) for f in x]),
        "frames-shape": dict(x=[x[0], x[1][:, :4]] + list(x[2:])),
        "frames-dtype": dict(x=[x[0], x[1].astype(np.float64)] + list(x[2:])),
        "label-too-large": dict(t=np.array([[1, 5], [3, 0]], np.int32)),
        "padding-too-large": dict(t=np.array([[1, 2], [3, 7]], np.int32)),
        "label-too-negative": dict(t=np.array([[1, -6], [3, 0]], np.int32)),
    }
    return base, cases


BASE, BAD = _bad_inputs()


@pytest.mark.parametrize("name", sorted(BAD))
def test_errors(name):
    """Chainer's error type (and message, where it has one) for each bad input."""
    kwargs = {**BASE, **BAD[name]}
    xs = kwargs.pop("x")
    frames = [chainer.Variable(f) for f in xs] if isinstance(xs, list) else xs
    with pytest.raises(Exception) as native:
        NATIVE(frames, **kwargs)
    with pytest.raises(type(native.value)) as ours:
        OURS(frames, **kwargs)
    assert isinstance(ours.value, CTCError)
    if str(native.value) and name not in ("x-empty", "frame-1d"):
        assert str(ours.value) == str(native.value)
    if isinstance(native.value, InvalidType):
        assert isinstance(ours.value, TypeError)


# ---- divergences (ctcbridge/divergences.json) ----

def _infeasible_case(dtype=np.float64):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 2, 5)).astype(dtype)
    t = np.array([[1, 2, 3, 4], [1, 1, 2, 0]], np.int32)
    return x, t, np.array([3, 8], np.int32), np.array([4, 3], np.int32)


def test_infeasible_padded_frames():
    """chainer-nan-gradient-padded-frames: the sentinel value, no NaN on padded frames."""
    for dtype in (np.float16, np.float32, np.float64):
        x, t, il, ll = _infeasible_case(dtype)
        lo, go = run(OURS, x, t, 0, il, ll)
        ln, gn = run(NATIVE, x, t, 0, il, ll)
        np.testing.assert_array_equal(lo[0], ln[0])
        assert lo[0] >= (1e4 if dtype == np.float16 else 1e10)
        assert np.isnan(gn[3:, 0]).all() and not go[3:, 0].any()
        np.testing.assert_array_equal(go[:3, 0], gn[:3, 0])
    x, t, il, ll = _infeasible_case()
    assert 0 < run(OURS, x, t, 0, il, ll)[0][0] - 1e10 < 1  # 1e10 + a partial NLL


def test_zero_input_length():
    """chainer-zero-input-length: no frame means no frame, not the whole sequence."""
    x, t, _, ll = _infeasible_case()
    il = np.array([0, 0], np.int32)
    ll = np.array([2, 0], np.int32)
    lo, go = run(OURS, x, t, 0, il, ll)
    ln, _ = run(NATIVE, x, t, 0, il, ll)
    full, _ = run(NATIVE, x, t, 0, np.array([8, 8], np.int32), ll)
    np.testing.assert_array_equal(ln, full)  # chainer reads all 8 frames
    assert lo[0] == 1e10 and lo[1] == 0.0 and not go.any()


@pytest.mark.parametrize("change", [dict(il=np.array([9, 8], np.int32)),
                                    dict(il=np.array([-1, 8], np.int32)),
                                    dict(ll=np.array([5, 3], np.int32)),
                                    dict(ll=np.array([4, -1], np.int32))])
def test_lengths_out_of_range(change):
    """chainer-lengths-out-of-range: chainer wraps indices around and returns a value."""
    x, t, il, ll = _infeasible_case()
    kwargs = {"il": il, "ll": ll, **change}
    ln, _ = run(NATIVE, x, t, 0, **kwargs)
    assert np.isfinite(ln).all()
    with pytest.raises(cc.ChainerAssertionError, match="outside"):
        run(OURS, x, t, 0, **kwargs)
    assert issubclass(cc.ChainerAssertionError, (AssertionError, ValueError))


def test_label_aliases():
    """chainer-negative-label-alias: -1 and V - 1 in one sample."""
    x, t, il, ll = _infeasible_case()
    t = np.array([[4, -1, 0, 0], [1, 2, 0, 0]], np.int32)
    ll = np.array([2, 2], np.int32)
    ln, _ = run(NATIVE, x[:2], t, 0, np.array([2, 2], np.int32), ll)
    assert ln[0] < 1e9  # chainer: two different symbols, feasible in 2 frames
    wrapped, _ = run(NATIVE, x[:2], np.where(t < 0, t + 5, t), 0, np.array([2, 2], np.int32), ll)
    assert wrapped[0] > 1e9  # [4, 4] needs 3 frames
    with pytest.raises(ValueError, match="same class"):
        run(OURS, x, t, 0, il, ll)
    # a negative label on its own is just the class it counts to
    t = np.array([[1, -1, 0, 0], [1, 2, 0, 0]], np.int32)
    np.testing.assert_array_equal(run(OURS, x, t, 0, il, ll)[0],
                                  run(OURS, x, np.where(t < 0, t + 5, t), 0, il, ll)[0])


def test_softmax_underflow():
    """chainer-softmax-underflow: float32 softmax underflows to 0 on extreme logits;
    chainer's log(0) stand-in then gives a feasible sample ~1e10."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 1, 8)) * 60).astype(np.float32)
    t = np.array([[int(np.argmin(x[i, 0])) or 1 for i in range(3)]], np.int32)
    args = (t, 0, None, None)
    ln32, _ = run(NATIVE, x, *args)
    ln64, gn64 = run(NATIVE, x.astype(np.float64), *args)
    lo, go = run(OURS, x, *args)
    assert ln32[0] >= 1e9 and ln64[0] < 1e5
    np.testing.assert_allclose(lo, ln64, rtol=1e-6)
    np.testing.assert_allclose(go, gn64, atol=1e-6)


@pytest.mark.parametrize("value", [np.nan, np.inf, "row of -inf"])
def test_non_finite_logits(value):
    """chainer-non-finite-logits: a NaN or +inf logit (or a frame of -inf logits) gives
    NaN, not chainer's masked 1e10."""
    x, t, il, ll = _infeasible_case()
    il = np.array([8, 8], np.int32)
    if value == "row of -inf":
        x[2, 0] = -np.inf
    else:
        x[2, 0, 3] = value
    lo, go = run(OURS, x, t, 0, il, ll)
    ln, gn = run(NATIVE, x, t, 0, il, ll)
    assert ln[0] > 1e9 and np.isnan(gn[2, 0]).all() and not np.isnan(gn[3:, 0]).any()
    assert np.isnan(lo[0]) and np.isnan(go[:, 0]).all()
    np.testing.assert_allclose(lo[1], ln[1], rtol=1e-10)


# ---- ctcbridge conform rows ----

KNOWN_NATIVE_FAILURES = {  # corpus cases where native chainer hits a divergence
    "zero-length", "random-1", "infeasible", "mixed-feasibility",  # input length 0, NaN grads
    "extreme-logits", "very-extreme-logits", "logit-gaps",  # float32 softmax underflow
    "nan-logits", "posinf-logits", "neginf-logits", "non-finite-log-probs",  # masked NaN
    "long-T2048",  # float32 drift
}


def test_conform_rows():
    """`ctcbridge conform`: the chainer row passes on numpy and chainer arrays, and native
    chainer fails only where a divergence is recorded."""
    from ctcbridge.conform.rows import ROWS
    from ctcbridge.conform.compare import check_signature

    cases = builtin_cases()
    cache: dict = {}

    def failures(row, fw, native=False):
        return {r.case for r in (check_signature(row, c, fw, native, cache) for c in cases)
                if r is not None and not r.passed}

    row = next(r for r in ROWS if r.name.startswith("chainer"))
    assert not failures(row, "numpy") and not failures(row, "chainer")
    unexpected = failures(row, "chainer", native=True) - KNOWN_NATIVE_FAILURES
    assert not unexpected


def test_every_signature_on_chainer_variables():
    """The bridge under every signature of `ctcbridge conform`: on chainer Variables the
    losses of numpy arrays, and a gradient of the activations' shape (finite when the
    losses and activations are)."""
    from ctcbridge.conform.rows import ROWS

    for row in filter(lambda r: r.available(), ROWS):  # tensorflow.ctc_loss_v1 needs TF
        for case in builtin_cases():
            if not row.applicable(case) or case.shape[0] > 500:
                continue
            prep = row.prepare(case, "float32")
            try:
                expected, _ = row.call(prep, "numpy")
            except Exception:  # a signature refusing the case is its own session's business
                continue
            loss, grad = row.call(prep, "chainer")
            close(loss, expected, 1e-6, 1e-6)
            assert grad.shape == prep.x.shape, (row.name, case.name)
            if np.isfinite(loss).all() and np.isfinite(prep.x).all():
                assert np.isfinite(grad).all(), (row.name, case.name)
