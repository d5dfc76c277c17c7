"""ctcbridge's TF signatures in tf.distribute.MirroredStrategy (nox session `tensorflow`).

The CPU is split into 2 logical devices before TF starts (the nox session runs
this file in its own pytest process for that); a ``tf.function`` train step
under the strategy gives the single-device gradients, each replica running
the engine on its half of the batch with half the cores.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # the module skips where a framework it needs is absent

import tensorflow as tf

import ctcbridge
import ctcbridge._compute
import ctcbridge.keras as ck
import ctcbridge.tensorflow as ctf

REPLICAS = 2
B, T, F, C, S = 8, 24, 5, 7, 5


def _split_cpu():
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)
    except RuntimeError:  # TF already started (another test module ran first)
        pass
    return len(tf.config.list_logical_devices("CPU"))


LOGICAL_CPUS = _split_cpu()


@pytest.fixture(scope="module", autouse=True)
def two_logical_cpus():
    if LOGICAL_CPUS != REPLICAS:
        pytest.fail(f"needs {REPLICAS} logical CPUs, configured before TF starts: run this "
                    "file in its own process (as the nox session does)")


def _batch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    labels = rng.integers(1, C, (B, S)).astype(np.int32)
    label_length = rng.integers(1, S + 1, B).astype(np.int32)
    logit_length = rng.integers(T // 2, T + 1, B).astype(np.int32)
    return x, labels, label_length, logit_length


def _tf_loss(fn):
    def loss(logits, labels, label_length, logit_length):
        return fn(labels, logits, label_length, logit_length, logits_time_major=False)

    return loss


def _keras_loss(logits, labels, label_length, logit_length):
    return ck.ctc_loss(labels, tf.nn.softmax(logits), label_length, logit_length)


LOSSES = {"ctcbridge.tensorflow": _tf_loss(ctf.ctc_loss), "ctcbridge.keras": _keras_loss,
          "tf.nn (native)": _tf_loss(tf.nn.ctc_loss)}


def _model():
    return tf.Variable(np.eye(F, C, dtype=np.float32) + 0.05, name="w")


def _grad(w, loss_fn, x, labels, label_length, logit_length, global_batch):
    with tf.GradientTape() as tape:
        losses = loss_fn(tf.einsum("btf,fc->btc", x, w), labels, label_length, logit_length)
        loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
    return tape.gradient(loss, w)


def _mirrored_grad(loss_fn, ops=None):
    """A tf.function step under MirroredStrategy: each replica's gradient of its share of
    the global mean loss, summed across replicas.  ``ops``: a list that receives
    (device, batch, num_threads) of the step's engine custom ops."""
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    arrays = _batch()
    share = B // REPLICAS
    with strategy.scope():
        w = _model()

    def shard(ctx):
        i = ctx.replica_id_in_sync_group
        return tuple(tf.constant(a[i * share: (i + 1) * share]) for a in arrays)

    inputs = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(inputs):
        per_replica = strategy.run(lambda a: _grad(w, loss_fn, *a, B), args=(inputs,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    grad = step(inputs).numpy()
    if ops is not None:
        ops.extend(_engine_ops(step.get_concrete_function(inputs).graph))
    return grad


def _engine_ops(graph):
    """(device, batch, num_threads) of the custom op ``CtcbridgeCtcLoss`` (the engine in a
    tf.function, see ctcbridge/_bridges/tensorflow.py) in a graph and its functions."""
    found = []
    for op in graph.get_operations():
        if op.type == "CtcbridgeCtcLoss":
            batch_axis = 0 if op.get_attr("layout") == 1 else 1  # 1: NTC
            found.append((op.device[-5:], op.inputs[0].shape[batch_axis],
                          op.get_attr("num_threads")))
    for fn in getattr(graph, "_functions", {}).values():
        if getattr(fn, "graph", None) is not None:
            found.extend(_engine_ops(fn.graph))
    return found


def _single_grad(loss_fn):
    w = _model()
    return tf.function(lambda: _grad(w, loss_fn, *map(tf.constant, _batch()), B))().numpy()


class _Spy:
    """Records (batch, num_threads) of every engine call through Python (eager, and
    ``tf.numpy_function`` in a graph), from whatever thread."""

    def __init__(self):
        self.calls = []
        self._compute = ctcbridge._compute.compute

    def __enter__(self):
        def compute(acts, *args, **kwargs):
            self.calls.append((acts.shape[0 if kwargs.get("layout") == "NTC" else 1],
                               kwargs.get("num_threads")))
            return self._compute(acts, *args, **kwargs)

        ctcbridge._compute.compute = compute
        return self

    def __exit__(self, *exc):
        ctcbridge._compute.compute = self._compute


def _engine_calls(loss_fn):
    """The step's gradient and its engine calls: (batch, num_threads) of each, whether
    the custom op or the numpy path ran it."""
    ops = []
    with _Spy() as spy:
        grad = _mirrored_grad(loss_fn, ops)
    assert sorted(d for d, _, _ in ops) == [f"CPU:{i}" for i in range(len(ops))]
    return grad, sorted([(b, n) for _, b, n in ops] + spy.calls)


@pytest.mark.parametrize("name", LOSSES)
def test_mirrored_strategy_matches_one_device(name):
    """Each replica runs the engine once, on its own half of the batch, with its share of
    the cores; the summed gradients equal the single-device step's."""
    loss_fn = LOSSES[name]
    mirrored, calls = _engine_calls(loss_fn)
    np.testing.assert_allclose(mirrored, _single_grad(loss_fn), rtol=1e-5, atol=1e-6)
    if name.startswith("ctcbridge"):
        cores = len(os.sched_getaffinity(0))
        assert calls == [(B // REPLICAS, max(1, cores // REPLICAS))] * REPLICAS


def test_matches_native_under_the_strategy():
    ours = _mirrored_grad(LOSSES["ctcbridge.tensorflow"])
    native = _mirrored_grad(LOSSES["tf.nn (native)"])
    np.testing.assert_allclose(ours, native, rtol=1e-4, atol=1e-5)


def test_threads_setting_and_default():
    cores = len(os.sched_getaffinity(0))
    assert ctcbridge.get_num_threads("tensorflow") == max(1, cores // REPLICAS)
    with ctcbridge.set_num_threads(3):  # traced while set: the op carries it
        _, calls = _engine_calls(LOSSES["ctcbridge.tensorflow"])
    assert calls == [(B // REPLICAS, 3)] * REPLICAS
    assert ctcbridge.get_num_threads("tensorflow") == max(1, cores // REPLICAS)


@pytest.mark.parametrize("intra_op, expected", [(0, "cores"), (1, "1")])
def test_default_threads_follow_intra_op_setting(intra_op, expected, tmp_path):
    """One logical CPU: TF's intra-op setting, 0 meaning every core."""
    code = ("import os, tensorflow as tf, ctcbridge, ctcbridge.tensorflow as ctf; "
            f"tf.config.threading.set_intra_op_parallelism_threads({intra_op}); "
            "ctf.ctc_loss(tf.constant([[1]]), tf.zeros((3, 1, 4)), tf.constant([1]), "
            "tf.constant([3])); "
            "print(ctcbridge.get_num_threads('tensorflow'), len(os.sched_getaffinity(0)))")
    # the ctcbridge this test imported, not the checkout's sources the cwd would give
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(ctcbridge.__file__))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    threads, cores = out.stdout.split()[-2:]
    assert threads == (cores if expected == "cores" else expected)


def test_too_large_batch_is_a_clear_error():
    """Zero-stride logits (nothing allocated) whose 6.4 TB gradient would not fit: the
    bridge's engine call raises EngineMemoryError before allocating."""
    from ctcbridge._bridges.tensorflow import BRIDGE
    from ctcbridge._contract import make, run

    x = np.broadcast_to(np.float32(0), (1000, 16, 10**8))
    args = np.ones((16, 10), np.int32), np.full(16, 10, np.int32), np.full(16, 1000, np.int32)
    with pytest.raises(ctcbridge.EngineMemoryError, match="GiB are available"):
        run(make("tf.dense", True, 0), x, *args, bridge=BRIDGE)
