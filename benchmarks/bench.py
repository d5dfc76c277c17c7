"""Benchmark ctcbridge against torch and optax: loss + gradient, float32.

    python benchmarks/bench.py [--quick] [--rounds R] [--out docs/benchmarks.md]

For each thread count (1 and 2) a child process is pinned to that many cores
(os.sched_setaffinity, before any framework is imported, so XLA sizes its
pool to them; torch.set_num_threads matches; ctcbridge gets num_threads).
Inside it the three implementations run side by side on the same inputs,
workload by workload, interleaved over several rounds; each cell is the
median over all timed calls.  The parent prints the table and writes the
markdown report and its plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMPLS = ("ctcbridge", "torch", "optax")


def _inputs(w, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w["T"], w["N"], w["C"])).astype(np.float32)  # (T, N, C)
    labels = rng.integers(1, w["C"], size=(w["N"], w["L"])).astype(np.int32)
    return x, labels


def _make_runners(w, threads):
    """name -> (call, loss_sum) for one workload; each call does loss + gradient."""
    import numpy as np

    import ctcbridge

    x, labels = _inputs(w)
    T, N, C, L = w["T"], w["N"], w["C"], w["L"]
    runners = {}

    def run_ctcbridge():
        loss, grad = ctcbridge.ctc_loss_and_grad(x, labels, num_threads=threads)
        return float(loss.sum())

    runners["ctcbridge"] = run_ctcbridge

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    targets = torch.from_numpy(labels.astype(np.int64))
    in_len = torch.full((N,), T, dtype=torch.long)
    tgt_len = torch.full((N,), L, dtype=torch.long)

    def run_torch():
        xt.grad = None
        loss = F.ctc_loss(F.log_softmax(xt, -1), targets, in_len, tgt_len, reduction="sum",
                          blank=0)
        loss.backward()
        return float(loss.detach())

    runners["torch"] = run_torch

    import jax
    import jax.numpy as jnp
    import optax

    logits = jnp.asarray(x.transpose(1, 0, 2))  # optax is batch-major
    lab = jnp.asarray(labels)
    logit_pad = jnp.zeros((N, T), jnp.float32)
    label_pad = jnp.zeros((N, L), jnp.float32)
    fn = jax.jit(jax.value_and_grad(
        lambda lg: optax.ctc_loss(lg, logit_pad, lab, label_pad, blank_id=0).sum()))

    def run_optax():
        value, grad = fn(logits)
        grad.block_until_ready()
        return float(value)

    runners["optax"] = run_optax
    return runners


def _time(fn, min_calls, min_seconds):
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def child(threads: int, workloads, rounds: int, min_calls: int, min_seconds: float) -> dict:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
    out = {"threads": threads, "results": {}, "versions": {}}
    import jax
    import numpy
    import optax
    import torch

    import ctcbridge

    out["versions"] = {"ctcbridge": ctcbridge.__version__, "torch": torch.__version__,
                       "jax": jax.__version__, "optax": optax.__version__,
                       "numpy": numpy.__version__}
    for w in workloads:
        runners = _make_runners(w, threads)
        sums = {name: fn() for name, fn in runners.items()}  # warm-up / compile
        for fn in runners.values():
            fn()
        samples = {name: [] for name in runners}
        for _ in range(rounds):  # interleaved: every implementation sees the same machine state
            for name, fn in runners.items():
                samples[name] += _time(fn, min_calls, min_seconds / rounds)
        out["results"][w["name"]] = {
            "ms": {name: 1e3 * statistics.median(v) for name, v in samples.items()},
            "calls": {name: len(v) for name, v in samples.items()},
            "loss_sum": sums,
        }
        print(f"  [{threads} thread(s)] {w['name']} done", file=sys.stderr, flush=True)
    return out


def overhead_child(rounds: int, min_calls: int, min_seconds: float) -> dict:
    """Adapter loss + backward vs the raw engine call on the same arrays (1 thread)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    import jax
    import jax.numpy as jnp
    import numpy as np
    import tensorflow as tf
    import torch

    import ctcbridge
    import ctcbridge.keras as ck
    import ctcbridge.optax as co
    import ctcbridge.tensorflow as ctf
    import ctcbridge.torch as ct

    torch.set_num_threads(1)
    w = {"T": 150, "L": 40, "C": 28, "N": 32}
    x, labels = _inputs(w)
    T, N, L = w["T"], w["N"], w["L"]
    il, ll = np.full(N, T, np.int32), np.full(N, L, np.int32)
    lp = torch.from_numpy(x).log_softmax(-1).detach()
    lpn = lp.numpy()
    ntc = np.ascontiguousarray(x.transpose(1, 0, 2))
    labt, ilt, llt = (torch.from_numpy(a) for a in (labels, il, ll))
    leaf = lp.clone().requires_grad_()

    def torch_adapter():
        leaf.grad = None
        ct.ctc_loss(leaf, labt, ilt, llt, reduction="sum").backward()

    xj, pads, lj, lpads = jnp.asarray(ntc), jnp.zeros((N, T)), jnp.asarray(labels), jnp.zeros((N, L))
    vg = jax.value_and_grad(lambda z: co.ctc_loss(z, pads, lj, lpads).sum())
    vg_jit = jax.jit(vg)
    xv, xv_ntc = tf.Variable(x), tf.Variable(ntc)
    labtf, iltf, lltf = tf.constant(labels), tf.constant(il), tf.constant(ll)

    def tf_adapter(fn, var, *args):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(*args))
        tape.gradient(loss, var)

    pairs = {
        "torch.ctc_loss (torch, eager)": (
            torch_adapter,
            lambda: ctcbridge.ctc_loss_and_grad(lpn, labels, il, ll, inputs="log_probs",
                                                num_threads=1)),
        "optax.ctc_loss (jax, jit)": (
            lambda: jax.block_until_ready(vg_jit(xj)),
            lambda: ctcbridge.ctc_loss_and_grad(ntc, labels, il, ll, layout="NTC", num_threads=1)),
        "optax.ctc_loss (jax, eager)": (
            lambda: jax.block_until_ready(vg(xj)),
            lambda: ctcbridge.ctc_loss_and_grad(ntc, labels, il, ll, layout="NTC", num_threads=1)),
        "tensorflow.ctc_loss (tf, eager)": (
            lambda: tf_adapter(ctf.ctc_loss, xv, labtf, xv, lltf, iltf),
            lambda: ctcbridge.ctc_loss_and_grad(x, labels, il, ll, num_threads=1)),
        "keras.ctc_loss (tf, eager)": (
            lambda: tf_adapter(ck.ctc_loss, xv_ntc, labtf, xv_ntc, lltf, iltf),
            lambda: ctcbridge.ctc_loss_and_grad(ntc, labels, il, ll, layout="NTC", num_threads=1)),
    }
    out = {}
    for name, (adapter, raw) in pairs.items():
        for fn in (adapter, raw, adapter, raw):
            fn()
        a, r = [], []
        for _ in range(rounds):
            a += _time(adapter, min_calls, min_seconds / rounds)
            r += _time(raw, min_calls, min_seconds / rounds)
        out[name] = {"adapter_ms": 1e3 * statistics.median(a), "raw_ms": 1e3 * statistics.median(r)}
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _plot(workloads, runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), sharey=True)
    axes = [axes] if len(runs) == 1 else axes
    colors = {"ctcbridge": "#1b9e77", "torch": "#d95f02", "optax": "#7570b3"}
    names = [w["name"] for w in workloads]
    for ax, run in zip(axes, runs):
        width = 0.27
        for i, impl in enumerate(IMPLS):
            vals = [run["results"][n]["ms"][impl] for n in names]
            ax.bar([j + (i - 1) * width for j in range(len(names))], vals, width, label=impl,
                   color=colors[impl])
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_title(f"{run['threads']} thread(s)")
        ax.set_ylabel("ms per loss + gradient (median, log scale)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, two workloads")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--overhead-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    workloads = json.loads((HERE / "workloads.json").read_text())["workloads"]
    if args.quick:
        workloads = [w for w in workloads if w["name"] in ("small-single", "speech-batch")]
    min_calls, min_seconds = (3, 0.2) if args.quick else (5, 1.0)
    if args.child:
        print(json.dumps(child(args.child, workloads, args.rounds, min_calls, min_seconds)))
        return 0
    if args.overhead_child:
        print(json.dumps(overhead_child(args.rounds, min_calls, min_seconds)))
        return 0

    for mod in ("torch", "jax", "optax", "tensorflow", "matplotlib", "ctcbridge"):
        try:
            __import__(mod)
        except ImportError as exc:
            sys.exit(f"bench.py needs {mod}: {exc} (run `nox -s bench`, which installs them)")
    runs = []
    for k in (int(v) for v in args.threads.split(",")):
        cmd = [sys.executable, __file__, "--child", str(k), "--rounds", str(args.rounds)]
        if args.quick:
            cmd.append("--quick")
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        runs.append(json.loads(done.stdout))

    cmd = [sys.executable, __file__, "--overhead-child", "--rounds", str(args.rounds)]
    if args.quick:
        cmd.append("--quick")
    overhead = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                                         text=True).stdout)
    olines = ["| adapter (framework, mode) | adapter ms | raw engine ms | ratio | target ≤ 1.2 |",
              "|---|---|---|---|---|"]
    for name, o in overhead.items():
        ratio = o["adapter_ms"] / o["raw_ms"]
        olines.append(f"| {name} | {o['adapter_ms']:.3f} | {o['raw_ms']:.3f} | {ratio:.2f} | "
                      f"{'met' if ratio <= 1.2 else 'NOT met'} |")
    overhead_table = "\n".join(olines)
    print(overhead_table)

    rows = []
    bad_agreement = []
    for run in runs:
        for w in workloads:
            r = run["results"][w["name"]]
            ms = r["ms"]
            peer = min(ms["torch"], ms["optax"])
            fastest = "torch" if ms["torch"] <= ms["optax"] else "optax"
            ratio = ms["ctcbridge"] / peer
            sums = r["loss_sum"]
            agree = max(abs(sums[i] - sums["ctcbridge"]) / abs(sums["ctcbridge"])
                        for i in ("torch", "optax"))
            if agree > 1e-3:
                bad_agreement.append((w["name"], run["threads"], sums))
            rows.append((w, run["threads"], ms, fastest, ratio, agree))

    header = (f"| workload (T, L, C, N) | threads | ctcbridge ms | torch ms | optax ms | "
              f"ratio to fastest peer | target ≤ 0.5 | loss agreement |")
    lines = [header, "|" + "---|" * 8]
    for w, k, ms, fastest, ratio, agree in rows:
        lines.append(
            f"| {w['name']} ({w['T']}, {w['L']}, {w['C']}, {w['N']}) | {k} | "
            f"{ms['ctcbridge']:.3f} | {ms['torch']:.3f} | {ms['optax']:.3f} | "
            f"{ratio:.2f} (vs {fastest}) | {'met' if ratio <= 0.5 else 'NOT met'} | {agree:.1e} |")
    table = "\n".join(lines)
    print(table)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    _plot(workloads, runs, png)
    v = runs[0]["versions"]
    met = sum(r[4] <= 0.5 for r in rows)
    report = f"""# Benchmarks

Loss + gradient w.r.t. the activations, float32, CPU, on the shared workloads
(`benchmarks/workloads.json`: activations ~ N(0, 1), labels uniform in the
non-blank classes, every input length T, every label length L, blank 0).
Generated by `nox -s bench` (`python benchmarks/bench.py`); do not edit by hand.

- Machine: {_cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}
- Versions: ctcbridge {v['ctcbridge']}, torch {v['torch']}, jax {v['jax']}, optax {v['optax']}, numpy {v['numpy']}, Python {platform.python_version()}
- ctcbridge: `ctcbridge.ctc_loss_and_grad(x, labels, num_threads=k)` on (T, N, C) numpy arrays
  (includes the allocation of the gradient and the Python call).
- torch: `F.ctc_loss(F.log_softmax(x, -1), ..., reduction="sum")` forward and backward,
  `torch.set_num_threads(k)`.
- optax: `jax.jit(jax.value_and_grad(lambda z: optax.ctc_loss(z, ...).sum()))` on (N, T, C),
  compiled before timing, `block_until_ready`.
- Each thread count runs in its own process pinned to k cores with `sched_setaffinity`
  before any framework is imported (so XLA's pool has k threads too). Within it the
  three implementations are interleaved over {args.rounds} rounds; each cell is the
  median over all timed calls (at least {min_calls} calls and {min_seconds:g} s per cell).
- "loss agreement": worst relative difference of the summed loss between ctcbridge
  and each peer.
- Target (issue 2): ctcbridge at most 0.5x the faster peer on every workload at both
  thread counts: met on {met} of {len(rows)} cells.

{table}

![loss + gradient time per workload](benchmarks.png)

## Adapter overhead

Loss + backward through each signature adapter on its framework's arrays, against the
raw engine call (`ctcbridge.ctc_loss_and_grad`, numpy) on the same arrays in the same
convention (log-probabilities for torch, batch-major for optax and Keras), speech-batch
workload (T=150, L=40, C=28, N=32), 1 thread, same process, interleaved, medians.
Target (issue 3): at most 1.2x.

{overhead_table}
"""
    out.write_text(report)
    print(f"wrote {out} and {png}")
    if bad_agreement:
        print(f"loss disagreement beyond 1e-3: {bad_agreement}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
