"""The ctcbridge command line: `ctcbridge conform` in its modes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ctcbridge
from ctcbridge.conform import corpus
from ctcbridge.conform.rows import ROWS
from ctcbridge.cli import main
from ctcbridge.conform.divergences import divergences_markdown, load_divergences

FIRST_ROWS = {"torch.ctc_loss", "optax.ctc_loss", "tensorflow.ctc_loss", "keras.ctc_loss",
              "keras.ctc_batch_cost"}


def test_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert ctcbridge.__version__ in out and ctcbridge.engine_version() in out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One full `ctcbridge conform --json` (every row, the whole corpus)."""
    report = tmp_path_factory.mktemp("conform") / "r.json"
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["conform", "--json", str(report)])
    return status, out.getvalue(), err.getvalue(), json.loads(report.read_text())


def test_conform_passes_and_writes_json(full_run):
    status, out, err, report = full_run
    assert status == 0, out
    assert "FAIL" not in out and "pass" in out and "passed:" in out
    assert report["passed"] is True
    assert report["corpus"]["version"] == corpus.CORPUS_VERSION
    assert len(report["corpus"]["cases"]) == len(corpus.shipped_cases())
    rows = report["engine"]
    assert rows and all(r["passed"] for r in rows)
    assert {r["row"] for r in rows} == {"engine float32", "engine float64"}
    names = {m["signature"] for m in report["signatures"]}
    assert FIRST_ROWS | {r.name for r in ROWS if r.available()} | {"engine float64", "engine float32"} <= names
    for m in report["signatures"]:  # numpy is always installed
        cell = m["cells"]["numpy"]
        assert cell["passed"] and cell["cases"] > 0 and len(cell["results"]) == cell["cases"], m
        assert {"case", "loss_error", "grad_error", "passed", "error", "details"} <= \
            set(cell["results"][0])


def test_conform_prints_a_matrix_and_progress(full_run):
    _, out, err, report = full_run
    lines = out.splitlines()
    header = next(line for line in lines if line.split() and line.split()[0] == "numpy")
    assert header.split() == report["frameworks"]
    for row in filter(lambda r: r.available(), ROWS):  # tensorflow.ctc_loss_v1 needs TF
        assert any(line.startswith(row.name + " ") and "pass" in line for line in lines), row.name
    # not a terminal: no progress, the versions and the time only
    assert "torch.ctc_loss on numpy" not in err and "done in" in err
    assert len(err.strip().splitlines()) == 2, err
    # numpy has no autodiff: the gradient is not measured, and the cell says so
    assert "/not measured" in out and "/0.0e+00" not in out


def test_every_case_runs_somewhere(full_run):
    """Each corpus case is accepted by at least one signature besides the engine."""
    _, _, _, report = full_run
    ran = {r["case"] for m in report["signatures"] if not m["signature"].startswith("engine")
           for r in m["cells"]["numpy"]["results"]}
    assert ran == set(report["corpus"]["cases"])


def _small_corpus(tmp_path, tamper: bool):
    cases = [c for c in corpus.load() if c.name in ("random-2", "empty-labels")]
    if tamper:
        cases[1].ref_loss = cases[1].ref_loss * 1.01
    path = tmp_path / "small.npz"
    corpus.save(cases, path, version=99)
    return path


def test_conform_fails_when_the_engine_disagrees(tmp_path, capsys):
    path = _small_corpus(tmp_path, tamper=True)
    report = tmp_path / "r.json"
    assert main(["conform", "--corpus", str(path), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out
    assert "engine float64 [numpy] empty-labels" in out or "empty-labels" in out
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["corpus"]["version"] == 99
    assert {r["case"] for r in data["engine"] if not r["passed"]} == {"empty-labels"}


def test_case_filter(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(["conform", "-k", "nan", "-k", "boundary", "--json", str(report)]) == 0
    assert set(json.loads(report.read_text())["corpus"]["cases"]) == \
        {"nan-logits", "boundary", "one-label-repeated"}  # by name, and by tag
    assert main(["conform", "-k", "no-such-case"]) == 2


def test_framework_columns(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(["conform", "--framework", "numpy", "-k", "random-0", "--json",
                 str(report)]) == 0
    assert json.loads(report.read_text())["frameworks"] == ["numpy"]
    assert main(["conform", "--framework", "numpy,nonexistent"]) == 2
    assert "nonexistent not installed here" in capsys.readouterr().err


# ---- --impl -----------------------------------------------------------------

GOOD = """
import ctcbridge.torch

def ctc(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean"):
    return ctcbridge.torch.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                    blank=blank, reduction=reduction)

def positional(*args):  # an autograd.Function.apply or a C extension takes positions
    return ctcbridge.torch.ctc_loss(*args)
"""

BUGGY = """
import numpy as np
import ctcbridge.torch

def ctc(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean"):
    '''Empty targets cost 0: wrong.'''
    out = ctcbridge.torch.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                   blank=blank, reduction=reduction)
    return np.where(np.asarray(target_lengths) == 0, 0.0, out)

def raises(*args, **kwargs):
    raise NotImplementedError("no CTC here yet")
"""


@pytest.fixture
def impl_dir(tmp_path, monkeypatch):
    (tmp_path / "good_ctc.py").write_text(GOOD)
    (tmp_path / "buggy_ctc.py").write_text(BUGGY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("good_ctc", "buggy_ctc"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_impl_passes(impl_dir, capsys):
    args = ["conform", "--impl", "good_ctc:ctc", "--convention", "torch.ctc_loss",
            "--framework", "numpy", "--json", "r.json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    n = len(corpus.shipped_cases())
    assert "FAIL" not in out and f"passed: {n} of {n} cases" in out
    assert "gradients not measured" in out and "not measured" in out.splitlines()[2]
    data = json.loads((impl_dir / "r.json").read_text())
    assert data["passed"] and data["convention"] == "torch.ctc_loss"
    assert len(data["results"]) == n
    assert all(r["grad_error"] is None for r in data["results"])


def test_impl_positional_file_and_native_name(impl_dir, capsys):
    # a file path, a function taking positions only, the convention named by its native
    args = ["conform", "--impl", str(impl_dir / "good_ctc.py") + ":positional", "--convention",
            "torch.nn.functional.ctc_loss", "--framework", "numpy", "-k", "random"]
    assert main(args) == 0
    assert "passed: 10 of 10 cases" in capsys.readouterr().out


def test_conventions_answer_to_explain_names_too(impl_dir, capsys):
    """`--convention` takes `ctcbridge explain`'s names, and `explain` the matrix rows'."""
    from ctcbridge.conform.compare import find_convention
    from ctcbridge.conventions import CONVENTIONS, dotted_name, get

    rows = {r.name for r in ROWS}
    for short, conv in CONVENTIONS.items():
        if short != "ctcbridge":
            assert dotted_name(conv) in rows, short  # every signature has a conform row
            assert find_convention(short).name == dotted_name(conv)
            assert get(dotted_name(conv)) is conv
    args = ["conform", "--impl", "good_ctc:ctc", "--convention", "torch",
            "--framework", "numpy", "-k", "random"]
    assert main(args) == 0
    assert "passed: 10 of 10 cases" in capsys.readouterr().out
    assert main(["explain", "gluon.CTCLoss", "torch.ctc_loss"]) == 0
    assert "From gluon" in capsys.readouterr().out


def test_impl_reports_where_it_differs(impl_dir, capsys):
    args = ["conform", "--impl", "buggy_ctc:ctc", "--convention", "torch.ctc_loss",
            "--framework", "numpy", "-k", "empty", "--json", "r.json"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED: 2 of 2 cases fail" in out
    empty = corpus.load()[[c.name for c in corpus.load()].index("empty-labels")]
    assert f"empty-labels sample 0: T=15 C=5 blank=0 labels [] (length 0): loss 0, " \
           f"reference {empty.ref_loss[0]:.9g}" in out
    # the smaller failing case first, and what the failing samples share
    failing = out.split("failing cases, smallest first:")[1]
    assert failing.index("  empty-labels (T=15 N=3") < failing.index("  some-empty-labels (")
    assert "fails on every case tagged empty" in out
    assert "by sample: 5 of 5 failing samples have an empty label, 0 of 2 passing ones" in out
    data = json.loads((impl_dir / "r.json").read_text())
    assert not data["passed"] and all(r["details"] for r in data["results"])


def test_impl_through_log_softmax(impl_dir, capsys):
    """The activations become logits fed through log_softmax; non-finite cases are
    left out (autodiff through log_softmax spreads their NaNs over whole frames)."""
    args = ["conform", "--impl", "good_ctc:ctc", "--convention", "torch.ctc_loss",
            "--framework", "numpy", "--through-log-softmax"]
    assert main(args) == 0
    out = capsys.readouterr().out
    cases = corpus.shipped_cases()
    non_finite = [c.name for c in cases if not np.isfinite(c.activations).all()]
    n = len(cases) - len(non_finite)
    assert f"passed: {n} of {n} cases" in out
    assert "skipped: " + ", ".join(non_finite) in out
    args[4] = "optax.ctc_loss"
    assert main(args) == 2
    assert "log-probability conventions" in capsys.readouterr().err


def test_through_log_softmax_reference_is_the_logits_gradient():
    from ctcbridge.conform.compare import _through_log_softmax

    row = next(r for r in ROWS if r.name == "torch.ctc_loss")
    for name in ("blank-middle", "log-probs"):
        case = next(c for c in corpus.load() if c.name == name)
        prep = _through_log_softmax(row, case, row.prepare(case, "float32"), None)
        np.testing.assert_allclose(prep.ref_loss, row.prepare(case, "float32").ref_loss,
                                   rtol=1e-6)
        # d loss / d logits: each used frame's row sums to 0 (softmax - occupancy)
        used = np.arange(case.shape[0])[:, None] < case.input_lengths[None, :]
        sums = prep.ref_grad.sum(-1)
        assert np.abs(sums[used]).max() < 1e-9 and prep.x.dtype == np.float32


def test_impl_exception_fails_the_case(impl_dir, capsys):
    args = ["conform", "--impl", "buggy_ctc:raises", "--convention", "optax.ctc_loss",
            "--framework", "numpy", "-k", "random-1"]
    assert main(args) == 1
    assert "raised NotImplementedError: no CTC here yet" in capsys.readouterr().out


def test_impl_gradient_difference_is_located():
    """On a framework with autodiff, the worst gradient entry is named (numpy bridge
    faked: the reference's own gradient, off at one entry)."""
    from ctcbridge.conform.compare import _compare

    row = next(r for r in ROWS if r.name == "torch.ctc_loss")
    case = next(c for c in corpus.load() if c.name == "blank-middle")
    prep = row.prepare(case, "float32")
    grad = prep.ref_grad.copy()
    grad[3, 1, 2] += 0.5
    result = _compare(row, case, prep, prep.ref_loss, grad, "x")
    assert not result.passed and result.grad_error == pytest.approx(0.5)
    assert "1 of 1080 entries" in result.details[0] and "(3, 1, 2)" in result.details[0]


def test_impl_usage_errors(impl_dir, capsys):
    assert main(["conform", "--impl", "good_ctc:ctc", "--convention", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown convention 'nope'" in err and "torch.ctc_loss" in err
    assert main(["conform", "--impl", "good_ctc:ctc"]) == 2
    assert main(["conform", "--impl", "good_ctc:ctc", "--convention", "torch.ctc_loss",
                 "--framework", "no-such-framework"]) == 2
    assert "not installed here" in capsys.readouterr().err
    assert main(["conform", "--impl", "good_ctc", "--convention", "torch.ctc_loss"]) == 2


def test_list_conventions(capsys):
    assert main(["conform", "--list-conventions"]) == 0
    out = capsys.readouterr().out
    for row in ROWS:
        assert row.name in out


# ---- --divergences ----------------------------------------------------------


def test_divergences(capsys):
    assert main(["conform", "--divergences"]) == 0
    out = capsys.readouterr().out
    for entry in load_divergences()["divergences"]:
        assert entry["id"] in out
    assert main(["conform", "--divergences", "--markdown"]) == 0
    assert capsys.readouterr().out == divergences_markdown()
    assert main(["conform", "--divergences", "--convention", "torch.ctc_loss"]) == 0
    out = capsys.readouterr().out
    assert "torch-log-probs-gradient" in out and "optax-label-out-of-range" not in out


def test_json_has_no_bare_infinities(tmp_path):
    from ctcbridge.cli import _write_json

    _write_json(tmp_path / "x.json", {"a": [float("inf"), float("nan"), 1.0], "b": np.inf})
    text = (tmp_path / "x.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": ["inf", "nan", 1.0], "b": "inf"}


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "ctcbridge.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ctcbridge ")


def test_where_for_outputs_that_are_not_per_sample_losses():
    """A row whose output is not (N,) losses (WarpCTC returns the softmax)."""
    from ctcbridge.conform.compare import _compare

    case = next(c for c in corpus.load() if c.name == "blank-first")
    row = next(r for r in ROWS if r.name == "torch.ctc_loss")
    prep = row.prepare(case, "float32")
    from dataclasses import replace

    prep = replace(prep, ref_loss=np.zeros((6, 7)))
    out = np.zeros((6, 7))
    out[2, 3] = 1.0
    result = _compare(row, case, prep, out, None, "x")
    assert not result.passed and "worst at index (2, 3)" in result.details[0]


def test_a_native_that_would_exhaust_memory_is_not_run():
    """A native row whose estimated peak exceeds half the available memory is listed as
    not run, with the reason, instead of being started (TF's dense CTC on the T=2048
    case would need ~50 GiB and was killed by the kernel)."""
    from dataclasses import replace

    from ctcbridge.conform.rows import _tf_dense_memory
    from ctcbridge.conform.compare import available_memory, run_matrix

    long_case = next(c for c in corpus.load() if c.name == "long-T2048")
    assert _tf_dense_memory(long_case) > 40 * 2**30
    assert 0 < available_memory() < float("inf")
    row = next(r for r in ROWS if r.name == "torch.ctc_loss")
    greedy = replace(row, native_memory=lambda case: 1e30)
    # never started: torch need not even be installed
    [entry] = run_matrix(corpus.load()[:2], [greedy], ["torch"], native=True)[1:]
    cell = entry["cells"]["torch"]
    assert cell["passed"] and cell["cases"] == 0 and len(cell["not_run"]) == 2
    assert "would need about" in cell["not_run"][0]["reason"]


def test_native_failures_name_the_divergence_that_explains_each_case(capsys):
    """A failing native case names the divergence whose condition holds for it, else
    "unexplained" (a native run faked: the results as run_matrix gives them)."""
    from ctcbridge.cli import _explain_natives, _print_failures

    cases = [c for c in corpus.load() if c.name in ("blank-first", "neginf-logits", "boundary")]

    def result(name, loss_error, grad_error, passed=False):
        return dict(case=name, loss_error=loss_error, grad_error=grad_error, passed=passed,
                    error="", details=[], impossible=[])

    results = [result("blank-first", 1e-7, 0.9), result("neginf-logits", 1e-7, float("inf")),
               result("boundary", 0.3, 0.9)]
    matrix = [dict(signature="native torch.ctc_loss", native=True, cells={"torch": dict(
        passed=False, cases=3, results=results)})]
    _explain_natives(matrix, cases)
    assert [r["explained_by"] for r in results] == [
        ["torch-log-probs-gradient"],
        ["torch-minus-inf-log-probs-gradient", "torch-log-probs-gradient"], []]
    _print_failures(matrix, cases)
    out = capsys.readouterr().out
    assert "native torch.ctc_loss [torch]: 3 of 3 cases fail" in out
    assert "    torch-log-probs-gradient: 1 case(s): blank-first" in out
    assert out.rstrip().endswith("unexplained: 1 case(s): boundary")


def test_matrix_picture(tmp_path):
    """The SVG of the matrix (docs/conformance.md's picture, drawn by the docs build):
    a cell per signature and framework, pass / FAIL k of n / not run / -."""
    import xml.etree.ElementTree as ET

    from ctcbridge.conform.picture import DOCS_CASES, cell_state, matrix_svg

    path = tmp_path / "r.json"
    args = ["conform", "--json", str(path), "--framework", "numpy"]
    for k in DOCS_CASES:
        args += ["-k", k]
    assert main(args) == 0
    report = json.loads(path.read_text())
    assert len(report["corpus"]["cases"]) < 20  # the docs build runs a small subset
    report["frameworks"].append("torch")
    report["signatures"].append(dict(signature="native torch.ctc_loss", native=True, cells={
        "torch": dict(passed=False, cases=5, failed_cases=["a", "b"], results=[])}))
    report["signatures"].append(dict(signature="native tensorflow.ctc_loss", native=True,
                                     cells={"torch": dict(passed=True, cases=0,
                                                          failed_cases=[], results=[])}))
    svg = matrix_svg(report, "title")
    root = ET.fromstring(svg)  # well-formed
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "FAIL 2 of 5" in texts and "not run" in texts and "title" in texts
    assert texts.count("-") >= len(report["signatures"])  # no torch cells for ours here
    assert sum(t.startswith("pass (") and t[6].isdigit() for t in texts if t) == \
        len(report["signatures"]) - 2
    assert cell_state(None) == ("", "-")
@pytest.mark.parametrize("command", [[], ["conform"], ["explain"]])
def test_help_is_plain_text(command, capsys):
    """--help shows no reST markup (``quotes``, :roles:)."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert "usage: ctcbridge" in out
    assert "``" not in out and ":class:" not in out and ":func:" not in out
