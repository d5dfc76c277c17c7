"""Fixtures shared by the Python tests (shared assertions: ``helpers``)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)
