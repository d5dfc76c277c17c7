"""Code a user writes against ctcbridge's public API: the type check session
(`nox -s typecheck`) requires mypy to accept it."""

import numpy as np

import ctcbridge

x = np.zeros((4, 1, 3), dtype=np.float32)
loss: np.ndarray = ctcbridge.ctc_loss(x, [[1, 2]], reduction="mean", layout="TNC")
loss, grad = ctcbridge.ctc_loss_and_grad(x, [[1, 2]], inputs="log_probs", reduction="sum")
with ctcbridge.set_num_threads(2):
    n: int = ctcbridge.get_num_threads("torch")
