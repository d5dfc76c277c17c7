"""The divergence file is well formed and every entry names an existing test."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"id", "signature", "case", "native", "ours", "reason", "test"}


def test_divergence_file():
    data = json.loads((files("ctcbridge") / "divergences.json").read_text())
    assert data["version"] == 1
    ids = [d["id"] for d in data["divergences"]]
    assert len(ids) == len(set(ids))
    for entry in data["divergences"]:
        assert set(entry) == FIELDS, entry["id"]
        assert all(isinstance(v, str) and v for v in entry.values()), entry["id"]
        path, name = entry["test"].split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), entry["test"]
