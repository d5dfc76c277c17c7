"""The ctcbridge command line."""

from __future__ import annotations

import json
import subprocess
import sys

import ctcbridge
from ctcbridge.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert ctcbridge.__version__ in out and ctcbridge.engine_version() in out


def test_conform_passes_and_writes_json(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(["conform", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "pass" in out
    report = json.loads(report.read_text())
    rows = report["engine"]
    assert rows and all(r["passed"] for r in rows)
    assert {r["row"] for r in rows} == {"engine float32", "engine float64"}
    names = {m["signature"] for m in report["signatures"]}
    assert {"torch.ctc_loss", "optax.ctc_loss", "tensorflow.ctc_loss", "keras.ctc_loss",
            "keras.ctc_batch_cost"} <= names
    for m in report["signatures"]:  # numpy is always installed
        assert m["cells"]["numpy"]["passed"], m


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "ctcbridge.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ctcbridge ")
