"""Keras training with ctcbridge.keras.ctc_loss as the compiled loss (nox session
`tensorflow`, which installs jax and torch beside TensorFlow for Keras' other
backends).

Each backend runs in a fresh process with ``KERAS_BACKEND`` set (Keras reads it
once, at import): ``model.compile(loss=...)`` hands the loss ``y_true`` as float32,
and ``fit`` must give the loss curve of native ``keras.ops.ctc_loss`` from the
same initial weights and data; the output dtypes follow Keras' on each backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("keras")

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import keras
    from keras import ops
    import ctcbridge.keras as ck

    B, T, F, C, S = 8, 12, 6, 5, 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, F)).astype("float32")
    lengths = rng.integers(1, S + 1, B)
    y = np.zeros((B, S), "int32")  # 0: the blank (mask_index) and the padding
    for n, k in enumerate(lengths):
        y[n, :k] = rng.integers(1, C, k)

    def make_loss(fn):
        def loss(y_true, y_pred):  # Keras hands y_true as float32
            label_length = ops.sum(ops.cast(ops.not_equal(y_true, 0), "int32"), axis=-1)
            output_length = ops.full((ops.shape(y_pred)[0],), T, dtype="int32")
            return fn(y_true, y_pred, label_length, output_length)
        return loss

    native = lambda t, *a: ops.ctc_loss(ops.cast(t, "int32"), *a)
    curves = {}
    for name, fn in (("ours", ck.ctc_loss), ("native", native)):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((T, F)), keras.layers.Dense(16, activation="tanh"),
                                  keras.layers.Dense(C)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=make_loss(fn),
                      jit_compile=JIT)
        hist = model.fit(x, y.astype("float32"), batch_size=3, epochs=4, shuffle=False,
                         verbose=0)
        curves[name] = [float(v) for v in hist.history["loss"]]

    # output dtypes with low-precision logits, and fractional targets
    dtypes = {}
    for dt in ("float16", "bfloat16", "float32", "float64"):
        out = ops.cast(ops.convert_to_tensor(x[:, :, :C]), dt)
        args = (ops.convert_to_tensor(y), out, ops.convert_to_tensor(lengths.astype("int32")),
                ops.convert_to_tensor(np.full(B, T, "int32")))
        ours = ck.ctc_loss(*args)
        theirs = ops.ctc_loss(*args)
        dtypes[dt] = [keras.backend.standardize_dtype(ours.dtype), keras.backend.standardize_dtype(theirs.dtype),
                      float(np.max(np.abs(ops.convert_to_numpy(ops.cast(ours, "float32"))
                                          - ops.convert_to_numpy(ops.cast(theirs, "float32")))))]
    frac = None
    try:
        ck.ctc_loss(y.astype("float32") + 0.5, x[:, :, :C], lengths, np.full(B, T))
    except ValueError as exc:
        frac = str(exc)
    print("RESULT" + json.dumps({"curves": curves, "dtypes": dtypes, "fractional": frac}))
""")


def _run(backend: str, jit, cwd) -> dict:
    import ctcbridge

    # the ctcbridge this test imported, not the checkout's sources the cwd would give
    env = {**os.environ, "KERAS_BACKEND": backend,
           "PYTHONPATH": os.path.dirname(os.path.dirname(ctcbridge.__file__))}
    code = SCRIPT.replace("JIT", repr(jit))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


# ("tensorflow", True): XLA's first call in a fresh process registers the custom calls
@pytest.mark.parametrize("backend,jit", [("tensorflow", "auto"), ("tensorflow", True),
                                         ("jax", "auto"), ("torch", "auto")])
def test_fit_matches_native_loss_curve(backend, jit, tmp_path):
    pytest.importorskip(backend)
    res = _run(backend, jit, tmp_path)
    ours, native = res["curves"]["ours"], res["curves"]["native"]
    assert len(ours) == 4 and ours[-1] < ours[0]  # it trains
    assert ours == pytest.approx(native, rel=2e-4)
    # Keras' rule on every backend: result_type(output.dtype, "float32")
    for dt, (our_dtype, native_dtype, diff) in res["dtypes"].items():
        assert our_dtype == native_dtype, (dt, our_dtype, native_dtype)
        assert diff < (5e-2 if "16" in dt else 1e-3), (dt, diff)
    assert res["dtypes"]["float16"][0] == res["dtypes"]["bfloat16"][0] == "float32"
    assert "target must hold integer values, got " in res["fractional"]
