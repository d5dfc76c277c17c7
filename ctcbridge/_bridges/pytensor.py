"""The PyTensor bridge: the engine as a PyTensor ``Op`` (see ``_symbolic``).

Symbolic inputs give a node whose costs differentiate through
``pytensor.grad`` and run in compiled functions (``perform`` runs the engine
on the numpy values); the Op's ``__props__`` carry the call's key.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad_undefined
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import node_rewriter
from pytensor.tensor.rewriting.basic import register_canonicalize

from . import _symbolic

BRIDGE = _symbolic.GraphBridge(SimpleNamespace(
    name="pytensor", Op=Op, Apply=Apply, as_tensor_variable=pt.as_tensor_variable, vector=pt.vector,
    grad_undefined=grad_undefined), pt, pytensor.function, pytensor.grad)
# pickle finds the Op class here (graphs and compiled functions pickle)
CTCBridgeOp = BRIDGE.op_class


@register_canonicalize("fast_compile")
@node_rewriter([CTCBridgeOp])
def local_ctcbridge_no_grad(fgraph, node):
    """Forward-only graphs: drop the unused gradient output (as Theano's CTC rewrite)."""
    unused = len(node.outputs) > 1 and not fgraph.clients[node.outputs[1]]
    return _symbolic.no_grad_replacement(CTCBridgeOp, node, unused)


