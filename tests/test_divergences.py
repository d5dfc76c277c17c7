"""The divergence file is well formed, every entry names an existing test, and its
machine-checkable conditions ("when") explain the right cases."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import numpy as np

from ctcbridge.conform import corpus
from ctcbridge.conform.divergences import FEATURES, case_features, explain_case

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"id", "signature", "case", "native", "ours", "reason", "test"}
WHEN_KEYS = {"has", "has_any", "log_softmax_below", "loss_above", "differs_in", "within"}


def test_divergence_file():
    data = json.loads((files("ctcbridge") / "divergences.json").read_text())
    assert data["version"] == 1
    ids = [d["id"] for d in data["divergences"]]
    assert len(ids) == len(set(ids))
    for entry in data["divergences"]:
        assert FIELDS <= set(entry) <= FIELDS | {"when"}, entry["id"]
        assert all(isinstance(entry[k], str) and entry[k] for k in FIELDS), entry["id"]
        path, name = entry["test"].split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), entry["test"]
        when = entry.get("when")
        if when is not None:  # a condition only in the vocabulary explain_case knows
            assert when and set(when) <= WHEN_KEYS, entry["id"]
            assert set(when.get("has", [])) | set(when.get("has_any", [])) <= set(FEATURES)
            assert when.get("differs_in", "gradient") in ("gradient", "paths")


def _case(name):
    return next(c for c in corpus.load() if c.name == name)


def _result(loss_error=0.0, grad_error=1.0, error=""):
    return dict(loss_error=loss_error, grad_error=grad_error, error=error, passed=False)


def test_case_features():
    assert case_features(_case("neginf-logits")) >= {"-inf-inputs", "-inf-frame",
                                                     "no-alignment"}
    assert "nan-inputs" not in case_features(_case("neginf-logits"))
    assert case_features(_case("empty-labels")) >= {"empty-label", "all-labels-empty",
                                                    "label-width-0"}
    zero = case_features(_case("zero-length"))
    assert {"zero-frames", "zero-frames-empty-label", "no-alignment"} <= zero
    assert not case_features(_case("blank-first")) & {"no-alignment", "zero-frames",
                                                       "nan-inputs"}


def test_explain_names_the_matching_divergence_only():
    # torch's gradient w.r.t. free log-probabilities, and on -inf the NaN too
    assert explain_case("torch.ctc_loss", _case("blank-first"), _result()) == \
        ["torch-log-probs-gradient"]
    assert set(explain_case("torch.ctc_loss", _case("non-finite-log-probs"), _result())) == \
        {"torch-minus-inf-log-probs-gradient", "torch-log-probs-gradient"}
    # a wrong loss on an ordinary case: no entry explains it
    assert explain_case("torch.ctc_loss", _case("blank-first"), _result(loss_error=0.5)) == []
    # a precision drift explains small errors only
    assert explain_case("tensorflow.ctc_loss", _case("repeats"), _result(1e-3, 1e-2)) == \
        ["tf-float32-precision"]
    assert explain_case("tensorflow.ctc_loss", _case("repeats"), _result(1e-3, 1.0)) == []
    # T = 2048: a loss beyond TF's finite log(0) sentinel
    assert "tf-dense-sentinel-shortcut" in explain_case("tensorflow.ctc_loss",
                                                        _case("long-T2048"), _result(1e-3, 1.0))
    assert "tf-dense-zero-width-labels" in explain_case(
        "keras.ctc_loss", _case("empty-labels"), _result(0.7, 1.0))
    assert "mxnet-zero-frames" in explain_case(
        "gluon.CTCLoss", _case("zero-length"), _result(np.inf, np.inf, "RuntimeError: not run"))
    assert "tf-dense-sentinel-shortcut" in explain_case(
        "tensorflow.ctc_loss", _case("very-extreme-logits"), _result(0.5, 1.0))
