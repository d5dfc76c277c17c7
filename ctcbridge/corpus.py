"""Seeded CTC test cases: the built-in corpus of ``ctcbridge conform`` and the
generator the tests draw from.

A :class:`Case` is one batch in the canonical form: float64 activations
(T, N, C), padded labels (N, S) with per-sample lengths, input lengths, the
blank index and the input kind.  Cases are generated from fixed seeds, so the
same name always means the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """One batch in canonical (time-major, padded) form."""

    name: str
    activations: np.ndarray  # (T, N, C) float64
    labels: np.ndarray  # (N, S) int64, padded with the blank
    input_lengths: np.ndarray  # (N,) int64
    label_lengths: np.ndarray  # (N,) int64
    blank: int = 0
    inputs: str = "logits"  # or "log_probs"
    tags: tuple = field(default=())

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.activations.shape  # type: ignore[return-value]

    def kwargs(self) -> dict:
        """Arguments of ``ctcbridge.ctc_loss`` / ``reference.ctc_loss`` for this case."""
        return dict(
            input_lengths=self.input_lengths,
            label_lengths=self.label_lengths,
            blank=self.blank,
            inputs=self.inputs,
        )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def required_frames(label: np.ndarray) -> int:
    """Frames the shortest alignment needs: L plus one per repeat."""
    label = np.asarray(label)
    return int(label.size + np.count_nonzero(label[1:] == label[:-1]))


def random_case(
    rng: np.random.Generator,
    name: str,
    T: int,
    N: int,
    C: int,
    max_label: int,
    *,
    blank: int | None = 0,
    inputs: str = "logits",
    scale: float = 1.0,
    repeat_prob: float = 0.2,
    feasible: bool | None = True,
    min_input: int | None = None,
    tags: tuple = (),
) -> Case:
    """A random batch.

    Labels avoid the blank, with consecutive repeats drawn with
    ``repeat_prob``.  ``feasible=True`` shortens labels until they fit their
    input length, ``False`` makes every sample infeasible, ``None`` leaves
    it to chance.  ``blank=None`` draws the blank position.
    """
    if blank is None:
        blank = int(rng.integers(0, C))
    non_blank = np.array([c for c in range(C) if c != blank])
    lo = T if min_input is None else min_input
    input_lengths = rng.integers(lo, T + 1, size=N) if lo < T else np.full(N, T)
    S = max(max_label, 0)
    labels = np.full((N, S), blank, dtype=np.int64)
    label_lengths = np.zeros(N, dtype=np.int64)
    for n in range(N):
        L = int(rng.integers(0, S + 1)) if S else 0
        seq = []
        for i in range(L):
            if seq and non_blank.size and rng.random() < repeat_prob:
                seq.append(seq[-1])
            elif non_blank.size:
                seq.append(int(rng.choice(non_blank)))
        seq = np.array(seq, dtype=np.int64)
        if feasible:
            while seq.size and required_frames(seq) > input_lengths[n]:
                seq = seq[:-1]
        elif feasible is False:
            if not seq.size and non_blank.size:
                seq = np.array([int(rng.choice(non_blank))], dtype=np.int64)
            # one or two frames short of the shortest alignment
            short = required_frames(seq) - 1 - int(rng.integers(0, 2))
            input_lengths[n] = min(max(short, 0), T)
        labels[n, : seq.size] = seq
        label_lengths[n] = seq.size
    x = rng.standard_normal((T, N, C)) * scale
    if inputs == "log_probs":
        x = _log_softmax(x)
    return Case(name, x, labels, input_lengths.astype(np.int64), label_lengths, blank, inputs,
                tags)


def builtin_cases() -> list[Case]:
    """The corpus ``ctcbridge conform`` runs: every behaviour the engine defines."""
    rng = np.random.default_rng(20261122)
    cases = []
    add = cases.append
    for i in range(6):
        add(random_case(rng, f"random-{i}", int(rng.integers(1, 60)), int(rng.integers(1, 6)),
                        int(rng.integers(2, 30)), int(rng.integers(0, 12)), min_input=0,
                        tags=("random",)))
    add(random_case(rng, "blank-middle", 30, 4, 9, 8, blank=4, tags=("blank",)))
    add(random_case(rng, "blank-last", 30, 4, 9, 8, blank=8, tags=("blank",)))
    add(random_case(rng, "repeats", 40, 4, 5, 15, repeat_prob=0.7, tags=("repeats",)))
    add(random_case(rng, "log-probs", 30, 4, 8, 8, inputs="log_probs", tags=("inputs",)))
    add(random_case(rng, "log-probs-blank-last", 30, 3, 8, 8, blank=7, inputs="log_probs",
                    tags=("inputs", "blank")))
    # the feasibility boundary: T exactly L + repeats
    b = random_case(rng, "boundary", 12, 3, 6, 10, repeat_prob=0.4, tags=("boundary",))
    b.input_lengths = np.array(
        [max(required_frames(b.labels[n, : b.label_lengths[n]]), 1) for n in range(3)],
        dtype=np.int64,
    )
    add(b)
    add(random_case(rng, "infeasible", 8, 4, 6, 12, feasible=False, tags=("infeasible",)))
    e = random_case(rng, "empty-labels", 15, 3, 5, 0, tags=("empty",))
    add(e)
    z = random_case(rng, "zero-length", 10, 4, 5, 3, tags=("zero-length",))
    z.input_lengths = np.array([0, 0, 5, 10], dtype=np.int64)
    z.label_lengths[0] = 0
    z.label_lengths[1] = max(int(z.label_lengths[1]), 1)
    z.labels[1, 0] = 1
    add(z)
    add(random_case(rng, "extreme-logits", 40, 4, 7, 10, scale=30.0, tags=("extreme",)))
    add(random_case(rng, "very-extreme-logits", 60, 2, 5, 20, scale=300.0, tags=("extreme",)))
    add(random_case(rng, "long-T2000", 2000, 1, 12, 300, tags=("long",)))
    add(random_case(rng, "large-C5000", 40, 2, 5000, 12, tags=("large-alphabet",)))
    return cases
