"""Conformance checks for other people's CTC implementations, in their own test suites.

* :func:`assert_conforms` raises ``AssertionError`` with the report when a
  function differs from the float64 reference on the corpus (in the manner of
  ``numpy.testing``);
* :func:`check_conformance` returns the report as data
  (:class:`ctcbridge.conform.report.ImplReport`);
* ``ctcbridge.testing.plugin``, a pytest plugin (entry point ``pytest11``):
  ``pytest --pyargs ctcbridge.testing --ctc-impl MODULE:FUNCTION
  --ctc-convention NAME`` runs one test per corpus case;
* :mod:`ctcbridge.testing.strategies`: ``ctc_problems()``, a hypothesis
  strategy of CTC problems for property tests against the reference.

The function is written in one signature's convention (``ctcbridge conform
--list-conventions``: ``torch.ctc_loss``, ``optax.ctc_loss``...) and called as
that signature's native is, on that framework's arrays.
"""

from __future__ import annotations

from typing import Callable, Iterable

__all__ = ["assert_conforms", "check_conformance", "corpus_cases"]


def corpus_cases(cases=None) -> list:
    """The corpus cases to run: all of them (the shipped corpus and the known answers)
    for None; those whose name or tags contain one of the strings for a string or a
    list of strings; `cases` itself for a list of :class:`ctcbridge.conform.corpus.Case`."""
    from ..conform.corpus import Case, select, shipped_cases

    if cases is None:
        return shipped_cases()
    if isinstance(cases, Case):
        return [cases]
    if isinstance(cases, str):
        return select(shipped_cases(), [cases])
    cases = list(cases)
    if all(isinstance(c, Case) for c in cases):
        return cases
    return select(shipped_cases(), [str(c) for c in cases])


def _framework(row, framework: str | None) -> str:
    from ..conform.compare import installed_frameworks
    from ..errors import CTCValueError

    installed = installed_frameworks()
    if framework is None:  # the arrays the convention's native takes, else numpy
        return next((f for f in row.native_frameworks if f in installed), "numpy")
    if framework not in installed:
        raise CTCValueError(f"framework={framework!r} is not installed here (installed: "
                            f"{', '.join(installed)})")
    return framework


def check_conformance(fn: Callable, convention: str, framework: str | None = None,
                      cases: Iterable | str | None = None, device: str = "",
                      through_log_softmax: bool = False):
    """`fn`, a CTC loss in the signature `convention`, against the float64 reference on
    the corpus: the :class:`~ctcbridge.conform.report.ImplReport` (``.passed``,
    ``.results``, ``.failed`` smallest first, ``.by_tag()``, ``.text()``,
    ``.as_dict()``).

    `framework`: the arrays `fn` is called with (default: those of the convention's
    native where installed, else numpy, which compares losses only); `cases`: see
    :func:`corpus_cases`; `device`: torch or jax arrays moved there.  A bad `fn` (not
    callable, raising, returning the wrong shape or NaN) gives report lines, not an
    exception; an unknown convention or framework raises ``CTCValueError``."""
    from ..conform.compare import find_convention
    from ..conform.report import run_impl

    row = find_convention(convention)
    return run_impl(fn, row, corpus_cases(cases), _framework(row, framework), device,
                    through_log_softmax)


def assert_conforms(fn: Callable, convention: str, framework: str | None = None,
                    cases: Iterable | str | None = None, device: str = "",
                    through_log_softmax: bool = False) -> None:
    """Raise ``AssertionError`` with the report unless `fn` agrees with the float64
    reference on every case (see :func:`check_conformance` for the arguments)."""
    __tracebackhide__ = True  # pytest shows the report, not this frame
    report = check_conformance(fn, convention, framework, cases, device, through_log_softmax)
    if not report.passed:
        raise AssertionError("\n" + report.text())
