"""``ctcbridge explain FROM TO``: what changes when a model moves between two CTC signatures.

Everything printed is generated from :mod:`ctcbridge.conventions` (no text is
written per pair): the conventions that differ, the argument conversion as
runnable code built from :mod:`ctcbridge.convert` (one template per
*encoding* -- how a container or a length is read and written -- never per
pair of signatures), how the loss value and the gradient scale change, and
the edge cases that behave differently.

The conversion code reads the FROM call's arguments by their own names
(``log_probs``, ``targets``...) into four neutral values -- ``acts``
(time-major activations), ``labs`` (a :class:`ctcbridge.convert.Labels`),
``in_lens`` (integer input lengths) and ``b`` (the blank index) -- then
writes the TO call's arguments from them.  ``tests/test_explain.py`` runs it
for every pair of signatures and checks the per-sample losses agree.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from . import conventions as cv
from .conventions import Convention
from .errors import CTCTypeError

__all__ = ["explain", "conversion", "convert_arguments", "call", "add_parser", "run",
           "DECODING", "DecodingConvention", "explain_decoding"]

# ------------------------------------------------------------------ reading
# (labels container, label lengths encoding) -> line reading them into `labs`
_READ_LABELS = {
    ("padded|concatenated", "ints"):
        "labs = (convert.Labels.from_padded({labels}, {label_lengths}) if np.ndim({labels}) == 2"
        "\n        else convert.Labels.from_concatenated({labels}, {label_lengths}))",
    ("padded|sparse", "ints"):
        "labs = (convert.Labels.from_sparse({labels}) if hasattr({labels}, 'indices')"
        "\n        else convert.Labels.from_padded({labels}, {label_lengths}))",
    ("sparse", "from_sparse"): "labs = convert.Labels.from_sparse({labels})",
    ("padded", "ints"): "labs = convert.Labels.from_padded({labels}, {label_lengths})",
    ("padded", "ints|none"): "labs = convert.Labels.from_padded({labels}, {label_lengths})",
    ("padded", "column"):
        "labs = convert.Labels.from_padded({labels}, np.reshape({label_lengths}, -1))",
    ("masks", "masks_labels"): "labs = convert.Labels.from_masks({labels}, {label_lengths})",
    ("sentinel|padded", "sentinel|ints"):
        "labs = (convert.Labels.from_padded({labels}, {label_lengths}) if {use_label_lengths}"
        "\n        else convert.Labels.from_sentinel({labels}, 0 if {blank} == 'first' else -1))",
    ("sentinel|padded", "none|ints"):
        "labs = (convert.Labels.from_sentinel({labels}, -1) if {label_lengths} is None"
        "\n        else convert.Labels.from_padded({labels}, {label_lengths}))",
    ("negatives_removed", "negatives"):
        "labs = convert.Labels.from_sentinel({labels}, 'negative', rule='anywhere')",
    ("flat", "fixed"): "labs = convert.Labels.from_flat({labels}, {label_lengths})",
}
_READ_LABELS[("padded|concatenated", "ints|none")] = _READ_LABELS[("padded|concatenated", "ints")]

# input lengths encoding -> expression of the integer lengths (after `acts` is TNC)
_READ_INPUT_LENGTHS = {
    "ints": "np.asarray({input_lengths})",
    "ints|none": "(np.full(labs.batch, acts.shape[0]) if {input_lengths} is None"
                 "\n           else np.asarray({input_lengths}))",
    "column": "np.reshape({input_lengths}, -1)",
    "masks": "convert.masks_to_lengths({input_lengths})",
    "float32|none": "(np.floor(np.asarray({input_lengths}) + 0.5).astype(np.int64) if "
                    "{use_data_lengths}"
                    "\n           else np.full(labs.batch, acts.shape[0]))",
    "fixed": "np.full(labs.batch, {input_lengths})",
}

# ------------------------------------------------------------------ writing
# (labels container, label lengths encoding) -> {role: expression}
_WRITE_LABELS = {
    ("padded|concatenated", "ints"): {"labels": "labs.padded({dt})", "label_lengths": "labs.lengths"},
    ("padded|sparse", "ints"): {"labels": "labs.padded({dt})", "label_lengths": "labs.lengths"},
    ("sparse", "from_sparse"): {"labels": "tf.SparseTensor(*labs.sparse(np.int32))"},
    ("padded", "ints"): {"labels": "labs.padded({dt})", "label_lengths": "labs.lengths{ast}"},
    ("padded", "column"): {"labels": "labs.padded({dt})", "label_lengths": "labs.lengths[:, None]"},
    ("masks", "masks_labels"): {"labels": "labs.masks()[0]", "label_lengths": "labs.masks()[1]"},
    ("sentinel|padded", "sentinel|ints"): {"labels": "labs.padded({dt})",
                                           "label_lengths": "labs.lengths",
                                           "use_label_lengths": "True"},
    ("sentinel|padded", "none|ints"): {"labels": "labs.sentinel(-1{dtc})",
                                       "label_lengths": "labs.lengths"},
    ("negatives_removed", "negatives"): {"labels": "labs.sentinel(-1{dtc})"},
    ("flat", "fixed"): {"labels": "labs.flat()", "label_lengths": "labs.padded().shape[1]"},
}
for _k in (("padded|concatenated", "ints|none"), ("padded", "ints|none")):
    _WRITE_LABELS[_k] = _WRITE_LABELS[(_k[0], "ints")]

# input lengths encoding -> {role: expression}
_WRITE_INPUT_LENGTHS = {
    "ints": {"input_lengths": "in_lens{ast}"},
    "ints|none": {"input_lengths": "in_lens{ast}"},
    "column": {"input_lengths": "in_lens[:, None]"},
    "masks": {"input_lengths": "convert.lengths_to_masks(in_lens, acts.shape[0])"},
    "float32|none": {"input_lengths": "in_lens.astype(np.float32)", "use_data_lengths": "True"},
    "fixed": {"input_lengths": "int(in_lens[0])"},
}

_FIXED_BLANK = {"first": "0", "last": "acts.shape[-1] - 1"}


def _names(conv: Convention) -> dict:
    """role -> parameter name, plus every parameter by its own name."""
    names = {p.name: p.name for p in conv.params}
    for p in conv.params:
        names.setdefault(p.role, p.name)
    return names


def _layout_expr(conv: Convention) -> str:
    if conv.layout_option is None:
        return repr(conv.layout)
    opt = next(p for p in conv.params if p.name == conv.layout_option)
    if isinstance(opt.default, bool):  # TF: time_major flags
        return f'("TNC" if {opt.name} else "NTC")'
    return opt.name


def read_lines(src: Convention) -> list:
    """Code reading ``src``'s arguments into acts (TNC), labs, in_lens and b."""
    names = _names(src)
    lines = [_READ_LABELS[(src.labels, src.label_lengths)].format(**names)]
    act = names["activations"]
    if src.layout == "TNC" and src.layout_option is None:
        lines.append(f"acts = {act}")
    else:
        batch = ", batch=labs.batch" if src.layout == "flat" else ""
        lines.append(f"acts = convert.layout({act}, {_layout_expr(src)}, 'TNC'{batch})")
    lines.append("in_lens = " + _READ_INPUT_LENGTHS[src.input_lengths].format(**names))
    if src.blank in _FIXED_BLANK:
        lines.append(f"b = {_FIXED_BLANK[src.blank]}")
    else:
        p = src.param("blank")
        value = f"0 if {p.name} is None else {p.name}" if p.default is None else p.name
        lines.append(f"b = convert.blank_index({value}, acts.shape[-1])")
    return lines


def write(src: Convention, dst: Convention) -> tuple[list, dict]:
    """(conversion lines, {dst parameter: expression}) from the neutral values."""
    lines = []
    if src.inputs != dst.inputs and (src.inputs, dst.inputs) != ("log_probs", "logits"):
        eps = f", eps={cv.KERAS_EPSILON!r}" if src.inputs == "probs" else ""
        lines.append(f"acts = convert.inputs(acts, {src.inputs!r}, {dst.inputs!r}{eps})")
    args: dict = {}
    # the blank: passed on where the target takes any index, moved otherwise
    if dst.blank == "arg":
        args["blank"] = "b"
    elif dst.blank == "first|last":
        if src.blank in ("first", "last"):
            args["blank"] = repr(src.blank)
        else:
            lines.append("acts, labs = convert.move_blank(acts, labs, b, 'first')")
            args["blank"] = "'first'"
    elif src.blank != dst.blank:
        lines.append(f"acts, labs = convert.move_blank(acts, labs, b, {dst.blank!r})")
    i32 = dst.int_dtype == "int32"
    fmt = dict(dt="dtype=np.int32" if i32 else "", dtc=", dtype=np.int32" if i32 else "",
               ast=".astype(np.int32)" if i32 else "")
    for role, expr in {**_WRITE_LABELS[(dst.labels, dst.label_lengths)],
                       **_WRITE_INPUT_LENGTHS[dst.input_lengths]}.items():
        args[role] = expr.format(**fmt)
    args["activations"] = ("acts" if dst.layout == "TNC" else
                           f"convert.layout(acts, 'TNC', {dst.layout!r})")
    if dst.reductions:  # per-sample losses, reduced afterwards the way src does
        args["reduction"] = repr(next(k for k, v in dst.reductions.items() if v == "none"))
    out = {}
    for p in dst.params:
        if p.role in args or p.name in args:
            out[p.name] = args.get(p.name, args.get(p.role))
    return lines, out


def call_text(dst: Convention, args: dict) -> str:
    """The TO call, its arguments by position up to the first one skipped."""
    ctor = [p for p in dst.params if p.role == "constructor"]
    params = [p for p in dst.params if p.role != "constructor"]
    parts, positional = [], True
    for p in params:
        if p.name not in args:
            positional = False
            continue
        keyword = not positional or p.role in ("blank", "reduction", "option")
        positional = positional and not keyword
        parts.append(f"{p.name}={args[p.name]}" if keyword else args[p.name])
    func = f"{dst.module}.{dst.call}"
    if ctor:
        func = f"{dst.module}.{dst.call[:-2]}(" + ", ".join(
            f"{p.name}={args[p.name]}" for p in ctor if p.name in args) + ")"
    text = f"{func}(" + ", ".join(parts) + ")"
    if len(text) > 80:  # one argument per line
        text = f"{func}(\n    " + ",\n    ".join(parts) + ")"
    return text


def conversion(src_name: str, dst_name: str) -> str:
    """Runnable code turning ``src_name``'s call arguments into a ``dst_name`` call
    giving the same per-sample losses (``loss``)."""
    src, dst = cv.get(src_name), cv.get(dst_name)
    lines, args = write(src, dst)
    head = ["import numpy as np", f"import {dst.module}", "from ctcbridge import convert"]
    if "tf.SparseTensor" in " ".join(args.values()):
        head.append("import tensorflow as tf")
    code = head + [f"# read the {src.name} arguments"] + read_lines(src) + \
        [f"# write the {dst.name} arguments"] + lines + ["loss = " + call_text(dst, args)]
    return "\n".join(code)


def convert_arguments(src_name: str, dst_name: str, **args) -> dict:
    """The arguments of a ``dst_name`` call equivalent to the ``src_name`` call with
    ``args`` (by parameter name; omitted ones take their defaults): the
    conversion code :func:`conversion` prints, run on these values.

    >>> import numpy as np
    >>> lp = np.log(np.full((4, 2, 3), 1 / 3))
    >>> args = convert_arguments("torch", "optax", log_probs=lp, targets=[1, 2, 1],
    ...                          input_lengths=[4, 3], target_lengths=[2, 1])
    >>> sorted(args), args["logits"].shape, args["label_paddings"].tolist()
    (['blank_id', 'label_paddings', 'labels', 'logit_paddings', 'logits'], (2, 4, 3), [[0.0, 0.0], [0.0, 1.0]])
    """
    import numpy as np

    from . import convert

    src, dst = cv.get(src_name), cv.get(dst_name)
    unknown = set(args) - {p.name for p in src.params}
    if unknown:
        raise CTCTypeError(f"{src.name} has no parameter {sorted(unknown)[0]!r}")
    ns = {"np": np, "convert": convert}
    ns.update({p.name: p.default for p in src.params if p.default != "<required>"})
    ns.update(args)
    lines, out = write(src, dst)
    if any("tf." in expr for expr in out.values()):
        import tensorflow as tf

        ns["tf"] = tf
    exec(compile("\n".join(read_lines(src) + lines), f"<{src.name} -> {dst.name}>", "exec"), ns)
    return {name: eval(expr, ns) for name, expr in out.items()}


def call(name: str, **args):
    """Call signature ``name`` with arguments by parameter name (a class is
    constructed from its constructor arguments, then called)."""
    import importlib

    conv = cv.get(name)
    module = importlib.import_module(conv.module)
    if conv.call.endswith("()"):  # a block: constructed, then called positionally (Gluon)
        ctor = {p.name: args.pop(p.name) for p in conv.params
                if p.role == "constructor" and p.name in args}
        params = [p for p in conv.params if p.role != "constructor"]
        last = max((i for i, p in enumerate(params) if p.name in args), default=-1)
        positional = [args.pop(p.name, p.default) for p in params[: last + 1]]
        if args:
            raise CTCTypeError(f"{name} has no parameter {sorted(args)[0]!r}")
        return getattr(module, conv.call[:-2])(**ctor)(*positional)
    return getattr(module, conv.call)(**args)


# ----------------------------------------------------------------- the text
def _reduction_lines(src: Convention, dst: Convention) -> list:
    out = []
    per = "per-sample losses (N,)"
    if dst.reductions:
        p = dst.param("reduction")
        none = next(k for k, v in dst.reductions.items() if v == "none")
        out.append(f"The code asks {dst.name} for {per} ({p.name}={none!r}); its default "
                   f"{p.default!r} is {cv.REDUCTIONS[dst.reduction]}.")
    elif dst.reduction == "gradient_only":
        out.append(f"{dst.name} has {cv.REDUCTIONS[dst.reduction]}: use its output as the "
                   "loss node (e.g. out.sum()); the code's `loss` is that softmax.")
    else:
        out.append(f"{dst.name} returns {cv.REDUCTIONS[dst.reduction]} {dst.output}.")
    src_opts = src.reductions or {"(always)": src.reduction}
    for option, kind in src_opts.items():
        if kind == "gradient_only":
            out.append(f"  {src.name} returned softmax(data), not a loss; its training "
                       "gradient is that of the per-sample losses' sum: convert.reduce(loss, "
                       "'sum')")
            continue
        expr = {"none": "loss",
                "sum": "convert.reduce(loss, 'sum')",
                "mean": "convert.reduce(loss, 'mean')",
                "mean_per_label": "convert.reduce(loss, 'mean_per_label', "
                                  "label_lengths=labs.lengths)",
                "weighted": "convert.reduce(loss, 'weighted', sample_weight=sample_weight, "
                            "weight=weight)"}[kind]
        label = (f" with {src.param('reduction').name}={option!r}" if src.reductions else "")
        shape = ", shaped (N, 1)" if src.output == "(N, 1)" else ""
        out.append(f"  {src.name}'s result{label} ({cv.REDUCTIONS[kind]}{shape}): {expr}")
    return out


def _scale(conv: Convention) -> str:
    return {"none": "1 per sample", "sum": "1", "mean": "1/N",
            "mean_per_label": "1/(N * max(L_n, 1)) for sample n",
            "weighted": "sample_weight_n * weight",
            "gradient_only": "1 per sample (the head gradient is ignored)"}[conv.reduction]


_EDGE_ATTRS = {"infeasible": "infeasible sample (fewer frames than labels + repeats)",
               "empty_label": "empty label", "zero_length": "zero-length input",
               "blank_in_labels": "a label equal to the blank"}


def explain(src_name: str, dst_name: str) -> str:
    """The text ``ctcbridge explain FROM TO`` prints."""
    src, dst = cv.get(src_name), cv.get(dst_name)
    w = max(len(src.name), len(dst.name))  # column of the descriptions
    out = [f"From {src.name}: {src.entry} (mirrors {src.mirrors})",
           f"  to {dst.name}: {dst.entry} (mirrors {dst.mirrors})", ""]
    differ, same = [], []
    for title, attr, _ in cv.FIELDS:
        if attr in _EDGE_ATTRS:  # listed under "Edge cases"
            continue
        a, b = cv.describe(src, attr), cv.describe(dst, attr)
        if a == b:
            same.append(title)
        else:
            differ.append((title, a, b))
    out.append("Conventions that differ:" if differ else "No convention differs.")
    for title, a, b in differ:
        out += [f"  {title}:", f"    {src.name:<{w}} {a}", f"    {dst.name:<{w}} {b}"]
    if same:
        out.append("The same in both: " + ", ".join(same) + ".")
    out += ["", "Argument conversion (same per-sample losses; ctcbridge.convert):", ""]
    out += ["    " + line for line in conversion(src_name, dst_name).splitlines()]
    out += ["", "Loss value (per-sample losses agree; reductions differ):"]
    out += ["  " + line for line in _reduction_lines(src, dst)]
    if "probs" in (src.inputs, dst.inputs) and src.inputs != dst.inputs:
        out.append(f"  {'keras-batch-cost'} reads log(p + {cv.KERAS_EPSILON:g}): per-sample "
                   "losses differ by about that epsilon / p (the code reproduces it when "
                   "converting from probabilities).")
    out += ["", "Gradient:"]
    if src.gradient != dst.gradient:
        out.append(f"  {src.name} differentiates {cv.GRADIENTS[src.gradient]};")
        out.append(f"  {dst.name} {cv.GRADIENTS[dst.gradient]}.")
        if "log_probs" in (src.gradient, dst.gradient):
            out.append("  Through a log_softmax in the graph both give softmax - gamma w.r.t. "
                       "the logits.")
    else:
        out.append(f"  both {cv.GRADIENTS[src.gradient]}.")
    out.append(f"  Scale of each sample's gradient under the default reduction: {src.name} "
               f"{_scale(src)}; {dst.name} {_scale(dst)}.")
    if src.layout != dst.layout:
        out.append(f"  It comes back in each signature's layout ({src.layout} -> {dst.layout}).")
    out += ["", "Edge cases:"]
    for attr, title in _EDGE_ATTRS.items():
        a, b = cv.describe(src, attr), cv.describe(dst, attr)
        if a == b:
            out.append(f"  {title}: the same ({a})")
        else:
            out += [f"  {title}:", f"    {src.name:<{w}} {a}", f"    {dst.name:<{w}} {b}"]
    notes = [(c.name, n) for c in (src, dst) for n in c.notes]
    if notes:
        out += ["", "Notes:"] + [f"  {name}: {note}" for name, note in notes]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------- decoding
@dataclass(frozen=True)
class DecodingConvention:
    """How one aligner or decoder reads its input and what it returns (measured with
    the natives: docs/decoding.md, docs/c_api.md; tests/frameworks/test_explain_decoding.py
    checks the machine-readable fields against them)."""

    name: str
    entry: str  # the native's (or ctcbridge's) function
    layout: str  # "TNC", "NTC" or "1TC" (a batch of one); ctcbridge's: either
    inputs: str  # what the activations are
    default_blank: str  # "0", "C-1", or "fixed C-1" (no argument)
    blank: str  # how the blank is chosen
    repeats: str  # how runs of a label are treated
    ties: str  # the tie-breaking rule
    scores: str  # the scores returned
    output: str  # the paths' container and padding


DECODING = {c.name: c for c in [
    DecodingConvention(
        "ctcbridge.forced_align", "ctcbridge.forced_align", "TNC (layout=: or NTC)",
        "logits or log-probabilities (inputs=)", "0",
        "blank= (any class; the labels must not hold it)",
        "a repeated label needs a blank between its frames (merge_repeated=False: TF v1's "
        "lattice, no self-loops)",
        "torchaudio's: a cell's predecessor is the same state, then s-1, then s-2, a later "
        "one only when strictly better; the final blank only when strictly better than the "
        "last label",
        "per frame, the log-probability of the path's class (their sum: the path's)",
        "Alignment(path, scores, label_index), each (N, T), pad= (-1) past the length"),
    DecodingConvention(
        "ctcbridge.decode_greedy", "ctcbridge.decode_greedy", "TNC (layout=: or NTC)",
        "logits or log-probabilities (inputs=)", "0", "blank= (any class)",
        "merged (merge_repeated=False keeps them: TF v1's option), then blanks dropped",
        "the smallest class index among equal maxima",
        "the best path's log-probability: sum over frames of log softmax at the argmax",
        "Decoded(sequences (N, T), lengths, scores), pad= (-1)"),
    DecodingConvention(
        "ctcbridge.decode_beam", "ctcbridge.decode_beam", "TNC (layout=: or NTC)",
        "logits or log-probabilities (inputs=)", "0", "blank= (any class)",
        "merged inside the search (prefix beam search: a repeat needs a blank between)",
        "score descending, then the label sequences in lexicographic order (a prefix before "
        "its extensions): a total order, the same for any thread count",
        "log of each prefix's probability (the beam's sum over its paths)",
        "Decoded(sequences (N, K, T), lengths (N, K), scores (N, K)), pad= (-1); paths "
        "beyond the beam's prefixes: length 0, score -inf"),
    DecodingConvention(
        "torchaudio.forced_align", "torchaudio.functional.forced_align", "1TC",
        "log-probabilities, used as given", "0", "blank= (targets must not hold it)",
        "a repeated target needs a blank between its frames (T >= L + repeats)",
        "stay, then s-1, then s-2, a later one only when strictly better; the last label over "
        "the final blank unless the blank is strictly better",
        "per frame, log_probs[0, t, path[t]]",
        "(alignments (1, T) in the targets' dtype, scores (1, T)); batch size 1"),
    DecodingConvention(
        "torchaudio.merge_tokens", "torchaudio.functional.merge_tokens", "1TC",
        "one path (1-D tokens) and its frame scores", "0", "blank= (dropped)",
        "each run of one token is one span (a repeated token with no blank between is one "
        "span: ctcbridge's label_index tells them apart)",
        "-",
        "each span's mean frame score",
        "[TokenSpan(token, start, end (exclusive), score)]"),
    DecodingConvention(
        "tensorflow.ctc_greedy_decoder", "tf.nn.ctc_greedy_decoder (= tf.compat.v1.nn's)",
        "TNC", "raw inputs: no normalisation", "C-1",
        "blank_index= (None: C - 1, negative counts from C)",
        "merge_repeated=True merges runs, then blanks dropped; False keeps them",
        "the smallest class index among equal maxima (RowMax)",
        "neg_sum_logits (B, 1): minus the sum over frames of the largest raw input",
        "[SparseTensor] of int64 labels, dense shape (B, longest)"),
    DecodingConvention(
        "tensorflow.ctc_beam_search_decoder", "tf.nn.ctc_beam_search_decoder", "TNC",
        "logits (softmax applied)", "fixed C-1", "always the last class",
        "merged inside the search; nothing after it",
        "TF's TopN over the pruned beam: unspecified among equal totals (divergence "
        "tf-beam-search-pruning)",
        "log_probabilities (B, top_paths): each prefix's total",
        "top_paths SparseTensors of int64 labels"),
    DecodingConvention(
        "tensorflow.ctc_beam_search_decoder_v1", "tf.compat.v1.nn.ctc_beam_search_decoder",
        "TNC", "logits (softmax applied)", "fixed C-1", "always the last class",
        "merged inside the search, and merge_repeated=True (the default) also merges runs "
        "of equal labels in each returned prefix",
        "as tf.nn.ctc_beam_search_decoder",
        "log_probabilities (B, top_paths): each prefix's total (before the merge)",
        "top_paths SparseTensors of int64 labels"),
    DecodingConvention(
        "keras.ctc_decode", "keras.ops.ctc_decode", "NTC", "logits", "0",
        "mask_index= (None: C - 1)",
        "greedy: merge_repeated=True merges; beam_search: merged inside the search, "
        "merge_repeated ignored",
        "greedy: the smallest class index; beam_search: TF's on the TensorFlow backend (the "
        "JAX and torch backends: divergences keras-beam-fewer-prefixes, keras-beam-zero-length)",
        "greedy (B, 1): minus the sum of the frames' largest inputs; beam_search "
        "(B, top_paths): log-probabilities",
        "decoded int32 (top_paths, B, T) padded with -1"),
    DecodingConvention(
        "keras.ctc_decode_legacy", "keras.backend.ctc_decode (legacy)", "NTC",
        "softmax probabilities, read as log(p + 1e-7)", "fixed C-1", "always the last class",
        "merged (greedy; beam search: TF v1's merge_repeated=True)",
        "as TF's greedy and beam decoders",
        "log_prob: (B, 1) greedy, (B, top_paths) beam search",
        "a list of top_paths (B, T) arrays padded with -1"),
]}

_DECODING_ASPECTS = {"layout": "activations' layout", "inputs": "activations",
                     "blank": "blank", "repeats": "repeated labels", "ties": "ties",
                     "scores": "scores returned", "output": "returns"}


def explain_decoding(src_name: str | None = None, dst_name: str | None = None) -> str:
    """The decoding conventions of every aligner and decoder, or what changes from
    `src_name` to `dst_name` (names of :data:`DECODING`)."""
    import textwrap

    def block(title: str, text: str, indent: str, width: int = 22) -> list:
        return textwrap.wrap(text, 96, initial_indent=f"{indent}{title + ':':<{width}}",
                             subsequent_indent=indent + " " * width)

    out: list = []
    if src_name is None:
        for conv in DECODING.values():
            out.append(f"{conv.name} ({conv.entry})")
            for attr, title in _DECODING_ASPECTS.items():
                out += block(title, getattr(conv, attr), "  ")
            out.append("")
        return "\n".join(out)
    src, dst = DECODING[src_name], DECODING[dst_name or src_name]
    out.append(f"{src.name} ({src.entry}) -> {dst.name} ({dst.entry})")
    for attr, title in _DECODING_ASPECTS.items():
        a, b = getattr(src, attr), getattr(dst, attr)
        if a == b:
            out += block(title, f"the same ({a})", "  ")
        else:
            out.append(f"  {title}:")
            w = max(len(src.name), len(dst.name)) + 2
            out += block(src.name, a, "    ", w) + block(dst.name, b, "    ", w)
    if src.default_blank != dst.default_blank:
        out.append(f"  The default blank moves ({src.default_blank} -> {dst.default_blank}): "
                   "pass it explicitly, or move the class.")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------- command line
def _signature_name(name: str) -> str:
    """FROM/TO: a name of :data:`conventions.NAMES` (``torch``) or the conform row's
    (``torch.ctc_loss``), as the former; or an aligner's or decoder's (:data:`DECODING`)."""
    if name in DECODING:
        return name
    try:
        return cv.get(name).name
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown signature {name!r} (choose from {', '.join(cv.CONVENTIONS)}, or a "
            "`ctcbridge conform --list-conventions` name, or an aligner or decoder: "
            f"{', '.join(DECODING)})") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``explain`` on the ``ctcbridge`` command's subparsers."""
    parser = subparsers.add_parser(
        "explain", help="what changes when moving a model from one CTC signature to another",
        description="Print every convention that differs between two signatures, the "
                    "argument conversion, the loss and gradient scale, and the edge cases. "
                    "Signatures: " + ", ".join(cv.NAMES) + " (and ctcbridge, the canonical API), "
                    "or their `ctcbridge conform` names (torch.ctc_loss...).")
    parser.add_argument("source", nargs="?", metavar="FROM", type=_signature_name)
    parser.add_argument("target", nargs="?", metavar="TO", type=_signature_name)
    parser.add_argument("--table", action="store_true",
                        help="print the conventions of every signature as a markdown table")
    parser.add_argument("--list", action="store_true", help="list the signature names")
    parser.add_argument("--decoding", action="store_true",
                        help="the aligners' and decoders' conventions (blank, repeats, ties, "
                             "scores); with FROM TO (decoder names) what changes between two")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.table:
        print(cv.markdown_table(), end="")
        return 0
    if args.list:
        for name in cv.CONVENTIONS:
            conv = cv.CONVENTIONS[name]
            print(f"{name:<17} {conv.entry:<48} {conv.mirrors}")
        return 0
    decoders = [n for n in (args.source, args.target) if n in DECODING]
    if args.decoding or decoders:
        if decoders and len(decoders) != len([n for n in (args.source, args.target) if n]):
            print("ctcbridge explain: FROM and TO must both be losses or both aligners/decoders "
                  f"({', '.join(DECODING)})", file=sys.stderr)
            return 2
        print(explain_decoding(args.source, args.target), end="")
        return 0
    if args.source is None or args.target is None:
        print("ctcbridge explain: give FROM and TO (one of: " + ", ".join(cv.CONVENTIONS)
              + "), or --table / --list", file=sys.stderr)
        return 2
    print(explain(args.source, args.target), end="")
    return 0
