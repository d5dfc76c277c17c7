"""The ``ctcbridge`` command line.

    ctcbridge --version                     package and engine versions
    ctcbridge conform                       every signature x every installed framework
                                            against the shipped corpus (exit 1 on a failure)
    ctcbridge conform --native              plus the installed native implementations
    ctcbridge conform --json FILE           also write a machine-readable report
    ctcbridge conform --impl M:F --convention NAME
                                            check your own CTC function written in one of
                                            the conventions (ctcbridge conform --list-conventions)
    ctcbridge conform --divergences         native behaviours deliberately not reproduced
    ctcbridge explain FROM TO               what changes between two signatures (--list)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .errors import CTCValueError


def _versions() -> str:
    from . import __version__, engine_version

    return f"ctcbridge {__version__} (engine {engine_version()})"


class _Progress:
    """Progress on stderr: one updating line on a terminal, one line per step in logs."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = ""

    def __call__(self, message: str) -> None:
        if self.tty:
            print(f"\r  {message[:76]:<76}", end="", file=self.stream, flush=True)
            return
        step = message.split(": [", 1)[0]
        if step != self.last:
            print(f"  {step}", file=self.stream, flush=True)
            self.last = step

    def done(self, message: str) -> None:
        if self.tty:
            print(f"\r{' ' * 80}\r", end="", file=self.stream)
        print(f"  {message}", file=self.stream, flush=True)


def _load_cases(args):
    from .conform.corpus import corpus_path, corpus_version, load

    path = args.corpus or corpus_path()
    cases = load(path)
    if args.cases:
        cases = [c for c in cases if any(k in c.name or k in c.tags for k in args.cases)]
        if not cases:
            raise CTCValueError(f"no corpus case matches {args.cases}")
    return cases, dict(path=str(path), version=corpus_version(path),
                       cases=[c.name for c in cases])


def _cell_text(cell) -> str:
    if cell is None:
        return "-"
    return (f"{'pass' if cell['passed'] else 'FAIL'} "
            f"{cell['loss_error']:.1e}/{cell['grad_error']:.1e}")


def _print_matrix(matrix, frameworks) -> None:
    name_w = max(len(m["signature"]) for m in matrix)
    cell_w = 22
    print(f"\n{'':<{name_w}}  " + "  ".join(f"{fw:<{cell_w}}" for fw in frameworks).rstrip())
    for m in matrix:
        cells = "  ".join(f"{_cell_text(m['cells'].get(fw)):<{cell_w}}" for fw in frameworks)
        print(f"{m['signature']:<{name_w}}  {cells}".rstrip())


def _print_failures(matrix, limit: int = 12) -> None:
    """Our failing cases with where they differ; a line per failing native cell."""
    from .conform.divergences import divergence_ids

    shown = 0
    for m in matrix:
        if m["native"]:
            name = m["signature"].split(" ", 1)[1]
            for fw, cell in m["cells"].items():
                if not cell["passed"]:
                    print(f"  {m['signature']} [{fw}]: {len(cell['failed_cases'])} of "
                          f"{cell['cases']} cases differ (known divergences: "
                          f"{', '.join(divergence_ids(name)) or 'none'})")
            continue
        for fw, cell in m["cells"].items():
            for r in cell["results"]:
                if r["passed"]:
                    continue
                shown += 1
                if shown <= limit:
                    print(f"  {m['signature']} [{fw}] {r['case']}: loss {r['loss_error']:.2e}, "
                          f"gradient {r['grad_error']:.2e}")
                    for line in r["details"][:3]:
                        print(f"      {line}")
    if shown > limit:
        print(f"  ... {shown - limit} more (the --json report lists every case)")


def _conform(args: argparse.Namespace) -> int:
    if args.divergences:
        from .conform.compare import find_convention
        from .conform.divergences import divergences_markdown, divergences_text

        sig = find_convention(args.convention).name if args.convention else None
        print(divergences_markdown() if args.markdown else divergences_text(sig), end="")
        return 0
    if args.list_conventions:
        return _list_conventions()
    if args.impl or args.convention:
        if not (args.impl and args.convention):
            raise CTCValueError("--impl and --convention go together")
        return _conform_impl(args)
    return _conform_all(args)


def _list_conventions() -> int:
    from .conform.rows import ROWS

    width = max(len(r.name) for r in ROWS)
    print(f"{'convention':<{width}}  {'alias':<16}  native (frameworks)")
    for r in ROWS:
        print(f"{r.name:<{width}}  {r.convention.name:<16}  {r.native or '-'} "
              f"({', '.join(r.native_frameworks) or '-'})")
    return 0


def _conform_all(args) -> int:
    from .conform.rows import ROWS
    from .conform.compare import TOLERANCES, check_engine, installed_frameworks, run_matrix

    cases, corpus = _load_cases(args)
    frameworks = installed_frameworks()
    if args.framework:  # only these columns
        wanted = args.framework.split(",")
        missing = [fw for fw in wanted if fw not in frameworks]
        if missing:
            raise CTCValueError(f"framework(s) {', '.join(missing)} not installed here "
                             f"(installed: {', '.join(frameworks)})")
        frameworks = [fw for fw in frameworks if fw in wanted]
    progress = _Progress()
    start = time.perf_counter()
    print(f"{_versions()}; corpus v{corpus['version']}, {len(cases)} cases; frameworks: "
          f"{', '.join(frameworks)}", file=sys.stderr)
    engine = []
    for i, case in enumerate(cases, 1):
        progress(f"engine: [{i}/{len(cases)}] {case.name}")
        engine += [check_engine(case, dtype) for dtype in TOLERANCES]
    matrix = [dict(signature=f"engine {dtype}", native=False, cells={"numpy": dict(
        passed=all(r.passed for r in rs), loss_error=max(r.loss_error for r in rs),
        grad_error=max(r.grad_error for r in rs), cases=len(rs),
        failed_cases=[r.case for r in rs if not r.passed], results=[r.__dict__ for r in rs])})
        for dtype in TOLERANCES for rs in [[r for r in engine if r.row == f"engine {dtype}"]]]
    matrix += run_matrix(cases, ROWS, frameworks, args.native, progress)
    progress.done(f"done in {time.perf_counter() - start:.1f} s")

    _print_matrix(matrix, frameworks)
    print("\ncells: result, worst loss error (relative) / worst gradient error (absolute) over "
          "the corpus cases the signature accepts; tolerances "
          + ", ".join(f"{k} {v[0]:g} / {v[1]:g}" for k, v in TOLERANCES.items())
          + " (signatures run in float32)")
    if args.native:
        print("native rows are informational (`ctcbridge conform --divergences` lists the "
              "known divergences) and do not change the exit status")
    not_run = [(m["signature"], fw, n) for m in matrix for fw, c in m["cells"].items()
               for n in c.get("not_run", ())]
    if not_run:
        print("\nnot run:")
        for signature, fw, n in not_run:
            print(f"  {signature} [{fw}] {n['case']}: {n['reason']}")
    failed = [m for m in matrix if not m["native"] and not all(
        c["passed"] for c in m["cells"].values())]
    if any(not c["passed"] for m in matrix for c in m["cells"].values()):
        print("\nfailures:")
        _print_failures(matrix)
    print(f"\n{'FAILED' if failed else 'passed'}: "
          f"{sum(len(m['cells']) for m in matrix if not m['native'])} cells, "
          f"{len(failed)} signature row(s) with a failure")
    if args.json:
        from . import __version__, engine_version

        report = dict(ctcbridge=__version__, engine_version=engine_version(), corpus=corpus,
                      frameworks=frameworks, tolerances=TOLERANCES, passed=not failed,
                      engine=[r.__dict__ for r in engine], signatures=matrix)
        _write_json(args.json, report)
    return 1 if failed else 0


def _conform_impl(args) -> int:
    from .conform.compare import TOLERANCES, check_impl, find_convention, installed_frameworks, \
        load_impl

    row = find_convention(args.convention)
    fn = load_impl(args.impl)
    installed = installed_frameworks()
    if args.framework:
        fw = args.framework
        if fw not in installed:
            raise CTCValueError(f"framework {fw!r} is not installed here "
                             f"(installed: {', '.join(installed)})")
    else:  # the arrays the convention's native takes, else numpy (loss only)
        fw = next((f for f in row.native_frameworks if f in installed), "numpy")
    cases, corpus = _load_cases(args)
    print(f"{_versions()}: {args.impl} as {row.name} on {fw} arrays"
          f"{' on ' + args.device if args.device else ''}, corpus v{corpus['version']}",
          file=sys.stderr)
    progress = _Progress()
    cache: dict = {}
    results, skipped = [], []
    for i, case in enumerate(cases, 1):
        progress(f"{row.name}: [{i}/{len(cases)}] {case.name}")
        r = check_impl(fn, row, case, fw, args.device, cache, args.through_log_softmax)
        if r is None:
            skipped.append(case.name)
        else:
            results.append((case, r))
    progress.done(f"{len(results)} cases run")

    width = max(len(c.name) for c, _ in results) if results else 4
    print(f"{'case':<{width}}  {'loss err':>9}  {'grad err':>9}  result  covers")
    for case, r in results:
        print(f"{case.name:<{width}}  {r.loss_error:9.2e}  {r.grad_error:9.2e}  "
              f"{'pass' if r.passed else 'FAIL'}    {', '.join(case.tags)}")
        if not r.passed:
            print(f"{'':<{width}}  {case.description}")
            for line in r.details:
                print(f"{'':<{width}}    {line}")
    failed = [r for _, r in results if not r.passed]
    loss_tol, grad_tol = TOLERANCES["float32"]
    if fw == "numpy":
        print("\nnumpy arrays: losses only (no autodiff); pass --framework for gradients")
    if skipped:
        why = " (or with non-finite inputs, for --through-log-softmax)" \
            if args.through_log_softmax else ""
        print(f"\nnot in the convention's domain{why}, skipped: {', '.join(skipped)}")
    print(f"\n{'FAILED' if failed else 'passed'}: {len(results) - len(failed)} of "
          f"{len(results)} cases within loss {loss_tol:g} (relative) / gradient {grad_tol:g} "
          f"(absolute) of the float64 reference")
    if args.json:
        _write_json(args.json, dict(impl=args.impl, convention=row.name, framework=fw,
                                    device=args.device, corpus=corpus, passed=not failed,
                                    tolerances=TOLERANCES["float32"], skipped=skipped,
                                    results=[r.__dict__ for _, r in results]))
    return 1 if failed else 0


def _write_json(path: str, report: dict) -> None:
    def finite(v):  # JSON has no inf/NaN: strings keep the report loadable everywhere
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    with open(path, "w") as fh:
        json.dump(finite(report), fh, indent=1)


def _add_conform(sub) -> None:
    conform = sub.add_parser(
        "conform", help="check every signature (or your own CTC function) against the corpus",
        description="Run the shipped conformance corpus through every signature on every "
        "framework installed here and compare with the float64 reference.")
    conform.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    conform.add_argument("--native", action="store_true",
                         help="add the installed native implementations as rows")
    conform.add_argument("--impl", metavar="MODULE:FUNCTION",
                         help="your own CTC function (or path/to/file.py:function) to check")
    conform.add_argument("--convention", metavar="NAME",
                         help="the signature --impl is written in (--list-conventions)")
    conform.add_argument("--framework", metavar="FW",
                         help="arrays --impl is called with (default: its native's "
                         "framework); without --impl, the matrix columns (comma-separated)")
    conform.add_argument("--device", default="",
                         help="with --impl on torch or jax: run there (e.g. cuda)")
    conform.add_argument("--through-log-softmax", action="store_true",
                         help="with --impl in torch's convention: feed it log_softmax(logits) "
                         "and compare the gradient w.r.t. the logits (where torch's own "
                         "gradient is right)")
    conform.add_argument("--list-conventions", action="store_true",
                         help="list the convention names")
    conform.add_argument("--divergences", action="store_true",
                         help="print the native behaviours ctcbridge does not reproduce")
    conform.add_argument("--markdown", action="store_true", help="with --divergences")
    conform.add_argument("--corpus", metavar="FILE.npz",
                         help="another corpus file in the same schema (default: the shipped one)")
    conform.add_argument("-k", "--cases", action="append", metavar="TEXT",
                         help="only the cases whose name or tags contain TEXT (repeatable)")


def main(argv=None) -> int:
    # the docstring's first line without its reST quotes (``ctcbridge``): --help is plain text
    parser = argparse.ArgumentParser(prog="ctcbridge",
                                     description=__doc__.splitlines()[0].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--version", action="store_true", help="print package and engine versions")
    sub = parser.add_subparsers(dest="command")
    _add_conform(sub)
    from . import explain  # `ctcbridge explain FROM TO` (ctcbridge/explain.py)

    explain.add_parser(sub)
    args = parser.parse_args(argv)
    if args.version:
        print(_versions())
        return 0
    if args.command == "explain":
        return explain.run(args)
    if args.command == "conform":
        try:
            return _conform(args)
        except ValueError as exc:  # an unknown convention, a bad --impl...
            print(f"ctcbridge conform: {exc}", file=sys.stderr)
            return 2
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
