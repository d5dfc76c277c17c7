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
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed "
          f"(tolerances: loss relative / gradient absolute "
          + ", ".join(f"{k} {v[0]:g} / {v[1]:g}" for k, v in TOLERANCES.items()) + ")")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.__dict__ for r in results], fh, indent=1)
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ctcbridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print package and engine versions")
    sub = parser.add_subparsers(dest="command")
    conform = sub.add_parser("conform", help="check the engine against the float64 reference")
    conform.add_argument("--json", metavar="FILE", help="also write the results as JSON")
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
