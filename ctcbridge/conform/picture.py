"""A picture of the ``ctcbridge conform`` matrix: pass, fail or not run per signature
and framework, as a standalone SVG.

:func:`matrix_svg` renders the JSON report of ``ctcbridge conform --native --json``.
The documentation build (``nox -s docs``) runs this module as an mkdocs hook
(``hooks:`` in mkdocs.yml): :func:`on_pre_build` runs ``conform --native`` on the
frameworks installed there over a small subset of the corpus (:data:`DOCS_CASES`,
twelve cases) and writes ``docs/conformance-matrix.svg``, which
docs/conformance.md shows.  ``python -m ctcbridge.conform.picture REPORT.json
OUT.svg`` renders any report.
"""

from __future__ import annotations

import json
import sys
from html import escape
from pathlib import Path

# the cases the docs' picture runs (12, as -k matches them): the published known
# answers and small cases of each behaviour the natives depart on (repeats at the
# boundary, empty labels, zero lengths, infeasible samples, -inf and NaN inputs); the
# run is dominated by the frameworks' per-shape compilation, so each case counts
DOCS_CASES = ("known-answer", "boundary", "empty-labels", "zero-length", "mixed-feasibility",
              "neginf-logits", "nan-logits")

_COLOURS = {"pass": "#c8e6c9", "fail": "#ffcdd2", "not run": "#eeeeee", "": "#ffffff"}


def cell_state(cell: dict | None) -> tuple[str, str]:
    """(state, text) of one cell: pass, fail (with how many cases), not run, or ""
    (the signature does not run on that framework)."""
    if cell is None:
        return "", "-"
    if not cell["cases"]:
        return "not run", "not run"
    if cell["passed"]:
        return "pass", f"pass ({cell['cases']})"
    return "fail", f"FAIL {len(cell['failed_cases'])} of {cell['cases']}"


def matrix_svg(report: dict, title: str = "") -> str:
    """The report's matrix as SVG: a row per signature (ours, then the natives), a
    column per framework, each cell coloured by its state."""
    frameworks = report["frameworks"]
    rows = report["signatures"]
    name_w = 8 * max(len(m["signature"]) for m in rows) + 16
    cell_w, cell_h, top = 112, 22, 48 if title else 28
    width = name_w + cell_w * len(frameworks) + 8
    height = top + cell_h * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="DejaVu Sans Mono, monospace" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    if title:
        out.append(f'<text x="4" y="18" font-size="13" font-weight="bold">{escape(title)}</text>')
    for j, fw in enumerate(frameworks):
        x = name_w + j * cell_w + cell_w / 2
        out.append(f'<text x="{x}" y="{top - 8}" text-anchor="middle" '
                   f'font-weight="bold">{escape(fw)}</text>')
    for i, m in enumerate(rows):
        y = top + i * cell_h
        out.append(f'<text x="4" y="{y + 15}">{escape(m["signature"])}</text>')
        for j, fw in enumerate(frameworks):
            state, text = cell_state(m["cells"].get(fw))
            x = name_w + j * cell_w
            out.append(f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" '
                       f'fill="{_COLOURS[state]}" stroke="#bdbdbd"/>')
            out.append(f'<text x="{x + cell_w / 2}" y="{y + 15}" text-anchor="middle">'
                       f'{escape(text)}</text>')
    y = top + len(rows) * cell_h + 24
    legend = [("pass", "pass (cases run)"), ("fail", "FAIL: failing of run"),
              ("not run", "not run (memory)"), ("", "-: not on this framework, or not installed")]
    x = 4
    for state, text in legend:
        out.append(f'<rect x="{x}" y="{y - 12}" width="14" height="14" fill="{_COLOURS[state]}" '
                   f'stroke="#bdbdbd"/>')
        out.append(f'<text x="{x + 20}" y="{y}">{escape(text)}</text>')
        x += 20 + 8 * len(text) + 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run_native(cases=DOCS_CASES) -> dict:
    """The signature rows and the natives on every framework installed here over the
    corpus cases matching `cases` (as ``conform --native -k ...``), as a report dict
    with the keys :func:`matrix_svg` reads.  Absolute imports: mkdocs loads this file
    as a hook module of its own."""
    import warnings

    from ctcbridge import __version__
    from ctcbridge.conform.compare import installed_frameworks, run_matrix
    from ctcbridge.conform.corpus import select, shipped_cases
    from ctcbridge.conform.rows import ROWS

    chosen = select(shipped_cases(), list(cases))
    frameworks = installed_frameworks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix = run_matrix(chosen, ROWS, frameworks, native=True)
    return dict(ctcbridge=__version__, frameworks=frameworks, signatures=matrix,
                corpus=dict(cases=[c.name for c in chosen]))


def on_pre_build(config, **kwargs) -> None:
    """mkdocs hook: refresh docs/conformance-matrix.svg from a native run here."""
    report = run_native()
    svg = matrix_svg(report, f"ctcbridge conform --native, {len(report['corpus']['cases'])} "
                             f"corpus cases, ctcbridge {report['ctcbridge']}")
    target = Path(config["docs_dir"]) / "conformance-matrix.svg"
    if not target.exists() or target.read_text() != svg:
        target.write_text(svg)


if __name__ == "__main__":  # pragma: no cover
    source, target = sys.argv[1:3]
    Path(target).write_text(matrix_svg(json.loads(Path(source).read_text())))
