"""The aligners and decoders as rows of ``ctcbridge conform``.

Each :class:`DecoderRow` converts a corpus case into one aligner's or
decoder's conventions (torchaudio's batch of one, TF's blank C - 1, Keras's
batch-major inputs...), calls it (ours, or with ``native=True`` the
framework's own) on one framework's arrays, and compares its paths or label
sequences (exactly) and scores (relative error, :data:`SCORE_TOLERANCE`) with
a float64 reference written here in plain numpy, independently of the
engine: the Viterbi recursion with torchaudio's tie rule, best-path decoding,
and the prefix beam search with ctcbridge's documented order (score, then the
label sequences in lexicographic order).

The cases are the corpus's finite ones (a decoder of NaN inputs has nothing
to agree on), in float32 (the reference reads the same float32 values), and
for beam search small enough for the Python reference.  Where the native
departs (TF's beam pruning, ...) its cell fails and
``ctcbridge conform --divergences`` names the reason.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._numerics import log_softmax, required_frames
from .compare import Result, _failure, sample_text
from .corpus import Case

# Worst relative score error allowed (float32 inputs; the natives sum in float32).
SCORE_TOLERANCE = 1e-4
BEAM_WIDTH = 8
# The Python beam-search reference visits T x beam x C cells per sample.
_BEAM_CELLS = 400_000


@dataclass
class Decoding:
    """A case in a row's conventions and the reference's outputs: ``sequences``
    (N, K, T) int64 padded with -1 (a path, or label sequences) and ``scores``
    (N, K) or (N, T) float64."""

    args: dict  # the call's arguments, numpy (converted to the framework's arrays)
    sequences: np.ndarray
    scores: np.ndarray


@dataclass
class DecoderRow:
    name: str  # "torchaudio.forced_align", ...
    ours_spec: str  # "module:attr" of ours
    native: str  # "module:attr" of the native
    frameworks: tuple  # the arrays ours runs on
    native_frameworks: tuple
    prepare: Callable[[Case], Decoding | None]  # None: the case does not apply
    outputs: Callable  # (the call's result, Decoding) -> (sequences, scores), numpy
    requires: tuple = ()  # modules a row needs whichever side runs

    def available(self) -> bool:
        from importlib.util import find_spec

        return all(find_spec(m) is not None for m in self.requires)

    def function(self, native: bool) -> Callable:
        mod, attr = (self.native if native else self.ours_spec).split(":")
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


# ------------------------------------------------------------------ references


def viterbi_reference(lp: np.ndarray, labels, blank: int):
    """The best path of (T, C) log-probabilities through the lattice of `labels`:
    (classes (T,), frame scores (T,)); ties as torchaudio breaks them (stay, then
    s-1, then s-2, a later one only when strictly better; the last label over the
    final blank unless the blank is strictly better)."""
    T = lp.shape[0]
    ext = [blank]
    for k in labels:
        ext += [int(k), blank]
    S = len(ext)
    NEG = -np.inf
    # the cells on a complete path (the engine's window)
    first = [0] * S
    for s in range(2, S):
        first[s] = first[s - 1] + 1
        if s % 2 and ext[s] != ext[s - 2] and first[s - 2] + 1 < first[s]:
            first[s] = first[s - 2] + 1
    dist = [0] * S
    for s in range(S - 3, -1, -1):
        dist[s] = dist[s + 1] + 1
        if (s + 2) % 2 and ext[s + 2] != ext[s] and dist[s + 2] + 1 < dist[s]:
            dist[s] = dist[s + 2] + 1

    def valid(t, s):
        return 0 <= s < S and first[s] <= t <= T - 1 - dist[s]

    v = np.array([lp[0, ext[s]] if valid(0, s) else NEG for s in range(S)])
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        nv = np.full(S, NEG)
        for s in range(S):
            if not valid(t, s):
                continue
            cands = [(0, s), (1, s - 1)] + ([(2, s - 2)] if s % 2 and s >= 2 and
                                            ext[s] != ext[s - 2] else [])
            best, frm = None, 0
            for k, p in cands:
                if valid(t - 1, p) and (best is None or v[p] > best):
                    best, frm = v[p], k
            nv[s] = best + lp[t, ext[s]]
            back[t, s] = frm
        v = nv
    s = S - 1
    if S > 1 and valid(T - 1, S - 2) and not (valid(T - 1, S - 1) and v[S - 1] > v[S - 2]):
        s = S - 2
    path = np.zeros(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = ext[s]
        s -= back[t, s]
    return path, lp[np.arange(T), path]


def _collapse(seq, blank, merge=True) -> list:
    out, prev = [], None
    for k in seq:
        k = int(k)
        if k != blank and not (merge and k == prev):
            out.append(k)
        prev = k
    return out


def greedy_reference(x: np.ndarray, blank: int, merge: bool):
    """Best path of (T, C) activations: (labels, the sum of the frames' maxima)."""
    if x.shape[0] == 0:
        return [], 0.0
    return _collapse(np.argmax(x, axis=1), blank, merge), float(x.max(axis=1).sum())


def _log_add(a: float, b: float) -> float:
    return float(np.logaddexp(a, b))


def beam_reference(lp: np.ndarray, blank: int, beam_width: int, top_paths: int) -> list:
    """Prefix beam search over (T, C) log-probabilities: the `top_paths` best
    (labels tuple, log-probability) of the final beam, ordered by score, then the
    label sequences in lexicographic order; probability-0 prefixes are dropped."""
    NEG = -np.inf
    beam = {(): (0.0, NEG)}  # prefix -> (log P ending in blank, log P ending in a label)
    for t in range(lp.shape[0]):
        y = lp[t]
        nxt: dict = {}

        def add(prefix, pb, pnb):
            ob, onb = nxt.get(prefix, (NEG, NEG))
            nxt[prefix] = (_log_add(ob, pb), _log_add(onb, pnb))

        for prefix, (pb, pnb) in beam.items():
            total = _log_add(pb, pnb)
            add(prefix, total + y[blank], pnb + y[prefix[-1]] if prefix else NEG)
            for c in range(lp.shape[1]):
                if c == blank:
                    continue
                base = pb if prefix and c == prefix[-1] else total
                add(prefix + (c,), NEG, base + y[c])
        ranked = sorted(((p, s) for p, s in nxt.items() if _log_add(*s) > NEG),
                        key=lambda item: (-_log_add(*item[1]), item[0]))
        beam = dict(ranked[:beam_width])
    ranked = sorted(beam.items(), key=lambda item: (-_log_add(*item[1]), item[0]))
    return [(p, _log_add(*s)) for p, s in ranked[:top_paths]]


# ------------------------------------------------------------------ preparation


def _finite(case: Case) -> bool:
    return bool(np.isfinite(case.activations).all())


def _f32(case: Case) -> np.ndarray:
    """The case's activations as float32, and as the float64 values of those."""
    return case.activations.astype(np.float32)


def _blank_last(x: np.ndarray, blank: int) -> np.ndarray:
    C = x.shape[2]
    order = [c for c in range(C) if c != blank] + [blank]
    return np.ascontiguousarray(x[:, :, order])


def _padded(seqs: list, T: int) -> np.ndarray:
    """(N, K, T) int64, -1 past each sequence, from N lists of K sequences."""
    out = np.full((len(seqs), max((len(s) for s in seqs), default=1), T), -1, np.int64)
    for n, paths in enumerate(seqs):
        for k, seq in enumerate(paths):
            out[n, k, : len(seq)] = seq
    return out


def _align_samples(case: Case) -> list:
    """The samples torchaudio can align: labels without the blank, at least one,
    enough frames."""
    out = []
    for n in range(case.shape[1]):
        lab = case.labels[n, : case.label_lengths[n]]
        if lab.size and (lab != case.blank).all() and \
                required_frames(lab) <= case.input_lengths[n]:
            out.append(n)
    return out


def _prep_align(case: Case) -> Decoding | None:
    if not _finite(case):
        return None
    samples = _align_samples(case)
    if not samples:
        return None
    x = _f32(case)
    lps, targets, paths, scores = [], [], [], []
    T = case.shape[0]
    frame_scores = np.zeros((len(samples), T))
    for i, n in enumerate(samples):
        Tn = int(case.input_lengths[n])
        lp = x[:Tn, n] if case.inputs == "log_probs" else \
            log_softmax(x[:Tn, n].astype(np.float64)).astype(np.float32)
        lab = case.labels[n, : case.label_lengths[n]]
        path, sc = viterbi_reference(lp.astype(np.float64), lab, case.blank)
        lps.append(lp[None])
        targets.append(lab[None].astype(np.int32))
        paths.append([path.tolist()])
        frame_scores[i, :Tn] = sc
    return Decoding(dict(log_probs=lps, targets=targets, blank=case.blank),
                    _padded(paths, T), frame_scores)


def _run_align(fn, dec: Decoding, to_fw):
    """One call per sample (torchaudio's batch of one)."""
    T = dec.sequences.shape[2]
    paths, scores = [], np.zeros(dec.scores.shape)
    for i, (lp, tg) in enumerate(zip(dec.args["log_probs"], dec.args["targets"])):
        ali, sc = fn(to_fw(lp), to_fw(tg), blank=dec.args["blank"])
        ali, sc = _numpy(ali)[0], _numpy(sc)[0]
        paths.append([ali.tolist()])
        scores[i, : sc.size] = sc
    return _padded(paths, T), scores


def _prep_merge(case: Case) -> Decoding | None:
    """merge_tokens on the reference's alignment of each alignable sample: the
    spans as (token, start, end) rows, their scores."""
    dec = _prep_align(case)
    if dec is None:
        return None
    tokens, scores = [], []
    spans_rows, span_scores = [], []
    for i in range(dec.sequences.shape[0]):
        T = int(np.count_nonzero(dec.sequences[i, 0] >= 0))
        path, sc = dec.sequences[i, 0, :T], dec.scores[i, :T].astype(np.float32)
        tokens.append(path.astype(np.int32))
        scores.append(sc)
        rows, vals, start = [], [], 0
        for t in range(1, T + 1):
            if t == T or path[t] != path[start]:
                if path[start] != case.blank:
                    rows += [int(path[start]), start, t]
                    vals.append(float(sc[start:t].astype(np.float64).mean()))
                start = t
        spans_rows.append([rows])
        span_scores.append(vals)
    width = max(len(v) for v in span_scores)
    out_scores = np.full((len(span_scores), max(width, 1)), np.nan)
    for i, v in enumerate(span_scores):
        out_scores[i, : len(v)] = v
    return Decoding(dict(tokens=tokens, scores=scores, blank=case.blank),
                    _padded(spans_rows, 3 * max(width, 1)), out_scores)


def _run_merge(fn, dec: Decoding, to_fw):
    rows, scores = [], np.full(dec.scores.shape, np.nan)
    for i, (tk, sc) in enumerate(zip(dec.args["tokens"], dec.args["scores"])):
        spans = fn(to_fw(tk), to_fw(sc), blank=dec.args["blank"])
        flat = []
        for j, span in enumerate(spans):
            flat += [int(span.token), int(span.start), int(span.end)]
            if j < scores.shape[1]:
                scores[i, j] = float(span.score)
        rows.append([flat])
    return _padded(rows, dec.sequences.shape[2]), scores


def _greedy_prep(merge: bool, keras_layout: bool):
    def prep(case: Case) -> Decoding | None:
        if not _finite(case):
            return None
        x = _f32(case)
        T, N, _ = x.shape
        seqs, scores = [], np.zeros((N, 1))
        for n in range(N):
            Tn = int(case.input_lengths[n])
            seq, s = greedy_reference(x[:Tn, n].astype(np.float64), case.blank, merge)
            seqs.append([seq])
            scores[n, 0] = -s  # TF's neg_sum_logits (Keras returns TF's)
        lengths = case.input_lengths.astype(np.int32)
        if keras_layout:
            args = dict(inputs=np.ascontiguousarray(x.transpose(1, 0, 2)),
                        sequence_lengths=lengths, strategy="greedy",
                        merge_repeated=merge, mask_index=case.blank)
        else:
            args = dict(inputs=x, sequence_length=lengths, merge_repeated=merge,
                        blank_index=case.blank)
        return Decoding(args, _padded(seqs, T), scores)
    return prep


def _beam_size_ok(case: Case) -> bool:
    T, N, C = case.shape
    return _finite(case) and T * N * C * BEAM_WIDTH <= _BEAM_CELLS


def _top_paths(case: Case) -> int:
    # TF raises when the beam holds fewer label sequences than top_paths: any
    # sample with a frame and 3 classes holds at least 2
    return 2 if case.shape[2] >= 3 and (case.input_lengths >= 1).all() else 1


def _beam_prep(merge: bool, keras_layout: bool):
    def prep(case: Case) -> Decoding | None:
        if not _beam_size_ok(case):
            return None
        x = _f32(case)
        blank = case.blank
        if not keras_layout:  # TF's beam decoders: blank C - 1
            x, blank = _blank_last(x, case.blank), case.shape[2] - 1
        K = _top_paths(case)
        T, N, _ = x.shape
        seqs, scores = [], np.full((N, K), -np.inf)
        for n in range(N):
            Tn = int(case.input_lengths[n])
            lp = log_softmax(x[:Tn, n].astype(np.float64)) if Tn else x[:0, n]
            found = beam_reference(lp, blank, BEAM_WIDTH, K)
            seqs.append([_collapse(p, -1, True) if merge else list(p) for p, _ in found])
            scores[n, : len(found)] = [s for _, s in found]
        lengths = case.input_lengths.astype(np.int32)
        if keras_layout:
            args = dict(inputs=np.ascontiguousarray(x.transpose(1, 0, 2)),
                        sequence_lengths=lengths, strategy="beam_search",
                        beam_width=BEAM_WIDTH, top_paths=K, mask_index=blank)
        else:
            args = dict(inputs=x, sequence_length=lengths, beam_width=BEAM_WIDTH, top_paths=K)
            if merge:
                args["merge_repeated"] = True
        return Decoding(args, _padded(seqs, T), scores)
    return prep


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "numpy"):
        return np.asarray(a.numpy())
    return np.asarray(a)


def _sparse_dense(sp, T: int) -> np.ndarray:
    """A tf.SparseTensor of label sequences as (N, T) int64 padded with -1."""
    idx, vals = _numpy(sp.indices), _numpy(sp.values)
    out = np.full((int(_numpy(sp.dense_shape)[0]), T), -1, np.int64)
    out[idx[:, 0], idx[:, 1]] = vals
    return out


def _run_tf(fn, dec: Decoding, to_fw):
    args = {k: (to_fw(v) if isinstance(v, np.ndarray) else v) for k, v in dec.args.items()}
    decoded, scores = fn(**args)
    T = dec.sequences.shape[2]
    seqs = np.stack([_sparse_dense(d, T) for d in decoded], axis=1)
    return seqs, _numpy(scores).astype(np.float64)


def _run_keras(fn, dec: Decoding, to_fw):
    args = {k: (to_fw(v) if isinstance(v, np.ndarray) else v) for k, v in dec.args.items()}
    decoded, scores = fn(**args)
    seqs = _numpy(decoded).astype(np.int64).transpose(1, 0, 2)  # (K, N, T) -> (N, K, T)
    return seqs, _numpy(scores).astype(np.float64)


def _tf_greedy_native(merge: bool) -> str:
    return "tensorflow:compat.v1.nn.ctc_greedy_decoder" if not merge else \
        "tensorflow:nn.ctc_greedy_decoder"


TF = ("numpy", "tensorflow")
ROWS = [
    DecoderRow("torchaudio.forced_align", "ctcbridge.torchaudio:forced_align",
               "torchaudio.functional:forced_align", ("numpy", "torch"), ("torch",),
               _prep_align, _run_align),
    DecoderRow("torchaudio.merge_tokens", "ctcbridge.torchaudio:merge_tokens",
               "torchaudio.functional:merge_tokens", ("numpy", "torch"), ("torch",),
               _prep_merge, _run_merge),
    DecoderRow("tensorflow.ctc_greedy_decoder", "ctcbridge.tensorflow:ctc_greedy_decoder",
               _tf_greedy_native(True), TF, ("tensorflow",), _greedy_prep(True, False), _run_tf,
               requires=("tensorflow",)),
    DecoderRow("tensorflow.ctc_greedy_decoder (merge_repeated=False)",
               "ctcbridge.tensorflow:ctc_greedy_decoder", _tf_greedy_native(False), TF,
               ("tensorflow",), _greedy_prep(False, False), _run_tf, requires=("tensorflow",)),
    DecoderRow("tensorflow.ctc_beam_search_decoder", "ctcbridge.tensorflow:ctc_beam_search_decoder",
               "tensorflow:nn.ctc_beam_search_decoder", TF, ("tensorflow",),
               _beam_prep(False, False), _run_tf, requires=("tensorflow",)),
    DecoderRow("tensorflow.ctc_beam_search_decoder_v1 (merge_repeated=True)",
               "ctcbridge.tensorflow:ctc_beam_search_decoder_v1",
               "tensorflow:compat.v1.nn.ctc_beam_search_decoder", TF, ("tensorflow",),
               _beam_prep(True, False), _run_tf, requires=("tensorflow",)),
    DecoderRow("keras.ctc_decode (greedy)", "ctcbridge.keras:ctc_decode", "keras:ops.ctc_decode",
               TF, ("tensorflow",), _greedy_prep(True, True), _run_keras, requires=("keras",)),
    DecoderRow("keras.ctc_decode (beam_search)", "ctcbridge.keras:ctc_decode",
               "keras:ops.ctc_decode", TF, ("tensorflow",), _beam_prep(False, True), _run_keras,
               requires=("keras",)),
]


# ------------------------------------------------------------------ comparison


def _to_framework(fw: str) -> Callable:
    if fw == "torch":
        import torch

        return lambda a: torch.from_numpy(np.ascontiguousarray(a))
    if fw == "tensorflow":
        import tensorflow as tf

        return tf.constant
    return lambda a: a


def check_decoder(row: DecoderRow, case: Case, fw: str, native: bool = False,
                  cache: dict | None = None) -> Result | None:
    """One aligner or decoder (ours, or the native) on `fw` arrays against the
    reference; None when the case does not apply."""
    key = (row.name, case.name)
    if cache is not None and key in cache:
        dec = cache[key]
    else:
        with np.errstate(all="ignore"):
            dec = row.prepare(case)
        if cache is not None:
            cache[key] = dec
    if dec is None:
        return None
    label = f"{'native ' if native else ''}{row.name} [{fw}]"
    try:
        seqs, scores = row.outputs(row.function(native), dec, _to_framework(fw))
    except Exception as exc:  # a native that rejects the case: a failed cell
        return _failure(case, label, exc)
    details = []
    if seqs.shape != dec.sequences.shape or (seqs != dec.sequences).any():
        bad = [n for n in range(dec.sequences.shape[0]) if seqs.shape[1:] !=
               dec.sequences.shape[1:] or (seqs[n] != dec.sequences[n]).any()] \
            if seqs.shape[0] == dec.sequences.shape[0] else []
        details.append(f"paths differ ({seqs.shape} vs the reference's "
                       f"{dec.sequences.shape}) in {len(bad) or 'all'} sample(s)")
        for n in bad[:2]:
            details.append(f"  row {n}: {_shown(seqs[n])}, reference {_shown(dec.sequences[n])}")
        return Result(case.name, label, float("inf"), None, False, details=details)
    ref = dec.scores
    same = (scores == ref) | (np.isnan(scores) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(scores - ref) / np.maximum(np.abs(ref), 1.0))
    err = np.where(np.isnan(err), np.inf, err)
    worst = float(err.max(initial=0.0))
    if worst > SCORE_TOLERANCE:
        idx = np.unravel_index(int(np.argmax(err)), err.shape)
        details.append(f"scores: worst at {tuple(map(int, idx))}: {scores[idx]:.9g}, "
                       f"reference {ref[idx]:.9g}")
    return Result(case.name, label, worst, None, worst <= SCORE_TOLERANCE, details=details)


def _shown(seqs: np.ndarray) -> str:
    return str([s[s >= 0].tolist()[:16] for s in seqs])


def decoder_plan(rows, frameworks: list[str], native: bool = False) -> list[tuple]:
    rows = [row for row in rows if row.available()]
    plan = [(row, False) for row in rows] + ([(row, True) for row in rows] if native else [])
    return [(row, is_native, fw) for row, is_native in plan for fw in frameworks
            if fw in (row.native_frameworks if is_native else row.frameworks)]


def run_decoder_matrix(cases: list[Case], frameworks: list[str], native: bool = False,
                       progress: Callable[[str], None] | None = None, rows=None) -> list[dict]:
    """The decoder rows as matrix rows (the format of
    :func:`ctcbridge.conform.compare.run_matrix`): the cells' ``loss_error`` is the
    worst relative score error (inf where a path differs), ``grad_error`` None."""
    rows = ROWS if rows is None else rows
    plan = decoder_plan(rows, frameworks, native)
    matrix: dict = {}
    cache: dict = {}
    for row, is_native, fw in plan:
        name = ("native " if is_native else "") + row.name
        entry = matrix.setdefault(name, dict(signature=name, native=is_native, cells={}))
        start = time.perf_counter()
        results = []
        for i, case in enumerate(cases):
            if progress is not None:
                progress(f"{name} on {fw}: [{i + 1}/{len(cases)}] {case.name}")
            r = check_decoder(row, case, fw, is_native, cache)
            if r is not None:
                results.append(r)
        entry["cells"][fw] = dict(
            passed=all(r.passed for r in results),
            loss_error=max((r.loss_error for r in results), default=0.0), grad_error=None,
            cases=len(results), failed_cases=[r.case for r in results if not r.passed],
            not_run=[], seconds=round(time.perf_counter() - start, 3),
            results=[r.__dict__ for r in results])
    return list(matrix.values())


__all__ = ["DecoderRow", "ROWS", "check_decoder", "run_decoder_matrix", "decoder_plan",
           "viterbi_reference", "greedy_reference", "beam_reference", "SCORE_TOLERANCE",
           "sample_text"]
