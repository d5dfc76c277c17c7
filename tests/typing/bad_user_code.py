"""Mistakes a type checker must flag in user code (`nox -s typecheck` requires mypy
to report an error on every line marked `# E`)."""

import numpy as np

import ctcbridge

x = np.zeros((4, 1, 3), dtype=np.float32)
ctcbridge.ctc_loss(x, [[1, 2]], reduction="avg")  # E
ctcbridge.ctc_loss(x, [[1, 2]], layout="BTC")  # E
ctcbridge.ctc_loss_and_grad(x, [[1, 2]], inputs="probs")  # E
