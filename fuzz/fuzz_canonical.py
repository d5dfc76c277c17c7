"""Coverage-guided fuzzing of the canonical API with atheris (`nox -s fuzz`).

Every input becomes one call of ``ctcbridge.ctc_loss_and_grad`` with small
shapes, any dtype, logits scaled up to 1000, labels and lengths (valid or
not), blank, layout and input kind; in some calls another thread keeps
writing to the labels and lengths while the engine runs.  A call must either return outputs of the right shapes with no value
outside what the inputs allow, or raise one of ctcbridge's documented errors.
Anything else (another exception, a crash, a sanitizer report) is a finding.

    python fuzz/fuzz_canonical.py -max_total_time=60 CORPUS_DIR
"""

from __future__ import annotations

import sys
import threading
import time

import atheris

with atheris.instrument_imports():
    import numpy as np

    import ctcbridge
    from ctcbridge.errors import CTCError

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.bool_]


def one_call(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    T, N, C = fdp.ConsumeIntInRange(0, 9), fdp.ConsumeIntInRange(0, 4), fdp.ConsumeIntInRange(0, 6)
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    layout = "TNC" if fdp.ConsumeBool() else "NTC"
    shape = (T, N, C) if layout == "TNC" else (N, T, C)
    special = [0.0, 1.0, -1.0, 30.0, -30.0, 700.0, -700.0, np.inf, -np.inf, np.nan]
    scale = [1.0, 10.0, 100.0, 1000.0][fdp.ConsumeIntInRange(0, 3)]
    values = [special[fdp.ConsumeIntInRange(0, 9)] if fdp.ConsumeProbability() < 0.1
              else (fdp.ConsumeRegularFloat() % 50.0) * scale for _ in range(T * N * C)]
    acts = np.array(values, dtype=np.float64).reshape(shape).astype(dtype)
    if fdp.ConsumeBool() and acts.ndim == 3 and acts.shape[0] > 1:
        acts = acts[::-1]  # negative stride
    S = fdp.ConsumeIntInRange(0, 5)
    labels = np.array(fdp.ConsumeIntListInRange(N * S, -2, C + 1), dtype=np.int64)
    labels = labels.reshape(N, S) if fdp.ConsumeBool() or N * S == 0 else labels
    lengths = [None if fdp.ConsumeBool() else
               np.array(fdp.ConsumeIntListInRange(N, -1, max(T, S) + 1)) for _ in range(2)]
    kwargs = dict(blank=fdp.ConsumeIntInRange(-1, C), layout=layout,
                  inputs="logits" if fdp.ConsumeBool() else "log_probs",
                  reduction=["none", "sum", "mean"][fdp.ConsumeIntInRange(0, 2)],
                  zero_infinity=fdp.ConsumeBool(), num_threads=fdp.ConsumeIntInRange(0, 3))
    writer = None
    if fdp.ConsumeBool():
        # another thread writes to the integer inputs during the call: the
        # engine reads each once, so at most an error or that sample changes
        targets = [a for a in (labels, *lengths) if a is not None and a.size]
        junk = fdp.ConsumeIntListInRange(4, -(2**40), 2**40)
        stop = threading.Event()

        def write() -> None:
            i = 0
            while not stop.is_set() and targets:
                arr = targets[i % len(targets)]
                arr.reshape(-1)[i % arr.size] = junk[i % len(junk)]
                i += 1
                time.sleep(0)  # hands the GIL back at once: the call's return is not held up

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
    try:
        loss, grad = ctcbridge.ctc_loss_and_grad(acts, labels, *lengths, **kwargs)
    except (CTCError, MemoryError):
        return
    finally:
        if writer is not None:
            stop.set()
            writer.join()
    if grad.shape != acts.shape:
        raise AssertionError(f"gradient shape {grad.shape} for activations {acts.shape}")
    if kwargs["reduction"] == "none" and loss.shape != (N,):
        raise AssertionError(f"loss shape {loss.shape} for batch {N}")
    empty_mean = N == 0 and kwargs["reduction"] == "mean"  # NaN by definition
    if np.isfinite(acts.astype(np.float64)).all() and kwargs["inputs"] == "logits" \
            and not empty_mean:
        # finite logits: a loss is finite, +inf (no alignment) or 0 (zero_infinity)
        bad = np.isnan(np.asarray(loss, dtype=np.float64))
        if bad.any():
            raise AssertionError(f"NaN loss from finite logits: {loss}")


def main() -> None:
    atheris.Setup(sys.argv, one_call)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
