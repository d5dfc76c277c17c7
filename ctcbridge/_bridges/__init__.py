"""Array bridges: one small module per framework, each a :class:`~.base.Bridge`.

A bridge turns a :class:`~ctcbridge._contract.CTCCall` (what a signature
module asks of the engine) into a differentiable operation of the framework
the caller's arrays come from, and offers the few array operations the
signatures need for their reductions (the protocol: :mod:`.base`).
Frameworks are never imported to find out whether they are installed: an
array of a framework's type can only exist if that framework is already in
``sys.modules`` (the einops rule).  A new framework is one module here
(``BRIDGE``, an instance of its Bridge) and one line of ``_MODULES``.
"""

from __future__ import annotations

import sys

_MODULES = {  # top-level module of an array type -> bridge module
    "torch": "torch",
    "jax": "jax",
    "jaxlib": "jax",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "mxnet": "mxnet",
    "chainer": "chainer",
    "pytensor": "pytensor",
    "theano": "theano",
}
# the frameworks with a bridge, in the order of the table (numpy's bridge is apart)
FRAMEWORKS = tuple(dict.fromkeys(_MODULES.values()))
_cache: dict = {}


def framework_of(x) -> str | None:
    """The framework an array belongs to, or None for numpy and Python values."""
    root = type(x).__module__.split(".", 1)[0]
    name = _MODULES.get(root)
    if name is None or root not in sys.modules:
        return None
    if name == "tensorflow" and "tensorflow" not in sys.modules:
        return None
    return name


def bridge_named(name: str):
    """The bridge called `name` ("numpy", "torch"...): imports that framework."""
    bridge = _cache.get(name)
    if bridge is None:
        bridge = _cache[name] = _import(name).BRIDGE
    return bridge


def _import(name: str):
    """The bridge module `name`, imported by an ``import`` statement.

    The first call of a process may run inside a framework's tracer
    (``torch.compile(fullgraph=True)``, ``tf.function``): Dynamo executes an
    ``import`` statement at trace time but refuses to trace ``importlib``'s
    functions (a graph break, an error with ``fullgraph``), and AutoGraph warns
    that it cannot transform ``importlib._bootstrap._gcd_import``.  A statement
    per bridge is what both trace."""
    if name == "numpy":
        from . import numpy as module
    elif name == "torch":
        from . import torch as module
    elif name == "jax":
        from . import jax as module
    elif name == "tensorflow":
        from . import tensorflow as module
    elif name == "mxnet":
        from . import mxnet as module
    elif name == "chainer":
        from . import chainer as module
    elif name == "pytensor":
        from . import pytensor as module
    elif name == "theano":
        from . import theano as module
    else:
        raise KeyError(name)
    return module


def bridge_for(*arrays):
    """The bridge of the first argument that is a framework array (numpy otherwise)."""
    for x in arrays:
        fw = framework_of(x)
        if fw is not None:
            return bridge_named(fw)
    return bridge_named("numpy")


def get_num_threads(framework: str | None = None) -> int:
    """The engine threads a call on ``framework``'s arrays uses now (>= 1).

    ``framework`` is a bridge name ("torch", "tensorflow", "jax", "numpy"...);
    None means numpy.  The engine also never runs more threads than the
    batch has samples."""
    name = framework or "numpy"
    if name not in _MODULES.values() or name not in sys.modules:  # no array of it exists
        name = "numpy"
    return bridge_named(name).num_threads()
