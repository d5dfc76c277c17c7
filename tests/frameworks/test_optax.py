"""ctcbridge.optax against optax.ctc_loss (nox session `jax`, run with and
without JAX_ENABLE_X64)."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("jax")  # the module skips where a framework it needs is absent
pytest.importorskip("optax")

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ctcbridge.optax as co
from native_cases import close, make_case

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32


def test_signature_parity():
    ours = inspect.signature(co.ctc_loss).parameters
    native = inspect.signature(optax.ctc_loss).parameters
    assert list(ours) == list(native)
    assert [p.kind for p in ours.values()] == [p.kind for p in native.values()]
    assert [p.default for p in ours.values()] == [p.default for p in native.values()]


def _optax_args(case, rng, holes: bool, junk_padding: bool):
    logits = case.logits.transpose(1, 0, 2).astype(FLOAT)  # (B, T, K)
    B, T, _ = logits.shape
    t = np.arange(T)[None, :]
    pads = (t >= case.input_lengths[:, None]).astype(FLOAT)
    if holes:  # padded frames in the middle: optax skips them
        pads[rng.random((B, T)) < 0.15] = 1.0
    S = case.labels.shape[1]
    lab_pads = (np.arange(S)[None, :] >= case.label_lengths[:, None]).astype(FLOAT)
    labels = case.labels.astype(np.int32).copy()
    if junk_padding:
        labels[lab_pads == 1] = rng.integers(0, case.C, size=int(lab_pads.sum()))
    return [jnp.asarray(a) for a in (logits, pads, labels, lab_pads)]


def _loss_and_grad(fn, args, blank):
    f = lambda z, *rest: fn(z, *rest, blank_id=blank).sum()  # noqa: E731
    loss = fn(*args, blank_id=blank)
    grad = jax.grad(f)(*args)
    return np.asarray(loss), np.asarray(grad)


# optax eagerly re-traces its scan on every call: jit it, compiled once per shape
_native_loss = jax.jit(optax.ctc_loss, static_argnames="blank_id")
_native_grad = jax.jit(jax.grad(lambda z, p, l, q, blank_id: optax.ctc_loss(
    z, p, l, q, blank_id=blank_id).sum()), static_argnames="blank_id")


def _native(args, blank):
    return (np.asarray(_native_loss(*args, blank_id=blank)),
            np.asarray(_native_grad(*args, blank_id=blank)))


@pytest.mark.parametrize("seed", range(220))
def test_against_native(seed):
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero", bucketed=True)
    rng = np.random.default_rng(seed)
    args = _optax_args(case, rng, holes=seed % 3 == 0, junk_padding=seed % 2 == 0)
    lo, go = _loss_and_grad(co.ctc_loss, args, case.blank)
    ln, gn = _native(args, case.blank)
    assert lo.dtype == ln.dtype and lo.shape == ln.shape
    infeasible = ln > 1e4  # optax's log_epsilon arithmetic (about 1e5 per impossible step)
    if X64:
        close(lo, ln, 1e-9, 1e-9)
        close(go, gn, 0, 1e-8)
        return
    # float32: optax's own recursion runs in float32 and drifts (gradients off by
    # a few 1e-3 on long sequences); ctcbridge computes in double.  The tight
    # comparison is the JAX_ENABLE_X64 run above, where optax is accurate.
    close(lo[~infeasible], ln[~infeasible], 1e-3, 1e-3)
    close(lo[infeasible], ln[infeasible], 1e-6, 0)
    close(go[~infeasible], gn[~infeasible], 0, 1e-2)
    # optax's float32 log_epsilon arithmetic (values near 1e5) loses ~1e-2 in the gradient
    close(go[infeasible], gn[infeasible], 0, 5e-2)


def test_jit_vmap_grad():
    case = make_case(8, bucketed=True)
    args = _optax_args(case, np.random.default_rng(0), holes=True, junk_padding=False)
    eager = co.ctc_loss(*args)
    jitted = jax.jit(co.ctc_loss)(*args)
    close(np.asarray(jitted), np.asarray(eager), 1e-6, 1e-6)
    vmapped = jax.vmap(lambda z, p, l, q: co.ctc_loss(z[None], p[None], l[None], q[None])[0])(*args)
    close(np.asarray(vmapped), np.asarray(eager), 1e-6, 1e-6)
    value, grad = jax.jit(jax.value_and_grad(lambda z: co.ctc_loss(z, *args[1:]).mean()))(args[0])
    native = jax.grad(lambda z: optax.ctc_loss(z, *args[1:]).mean())(args[0])
    close(np.asarray(grad), np.asarray(native), 0, 2e-3)
    assert np.isclose(float(value), float(np.asarray(eager).mean()), rtol=1e-6)


def test_zero_length_and_empty_labels():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 4)).astype(FLOAT))
    pads = jnp.asarray(np.array([[1.0] * 6, [0.0] * 6], dtype=FLOAT))
    labels = jnp.asarray(np.array([[1, 2], [3, 0]], dtype=np.int32))
    lab_pads = jnp.asarray(np.array([[0.0, 0.0], [1.0, 1.0]], dtype=FLOAT))
    close(np.asarray(co.ctc_loss(logits, pads, labels, lab_pads)),
          np.asarray(optax.ctc_loss(logits, pads, labels, lab_pads)), 1e-6, 1e-5)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(labels=np.array([[1, 9]], np.int32)), "is 9"),
        (dict(logit_paddings=np.full((1, 5), 0.5, FLOAT)), "must hold 0"),
        (dict(logits=np.zeros((5, 4), FLOAT)), "3-D"),
        (dict(labels=np.array([[1, 2], [1, 2]], np.int32),
              label_paddings=np.zeros((2, 2), FLOAT)), "batch size 1, got 2"),
    ],
)
def test_errors(change, match):
    args = dict(logits=np.zeros((1, 5, 4), FLOAT), logit_paddings=np.zeros((1, 5), FLOAT),
                labels=np.array([[1, 2]], np.int32), label_paddings=np.zeros((1, 2), FLOAT))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        co.ctc_loss(**{k: jnp.asarray(v) for k, v in args.items()})


def test_log_epsilon_minus_inf():
    """Divergence optax-log-epsilon-minus-inf: optax gives NaN everywhere."""
    logits = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 5)).astype(FLOAT))
    pads = jnp.zeros((2, 4), FLOAT)
    labels = jnp.asarray(np.array([[1, 2], [3, 3]], np.int32))
    lab_pads = jnp.asarray(np.array([[0, 0], [0, 0]], FLOAT))
    native = np.asarray(optax.ctc_loss(logits, pads, labels, lab_pads, log_epsilon=-np.inf))
    assert np.isnan(native).all()
    ours = np.asarray(co.ctc_loss(logits, pads, labels, lab_pads, log_epsilon=-np.inf))
    finite = np.asarray(co.ctc_loss(logits, pads, labels, lab_pads))
    assert ours[0] == pytest.approx(finite[0]) and np.isfinite(ours[0])
    # [3, 3] needs 3 frames and has 4: feasible too
    assert ours[1] == pytest.approx(finite[1])
    short = co.ctc_loss(logits[:, :2], pads[:, :2], labels, lab_pads, log_epsilon=-np.inf)
    assert np.isposinf(np.asarray(short)[1])


def test_no_gradient_into_paddings():
    """Divergence optax-padding-gradient."""
    case = make_case(6, bucketed=True)
    args = _optax_args(case, np.random.default_rng(6), holes=False, junk_padding=False)
    ours = jax.grad(lambda p: co.ctc_loss(args[0], p, *args[2:]).sum())(args[1])
    native = jax.grad(lambda p: optax.ctc_loss(args[0], p, *args[2:]).sum())(args[1])
    assert not np.asarray(ours).any()
    assert np.asarray(native).any()


# --- forward mode and second derivatives


def _jvp_args(seed=11):
    case = make_case(seed, bucketed=True)
    args = _optax_args(case, np.random.default_rng(seed), holes=seed % 2 == 1,
                       junk_padding=False)
    tangent = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(args[0].shape)
                          .astype(FLOAT))
    return args, tangent


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("seed", [11, 12])
def test_jvp_against_native(jit, seed):
    """jax.jvp gives optax's losses and directional derivatives; it is <grad, tangent>
    per sample, with the gradient of reverse mode."""
    args, tangent = _jvp_args(seed)
    ours = lambda z: co.ctc_loss(z, *args[1:])  # noqa: E731
    native = lambda z: optax.ctc_loss(z, *args[1:])  # noqa: E731
    jvp = jax.jit(jax.jvp, static_argnums=0) if jit else jax.jvp
    lo, to = jvp(ours, (args[0],), (tangent,))
    ln, tn = jax.jit(jax.jvp, static_argnums=0)(native, (args[0],), (tangent,))
    assert to.dtype == tn.dtype and to.shape == tn.shape
    close(np.asarray(lo), np.asarray(ln), 1e-6 if X64 else 1e-3, 1e-6 if X64 else 1e-3)
    close(np.asarray(to), np.asarray(tn), 1e-6 if X64 else 1e-2, 1e-6 if X64 else 1e-2)
    # the same directional derivative from reverse mode, per sample
    per_sample = jax.jacrev(ours)(args[0])  # (B, B, T, K)
    expected = np.einsum("nbtk,btk->n", np.asarray(per_sample), np.asarray(tangent))
    close(np.asarray(to), expected, 1e-5, 1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_jacfwd_matches_jacrev_and_native(jit):
    args, _ = _jvp_args(13)
    ours = lambda z: co.ctc_loss(z, *args[1:])  # noqa: E731
    jacfwd = jax.jit(jax.jacfwd(ours)) if jit else jax.jacfwd(ours)
    fwd = np.asarray(jacfwd(args[0]))
    rev = np.asarray(jax.jacrev(ours)(args[0]))
    native = np.asarray(jax.jit(jax.jacfwd(lambda z: optax.ctc_loss(z, *args[1:])))(args[0]))
    close(fwd, rev, 1e-6, 1e-6)
    close(fwd, native, 0, 1e-6 if X64 else 1e-2)
    # vmap of jvp: per-sample tangents in one batch
    tangents = jnp.stack([jnp.ones_like(args[0]), -jnp.ones_like(args[0])])
    batched = jax.vmap(lambda t: jax.jvp(ours, (args[0],), (t,))[1])(tangents)
    close(np.asarray(batched[0]), -np.asarray(batched[1]), 1e-6, 1e-6)


@pytest.mark.parametrize("how", ["hessian", "jvp_of_grad", "grad_of_grad", "jit_hessian"])
def test_second_derivatives_refused(how):
    """Second derivatives raise, never come back detached or wrong (optax, a jnp
    program, has them: the divergence optax-second-derivatives)."""
    from ctcbridge.errors import CTCSecondDerivativeError

    args, tangent = _jvp_args(14)
    f = lambda z: co.ctc_loss(z[None], *[a[:1] for a in args[1:]]).sum()  # noqa: E731
    x = args[0][0]
    g = jax.grad(f)
    run = {
        "hessian": lambda: jax.hessian(f)(x),
        "jvp_of_grad": lambda: jax.jvp(g, (x,), (tangent[0],)),
        "grad_of_grad": lambda: jax.grad(lambda z: g(z).sum())(x),
        "jit_hessian": lambda: jax.jit(jax.hessian(f))(x),
    }[how]
    with pytest.raises(CTCSecondDerivativeError, match="second derivative"):
        run()
    # the native has them
    hn = jax.hessian(lambda z: optax.ctc_loss(z[None], *[a[:1] for a in args[1:]]).sum())(x)
    assert np.isfinite(np.asarray(hn)).all()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nan_in_padding_frames(jit):
    """Divergence optax-nan-in-padding-frames: optax multiplies every frame's
    log-probabilities by its padding flag, so NaN in a padded frame reaches the
    sample's loss and gradient; ctcbridge never reads padded frames."""
    rng = np.random.default_rng(21)
    logits = rng.standard_normal((2, 6, 4)).astype(FLOAT)
    pads = np.zeros((2, 6), FLOAT)
    pads[0, 4:] = 1.0
    clean = [jnp.asarray(a) for a in (logits, pads, np.array([[1, 2], [2, 3]], np.int32),
                                      np.zeros((2, 2), FLOAT))]
    logits[0, 4:] = np.nan  # past sample 0's frames only
    args = [jnp.asarray(logits)] + clean[1:]
    fn = jax.jit(co.ctc_loss) if jit else co.ctc_loss
    native = np.asarray(_native_loss(*args, blank_id=0))
    assert np.isnan(native[0]) and np.isfinite(native[1])
    native_grad = np.asarray(_native_grad(*args, blank_id=0))
    assert np.isnan(native_grad[0]).any() and not np.isnan(native_grad[1]).any()
    ours = np.asarray(fn(*args))
    close(ours, np.asarray(co.ctc_loss(*clean)), 1e-6, 1e-6)
    grad = np.asarray(jax.grad(lambda z: fn(z, *args[1:]).sum())(args[0]))
    assert not np.isnan(grad).any() and not grad[0, 4:].any()
