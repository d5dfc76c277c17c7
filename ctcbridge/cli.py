"""The ``ctcbridge`` command line.

    ctcbridge --version           package and engine versions
    ctcbridge conform [--json F]  run the built-in corpus against the reference
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _versions() -> str:
    from . import __version__, engine_version

    return f"ctcbridge {__version__} (engine {engine_version()})"


def _conform(args: argparse.Namespace) -> int:
    from .conformance import TOLERANCES, check_engine, reference_result
    from .corpus import builtin_cases

    cases = builtin_cases()
    results = []
    start = time.perf_counter()
    print(f"{_versions()}: {len(cases)} cases x {len(TOLERANCES)} dtypes against the float64 "
          "reference", file=sys.stderr)
    for i, case in enumerate(cases, 1):
        ref = reference_result(case)
        for dtype in TOLERANCES:
            results.append(check_engine(case, dtype, ref))
        print(f"\r  [{i}/{len(cases)}] {case.name:<24}", end="", file=sys.stderr, flush=True)
    print(f"\r  done in {time.perf_counter() - start:.1f} s{' ' * 30}", file=sys.stderr)

    width = max(len(r.case) for r in results)
    header = f"{'case':<{width}}  {'row':<16}  {'max loss err':>12}  {'max grad err':>12}  result"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.case:<{width}}  {r.row:<16}  {r.loss_error:12.3e}  {r.grad_error:12.3e}  "
              f"{'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    print(f"\nengine: {len(results) - len(failed)} passed, {len(failed)} failed "
          f"(tolerances: loss relative / gradient absolute "
          + ", ".join(f"{k} {v[0]:g} / {v[1]:g}" for k, v in TOLERANCES.items()) + ")")
    matrix_failed, matrix = _signature_matrix(cases, args.native)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"engine": [r.__dict__ for r in results], "signatures": matrix}, fh,
                      indent=1)
    return 1 if failed or matrix_failed else 0


def _signature_matrix(cases, native: bool):
    """Rows: signatures (and natives); columns: the frameworks installed here."""
    from ._signature_rows import ROWS
    from .conformance import check_signature, installed_frameworks

    frameworks = installed_frameworks()
    cache: dict = {}
    rows = [(row, False) for row in ROWS] + ([(row, True) for row in ROWS] if native else [])
    matrix, failed = [], False
    total = len(rows) * len(frameworks)
    done = 0
    for row, is_native in rows:
        cells = {}
        for fw in frameworks:
            done += 1
            print(f"\r  signatures [{done}/{total}] {row.name} on {fw}{' ' * 20}", end="",
                  file=sys.stderr, flush=True)
            if is_native and fw not in row.native_frameworks:
                continue
            results = [r for r in (check_signature(row, c, fw, is_native, cache) for c in cases)
                       if r is not None]
            worst_l = max(r.loss_error for r in results)
            worst_g = max(r.grad_error for r in results)
            ok = all(r.passed for r in results)
            cells[fw] = dict(passed=ok, loss_error=worst_l, grad_error=worst_g, cases=len(results),
                             failed_cases=[r.case for r in results if not r.passed])
            if not ok and not is_native:
                failed = True
        matrix.append(dict(signature=("native " if is_native else "") + row.name, cells=cells))
    print(f"\r{' ' * 70}\r", end="", file=sys.stderr)
    name_w = max(len(m["signature"]) for m in matrix)
    print(f"\n{'signature':<{name_w}}  " + "  ".join(f"{fw:<26}" for fw in frameworks))
    for m in matrix:
        line = f"{m['signature']:<{name_w}}  "
        for fw in frameworks:
            c = m["cells"].get(fw)
            text = "-" if c is None else (
                f"{'pass' if c['passed'] else 'FAIL'} {c['loss_error']:.1e}/{c['grad_error']:.1e}")
            line += f"{text:<26}  "
        print(line.rstrip())
    print("cells: result, worst loss error (relative) / gradient error (absolute) over the "
          "corpus cases the signature accepts, float32")
    if native:
        print("native rows are informational (their known divergences are in "
              "ctcbridge/divergences.json) and do not change the exit status")
    return failed, matrix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ctcbridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print package and engine versions")
    sub = parser.add_subparsers(dest="command")
    conform = sub.add_parser("conform", help="check the engine against the float64 reference")
    conform.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    conform.add_argument("--native", action="store_true",
                         help="add the installed native implementations as rows")
    args = parser.parse_args(argv)
    if args.version:
        print(_versions())
        return 0
    if args.command == "conform":
        return _conform(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
