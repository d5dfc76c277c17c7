"""warp-ctc's own values (Baidu's library, behind MXNet's CTC and Theano's CTC Op)
where the exact loss is +inf.

warp-ctc first counts the frames a sample needs (L plus one per repeat,
:func:`ctcbridge._numerics.required_frames`) and gives up on a sample with
fewer: loss 0, gradient 0.  A sample that passes the count but has no
alignment of nonzero probability (-inf logits; with Theano, 0s inside its
labels, 0 being the blank) costs +inf, and its gradient is the softmax (no
alignment occupies any state).  MXNet and Theano read warp-ctc slightly
differently (:func:`mxnet_values`, :func:`theano_values`); the signatures and
their conformance rows use these.
"""

from __future__ import annotations

import numpy as np

from .._numerics import log_softmax, required_frames, softmax


def mxnet_values(data, labels, input_lengths, label_lengths, time_major, losses, grad):
    """In place: MXNet's (warp-ctc's) loss and gradient for every sample whose exact
    loss is +inf.  Too few frames: loss 0 and gradient 0 (MXNet leaves that
    gradient uninitialised).  Enough frames but probability 0 (-inf logits): +inf
    and the softmax as gradient on the sample's frames."""
    for n in np.flatnonzero(np.isposinf(losses)):
        Tb = int(input_lengths[n])
        short = required_frames(labels[n, : label_lengths[n]]) > Tb
        losses[n] = 0.0 if short else np.inf
        if grad is None:
            continue
        g = grad[:, n] if time_major else grad[n]
        g[...] = 0.0
        if not short:
            x = data[:Tb, n] if time_major else data[n, :Tb]
            g[:Tb] = softmax(x.astype(np.float64))
    return losses, grad


def theano_values(activations, seqs, input_lengths, losses, grad):
    """In place: Theano's Op's (warp-ctc's) costs and gradient, from the exact ones
    computed with warp-ctc's rule for labels equal to the blank.  `activations`
    (T, B, C), `seqs` each sample's label sequence.  An empty label on no frame
    costs +inf (the log-likelihood of no frame is log 0 there), gradient 0."""
    for b, seq in enumerate(seqs):
        Tb = int(input_lengths[b])
        if Tb == 0 and seq.size == 0:
            losses[b] = np.inf
            if grad is not None:
                grad[:, b] = 0.0
        elif required_frames(seq) > Tb:
            losses[b] = 0.0  # warp-ctc gives up on too few frames: 0, zero gradient
            if grad is not None:
                grad[:, b] = 0.0
        elif np.isposinf(losses[b]) and grad is not None:
            # warp-ctc runs the recursion, finds no path: +inf, the softmax as gradient
            grad[:Tb, b] = np.exp(log_softmax(activations[:Tb, b].astype(np.float64)))
    return losses, grad
