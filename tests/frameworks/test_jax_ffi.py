"""The engine as an XLA FFI custom call under jax.jit (nox session `jax`, with and
without JAX_ENABLE_X64): the route is taken, gives the numpy path's losses and
gradients on generated cases (holes in the paddings, junk label padding,
infeasible samples that need optax's own value), hands invalid inputs to the
numpy path's errors, and the handler reports its own errors as exceptions."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")  # the module skips where a framework it needs is absent

import jax
import jax.numpy as jnp
import numpy as np

import ctcbridge.optax as co
from ctcbridge._bridges import jax as bridge
from ctcbridge._contract import make, run
from native_cases import close, make_case

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32


@pytest.fixture(autouse=True)
def _on_the_cpu():
    """The custom call is the CPU route (other platforms take pure_callback): on a
    machine whose default JAX device is a GPU, these tests pin the CPU."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def _args(seed):
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero", bucketed=True)
    rng = np.random.default_rng(seed)
    logits = case.logits.transpose(1, 0, 2).astype(FLOAT)
    B, T, _ = logits.shape
    pads = (np.arange(T)[None, :] >= case.input_lengths[:, None]).astype(FLOAT)
    if seed % 3 == 0:  # padded frames in the middle
        pads[rng.random((B, T)) < 0.15] = 1.0
    S = case.labels.shape[1]
    lab_pads = (np.arange(S)[None, :] >= case.label_lengths[:, None]).astype(FLOAT)
    labels = case.labels.astype(np.int32).copy()
    if seed % 2 == 0:  # junk, even out-of-range values, past the label lengths
        labels[lab_pads == 1] = rng.integers(-3, case.C + 3, size=int(lab_pads.sum()))
    return case.blank, [jnp.asarray(a) for a in (logits, pads, labels, lab_pads)]


def _value_and_grad(blank):
    return jax.value_and_grad(lambda z, *a: co.ctc_loss(z, *a, blank_id=blank).sum())


# compiled once per bucket shape and blank
_loss = jax.jit(co.ctc_loss, static_argnames="blank_id")
_vg = jax.jit(lambda *a, blank_id: _value_and_grad(blank_id)(*a), static_argnames="blank_id")


def test_route_is_the_custom_call():
    _, args = _args(3)
    assert bridge._ffi_registered()
    text = jax.jit(_value_and_grad(0)).lower(*args).as_text()
    assert "@ctcbridge_ctc_loss" in text
    # the numpy path is only the fallback branch of a conditional
    assert text.count("@ctcbridge_ctc_loss") == 1


@pytest.mark.parametrize("seed", range(30))
def test_jit_matches_numpy_path(seed):
    blank, args = _args(seed)
    losses = _loss(*args, blank_id=blank)
    value, grad = _vg(*args, blank_id=blank)
    # the numpy path, run directly
    eager_losses, eager_grad = run(make("optax.ctc_loss", blank, -1e5),
                                   *[np.asarray(a) for a in args])
    assert losses.dtype == eager_losses.dtype == FLOAT
    close(np.asarray(losses), np.asarray(eager_losses), 0, 1e-6 if X64 else 1e-5)
    close(np.asarray(grad), np.asarray(eager_grad), 0, 1e-6 if X64 else 1e-5)
    assert np.isclose(float(value), float(np.asarray(eager_losses).sum()), rtol=1e-5)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(labels=np.array([[1, 9]], np.int32)), "is 9"),
        (dict(logit_paddings=np.full((1, 5), 0.5, FLOAT)), "must hold 0"),
        (dict(label_paddings=np.array([[0.0, 3.0]], FLOAT)), "label length"),
    ],
)
def test_jit_errors_come_from_the_numpy_path(change, match):
    args = dict(logits=np.zeros((1, 5, 4), FLOAT), logit_paddings=np.zeros((1, 5), FLOAT),
                labels=np.array([[1, 2]], np.int32), label_paddings=np.zeros((1, 2), FLOAT))
    args.update(change)
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(jax.jit(co.ctc_loss)(**{k: jnp.asarray(v) for k, v in args.items()}))


def test_handler_reports_its_own_errors():
    """A call the engine rejects raises with the engine's message (XLA_FFI_Error_Create)."""
    assert bridge._ffi_registered()
    x = jnp.zeros((5, 1, 4), FLOAT)  # (T, N, C)
    ints = [jnp.array([[1, 2]], jnp.int32), jnp.array([5], jnp.int32),
            jnp.array([2], jnp.int32)]
    outs = [jax.ShapeDtypeStruct((1,), x.dtype)]
    call = jax.ffi.ffi_call(bridge._FFI_TARGET, outs)
    attrs = bridge._ffi_options({"blank": 7})
    with pytest.raises(Exception, match="blank"):
        jax.block_until_ready(jax.jit(lambda x, *i: call(x, *i, **attrs))(x, *ints))
    ints[1] = jnp.array([6], jnp.int32)  # an input length beyond T
    with pytest.raises(Exception, match="length"):
        jax.block_until_ready(jax.jit(lambda x, *i: call(x, *i, **bridge._ffi_options({})))(
            x, *ints))


def test_vmap_under_jit():
    _, args = _args(8)
    one = lambda z, p, l, q: co.ctc_loss(z[None], p[None], l[None], q[None])[0]  # noqa: E731
    vmapped = jax.jit(jax.vmap(one))(*args)
    close(np.asarray(vmapped), np.asarray(co.ctc_loss(*[np.asarray(a) for a in args])), 0, 1e-5)


def test_too_large_batch_refused_while_tracing():
    """XLA allocates the custom call's gradient itself: a batch that cannot fit in
    memory is refused with EngineMemoryError when the program is traced, never run."""
    from ctcbridge.errors import EngineMemoryError

    B, T, K, S = 1024, 100_000, 1000, 50  # a 400 GB gradient
    structs = (jax.ShapeDtypeStruct((B, T, K), FLOAT), jax.ShapeDtypeStruct((B, T), FLOAT),
               jax.ShapeDtypeStruct((B, S), np.int32), jax.ShapeDtypeStruct((B, S), FLOAT))
    with pytest.raises(EngineMemoryError, match="GiB"):
        jax.jit(_value_and_grad(0)).lower(*structs)


def test_forward_mode_is_the_custom_call():
    """jax.jvp under jit keeps the custom call (one engine call giving the losses and
    the gradient, the tangent as <gradient, tangent>) and matches the numpy path."""
    blank, args = _args(6)
    tangent = jnp.asarray(np.random.default_rng(6).standard_normal(args[0].shape).astype(FLOAT))
    f = lambda z: co.ctc_loss(z, *args[1:], blank_id=blank)  # noqa: E731
    jvp = jax.jit(lambda z, t: jax.jvp(f, (z,), (t,)))
    text = jvp.lower(args[0], tangent).as_text()
    assert text.count("@ctcbridge_ctc_loss") == 1
    losses, tangent_out = jvp(args[0], tangent)
    eager_losses, eager_grad = run(make("optax.ctc_loss", blank, -1e5),
                                   *[np.asarray(a) for a in args])
    close(np.asarray(losses), np.asarray(eager_losses), 0, 1e-6 if X64 else 1e-5)
    expected = (np.asarray(eager_grad, np.float64) * np.asarray(tangent, np.float64)).sum((1, 2))
    close(np.asarray(tangent_out), expected, 1e-5, 1e-4)


def test_eager_path_reads_and_returns_without_copies():
    """The eager (concrete) path: the engine reads a CPU jax.Array in place (numpy's
    view of its buffer), and an aligned result becomes a jax array without a copy."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 10, 5)).astype(FLOAT))
    assert np.asarray(x).ctypes.data == x.unsafe_buffer_pointer()
    buf = np.empty(4 * 10 * 5 * np.dtype(FLOAT).itemsize + 64, np.uint8)
    offset = (-buf.ctypes.data) % 64
    aligned = buf[offset: offset + 4 * 10 * 5 * np.dtype(FLOAT).itemsize].view(FLOAT)
    aligned[:] = 1.0
    out = bridge._from_host(aligned, np.dtype(FLOAT))
    assert out.unsafe_buffer_pointer() == aligned.ctypes.data
    unaligned = np.ones(7, np.float64)
    converted = bridge._from_host(unaligned, np.dtype(FLOAT))
    assert converted.dtype == FLOAT and np.asarray(converted).sum() == 7
    # the eager call's results are those of the numpy path
    args = [x, jnp.zeros((4, 10), FLOAT), jnp.asarray(np.array([[1, 2]] * 4, np.int32)),
            jnp.zeros((4, 2), FLOAT)]
    losses, grad = run(make("optax.ctc_loss", 0, -1e5), *[np.asarray(a) for a in args])
    _, tangent = jax.jvp(lambda z: co.ctc_loss(z, *args[1:]), (x,), (jnp.ones_like(x),))
    close(np.asarray(co.ctc_loss(*args)), losses, 1e-6, 1e-6)
    close(np.asarray(tangent), np.asarray(grad, np.float64).sum((1, 2)), 1e-5, 1e-5)
