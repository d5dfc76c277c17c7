"""ctcbridge.tensorflow and ctcbridge.keras against TensorFlow's and Keras's own
CTC (nox session `tensorflow`)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # the module skips where a framework it needs is absent
pytest.importorskip("keras")

import keras
import tensorflow as tf
from keras.src.legacy.backend import ctc_batch_cost as native_batch_cost

import ctcbridge.errors
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


# --- drop-in behaviour around the loss: error types, Variables, XLA, TF1, empty batches


def _raised(fn, graph: bool):
    try:
        (tf.function(fn)() if graph else fn())
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return exc
    return None


_P = tf.nn.softmax(tf.zeros((2, 6, 5)))
_SP3 = tf.SparseTensor([[0, 0], [0, 1], [0, 2], [1, 0]], tf.constant([1, 2, 3, 1]), [2, 3])
_EMPTY_SP = tf.SparseTensor(tf.zeros((0, 2), tf.int64), tf.zeros((0,), tf.int32), [2, 3])
_EMPTY_BATCH_SP = tf.SparseTensor(tf.zeros((0, 2), tf.int64), tf.zeros((0,), tf.int32), [0, 1])
_I0 = tf.zeros((0,), tf.int32)
# (name, arguments for (ours, native), the message ours gives)
_ERROR_CASES = [
    ("v1-too-long", lambda m: m.ctc_loss_v1(_SP3, tf.zeros((2, 2, 5)), tf.constant([2, 2])),
     "Not enough time"),
    ("v1-empty-label", lambda m: m.ctc_loss_v1(_EMPTY_SP, tf.zeros((6, 2, 5)),
                                               tf.constant([6, 6])), "Labels length is zero"),
    ("v1-empty-batch", lambda m: m.ctc_loss_v1(_EMPTY_BATCH_SP, tf.zeros((6, 0, 5)), _I0),
     "batch_size must not be 0"),
    ("sparse-too-long", lambda m: m.ctc_loss(_SP3, tf.zeros((2, 2, 5)), None, tf.constant([2, 2]),
                                             blank_index=0), "Not enough time"),
    ("sparse-empty-batch", lambda m: m.ctc_loss(_EMPTY_BATCH_SP, tf.zeros((6, 0, 5)), None, _I0,
                                                blank_index=0), "batch_size must not be 0"),
    ("dense-empty-batch", lambda m: m.ctc_loss(tf.zeros((0, 2), tf.int32), tf.zeros((6, 0, 5)),
                                               _I0, _I0), "batch_size must not be 0"),
    ("keras-empty-batch", lambda m: m.ctc_loss(tf.zeros((0, 2), tf.int32), tf.zeros((0, 6, 5)),
                                               _I0, _I0), "batch_size must not be 0"),
    ("batch-cost-too-long", lambda m: m(tf.constant([[1, 2], [1, 2]]), _P[:, :1],
                                        tf.constant([[1], [1]]), tf.constant([[2], [2]])),
     "Not enough time"),
    ("batch-cost-empty-label", lambda m: m(tf.constant([[1, 2], [1, 2]]), _P,
                                           tf.constant([[6], [6]]), tf.constant([[0], [2]])),
     "Labels length is zero"),
    ("batch-cost-empty-batch", lambda m: m(tf.zeros((0, 2), tf.int32), tf.zeros((0, 6, 5)),
                                           tf.zeros((0, 1), tf.int32), tf.zeros((0, 1), tf.int32)),
     "batch_size must not be 0"),
]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name,case,message", _ERROR_CASES, ids=[c[0] for c in _ERROR_CASES])
def test_error_types_as_native(name, case, message, graph):
    """What TF's and Keras' CTC raise (tf.errors.InvalidArgumentError for values,
    eagerly and in graphs; a ValueError when a dense empty batch is traced), ours
    raises: our class derives from TF's (and from ValueError)."""
    if name.startswith("keras"):
        ours, native = ck, keras.ops
    elif name.startswith("batch-cost"):
        ours, native = ck.ctc_batch_cost, native_batch_cost
    else:
        ours, native = ctf, (tf.compat.v1.nn if name.startswith("v1") else tf.nn)
    if name.startswith("v1"):
        native = type("V1", (), {"ctc_loss_v1": staticmethod(tf.compat.v1.nn.ctc_loss)})
    theirs = _raised(lambda: case(native), graph)
    mine = _raised(lambda: case(ours), graph)
    assert theirs is not None and mine is not None
    assert isinstance(mine, type(theirs)), (type(mine), type(theirs))
    assert isinstance(mine, tf.errors.InvalidArgumentError)
    assert message in str(mine)
    if not graph:
        assert isinstance(mine, ctcbridge.errors.CTCValueError)  # a ValueError too


def test_invalid_argument_error_pickles():
    from ctcbridge.errors import tf_invalid_argument

    import pickle

    err = pickle.loads(pickle.dumps(tf_invalid_argument("labels: bad")))
    assert isinstance(err, tf.errors.InvalidArgumentError) and str(err) == "labels: bad"


def test_variables_as_inputs():
    """tf.Variable labels, lengths and activations, eagerly and in tf.function, as TF
    takes them (tf.custom_gradient sees no variable read inside the op)."""
    case = make_case(5, allow_infeasible=False, min_label=1, blank="last")
    x = tf.Variable(case.logits.astype(np.float32))
    lab = tf.Variable(case.labels.astype(np.int32))
    ll = tf.Variable(case.label_lengths.astype(np.int32))
    il = tf.Variable(case.input_lengths.astype(np.int32))
    sp = _sparse(case)
    sp_var = tf.SparseTensor(sp.indices, tf.Variable(sp.values), sp.dense_shape)
    probs = tf.Variable(tf.nn.softmax(tf.transpose(x, (1, 0, 2))))
    il2, ll2 = tf.Variable(il[:, None]), tf.Variable(ll[:, None])
    pairs = [
        (lambda: ctf.ctc_loss(lab, x, ll, il, blank_index=-1),
         lambda: tf.nn.ctc_loss(lab, x, ll, il, blank_index=-1), x),
        (lambda: ctf.ctc_loss_v1(sp_var, x, il), lambda: tf.compat.v1.nn.ctc_loss(sp_var, x, il), x),
        (lambda: ck.ctc_batch_cost(lab, probs, il2, ll2),
         lambda: native_batch_cost(lab, probs, il2, ll2), probs),
    ]
    for ours, native, var in pairs:
        for wrap in (lambda f: f, tf.function):
            def loss_grad(fn):
                with tf.GradientTape() as tape:
                    loss = fn()
                    total = tf.reduce_sum(loss)
                return loss, tape.gradient(total, var)

            lo, go = wrap(lambda: loss_grad(ours))()
            ln, gn = wrap(lambda: loss_grad(native))()
            close(lo.numpy(), ln.numpy(), 1e-3, 1e-3)
            close(go.numpy(), gn.numpy(), 1e-2, 1e-2)


def _jit_loss_grad(fn, x, jit=True, signature=None):
    def f(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = fn(z)
            total = tf.reduce_sum(tf.where(tf.math.is_finite(loss), loss, tf.zeros_like(loss)))
        return loss, tape.gradient(total, z)

    return tf.function(f, jit_compile=jit, input_signature=signature)(x)


@pytest.mark.parametrize("seed", range(12))
def test_jit_compile_matches_eager(seed):
    """tf.function(jit_compile=True): the engine as an XLA custom call (the numpy path
    through a Python handler for infeasible samples and the v1/batch-cost
    signatures), with the eager values; shapes unknown when traced are refined by
    XLA when it compiles."""
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero", min_label=1)
    x = tf.constant(case.logits.astype(np.float64 if seed % 5 == 0 else np.float32))
    lab = tf.constant(case.labels.astype(np.int32))
    ll, il = (tf.constant(a.astype(np.int32)) for a in (case.label_lengths, case.input_lengths))
    fns = [lambda z: ctf.ctc_loss(lab, z, ll, il, blank_index=case.blank),
           lambda z: ck.ctc_loss(tf.cast(lab, tf.float32), tf.transpose(z, (1, 0, 2)), ll, il,
                                 mask_index=case.blank)]
    last = make_case(seed, blank="last", min_label=1)
    if (last.label_lengths <= last.input_lengths).all():
        xl = tf.constant(last.logits.astype(np.float32))
        fns.append(lambda z: ctf.ctc_loss_v1(_sparse(last), z, last.input_lengths,
                                             ignore_longer_outputs_than_inputs=True))
    for fn in fns:
        z = xl if fn is fns[-1] and len(fns) == 3 else x
        eager = _jit_loss_grad(fn, z, jit=False)
        jit = _jit_loss_grad(fn, z)
        dynamic = _jit_loss_grad(fn, z, signature=[tf.TensorSpec([None] * 3, z.dtype)])
        for got in (jit, dynamic):
            assert got[0].dtype == eager[0].dtype
            close(got[0].numpy(), eager[0].numpy(), 1e-6, 1e-6)
            close(got[1].numpy(), eager[1].numpy(), 1e-6, 1e-6)


def test_jit_compile_low_precision_and_errors():
    case = make_case(3, allow_infeasible=False)
    lab, _, ll, il = _dense_args(case, True)
    x = tf.constant(case.logits.astype(np.float32), tf.bfloat16)
    got = _jit_loss_grad(lambda z: ctf.ctc_loss(lab, z, ll, il), x)
    assert got[0].dtype == got[1].dtype == tf.bfloat16
    close(tf.cast(got[0], tf.float32).numpy(),
          tf.cast(ctf.ctc_loss(lab, x, ll, il), tf.float32).numpy(), 0, 0)
    z = tf.zeros((6, 1, 4))
    bad = [(lambda: ctf.ctc_loss(tf.constant([[1, 9]]), z, tf.constant([2]), tf.constant([6])),
            "is 9"),  # the engine's handler
           (lambda: ctf.ctc_loss(tf.constant([[1, 3]]), z, tf.constant([2]), tf.constant([6]),
                                 blank_index=3), "equals blank_index"),  # the numpy handler
           (lambda: ck.ctc_loss(tf.constant([[1.5, 2.0]]), tf.zeros((1, 6, 4)), tf.constant([2]),
                                tf.constant([6])), "target must hold integer values")]
    for fn, message in bad:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            tf.function(fn, jit_compile=True)()


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine with a GPU, as TF's device lists show it (this session's TensorFlow
    has none): the bridge's device check (logical devices) and Keras' choice of
    XLA for jit_compile="auto" (physical devices) read these.  XLA still compiles
    for the CPU here, which checks that the device route's graph compiles and
    what it computes."""
    logical, physical = tf.config.list_logical_devices, tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else logical(kind))
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: physical(kind) + [gpu] if kind in (None, "GPU")
                        else physical(kind))
    return monkeypatch


@pytest.fixture
def gpu_without_engine(fake_gpu):
    """fake_gpu, and the engine's XLA custom calls, which cannot run on a GPU, fail
    the test if they are reached."""
    from ctcbridge._bridges import tensorflow as bridge

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine's XLA custom call was used on the (fake) GPU")

    fake_gpu.setattr(bridge, "_xla_custom_call", no_engine)


def _weighted_loss_grad(fn, x, jit):
    """Losses and d(sum_n w_n loss_n)/dx, w_n = n + 1 (per-sample scaling reaches the
    gradient), in tf.function(jit_compile=jit)."""
    def f(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = fn(z)
            w = tf.cast(tf.range(1, tf.shape(loss)[0] + 1), loss.dtype)
            total = tf.reduce_sum(loss * w)
        return loss, tape.gradient(total, z)

    loss, grad = tf.function(f, jit_compile=jit)(x)
    return loss.numpy(), grad.numpy()


@pytest.mark.parametrize("seed", range(16))
def test_jit_compile_on_gpu_computes_the_natives_numbers(seed, gpu_without_engine):
    """Divergence tf-xla-gpu: XLA compiled for a GPU cannot call the CPU engine.
    tf.nn.ctc_loss (dense) and keras.ops.ctc_loss, whose natives compile for the
    GPU, are computed there by TF's own dense CTC: losses and gradients equal the
    native's under the same jit_compile=True (both layouts, any blank, infeasible
    samples: TF's sentinel values), and the engine's (eager) within float32 noise."""
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero", min_label=1)
    time_major = seed % 2 == 0
    x = case.logits.astype(np.float32)
    x = tf.constant(x if time_major else x.transpose(1, 0, 2))
    lab = tf.constant(case.labels.astype(np.int32))
    ll, il = (tf.constant(a.astype(np.int32)) for a in (case.label_lengths, case.input_lengths))
    kw = dict(logits_time_major=time_major, blank_index=case.blank)
    pairs = [(lambda z: ctf.ctc_loss(lab, z, ll, il, **kw),
              lambda z: tf.nn.ctc_loss(lab, z, ll, il, **kw))]
    if not time_major:  # Keras: batch-major logits, float targets as compile(loss=) gives
        pairs.append((lambda z: ck.ctc_loss(tf.cast(lab, tf.float32), z, ll, il, case.blank),
                      lambda z: keras.ops.ctc_loss(lab, z, ll, il, case.blank)))
    for ours, native in pairs:
        lo, go = _weighted_loss_grad(ours, x, jit=True)
        ln, gn = _weighted_loss_grad(native, x, jit=True)
        np.testing.assert_array_equal(lo, ln)
        np.testing.assert_array_equal(go, gn)
        le, ge = _weighted_loss_grad(ours, x, jit=False)  # the engine (tf.function)
        ok = ~case.infeasible() & (le < 600)  # divergence tf-dense-sentinel-shortcut
        close(lo[ok], le[ok], 1e-3, 1e-3)
        axis = 1 if time_major else 0
        close(np.compress(ok, go, axis), np.compress(ok, ge, axis), 0, 5e-2)


def test_jit_compile_on_gpu_dtypes_and_invalid_input(gpu_without_engine):
    """On the (fake) GPU: float16/bfloat16 as TF (computed in float32, returned in
    their dtype), float64 computed in float32 (TF's dense CTC is float32 only) and
    returned as float64; an input the other routes reject (XLA cannot raise at run
    time) makes the call's losses and gradients NaN."""
    case = make_case(3, allow_infeasible=False, min_label=1)
    lab, _, ll, il = _dense_args(case, True)
    x32 = tf.constant(case.logits.astype(np.float32))
    l32, g32 = _weighted_loss_grad(lambda z: ctf.ctc_loss(lab, z, ll, il), x32, jit=True)
    for dtype in (tf.float16, tf.bfloat16, tf.float64):
        x = tf.cast(x32, dtype)
        lo, go = _weighted_loss_grad(lambda z: ctf.ctc_loss(lab, z, ll, il), x, jit=True)
        assert lo.dtype == go.dtype == dtype.as_numpy_dtype
        if dtype == tf.float64:
            close(lo, l32, 1e-6, 1e-6)
            close(go, g32, 1e-6, 1e-6)
        else:  # as the native (which casts to float32 and back)
            ln, gn = _weighted_loss_grad(lambda z: tf.nn.ctc_loss(lab, z, ll, il), x, jit=True)
            np.testing.assert_array_equal(lo.astype(np.float32), ln.astype(np.float32))
    T, N, C = case.logits.shape
    bad_label = case.labels.copy()
    bad_label[0, 0] = C  # outside [0, C)
    long_input = case.input_lengths.copy()
    long_input[-1] = T + 1
    bad = [(lambda z: ctf.ctc_loss(tf.constant(bad_label), z, ll, il)),
           (lambda z: ctf.ctc_loss(lab, z, ll, tf.constant(long_input))),
           (lambda z: ctf.ctc_loss(lab, z, tf.fill([N], case.labels.shape[1] + 1), il)),
           # a label equal to a non-zero blank (the signature's own check)
           (lambda z: ctf.ctc_loss(lab, z, ll, il, blank_index=int(case.labels[0, 0]))),
           # Keras: a fractional target
           (lambda z: ck.ctc_loss(tf.cast(lab, tf.float32) + 0.5, tf.transpose(z, (1, 0, 2)),
                                  ll, il))]
    for fn in bad:
        lo, go = _weighted_loss_grad(fn, x32, jit=True)
        assert np.isnan(lo).all() and np.isnan(go).all()
        with pytest.raises(tf.errors.InvalidArgumentError):  # the other routes raise
            _weighted_loss_grad(fn, x32, jit=False)


def test_jit_compile_on_gpu_refused_where_the_native_compiles_nowhere(fake_gpu):
    """v1 and ctc_batch_cost (their native's CTCLoss op has no XLA kernel) keep the
    trace-time error on a GPU, naming jit_compile=True and what to do instead."""
    from ctcbridge._bridges import tensorflow as bridge

    case = make_case(2, blank="last", allow_infeasible=False, min_label=1)
    x = tf.constant(case.logits.astype(np.float32))
    probs = tf.nn.softmax(tf.transpose(x, (1, 0, 2)))
    calls = [lambda: ctf.ctc_loss_v1(_sparse(case), x, case.input_lengths),
             lambda: ck.ctc_batch_cost(case.labels, probs, case.input_lengths[:, None],
                                       case.label_lengths[:, None])]
    for fn in calls:
        # raised while AutoGraph traces: it re-raises a non-builtin type as its StagingError
        with pytest.raises(Exception, match=r"(?s)CTCCompileError: .*jit_compile=True"):
            tf.function(fn, jit_compile=True).get_concrete_function()
        with pytest.raises(ctcbridge.errors.CTCCompileError, match="on a GPU or TPU"):
            tf.function(fn, jit_compile=True, autograph=False).get_concrete_function()
        # placed on the CPU, inside the function or around its call: the engine

        def inside(fn=fn):
            with tf.device("/CPU:0"):
                return fn()

        eager = fn()
        close(tf.function(inside, jit_compile=True)().numpy(), eager.numpy(), 1e-5, 1e-5)
        with tf.device("/CPU:0"):
            close(tf.function(fn, jit_compile=True)().numpy(), eager.numpy(), 1e-5, 1e-5)
    assert bridge._in_xla() is False  # outside a compiled function


def test_keras_fit_auto_on_gpu_trains_as_native(gpu_without_engine):
    """Keras resolves jit_compile="auto" to XLA on a machine with a GPU: fit with
    ctcbridge.keras.ctc_loss as the compiled loss trains there, with native
    keras.ops.ctc_loss's loss curve (the same TF ops under XLA)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 10, 4)).astype(np.float32)
    y = rng.integers(1, 5, (6, 3)).astype(np.float32)

    def make_loss(fn):
        def loss(y_true, y_pred):
            n = tf.shape(y_pred)[0]
            return fn(y_true, y_pred, tf.fill([n], 3), tf.fill([n], 10))
        return loss

    native = lambda t, *a: keras.ops.ctc_loss(tf.cast(t, tf.int32), *a)  # noqa: E731
    curves = []
    for fn in (ck.ctc_loss, native):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10, 4)), keras.layers.Dense(5)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=make_loss(fn))
        assert model.jit_compile is True  # "auto" on a GPU machine
        curves.append(model.fit(x, y, batch_size=4, epochs=3, shuffle=False,
                                verbose=0).history["loss"])
    assert curves[0] == curves[1] and curves[0][-1] < curves[0][0]


def test_keras_fit_jit_compile_true():
    """Keras fit with jit_compile=True (what "auto" picks where XLA is available)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 10, 4)).astype(np.float32)
    y = rng.integers(1, 5, (6, 3)).astype(np.float32)

    def loss(y_true, y_pred):
        n = tf.shape(y_pred)[0]
        return ck.ctc_loss(y_true, y_pred, tf.fill([n], 3), tf.fill([n], 10))

    curves = []
    for jit in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10, 4)), keras.layers.Dense(5)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, jit_compile=jit)
        curves.append(model.fit(x, y, batch_size=4, epochs=3, shuffle=False,
                                verbose=0).history["loss"])
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


TF1_SCRIPT = """
import numpy as np, tensorflow as tf
tf.compat.v1.disable_v2_behavior()
import ctcbridge.tensorflow as ctf
x = tf.compat.v1.placeholder(tf.float32, [None, None, 5])
lab = tf.compat.v1.placeholder(tf.int32, [None, None])
ll = tf.compat.v1.placeholder(tf.int32, [None])
il = tf.Variable([6, 4])
outs = []
for blank in (-1, 0, 2, -5):
    labels = {-1: [[1, 2], [3, 0]], 0: [[1, 2], [3, 4]], 2: [[1, 3], [4, 1]], -5: [[1, 2], [3, 4]]}
    ours = ctf.ctc_loss(lab, x, ll, il, blank_index=blank)
    native = tf.nn.ctc_loss(lab, x, ll, il, blank_index=blank)
    grads = tf.gradients(tf.reduce_sum(ours), x)[0], tf.gradients(tf.reduce_sum(native), x)[0]
    outs.append((ours, native, grads, labels[blank]))
rng = np.random.default_rng(0)
with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    for ours, native, grads, labels in outs:
        feed = {x: rng.standard_normal((6, 2, 5)), lab: labels, ll: [2, 1]}
        o, n, go, gn = sess.run([ours, native, *grads], feed)
        assert np.allclose(o, n, rtol=1e-4), (o, n)
        assert np.allclose(go, gn, atol=1e-4)
print("TF1 OK")
"""


def _fresh_python(code: str, cwd) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter importing the ctcbridge this test imported (not
    the checkout's sources the working directory would put first)."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(ctcbridge.__file__))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_tf1_behaviour_negative_blank_unknown_dims(tmp_path):
    """Under tf.compat.v1.disable_v2_behavior() (a fresh process: it is global) a
    static size is a Dimension and the labels' dimensions may be unknown; a
    negative blank_index counts from the end there too, as in TF."""
    proc = _fresh_python(TF1_SCRIPT, tmp_path)
    assert proc.returncode == 0 and "TF1 OK" in proc.stdout, proc.stderr[-3000:]


FIRST_TRACE = """
import sys
import numpy as np
import tensorflow as tf
import ctcbridge.MODULE as m
assert "ctcbridge._bridges.tensorflow" not in sys.modules  # imported inside the trace
rng = np.random.default_rng(0)
x = tf.constant(rng.standard_normal(SHAPE).astype(np.float32))
labels = tf.constant([[1, 2], [3, 3]])
lengths = tf.constant([2, 2]), tf.constant([6, 5])

@tf.function(jit_compile=JIT)  # AutoGraph converts the function, and what it calls
def loss_and_grad(z):
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = CALL
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, z)

loss, grad = loss_and_grad(x)  # ctcbridge's first call of the process: traced
native = NATIVE
np.testing.assert_allclose(loss.numpy(), native.numpy(), rtol=1e-5)
assert np.isfinite(grad.numpy()).all()
print("FIRST TRACE OK")
"""

_FIRST_TRACES = {
    "tensorflow": ((6, 2, 5), "m.ctc_loss(labels, z, *lengths)",
                   "tf.nn.ctc_loss(labels, x, *lengths)"),
    "keras": ((2, 6, 5), "m.ctc_loss(labels, z, *lengths)",
              "__import__('keras').ops.ctc_loss(labels, x, *lengths)"),
}


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("module", list(_FIRST_TRACES))
def test_first_trace_of_the_process_has_no_autograph_warning(module, jit, tmp_path):
    """ctcbridge's first call of a fresh process inside tf.function (the bridge is
    imported while AutoGraph converts the trace): the native's value, and no
    "AutoGraph could not transform" warning (a lazy import through importlib
    once made AutoGraph warn about _gcd_import)."""
    shape, call, native = _FIRST_TRACES[module]
    code = (FIRST_TRACE.replace("MODULE", module).replace("SHAPE", repr(shape))
            .replace("JIT", repr(jit)).replace("CALL", call).replace("NATIVE", native))
    # a file, not `-c`: AutoGraph converts only functions whose source it can read
    script = tmp_path / "first_trace.py"
    script.write_text(code)
    proc = _fresh_python(f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, "
                         f"'exec'))", tmp_path)
    assert proc.returncode == 0 and "FIRST TRACE OK" in proc.stdout, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "AutoGraph could not transform" not in output, output[-3000:]
    assert "ctcbridge" not in "\n".join(line for line in output.splitlines()
                                        if "WARNING" in line), output[-3000:]


V1_ALL_BLANK = """
import tensorflow as tf
sp = tf.SparseTensor([[0, 0], [1, 0]], tf.constant([4, 1]), [2, 1])
loss = tf.compat.v1.nn.ctc_loss(sp, tf.zeros((6, 2, 5)), tf.constant([6, 6]))
print("LOSS", loss.numpy().tolist())
"""


def test_v1_all_blank_label_is_an_error(tmp_path):
    """Divergence tf-v1-all-blank-label: a label sequence of blanks only (empty once
    the blank ends it) aborts TF 2.21's process (later TF gives a finite loss);
    ours raises TF's error for an empty label sequence, as v1's rule for empty
    labels says."""
    sp = tf.SparseTensor([[0, 0], [1, 0]], tf.constant([4, 1]), [2, 1])
    for graph in (False, True):
        err = _raised(lambda: ctf.ctc_loss_v1(sp, tf.zeros((6, 2, 5)), tf.constant([6, 6])),
                      graph)
        assert isinstance(err, tf.errors.InvalidArgumentError)
        assert "Labels length is zero in batch 0" in str(err)
    native = _fresh_python(V1_ALL_BLANK, tmp_path)
    # the native either aborts (TF 2.21: SIGABRT) or, once fixed, returns a finite loss
    assert native.returncode != 0 or "LOSS" in native.stdout


def test_keras_float_targets():
    """model.compile hands y_true as float32: integral values are read as Keras reads
    them (its tf.cast); divergence keras-fractional-target: a fractional one raises
    where Keras truncates it."""
    case = make_case(7, allow_infeasible=False, min_label=1)
    x = case.logits.transpose(1, 0, 2).astype(np.float32)
    args = (case.label_lengths.astype(np.int32), case.input_lengths.astype(np.int32))
    target = tf.constant(case.labels.astype(np.float32))
    for wrap in (lambda f: f, tf.function):
        ours = wrap(lambda: ck.ctc_loss(target, tf.constant(x), *args))()
        native = keras.ops.ctc_loss(target, x, *args)
        close(ours.numpy(), native.numpy(), 1e-4, 1e-4)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"target must hold integer values, got \d+\.5 at \[0, 0\]"):
            wrap(lambda: ck.ctc_loss(target + 0.5, tf.constant(x), *args))()
    truncated = keras.ops.ctc_loss(target + 0.5, x, *args)  # the native's reading
    close(truncated.numpy(), native.numpy(), 0, 0)


def test_eager_reads_and_returns_tensors_memory(monkeypatch):
    """Eager calls copy no activations: the engine reads the tensor's memory (a
    DLPack view), its result arrays become the returned tensors (DLPack, 64-byte
    aligned as TF requires); the gradient is computed only where a tape or an
    accumulator records, and forward mode (ForwardAccumulator) sees the op."""
    from ctcbridge import _compute

    seen = []
    real = _compute.compute

    def spy(activations, *args, **kwargs):
        out = real(activations, *args, **kwargs)
        seen.append((activations, kwargs["want_grad"], out))
        return out

    monkeypatch.setattr(_compute, "compute", spy)
    case = make_case(4, allow_infeasible=False)
    lab, _, ll, il = _dense_args(case, True)
    x = tf.constant(case.logits.astype(np.float32))
    loss = ctf.ctc_loss(lab, x, ll, il)
    acts, want, (losses, grad) = seen[-1]
    assert acts.ctypes.data == np.from_dlpack(x).ctypes.data  # no copy in
    assert not want and grad is None  # no tape: no gradient
    assert np.from_dlpack(loss).ctypes.data == losses.ctypes.data  # no copy out
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = ctf.ctc_loss(lab, x, ll, il)
        total = tf.reduce_sum(loss * tf.range(1.0, loss.shape[0] + 1))
    g = tape.gradient(total, x)
    acts, want, (losses, grad) = seen[-1]
    assert want and np.from_dlpack(loss).ctypes.data == losses.ctypes.data
    _, rg = reference.ctc_loss_and_grad(case.logits, case.labels, case.input_lengths,
                                        case.label_lengths, blank=case.blank)
    close(g.numpy(), rg * np.arange(1, case.N + 1)[None, :, None], 1e-4, 1e-4)
    tangent = tf.constant(np.random.default_rng(0).standard_normal(x.shape), tf.float32)
    with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
        loss = ctf.ctc_loss(lab, x, ll, il)
    close(acc.jvp(loss).numpy(), (rg * tangent.numpy()).sum((0, 2)), 1e-3, 1e-3)


def test_forward_mode_inside_tf_function_is_refused_as_the_native_refuses_it():
    """A ForwardAccumulator inside tf.function builds the JVP from each op's
    registered gradient: TF's dense CTC has none there (LookupError, "No gradient
    defined for operation ... SymbolicGradient"), and neither has the engine's op.
    Both refuse with LookupError; eagerly both give the same JVP."""
    case = make_case(5, allow_infeasible=False)
    lab, _, ll, il = _dense_args(case, True)
    x = tf.constant(case.logits.astype(np.float32))
    tangent = tf.constant(np.random.default_rng(1).standard_normal(x.shape), tf.float32)

    def jvp(fn):
        with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
            loss = fn(lab, x, ll, il, blank_index=case.blank)
        return acc.jvp(loss)

    eager = [jvp(fn).numpy() for fn in (ctf.ctc_loss, tf.nn.ctc_loss)]
    close(eager[0], eager[1], 1e-3, 1e-3)
    for fn in (ctf.ctc_loss, tf.nn.ctc_loss):
        with pytest.raises(LookupError):
            tf.function(lambda: jvp(fn), autograph=False)()  # noqa: B023


# --- second derivatives: refused, never None (read as zero) or wrong


def _nested_second_derivative(loss_fn, x, in_function):
    def run():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_sum(loss_fn())
            g = inner.gradient(loss, x)
            s = tf.reduce_sum(g * g)
        return outer.gradient(s, x)
    # (AutoGraph would wrap the LookupError of a graph in its StagingError)
    return tf.function(run, autograph=False)() if in_function else run()


@pytest.mark.parametrize("in_function", [False, True])
def test_second_derivatives_refused(in_function):
    """A gradient of the gradient raises TF's LookupError ("gradient registry has no
    entry"), eagerly as in tf.function; it came back None eagerly (the engine's
    gradient is a constant to an outer tape).  Native dense TF gives NaN eagerly
    and NotFoundError in a graph: undefined, so ours refuses as TF does for an op
    without a registered gradient."""
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.standard_normal((6, 2, 5)).astype(np.float32))
    labels = tf.constant([[1, 2], [3, 3]], tf.int32)
    lengths = (tf.constant([2, 2]), tf.constant([6, 6]))
    for loss_fn in (lambda: ctf.ctc_loss(labels, x, *lengths, logits_time_major=True,
                                         blank_index=0),
                    lambda: ck.ctc_loss(labels, tf.transpose(x, [1, 0, 2]),
                                        tf.constant([2, 2]), tf.constant([6, 6]))):
        with pytest.raises(LookupError, match="gradient registry has no entry"):
            _nested_second_derivative(loss_fn, x, in_function)


def test_second_derivative_refusal_spares_first_derivatives():
    """An outer tape that only takes the loss's own gradient, and a jvp of the
    gradient (forward over reverse: a second derivative, refused)."""
    rng = np.random.default_rng(1)
    x = tf.Variable(rng.standard_normal((6, 2, 5)).astype(np.float32))
    labels = tf.constant([[1, 2], [3, 3]], tf.int32)
    args = (tf.constant([2, 2]), tf.constant([6, 6]))

    def loss_fn():
        return tf.reduce_sum(ctf.ctc_loss(labels, x, *args, logits_time_major=True,
                                          blank_index=0))

    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn()
        g_inner = inner.gradient(loss, x)
    g_outer = outer.gradient(loss, x)
    with tf.GradientTape() as plain:
        loss = loss_fn()
    g_plain = plain.gradient(loss, x)
    np.testing.assert_array_equal(g_inner.numpy(), g_plain.numpy())
    np.testing.assert_array_equal(g_outer.numpy(), g_plain.numpy())
    with pytest.raises(ctcbridge.errors.CTCSecondDerivativeError):
        with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)) as acc:
            with tf.GradientTape() as inner:
                loss = loss_fn()
            acc.jvp(inner.gradient(loss, x))
