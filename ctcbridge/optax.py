"""optax's CTC signature, on any framework's arrays.

Mirrors ``optax.ctc_loss(logits, logit_paddings, labels, label_paddings, *,
blank_id=0, log_epsilon=-1e5)``:

- ``logits`` (B, T, K) unnormalised, batch-major; ``logit_paddings`` (B, T),
  1.0 for a padded frame.  A padded frame is skipped wherever it is, even in
  the middle of a sequence (optax carries the state through it unchanged).
- ``labels`` (B, N) integers; ``label_paddings`` (B, N): the label length is
  N minus the sum of the paddings (only the sum matters, as in optax).
- Returns per-sequence losses (B,).  Feasible samples get the exact CTC
  loss and gradient; a sample with no valid alignment gets optax's own finite
  value, the arithmetic of its ``log_epsilon`` (about ``-log_epsilon`` per
  impossible step), and the gradient of that expression.

Where optax is undefined ctcbridge raises instead: labels outside [0, K)
(optax reads them as probability-1 emissions), paddings other than 0 and 1
(optax interpolates log-probabilities), ``log_epsilon=-inf`` gives +inf for
infeasible samples instead of NaN everywhere (see the divergence file).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._bridges import bridge_for
from ._contract import CTCCall, Prepared, Traced, as_int, factory, integral, make, shape_of
from ._natives import optax as optax_native
from .errors import CTCValueError

__all__ = ["ctc_loss"]


def _check_shapes(logits, logit_paddings, labels, label_paddings, blank_id):
    """The checks that need only shapes (numpy arrays or jax tracers)."""
    err = CTCValueError
    if logits.ndim != 3:
        raise err(f"logits must be 3-D (B, T, K), got shape {logits.shape}")
    if labels.ndim != 2:
        raise err(f"labels must be 2-D (B, N), got shape {labels.shape}")
    B, T, K = logits.shape
    if label_paddings.shape != labels.shape:
        raise err(f"label_paddings has shape {label_paddings.shape}, labels {labels.shape}")
    if logit_paddings.shape != (B, T):
        raise err(f"logit_paddings has shape {logit_paddings.shape}, expected {(B, T)}")
    if labels.shape[0] != B:
        raise err(f"Expected `labels` to have batch size {B}, got {labels.shape[0]}.")
    if not 0 <= blank_id < K:
        raise err(f"blank_id = {blank_id} is outside [0, K = {K})")


def _prepare(logits, logit_paddings, labels, label_paddings, *, blank_id, log_epsilon):
    err = CTCValueError
    _check_shapes(logits, logit_paddings, labels, label_paddings, blank_id)
    B, T, K = logits.shape
    pads = np.asarray(logit_paddings)
    if not np.isin(pads, (0, 1)).all():
        raise err("logit_paddings must hold 0 (frame used) or 1 (frame padded); got "
                  f"{pads[~np.isin(pads, (0, 1))][0]!r}")
    labels = integral(labels, "labels")
    N = labels.shape[1]
    # optax: labellens = N - sum(label_paddings), truncated to int32
    label_lengths = (N - np.asarray(label_paddings, dtype=np.float64).sum(1)).astype(np.int64)
    bad = np.flatnonzero((label_lengths < 0) | (label_lengths > N))
    if bad.size:
        raise err(f"label_paddings of sample {bad[0]} give a label length of "
                  f"{label_lengths[bad[0]]}, outside [0, {N}]")
    used = pads == 0
    input_lengths = used.sum(1).astype(np.int64)
    contiguous = all(used[b, : input_lengths[b]].all() for b in range(B))
    acts, grad_back = logits, None
    if not contiguous:  # gather the used frames to the front; scatter the gradient back
        acts = np.zeros_like(logits)
        for b in range(B):
            acts[b, : input_lengths[b]] = logits[b, used[b]]

        def grad_back(g):
            out = np.zeros_like(g)
            for b in range(B):
                out[b, used[b]] = g[b, : input_lengths[b]]
            return out

    def post(losses, grad):
        # samples without a valid alignment: optax's log_epsilon arithmetic
        if not np.isfinite(log_epsilon):
            return losses, grad  # optax gives NaN for every sample; we keep +inf (divergence file)
        return optax_native.values(losses, grad, logits, pads == 1, labels, label_lengths,
                                   blank_id, log_epsilon)

    return Prepared(
        acts,
        labels,
        dict(input_lengths=input_lengths, label_lengths=label_lengths, blank=blank_id,
             layout="NTC", inputs="logits", infeasible="inf"),
        grad_back=grad_back,
        post=post,
    )


def _jax_prepare(logits, logit_paddings, labels, label_paddings, *, blank_id, log_epsilon):
    """``_prepare`` with jnp ops, for the JAX bridge's custom-call route (under jit).

    It settles the common case exactly: paddings of 0 and 1, labels within
    [0, K), used frames first (a hole of padded frames is gathered away as
    ``_prepare`` does).  Anything else, and infeasible samples (optax's own
    ``log_epsilon`` value), is handed to the numpy ``_prepare`` through
    ``needs_numpy``, which raises its errors or applies its ``post``.
    """
    import jax
    import jax.numpy as jnp

    _check_shapes(logits, logit_paddings, labels, label_paddings, blank_id)
    if jnp.dtype(labels.dtype).kind not in "iu":
        return None  # the numpy path raises integral()'s TypeError
    K = logits.shape[2]
    N = labels.shape[1]

    def zero_one(p):
        return jnp.all((p == 0) | (p == 1))

    # with 0/1 paddings optax's N - sum(label_paddings) is an exact integer
    label_lengths = N - label_paddings.sum(1).astype(jnp.int32)
    used = logit_paddings == 0
    input_lengths = used.sum(1, dtype=jnp.int32)
    in_label = jnp.arange(N)[None, :] < label_lengths[:, None]
    valid = (zero_one(logit_paddings) & zero_one(label_paddings)
             & jnp.all(~in_label | ((labels >= 0) & (labels < K))))
    # invalid values go to the numpy path; the engine must not see them first
    labels = jnp.clip(labels, 0, K - 1)
    label_lengths = jnp.clip(label_lengths, 0, N)

    # used frames first (a stable sort of the padding flags), only where there are holes
    contiguous = jnp.all(used[:, 1:] <= used[:, :-1])

    def frames(z, inverse=False):
        def gather():
            order = jnp.argsort(~used, axis=1, stable=True)
            order = jnp.argsort(order, axis=1) if inverse else order
            return jnp.take_along_axis(z, order[:, :, None], axis=1)

        return jax.lax.cond(contiguous, lambda: z, gather)

    def grad_back(g):  # engine frames back to their places; padded frames get 0
        return frames(g, inverse=True)

    def needs_numpy(losses):
        infeasible = jnp.any(jnp.isposinf(losses)) if np.isfinite(log_epsilon) else False
        return ~valid | infeasible

    return Traced(frames(logits), labels, input_lengths, label_lengths,
                  dict(blank=blank_id, layout="NTC", inputs="logits", infeasible="inf"),
                  grad_back=grad_back, needs_numpy=needs_numpy)


@factory("optax.ctc_loss")
def _call(blank_id, log_epsilon):
    return CTCCall(prepare=partial(_prepare, blank_id=blank_id, log_epsilon=log_epsilon),
                   batch_size=lambda s: s[0], batch_axis=0,
                   # the JAX bridge's custom-call route under jit (ctcbridge/_bridges/jax.py)
                   traced={"jax": partial(_jax_prepare, blank_id=blank_id,
                                          log_epsilon=log_epsilon)},
                   # optax's result has at least the default float precision
                   at_least_default_float=True)


def ctc_loss(logits, logit_paddings, labels, label_paddings, *, blank_id=0, log_epsilon=-1e5):
    """``optax.ctc_loss`` with ctcbridge's engine (see the module doc); returns (B,)."""
    blank_id = as_int(blank_id, "blank_id")
    log_epsilon = float(log_epsilon)
    shape = shape_of(logits)
    if len(shape) != 3:
        raise CTCValueError(f"logits must be 3-D (B, T, K), got shape {shape}")
    call = make("optax.ctc_loss", blank_id, log_epsilon)
    bridge = bridge_for(logits, logit_paddings, labels, label_paddings)
    return bridge.ctc(call, logits, [logit_paddings, labels, label_paddings])
