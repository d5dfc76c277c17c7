"""ctcbridge.tensorflow and ctcbridge.keras against TensorFlow's and Keras's own
CTC (nox session `tensorflow`)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # the module skips where a framework it needs is absent
pytest.importorskip("keras")

import keras
import tensorflow as tf
from keras.src.legacy.backend import ctc_batch_cost as native_batch_cost

import ctcbridge.keras as ck
import ctcbridge.tensorflow as ctf
from ctcbridge import reference
from native_cases import close, make_case


def _params(fn):
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


def test_signature_parity():
    assert _params(ctf.ctc_loss) == _params(tf.nn.ctc_loss)
    assert _params(ctf.ctc_loss_v1) == _params(tf.compat.v1.nn.ctc_loss)
    assert _params(ck.ctc_loss) == _params(keras.ops.ctc_loss)
    assert _params(ck.ctc_batch_cost) == _params(native_batch_cost)


def _dense_args(case, time_major):
    x = case.logits.astype(np.float32)
    if not time_major:
        x = x.transpose(1, 0, 2)
    return (tf.constant(case.labels.astype(np.int32)), tf.Variable(x),
            tf.constant(case.label_lengths.astype(np.int32)),
            tf.constant(case.input_lengths.astype(np.int32)))


def _loss_grad(fn, labels, x, ll, il, **kw):
    with tf.GradientTape() as tape:
        loss = fn(labels, x, ll, il, **kw)
        total = tf.reduce_sum(tf.where(tf.math.is_finite(loss), loss, 0.0))
    return loss.numpy(), tape.gradient(total, x).numpy()


@pytest.mark.parametrize("seed", range(220))
def test_dense_against_native(seed):
    """float32 (TF's dense path is float32 only), tight against the float64
    reference, loosely against TF (whose float32 recursion drifts)."""
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero")
    time_major = seed % 3 != 0
    args = _dense_args(case, time_major)
    lo, go = _loss_grad(ctf.ctc_loss, *args, logits_time_major=time_major,
                        blank_index=case.blank)
    ln, gn = _loss_grad(tf.nn.ctc_loss, *args, logits_time_major=time_major,
                        blank_index=case.blank)
    if case.labels.shape[1] == 0:
        # divergence tf-dense-zero-width-labels: TF counts the lone state twice
        close(ln, lo - np.log(2.0), 1e-5, 1e-5)
        return
    infeasible = case.infeasible()
    # no valid alignment: TF's log(1e-307) sentinel arithmetic, reproduced by a port
    # of its lattice (loss about 707 per violated end, and its gradient)
    close(lo[infeasible], ln[infeasible], 1e-5, 1e-5)
    batch = 1 if time_major else 0
    close(np.compress(infeasible, go, axis=batch), np.compress(infeasible, gn, axis=batch),
          0, 1e-3)
    rl_exact = reference.ctc_loss(case.logits, case.labels, case.input_lengths,
                                  case.label_lengths, blank=case.blank)
    # divergence tf-dense-sentinel-shortcut (see test_keras_against_native)
    ok = ~infeasible & (rl_exact < 600)
    batch_axis = 1 if time_major else 0
    rl, rg = reference.ctc_loss_and_grad(case.logits.astype(np.float32), case.labels,
                                         case.input_lengths, case.label_lengths, blank=case.blank)
    if not time_major:
        rg = rg.transpose(1, 0, 2)
    close(lo[ok], rl[ok], 2e-5, 2e-5)
    close(lo[ok], ln[ok], 1e-3, 1e-3)
    g_ok, n_ok, r_ok = (np.compress(ok, a, axis=batch_axis) for a in (go, gn, rg))
    close(g_ok, r_ok, 0, 2e-4)
    close(g_ok, n_ok, 0, 5e-2)


def _sparse(case):
    dense = np.where(np.arange(case.labels.shape[1])[None] < case.label_lengths[:, None],
                     case.labels, -1)
    idx = np.argwhere(dense >= 0)
    return tf.SparseTensor(idx.astype(np.int64), dense[dense >= 0].astype(np.int32),
                           [case.N, max(case.labels.shape[1], 1)])


@pytest.mark.parametrize("seed", range(200))
def test_v1_against_native(seed):
    case = make_case(seed, blank="last", min_label=1)
    merge = seed % 3 != 1
    collapse = seed % 5 == 2
    ignore = True
    x = tf.Variable(case.logits.astype(np.float32))
    labels = _sparse(case)
    il = tf.constant(case.input_lengths.astype(np.int32))
    out = []
    for fn in (ctf.ctc_loss_v1, tf.compat.v1.nn.ctc_loss):
        with tf.GradientTape() as tape:
            loss = fn(labels, x, il, preprocess_collapse_repeated=collapse,
                      ctc_merge_repeated=merge, ignore_longer_outputs_than_inputs=ignore)
            total = tf.reduce_sum(tf.where(tf.math.is_finite(loss), loss, 0.0))
        out.append((loss.numpy(), tape.gradient(total, x).numpy()))
    (lo, go), (ln, gn) = out
    # divergence tf-v1-underflow: TF's kernel turns probabilities below the
    # float32 range into 0, losing the paths through them (+inf, "No valid path
    # found", when all are lost): there ctcbridge is held to the reference
    lost = _float32_underflow(case)
    if lost.any() and not collapse:
        ref = reference.ctc_loss(case.logits.astype(np.float32), case.labels,
                                 case.input_lengths, case.label_lengths, blank=case.blank,
                                 merge_repeated=merge)
        close(lo[lost], ref[lost], 1e-5, 1e-5)
    keep = ~lost
    close(lo[keep], ln[keep], 1e-3, 1e-3)
    close(np.compress(keep, go, axis=1), np.compress(keep, gn, axis=1), 0, 5e-2)


def _float32_underflow(case) -> np.ndarray:
    """Samples with a used label or blank probability below float32's range."""
    x = case.logits.astype(np.float64)
    lp = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - x.max(-1, keepdims=True)
    out = np.zeros(case.N, dtype=bool)
    for n in range(case.N):
        classes = np.append(case.labels[n, : case.label_lengths[n]], case.blank)
        out[n] = (lp[: case.input_lengths[n], n][:, classes] < -87.0).any()
    return out


def test_sparse_v2_float64_and_tf_function():
    case = make_case(21, allow_infeasible=False, min_label=1)
    labels = _sparse(case)
    x64 = tf.constant(case.logits)
    il = tf.constant(case.input_lengths.astype(np.int32))
    ours = ctf.ctc_loss(labels, x64, None, il, blank_index=0)
    native = tf.nn.ctc_loss(labels, x64, None, il, blank_index=0)
    assert ours.dtype == tf.float64
    close(ours.numpy(), native.numpy(), 1e-6, 1e-6)
    args = _dense_args(case, True)
    eager = ctf.ctc_loss(*args)
    graph = tf.function(lambda a, b, c, d: ctf.ctc_loss(a, b, c, d))(*args)
    close(graph.numpy(), eager.numpy(), 1e-7, 1e-7)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(ctf.ctc_loss(args[0], x, args[2], args[3]))
        return tape.gradient(loss, x)

    g_graph = step(args[1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.ctc_loss(args[0], args[1], args[2], args[3]))
    close(g_graph.numpy(), tape.gradient(loss, args[1]).numpy(), 0, 1e-3)


def test_bfloat16_computed_in_float32():
    case = make_case(34, allow_infeasible=False)
    labels, _, ll, il = _dense_args(case, True)
    x = tf.Variable(tf.constant(case.logits.astype(np.float32), dtype=tf.bfloat16))
    with tf.GradientTape() as tape:
        ours = ctf.ctc_loss(labels, x, ll, il)
        total = tf.reduce_sum(ours)
    grad = tape.gradient(total, x)
    native = tf.nn.ctc_loss(labels, x, ll, il)
    assert ours.dtype == native.dtype == grad.dtype == tf.bfloat16
    close(tf.cast(ours, tf.float32).numpy(), tf.cast(native, tf.float32).numpy(), 1e-2, 1e-2)
    graph = tf.function(lambda z: ctf.ctc_loss(labels, z, ll, il))(x)
    close(tf.cast(graph, tf.float32).numpy(), tf.cast(ours, tf.float32).numpy(), 0, 0)


def test_dense_float64_and_float16():
    case = make_case(33, allow_infeasible=False)
    labels, _, ll, il = _dense_args(case, True)
    l64 = ctf.ctc_loss(labels, tf.constant(case.logits), ll, il)
    assert l64.dtype == tf.float64
    ref = reference.ctc_loss(case.logits, case.labels, case.input_lengths, case.label_lengths)
    close(l64.numpy(), ref, 1e-10, 1e-10)
    l16 = ctf.ctc_loss(labels, tf.constant(case.logits.astype(np.float16)), ll, il)
    n16 = tf.nn.ctc_loss(labels, tf.constant(case.logits.astype(np.float16)), ll, il)
    assert l16.dtype == n16.dtype == tf.float16
    close(l16.numpy(), n16.numpy(), 2e-3, 2e-2)


@pytest.mark.parametrize("seed", range(200))
def test_keras_against_native(seed):
    case = make_case(seed, allow_infeasible=False, min_label=1, blank="any")
    x = case.logits.transpose(1, 0, 2).astype(np.float32)
    args = (case.labels.astype(np.int32), x, case.label_lengths.astype(np.int32),
            case.input_lengths.astype(np.int32))
    ours = np.asarray(ck.ctc_loss(*args, mask_index=case.blank))
    native = keras.ops.convert_to_numpy(keras.ops.ctc_loss(*args, mask_index=case.blank))
    ref = reference.ctc_loss(x.astype(np.float64), case.labels, case.input_lengths,
                             case.label_lengths, blank=case.blank, layout="NTC")
    close(ours, ref, 2e-5, 2e-5)
    # divergence tf-dense-sentinel-shortcut: beyond ~707 nats TF's finite log(0)
    # start/end states undercut the true paths
    sane = ref < 600
    close(ours[sane], native[sane], 1e-3, 1e-3)
    assert (native[~sane] <= ours[~sane] + 1e-3 * ours[~sane]).all()
    blank_last = make_case(seed, allow_infeasible=False, min_label=1, blank="last")
    probs = tf.nn.softmax(blank_last.logits.transpose(1, 0, 2).astype(np.float32))
    bargs = (blank_last.labels.astype(np.int32), probs,
             blank_last.input_lengths[:, None].astype(np.int32),
             blank_last.label_lengths[:, None].astype(np.int32))
    ours = ck.ctc_batch_cost(*bargs)
    native = native_batch_cost(*bargs)
    assert ours.shape == native.shape == (blank_last.N, 1)
    close(ours.numpy(), native.numpy(), 1e-3, 1e-3)
    pv = tf.Variable(probs)
    grads = []
    for fn in (ck.ctc_batch_cost, native_batch_cost):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(fn(bargs[0], pv, bargs[2], bargs[3]))
        grads.append(tape.gradient(total, pv).numpy())
    close(grads[0], grads[1], 1e-2, 1e-1)


def test_blank_index_label_divergence_and_errors():
    """Divergence tf-dense-label-equals-blank: TF reads it as class blank-1."""
    x = tf.constant(np.zeros((6, 1, 5), np.float32))
    with pytest.raises(ValueError, match="equals blank_index 2"):
        ctf.ctc_loss(tf.constant([[1, 2]]), x, tf.constant([2]), tf.constant([6]), blank_index=2)
    with pytest.raises(ValueError, match="is 7"):
        ctf.ctc_loss(tf.constant([[1, 7]]), x, tf.constant([2]), tf.constant([6]))
    sp = tf.SparseTensor([[0, 0], [0, 1], [0, 2]], tf.constant([1, 2, 3]), [1, 3])
    with pytest.raises(ValueError, match="Not enough time"):
        ctf.ctc_loss_v1(sp, x[:2], tf.constant([2]))
    with pytest.raises(ValueError, match="blank_index` must be provided"):
        ctf.ctc_loss(sp, x, None, tf.constant([6]))


@pytest.mark.parametrize("label,valid", [([1, 2, 4], True), ([1, 4, 4], True),
                                         ([1, 4, 2], False), ([4, 1, 2], False)])
def test_batch_cost_blank_label_ends_sequence(label, valid):
    """ctc_batch_cost's labels reach TF v1's kernel (blank C - 1): a blank ends the
    sequence (trailing ones dropped), a label after it is an error, as natively."""
    rng = np.random.default_rng(0)
    p = rng.random((1, 8, 5)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    args = (np.array([label]), p, np.array([[8]]), np.array([[3]]))
    if valid:
        native = native_batch_cost(*[tf.constant(a) for a in args]).numpy()
        close(ck.ctc_batch_cost(*args), native, 1e-5, 1e-5)
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="non-null label"):
            native_batch_cost(*[tf.constant(a) for a in args])
        with pytest.raises(ValueError, match="non-null label"):
            ck.ctc_batch_cost(*args)


def test_nan_in_padding_frames():
    """Divergence tf-dense-nan-in-padding-frames: NaN logits in frames past a sample's
    logit length reach the loss of native dense tf.nn.ctc_loss and keras.ops.ctc_loss
    (their dense kernels run every frame); TF's sparse and v1 paths and ctcbridge
    never read those frames."""
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((6, 2, 5)).astype(np.float32)  # (T, B, C)
    x = clean.copy()
    x[4:, 0] = np.nan  # past sample 0's 4 frames
    labels = np.array([[1, 2], [2, 3]], np.int32)
    ll, il = np.array([2, 2], np.int32), np.array([4, 6], np.int32)
    kw = dict(logits_time_major=True, blank_index=0)
    native = tf.nn.ctc_loss(labels, x, ll, il, **kw).numpy()
    assert np.isnan(native[0]) and np.isfinite(native[1])
    sparse = tf.nn.ctc_loss(tf.sparse.from_dense(labels), x, None, il, **kw).numpy()
    assert np.isfinite(sparse).all()
    expected = ctf.ctc_loss(labels, tf.constant(clean), ll, il, **kw).numpy()
    close(expected, sparse, 1e-5, 1e-5)
    xv = tf.Variable(x)
    lo, go = _loss_grad(ctf.ctc_loss, labels, xv, ll, il, **kw)
    close(lo, expected, 1e-6, 1e-6)
    assert np.isfinite(go).all() and not go[4:, 0].any()
    keras_native = keras.ops.convert_to_numpy(
        keras.ops.ctc_loss(labels, x.transpose(1, 0, 2), ll, il, mask_index=0))
    assert np.isnan(keras_native[0]) and np.isfinite(keras_native[1])
    close(np.asarray(ck.ctc_loss(labels, x.transpose(1, 0, 2), ll, il, mask_index=0)),
          expected, 1e-6, 1e-6)
