"""Every example in the docs and docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import ctcbridge
import ctcbridge.canonical

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_markdown_examples(path):
    result = doctest.testfile(str(path), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_python_blocks_run():
    text = (ROOT / "README.md").read_text()
    blocks = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # in order, sharing one namespace like a reader's session
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["grad"].shape == (50, 2, 6)
    assert namespace["per_sample"].shape == (2,)


@pytest.mark.parametrize("module", [ctcbridge, ctcbridge.canonical], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
