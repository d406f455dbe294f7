"""Data-parallel training: two gloo ranks on the CPU, against one process on the concatenated batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab.distributed import DDPTrainer, World, wrap
from vae_pyro.lab.experiment import instantiate
from vae_pyro.models import hand

CFG = Config(estimator="hand", z_dim=4, hidden=(32,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fixed_batch_and_eps(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=gen).round(), torch.randn(1, n, CFG.z_dim, generator=gen)


def rank_main(rank: int, size: int, port: int, out: str, steps: int, adam: str = "foreach") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(100 + rank)  # different noise per rank, as in fit
    vae = instantiate(CFG, 784, torch.device("cpu"))
    trainer = DDPTrainer(estimators.make("hand"), vae, 1e-3, World(rank, size, 0), torch.device("cpu"), adam)
    x, eps = fixed_batch_and_eps()
    half = len(x) // size
    mine = slice(rank * half, (rank + 1) * half)
    trainer.step(x[mine], eps=eps[:, mine])  # one step on the same ε as the single-process reference
    grads = [p.grad.clone() for p in vae.parameters()]
    for _ in range(steps):  # then steps on each rank's own noise and its own data
        trainer.step(torch.rand(8, 784).round())
    fused = [g["fused"] for g in trainer.optim.param_groups]
    torch.save({"grads": grads, "params": vae.state_dict(), "fused": fused}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def spawned(out: Path, adam: str = "foreach") -> list[dict]:
    """Two gloo ranks training with Adam's implementation ``adam``; what each saved (``rank_main``)."""
    mp.spawn(rank_main, args=(2, free_port(), str(out), 3, adam), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return spawned(tmp_path_factory.mktemp("ddp"))


def test_ranks_hold_identical_parameters(two_ranks):
    a, b = (r["params"] for r in two_ranks)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adam_fused_reaches_each_ranks_optimizer_and_the_ranks_stay_identical(tmp_path, two_ranks):
    fused = spawned(tmp_path, "fused")
    assert all(r["fused"] and all(r["fused"]) for r in fused) and not any(any(r["fused"]) for r in two_ranks)
    a, b = (r["params"] for r in fused)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_synchronised_step_equals_one_process_on_the_concatenated_batch(two_ranks):
    vae = instantiate(CFG, 784, torch.device("cpu"))
    x, eps = fixed_batch_and_eps()
    hand.loss(vae, x, eps=eps).backward()  # the gradient of the sum over all 16 images
    for ddp_grad, p in zip(two_ranks[0]["grads"], vae.parameters()):
        torch.testing.assert_close(ddp_grad, p.grad, rtol=1e-5, atol=1e-6)


def test_estimators_without_a_differentiable_loss_are_refused():
    vae = instantiate(CFG, 784, torch.device("cpu"))
    with pytest.raises(VaeError, match="score cannot train under torchrun: Pyro's TraceGraph_ELBO"):
        wrap(estimators.make("score"), vae, World(0, 2, 0), torch.device("cpu"))


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_torchrun_trains_and_resumes_a_run(tmp_path):
    def torchrun(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vae_pyro", "train", "--hidden", "32", "--z-dim", "4", "--out", str(tmp_path / "run"), "--quiet", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    done = torchrun("--epochs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports
    done = torchrun("--epochs", "2", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt")
    assert len(ckpt["rng"]) == 2  # each rank's generator, for an exact resume
