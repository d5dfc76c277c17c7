"""The conformance corpus: seeded CTC cases, shipped with their float64 reference results.

A :class:`Case` is one batch in the canonical form: activations (T, N, C),
padded labels (N, S) with per-sample lengths, input lengths, the blank index
and the input kind, plus (when loaded from the shipped file) the float64
reference's per-sample losses and gradient.

:func:`builtin_cases` generates the cases from fixed seeds; :func:`generate`
adds the reference results; :func:`save` writes them as one ``.npz`` file and
:func:`load` reads it back.  The package ships the generated file
(``ctcbridge/data/corpus-v{CORPUS_VERSION}.npz``), which ``ctcbridge
conform`` runs without recomputing the reference; only the ``corpus`` nox
session rewrites it (``python -m ctcbridge.conform.corpus --write``), and
``tests/test_corpus.py`` fails when the shipped file, the generator and the
reference disagree.  Changing the cases means bumping :data:`CORPUS_VERSION`.

File schema (``np.load(path)``, no pickles)::

    format          str    "ctcbridge-corpus"
    version         int    CORPUS_VERSION of the generator that wrote it
    meta            str    JSON: generator, reference, numpy version
    names           (K,) str   case names, in order
    <name>/activations    (T, N, C) float32   time-major; the exact inputs (the
                          reference is computed from these values in float64)
    <name>/labels         (N, S) int64   padded with the blank after label_lengths[n]
    <name>/input_lengths  (N,) int64     frames used per sample, in [0, T]
    <name>/label_lengths  (N,) int64
    <name>/blank          () int64       blank index
    <name>/inputs         () str         "logits" (log_softmax over C applied) or "log_probs"
    <name>/tags           (k,) str       behaviours the case covers
    <name>/description    () str
    <name>/loss           (N,) float64   reference per-sample losses (+inf: infeasible,
                                         NaN: NaN/+inf input in a used frame)
    <name>/grad           (T, N, C) float64  d sum(loss) / d activations (0 on frames
                                         t >= input_lengths[n], NaN on the used frames of
                                         a sample whose loss is not finite)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .._numerics import log_softmax, required_frames
from ..errors import CTCValueError

# Bump when the cases change (names, seeds, shapes): the file name carries it.
CORPUS_VERSION = 1
FORMAT = "ctcbridge-corpus"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def corpus_path(version: int = CORPUS_VERSION) -> Path:
    """Where the package keeps the shipped corpus of `version`."""
    return DATA_DIR / f"corpus-v{version}.npz"


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
    description: str = ""
    # the float64 reference's results, when known (shipped corpus, generate())
    ref_loss: np.ndarray | None = field(default=None, repr=False, compare=False)
    ref_grad: np.ndarray | None = field(default=None, repr=False, compare=False)

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

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The float64 reference's (losses, grad): stored ones, else computed."""
        if self.ref_loss is None or self.ref_grad is None:
            from .. import reference

            with np.errstate(all="ignore"):  # NaN/inf inputs are cases, not accidents
                self.ref_loss, self.ref_grad = reference.ctc_loss_and_grad(
                    self.activations, self.labels, **self.kwargs())
        return self.ref_loss, self.ref_grad


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
        x = log_softmax(x)
    return Case(name, x, labels, input_lengths.astype(np.int64), label_lengths, blank, inputs,
                tags)


def _set(case: Case, n: int, label, input_length: int) -> None:
    """Give sample n of `case` this label and input length (the padded width must fit)."""
    label = np.asarray(label, dtype=np.int64)
    case.labels[n] = case.blank
    case.labels[n, : label.size] = label
    case.label_lengths[n] = label.size
    case.input_lengths[n] = input_length


def _cases(rng: np.random.Generator):
    """(case, description) pairs of version 1, in order; every draw comes from `rng`."""
    for i in range(10):
        C = int(rng.integers(2, 40))
        yield random_case(
            rng, f"random-{i}", int(rng.integers(1, 80)), int(rng.integers(1, 7)), C,
            int(rng.integers(0, 16)), blank=[0, C - 1, None][i % 3],
            inputs="log_probs" if i % 4 == 3 else "logits", scale=[1.0, 3.0][i % 2],
            min_input=0, tags=("random",),
        ), "random shapes and lengths (zero-length inputs included), blank 0, last or drawn"
    yield random_case(rng, "blank-first", 30, 4, 9, 8, blank=0, tags=("blank",)), "blank = 0"
    yield random_case(rng, "blank-middle", 30, 4, 9, 8, blank=4, tags=("blank",)), \
        "blank = 4 of 9 classes"
    yield random_case(rng, "blank-last", 30, 4, 9, 8, blank=8, tags=("blank",)), \
        "blank = C - 1"
    yield random_case(rng, "repeats", 40, 4, 5, 15, repeat_prob=0.7, tags=("repeats",)), \
        "labels with many consecutive repeats (each needs a blank between)"
    c = random_case(rng, "one-label-repeated", 20, 3, 4, 5, tags=("repeats", "boundary"))
    for n, frames in enumerate((9, 12, 20)):  # 2 2 2 2 2 needs 5 + 4 frames
        _set(c, n, [2] * 5, frames)
    yield c, "the same label five times, at the boundary (9 frames) and above"
    b = random_case(rng, "boundary", 12, 3, 6, 10, repeat_prob=0.4, tags=("boundary", "repeats"))
    b.input_lengths = np.array(
        [max(required_frames(b.labels[n, : b.label_lengths[n]]), 1) for n in range(3)],
        dtype=np.int64,
    )
    yield b, "input length exactly L + repeats: a single alignment"
    yield random_case(rng, "infeasible", 8, 4, 6, 12, feasible=False, tags=("infeasible",)), \
        "every sample one or two frames short of L + repeats: loss +inf, gradient NaN"
    yield random_case(rng, "mixed-feasibility", 10, 6, 5, 9, repeat_prob=0.4, feasible=None,
                      min_input=2, tags=("infeasible", "repeats")), \
        "feasible and infeasible samples in one batch"
    yield random_case(rng, "empty-labels", 15, 3, 5, 0, tags=("empty",)), \
        "every label empty (padded width 0): loss = -sum_t log p_t(blank)"
    e = random_case(rng, "some-empty-labels", 15, 4, 5, 6, tags=("empty",))
    _set(e, 1, [], 15)
    _set(e, 3, [], 7)
    yield e, "empty and non-empty labels in one padded batch"
    z = random_case(rng, "zero-length", 10, 4, 5, 3, tags=("zero-length", "infeasible"))
    _set(z, 0, [], 0)
    _set(z, 1, [1], 0)
    z.input_lengths[2:] = [5, 10]
    yield z, "input length 0: loss 0 for an empty label, +inf otherwise; no frame has a gradient"
    s = random_case(rng, "single-frame", 1, 3, 4, 2, tags=("zero-length", "infeasible"))
    _set(s, 0, [], 1)
    _set(s, 1, [3], 1)
    _set(s, 2, [1, 2], 1)
    yield s, "T = 1: empty label, one label, and an infeasible two-label sample"
    yield random_case(rng, "log-probs", 30, 4, 8, 8, inputs="log_probs", tags=("inputs",)), \
        "log-probability inputs"
    yield random_case(rng, "log-probs-blank-last", 30, 3, 8, 8, blank=7, inputs="log_probs",
                      tags=("inputs", "blank")), "log-probability inputs, blank = C - 1"
    yield random_case(rng, "extreme-logits", 40, 4, 7, 10, scale=30.0, tags=("extreme",)), \
        "logits scaled by 30"
    yield random_case(rng, "very-extreme-logits", 60, 2, 5, 20, scale=300.0, tags=("extreme",)), \
        "logits scaled by 300 (the engine's log-space fallback)"
    g = random_case(rng, "logit-gaps", 60, 2, 4, 6, tags=("extreme",))
    g.activations = rng.choice([-400.0, 400.0], size=g.shape)
    yield g, "logits of +-400 only: probabilities below double range"
    yield from _non_finite_cases(rng)
    x = random_case(rng, "long-T2048", 2048, 2, 6, 400, min_input=1500, tags=("long",))
    _set(x, 0, rng.integers(1, 6, size=380), 2048)
    yield x, "T = 2048 frames, a 380-label sequence with repeats and a shorter one"
    x = random_case(rng, "large-C5000", 10, 2, 5000, 6, tags=("large-alphabet",))
    _set(x, 0, rng.integers(1, 5000, size=6), 10)
    yield x, "an alphabet of 5000 classes"


def _non_finite_cases(rng: np.random.Generator):
    x = random_case(rng, "nan-logits", 12, 3, 6, 4, tags=("non-finite",))
    for n, (label, frames) in enumerate((([1, 2, 2], 12), ([3, 4], 8), ([5], 12))):
        _set(x, n, label, frames)
    x.activations[3, 0, 2] = np.nan  # a used frame
    x.activations[8:, 1, :] = np.nan  # padding frames only: ignored
    yield x, "NaN in a used frame (loss and gradient NaN) and in padding frames (ignored)"
    x = random_case(rng, "posinf-logits", 12, 3, 6, 4, tags=("non-finite",))
    for n, (label, frames) in enumerate((([1, 2], 12), ([3, 4, 4], 8), ([5, 1], 12))):
        _set(x, n, label, frames)
    x.activations[5, 0, 1] = np.inf  # a used frame: not a distribution, NaN
    x.activations[9, 1, 3] = np.inf  # padding: ignored
    yield x, "+inf logit in a used frame (NaN) and in a padding frame (ignored)"
    x = random_case(rng, "neginf-logits", 12, 4, 6, 4, tags=("non-finite",))
    for n, (label, frames) in enumerate((([1, 2, 3], 12), ([2, 3], 12), ([4], 12),
                                         ([1, 1], 9))):
        _set(x, n, label, frames)
    x.activations[:, 0, 5] = -np.inf  # a class that never occurs: probability 0, finite loss
    x.activations[4, 0, 4] = -np.inf
    x.activations[:, 1, 3] = -np.inf  # the label's class impossible: infeasible, +inf
    x.activations[6, 2, :] = -np.inf  # a whole frame -inf: no distribution, NaN
    x.activations[10:, 3, :] = -np.inf  # padding: ignored
    yield x, "-inf logits: impossible classes (finite), an impossible label (+inf), " \
        "an all -inf frame (NaN), -inf padding (ignored)"
    x = random_case(rng, "non-finite-log-probs", 12, 4, 6, 4, inputs="log_probs",
                    tags=("non-finite", "inputs"))
    for n, (label, frames) in enumerate((([1, 2], 12), ([3], 12), ([1, 4], 12),
                                         ([2, 3, 3], 6))):
        _set(x, n, label, frames)
    x.activations[:, 0, 5] = -np.inf  # probability 0 for one class: finite
    x.activations[4, 0, 3] = np.nan  # a class no path of sample 0 visits: not read
    x.activations[2, 1, 0] = np.inf  # +inf log-probability: not a distribution, NaN
    x.activations[:, 2, 4] = -np.inf  # the label impossible: +inf
    x.activations[7:, 3, :] = np.nan  # padding: ignored
    yield x, "log-probabilities with -inf (finite or infeasible), +inf (NaN), NaN in a " \
        "class off every path (not read), NaN padding"


def builtin_cases() -> list[Case]:
    """The cases of the shipped corpus, generated (inputs only, no reference results).

    Activations are rounded to float32 values (stored as float64 here): the
    shipped file keeps them in float32, and float32 and float64
    implementations then see exactly the inputs the reference saw."""
    rng = np.random.default_rng(20261122)
    cases = []
    for case, description in _cases(rng):
        with np.errstate(invalid="ignore", over="ignore"):
            x = case.activations.astype(np.float32).astype(np.float64)
        cases.append(replace(case, activations=x, description=description,
                             labels=case.labels.astype(np.int64),
                             input_lengths=case.input_lengths.astype(np.int64),
                             label_lengths=case.label_lengths.astype(np.int64)))
    return cases


def generate() -> list[Case]:
    """:func:`builtin_cases` with the float64 reference's results filled in."""
    cases = builtin_cases()
    for case in cases:
        case.reference()
    return cases


def save(cases: list[Case], path, version: int = CORPUS_VERSION) -> None:
    """Write `cases` (with their reference results) in the corpus schema."""
    meta = dict(generator="ctcbridge.conform.corpus.builtin_cases", reference="ctcbridge.reference "
                "(float64 numpy)", numpy=np.__version__)
    out = dict(format=np.array(FORMAT), version=np.array(version, dtype=np.int64),
               meta=np.array(json.dumps(meta)), names=np.array([c.name for c in cases]))
    for c in cases:
        loss, grad = c.reference()
        fields = dict(activations=c.activations.astype(np.float32), labels=c.labels,
                      input_lengths=c.input_lengths, label_lengths=c.label_lengths,
                      blank=np.array(c.blank, dtype=np.int64), inputs=np.array(c.inputs),
                      tags=np.array(c.tags, dtype=str), description=np.array(c.description),
                      loss=np.asarray(loss, dtype=np.float64),
                      grad=np.asarray(grad, dtype=np.float64))
        out.update({f"{c.name}/{k}": v for k, v in fields.items()})
    np.savez_compressed(path, **out)


def load(path=None) -> list[Case]:
    """The cases of a corpus file (default: the shipped one), with reference results."""
    path = corpus_path() if path is None else path
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data or str(data["format"]) != FORMAT:
            raise CTCValueError(f"{path} is not a ctcbridge corpus (no format = {FORMAT!r})")
        cases = []
        for name in data["names"].tolist():
            f = {k: data[f"{name}/{k}"] for k in (
                "activations", "labels", "input_lengths", "label_lengths", "blank", "inputs",
                "tags", "description", "loss", "grad")}
            cases.append(Case(
                name, f["activations"].astype(np.float64), f["labels"].astype(np.int64),
                f["input_lengths"].astype(np.int64), f["label_lengths"].astype(np.int64),
                int(f["blank"]), str(f["inputs"]), tuple(f["tags"].tolist()),
                str(f["description"]), f["loss"], f["grad"]))
    return cases


KNOWN_ANSWERS = DATA_DIR / "known_answers.json"
KNOWN_ANSWER_TAG = "known-answer"


def _known_answer_case(entry: dict) -> Case:
    """One entry of known_answers.json as a canonical Case: the inputs converted the way
    its source feeds them to its own CTC function (float32, ``log`` of published
    probabilities, taken as logits), time-major, padded frames appended as published,
    labels padded with the blank."""
    x = np.asarray(entry["activations"], dtype=entry["source_dtype"])
    if entry["transform"] == "log":
        x = np.log(x)
    elif entry["transform"] != "none":
        raise CTCValueError(f"known answer {entry['name']}: unknown transform "
                            f"{entry['transform']!r}")
    x = x.astype(np.float64)
    if entry["layout"] == "NTC":
        x = x.transpose(1, 0, 2)
    pad = entry.get("padding")
    if pad:
        x = np.concatenate([x, np.full((pad["frames"],) + x.shape[1:], float(pad["value"]))])
    lengths = np.asarray(entry["label_lengths"], dtype=np.int64)
    blank = int(entry["blank"])
    if entry.get("labels_format") == "concatenated":
        flat = np.asarray(entry["labels"], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        seqs = [flat[s:s + n] for s, n in zip(starts, lengths)]
    else:
        seqs = [np.asarray(seq, dtype=np.int64) for seq in entry["labels"]]
    labels = np.full((len(seqs), max([0] + [len(q) for q in seqs])), blank, dtype=np.int64)
    for n, seq in enumerate(seqs):
        labels[n, :len(seq)] = seq
    prov = entry["provenance"]
    return Case(f"{KNOWN_ANSWER_TAG}-{entry['name']}", x, labels,
                np.asarray(entry["input_lengths"], dtype=np.int64), lengths, blank,
                entry["reference_inputs"], (KNOWN_ANSWER_TAG,),
                f"published by {prov['repository']} ({prov['path']}, {prov['test']}): "
                f"{entry['description']}")


def known_answer_cases(path=None) -> list[Case]:
    """The known answers from outside (``ctcbridge/data/known_answers.json``: TensorFlow's
    testBasic, warp-ctc's small_test and options_test, with their provenance) as corpus
    cases tagged ``known-answer``, with the float64 reference's results.

    They are read from the JSON at load time rather than stored in the versioned
    ``.npz``: the JSON is the one record of the published values and where they come
    from (tests/test_known_answers.py checks the reference reproduces them), the cases
    are tiny (T <= 7), and adding a source then needs no new corpus version."""
    doc = json.loads(Path(path or KNOWN_ANSWERS).read_text())
    cases = [_known_answer_case(entry) for entry in doc["cases"]]
    for case in cases:
        case.reference()
    return cases


def shipped_cases() -> list[Case]:
    """What ``ctcbridge conform`` runs by default: the shipped corpus, then the known
    answers."""
    return load() + known_answer_cases()


def select(cases: list[Case], texts) -> list[Case]:
    """The cases whose name or one of whose tags contains one of `texts` (``-k``)."""
    if isinstance(texts, str):
        texts = [texts]
    chosen = [c for c in cases if any(k in c.name or any(k in t for t in c.tags)
                                      for k in texts)]
    if not chosen:
        raise CTCValueError(f"no corpus case matches {list(texts)}")
    return chosen


def corpus_version(path=None) -> int:
    """The version recorded in a corpus file (default: the shipped one)."""
    with np.load(corpus_path() if path is None else path, allow_pickle=False) as data:
        return int(data["version"])


def main(argv=None) -> int:
    """``python -m ctcbridge.conform.corpus --write [PATH]``: regenerate the shipped corpus
    (what ``nox -s corpus`` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ctcbridge.conform.corpus",
                                     description=main.__doc__.splitlines()[0])
    parser.add_argument("--write", nargs="?", const=str(corpus_path()), metavar="PATH",
                        required=True, help=f"output file (default {corpus_path()})")
    args = parser.parse_args(argv)
    cases = generate()
    Path(args.write).parent.mkdir(parents=True, exist_ok=True)
    save(cases, args.write)
    size = Path(args.write).stat().st_size
    print(f"wrote {args.write}: version {CORPUS_VERSION}, {len(cases)} cases, "
          f"{size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
