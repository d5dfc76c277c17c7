"""Assertions shared by the Python tests (imported as ``helpers``: pyproject's
pytest ``pythonpath`` puts tests/ and tests/frameworks/ on the path)."""

from __future__ import annotations

import numpy as np


def assert_close_losses(ours, ref, rtol, atol=0.0):
    """Equal infinities/NaNs match exactly; finite values within tolerance."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=rtol, atol=atol)


def assert_close_grads(ours, ref, atol):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    fin = ~np.isnan(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=0, atol=atol)


def subprocess_env(**extra) -> dict:
    """The environment of a fresh-process test: its ``import ctcbridge`` finds the
    ctcbridge under test (the installed package, or the checkout with its built
    library), not whatever the subprocess's working directory holds."""
    import os
    from pathlib import Path

    import ctcbridge

    root = str(Path(ctcbridge.__file__).resolve().parent.parent)
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}
