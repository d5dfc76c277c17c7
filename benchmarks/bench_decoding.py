"""Benchmark ctcbridge's aligner and decoders against the natives, float32, CPU.

    python benchmarks/bench_decoding.py [--quick] [--rounds R] [--beam-width B] [--out FILE]

On the shared workloads (benchmarks/workloads.json), side by side in one
process per thread count (pinned to that many cores before any framework is
imported, as benchmarks/bench.py does):

- alignment: ``ctcbridge.forced_align`` (the batch in one call) against
  ``torchaudio.functional.forced_align`` (batch size 1: one call per sample),
  log-probabilities in, paths out;
- greedy: ``ctcbridge.decode_greedy`` and ``ctcbridge.tensorflow.ctc_greedy_decoder``
  (the signature, SparseTensor included) against ``tf.nn.ctc_greedy_decoder``;
- beam search: ``ctcbridge.decode_beam`` and ``ctcbridge.tensorflow.ctc_beam_search_decoder``
  against ``tf.nn.ctc_beam_search_decoder``, top path only.

Each cell is the median over the timed calls; the ratio is ours / native
(the target is <= 0.5).  Beam search on a large vocabulary (C >= 1000) takes
the first BEAM_LARGE_VOCAB_N samples only, on both sides: TF's decoder takes
about 8 s per sample of large-vocab there.  The parent prints the table and,
unless --quick, writes it into the "Speed" section of docs/decoding.md (between
its markers; --out to write elsewhere, --out - not to write).  Needs torch,
torchaudio and tensorflow (``nox -s bench_decoding``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import _inputs, _time  # noqa: E402  (the same inputs and timer as the loss's)

TASKS = ("align", "greedy", "beam")
BEAM_LARGE_VOCAB_N = 2
ROOT = HERE.parent
BEGIN, END = "<!-- bench_decoding:begin -->", "<!-- bench_decoding:end -->"


def _beam_batch(w) -> int:
    return min(w["N"], BEAM_LARGE_VOCAB_N) if w["C"] >= 1000 else w["N"]


def _runners(w, threads: int, beam_width: int) -> dict:
    """task -> {implementation: call} for one workload."""
    import numpy as np
    import tensorflow as tf
    import torch
    import torchaudio.functional as TAF

    import ctcbridge
    import ctcbridge.tensorflow as ctf

    x, labels = _inputs(w)  # (T, N, C) float32, (N, L) int32 in [1, C)
    T, N = w["T"], w["N"]
    lp = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - x.max(-1, keepdims=True)
    lp = lp.astype(np.float32)
    lp_ntc = np.ascontiguousarray(lp.transpose(1, 0, 2))
    lp_t = torch.from_numpy(lp_ntc)
    targets = torch.from_numpy(labels.astype(np.int32))
    seq_len = np.full(N, T, dtype=np.int32)
    x_tf = tf.constant(x)
    nb = _beam_batch(w)  # beam search's batch
    x_beam = np.ascontiguousarray(x[:, :nb])
    x_beam_tf, len_beam = tf.constant(x_beam), seq_len[:nb]

    def align_ours():
        return ctcbridge.forced_align(lp, labels, inputs="log_probs", num_threads=threads).path

    def align_torchaudio():
        return [TAF.forced_align(lp_t[n:n + 1], targets[n:n + 1], blank=0)[0] for n in range(N)]

    def greedy_ours():
        return ctcbridge.decode_greedy(x, seq_len, blank=w["C"] - 1, inputs="log_probs",
                                       num_threads=threads).sequences

    def greedy_signature():
        return ctf.ctc_greedy_decoder(x_tf, seq_len)[0][0].values.numpy()

    def greedy_tf():
        return tf.nn.ctc_greedy_decoder(x_tf, seq_len)[0][0].values.numpy()

    def beam_ours():
        return ctcbridge.decode_beam(x_beam, len_beam, beam_width=beam_width, blank=w["C"] - 1,
                                     num_threads=threads).sequences

    def beam_signature():
        return ctf.ctc_beam_search_decoder(x_beam_tf, len_beam,
                                           beam_width)[0][0].values.numpy()

    def beam_tf():
        return tf.nn.ctc_beam_search_decoder(x_beam_tf, len_beam,
                                             beam_width)[0][0].values.numpy()

    return {
        "align": {"ctcbridge": align_ours, "native": align_torchaudio},
        "greedy": {"ctcbridge": greedy_ours, "signature": greedy_signature, "native": greedy_tf},
        "beam": {"ctcbridge": beam_ours, "signature": beam_signature, "native": beam_tf},
    }


def child(threads: int, workloads, tasks, rounds: int, min_calls: int, min_seconds: float,
          beam_width: int) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import tensorflow as tf
    import torch
    import torchaudio

    import ctcbridge

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    torch.set_num_threads(threads)
    out = {"threads": threads, "results": {},
           "versions": {"ctcbridge": ctcbridge.__version__, "torch": torch.__version__,
                        "torchaudio": torchaudio.__version__, "tensorflow": tf.__version__}}
    for w in workloads:
        runners = _runners(w, threads, beam_width)
        for task in tasks:
            impls = runners[task]
            for fn in impls.values():  # warm-up
                fn()
            samples = {name: [] for name in impls}
            for _ in range(rounds):
                for name, fn in impls.items():
                    samples[name] += _time(fn, min_calls, min_seconds / rounds)
            key = f"{w['name']}/{task}"
            if task == "beam" and _beam_batch(w) != w["N"]:
                key += f" (N={_beam_batch(w)})"
            out["results"][key] = {
                name: 1e3 * statistics.median(v) for name, v in samples.items()}
            print(f"  [{threads} thread(s)] {w['name']} {task} done", file=sys.stderr,
                  flush=True)
    return out


def _table(runs) -> str:
    lines = ["| workload / task | threads | ctcbridge ms | signature ms | native ms | "
             "ctcbridge / native | <= 0.5 |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        for key, ms in run["results"].items():
            sig = f"{ms['signature']:.3f}" if "signature" in ms else "-"
            ratio = ms["ctcbridge"] / ms["native"]
            lines.append(f"| {key} | {run['threads']} | {ms['ctcbridge']:.3f} | {sig} | "
                         f"{ms['native']:.3f} | {ratio:.2f} | {'yes' if ratio <= 0.5 else 'no'} |")
    return "\n".join(lines)


def _write(page: Path, header: str, table: str) -> None:
    """Replace the text between the page's markers with the new measurements."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    body = (f"\n_Generated by `nox -s bench_decoding` "
            f"(`benchmarks/bench_decoding.py`); {header}._\n\n{table}\n")
    page.write_text(head + BEGIN + body + END + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two workloads, fewer repetitions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beam-width", type=int, default=16)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workloads", nargs="+", help="names from workloads.json")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--out", help="the page whose Speed section gets the table (default: "
                    "docs/decoding.md unless --quick; '-' writes nothing)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    workloads = json.loads((HERE / "workloads.json").read_text())["workloads"]
    if args.workloads:
        workloads = [w for w in workloads if w["name"] in args.workloads]
    elif args.quick:
        workloads = [w for w in workloads if w["name"] in ("small-single", "speech-batch")]
    min_calls, min_seconds = (3, 0.5) if args.quick else (5, 2.0)
    if args.child is not None:
        print(json.dumps(child(args.child, workloads, args.tasks, args.rounds, min_calls,
                               min_seconds, args.beam_width)))
        return 0
    runs = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--child", str(threads), "--rounds", str(args.rounds),
               "--beam-width", str(args.beam_width), "--tasks", *args.tasks,
               "--workloads", *[w["name"] for w in workloads]]
        if args.quick:
            cmd.append("--quick")
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    table = _table(runs)
    header = (f"versions: {runs[0]['versions']}; beam width {args.beam_width}; float32, CPU; "
              f"{os.cpu_count()} cores seen")
    print(header)
    print(table)
    out = args.out or ("-" if args.quick else str(ROOT / "docs" / "decoding.md"))
    if out != "-":
        _write(Path(out), header, table)
        print(f"wrote the Speed section of {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
