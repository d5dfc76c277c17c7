"""One implementation against the corpus, as a report people read and programs use.

:func:`run_impl` checks a function written in one signature's convention on
every corpus case and returns an :class:`ImplReport`: the per-case results,
the failing cases smallest first (each failing sample with its frames,
classes, blank and labels), results no CTC loss can have, and a summary by
corpus tag ("fails on every case tagged repeats, passes the rest").  Both
``ctcbridge conform --impl`` and :mod:`ctcbridge.testing` print
:meth:`ImplReport.text`.  :func:`dump_case` writes one case as a small
self-contained ``.npz`` file and a Python script that reproduces it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .compare import TOLERANCES, Result, check_impl
from .corpus import Case


@dataclass
class ImplReport:
    """The results of one implementation on the corpus.

    ``results`` holds (case, Result) pairs in corpus order; ``skipped`` the
    cases outside the convention's domain; ``error`` a problem that kept every
    case from running (a non-callable function)."""

    impl: str
    convention: str
    framework: str
    results: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    error: str = ""
    device: str = ""

    @property
    def failed(self) -> list:
        """The failing (case, Result) pairs, smallest case (T x N x C) first."""
        bad = [(c, r) for c, r in self.results if not r.passed]
        return sorted(bad, key=lambda cr: (int(np.prod(cr[0].shape)), cr[0].name))

    @property
    def passed(self) -> bool:
        return not self.error and not self.failed and bool(self.results)

    @property
    def grad_measured(self) -> bool:
        return any(r.grad_error is not None for _, r in self.results)

    def by_tag(self) -> dict:
        """{tag: (failing cases, cases)} over the cases run, in first-seen order."""
        tags: dict = {}
        for case, r in self.results:
            for tag in case.tags:
                failing, total = tags.get(tag, (0, 0))
                tags[tag] = (failing + (not r.passed), total + 1)
        return tags

    def tag_summary(self) -> str:
        """One sentence: the tags every case of which fails, some of which fail, none of
        which fail."""
        tags = self.by_tag()
        every = [t for t, (f, n) in tags.items() if f == n and f]
        some = [f"{t} ({f} of {n})" for t, (f, n) in tags.items() if 0 < f < n]
        none = [t for t, (f, n) in tags.items() if not f]
        parts = []
        if every:
            parts.append("fails on every case tagged " + ", ".join(every))
        if some:
            parts.append("on some tagged " + ", ".join(some))
        if none:
            parts.append("passes every case tagged " + ", ".join(none))
        return "; ".join(parts)

    def verdict(self) -> str:
        """``FAILED: 21 of 33 cases fail (...)`` or ``passed: 33 of 33 cases (...)``."""
        loss_tol, grad_tol = TOLERANCES["float32"]
        if self.error:
            return f"FAILED: {self.error}"
        within = (f"loss within {loss_tol:g} (relative)"
                  + (f" and gradient within {grad_tol:g} (absolute)" if self.grad_measured
                     else "") + " of the float64 reference"
                  + ("" if self.grad_measured else "; gradients not measured"))
        n, bad = len(self.results), len(self.failed)
        if not n:
            return "FAILED: no case was run"
        if bad:
            return f"FAILED: {bad} of {n} cases fail (wanted: {within})"
        return f"passed: {n} of {n} cases ({within})"

    def sample_summary(self) -> str:
        """Which kinds of sample fail: for each feature (repeated labels, an empty label,
        no frames, no alignment...), how many of the failing and of the passing samples
        have it; only features that tell the two apart."""
        feats = {"consecutive repeated labels": lambda c, n: bool(np.any(
                     np.diff(c.labels[n, :c.label_lengths[n]]) == 0)),
                 "an empty label": lambda c, n: c.label_lengths[n] == 0,
                 "no frames (input length 0)": lambda c, n: c.input_lengths[n] == 0,
                 "no alignment (reference loss inf)": lambda c, n: bool(
                     np.isposinf(c.reference()[0][n])),
                 "fewer frames than the padded T": lambda c, n: c.input_lengths[n] < c.shape[0],
                 "the blank not class 0": lambda c, n: c.blank != 0}
        fail, ok = [], []
        for case, r in self.results:
            if r.error or (not r.passed and not r.samples):
                continue  # no per-sample verdict
            bad = set(r.samples)
            for n in range(case.shape[1]):
                (fail if n in bad else ok).append((case, n))
        if not fail:
            return ""
        parts = []
        for text, has in feats.items():
            f = sum(bool(has(c, n)) for c, n in fail)
            p = sum(bool(has(c, n)) for c, n in ok)
            # features far commoner among the failing samples (by half or more)
            if f / len(fail) - (p / len(ok) if ok else 0.0) >= 0.5:
                parts.append(f"{f} of {len(fail)} failing samples have {text}, "
                             f"{p} of {len(ok)} passing ones")
        return "; ".join(parts)

    def text(self, table: bool = True, limit: int = 12) -> str:
        """The report for people: a table of the cases, the failing cases smallest first
        with where they differ, the summary by tag, the verdict."""
        lines = [f"{self.impl} as {self.convention} on {self.framework} arrays"
                 + (f" on {self.device}" if self.device else "")]
        if self.error:
            return "\n".join(lines + [self.verdict()])
        if table and self.results:
            width = max(len(c.name) for c, _ in self.results)
            lines.append(f"{'case':<{width}}  {'loss err':>9}  {'grad err':>12}  result  covers")
            for case, r in self.results:
                grad = "not measured" if r.grad_error is None else f"{r.grad_error:.2e}"
                lines.append(f"{case.name:<{width}}  {r.loss_error:9.2e}  {grad:>12}  "
                             f"{'pass' if r.passed else 'FAIL'}    {', '.join(case.tags)}")
        failed = self.failed
        if failed:
            lines += ["", "failing cases, smallest first:"]
            for case, r in failed[:limit]:
                T, N, C = case.shape
                about = case.description if len(case.description) <= 90 \
                    else case.description[:87] + "..."
                lines.append(f"  {case.name} (T={T} N={N} C={C}, {', '.join(case.tags)}): "
                             f"{about}")
                for item in r.impossible:
                    lines.append(f"    {case.name}: {item}")
                for line in r.details:  # "random-4 sample 3: ...", "random-4: gradient: ..."
                    sep = " " if line.startswith("sample") else ": "
                    lines.append(f"    {case.name}{sep}{line}")
            if len(failed) > limit:
                lines.append(f"  ... {len(failed) - limit} more (--json lists every case)")
            lines += ["", "by tag: " + self.tag_summary()]
            samples = self.sample_summary()
            if samples:
                lines.append("by sample: " + samples)
        if not self.grad_measured and self.framework == "numpy":
            lines += ["", "numpy arrays: losses only (no autodiff), gradients not measured; "
                      "pass a framework for gradients"]
        if self.skipped:
            lines += ["", f"not in the convention's domain, skipped: {', '.join(self.skipped)}"]
        lines += ["", self.verdict()]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The report as data (JSON-ready apart from non-finite floats)."""
        return dict(impl=self.impl, convention=self.convention, framework=self.framework,
                    device=self.device, passed=self.passed, error=self.error,
                    tolerances=TOLERANCES["float32"], skipped=self.skipped,
                    failed=[c.name for c, _ in self.failed],
                    by_tag={t: dict(failing=f, cases=n) for t, (f, n) in self.by_tag().items()},
                    results=[r.__dict__ for _, r in self.results])

    def __str__(self) -> str:
        return self.text()


def run_impl(fn: Callable, row, cases: list[Case], framework: str, device: str = "",
             through_log_softmax: bool = False, name: str | None = None,
             progress: Callable[[str], None] | None = None) -> ImplReport:
    """`fn` in `row`'s convention on every case of `cases`: an :class:`ImplReport`.
    Never raises for a bad `fn` (not callable, raising, a wrong shape, NaN): each shows
    as a report line."""
    label = name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) \
        or type(fn).__name__
    report = ImplReport(label, row.name, framework, device=device)
    if not callable(fn):
        report.error = f"the implementation is not callable: {fn!r:.80} ({type(fn).__name__})"
        return report
    cache: dict = {}
    for i, case in enumerate(cases, 1):
        if progress is not None:
            progress(f"{row.name}: [{i}/{len(cases)}] {case.name}")
        with warnings.catch_warnings():  # NaN and inf inputs are cases, not accidents
            warnings.simplefilter("ignore", RuntimeWarning)
            r = check_impl(fn, row, case, framework, device, cache, through_log_softmax)
        if r is None:
            report.skipped.append(case.name)
        else:
            report.results.append((case, r))
    return report


# --------------------------------------------------------------------------
# --dump-case
# --------------------------------------------------------------------------

_SCRIPT = '''"""Reproduce corpus case {case} of ctcbridge's conformance suite in the {convention}
convention ({framework} arrays).  {description}

Written by `ctcbridge conform --dump-case {case}`; needs numpy{needs} only: the
arguments and the float64 reference's results are in {npz}.
"""
import json
import numpy as np
{imports}
data = np.load({npz!r})
statics = json.loads(str(data["statics"]))
arrays = {{k[len("arg/"):]: data[k] for k in data.files if k.startswith("arg/")}}
{to_framework}
loss = {call}
for step in ("detach", "cpu", "numpy"):  # a torch, TensorFlow or JAX result to numpy
    loss = getattr(loss, step)() if hasattr(loss, step) else loss
loss = np.asarray(loss, dtype=np.float64)
ref = data["ref_loss"]
print("loss     ", loss)
print("reference", ref)
print("worst relative loss error", float(np.max(np.abs(loss - ref) / np.maximum(np.abs(ref), 1),
                                                initial=0)))
'''

_TO_FRAMEWORK = {  # (import, the arguments as the framework's arrays)
    "numpy": ("", "x = data[\"x\"]"),
    "torch": ("import torch", "x = torch.tensor(data[\"x\"], requires_grad=True)\n"
              "arrays = {k: torch.as_tensor(v) for k, v in arrays.items()}"),
    "jax": ("import jax.numpy as jnp", "x = jnp.asarray(data[\"x\"])\n"
            "arrays = {k: jnp.asarray(v) for k, v in arrays.items()}"),
    "tensorflow": ("import tensorflow as tf", "x = tf.constant(data[\"x\"])\n"
                   "arrays = {k: tf.constant(v) for k, v in arrays.items()}"),
}


def dump_case(case: Case, row, framework: str, directory, impl: str = "") -> tuple[Path, Path]:
    """Write `case` in `row`'s convention: ``<case>.npz`` (the arguments, the
    reference's losses and gradient, the case in canonical form) and ``<case>.py``,
    a script that calls `impl` (``module:function``; ctcbridge's own when empty)
    on it and prints its losses next to the reference's.  Returns both paths."""
    from ..errors import CTCValueError
    from .compare import _prepared

    if framework not in _TO_FRAMEWORK:
        framework = "numpy"
    prep = _prepared(row, case, None)
    if prep.split_time:
        raise CTCValueError(f"--dump-case: {row.name} takes a list of frames; dump it in "
                            "another convention")
    statics = {k: v for k, v in prep.args.items() if not isinstance(v, np.ndarray)}
    try:
        statics_json = json.dumps(statics)
    except TypeError:
        raise CTCValueError(f"--dump-case: {row.name} takes arguments that are not arrays "
                            f"({', '.join(statics)}); dump it in another convention") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    npz, script = directory / f"{case.name}.npz", directory / f"{case.name}.py"
    arrays = {f"arg/{k}": v for k, v in prep.args.items() if isinstance(v, np.ndarray)}
    loss, grad = case.reference()
    np.savez_compressed(npz, x=prep.x, statics=np.array(statics_json), ref_loss=prep.ref_loss,
                        ref_grad=prep.ref_grad, case_activations=case.activations,
                        case_labels=case.labels, case_input_lengths=case.input_lengths,
                        case_label_lengths=case.label_lengths, case_blank=case.blank,
                        case_inputs=np.array(case.inputs), **arrays)
    if impl:
        module, function = impl.rsplit(":", 1)
        if module.endswith(".py"):
            imp = (f"import importlib.util\nspec = importlib.util.spec_from_file_location("
                   f"'impl', {module!r})\nmod = importlib.util.module_from_spec(spec)\n"
                   f"spec.loader.exec_module(mod)\nfn = mod.{function}")
        else:
            imp = f"from {module} import {function.split('.')[0]} as fn"
            if "." in function:
                imp += "\nfn = fn." + function.split(".", 1)[1]
    else:
        imp = f"from {row.convention.module} import {row.convention.call} as fn  # ctcbridge's own"
    head, convert = _TO_FRAMEWORK[framework]
    x_name = row.activations
    text = _SCRIPT.format(
        case=case.name, convention=row.name, framework=framework,
        description=case.description.rstrip(".") + ".", npz=npz.name,
        needs=f" and {framework}" if framework != "numpy" else "",
        imports="\n".join(filter(None, [head, imp])), to_framework=convert,
        call=f"fn(**{{{x_name!r}: x}}, **arrays, **statics)")
    # the npz next to the script, wherever the script is run from
    text = text.replace(f"np.load({npz.name!r})",
                        f"np.load(__import__('pathlib').Path(__file__).with_name({npz.name!r}))")
    script.write_text(text)
    return npz, script
