"""ctcbridge.testing: assert_conforms, check_conformance, the pytest plugin, the hypothesis
strategy; and the command line's hygiene around them (usage errors, --json -,
--dump-case)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ctcbridge.torch
from ctcbridge.cli import main
from ctcbridge.conform import corpus
from ctcbridge.testing import assert_conforms, check_conformance

ROOT = Path(__file__).resolve().parent.parent
# where the ctcbridge under test lives (the checkout, or site-packages in a nox session):
# subprocesses get it on their path
PKG_ROOT = str(Path(ctcbridge.torch.__file__).resolve().parent.parent)


def good(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean"):
    return ctcbridge.torch.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                    blank=blank, reduction=reduction)


def no_repeat_blank(log_probs, targets, input_lengths, target_lengths, blank=0,
                    reduction="mean"):
    """A repeat-skip bug: repeated labels collapsed before the loss (no blank needed
    between them), so every sample with a repeat gets a smaller loss."""
    targets = np.asarray(targets).copy()
    lengths = np.asarray(target_lengths).copy()
    for n in range(targets.shape[0]):
        seq = targets[n, :lengths[n]]
        keep = np.concatenate([[True], seq[1:] != seq[:-1]]) if seq.size else seq.astype(bool)
        seq = seq[keep]
        targets[n] = blank
        targets[n, :seq.size] = seq
        lengths[n] = seq.size
    return good(log_probs, targets, input_lengths, lengths, blank, reduction)


def test_check_conformance_passes_and_is_data():
    report = check_conformance(good, "torch.ctc_loss", framework="numpy", cases="random")
    assert report.passed and len(report.results) == 10 and not report.failed
    data = report.as_dict()
    assert data["passed"] and data["by_tag"] == {"random": {"failing": 0, "cases": 10}}
    assert all(r["grad_error"] is None for r in data["results"])  # numpy: not measured
    json.dumps(data, default=str)
    assert "passed: 10 of 10 cases" in report.text()


def test_assert_conforms_raises_with_the_report():
    assert_conforms(good, "torch", framework="numpy", cases=["boundary", "known-answer"])
    with pytest.raises(AssertionError) as info:
        assert_conforms(no_repeat_blank, "torch.ctc_loss", framework="numpy")
    text = str(info.value)
    assert "cases fail" in text and "failing cases, smallest first:" in text
    # the failing line locates the bug: the sample's frames, classes, blank and labels
    assert "sample 1: T=5 C=6 blank=5 labels [0, 1, 1, 0] (length 4)" in text
    assert "by sample: " in text and "have consecutive repeated labels" in text
    report = check_conformance(no_repeat_blank, "torch.ctc_loss", framework="numpy")
    sizes = [int(np.prod(c.shape)) for c, _ in report.failed]
    assert sizes == sorted(sizes) and report.failed[0][0].name.startswith("known-answer")
    for case, r in report.results:  # every failing sample has a repeat, every other passes
        for n in range(case.shape[1]):
            labels = case.labels[n, :case.label_lengths[n]]
            repeats = bool(np.any(np.diff(labels) == 0))
            if n in r.samples:
                assert repeats, (case.name, n)


@pytest.mark.parametrize("fn, expected", [
    (42, "not callable"),
    (lambda *a, **k: np.zeros(7), "losses have shape (7,)"),
    (lambda *a, **k: (_ for _ in ()).throw(RuntimeError("kernel exploded")),
     "raised RuntimeError: kernel exploded"),
    (lambda lp, *a, **k: np.full(np.shape(lp)[1], np.nan), "impossible: loss nan"),
    (lambda lp, *a, **k: -good(lp, *a, **k), "impossible: negative loss"),
    (lambda *a, **k: "not an array", "losses have shape ()"),
    (lambda lp, *a, **k: np.array([object()] * np.shape(lp)[1]), "not comparable"),
])
def test_bad_implementations_give_report_lines(fn, expected):
    report = check_conformance(fn, "torch.ctc_loss", framework="numpy", cases="random-0")
    assert not report.passed and expected in report.text()
    with pytest.raises(AssertionError, match="FAILED"):
        assert_conforms(fn, "torch.ctc_loss", framework="numpy", cases="random-0")


def test_usage_errors_raise():
    from ctcbridge.errors import CTCValueError

    with pytest.raises(CTCValueError, match="unknown convention"):
        check_conformance(good, "nosuch")
    with pytest.raises(CTCValueError, match="not installed"):
        check_conformance(good, "torch", framework="nosuch")
    with pytest.raises(CTCValueError, match="no corpus case matches"):
        check_conformance(good, "torch", cases="nosuch")


def test_gradient_rows_not_summing_to_zero_are_impossible():
    from ctcbridge.conform.compare import _compare
    from ctcbridge.conform.rows import ROWS

    row = next(r for r in ROWS if r.name == "optax.ctc_loss")  # gradient w.r.t. logits
    case = next(c for c in corpus.load() if c.name == "blank-middle")
    prep = row.prepare(case, "float32")
    grad = prep.ref_grad.copy()
    grad[1, 3, 2] += 0.5
    result = _compare(row, case, prep, prep.ref_loss, grad, "x")
    assert any("do not sum to 0" in line and "(1, 3)" in line for line in result.impossible)


# ---- the hypothesis strategy --------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")  # in the test dependency group


@hypothesis.settings(max_examples=25, deadline=None)
# min_frames=1: torch's convention (like torch 2.13) refuses an empty time axis
@hypothesis.given(case=__import__("ctcbridge.testing.strategies",
                                  fromlist=["ctc_problems"]).ctc_problems(min_frames=1))
def test_strategy_problems_are_valid_and_our_engine_conforms(case):
    T, N, C = case.shape
    assert 0 <= case.blank < C and (case.input_lengths <= T).all()
    from ctcbridge._numerics import required_frames

    for n in range(N):
        labels = case.labels[n, :case.label_lengths[n]]
        assert (labels != case.blank).all() and required_frames(labels) <= case.input_lengths[n]
    assert_conforms(good, "torch.ctc_loss", framework="numpy", cases=[case])


def test_strategy_finds_the_repeat_bug():
    from ctcbridge.testing.strategies import ctc_problems

    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(case=ctc_problems(max_classes=4))
    def prop(case):
        assert_conforms(no_repeat_blank, "torch.ctc_loss", framework="numpy", cases=[case])

    with pytest.raises(AssertionError, match="consecutive repeated labels|cases fail"):
        prop()


# ---- the pytest plugin ------------------------------------------------------

IMPLS = textwrap.dedent('''
    import numpy as np
    import ctcbridge.torch

    def good(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean"):
        return ctcbridge.torch.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                        blank=blank, reduction=reduction)

    def empty_is_free(log_probs, targets, input_lengths, target_lengths, blank=0,
                      reduction="mean"):
        out = good(log_probs, targets, input_lengths, target_lengths, blank, reduction)
        return np.where(np.asarray(target_lengths) == 0, 0.0, out)
''')


def _pytest(tmp_path, *args):
    (tmp_path / "impls.py").write_text(IMPLS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), PKG_ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # -p below, installed or not
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ctcbridge.testing.plugin",
                           "-p", "no:cacheprovider", "--pyargs", "ctcbridge.testing", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_plugin_one_test_per_case(tmp_path):
    out = _pytest(tmp_path, "--ctc-impl", "impls:good", "--ctc-convention", "torch.ctc_loss",
                  "--ctc-framework", "numpy", "-q", "--junitxml", "j.xml")
    n = len(corpus.shipped_cases())
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{n} passed" in out.stdout
    xml = (tmp_path / "j.xml").read_text()
    assert xml.count("<testcase") == n and "test_case[known-answer-tensorflow-testBasic]" in xml


def test_plugin_failures_k_and_x(tmp_path):
    out = _pytest(tmp_path, "--ctc-impl", "impls:empty_is_free", "--ctc-convention",
                  "torch", "--ctc-framework", "numpy", "-q", "-k", "empty or random-0")
    assert out.returncode == 1
    assert "2 failed, 1 passed" in out.stdout, out.stdout
    assert "some-empty-labels sample 1: T=15 C=5 blank=0 labels [] (length 0): loss 0" in \
        out.stdout
    out = _pytest(tmp_path, "--ctc-impl", "impls:empty_is_free", "--ctc-convention",
                  "torch", "--ctc-framework", "numpy", "-q", "-x", "-k", "empty")
    assert "1 failed" in out.stdout and "stopping after 1 failures" in out.stdout


def test_plugin_usage_errors(tmp_path):
    out = _pytest(tmp_path, "-q")
    assert out.returncode == 4 and "--ctc-impl MODULE:FUNCTION" in out.stderr
    out = _pytest(tmp_path, "--ctc-impl", "nosuch:fn", "--ctc-convention", "torch")
    assert out.returncode == 4 and "cannot import 'nosuch'" in out.stderr
    assert "Traceback" not in out.stderr


def test_plugin_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    assert 'ctcbridge = "ctcbridge.testing.plugin"' in section
    from importlib.metadata import entry_points

    installed = [ep for ep in entry_points(group="pytest11") if ep.name == "ctcbridge"]
    if installed:  # installed with pip (the nox sessions): the entry point is there
        assert installed[0].value == "ctcbridge.testing.plugin"


# ---- the command line ---------------------------------------------------------


@pytest.fixture
def impl_dir(tmp_path, monkeypatch):
    (tmp_path / "impls.py").write_text(IMPLS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "impls", raising=False)
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--impl", "nosuch:fn", "--convention", "torch"], "cannot import 'nosuch'"),
    (["--impl", "impls:nosuch", "--convention", "torch"], "has no attribute 'nosuch'"),
    (["--impl", "impls:good", "--convention", "nosuch"], "unknown convention 'nosuch'"),
    (["--impl", "impls:good", "--convention", "torch", "--framework", "numpy", "--device",
      "cuda"], "--device cuda needs torch or jax arrays"),
    (["--dump-case", "nosuch"], "no corpus case named 'nosuch'"),
])
def test_usage_errors_exit_2_with_one_line(impl_dir, capsys, args, message):
    assert main(["conform", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_usage_errors_from_the_console_have_no_traceback(impl_dir):
    out = subprocess.run([sys.executable, "-m", "ctcbridge", "conform", "--impl", "nosuch:fn",
                          "--convention", "torch"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=PKG_ROOT))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("ctcbridge conform: ")


def test_progress_only_on_a_terminal(monkeypatch):
    """A terminal gets a progress line with an ETA (tqdm's bar where installed), a log
    nothing but the closing line."""
    import io

    import ctcbridge.cli as cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain fallback
    tty = Terminal()
    progress = cli._Progress(4, tty)
    for i in range(4):
        progress(f"torch.ctc_loss on numpy: [{i + 1}/4] case-{i}")
    progress.done("done in 1.0 s")
    text = tty.getvalue()
    assert "[1/4] torch.ctc_loss" in text and "[4/4, ETA " in text and "done in" in text
    log = io.StringIO()
    progress = cli._Progress(4, log)
    progress("torch.ctc_loss on numpy: [1/4] case-0")
    progress.done("done in 1.0 s")
    assert log.getvalue() == "  done in 1.0 s\n"


def test_json_to_stdout(impl_dir, capsys):
    assert main(["conform", "--impl", "impls:empty_is_free", "--convention", "torch",
                 "--framework", "numpy", "-k", "empty", "--json", "-"]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON only
    assert data["passed"] is False and data["failed"] == ["empty-labels", "some-empty-labels"]
    assert "FAILED: 2 of 2 cases fail" in captured.err and not (impl_dir / "-").exists()
    assert main(["conform", "--framework", "numpy", "-k", "known-answer", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["corpus"]["cases"] == [c.name for c in corpus.known_answer_cases()]


def test_dump_case_reproduces(impl_dir, capsys):
    assert main(["conform", "--dump-case", "some-empty-labels", "--impl", "impls:empty_is_free",
                 "--convention", "torch", "--dump-dir", "out"]) == 0
    assert "some-empty-labels.py" in capsys.readouterr().out
    npz, script = impl_dir / "out" / "some-empty-labels.npz", impl_dir / "out" / "some-empty-labels.py"
    assert npz.stat().st_size < 20_000
    # self-contained: numpy and the implementation only, from any directory
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=impl_dir / "out", env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                             [str(impl_dir), PKG_ROOT])))
    assert run.returncode == 0, run.stderr
    case = next(c for c in corpus.load() if c.name == "some-empty-labels")
    assert f"{case.ref_loss[1]:.4f}"[:5] in run.stdout and "worst relative loss error" in run.stdout
    worst = float(run.stdout.strip().splitlines()[-1].split()[-1])
    assert worst > 0.5  # the bug reproduces
    # without --impl: ctcbridge's own, which agrees
    assert main(["conform", "--dump-case", "boundary", "--convention", "optax",
                 "--dump-dir", "out"]) == 0
    run = subprocess.run([sys.executable, str(impl_dir / "out" / "boundary.py")],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=PKG_ROOT))
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip().splitlines()[-1].split()[-1]) < 1e-5
