"""Where graphs pickled before the move find the Theano Op (now in
:mod:`ctcbridge._bridges.theano`)."""

from .._bridges.theano import CTCBridgeOp

__all__ = ["CTCBridgeOp"]
