"""The Theano 1.0.5 bridge: the engine as a Theano ``Op`` (see ``_symbolic``).

Needs no warp-ctc: ``perform`` runs ctcbridge's engine on the numpy values;
costs differentiate through ``theano.grad`` and run in compiled functions.
"""

from __future__ import annotations

from types import SimpleNamespace

import theano
import theano.tensor as tt
from theano.gof import Apply, Op, local_optimizer
from theano.gradient import grad_undefined
from theano.tensor.opt import register_canonicalize

from . import _symbolic

BRIDGE = _symbolic.GraphBridge(SimpleNamespace(
    name="theano", Op=Op, Apply=Apply, as_tensor_variable=tt.as_tensor_variable, vector=tt.vector,
    grad_undefined=grad_undefined), tt, theano.function, theano.grad)
# pickle finds the Op class here (graphs and compiled functions pickle)
CTCBridgeOp = BRIDGE.op_class


@register_canonicalize("fast_compile")
@local_optimizer([CTCBridgeOp])
def local_ctcbridge_no_grad(node):
    """Forward-only graphs: drop the unused gradient output (as Theano's CTC rewrite)."""
    unused = len(node.outputs) > 1 and not node.outputs[1].clients
    return _symbolic.no_grad_replacement(CTCBridgeOp, node, unused)


