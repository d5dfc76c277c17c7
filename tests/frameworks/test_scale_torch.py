"""ctcbridge.torch.CTCLoss in data-parallel training (nox session `torch`).

DistributedDataParallel with the gloo backend over 2 processes (started by
``torch.multiprocessing`` and by ``torchrun``) gives the gradients of the
same global batch on one process; DataLoader workers and torch.compile keep
working; the engine's threads follow ``torch.get_num_threads()`` or
``ctcbridge.set_num_threads``; a big batch runs in bounded memory and one
too big for memory fails with ``EngineMemoryError``.

Run as a script (``torchrun --nproc-per-node 2 test_scale_torch.py OUT``) this
file is the torchrun worker.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the module skips where a framework it needs is absent

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ctcbridge
import ctcbridge._compute
import ctcbridge.torch as ct

WORLD = 2
N, T, F, C, S = 8, 24, 5, 7, 5  # global batch; each rank gets N // WORLD samples


def _batch():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((N, T, F)), dtype=torch.float32)
    targets = torch.tensor(rng.integers(1, C, (N, S)))
    input_lengths = torch.tensor(rng.integers(T // 2, T + 1, N))
    target_lengths = torch.tensor(rng.integers(1, S + 1, N))
    return x, targets, input_lengths, target_lengths


class _Model(torch.nn.Module):
    """features (N, T, F) -> log-probs (T, N, C)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(F, C)

    def forward(self, x):
        return self.proj(x).log_softmax(-1).transpose(0, 1)


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def _one_step(model, rows, compiled=False):
    """Loss and backward on the rows of the global batch (the gradients stay on model)."""
    x, targets, il, tl = (a[rows] for a in _batch())
    loss_fn = ct.CTCLoss(reduction="mean")

    def step(x):
        return loss_fn(model(x), targets, il, tl)

    if compiled:  # aot_eager: dynamo + AOTAutograd with the custom op, no C++ build
        step = torch.compile(step, backend="aot_eager")
    loss = step(x)
    loss.backward()
    return loss


class _Spy:
    """Records the num_threads of every engine call."""

    def __init__(self):
        self.threads = []
        self._compute = ctcbridge._compute.compute

    def __enter__(self):
        def compute(*args, **kwargs):
            self.threads.append(kwargs.get("num_threads"))
            return self._compute(*args, **kwargs)

        ctcbridge._compute.compute = compute
        return self

    def __exit__(self, *exc):
        ctcbridge._compute.compute = self._compute


def _ddp_rank(rank, world, out_dir, compiled):
    """One rank: DDP over gloo, one step on this rank's half of the batch."""
    if world:  # torch.multiprocessing
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        model = torch.nn.parallel.DistributedDataParallel(_Model())
        share = N // world
        with _Spy() as spy:
            loss = _one_step(model, slice(rank * share, (rank + 1) * share), compiled)
        result = {k: v.tolist() for k, v in _grads(model.module).items()}
        result.update(loss=float(loss), engine_threads=spy.threads,
                      torch_threads=torch.get_num_threads())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        # the model (its Reducer) goes before the group: a Reducer that holds the
        # group's last reference destroys it holding the GIL, which deadlocks
        # against a gloo worker still releasing its last work (docs/scaling.md)
        del model, loss
        if compiled:
            torch._dynamo.reset()  # its caches refer to the model too
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
        _wait_for_peers(out_dir, rank, world)


def _wait_for_peers(out_dir, rank, world, timeout=60.0):
    """Exit only once every rank has left the process group: a rank whose process
    exits (closing its sockets) while a peer is still tearing gloo down can make the
    peer's gloo thread abort ("terminate called without an active exception"),
    seen under load."""
    import time

    Path(out_dir, f"left{rank}").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(Path(out_dir, f"left{r}").exists() for r in range(world)):
            return
        time.sleep(0.05)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_grads():
    model = _Model()
    _one_step(model, slice(None))
    return _grads(model)


def _check_ranks(out_dir):
    expected = _single_process_grads()
    ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]
    for r in ranks:
        for k, g in expected.items():  # DDP averages the ranks' gradients
            torch.testing.assert_close(torch.tensor(r[k]), g, rtol=1e-5, atol=1e-6)
    return ranks


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_ddp_gloo_spawn_matches_one_process(tmp_path, monkeypatch, compiled):
    """mp.spawn, 2 ranks: DDP's averaged gradients equal the global batch's on one process;
    with torch.compile (aot_eager) around model + loss as well."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    mp.spawn(_ddp_rank, args=(WORLD, str(tmp_path), compiled), nprocs=WORLD, join=True)
    ranks = _check_ranks(tmp_path)
    for r in ranks:  # each rank's engine follows that rank's torch setting
        assert r["engine_threads"] and set(r["engine_threads"]) == {r["torch_threads"]}


def test_torchrun_one_thread_per_rank(tmp_path):
    """torchrun sets OMP_NUM_THREADS=1 for 2 workers: torch and the engine use one thread
    per process, so 2 processes x 1 thread stay within the cores."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
         "--master-port", str(_free_port()), __file__, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for r in _check_ranks(tmp_path):
        assert r["torch_threads"] == 1 and set(r["engine_threads"]) == {1}


class _LossPerItem(torch.utils.data.Dataset):
    """Computes each sample's loss inside the DataLoader worker process."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        x, targets, il, tl = (a[i: i + 1] for a in _batch())
        return ct.ctc_loss(_Model()(x).detach(), targets, il, tl, reduction="none")[0]


def test_dataloader_workers():
    """Batches collated by 2 worker processes train as the same batches made in-process,
    and the loss computed inside forked workers (after this process ran the engine's
    threads) equals the in-process loss."""
    x, targets, il, tl = _batch()
    data = torch.utils.data.TensorDataset(x, targets, il, tl)
    losses = {}
    for workers in (0, 2):
        model = _Model()
        loader = torch.utils.data.DataLoader(data, batch_size=N // 2, num_workers=workers)
        total = 0.0
        for xb, tb, ib, lb in loader:
            loss = ct.CTCLoss()(model(xb), tb, ib, lb)
            loss.backward()
            total += float(loss.detach())
        losses[workers] = (total, _grads(model))
    assert losses[0][0] == pytest.approx(losses[2][0], rel=1e-6)
    for k, g in losses[0][1].items():
        torch.testing.assert_close(losses[2][1][k], g)

    in_process = ct.ctc_loss(_Model()(x).detach(), targets, il, tl, reduction="none")
    per_item = torch.cat(list(torch.utils.data.DataLoader(_LossPerItem(), batch_size=2,
                                                          num_workers=2)))
    torch.testing.assert_close(per_item, in_process)


def test_threads_follow_torch_and_the_setting():
    x, targets, il, tl = _batch()
    log_probs = _Model()(x)
    before = torch.get_num_threads()
    try:
        with _Spy() as spy:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                ct.ctc_loss(log_probs, targets, il, tl)
            with ctcbridge.set_num_threads(5):  # explicit: wins over torch's setting
                ct.ctc_loss(log_probs, targets, il, tl)
                assert ctcbridge.get_num_threads("torch") == 5
            ct.ctc_loss(log_probs, targets, il, tl)  # restored: torch's again
            compiled = torch.compile(lambda z: ct.ctc_loss(z, targets, il, tl), fullgraph=True,
                                     backend="aot_eager")
            compiled(log_probs)
        assert spy.threads == [1, 2, 3, 5, 3, 3]
    finally:
        torch.set_num_threads(before)
    assert ctcbridge.get_num_threads("torch") == before


def test_thread_count_does_not_change_results():
    x, targets, il, tl = _batch()
    results = []
    for n in (1, 2, 0):
        xg = _Model()(x).detach().requires_grad_()
        with ctcbridge.set_num_threads(n):
            loss = ct.ctc_loss(xg, targets, il, tl, reduction="sum")
        loss.backward()
        results.append((loss.detach(), xg.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_bad_thread_settings():
    with pytest.raises(ctcbridge.CTCValueError, match="-1"):
        ctcbridge.set_num_threads(-1)
    with pytest.raises(ctcbridge.CTCTypeError):
        ctcbridge.set_num_threads(2.5)
    assert ctcbridge.get_num_threads("torch") == torch.get_num_threads()


# Memory: N=1024, T=1000, L=200, C=100 (docs/scaling.md quotes the measured peak).
_BIG = """
import resource, sys, time
import numpy as np, torch
import ctcbridge.torch as ct
N, T, L, C = 1024, 1000, 200, 100
rng = np.random.default_rng(0)
log_probs = torch.randn(T, N, C)
log_probs -= log_probs.logsumexp(-1, keepdim=True)  # in place: no second (T, N, C) copy
log_probs.requires_grad_()
targets = torch.from_numpy(rng.integers(1, C, (N, L)))
lengths = torch.full((N,), T), torch.full((N,), L)
with open("/proc/self/statm") as fh:  # resident pages now, before the loss
    base = int(fh.read().split()[1]) * resource.getpagesize() // 1024
start = time.perf_counter()
loss = ct.ctc_loss(log_probs, targets, *lengths, reduction="sum")
loss.backward()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert bool(torch.isfinite(loss)) and bool(torch.isfinite(log_probs.grad).all())
print(base // 1024, peak // 1024, round(seconds, 2), torch.get_num_threads())
"""


def test_big_batch_in_bounded_memory(tmp_path):
    """(T, N, C) = (1000, 1024, 100) float32 with 200 labels each: the inputs are 391 MiB,
    the engine adds the gradient (391 MiB) and per-thread workspace, the backward the
    gradient times the incoming one (391 MiB: it may not branch on that gradient's
    values, which vmap batches); the process peak stays under 1.6 GiB (measured
    ~1.5 GiB; ~1.1 GiB before the backward stopped returning the engine's gradient
    as-is when the incoming one was all ones)."""
    # outside the checkout: `-c` puts the working directory first on sys.path, and
    # the checkout's ctcbridge/ has no built engine
    out = subprocess.run([sys.executable, "-c", _BIG], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    base_mib, peak_mib, seconds, threads = out.stdout.split()
    print(f"peak RSS {peak_mib} MiB (before the loss: {base_mib} MiB), {seconds} s, "
          f"{threads} thread(s)")
    assert int(peak_mib) < 1600


def test_too_large_batch_is_a_clear_error():
    """A gradient of 1.6 TB (zero-stride activations: no memory spent building them) is
    refused before any allocation, with EngineMemoryError naming the sizes."""
    log_probs = torch.zeros(1, 1, 1000).expand(100_000, 4096, 1000).requires_grad_()
    targets = torch.ones(4096, 10, dtype=torch.long)
    lengths = torch.full((4096,), 100_000), torch.full((4096,), 10)
    with pytest.raises(ctcbridge.EngineMemoryError, match="GiB are available") as info:
        ct.ctc_loss(log_probs, targets, *lengths)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, RuntimeError)


if __name__ == "__main__":  # a torchrun worker: rank and world come from the environment
    _ddp_rank(0, 0, sys.argv[1], False)
