"""Every example in the docs (docs/**/*.md, README.md) and the docstrings runs.

Rules for the pages (docs/development.md repeats them):

- every ```python block is executed, in page order, sharing one namespace
  (like a reader's session); a block starting with ``>>>`` is a doctest and
  must print what it shows.  Blocks that are not Python to run (synopses,
  output) use ```text.
- a block that imports frameworks (``import torch``, ``from mxnet import
  ...``) runs in the nox sessions that run this file with all of them in
  ``CTCBRIDGE_REQUIRE_FRAMEWORKS`` (one must exist: checked below; there a
  missing framework is an error); without that variable it runs where its
  frameworks are installed.  Blocks after a
  framework block must not depend on its variables unless they need the same
  framework.
- ```sh lines running ``ctcbridge explain`` are executed (the others install
  or run test sessions and are not).
- docs/migration.md's conventions table is the rendering of
  ``ctcbridge.conventions`` and each signature page's conventions card too
  (``python tests/test_docs.py`` renders them).
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import ctcbridge
import ctcbridge._compute
import ctcbridge.canonical
import ctcbridge.conventions
import ctcbridge.convert
import ctcbridge.explain
from ctcbridge import cli
from ctcbridge import conventions as cv

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "optax", "mxnet", "chainer", "theano",
              "pytensor")
REQUIRED = {f for f in os.environ.get("CTCBRIDGE_REQUIRE_FRAMEWORKS", "").split(",") if f}
_IMPORT = re.compile(r"^\s*(?:import|from)\s+(\w+)", re.M)
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path, language: str):
    return [body for lang, body in _FENCE.findall(path.read_text()) if lang == language]


def needs(block: str) -> set:
    return {m for m in _IMPORT.findall(block) if m in FRAMEWORKS}


def installed(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": "__docs__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    skipped = []
    for i, block in enumerate(blocks(path, "python")):
        wanted = needs(block)
        missing = sorted(f for f in wanted if not installed(f))
        required = [f for f in missing if f in REQUIRED]
        assert not required, f"{page_id(path)} block {i}: {required} must be installed here"
        if missing or (REQUIRED and not wanted <= REQUIRED):
            # a session naming its frameworks runs only the blocks needing those
            skipped.append((i, sorted(wanted)))
            continue
        name = f"{page_id(path)}[{i}]"
        if block.lstrip().startswith(">>>"):
            test = parser.get_doctest(block, namespace, name, str(path), 0)
            result = runner.run(test, clear_globs=False)
            assert result.failed == 0, f"{name}: doctest failed (output above)"
        else:
            exec(compile(block, name, "exec"), namespace)
    if skipped:
        pytest.skip(f"blocks needing frameworks not installed here: {skipped}")


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_explain_commands_run(path, capsys):
    for block in blocks(path, "sh"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("ctcbridge explain"):
                assert cli.main(shlex.split(line)[1:]) == 0, line
    capsys.readouterr()


def _default_sessions() -> list:
    """The default nox sessions, as ``nox --list --json`` describes them (name, tags...)."""
    out = subprocess.run([sys.executable, "-m", "nox", "--list", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_every_framework_example_runs_in_some_session():
    """Each block needing frameworks has a session requiring all of them that runs this file."""
    sessions = [{t.split(":", 1)[1] for t in s["tags"] if t.startswith("require:")}
                for s in _default_sessions() if "docs-examples" in s["tags"]]
    assert sessions  # else the check below passes vacuously
    for path in PAGES:
        for i, block in enumerate(blocks(path, "python")):
            wanted = needs(block)
            assert not wanted or any(wanted <= have for have in sessions), (
                f"{page_id(path)} block {i} needs {sorted(wanted)}: no nox session runs "
                "tests/test_docs.py with all of them in CTCBRIDGE_REQUIRE_FRAMEWORKS")


def test_docs_session_is_a_default_session():
    assert "docs" in {s["session"] for s in _default_sessions()}


MARK = re.compile(r"<!-- conventions-table:start -->\n(.*?)<!-- conventions-table:end -->", re.S)


def test_migration_table_is_rendered_from_the_conventions():
    text = (ROOT / "docs" / "migration.md").read_text()
    m = MARK.search(text)
    assert m, "docs/migration.md lacks its conventions-table markers"
    assert m.group(1) == cv.markdown_table(), (
        "docs/migration.md's table is stale: run `python tests/test_docs.py` to render it")


CARD = re.compile(r"<!-- conventions-card:(\S+) -->\n(.*?)<!-- conventions-card:end -->", re.S)


def test_signature_cards_are_rendered_from_the_conventions():
    seen = set()
    for path in sorted((ROOT / "docs" / "signatures").glob("*.md")):
        for name, card in CARD.findall(path.read_text()):
            assert card.strip() == cv.markdown_card(name).strip(), (
                f"{page_id(path)}: the card of {name} is stale (python tests/test_docs.py)")
            seen.add(name)
    assert {"torch", "tensorflow", "tensorflow-v1", "keras", "keras-batch-cost",
            "optax"} <= seen


def test_signature_pages_list_their_divergences():
    """Each divergence recorded for a signature is named on that signature's page."""
    records = json.loads((ROOT / "ctcbridge" / "divergences.json").read_text())["divergences"]
    pages = {"torch": "torch", "optax": "optax", "tensorflow": "tensorflow", "keras": "keras",
             "mxnet": "mxnet", "gluon": "mxnet", "chainer": "chainer", "theano": "theano"}
    for record in records:
        for prefix, page in pages.items():
            if re.search(rf"\b{prefix}\.", record["signature"] + "."):
                text = (ROOT / "docs" / "signatures" / f"{page}.md").read_text()
                assert f"`{record['id']}`" in text, (page, record["id"])


def test_mkdocs_nav_lists_every_page():
    text = (ROOT / "mkdocs.yml").read_text()
    for path in (ROOT / "docs").rglob("*.md"):
        assert str(path.relative_to(ROOT / "docs")) in text, path


@pytest.mark.parametrize(
    "module",
    [ctcbridge, ctcbridge.canonical, ctcbridge._compute, ctcbridge.convert, ctcbridge.conventions,
     ctcbridge.explain],
    ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def render_generated_parts() -> None:
    """Rewrite the generated parts of the pages (the conventions table and cards)."""
    page = ROOT / "docs" / "migration.md"
    page.write_text(MARK.sub(lambda m: "<!-- conventions-table:start -->\n" + cv.markdown_table()
                             + "<!-- conventions-table:end -->", page.read_text()))
    for name in ("torch", "tensorflow", "keras", "optax"):  # the other pages render their own
        path = ROOT / "docs" / "signatures" / f"{name}.md"
        path.write_text(CARD.sub(lambda m: f"<!-- conventions-card:{m.group(1)} -->\n"
                                 + cv.markdown_card(m.group(1)) + "<!-- conventions-card:end -->",
                                 path.read_text()))


if __name__ == "__main__":  # python tests/test_docs.py: render the generated parts
    render_generated_parts()
