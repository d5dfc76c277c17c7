"""ctcbridge.theano on PyTensor variables (nox session `pytensor`): the Op in
graphs, pytensor.grad, compiled functions, against the float64 reference with
warp-ctc's conventions.  PyTensor has no CTC of its own; the native
comparisons (Theano 1.0.5's signature, mxnet's warp-ctc) run in the `theano`
session."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import ctcbridge.theano as cth
from ctcbridge._arrays import pytensor as bridge
from theano_cases import (ERRORS, VALUE_ERRORS, check_against_reference, check_error,
                          check_grad_of_sum, check_idioms, compiled_loss_and_grad, theano_case)

# PyTensor's numba backend runs Python Ops in object mode and says so at each compile
pytestmark = pytest.mark.filterwarnings("ignore:Numba will use object mode:UserWarning")


def test_signature():
    import inspect

    assert list(inspect.signature(cth.ctc).parameters) == ["activations", "labels",
                                                            "input_lengths"]
    init = inspect.signature(cth.ConnectionistTemporalClassification.__init__).parameters
    assert [(p.name, p.default) for p in init.values()][1:] == [("compute_grad", True),
                                                               ("openmp", None)]


@pytest.fixture(scope="module")
def compiled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return compiled_loss_and_grad(pytensor, pt)


@pytest.mark.parametrize("seed", range(220))
def test_against_reference(compiled, seed):
    check_against_reference(compiled, seed)


def test_idioms():
    check_idioms(pytensor, pt)


def test_returns_pytensor_variables():
    x, labels, il, _ = theano_case(5)
    out = cth.ctc(pt.as_tensor_variable(x), labels, il)  # mixed: numpy labels and lengths
    assert isinstance(out, pt.TensorVariable)
    assert isinstance(cth.ctc(x, labels, il), np.ndarray)


def test_grad_of_sum_runner():
    check_grad_of_sum(bridge)


@pytest.mark.parametrize("args", ERRORS + VALUE_ERRORS, ids=lambda a: a[-1][:30])
@pytest.mark.parametrize("symbolic", [False, True])
def test_errors(args, symbolic):
    check_error(pytensor, pt, args, symbolic)
