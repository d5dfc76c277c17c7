"""Where graphs pickled before the move find the PyTensor Op (now in
:mod:`ctcbridge._bridges.pytensor`)."""

from .._bridges.pytensor import CTCBridgeOp

__all__ = ["CTCBridgeOp"]
