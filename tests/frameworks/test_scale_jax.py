"""ctcbridge on jax arrays split over 2 host CPU devices (nox session `jax`).

Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before jax is
imported: the nox session runs this file in its own pytest process with it
(and the module sets it when it is the first to import jax).  Checks: jit with
a batch-sharded input, shard_map and pmap give the unsharded losses and
gradients, shard by shard, for optax's signature and the torch, TF and Keras
signatures on jax arrays; the engine's default thread count shares the cores
among the devices.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

if "jax" not in sys.modules:  # XLA reads its flags once, when jax starts its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=2").strip()

import pytest  # noqa: E402

pytest.importorskip("jax")  # the module skips where a framework it needs is absent
pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import ctcbridge  # noqa: E402
import ctcbridge.keras as ck  # noqa: E402
import ctcbridge.optax as co  # noqa: E402
import ctcbridge.tensorflow as ctf  # noqa: E402
import ctcbridge.torch as ct  # noqa: E402

DEVICES = 2
B, T, K, S = 8, 30, 9, 6


@pytest.fixture(scope="module", autouse=True)
def two_devices():
    if jax.local_device_count() != DEVICES:
        pytest.fail(f"needs XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} before "
                    f"jax is imported; jax has {jax.devices()}")


def _batch():
    """optax-style (B, ...) arrays; sample 5 is infeasible (1 frame, 3 labels) so that
    one shard holds optax's log_epsilon value and the other does not."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((B, T, K)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, B)
    lengths[5] = 1
    label_lengths = rng.integers(1, S + 1, B)
    label_lengths[5] = 3
    pads = (np.arange(T)[None] >= lengths[:, None]).astype(np.float32)
    labels = rng.integers(1, K, (B, S)).astype(np.int32)
    label_pads = (np.arange(S)[None] >= label_lengths[:, None]).astype(np.float32)
    return logits, pads, labels, label_pads


# Every signature as f(logits (B,T,K), logit_paddings, labels, label_paddings) -> (B,)
# losses, all inputs batch-major so that one PartitionSpec shards them all.
def _optax(x, p, y, yp):
    return co.ctc_loss(x, p, y, yp)


def _lengths(p):
    return (p.shape[-1] - p.sum(-1)).astype(jnp.int32)


def _torch(x, p, y, yp):
    log_probs = jax.nn.log_softmax(x, -1).transpose(1, 0, 2)
    return ct.ctc_loss(log_probs, y, _lengths(p), _lengths(yp), reduction="none")


def _tf(x, p, y, yp):
    return ctf.ctc_loss(y, x, _lengths(yp), _lengths(p), logits_time_major=False)


def _keras(x, p, y, yp):
    return ck.ctc_loss(y, jax.nn.softmax(x, -1), _lengths(yp), _lengths(p))


SIGNATURES = {"optax": _optax, "torch": _torch, "tensorflow": _tf, "keras": _keras}


def _value_and_grad(fn):
    """(losses, d sum(losses) / d logits)."""

    def f(x, *aux):
        losses = fn(x, *aux)
        return losses.sum(), losses

    def g(x, *aux):
        (_, losses), grad = jax.value_and_grad(f, has_aux=True)(x, *aux)
        return losses, grad

    return g


def _unsharded(fn, args):
    return jax.jit(_value_and_grad(fn))(*args)


def _close(got, want):
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()), ("batch",))


@pytest.mark.parametrize("name", SIGNATURES)
def test_jit_with_batch_sharded_input(name, mesh):
    fn = SIGNATURES[name]
    args = [jnp.asarray(a) for a in _batch()]
    want = _unsharded(fn, args)
    sharded = [jax.device_put(a, NamedSharding(mesh, P("batch"))) for a in args]
    assert len(sharded[0].sharding.device_set) == DEVICES
    _close(jax.jit(_value_and_grad(fn))(*sharded), want)


@pytest.mark.parametrize("name", SIGNATURES)
def test_shard_map(name, mesh):
    """Each device runs the engine on its half of the batch; the halves make the
    unsharded result."""
    fn = SIGNATURES[name]
    args = [jnp.asarray(a) for a in _batch()]
    want = _unsharded(fn, args)
    per_shard = jax.shard_map(_value_and_grad(fn), mesh=mesh, in_specs=P("batch"),
                              out_specs=P("batch"))
    got = jax.jit(per_shard)(*args)
    assert got[0].sharding.spec == P("batch")
    _close(got, want)


@pytest.mark.parametrize("name", SIGNATURES)
def test_shard_losses_are_typed_as_varying(name, mesh):
    """The losses differ from device to device and say so: a replicated out_spec without
    a psum is refused instead of returning one device's value."""
    args = [jnp.asarray(a) for a in _batch()]
    no_psum = jax.shard_map(lambda *a: SIGNATURES[name](*a).sum(), mesh=mesh,
                            in_specs=P("batch"), out_specs=P())
    with pytest.raises(ValueError, match="out_specs"):
        jax.jit(no_psum)(*args)
    psum = jax.shard_map(lambda *a: jax.lax.psum(SIGNATURES[name](*a).sum(), "batch"),
                         mesh=mesh, in_specs=P("batch"), out_specs=P())
    np.testing.assert_allclose(jax.jit(psum)(*args), _unsharded(SIGNATURES[name], args)[0].sum(),
                               rtol=1e-5)


@pytest.mark.parametrize("name", SIGNATURES)
def test_pmap(name):
    fn = SIGNATURES[name]
    arrays = _batch()
    want = _unsharded(fn, [jnp.asarray(a) for a in arrays])
    split = [a.reshape(DEVICES, B // DEVICES, *a.shape[1:]) for a in arrays]
    losses, grad = jax.pmap(_value_and_grad(fn))(*split)
    _close((losses.reshape(B), grad.reshape(B, T, K)), want)


def test_data_parallel_train_step_matches_optax(mesh):
    """A data-parallel gradient step of a linear model over the 2 devices equals the
    unsharded step, and optax's own (its native CTC, unsharded: optax.ctc_loss itself fails
    inside shard_map with jax 0.10, its scan carry is not typed as varying over the mesh).
    Each shard's loss is its sum over the global batch size: shard_map sums the gradients
    of the replicated weights over the devices."""
    logits, pads, labels, label_pads = _batch()
    feasible = np.arange(B) != 5  # optax's log_epsilon value is not the point here
    x = jnp.asarray(logits[feasible][:6])
    aux = [jnp.asarray(a[feasible][:6]) for a in (pads, labels, label_pads)]
    w = jnp.eye(K, dtype=jnp.float32) + 0.01

    def loss(w, x, p, y, yp, ctc, batch):
        return ctc(x @ w, p, y, yp).sum() / batch

    sharded = jax.shard_map(lambda w, *a: jax.grad(loss)(w, *a, co.ctc_loss, len(x)),
                            mesh=mesh, in_specs=(P(),) + (P("batch"),) * 4, out_specs=P())
    got = jax.jit(sharded)(w, x, *aux)
    whole = jax.grad(loss)(w, x, *aux, co.ctc_loss, len(x))
    native = jax.jit(jax.grad(loss), static_argnums=(5, 6))(w, x, *aux, optax.ctc_loss, len(x))
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, native, rtol=2e-4, atol=1e-5)


def test_default_threads_share_the_cores_among_devices():
    cores = len(os.sched_getaffinity(0))
    assert ctcbridge.get_num_threads("jax") == max(1, cores // DEVICES)
    with ctcbridge.set_num_threads(3):
        assert ctcbridge.get_num_threads("jax") == 3
    assert ctcbridge.get_num_threads("jax") == max(1, cores // DEVICES)


@pytest.mark.parametrize("flags, expected", [
    ("", "cores"),
    ("--xla_cpu_multi_thread_eigen=false", "1"),
])
def test_default_threads_follow_xla(flags, expected):
    """One device: every core, as XLA's own pool; XLA told to use one thread: one."""
    code = ("import os, jax.numpy as jnp, ctcbridge; jnp.ones(1); "
            "print(ctcbridge.get_num_threads('jax'), len(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "XLA_FLAGS": flags}, timeout=120)
    assert out.returncode == 0, out.stderr
    threads, cores = out.stdout.split()
    assert threads == (cores if expected == "cores" else expected)


def test_too_large_batch_is_a_clear_error():
    """Zero-stride logits (nothing allocated) whose 6.4 TB gradient would not fit: the
    bridge's numpy path refuses them with EngineMemoryError before allocating."""
    from ctcbridge._bridges.jax import BRIDGE
    from ctcbridge._contract import make, run

    x = np.broadcast_to(np.float32(0), (16, 1000, 10**8))
    pads, labels = np.zeros((16, 1000), np.float32), np.ones((16, 10), np.int32)
    with pytest.raises(ctcbridge.EngineMemoryError, match="GiB are available"):
        run(make("optax.ctc_loss", 0, -1e5), x, pads, labels, np.zeros((16, 10), np.float32),
            bridge=BRIDGE)


@pytest.mark.parametrize("threads", [None, 3])
def test_each_shard_runs_the_engine_with_its_share_of_the_cores(threads, mesh):
    """Under shard_map and pmap, optax's signature runs the engine as an XLA custom call
    per shard, carrying jax's default thread count (the cores shared among the devices),
    or the one set with ctcbridge.set_num_threads when the program is traced."""
    arrays = _batch()
    split = [a.reshape(DEVICES, B // DEVICES, *a.shape[1:]) for a in arrays]
    per_shard = jax.jit(jax.shard_map(_value_and_grad(_optax), mesh=mesh,
                                      in_specs=P("batch"), out_specs=P("batch")))
    with ctcbridge.set_num_threads(threads):
        expected = ctcbridge.get_num_threads("jax")
        texts = [per_shard.lower(*[jnp.asarray(a) for a in arrays]).as_text(),
                 jax.pmap(_value_and_grad(_optax)).lower(*split).as_text()]
    for text in texts:  # (num_threads, the batch of the activations it gets)
        calls = re.findall(r"ctcbridge_ctc_loss\(.*num_threads = (\d+) : i64.*: \(tensor<(\d+)x",
                           text)
        assert calls and set(calls) == {(str(expected), str(B // DEVICES))}, text[:2000]


def test_each_shard_runs_the_callback_with_its_share_of_the_cores(monkeypatch):
    """The other signatures go through jax.pure_callback: under pmap one engine call per
    device, on its half of the batch, each with jax's default thread count."""
    import ctcbridge._compute

    calls = []
    compute = ctcbridge._compute.compute

    def spy(acts, *args, **kwargs):
        calls.append((acts.shape[1], kwargs.get("num_threads")))  # torch's (T, N, C)
        return compute(acts, *args, **kwargs)

    monkeypatch.setattr(ctcbridge._compute, "compute", spy)
    split = [a.reshape(DEVICES, B // DEVICES, *a.shape[1:]) for a in _batch()]
    jax.pmap(_torch)(*split).block_until_ready()
    assert calls == [(B // DEVICES, ctcbridge.get_num_threads("jax"))] * DEVICES
