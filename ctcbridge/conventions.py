"""The CTC conventions of every signature ctcbridge reproduces, as data.

One :class:`Convention` per signature (the names ``ctcbridge explain`` takes),
holding every axis on which the frameworks differ: input kind, layout, blank
rule, label container and padding, length encodings, reduction and loss
scale, output, the value of infeasible samples, empty labels and zero-length
inputs, the tensor the gradient is taken with respect to, and what a label
equal to the blank means.

This table is the single description the rest of the package reads:
``ctcbridge explain`` and the migration guide's conventions table are
generated from it, the conversion code they show is built from its encodings
(with :mod:`ctcbridge.convert`), and ``tests/test_conventions.py`` probes
every adapter to check each entry holds (and that the constants here, such
as :data:`KERAS_EPSILON`, are the adapters' own).

>>> from ctcbridge.conventions import CONVENTIONS
>>> CONVENTIONS["gluon"].blank, CONVENTIONS["torch"].inputs
('last', 'log_probs')
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Convention", "CONVENTIONS", "NAMES", "FIELDS", "get", "describe", "markdown_table",
           "markdown_card"]

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): ctc_batch_cost reads log(p + 1e-7)

# The vocabulary of each axis, with the sentence ``explain`` prints for it.
INPUTS = {
    "logits": "unnormalised logits (log_softmax applied inside)",
    "log_probs": "log-probabilities, used as given",
    "probs": "softmax probabilities, read as log(p + 1e-7)",
}
LAYOUTS = {
    "TNC": "time-major (T, N, C)",
    "NTC": "batch-major (N, T, C)",
    "steps": "a list of T arrays (N, C)",
    "flat": "flattened (T*N, C), row t*N + n",
}
BLANKS = {
    "arg": "an argument, any class",
    "first": "class 0, fixed",
    "last": "class C-1, fixed",
    "first|last": "'first' (0) or 'last' (C-1)",
}
LABELS = {
    "padded": "padded (N, S), read up to the label lengths",
    "padded|concatenated": "padded (N, S) or concatenated 1-D, with lengths",
    "padded|sparse": "dense padded (N, S) with lengths, or a SparseTensor",
    "sparse": "a SparseTensor (indices, values, dense_shape)",
    "masks": "padded (N, S) with padding masks (1.0 = padded)",
    "sentinel|padded": "padded (N, S): up to the first padding value, or up to label_lengths",
    "negatives_removed": "padded (N, S): every negative value removed, wherever it sits",
    "flat": "flat (N * label_length,), zero-padded, every 0 removed",
}
LENGTHS = {
    "ints": "integers (N,)",
    "ints|none": "integers (N,), or None for full length",
    "column": "integers shaped (N, 1)",
    "masks": "padding masks (N, T), 1.0 = padded frame (skipped anywhere)",
    "float32|none": "float32 (N,) rounded, used only with use_data_lengths=True",
    "fixed": "one integer for the whole batch",
    "sentinel|ints": "from the padding, or label_lengths (use_label_lengths=True)",
    "none|ints": "from the -1 padding, or label_lengths",
    "masks_labels": "padding masks (N, S), length = S - sum",
    "negatives": "the number of non-negative entries",
    "from_sparse": "the sparse rows",
}
REDUCTIONS = {
    "none": "per-sample losses",
    "sum": "the sum",
    "mean": "the batch mean",
    "mean_per_label": "the batch mean of loss / max(label length, 1)",
    "weighted": "per-sample loss x sample_weight x weight",
    "gradient_only": "no loss value: the output is softmax(data), the backward pass writes "
                     "each sample's gradient unscaled",
}
INFEASIBLE = {
    "inf": "+inf, gradient NaN",
    "inf|zero": "+inf with NaN gradient, or 0 and gradient 0 with zero_infinity=True",
    "sentinel": "finite: about 706.9 + partial NLL (TF's log(1e-307) sentinel), and its gradient",
    "log_epsilon": "finite: about -log_epsilon = 1e5 per impossible step, and its gradient",
    "zero": "0, gradient 0",
    "1e10": "finite: 1e10 + partial NLL",
    "error|inf": "too few frames (L > T): an error; repeats only: +inf with a softmax gradient",
}
EMPTY = {"exact": "the exact loss -sum_t log p_t(blank)", "error": "an error"}
ZERO_LENGTH = {  # T_b = 0: (empty label, non-empty label)
    "0|inf": "empty label: 0; otherwise +inf",
    "0|sentinel": "empty label: 0; otherwise 706.8936 (the sentinel)",
    "0|log_epsilon": "empty label: 0; otherwise 1e5 - log 2",
    "inf|0": "empty label: +inf; otherwise 0 (warp-ctc)",
    "0|0": "0 (an empty label on no frame has probability 1; MXNet's own gives +inf)",
    "0|1e10": "empty label: 0; otherwise 1e10 (Chainer itself reads a length 0 as the full T)",
    "full": "a length 0 is read as the full T",
    "error": "an error",
}
GRADIENTS = {
    "log_probs": "w.r.t. log-probabilities: -gamma (exact; no softmax term)",
    "logits": "w.r.t. logits: softmax - gamma",
    "probs": "w.r.t. probabilities: (softmax(log(p + eps)) - gamma) / (p + eps)",
}
BLANK_IN_LABELS = {
    "skip": "a label equal to the blank is an ordinary label (skips allowed when l'_s != l'_s-2)",
    "warp": "warp-ctc: never skips into a label equal to the blank",
    "skip|error": "an ordinary label with blank_index 0; an error with another blank_index "
                  "(TF would read it as another class)",
    "ends": "a blank ends the sequence (a label after it is an error)",
    "padding": "a label equal to the blank (0) is padding, removed",
}


@dataclass(frozen=True)
class Param:
    """One parameter of the mirrored call: its name and what it carries."""

    name: str
    role: str  # activations, labels, label_lengths, input_lengths, blank, reduction,
    # option (a call option), constructor (a class's constructor argument)
    default: object = "<required>"


@dataclass(frozen=True)
class Convention:
    name: str  # the name ``ctcbridge explain`` takes
    module: str  # ctcbridge module
    call: str  # attribute called (``CTCLoss()`` for classes: constructed then called)
    mirrors: str  # the native it reproduces
    params: tuple  # of Param, in the call's order (constructor parameters are options)
    inputs: str  # key of INPUTS
    layout: str  # key of LAYOUTS (the default one)
    blank: str  # key of BLANKS
    labels: str  # key of LABELS
    input_lengths: str  # key of LENGTHS
    label_lengths: str  # key of LENGTHS
    reduction: str  # key of REDUCTIONS given by default
    reductions: dict  # option value -> key of REDUCTIONS (empty: no reduction argument)
    output: str  # shape of the default result: (N,), (N, 1), () or softmax (no loss)
    infeasible: str  # key of INFEASIBLE
    empty_label: str  # key of EMPTY
    zero_length: str  # key of ZERO_LENGTH
    gradient: str  # key of GRADIENTS
    blank_in_labels: str  # key of BLANK_IN_LABELS
    dtypes: str  # activations / labels dtypes accepted
    notes: tuple = field(default=())  # further differences from the other signatures
    layout_option: str | None = None  # the parameter choosing another layout
    int_dtype: str = "int64"  # integer dtype its labels and lengths are written in

    @property
    def entry(self) -> str:
        return f"{self.module}.{self.call}"

    def param(self, role: str) -> Param | None:
        return next((p for p in self.params if p.role == role), None)


def _p(name, role, default="<required>"):
    return Param(name, role, default)


_TORCH_PARAMS = (_p("log_probs", "activations"), _p("targets", "labels"),
                 _p("input_lengths", "input_lengths"), _p("target_lengths", "label_lengths"),
                 _p("blank", "blank", 0), _p("reduction", "reduction", "mean"),
                 _p("zero_infinity", "option", False))

_ALL = [
    Convention(
        "ctcbridge", "ctcbridge", "ctc_loss", "(canonical numpy API)",
        (_p("activations", "activations"), _p("labels", "labels"),
         _p("input_lengths", "input_lengths", None), _p("label_lengths", "label_lengths", None),
         _p("blank", "blank", 0), _p("layout", "option", "TNC"),
         _p("reduction", "reduction", "none")),
        inputs="logits", layout="TNC", blank="arg", labels="padded|concatenated",
        input_lengths="ints|none", label_lengths="ints|none", reduction="none",
        reductions={"none": "none", "sum": "sum", "mean": "mean"}, output="(N,)",
        infeasible="inf|zero", empty_label="exact", zero_length="0|inf", gradient="logits",
        blank_in_labels="skip", dtypes="float16/32/64, bfloat16 / any integer",
        notes=("inputs='log_probs' and layout='NTC' select the other forms",),
        layout_option="layout"),
    Convention(
        "torch", "ctcbridge.torch", "ctc_loss", "torch.nn.functional.ctc_loss, torch.nn.CTCLoss",
        _TORCH_PARAMS,
        inputs="log_probs", layout="TNC", blank="arg", labels="padded|concatenated",
        input_lengths="ints", label_lengths="ints", reduction="mean_per_label",
        reductions={"none": "none", "sum": "sum", "mean": "mean_per_label"}, output="()",
        infeasible="inf|zero", empty_label="exact", zero_length="0|inf", gradient="log_probs",
        blank_in_labels="skip", dtypes="float32/64 / any integer (floats cast)",
        notes=("unbatched (T, C) log_probs are accepted",
               "CTCLoss(blank, reduction, zero_infinity) is the same call as a module")),
    Convention(
        "tensorflow", "ctcbridge.tensorflow", "ctc_loss", "tf.nn.ctc_loss",
        (_p("labels", "labels"), _p("logits", "activations"), _p("label_length", "label_lengths"),
         _p("logit_length", "input_lengths"), _p("logits_time_major", "option", True),
         _p("unique", "option", None), _p("blank_index", "blank", None), _p("name", "option", None)),
        inputs="logits", layout="TNC", blank="arg", labels="padded|sparse",
        input_lengths="ints", label_lengths="ints", reduction="none", reductions={},
        output="(N,)", infeasible="sentinel", empty_label="exact", zero_length="0|sentinel",
        gradient="logits", blank_in_labels="skip|error", dtypes="float16/32/64 / integer",
        notes=("blank_index defaults to 0 (dense) and is required with a SparseTensor; "
               "negative values count from the end",
               "a SparseTensor follows tf.compat.v1's kernel rules"),
        layout_option="logits_time_major"),
    Convention(
        "tensorflow-v1", "ctcbridge.tensorflow", "ctc_loss_v1", "tf.compat.v1.nn.ctc_loss",
        (_p("labels", "labels"), _p("inputs", "activations", None),
         _p("sequence_length", "input_lengths", None),
         _p("preprocess_collapse_repeated", "option", False),
         _p("ctc_merge_repeated", "option", True),
         _p("ignore_longer_outputs_than_inputs", "option", False),
         _p("time_major", "option", True), _p("logits", "option", None)),
        inputs="logits", layout="TNC", blank="last", labels="sparse",
        input_lengths="ints", label_lengths="from_sparse", reduction="none", reductions={},
        output="(N,)", infeasible="error|inf", empty_label="error", zero_length="error",
        gradient="logits", blank_in_labels="ends", dtypes="float32/64 / integer SparseTensor",
        notes=("ignore_longer_outputs_than_inputs=True gives too-long samples loss 0",
               "ctc_merge_repeated=False and preprocess_collapse_repeated change the loss"),
        layout_option="time_major"),
    Convention(
        "keras", "ctcbridge.keras", "ctc_loss", "keras.ops.ctc_loss",
        (_p("target", "labels"), _p("output", "activations"), _p("target_length", "label_lengths"),
         _p("output_length", "input_lengths"), _p("mask_index", "blank", 0)),
        inputs="logits", layout="NTC", blank="arg", labels="padded",
        input_lengths="ints", label_lengths="ints", reduction="none", reductions={},
        output="(N,)", infeasible="sentinel", empty_label="exact", zero_length="0|sentinel",
        gradient="logits", blank_in_labels="skip|error", dtypes="float16/32/64 / integer",
        notes=("the TF backend's values (sentinel for infeasible samples)",)),
    Convention(
        "keras-batch-cost", "ctcbridge.keras", "ctc_batch_cost", "keras.backend.ctc_batch_cost",
        (_p("y_true", "labels"), _p("y_pred", "activations"), _p("input_length", "input_lengths"),
         _p("label_length", "label_lengths")),
        inputs="probs", layout="NTC", blank="last", labels="padded",
        input_lengths="column", label_lengths="column", reduction="none", reductions={},
        output="(N, 1)", infeasible="error|inf", empty_label="error", zero_length="error",
        gradient="probs", blank_in_labels="ends", dtypes="float16/32/64 / integer",
        notes=("reads log(y_pred + 1e-7): losses differ from the exact ones by ~1e-7 / p",)),
    Convention(
        "optax", "ctcbridge.optax", "ctc_loss", "optax.ctc_loss",
        (_p("logits", "activations"), _p("logit_paddings", "input_lengths"),
         _p("labels", "labels"), _p("label_paddings", "label_lengths"),
         _p("blank_id", "blank", 0), _p("log_epsilon", "option", -1e5)),
        inputs="logits", layout="NTC", blank="arg", labels="masks",
        input_lengths="masks", label_lengths="masks_labels", reduction="none", reductions={},
        output="(N,)", infeasible="log_epsilon", empty_label="exact", zero_length="0|log_epsilon",
        gradient="logits", blank_in_labels="skip", dtypes="float / integer",
        notes=("blank_id and log_epsilon are keyword-only",
               "a padded frame in the middle of a sequence is skipped")),
    Convention(
        "mxnet", "ctcbridge.mxnet", "ctc_loss", "mxnet.nd.contrib.ctc_loss (mx.nd.ctc_loss)",
        (_p("data", "activations"), _p("label", "labels"), _p("data_lengths", "input_lengths", None),
         _p("label_lengths", "label_lengths", None), _p("use_data_lengths", "option", False),
         _p("use_label_lengths", "option", False), _p("blank_label", "blank", "first")),
        inputs="logits", layout="TNC", blank="first|last", labels="sentinel|padded",
        input_lengths="float32|none", label_lengths="sentinel|ints", reduction="none",
        reductions={}, output="(N,)", infeasible="zero", empty_label="exact",
        zero_length="0|0", gradient="logits", blank_in_labels="warp",
        dtypes="float32 / labels any number dtype",
        notes=("without label lengths a sequence ends at its first padding value "
               "(0 with blank_label='first', -1 with 'last')",)),
    Convention(
        "gluon", "ctcbridge.gluon", "CTCLoss()", "mxnet.gluon.loss.CTCLoss",
        (_p("layout", "constructor", "NTC"), _p("label_layout", "constructor", "NT"),
         _p("weight", "constructor", None),
         _p("pred", "activations"), _p("label", "labels"), _p("pred_lengths", "input_lengths", None),
         _p("label_lengths", "label_lengths", None), _p("sample_weight", "option", None)),
        inputs="logits", layout="NTC", blank="last", labels="sentinel|padded",
        input_lengths="ints|none", label_lengths="none|ints", reduction="weighted",
        reductions={}, output="(N,)", infeasible="zero", empty_label="exact",
        zero_length="0|0", gradient="logits", blank_in_labels="warp",
        dtypes="float32 / labels any number dtype",
        notes=("CTCLoss(layout='NTC', label_layout='NT', weight=None) is constructed first",
               "labels are padded with -1 (or read up to label_lengths)"),
        layout_option="layout"),
    Convention(
        "warpctc", "ctcbridge.mxnet", "WarpCTC", "mx.sym.WarpCTC (MXNet plugin)",
        (_p("data", "activations"), _p("label", "labels"), _p("label_length", "label_lengths", 0),
         _p("input_length", "input_lengths", 0)),
        inputs="logits", layout="flat", blank="first", labels="flat",
        input_lengths="fixed", label_lengths="fixed", reduction="gradient_only", reductions={},
        output="softmax", infeasible="zero", empty_label="exact", zero_length="inf|0",
        gradient="logits", blank_in_labels="padding", dtypes="float32 / int32",
        notes=("one input length and one label width for the whole batch",
               "the output is softmax(data); the loss exists only in the backward pass, "
               "which writes softmax - gamma and ignores the head gradient"),
        int_dtype="int32"),
    Convention(
        "chainer", "ctcbridge.chainer", "connectionist_temporal_classification",
        "chainer.functions.connectionist_temporal_classification",
        (_p("x", "activations"), _p("t", "labels"), _p("blank_symbol", "blank"),
         _p("input_length", "input_lengths", None), _p("label_length", "label_lengths", None),
         _p("reduce", "reduction", "mean")),
        inputs="logits", layout="steps", blank="arg", labels="padded",
        input_lengths="ints|none", label_lengths="ints|none", reduction="mean",
        reductions={"no": "none", "mean": "mean"}, output="()", infeasible="1e10",
        empty_label="exact", zero_length="0|1e10", gradient="logits", blank_in_labels="skip",
        dtypes="float16/32/64 / int32",
        notes=("blank_symbol is required",),
        int_dtype="int32"),
    Convention(
        "theano", "ctcbridge.theano", "ctc", "theano.gpuarray.ctc.gpu_ctc / theano_ctc ctc",
        (_p("activations", "activations"), _p("labels", "labels"),
         _p("input_lengths", "input_lengths")),
        inputs="logits", layout="TNC", blank="first", labels="negatives_removed",
        input_lengths="ints", label_lengths="negatives", reduction="none", reductions={},
        output="(N,)", infeasible="zero", empty_label="exact", zero_length="inf|0",
        gradient="logits", blank_in_labels="warp", dtypes="float32 / int32",
        notes=("ConnectionistTemporalClassification is the same op as a class",),
        int_dtype="int32"),
]

CONVENTIONS = {c.name: c for c in _ALL}
NAMES = tuple(c.name for c in _ALL if c.name != "ctcbridge")  # the signatures explain names

# (title, attribute, vocabulary) of the axes the table shows
FIELDS = (
    ("input", "inputs", INPUTS),
    ("layout", "layout", LAYOUTS),
    ("blank", "blank", BLANKS),
    ("labels", "labels", LABELS),
    ("input lengths", "input_lengths", LENGTHS),
    ("label lengths", "label_lengths", LENGTHS),
    ("default reduction", "reduction", REDUCTIONS),
    ("output", "output", None),
    ("infeasible sample", "infeasible", INFEASIBLE),
    ("empty label", "empty_label", EMPTY),
    ("zero-length input", "zero_length", ZERO_LENGTH),
    ("gradient", "gradient", GRADIENTS),
    ("label = blank", "blank_in_labels", BLANK_IN_LABELS),
    ("dtypes (activations / labels)", "dtypes", None),
)


def dotted_name(conv: Convention) -> str:
    """The name ``ctcbridge conform`` gives the signature: ``torch.ctc_loss``,
    ``tensorflow.ctc_loss_v1``, ``gluon.CTCLoss``..."""
    return f"{conv.module.rsplit('.', 1)[-1]}.{conv.call.rstrip('()')}"


def get(name: str) -> Convention:
    """The convention called ``name`` (one of :data:`NAMES`, or ``"ctcbridge"``), or
    by the name ``ctcbridge conform`` gives it (``torch.ctc_loss``)."""
    if name in CONVENTIONS:
        return CONVENTIONS[name]
    for conv in _ALL:
        if conv.name != "ctcbridge" and dotted_name(conv) == name:
            return conv
    raise KeyError(f"unknown signature {name!r}; known: {', '.join(CONVENTIONS)}") from None


def describe(conv: Convention, attribute: str) -> str:
    """The sentence for one axis of one convention."""
    value = getattr(conv, attribute)
    vocab = dict((a, v) for _, a, v in FIELDS).get(attribute)
    text = vocab[value] if vocab else str(value)
    if attribute == "blank" and conv.param("blank") is not None:
        p = conv.param("blank")
        default = "required" if p.default == "<required>" else f"default {p.default!r}"
        text += f" (`{p.name}`, {default})"
    if attribute == "layout" and conv.layout_option:
        text += f" (`{conv.layout_option}` selects the other)"
    if attribute == "reduction" and conv.reductions:
        p = conv.param("reduction")
        text += f" (`{p.name}`: " + ", ".join(f"{k!r} {REDUCTIONS[v]}" if k != p.default else
                                               f"{k!r}" for k, v in conv.reductions.items()) + ")"
    return text


def markdown_table(names=None) -> str:
    """The conventions of every signature as one markdown table (rows: signatures).

    docs/migration.md holds this text between its ``conventions-table`` markers;
    tests/test_docs.py checks it is current (``ctcbridge explain --table``
    prints it)."""
    names = list(names or CONVENTIONS)
    head = "| signature | " + " | ".join(title for title, _, _ in FIELDS) + " |"
    rule = "|" + "---|" * (len(FIELDS) + 1)
    rows = [head, rule]
    for name in names:
        conv = CONVENTIONS[name]
        cells = [f"`{name}`: `{conv.entry}`"] + [
            describe(conv, attr).replace("|", "\\|") for _, attr, _ in FIELDS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def markdown_card(name: str) -> str:
    """One signature's conventions as a two-column markdown table (its docs page
    holds this text between ``conventions-card`` markers)."""
    conv = get(name)
    rows = ["| convention | " + f"`{conv.entry}` |", "|---|---|"]
    rows += [f"| {title} | " + describe(conv, attr).replace("|", "\\|") + " |"
             for title, attr, _ in FIELDS]
    rows += [f"| note | {note} |" for note in conv.notes]
    return "\n".join(rows) + "\n"
