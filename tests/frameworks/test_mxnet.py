"""ctcbridge.mxnet and ctcbridge.gluon against MXNet 1.9.1 (nox session `mxnet`).

Natives: ``mx.nd.contrib.ctc_loss`` and ``mx.gluon.loss.CTCLoss``.  The WarpCTC
plugin is not in the wheel: ``ctcbridge.mxnet.WarpCTC`` is checked against the
float64 reference and against ``contrib.ctc_loss`` with ``blank_label='first'``
(the same warp-ctc semantics).  Inputs on which the native crashes the process
(zero frames, negative values, an empty batch) are never given to it.
"""

from __future__ import annotations

import inspect
import re

import pytest

pytest.importorskip("mxnet")  # the module skips where a framework it needs is absent
pytest.importorskip("torch")

import mxnet as mx
import numpy as np
import torch
from mxnet import gluon, nd

import ctcbridge.gluon as cg
import ctcbridge.mxnet as cm
from ctcbridge import _compute, reference
from ctcbridge.conform.corpus import builtin_cases
from ctcbridge.errors import CTCRuntimeError
from native_cases import close, make_case

N_CASES = 200
# MXNet's warp-ctc runs in float32: its gradients drift by up to ~1.5e-2 on long
# sequences with large logits (ctcbridge computes in double; divergence file)
NATIVE_GRAD_TOL = 2e-2


def _softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _run(fn, x, *args, head=None, **kwargs):
    """(out, d (head . out) / d x) of fn(x NDArray, *args) with mx.autograd."""
    xv = nd.array(x, dtype=x.dtype)
    xv.attach_grad()
    args = [nd.array(a, dtype=a.dtype) if isinstance(a, np.ndarray) else a for a in args]
    with mx.autograd.record():
        out = fn(xv, *args, **kwargs)
    out.backward(None if head is None else nd.array(head, dtype=out.dtype))
    return out.asnumpy(), xv.grad.asnumpy()


def _feasible(labels, label_lengths, input_lengths):
    return np.array([
        (lambda s: s.size + np.count_nonzero(s[1:] == s[:-1]))(labels[n, : label_lengths[n]])
        <= input_lengths[n] for n in range(len(label_lengths))])


def _mx_labels(case, pad, width=None):
    """The case's labels padded with `pad` to a width of at least 1 and at most T (MXNet
    has no zero-size arrays and wants width <= T); lengths cut to the width."""
    lengths = case.label_lengths.copy()
    S = width or max(1, int(lengths.max()))
    S = min(S, case.T)
    lengths = np.minimum(lengths, S)
    labels = np.full((case.N, S), pad, dtype=np.int64)
    for n in range(case.N):
        labels[n, : lengths[n]] = case.labels[n, : lengths[n]]
    return labels, lengths


# --- signature parity ---------------------------------------------------------


def _documented_defaults(doc):
    """``name : type, optional, default=value`` lines of a generated MXNet op doc."""
    return {m.group(1): m.group(2).strip("'") for m in
            re.finditer(r"^(\w+) : .*default=('?\w+'?)", doc, re.M)}


def test_signature_parity():
    ours = inspect.signature(cm.ctc_loss).parameters
    native = inspect.signature(nd.contrib.ctc_loss).parameters
    names = list(ours)
    # the NDArray operator's parameters, then attr (the Symbol operator's); no **kwargs
    assert names == list(native)[: len(names) - 1] + ["attr"]
    # the Symbol operator orders the generated arguments name, attr, out
    sym_names = list(inspect.signature(mx.sym.contrib.ctc_loss).parameters)
    assert sym_names[:7] == names[:7] and set(sym_names[7:10]) == {"out", "name", "attr"}
    documented = _documented_defaults(nd.contrib.ctc_loss.__doc__)
    for name, p in ours.items():
        if name in ("out", "name", "attr"):
            assert p.default is None
        elif name in documented:  # generated defaults are _Null: compare with the doc
            assert str(int(p.default) if isinstance(p.default, bool) else p.default) == \
                documented[name], name
        else:  # MXNet's generated signatures default every input to None
            assert native[name].default is None, name
            assert p.default is (inspect.Parameter.empty if name in ("data", "label") else None)
    assert cm.CTCLoss is cm.ctc_loss  # as nd.contrib.CTCLoss is ctc_loss
    for method in ("__init__", "hybrid_forward"):
        o = inspect.signature(getattr(cg.CTCLoss, method)).parameters
        n = inspect.signature(getattr(gluon.loss.CTCLoss, method)).parameters
        assert list(o) == list(n), method
        assert [p.default for p in o.values()] == [p.default for p in n.values()], method
    assert issubclass(cg.CTCLoss, gluon.loss.Loss)
    # the WarpCTC plugin's arguments (data, label) and parameters (label_length,
    # input_length, both defaulting to 0); the plugin is not in the wheel
    warp = inspect.signature(cm.WarpCTC).parameters
    assert list(warp) == ["data", "label", "label_length", "input_length", "name", "attr",
                          "out"]
    assert [p.default for p in warp.values()][2:] == [0, 0, None, None, None]


# --- contrib.ctc_loss against the native ---------------------------------------


def _ctc_args(seed):
    """A case in contrib.ctc_loss's conventions, with options drawn from the seed."""
    blank_label = ("first", "last")[seed % 2]
    case = make_case(seed, blank="zero" if blank_label == "first" else "last")
    use_dl = seed % 3 != 0
    use_ll = seed % 4 in (1, 2)
    ldtype = (np.float32, np.int32, np.int64)[seed % 5 % 3]
    pad = 0 if blank_label == "first" else -1
    labels, lengths = _mx_labels(case, pad)
    if use_ll and seed % 8 == 1:  # junk past the lengths is ignored
        junk = np.random.default_rng(seed).integers(-1, case.C, labels.shape)
        labels = np.where(np.arange(labels.shape[1])[None] < lengths[:, None], labels, junk)
    il = case.input_lengths if use_dl else np.full(case.N, case.T)
    args = [labels.astype(ldtype),
            il.astype(np.float32) if use_dl else None,
            lengths.astype(ldtype) if use_ll else None]
    kwargs = dict(use_data_lengths=use_dl, use_label_lengths=use_ll, blank_label=blank_label)
    blank = 0 if blank_label == "first" else case.C - 1
    return case, args, kwargs, (labels, lengths, il, blank)


@pytest.mark.parametrize("seed", range(N_CASES))
def test_ctc_loss_against_native(seed):
    """Loss and gradient (head gradients random for some seeds) against
    contrib.ctc_loss; the gradient only on samples with an alignment (MXNet's
    is uninitialised memory on the others), the loss except on all-empty
    batches (MXNet: uninitialised).  Also against ctcbridge in float64."""
    case, args, kwargs, (labels, lengths, il, blank) = _ctc_args(seed)
    x = case.logits.astype(np.float32)
    head = np.random.default_rng(seed).uniform(-2, 2, case.N).astype(np.float32) \
        if seed % 6 == 5 else None
    lo, go = _run(cm.ctc_loss, x, *args, head=head, **kwargs)
    ln, gn = _run(nd.contrib.ctc_loss, x, *args, head=head, **kwargs)
    assert lo.dtype == ln.dtype == np.float32 and lo.shape == ln.shape == (case.N,)
    ok = _feasible(labels, lengths, il)
    if lengths.any():  # all empty: MXNet returns uninitialised memory (test_all_empty_batch)
        close(lo, ln, 1e-4, 1e-4)
        close(go[:, ok], gn[:, ok], 0, NATIVE_GRAD_TOL)
    # against ctcbridge's float64 result
    l64, g64 = _run(cm.ctc_loss, case.logits, *args, head=head, **kwargs)
    close(lo, l64, 2e-5, 2e-5)
    close(go, g64, 0, 2e-4)
    assert np.all(go[:, ~ok] == 0) and np.all(lo[~ok] == 0)


# --- Gluon CTCLoss against the native -------------------------------------------


def _gluon_args(seed):
    rng = np.random.default_rng(seed + 7)
    case = make_case(seed, blank="last")
    layout = ("NTC", "TNC")[seed % 2]
    label_layout = ("NT", "TN")[seed // 2 % 2]
    weight = (None, 0.5, 3)[seed % 3]
    labels, lengths = _mx_labels(case, -1)
    pred = case.logits if layout == "TNC" else case.logits.transpose(1, 0, 2)
    label = labels.astype(np.float32)
    label = label if label_layout == "NT" else np.ascontiguousarray(label.T)
    pl = case.input_lengths.astype(np.float32) if seed % 5 < 3 else None
    ll = lengths.astype(np.float32) if seed % 7 < 3 else None
    sw = [None, rng.uniform(0, 2, case.N), rng.uniform(0, 2, (case.N, 1))][seed % 4 % 3]
    sw = None if sw is None else sw.astype(np.float32)
    il = case.input_lengths if pl is not None else np.full(case.N, case.T)
    return (case, np.ascontiguousarray(pred, dtype=np.float32), [label, pl, ll, sw],
            dict(layout=layout, label_layout=label_layout, weight=weight), (labels, lengths, il))


def _gluon_run(cls, pred, args, opts, hybridize, head=None):
    loss = cls(**opts)
    if hybridize:
        loss.hybridize()
    # Gluon's blocks take positional arguments; trailing Nones are left out
    while args and args[-1] is None:
        args = args[:-1]
    return _run(lambda *a: loss(*a), pred, *args, head=head)


@pytest.mark.parametrize("seed", range(N_CASES))
def test_gluon_against_native(seed):
    case, pred, args, opts, (labels, lengths, il) = _gluon_args(seed)
    hybridize = seed % 5 == 0
    if hybridize and any(a is None for a in args[:3]) and args[3] is not None:
        args[3] = None  # a hybridized block cannot take None between arrays
    lo, go = _gluon_run(cg.CTCLoss, pred, args, opts, hybridize)
    ln, gn = _gluon_run(gluon.loss.CTCLoss, pred, args, opts, hybridize)
    assert lo.shape == ln.shape and lo.dtype == ln.dtype
    if not lengths.any():  # MXNet: uninitialised memory (test_all_empty_batch)
        return
    close(lo, ln, 1e-4, 1e-4)
    ok = _feasible(labels, lengths, il)
    batch = 0 if opts["layout"] == "NTC" else 1
    sel = (slice(None),) * batch + (ok,)
    close(go[sel], gn[sel], 0, NATIVE_GRAD_TOL * (opts["weight"] or 1) * 2)


def test_gluon_sample_weight_broadcast_and_hybridize():
    """An (N, 1) sample weight gives Gluon's (N, N); hybridized, in a network,
    with mx.autograd: the same numbers as Gluon's own loss."""
    case = make_case(3, blank="last", allow_infeasible=False)
    labels, _ = _mx_labels(case, -1)
    pred = np.ascontiguousarray(case.logits.transpose(1, 0, 2), dtype=np.float32)
    sw = np.arange(1, case.N + 1, dtype=np.float32)[:, None]
    results = []
    for cls in (cg.CTCLoss, gluon.loss.CTCLoss):
        class Net(gluon.HybridBlock):
            def __init__(self):
                super().__init__()
                self.loss = cls(weight=2.0)

            def hybrid_forward(self, F, x, label, weight):
                return self.loss(F.tanh(x) * 3, label, None, None, weight)

        net = Net()
        net.hybridize()
        out, grad = _run(net, pred, labels.astype(np.float32), sw)
        assert out.shape == (case.N, case.N)
        results.append((out, grad))
    close(results[0][0], results[1][0], 1e-4, 1e-4)
    close(results[0][1], results[1][1], 0, 1e-3)


def test_gluon_export_and_import(tmp_path):
    """A hybridized loss exports to a Symbol file (the CustomOp is named in it) that
    SymbolBlock.imports loads back while ctcbridge is imported."""
    case = make_case(8, blank="last", allow_infeasible=False)
    labels, _ = _mx_labels(case, -1)
    pred = nd.array(case.logits.transpose(1, 0, 2))
    net = cg.CTCLoss()
    net.hybridize()
    before = net(pred, nd.array(labels)).asnumpy()
    net.export(str(tmp_path / "ctc"))
    loaded = gluon.SymbolBlock.imports(str(tmp_path / "ctc-symbol.json"), ["data0", "data1"])
    close(loaded(pred, nd.array(labels)).asnumpy(), before, 1e-7, 1e-7)


# --- WarpCTC ---------------------------------------------------------------------


def _warp_args(seed):
    """A case in the plugin's conventions: (T*N, C) logits, flat labels with zeros
    scattered anywhere (the plugin removes every 0), all samples on T frames."""
    rng = np.random.default_rng(seed + 11)
    case = make_case(seed, blank="zero")
    T, N, C = case.logits.shape
    seqs = [case.labels[n, : case.label_lengths[n]] for n in range(N)]
    width = max([1] + [s.size for s in seqs]) + int(rng.integers(0, 3))  # no zero-size
    flat = np.zeros((N, width), dtype=np.int32)
    for n, s in enumerate(seqs):
        pos = np.sort(rng.choice(width, size=s.size, replace=False))
        flat[n, pos] = s
    return case, case.logits.reshape(T * N, C), flat.reshape(-1), width, seqs


@pytest.mark.parametrize("seed", range(N_CASES))
def test_warpctc_against_reference_and_contrib(seed):
    """Forward: softmax(data).  Backward: softmax - gamma whatever the head gradient
    (the plugin ignores it), 0 for samples without an alignment; against the
    float64 reference and, on samples with an alignment, contrib.ctc_loss."""
    case, data, label, width, seqs = _warp_args(seed)
    T, N, C = case.logits.shape
    head = np.random.default_rng(seed).uniform(-1, 1, data.shape).astype(np.float32)
    out, grad = _run(cm.WarpCTC, data.astype(np.float32), label, label_length=width,
                     input_length=T, head=head if seed % 2 else None)
    assert out.shape == data.shape and out.dtype == np.float32
    close(out, _softmax(data), 0, 1e-5)
    packed = np.zeros((N, max(1, width)), dtype=np.int64)
    lengths = np.array([s.size for s in seqs])
    for n, s in enumerate(seqs):
        packed[n, : s.size] = s
    _, ref = reference.ctc_loss_and_grad(case.logits, packed, None, lengths, blank=0)
    ok = _feasible(packed, lengths, np.full(N, T))
    ref[:, ~ok] = 0.0
    close(grad.reshape(T, N, C), ref, 0, 2e-4)
    if width <= T and lengths.any():  # contrib.ctc_loss's shape rule; all empty: garbage
        _, gn = _run(nd.contrib.ctc_loss, case.logits.astype(np.float32),
                     packed.astype(np.float32), None, lengths.astype(np.float32),
                     use_label_lengths=True)
        close(grad.reshape(T, N, C)[:, ok], gn[:, ok], 0, NATIVE_GRAD_TOL)


def test_warpctc_symbol_api_ignores_head_gradient():
    case, data, label, width, _ = _warp_args(4)
    T = case.T
    sym = cm.WarpCTC(mx.sym.var("data"), mx.sym.var("label"), label_length=width,
                     input_length=T)
    ex = sym.simple_bind(mx.cpu(), data=data.shape, label=label.shape)
    ex.arg_dict["data"][:] = data.astype(np.float32)
    ex.arg_dict["label"][:] = label
    out = ex.forward(is_train=True)[0].asnumpy()
    close(out, _softmax(data), 0, 1e-5)
    ex.backward(nd.array(np.random.default_rng(0).uniform(size=data.shape)))
    _, eager = _run(cm.WarpCTC, data.astype(np.float32), label, label_length=width,
                    input_length=T)
    close(ex.grad_dict["data"].asnumpy(), eager, 0, 1e-6)


# --- framework idioms --------------------------------------------------------------


def test_symbol_api_and_executor():
    """ctcbridge.mxnet.ctc_loss on Symbols (a CustomOp) bound in an executor: the
    native's values and gradients; is_train=False computes no gradient but a
    backward still works."""
    case, args, kwargs, _ = _ctc_args(7)
    x = case.logits.astype(np.float32)
    names = ["label", "data_lengths", "label_lengths"]
    results = []
    for fn in (cm.ctc_loss, mx.sym.contrib.ctc_loss):
        syms = [mx.sym.var(n) if a is not None else None for n, a in zip(names, args)]
        sym = fn(mx.sym.var("data"), *syms, **kwargs)
        shapes = {n: a.shape for n, a in zip(names, args) if a is not None}
        types = {n: a.dtype for n, a in zip(names, args) if a is not None}
        types["data"] = x.dtype
        ex = sym.simple_bind(mx.cpu(), data=x.shape, type_dict=types, **shapes)
        ex.arg_dict["data"][:] = x
        for n, a in zip(names, args):
            if a is not None:
                ex.arg_dict[n][:] = a
        loss = ex.forward(is_train=True)[0].asnumpy()
        ex.backward(nd.ones((case.N,)))
        results.append((loss, ex.grad_dict["data"].asnumpy()))
        if fn is cm.ctc_loss:
            ex.forward(is_train=False)
            ex.backward(nd.ones((case.N,)))
            close(ex.grad_dict["data"].asnumpy(), results[0][1], 0, 1e-6)
    close(results[0][0], results[1][0], 1e-4, 1e-4)
    close(results[0][1], results[1][1], 0, 2e-3)


def test_dtypes_contexts_and_no_grad():
    """float64 and float16 data (MXNet accepts float32 only) keep their dtype; outside
    autograd.record the result is a plain NDArray; lengths of any numeric dtype."""
    case = make_case(9, allow_infeasible=False)
    labels, lengths = _mx_labels(case, 0)
    out64, g64 = _run(cm.ctc_loss, case.logits, labels, case.input_lengths.astype(np.int32),
                      lengths.astype(np.int64), use_data_lengths=True, use_label_lengths=True)
    assert out64.dtype == g64.dtype == np.float64
    ref, ref_g = reference.ctc_loss_and_grad(case.logits, labels, case.input_lengths, lengths)
    close(out64, ref, 1e-9, 1e-9)
    close(g64, ref_g, 0, 1e-9)
    out16 = cm.ctc_loss(nd.array(case.logits, dtype=np.float16), nd.array(labels))
    assert out16.dtype == np.float16
    plain = cm.ctc_loss(nd.array(case.logits), nd.array(labels))
    assert isinstance(plain, nd.NDArray) and plain.context == mx.cpu()


def test_other_frameworks_arrays():
    """Gluon's and contrib's conventions on numpy and torch: the NDArray numbers, the
    caller's array type back, differentiable in torch (the migration use)."""
    case, pred, args, opts, _ = _gluon_args(6)
    nd_loss, nd_grad = _gluon_run(cg.CTCLoss, pred, list(args), opts, False)
    loss = cg.CTCLoss(**opts)
    out_np = loss(pred, *args)
    assert isinstance(out_np, np.ndarray)
    close(out_np, nd_loss, 1e-6, 1e-6)
    pt = torch.tensor(pred, requires_grad=True)
    out_t = loss(pt, *[None if a is None else torch.as_tensor(a) for a in args])
    assert isinstance(out_t, torch.Tensor)
    out_t.sum().backward()
    close(out_t.detach().numpy(), nd_loss, 1e-6, 1e-6)
    close(pt.grad.numpy(), nd_grad, 0, 1e-6)
    # sample weights that require grad get theirs (d loss.sum() / d w = the losses)
    w = torch.ones(case.N, requires_grad=True)
    plain = cg.CTCLoss()(torch.tensor(pred if opts["layout"] == "NTC" else
                                      pred.transpose(1, 0, 2).copy()),
                         torch.as_tensor(args[0] if opts["label_layout"] == "NT"
                                         else args[0].T.copy()), None, None, w)
    plain.sum().backward()
    close(w.grad.numpy(), plain.detach().numpy(), 1e-6, 1e-6)
    # contrib's signature and WarpCTC on torch
    c, cargs, kwargs, _ = _ctc_args(10)
    ref, ref_g = _run(cm.ctc_loss, c.logits.astype(np.float32), *cargs, **kwargs)
    xt = torch.tensor(c.logits.astype(np.float32), requires_grad=True)
    out = cm.ctc_loss(xt, *[None if a is None else torch.as_tensor(a) for a in cargs], **kwargs)
    out.sum().backward()
    close(out.detach().numpy(), ref, 1e-6, 1e-6)
    close(xt.grad.numpy(), ref_g, 0, 1e-6)
    wc, data, label, width, _ = _warp_args(5)
    _, wg = _run(cm.WarpCTC, data.astype(np.float32), label, label_length=width,
                 input_length=wc.T)
    dt = torch.tensor(data.astype(np.float32), requires_grad=True)
    wout = cm.WarpCTC(dt, torch.as_tensor(label), width, wc.T)
    assert wout.shape == dt.shape
    wout.sum().backward()
    close(dt.grad.numpy(), wg, 0, 1e-6)


def test_plain_callable_without_mxnet(monkeypatch):
    """Where MXNet does not import, ctcbridge.gluon.CTCLoss is a plain callable."""
    import builtins

    real = builtins.__import__

    def no_mxnet(name, *a, **k):
        if name.startswith("mxnet"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mxnet)
    cls = cg._make_class()
    assert not any(c.__module__.startswith("mxnet") for c in cls.__mro__)
    case, pred, args, opts, _ = _gluon_args(2)
    monkeypatch.undo()
    close(cls(**opts)(pred, *args), cg.CTCLoss(**opts)(pred, *args), 1e-7, 1e-7)


def test_every_signature_on_mxnet_arrays():
    """Every conformance row (other frameworks' conventions included) on NDArrays
    over the whole corpus: the reference's losses and gradients, through
    mx.autograd (the mxnet column of `ctcbridge conform`)."""
    from ctcbridge.conform.rows import ROWS
    from ctcbridge.conform.compare import check_signature

    cases = builtin_cases()
    for row in filter(lambda r: r.available(), ROWS):  # tensorflow.ctc_loss_v1 needs TF
        results = [r for r in (check_signature(row, c, "mxnet") for c in cases) if r]
        assert results, row.name
        assert all(r.passed for r in results), (row.name, [r for r in results if not r.passed])


def test_conform_rows():
    """`ctcbridge conform`'s rows for these signatures pass on numpy and torch arrays
    (mxnet above); the native rows run to the end (MXNet's crashing inputs are
    refused by their guard) and agree where MXNet is defined."""
    from ctcbridge.conform.rows import ROWS
    from ctcbridge.conform.compare import check_signature

    cases = builtin_cases()
    mine = [r for r in ROWS if r.name in ("mxnet.ctc_loss", "gluon.CTCLoss", "mxnet.WarpCTC")]
    assert len(mine) == 3
    for row in mine:
        for fw in ("numpy", "torch"):
            results = [r for r in (check_signature(row, c, fw) for c in cases) if r]
            assert len(results) >= 20 and all(r.passed for r in results), (row.name, fw)
        if row.native:
            results = {r.case: r for r in (check_signature(row, c, "mxnet", native=True)
                                           for c in cases) if r}
            assert results["random-0"].passed and results["repeats"].passed, row.name


# --- bad inputs ----------------------------------------------------------------------


X = np.zeros((6, 2, 4), np.float32)
LAB = np.array([[1, 2], [3, 0]], np.float32)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(label=np.array([[1, 4], [3, 0]], np.float32)), "is 4, outside"),
        (dict(label=np.array([[1, -1], [3, 0]], np.float32)), "is -1, outside"),
        (dict(label=np.array([[1, -2], [3, -1]], np.float32), blank_label="last"),
         "is -2, outside"),
        (dict(label=np.array([[1, np.nan], [3, 0]], np.float32)), "label holds nan"),
        (dict(data_lengths=np.array([7, 6], np.float32), use_data_lengths=True),
         r"data_lengths\[0\] = 7 is outside \[0, 6\]"),
        (dict(data_lengths=np.array([6, -1], np.float32), use_data_lengths=True),
         r"data_lengths\[1\] = -1"),
        (dict(label_lengths=np.array([3, 1], np.float32), use_label_lengths=True),
         r"label_lengths\[0\] = 3 is outside \[0, 2\]"),
        (dict(label_lengths=np.array([-1, 1], np.float32), use_label_lengths=True),
         r"label_lengths\[0\] = -1"),
        (dict(label_lengths=np.array([1, 1, 1], np.float32), use_label_lengths=True),
         "vector of 2 entries"),
        (dict(use_data_lengths=True), "use_data_lengths=True needs data_lengths"),
        (dict(data_lengths=np.array([6, 6], np.float32)), "use_data_lengths is False"),
        (dict(label_lengths=np.array([2, 1], np.float32)), "use_label_lengths is False"),
        (dict(blank_label="middle"), "Invalid Input: 'middle'"),
        (dict(data=np.zeros((6, 4), np.float32)), "must be 3"),
        (dict(label=np.ones((2, 7), np.float32)), "cannot exceed the maximum sequence length"),
        (dict(label=np.ones((3, 2), np.float32)), "batch size for the labels"),
        (dict(label=np.ones(2, np.float32)), "labels array must be 2"),
    ],
)
def test_errors(change, match):
    """Undefined or rejected inputs raise CTCRuntimeError (a RuntimeError like
    MXNetError) at the call, naming the argument; MXNet would read garbage,
    crash, or fail asynchronously."""
    args = dict(data=X, label=LAB)
    args.update(change)
    arrays = {k: nd.array(v, dtype=v.dtype) if isinstance(v, np.ndarray) else v
              for k, v in args.items()}
    with pytest.raises(CTCRuntimeError, match=match):
        cm.ctc_loss(**arrays)
    with pytest.raises(RuntimeError, match=match):  # numpy arrays: the same
        cm.ctc_loss(**args)


def test_errors_symbol_and_gluon_and_warpctc():
    # in a bound Symbol graph the error surfaces when the result is read, as
    # MXNet's own do (the CustomOp's message goes to stderr)
    sym = cm.ctc_loss(mx.sym.var("data"), mx.sym.var("label"))
    ex = sym.simple_bind(mx.cpu(), data=X.shape, label=LAB.shape)
    ex.arg_dict["label"][:] = np.array([[1, 9], [3, 0]])
    with pytest.raises(mx.base.MXNetError, match="CustomOp"):
        ex.forward(is_train=False)[0].asnumpy()
    with pytest.raises(AssertionError, match="Only 'NTC' and 'TNC'"):
        cg.CTCLoss(layout="NCT")
    with pytest.raises(AssertionError, match="Only 'NT' and 'TN'"):
        cg.CTCLoss(label_layout="TT")
    with pytest.raises(AssertionError, match="weight must be a number"):
        cg.CTCLoss(weight="2")(X, LAB)
    data = np.zeros((12, 4), np.float32)
    for kwargs, match in [
        (dict(label=np.array([1, 2, 0, 1, 0, 0]), label_length=3, input_length=0),
         "input_length = 0 must be positive"),
        (dict(label=np.array([1, 2, 0, 1, 0, 0]), label_length=3, input_length=5),
         "divide the 12 rows"),
        (dict(label=np.array([1, 2, 0, 1, 0]), label_length=3, input_length=6),
         "label size should = label_length"),
        (dict(label=np.array([1, 4, 0, 1, 0, 0]), label_length=3, input_length=6),
         "is 4, outside"),
        (dict(label=np.array([1, -1, 0, 1, 0, 0]), label_length=3, input_length=6),
         "is -1, outside"),
        (dict(label=np.array([1.5, 2, 0, 1, 0, 0]), label_length=3, input_length=6),
         "must hold integers"),
    ]:
        with pytest.raises(CTCRuntimeError, match=match):
            cm.WarpCTC(nd.array(data), nd.array(kwargs.pop("label"), dtype=np.int32)
                       if match != "must hold integers" else nd.array(kwargs.pop("label")),
                       **kwargs)


def test_rounding_of_float_labels_and_lengths():
    """MXNet reads float labels and lengths with std::lround (half away from zero)."""
    case = make_case(21, allow_infeasible=False, min_label=2)
    labels, lengths = _mx_labels(case, 0)
    x = case.logits.astype(np.float32)
    jitter = np.where(labels > 0, 0.4, 0.0).astype(np.float32)
    args = (labels.astype(np.float32) - jitter, case.input_lengths.astype(np.float32) + 0.5,
            lengths.astype(np.float32) - 0.3)
    il = np.minimum(case.input_lengths + 1, case.T).astype(np.float32)
    kwargs = dict(use_data_lengths=True, use_label_lengths=True)
    args = (args[0], np.minimum(args[1], il), args[2])
    ours = _run(cm.ctc_loss, x, *args, **kwargs)
    native = _run(nd.contrib.ctc_loss, x, *args, **kwargs)
    close(ours[0], native[0], 1e-4, 1e-4)
    close(ours[1], native[1], 0, 2e-3)


# --- divergences (ctcbridge/divergences.json) ------------------------------------------


def test_infeasible_zero_loss_and_gradient():
    """Too few frames: loss 0 (MXNet's choice) and gradient exactly 0 (MXNet leaves
    it uninitialised); probability 0 with enough frames (-inf logits): +inf and
    the softmax as gradient, as MXNet."""
    x = np.random.default_rng(1).standard_normal((4, 3, 5)).astype(np.float32)
    x[:, 2, 3] = -np.inf
    labels = np.array([[1, 1, 1, 1], [1, 2, 0, 0], [3, 0, 0, 0]], np.float32)
    ours, g = _run(cm.ctc_loss, x, labels)
    native, gn = _run(nd.contrib.ctc_loss, x, labels)
    assert ours[0] == native[0] == 0 and np.all(g[:, 0] == 0)
    close(ours[1:], native[1:], 1e-5, 1e-5)
    assert ours[2] == np.inf
    close(g[:, 1:], gn[:, 1:], 0, 1e-5)
    close(g[:, 2], _softmax(x[:, 2].astype(np.float64)), 0, 1e-6)


def test_all_empty_batch():
    """Every label empty: the exact loss (sum of -log p(blank)); MXNet returns
    uninitialised memory (0 or tiny values here)."""
    x = np.random.default_rng(2).standard_normal((7, 3, 4)).astype(np.float32)
    labels = np.zeros((3, 2), np.float32)
    ours, g = _run(cm.ctc_loss, x, labels)
    ref, ref_g = reference.ctc_loss_and_grad(x.astype(np.float64), np.zeros((3, 0), int))
    close(ours, ref, 1e-6, 1e-6)
    close(g, ref_g, 0, 1e-6)
    native = nd.contrib.ctc_loss(nd.array(x), nd.array(labels)).asnumpy()
    assert np.abs(native - ref).max() > 1.0


def test_zero_frames():
    """A sample with zero frames: an empty label has probability 1 (loss 0; MXNet
    gives +inf, or corrupts the heap when other samples are empty too), a
    non-empty one none (loss 0, MXNet's infeasible rule).  Not run natively."""
    x = np.random.default_rng(3).standard_normal((5, 3, 4)).astype(np.float32)
    labels = np.array([[0, 0], [1, 0], [2, 3]], np.float32)
    out, g = _run(cm.ctc_loss, x, labels, np.array([0, 0, 5], np.float32),
                  use_data_lengths=True)
    assert out[0] == 0 and out[1] == 0 and np.isfinite(out[2]) and out[2] > 0
    assert np.all(g[:, :2] == 0)


def test_blank_inside_label():
    """A label equal to the blank inside a label (possible with label_lengths):
    warp-ctc's rule (never skipped into), the native's loss; the gradient is the
    exact derivative of that loss, which MXNet's is not."""
    x = np.random.default_rng(0).standard_normal((8, 3, 5))
    labels = np.array([[1, 0, 1], [2, 0, 0], [3, 3, 0]], np.float32)
    lengths = np.array([3, 2, 3], np.float32)
    ours, g = _run(cm.ctc_loss, x.astype(np.float32), labels, None, lengths,
                   use_label_lengths=True)
    native, gn = _run(nd.contrib.ctc_loss, x.astype(np.float32), labels, None, lengths,
                      use_label_lengths=True)
    close(ours, native, 1e-5, 1e-5)

    def total(z):
        return _compute.compute(z, labels.astype(int), None, lengths.astype(int), blank=0,
                                 warp_blank_labels=True, want_grad=False)[0].sum()

    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = 1e-6
        fd[i] = (total(x + d) - total(x - d)) / 2e-6
    close(g, fd, 0, 1e-4)
    assert np.abs(gn - fd).max() > 0.1


def test_empty_batch():
    """N = 0: an empty result (MXNet aborts the process); on numpy, as MXNet has
    no zero-size NDArrays."""
    out = cm.ctc_loss(np.zeros((5, 0, 4), np.float32), np.zeros((0, 2), np.float32))
    assert out.shape == (0,) and out.dtype == np.float32
    out = cg.CTCLoss()(np.zeros((0, 5, 4), np.float32), np.zeros((0, 2), np.float32))
    assert out.shape == (0,)


# --- item: WarpCTC in a Module, the generated operators' name/attr/out ---------------


def _ocr_batch(seed=3, T=12, N=4, F=5, C=6, L=3):
    """Features (N, T, F) and labels (N, L) with trailing 0 padding, batch-major as the
    OCR example's iterator gives them (the same labels for WarpCTC and contrib.ctc_loss)."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((N, T, F)).astype(np.float32)
    labels = np.zeros((N, L), np.float32)
    for n in range(N):
        k = int(rng.integers(1, L + 1))
        labels[n, :k] = rng.integers(1, C, k)
    return feats, labels, (T, N, F, C, L)


def _module(loss, feats, labels, dims):
    """Frames laid out as the OCR example lays them ((T*N, F), row t*N + n), an FC layer,
    then `loss`, as an mx.mod.Module bound for training, with fixed initial weights (so
    that two modules can be compared step by step)."""
    T, N, F, C, L = dims
    frames = mx.sym.reshape(mx.sym.transpose(mx.sym.var("data"), (1, 0, 2)), (-1, F))
    logits = mx.sym.FullyConnected(frames, num_hidden=C, name="fc")
    mod = mx.mod.Module(loss(logits, mx.sym.var("label")), data_names=["data"],
                        label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", feats.shape)], label_shapes=[("label", labels.shape)])
    mod.init_params(arg_params={"fc_weight": nd.array(_initial_weight(dims)),
                                "fc_bias": nd.zeros((C,))}, allow_missing=False)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05})
    return mod


def _initial_weight(dims):
    T, N, F, C, L = dims
    return np.random.default_rng(0).normal(0, 0.3, (C, F)).astype(np.float32)


def _warpctc_module(feats, labels, dims):
    """The OCR example's loss: WarpCTC on the flattened labels."""
    T, N, F, C, L = dims
    return _module(lambda z, y: cm.WarpCTC(z, mx.sym.reshape(y, (-1,)), label_length=L,
                                           input_length=T, name="ctc"), feats, labels, dims)


def _native_module(feats, labels, dims):
    """WarpCTC's semantics with MXNet's own operators: its gradient is d sum(loss) / d
    logits of warp-ctc's loss, which is contrib.ctc_loss (blank 0) under MakeLoss."""
    T, N, F, C, L = dims
    return _module(lambda z, y: mx.sym.MakeLoss(mx.sym.contrib.ctc_loss(
        mx.sym.reshape(z, (T, N, C)), y, blank_label="first")), feats, labels, dims)


def test_warpctc_module_trains_without_head_gradients():
    """The OCR example's shape (``lstm_ocr_train.py --loss warpctc``): a Module whose
    last layer is WarpCTC runs forward_backward with no head gradient, and its SGD
    steps are those of MXNet's own CTC under MakeLoss (the plugin's semantics)."""
    feats, labels, dims = _ocr_batch()
    ours = _warpctc_module(feats, labels, dims)
    native = _native_module(feats, labels, dims)
    assert ours.output_names == ["ctc_output"]
    for step in range(3):
        batch = mx.io.DataBatch([nd.array(feats)], [nd.array(labels)])
        ours.forward_backward(batch)  # no head gradient given, as Module.fit does
        native.forward_backward(batch)
        out = ours.get_outputs()[0].asnumpy()
        assert out.shape == (dims[0] * dims[1], dims[3])
        ours.update()
        native.update()
        for name in ("fc_weight", "fc_bias"):
            close(ours.get_params()[0][name].asnumpy(), native.get_params()[0][name].asnumpy(),
                  1e-4, 1e-5)


def test_warpctc_module_fit():
    """Module.fit over an iterator, as the OCR example trains: the same parameters as
    the native loss's fit, and the CTC loss goes down."""
    feats, labels, dims = _ocr_batch(seed=5)
    T, N, F, C, L = dims
    params = []
    for build in (_warpctc_module, _native_module):
        mod = build(feats, labels, dims)
        mod.fit(mx.io.NDArrayIter(np.concatenate([feats] * 3), np.concatenate([labels] * 3),
                                  batch_size=N, label_name="label"),
                num_epoch=2, eval_metric=mx.metric.Loss())
        params.append({k: v.asnumpy() for k, v in mod.get_params()[0].items()})
    for name in ("fc_weight", "fc_bias"):
        close(params[0][name], params[1][name], 1e-4, 1e-5)
    frames = feats.transpose(1, 0, 2).reshape(-1, F)
    after = _ctc_sum(frames @ params[0]["fc_weight"].T + params[0]["fc_bias"], labels, dims)
    assert after < _ctc_sum(frames @ _initial_weight(dims).T, labels, dims)


def _ctc_sum(logits, labels, dims):
    T, N, F, C, L = dims
    return float(nd.contrib.ctc_loss(nd.array(logits.reshape(T, N, C)), nd.array(labels))
                 .asnumpy().sum())


def test_operator_arguments_name_attr_out():
    """name, attr and out as MXNet's generated operators take them."""
    case, args, kwargs, _ = _ctc_args(7)
    x = case.logits.astype(np.float32)
    # Symbols: the name and the attributes of the native's operator
    sym = cm.ctc_loss(mx.sym.var("data"), mx.sym.var("label"), name="ctc",
                      attr={"ctx_group": "dev1"})
    assert sym.name == "ctc" and sym.list_outputs() == ["ctc_output"]
    assert sym.attr("ctx_group") == "dev1"
    assert all(v.get("ctx_group") == "dev1" for k, v in sym.attr_dict().items()
               if k not in ("data", "label"))
    warp = cm.WarpCTC(mx.sym.var("data"), mx.sym.var("label"), 2, 3, name="w",
                      attr={"lr_mult": "0.5"})
    assert warp.name == "w" and warp.attr("lr_mult") == "0.5"
    # NDArrays: out= receives the result (and is returned); name is accepted, as there
    aux = [None if a is None else nd.array(a) for a in args]
    expected = cm.ctc_loss(nd.array(x), *aux, name="ignored", **kwargs).asnumpy()
    out = nd.zeros((case.N,))
    assert cm.ctc_loss(nd.array(x), *aux, out=out, **kwargs) is out
    close(out.asnumpy(), expected, 0, 0)
    native_out = nd.zeros((case.N,))
    nd.contrib.ctc_loss(nd.array(x), *[a for a in aux if a is not None], out=native_out,
                        **kwargs)
    close(out.asnumpy(), native_out.asnumpy(), 1e-4, 1e-4)
    # under autograd, out carries the gradient like the native's
    xv = nd.array(x)
    xv.attach_grad()
    with mx.autograd.record():
        res = cm.ctc_loss(xv, *aux, out=nd.zeros((case.N,)), **kwargs)
    res.backward()
    _, grad = _run(cm.ctc_loss, x, *args, **kwargs)
    close(xv.grad.asnumpy(), grad, 0, 1e-6)
    # WarpCTC with out=
    wcase, data, label, width, _ = _warp_args(4)
    wout = nd.zeros(data.shape)
    assert cm.WarpCTC(nd.array(data), nd.array(label), width, wcase.T, out=wout) is wout
    close(wout.asnumpy(), _softmax(data), 0, 1e-5)
    # out= on another framework's arrays is refused; a bad attr too
    with pytest.raises(CTCRuntimeError, match="out= writes into an MXNet NDArray"):
        cm.ctc_loss(torch.as_tensor(x), torch.as_tensor(args[0]), out=nd.zeros((case.N,)))
    with pytest.raises(CTCRuntimeError, match="out= writes into an MXNet NDArray"):
        cm.WarpCTC(torch.as_tensor(data), torch.as_tensor(label), width, wcase.T,
                   out=nd.zeros(data.shape))
    with pytest.raises(CTCRuntimeError, match="attr must be a dict"):
        cm.ctc_loss(nd.array(x), *aux, attr="dev1", **kwargs)


def test_warpctc_near_zero_loss():
    """Divergence mxnet-warpctc-near-zero-loss, measured: MXNet's warp-ctc port gives a
    sample whose loss rounds to 0 in float32 (one frame, the label's logit 19 above the
    rest) the cost -0.0 and a gradient of +1.0 on the label (softmax - gamma with
    gamma = exp(alpha beta + cost) computed as 0); the exact gradient is -5.6e-9 there,
    which ctcbridge gives (and Gluon's CTCLoss and WarpCTC over the same engine)."""
    for C in (2, 5):
        x = np.zeros((1, 1, C), np.float32)
        x[0, 0, 1] = 19.0
        label = np.array([[1]], np.float32)
        native_loss, native_grad = _run(nd.contrib.ctc_loss, x, label)
        assert native_loss[0] == 0 and np.signbit(native_loss[0])  # -0.0
        assert native_grad[0, 0, 1] == 1.0
        loss, grad = _run(cm.ctc_loss, x, label)
        z = x[0, 0].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        exact = p - np.eye(C)[1]
        # C = 2 exactly; with more classes the engine's float32 softmax normaliser
        # rounds the label's 1 - 2e-8 to 1 (an error of float32's epsilon, not 1.0)
        tol = (1e-5, 0) if C == 2 else (0, 1e-7)
        close(loss, [-np.log(p[1])], *tol)
        assert not np.signbit(loss[0])
        close(grad[0, 0], exact, *tol)
        assert grad[0, 0, 1] <= 1e-7
        _, wgrad = _run(cm.WarpCTC, x[0], np.array([1], np.int32), label_length=1,
                        input_length=1)
        close(wgrad[0], exact, *tol)
