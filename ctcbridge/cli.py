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

import numpy as np

from .errors import CTCValueError


def _versions() -> str:
    from . import __version__, engine_version

    return f"ctcbridge {__version__} (engine {engine_version()})"


class _Progress:
    """Progress with an ETA on stderr, shown only on a terminal (a log stays quiet):
    tqdm's bar where tqdm is installed (``pip install ctcbridge[progress]``), else one
    updating line.  Called once per step; `total` steps are expected."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.count, self.start = max(total, 1), 0, time.perf_counter()
        self.bar = None
        if self.tty:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=self.total, file=self.stream, leave=False,
                                dynamic_ncols=True, unit="case")

    def __call__(self, message: str) -> None:
        self.count += 1
        if not self.tty:
            return
        if self.bar is not None:
            self.bar.set_description_str(message.split(": [", 1)[0], refresh=False)
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        done = self.count - 1  # the step announced now has not run yet
        eta = f", ETA {elapsed / done * (self.total - done):.0f} s" if done else ""
        line = f"[{self.count}/{self.total}{eta}] {message}"
        print(f"\r  {line[:76]:<76}", end="", file=self.stream, flush=True)

    def done(self, message: str) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            print(f"\r{' ' * 80}\r", end="", file=self.stream)
        print(f"  {message}", file=self.stream, flush=True)


def _load_cases(args):
    from .conform.corpus import corpus_path, corpus_version, load, select, shipped_cases

    path = args.corpus or corpus_path()
    # the shipped corpus comes with the known answers (ctcbridge/data/known_answers.json)
    cases = load(path) if args.corpus else shipped_cases()
    if args.cases:
        cases = select(cases, args.cases)
    return cases, dict(path=str(path), version=corpus_version(path),
                       cases=[c.name for c in cases])


def _cell_text(cell) -> str:
    if cell is None:
        return "-"
    if not cell["cases"]:  # every case of the cell was not run (see "not run")
        return "not run"
    grad = "not measured" if cell["grad_error"] is None else f"{cell['grad_error']:.1e}"
    return f"{'pass' if cell['passed'] else 'FAIL'} {cell['loss_error']:.1e}/{grad}"


def _print_matrix(matrix, frameworks) -> None:
    name_w = max(len(m["signature"]) for m in matrix)
    cell_w = 25
    print(f"\n{'':<{name_w}}  " + "  ".join(f"{fw:<{cell_w}}" for fw in frameworks).rstrip())
    for m in matrix:
        cells = "  ".join(f"{_cell_text(m['cells'].get(fw)):<{cell_w}}" for fw in frameworks)
        print(f"{m['signature']:<{name_w}}  {cells}".rstrip())


def _explain_natives(matrix, cases) -> None:
    """Each failing native result gets ``explained_by``: the ids of the divergences whose
    condition in divergences.json holds for its case (empty: unexplained)."""
    from .conform.divergences import explain_case

    by_name = {c.name: c for c in cases}
    for m in matrix:
        if m["native"]:
            name = m["signature"].split(" ", 1)[1]
            for cell in m["cells"].values():
                for r in cell["results"]:
                    r["explained_by"] = [] if r["passed"] else \
                        explain_case(name, by_name[r["case"]], r)


def _print_failures(matrix, cases, limit: int = 12) -> None:
    """Our failing cases, smallest first, with where they differ; for a native cell, its
    failing cases grouped by the divergence that explains them (or "unexplained")."""
    size = {c.name: int(np.prod(c.shape)) for c in cases}
    shown = 0
    for m in matrix:
        for fw, cell in m["cells"].items():
            bad = sorted((r for r in cell["results"] if not r["passed"]),
                         key=lambda r: (size.get(r["case"], 0), r["case"]))
            if m["native"] and bad:
                print(f"  {m['signature']} [{fw}]: {len(bad)} of {cell['cases']} cases fail")
                groups: dict = {}  # explanation -> cases, smallest first
                for r in bad:
                    groups.setdefault(", ".join(r["explained_by"]) or "unexplained",
                                      []).append(r["case"])
                for why, names in sorted(groups.items(), key=lambda g: g[0] == "unexplained"):
                    shown_names = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                    print(f"    {why}: {len(names)} case(s): {shown_names}")
                continue
            for r in bad:
                shown += 1
                if shown > limit:
                    continue
                grad = "not measured" if r["grad_error"] is None else f"{r['grad_error']:.2e}"
                print(f"  {m['signature']} [{fw}] {r['case']}: loss {r['loss_error']:.2e}, "
                      f"gradient {grad}")
                for line in (r.get("impossible") or [])[:2] + r["details"][:3]:
                    print(f"      {r['case']}{' ' if line.startswith('sample') else ': '}{line}")
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
    if args.dump_case:
        return _dump_case(args)
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
    from .conform.compare import TOLERANCES, check_engine, installed_frameworks, matrix_plan, \
        run_matrix

    cases, corpus = _load_cases(args)
    frameworks = installed_frameworks()
    if args.framework:  # only these columns
        wanted = args.framework.split(",")
        missing = [fw for fw in wanted if fw not in frameworks]
        if missing:
            raise CTCValueError(f"framework(s) {', '.join(missing)} not installed here "
                             f"(installed: {', '.join(frameworks)})")
        frameworks = [fw for fw in frameworks if fw in wanted]
    from .conform.decoders import ROWS as DECODER_ROWS, decoder_plan, run_decoder_matrix

    progress = _Progress(len(cases) * (1 + len(matrix_plan(ROWS, frameworks, args.native))
                                       + len(decoder_plan(DECODER_ROWS, frameworks, args.native))))
    start = time.perf_counter()
    print(f"{_versions()}; corpus v{corpus['version']}, {len(cases)} cases; frameworks: "
          f"{', '.join(frameworks)}", file=sys.stderr)
    engine = []
    for i, case in enumerate(cases, 1):
        progress(f"engine: [{i}/{len(cases)}] {case.name}")
        engine += [check_engine(case, dtype) for dtype in TOLERANCES]
    matrix = [dict(signature=f"engine {dtype}", native=False, cells={"numpy": dict(
        passed=all(r.passed for r in rs), loss_error=max(r.loss_error for r in rs),
        grad_error=max(r.grad_error or 0.0 for r in rs), cases=len(rs),
        failed_cases=[r.case for r in rs if not r.passed], results=[r.__dict__ for r in rs])})
        for dtype in TOLERANCES for rs in [[r for r in engine if r.row == f"engine {dtype}"]]]
    matrix += run_matrix(cases, ROWS, frameworks, args.native, progress)
    # the aligners and decoders: paths exact, scores within SCORE_TOLERANCE
    matrix += run_decoder_matrix(cases, frameworks, args.native, progress)
    _explain_natives(matrix, cases)
    progress.done(f"done in {time.perf_counter() - start:.1f} s")
    with _report_stream(args):
        failed = _print_all(args, matrix, frameworks, cases)
    if args.json:
        from . import __version__, engine_version

        report = dict(ctcbridge=__version__, engine_version=engine_version(), corpus=corpus,
                      frameworks=frameworks, tolerances=TOLERANCES, passed=not failed,
                      engine=[r.__dict__ for r in engine], signatures=matrix)
        _write_json(args.json, report)
    return 1 if failed else 0


def _report_stream(args):
    """Where the report for people goes: stdout, or stderr when the JSON takes stdout."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if args.json == "-" \
        else contextlib.nullcontext()


def _print_all(args, matrix, frameworks, cases) -> list:
    """The matrix, the notes, what was not run, the failures and the verdict; returns our
    failing rows."""
    from .conform.compare import TOLERANCES

    _print_matrix(matrix, frameworks)
    print("\ncells: result, worst loss error (relative) / worst gradient error (absolute) over "
          "the corpus cases the signature accepts (\"not measured\": numpy arrays have no "
          "autodiff); tolerances "
          + ", ".join(f"{k} {v[0]:g} / {v[1]:g}" for k, v in TOLERANCES.items())
          + " (signatures run in float32); aligner and decoder rows: paths exactly, worst "
          "relative score error / \"not measured\"")
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
        print("\nfailures (smallest case first):")
        _print_failures(matrix, cases)
    ours = [c for m in matrix if not m["native"] for c in m["cells"].values()]
    bad_cells = sum(not c["passed"] for c in ours)
    print(f"\n{'FAILED' if failed else 'passed'}: "
          + (f"{bad_cells} of {len(ours)} cells fail, in {len(failed)} signature row(s)"
             if failed else f"{len(ours)} of {len(ours)} cells"))
    return failed


def _impl_framework(args, row) -> str:
    """The arrays --impl is called with: --framework, else the convention's native's
    framework where installed, else numpy; a usage error for a missing one or a
    --device the arrays cannot go to."""
    from .conform.compare import installed_frameworks

    installed = installed_frameworks()
    if args.framework:
        fw = args.framework
        if fw not in installed:
            raise CTCValueError(f"framework {fw!r} is not installed here "
                                f"(installed: {', '.join(installed)})")
    else:  # the arrays the convention's native takes, else numpy (loss only)
        fw = next((f for f in row.native_frameworks if f in installed), "numpy")
    if args.device and fw not in ("torch", "jax"):
        raise CTCValueError(f"--device {args.device} needs torch or jax arrays; {row.name} "
                            f"would be called with {fw} arrays here (pass --framework torch "
                            f"or --framework jax)")
    return fw


def _conform_impl(args) -> int:
    from .conform.compare import find_convention, load_impl
    from .conform.report import run_impl

    row = find_convention(args.convention)
    fn = load_impl(args.impl)
    fw = _impl_framework(args, row)
    cases, corpus = _load_cases(args)
    print(f"{_versions()}: {args.impl} as {row.name} on {fw} arrays"
          f"{' on ' + args.device if args.device else ''}, corpus v{corpus['version']}",
          file=sys.stderr)
    progress = _Progress(len(cases))
    report = run_impl(fn, row, cases, fw, args.device, args.through_log_softmax,
                      name=args.impl, progress=progress)
    progress.done(f"{len(report.results)} cases run")
    if report.skipped and args.through_log_softmax:
        print("(--through-log-softmax leaves out the cases with non-finite inputs)",
              file=sys.stderr)
    with _report_stream(args):
        print(report.text())
    if args.json:
        _write_json(args.json, dict(report.as_dict(), corpus=corpus))
    return 0 if report.passed else 1


def _dump_case(args) -> int:
    """--dump-case NAME: the case in --convention's arguments (default torch.ctc_loss)
    as NAME.npz and a script NAME.py calling --impl (default ctcbridge's own) on it."""
    from .conform.compare import find_convention
    from .conform.corpus import shipped_cases, load
    from .conform.report import dump_case

    row = find_convention(args.convention or "torch.ctc_loss")
    cases = load(args.corpus) if args.corpus else shipped_cases()
    found = [c for c in cases if c.name == args.dump_case]
    if not found:
        raise CTCValueError(f"--dump-case: no corpus case named {args.dump_case!r} (the "
                            f"cases: {', '.join(c.name for c in cases)})")
    if args.impl:
        from .conform.compare import load_impl

        load_impl(args.impl)  # a usage error now rather than in the script
    fw = _impl_framework(args, row) if args.framework else "numpy"
    npz, script = dump_case(found[0], row, fw, args.dump_dir, args.impl or "")
    print(f"wrote {npz} ({npz.stat().st_size} bytes) and {script}; run: python {script}")
    return 0


def _write_json(path: str, report: dict) -> None:
    def finite(v):  # JSON has no inf/NaN: strings keep the report loadable everywhere
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    if path == "-":  # standard output
        json.dump(finite(report), sys.stdout, indent=1)
        print()
        return
    with open(path, "w") as fh:
        json.dump(finite(report), fh, indent=1)


def _add_conform(sub) -> None:
    conform = sub.add_parser(
        "conform", help="check every signature (or your own CTC function) against the corpus",
        description="Run the shipped conformance corpus through every signature on every "
        "framework installed here and compare with the float64 reference.")
    conform.add_argument("--json", metavar="FILE", help="also write the results as JSON "
                         "(- for standard output; the report for people then goes to stderr)")
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
                         help="only the cases whose name or tags contain TEXT (repeatable; "
                         "-k known-answer: the published known answers)")
    conform.add_argument("--dump-case", metavar="NAME",
                         help="write case NAME in --convention's arguments as NAME.npz and a "
                         "script NAME.py that calls --impl on it (ctcbridge's own without)")
    conform.add_argument("--dump-dir", metavar="DIR", default=".",
                         help="where --dump-case writes (default: the current directory)")


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
        except ValueError as exc:  # an unknown convention, a bad --impl...: one line
            print(f"ctcbridge conform: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                  file=sys.stderr)
            return 2
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
