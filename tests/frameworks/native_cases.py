"""Random batches for comparisons with native CTC implementations.

Shapes T 1..400, C 2..500, N 1..16 (biased small so hundreds of cases stay
fast), variable lengths, repeats, empty labels, infeasible samples and
extreme logits (x30).  Every case is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctcbridge._numerics import required_frames


@dataclass
class NativeCase:
    seed: int
    logits: np.ndarray  # (T, N, C) float64
    labels: np.ndarray  # (N, S) padded with `pad`
    input_lengths: np.ndarray
    label_lengths: np.ndarray
    blank: int

    @property
    def T(self):
        return self.logits.shape[0]

    @property
    def N(self):
        return self.logits.shape[1]

    @property
    def C(self):
        return self.logits.shape[2]

    def infeasible(self) -> np.ndarray:
        return np.array([required_frames(self.labels[n, : self.label_lengths[n]])
                         > self.input_lengths[n] for n in range(self.N)])


# Fixed shapes (T, N, C, S) for natives that compile per shape (XLA): the
# lengths, labels and values still vary case by case.
BUCKETS = [(12, 3, 5, 6), (40, 4, 9, 15), (60, 2, 30, 25), (150, 8, 28, 40),
           (300, 3, 200, 60), (400, 2, 500, 30)]


def make_case(seed: int, *, blank: str = "zero", allow_infeasible: bool = True,
              min_label: int = 0, bucketed: bool = False) -> NativeCase:
    rng = np.random.default_rng(seed)
    big = seed % 10 == 0
    T = int(rng.integers(1, 400 if big else 60))
    C = int(rng.integers(2, 500 if big else 30))
    N = int(rng.integers(1, 17 if big else 6))
    if bucketed:
        T, N, C, S_fixed = BUCKETS[seed % len(BUCKETS)]
    b = {"zero": 0, "last": C - 1, "any": int(rng.integers(0, C))}[blank]
    non_blank = np.array([c for c in range(C) if c != b])
    scale = 30.0 if seed % 7 == 3 else float(rng.choice([0.5, 1.0, 3.0]))
    logits = rng.standard_normal((T, N, C)) * scale
    input_lengths = rng.integers(max(1, T // 2), T + 1, size=N) if seed % 3 else np.full(N, T)
    S = S_fixed if bucketed else int(rng.integers(min_label, max(min_label, T // 2) + 2))
    labels = np.full((N, S), b, dtype=np.int64)
    label_lengths = np.zeros(N, dtype=np.int64)
    for n in range(N):
        L = int(rng.integers(min_label, S + 1))
        seq = rng.choice(non_blank, size=L)
        rep = rng.random(L) < 0.25
        for i in range(1, L):
            if rep[i]:
                seq[i] = seq[i - 1]
        if not (allow_infeasible and rng.random() < 0.1):
            while seq.size > min_label and required_frames(seq) > input_lengths[n]:
                seq = seq[:-1]
        labels[n, : seq.size] = seq
        label_lengths[n] = seq.size
    return NativeCase(seed, logits, labels, input_lengths.astype(np.int64), label_lengths, b)


def close(ours, native, rtol, atol):
    """Equal infinities and NaNs, finite values within tolerance."""
    ours = np.asarray(ours, dtype=np.float64)
    native = np.asarray(native, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(native))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(native))
    fin = np.isfinite(native)
    np.testing.assert_allclose(ours[fin], native[fin], rtol=rtol, atol=atol)
