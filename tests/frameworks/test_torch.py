"""ctcbridge.torch against torch.nn.functional.ctc_loss (nox session `torch`)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

pytest.importorskip("torch")  # the module skips where a framework it needs is absent

import torch
import torch.nn.functional as F

import ctcbridge.torch as ct
from ctcbridge.errors import CTCRuntimeError
from native_cases import close, make_case

REDUCTIONS = ["none", "sum", "mean"]


def test_signature_parity():
    ours = inspect.signature(ct.ctc_loss).parameters
    native = inspect.signature(F.ctc_loss).parameters
    assert list(ours) == list(native)
    assert [p.default for p in ours.values()] == [p.default for p in native.values()]
    ours_cls = inspect.signature(ct.CTCLoss.__init__).parameters
    native_cls = inspect.signature(torch.nn.CTCLoss.__init__).parameters
    assert list(ours_cls) == list(native_cls)
    assert [p.default for p in ours_cls.values()] == [p.default for p in native_cls.values()]
    assert isinstance(ct.CTCLoss(), torch.nn.Module)


def _both(case, dtype, reduction, zero_infinity, concatenated):
    x = torch.tensor(case.logits, dtype=dtype)
    targets = torch.from_numpy(case.labels)
    if concatenated:
        targets = torch.cat([targets[n, : case.label_lengths[n]] for n in range(case.N)])
    il = torch.from_numpy(case.input_lengths)
    tl = torch.from_numpy(case.label_lengths)
    out = []
    for fn in (ct.ctc_loss, F.ctc_loss):
        xg = x.clone().requires_grad_()
        loss = fn(xg.log_softmax(-1), targets, il, tl, blank=case.blank, reduction=reduction,
                  zero_infinity=zero_infinity)
        loss.sum().backward()
        out.append((loss.detach().numpy(), xg.grad.numpy()))
    return out


@pytest.mark.parametrize("seed", range(240))
def test_against_native(seed):
    """Loss and gradient (through log_softmax) against torch's own CTC.

    float32 cases are held to torch's float64 result (tight), and to torch's
    float32 result loosely: torch's float32 recursion drifts (gradients off by
    up to ~1.5e-2 on sequences of a few hundred frames, beyond the bound
    |softmax - gamma| <= 1) while ctcbridge computes in double (recorded in
    the divergence file)."""
    case = make_case(seed, blank="any" if seed % 4 == 1 else "zero")
    dtype = torch.float64 if seed % 2 else torch.float32
    reduction = REDUCTIONS[seed % 3]
    zero_infinity = seed % 5 == 0
    concatenated = seed % 4 == 2
    (lo, go), (ln, gn) = _both(case, dtype, reduction, zero_infinity, concatenated)
    if dtype == torch.float64:
        close(lo, ln, 1e-9, 1e-9)
        close(go, gn, 0, 1e-9)
        return
    _, (l64, g64) = _both(case, torch.float64, reduction, zero_infinity, concatenated)
    close(lo, l64, 2e-5, 2e-5)
    close(go, g64, 0, 2e-4)
    close(lo, ln, 2e-3, 2e-3)
    close(go, gn, 0, 5e-2)


def test_unbatched_and_tuple_lengths():
    case = make_case(5)
    lp = torch.tensor(case.logits[:, 0]).log_softmax(-1)
    t = torch.from_numpy(case.labels[0, : case.label_lengths[0]])
    il, tl = torch.tensor(int(case.input_lengths[0])), torch.tensor(int(case.label_lengths[0]))
    for red in REDUCTIONS:
        a = ct.ctc_loss(lp, t, il, tl, reduction=red)
        b = F.ctc_loss(lp, t, il, tl, reduction=red)
        assert a.shape == b.shape == ()
        close(a.numpy(), b.numpy(), 1e-9, 1e-9)
    batched = torch.tensor(case.logits).log_softmax(-1)
    flat = torch.cat([torch.from_numpy(case.labels[n, : case.label_lengths[n]])
                      for n in range(case.N)])
    args = (flat, tuple(case.input_lengths.tolist()), list(case.label_lengths.tolist()))
    close(ct.ctc_loss(batched, *args, reduction="none").numpy(),
          F.ctc_loss(batched, *args, reduction="none").numpy(), 1e-9, 1e-9)


def test_gradcheck_float64_exact_gradient():
    """The gradient w.r.t. log_probs is the exact -gamma, so gradcheck passes on
    free log-probabilities (torch's own exp(lp) - gamma does not)."""
    case = make_case(11, allow_infeasible=False)
    lp = torch.tensor(case.logits[:8, :2, :5]).log_softmax(-1).requires_grad_()
    t = torch.tensor([[1, 2], [3, 3]])
    il, tl = torch.tensor([8, 7]), torch.tensor([2, 2])
    assert torch.autograd.gradcheck(lambda z: ct.ctc_loss(z, t, il, tl), (lp,))
    assert not torch.autograd.gradcheck(lambda z: F.ctc_loss(z, t, il, tl), (lp,),
                                        raise_exception=False)


def test_ctcloss_module_and_compile():
    case = make_case(3, allow_infeasible=False)
    x = torch.tensor(case.logits, dtype=torch.float32, requires_grad=True)
    args = (torch.from_numpy(case.labels), torch.from_numpy(case.input_lengths),
            torch.from_numpy(case.label_lengths))
    module = ct.CTCLoss(blank=case.blank, reduction="mean")
    eager = module(x.log_softmax(-1), *args)
    compiled = torch.compile(lambda z: module(z.log_softmax(-1), *args), fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, eager)
    (g_compiled,) = torch.autograd.grad(y, x)
    (g_eager,) = torch.autograd.grad(module(x.log_softmax(-1), *args), x)
    torch.testing.assert_close(g_compiled, g_eager)
    native = F.ctc_loss(x.log_softmax(-1), *args, blank=case.blank)
    torch.testing.assert_close(eager, native, rtol=2e-5, atol=2e-5)


def test_returns_numpy_for_numpy_and_no_grad_mode():
    case = make_case(4)
    lp = torch.tensor(case.logits).log_softmax(-1).numpy()
    loss = ct.ctc_loss(lp, case.labels, case.input_lengths, case.label_lengths, reduction="none")
    assert isinstance(loss, np.ndarray) and loss.shape == (case.N,)
    with torch.no_grad():
        t = ct.ctc_loss(torch.from_numpy(lp), torch.from_numpy(case.labels),
                        torch.from_numpy(case.input_lengths), torch.from_numpy(case.label_lengths),
                        reduction="none")
    close(t.numpy(), loss, 1e-12, 1e-12)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(input_lengths=torch.tensor([-1])), RuntimeError, r"input_lengths\[0\] = -1"),
        (dict(input_lengths=torch.tensor([7])), RuntimeError, r"input_lengths\[0\] = 7"),
        (dict(input_lengths=torch.tensor([2.0])), RuntimeError, "input_lengths must be integral"),
        (dict(target_lengths=torch.tensor([3])), RuntimeError, r"label_lengths\[0\] = 3"),
        (dict(targets=torch.tensor([[1, 9]])), RuntimeError, "is 9"),
        (dict(blank=4), RuntimeError, "blank must be in label range"),
        (dict(reduction="avg"), ValueError, "avg is not a valid value for reduction"),
    ],
)
def test_errors(change, exc, match):
    args = dict(log_probs=torch.zeros(6, 1, 4).log_softmax(-1), targets=torch.tensor([[1, 2]]),
                input_lengths=torch.tensor([6]), target_lengths=torch.tensor([2]))
    args.update(change)
    with pytest.raises(exc, match=match):
        ct.ctc_loss(**args)
    if exc is RuntimeError:
        with pytest.raises(CTCRuntimeError):
            ct.ctc_loss(**args)


def test_minus_inf_log_probs_gradient():
    """Log-probabilities of -inf (classes no alignment can use): torch's gradient is
    NaN there; ctcbridge's is the exact 0, with the same losses."""
    torch.manual_seed(0)
    lp = torch.randn(6, 2, 5, dtype=torch.float64).log_softmax(-1)
    lp[:, :, 4] = -float("inf")  # a class that is impossible everywhere
    lp[2, 0, 3] = -float("inf")  # and one off the paths of sample 0
    args = (torch.tensor([[1, 2], [3, 3]]), torch.tensor([6, 5]), torch.tensor([2, 2]))
    grads, losses = [], []
    for fn in (ct.ctc_loss, F.ctc_loss):
        z = lp.clone().requires_grad_()
        loss = fn(z, *args, reduction="none")
        loss.sum().backward()
        losses.append(loss.detach().numpy())
        grads.append(z.grad.numpy())
    close(losses[0], losses[1], 1e-12, 1e-12)
    ours, native = grads
    impossible = np.isneginf(lp.numpy())
    assert np.isnan(native[:, 0, 4]).all()  # the native behaviour we do not reproduce
    assert not np.isnan(ours).any() and (ours[impossible] == 0).all()
    used = ~impossible & (np.arange(6)[:, None, None] < args[1].numpy()[None, :, None])
    np.testing.assert_allclose(ours[used], native[used] - np.exp(lp.numpy()[used]),
                               atol=1e-12)  # torch's is exp(lp) - gamma, ours -gamma


@pytest.mark.parametrize("concatenated", [False, True])
def test_a_writer_thread_on_the_targets_changes_only_its_sample(concatenated):
    """Another thread flips one sample's target (and its length) to absurd
    values and back while ctc_loss runs on the same tensors: each call
    raises ctcbridge's error or returns, and the other samples' losses and
    gradients are bit-identical (it crashed the process before the engine
    read its integers once)."""
    import threading
    import time

    from ctcbridge.errors import CTCError

    rng = np.random.default_rng(0)
    T, N, C, L = 60, 6, 20, 12
    lp = torch.from_numpy(rng.standard_normal((T, N, C))).log_softmax(-1)
    targets = torch.from_numpy(rng.integers(1, C, size=(N, L)))
    if concatenated:
        targets = targets.reshape(-1).clone()
    il = torch.full((N,), T, dtype=torch.long)
    tl = torch.full((N,), L, dtype=torch.long)

    def run():
        x = lp.clone().requires_grad_()
        loss = ct.ctc_loss(x, targets, il, tl, reduction="none")
        loss.sum().backward()
        return loss.detach(), x.grad

    ref_loss, ref_grad = run()
    flat, lengths = targets.view(-1).numpy(), tl.numpy()  # the tensors' own memory
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            flat[-1], lengths[-1] = 2**40, 2**40
            flat[-1], lengths[-1] = 1, L

    writer = threading.Thread(target=flip, daemon=True)
    writer.start()
    calls = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            calls += 1
            try:
                loss, grad = run()
            except CTCError:
                continue
            assert torch.equal(loss[:-1], ref_loss[:-1])
            assert torch.equal(grad[:, :-1], ref_grad[:, :-1])
    finally:
        stop.set()
        writer.join()
    assert calls > 3


_FIRST_CALL_COMPILED = textwrap.dedent("""
    import warnings
    import torch
    import torch.nn.functional as F
    import ctcbridge.torch as ct

    torch.manual_seed(0)
    x = torch.randn(6, 2, 5, requires_grad=True)
    t, il, tl = torch.tensor([[1, 2], [3, 3]]), torch.tensor([6, 5]), torch.tensor([2, 2])
    # torch's own first compile warns about torch internals (deprecations): one is
    # done first, without ctcbridge, so that what is recorded below is ctcbridge's
    torch.compile(lambda z: z.log_softmax(-1).sum(), fullgraph=True)(x).backward()
    expected = F.ctc_loss(x.log_softmax(-1), t, il, tl)  # (the native does not compile
    (g_expected,) = torch.autograd.grad(expected, x)     #  with fullgraph)
    assert "ctcbridge._bridges.torch" not in __import__("sys").modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = torch.compile(lambda z: ct.ctc_loss(z.log_softmax(-1), t, il, tl),
                             fullgraph=True)
        loss = ours(x)  # ctcbridge's first call of the process, inside the trace
        (grad,) = torch.autograd.grad(loss, x)
    assert not caught, [str(w.message) for w in caught]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, g_expected, rtol=1e-4, atol=1e-4)
    print("ok")
""")


def test_compile_fullgraph_on_the_first_call_of_the_process(tmp_path):
    """torch.compile(fullgraph=True) around ctcbridge's very first call (a fresh
    process): the bridge is imported inside Dynamo's trace, which must neither
    break the graph (fullgraph raises then) nor warn."""
    # run outside the checkout: `-c` puts the working directory first on sys.path,
    # and the checkout's ctcbridge/ has no built engine
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL_COMPILED], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def _small_case():
    torch.manual_seed(0)
    lp = torch.randn(8, 2, 5, dtype=torch.float64).log_softmax(-1)
    args = (torch.tensor([[1, 2], [3, 3]]), torch.tensor([8, 7]), torch.tensor([2, 2]))
    return lp, args


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_with_batched_gradients(reduction):
    """torch's own CTC tests run gradcheck with batched gradients (vmap over the
    backward): the backward must not branch on the incoming gradient's values."""
    lp, args = _small_case()
    z = lp.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda y: ct.ctc_loss(y, *args, reduction=reduction), (z,),
                                    check_batched_grad=True)


def test_torch_func_grad_vmap_jacrev():
    lp, args = _small_case()

    def f(z):
        return ct.ctc_loss(z, *args)

    z = lp.clone().requires_grad_()
    f(z).backward()
    torch.testing.assert_close(torch.func.grad(f)(lp), z.grad, rtol=0, atol=1e-12)
    batch = torch.randn(3, *lp.shape, dtype=torch.float64).log_softmax(-1)
    torch.testing.assert_close(torch.func.vmap(f)(batch), torch.stack([f(b) for b in batch]),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(f))(batch),
                               torch.stack([torch.func.grad(f)(b) for b in batch]),
                               rtol=0, atol=1e-12)
    # vmap over the targets too (the operator's vmap rule slices every batched input)
    targets = torch.stack([args[0], args[0].flip(1)])
    torch.testing.assert_close(
        torch.func.vmap(lambda t: ct.ctc_loss(lp, t, *args[1:]))(targets),
        torch.stack([ct.ctc_loss(lp, t, *args[1:]) for t in targets]), rtol=0, atol=1e-12)
    # jacrev of the per-sample losses against central finite differences
    per_sample = lambda y: ct.ctc_loss(y, *args, reduction="none")  # noqa: E731
    jac = torch.func.jacrev(per_sample)(lp)
    assert jac.shape == (2, *lp.shape)
    eps, rng = 1e-6, np.random.default_rng(0)
    for _ in range(5):
        v = torch.from_numpy(rng.standard_normal(lp.shape))
        fd = (per_sample(lp + eps * v) - per_sample(lp - eps * v)) / (2 * eps)
        torch.testing.assert_close((jac * v).sum((1, 2, 3)), fd, rtol=1e-6, atol=1e-6)
    # through log_softmax (where torch's exp(lp) - gamma is the exact gradient too)
    # the Jacobian is the native's
    ours, native = (torch.func.jacrev(lambda y: fn(y.log_softmax(-1), *args, reduction="none"))(
        lp) for fn in (ct.ctc_loss, F.ctc_loss))  # noqa: B023
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-9)


@pytest.mark.parametrize("route", ["create_graph", "func"])
def test_second_derivatives_are_refused_as_the_native_refuses_them(route):
    """The first gradient keeps a graph (create_graph=True), and differentiating it
    raises torch's RuntimeError, as the native does: never a silently detached
    gradient, never a Hessian-vector product that ignores the engine's term."""
    lp, args = _small_case()
    for fn in (F.ctc_loss, ct.ctc_loss):
        if route == "create_graph":
            z = lp.clone().requires_grad_()
            (g,) = torch.autograd.grad(fn(z, *args), z, create_graph=True)
            assert g.requires_grad
            with pytest.raises(RuntimeError, match="derivative for .* is not implemented"):
                (g * torch.ones_like(g)).sum().backward()
        else:
            first = torch.func.grad(lambda y: fn(y, *args))  # noqa: B023
            with pytest.raises(RuntimeError, match="derivative for .* is not implemented"):
                torch.func.grad(lambda y: first(y).pow(2).sum())(lp)


_DEVICES_DTYPES = [("cpu", torch.bfloat16), ("cpu", torch.float16),
                   pytest.param("cuda", torch.float16, marks=pytest.mark.skipif(
                       not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device,dtype", _DEVICES_DTYPES)
@pytest.mark.parametrize("compiled", [False, True])
def test_autocast_follows_the_float32_policy_of_the_native(device, dtype, compiled):
    """ctc_loss is on autocast's float32 list: low-precision log_probs are computed
    in float32, the loss is float32 and the gradient has the input's dtype."""
    lp, args = _small_case()
    args = tuple(a.to(device) for a in args)
    results = []
    for fn in (ct.ctc_loss, F.ctc_loss):
        z = lp.to(device, dtype).requires_grad_()
        call = lambda y: fn(y, *args, reduction="none")  # noqa: B023, E731
        if compiled and fn is ct.ctc_loss:  # (the native does not compile with fullgraph)
            call = torch.compile(call, fullgraph=True)
        with torch.autocast(device, dtype=dtype):
            loss = call(z)
        loss.sum().backward()
        results.append((loss, z.grad))
    (ours, g_ours), (native, g_native) = results
    assert ours.dtype == native.dtype == torch.float32
    assert g_ours.dtype == g_native.dtype == dtype
    torch.testing.assert_close(ours, native, rtol=1e-5, atol=1e-5)
    # torch's gradient is exp(lp) - gamma, ours -gamma (see the gradcheck test)
    expected = g_native.float() - torch.where(
        torch.arange(lp.shape[0], device=device)[:, None, None] < args[1][None, :, None],
        lp.to(device, dtype).float().exp(), 0)
    torch.testing.assert_close(g_ours.float(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_outside_autocast_is_not_implemented_as_in_the_native(dtype):
    lp, args = _small_case()
    with pytest.raises(NotImplementedError, match="not implemented for"):
        F.ctc_loss(lp.to(dtype), *args)
    with pytest.raises(NotImplementedError, match=f"not implemented for log_probs of dtype {dtype}"):
        ct.ctc_loss(lp.to(dtype), *args)


@pytest.mark.parametrize("shape", [(6, 0, 5), (0, 2, 5), (6, 2, 0), (0, 5)])
@pytest.mark.parametrize("on", ["torch", "numpy"])
def test_empty_log_probs_raise_as_the_native(shape, on):
    """An empty batch, no frames or no classes: torch raises RuntimeError("log_probs
    tensor must not be empty") before any other check; so does ctcbridge, with the
    shape in the message, on any framework's arrays."""
    unbatched = len(shape) == 2
    n = 1 if unbatched else shape[1]
    lengths = (torch.tensor(shape[0]), torch.tensor(0)) if unbatched else (
        torch.full((n,), shape[0]), torch.zeros(n, dtype=torch.long))
    args = (torch.zeros(shape), torch.zeros(0, dtype=torch.long), *lengths)
    with pytest.raises(RuntimeError, match="log_probs tensor must not be empty") as native:
        F.ctc_loss(*args)
    if on == "numpy":
        args = tuple(a.numpy() for a in args)
    with pytest.raises(type(native.value), match=r"log_probs tensor must not be empty \(shape"):
        ct.ctc_loss(*args)
    with pytest.raises(CTCRuntimeError):
        ct.ctc_loss(*args)


# torch.compile and torch.func composed, as measured for torch 2.13's own ctc_loss:
# without fullgraph each works (its dynamic-shape operator breaks the graph, and
# compile runs the transform around it eagerly); with fullgraph=True each raises
# torch._dynamo.exc.Unsupported.
_COMPILED_TRANSFORMS = {
    "compile(grad)": lambda f, per, full: torch.compile(torch.func.grad(f), fullgraph=full),
    "compile(vmap)": lambda f, per, full: lambda x: torch.compile(
        torch.func.vmap(f), fullgraph=full)(torch.stack([x, x.flip(0)])),
    "compile(jacrev)": lambda f, per, full: torch.compile(torch.func.jacrev(per), fullgraph=full),
    "compile(vmap(grad))": lambda f, per, full: lambda x: torch.compile(
        torch.func.vmap(torch.func.grad(f)), fullgraph=full)(torch.stack([x, x.flip(0)])),
    "grad(compile)": lambda f, per, full: torch.func.grad(torch.compile(f, fullgraph=full)),
}


@pytest.mark.parametrize("fullgraph", [False, True])
@pytest.mark.parametrize("setup", list(_COMPILED_TRANSFORMS))
def test_torch_func_under_compile_as_the_native(setup, fullgraph):
    """Each composition of torch.compile and a torch.func transform works where
    torch's own ctc_loss works (the eager transform's result, the native's), and
    where the native raises (fullgraph=True) ours raises the same exception type."""
    lp, args = _small_case()
    x = lp.exp()  # differentiated through log_softmax, where torch's gradient is exact
    results, eager = {}, None
    for name, fn in (("ours", ct.ctc_loss), ("native", F.ctc_loss)):
        f = lambda z: fn(z.log_softmax(-1), *args)  # noqa: B023,E731
        per = lambda z: fn(z.log_softmax(-1), *args, reduction="none")  # noqa: B023,E731
        torch._dynamo.reset()
        try:
            results[name] = _COMPILED_TRANSFORMS[setup](f, per, fullgraph)(x)
        except Exception as exc:  # noqa: BLE001 - the type is the measurement
            results[name] = exc
        if eager is None:  # ours, without compile
            with torch._dynamo.config.patch(disable=True):
                eager = _COMPILED_TRANSFORMS[setup](f, per, False)(x)
    ours, native = results["ours"], results["native"]
    if isinstance(native, Exception):
        assert fullgraph and isinstance(native, torch._dynamo.exc.Unsupported)
        assert type(ours) is type(native), ours
        return
    assert not fullgraph  # torch 2.13: the native compiles these without fullgraph only
    assert isinstance(ours, torch.Tensor), ours
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-9)
    torch.testing.assert_close(ours, eager, rtol=0, atol=0)


def test_the_engine_reads_the_tensors_own_memory(monkeypatch):
    """No copy on the way in for CPU tensors: the engine is handed views of the
    tensors' buffers (log_probs and int64 targets); its gradient array becomes a
    tensor without a copy, and the backward's one new tensor is that gradient
    times the incoming one (no branch on its values: see the vmap tests)."""
    from ctcbridge import _compute

    seen = {}
    compute = _compute.compute

    def spy(activations, labels, **kwargs):
        seen["activations"], seen["labels"] = activations, labels
        losses, grad = compute(activations, labels, **kwargs)
        seen["grad"] = grad
        return losses, grad

    monkeypatch.setattr(_compute, "compute", spy)
    lp, args = _small_case()
    z = lp.clone().requires_grad_()
    ct.ctc_loss(z, *args, reduction="none").sum().backward()
    assert np.shares_memory(seen["activations"], z.detach().numpy())
    assert np.shares_memory(seen["labels"], args[0].numpy())
    # a strided view (batch-major memory read as (T, N, C)) is read in place too
    ntc = lp.transpose(0, 1).contiguous().requires_grad_()
    ct.ctc_loss(ntc.transpose(0, 1), *args).backward()
    assert np.shares_memory(seen["activations"], ntc.detach().numpy())
    # the backward scales the engine's gradient by the incoming one: one new tensor
    assert not np.shares_memory(seen["grad"], ntc.grad.numpy())
    # ... except for a sum of the losses, whose gradient is the engine's own
    z.grad = None
    ct.ctc_loss(z, *args, reduction="sum").backward()
    assert np.shares_memory(seen["grad"], z.grad.numpy())


class _SeenOperators(torch.utils._python_dispatch.TorchDispatchMode):
    """A dispatch mode that only records the operators it sees."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def _graph_nodes(fn) -> set:
    """The names of the autograd nodes behind `fn`."""
    names, todo = set(), [fn]
    while todo:
        node = todo.pop()
        if node is not None and node.name() not in names:
            names.add(node.name())
            todo += [n for n, _ in node.next_functions]
    return names


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("targets", ["padded", "concatenated", "unbatched"])
def test_the_direct_eager_route_agrees_with_the_operator_bit_for_bit(reduction, dtype, targets):
    """A plain eager call on CPU tensors runs the engine directly (no operator
    dispatch: its overhead was a quarter of the engine's time); under a dispatch
    mode (and under compile, autocast, torch.func) the call goes through the
    ctcbridge::ctc operator.  Both give the same bits, loss and gradient."""
    lp, (tg, il, tl) = _small_case()
    lp = lp.to(dtype)
    if targets == "concatenated":
        tg = torch.cat([tg[n, : tl[n]] for n in range(2)])
    elif targets == "unbatched":
        lp, tg, il, tl = lp[:, 0], tg[0], il[0], tl[0]
    out = []
    for mode in (None, _SeenOperators()):
        z = torch.nn.Parameter(lp.clone()) if reduction == "mean" else lp.clone().requires_grad_()
        if mode is None:
            loss = ct.ctc_loss(z, tg, il, tl, reduction=reduction)
        else:
            with mode:
                loss = ct.ctc_loss(z, tg, il, tl, reduction=reduction)
            assert "ctcbridge.ctc.default" in mode.names
        assert loss.dtype == dtype
        route = "_CTCEagerBackward" if mode is None else "_CTCBackward"
        assert route in _graph_nodes(loss.grad_fn)
        (loss * 0.5).sum().backward()
        out.append((loss.detach(), z.grad))
    for ours, op in zip(*out):
        torch.testing.assert_close(ours, op, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_repeated_backward_with_retain_graph_accumulates_as_the_native(reduction):
    """The gradient of a sum is handed to autograd without a copy: a graph kept
    for several backwards must still accumulate the same gradient each time."""
    lp, args = _small_case()
    for fn in (ct.ctc_loss, F.ctc_loss):
        z = lp.clone().requires_grad_()
        loss = fn(z, *args, reduction=reduction).sum()
        loss.backward(retain_graph=True)
        first = z.grad.clone()
        loss.backward(retain_graph=True)
        loss.backward()
        torch.testing.assert_close(z.grad, 3 * first, rtol=0, atol=1e-12)


def test_inference_mode_and_no_grad_compute_the_loss_only(monkeypatch):
    from ctcbridge import _compute

    wants = []
    compute = _compute.compute
    monkeypatch.setattr(_compute, "compute", lambda *a, **k: (wants.append(k["want_grad"]),
                                                              compute(*a, **k))[1])
    lp, args = _small_case()
    z = lp.clone().requires_grad_()
    expected = ct.ctc_loss(z, *args)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            loss = ct.ctc_loss(z, *args)
        assert loss.grad_fn is None
        torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0)
    assert wants == [True, False, False]


def _checkpointed(reentrant):
    from torch.utils.checkpoint import checkpoint

    return lambda f, x: checkpoint(f, x, use_reentrant=reentrant).backward()


def _saved_on_cpu(f, x):
    with torch.autograd.graph.save_on_cpu():
        loss = f(x)
    loss.backward()


def _compiled_autograd(f, x):
    from torch._dynamo import compiled_autograd

    loss = f(x)
    with compiled_autograd._enable(torch.compile(backend="eager")):
        loss.backward()


@pytest.mark.parametrize("tool", ["checkpoint", "checkpoint-reentrant", "save_on_cpu",
                                  "compiled-autograd", "anomaly"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_the_training_tools_around_the_backward_give_the_plain_gradient(tool, reduction):
    """Activation checkpointing (both kinds), saved tensors moved to the CPU,
    compiled autograd and anomaly detection wrap the loss's backward: the
    gradient is the plain one (the direct eager route and the operator alike)."""
    lp, args = _small_case()

    def f(z):
        return ct.ctc_loss(z.log_softmax(-1), *args, reduction=reduction)

    plain = lp.clone().requires_grad_()
    f(plain).backward()
    run = {"checkpoint": _checkpointed(False), "checkpoint-reentrant": _checkpointed(True),
           "save_on_cpu": _saved_on_cpu, "compiled-autograd": _compiled_autograd,
           "anomaly": lambda f, x: f(x).backward()}[tool]
    z = lp.clone().requires_grad_()
    if tool == "anomaly":
        with torch.autograd.detect_anomaly():
            run(f, z)
    else:
        run(f, z)
    torch.testing.assert_close(z.grad, plain.grad, rtol=0, atol=1e-12)


def test_threads_sharing_the_inputs_get_each_the_same_gradient():
    lp, args = _small_case()
    z0 = lp.clone().requires_grad_()
    ct.ctc_loss(z0, *args).backward()
    out = [None] * 4

    def work(i):
        z = lp.clone().requires_grad_()
        ct.ctc_loss(z, *args).backward()
        out[i] = z.grad

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in out:
        torch.testing.assert_close(g, z0.grad, rtol=0, atol=0)
