"""mkdocs hook (mkdocs.yml ``hooks``): draws docs/decoding.png, the picture of
docs/decoding.md, from ctcbridge itself on every docs build, and checks it.

A synthetic utterance of "hello world" (a class per letter, blank 0) gets an
emission in which each letter is likely over a few frames and the blank
elsewhere, plus noise; the picture is its posteriogram (``ctcbridge.posteriors``)
with the best path (``ctcbridge.forced_align``) drawn on it and the token
spans (``ctcbridge.merge_tokens``) written along the top.  The build fails if
the alignment is not one of the transcript or if a span misses its letter's
posterior mass; the file is rewritten when what this code draws differs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

TEXT = "hello world"
FIGURE = Path(__file__).resolve().parent.parent / "decoding.png"


def utterance(seed: int = 3):
    """(log-probs (T, 1, C), labels (1, L), alphabet): a noisy emission of TEXT."""
    alphabet = ["-"] + sorted(set(TEXT))  # "-" is the blank
    labels = np.array([[alphabet.index(ch) for ch in TEXT]])
    rng = np.random.default_rng(seed)
    durations = rng.integers(2, 5, labels.shape[1])  # frames per letter
    gaps = rng.integers(1, 3, labels.shape[1] + 1)  # blank frames around them
    frames = []
    for k, d, g in zip(labels[0], durations, gaps):
        frames += [0] * g + [k] * d
    frames += [0] * gaps[-1]
    T, C = len(frames), len(alphabet)
    logits = rng.normal(0.0, 1.0, (T, 1, C))
    logits[np.arange(T), 0, frames] += 4.0
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return log_probs, labels, alphabet


def draw() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import ctcbridge

    log_probs, labels, alphabet = utterance()
    gamma = ctcbridge.posteriors(log_probs, labels, inputs="log_probs")[:, 0]  # (T, C)
    path, scores, index = ctcbridge.forced_align(log_probs, labels, inputs="log_probs")
    spans = ctcbridge.merge_tokens(path[0], scores[0], label_index=index[0])
    # the checks: the path spells the transcript, and each span holds its letter
    assert "".join(alphabet[s.token] for s in spans) == TEXT
    for s in spans:
        assert gamma[s.start:s.end, s.token].mean() > 0.5, s

    T, C = gamma.shape
    names = ["blank" if a == "-" else "\u2423" if a == " " else a for a in alphabet]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    ax.imshow(gamma.T, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")
    ax.plot(np.arange(T), path[0], color="tab:red", lw=1.5, marker="o", ms=3,
            label="best path (forced_align)")
    for s in spans:
        ax.axvspan(s.start - 0.5, s.end - 0.5, color="tab:blue", alpha=0.08)
        ax.text((s.start + s.end - 1) / 2, C - 0.3, names[s.token],
                ha="center", va="bottom", fontsize=11, color="tab:blue")
    ax.set_yticks(range(C), names)
    ax.set_ylim(-0.5, C + 0.6)
    ax.set_xlabel("frame")
    ax.set_ylabel("class")
    ax.set_title('posteriors of "hello world" (ctcbridge.posteriors), best path and '
                 "token spans", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    plt.close(fig)
    return out.getvalue()


def on_pre_build(config, **kwargs) -> None:
    png = draw()
    # written only when it changed (`mkdocs serve` watches the folder): a change
    # shows in git; the bytes depend on matplotlib's version, the checks do not
    if not FIGURE.is_file() or FIGURE.read_bytes() != png:
        FIGURE.write_bytes(png)
