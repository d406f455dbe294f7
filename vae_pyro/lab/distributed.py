"""Data-parallel training under torchrun: one process per device, gradients averaged by PyTorch's
DistributedDataParallel (gloo on CPU, nccl on GPU).

Every rank holds the whole data set in memory and draws the same permutation each epoch; global
batch i is ranks × batch-size images, and rank r trains on its r-th slice, so the ranks see
disjoint shards whose concatenation is the global batch. Each rank's loss (a sum over its
images) is multiplied by the number of ranks before DDP averages the gradients, so the averaged
gradient is the gradient of the sum over the global batch: the single-process update on the
concatenated batch. Rank 0 alone writes metrics, checkpoints and figures.
"""

import os
from dataclasses import dataclass

import pyro
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vae_pyro import estimators
from vae_pyro.config import ADAMS
from vae_pyro.errors import VaeError
from vae_pyro.lab.trainers import load_optimizer, torch_adam


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


SINGLE = World(0, 1, 0)


def launched() -> bool:
    """True when started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> World:
    """Join the process group torchrun set up: nccl for CUDA, gloo on the CPU."""
    if not launched():
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shard(idx: torch.Tensor, world: World) -> torch.Tensor:
    """Rank r's slice of a global batch of indices."""
    size = len(idx) // world.size
    return idx[world.rank * size : (world.rank + 1) * size]


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """The element-wise sum of ``values`` over all ranks."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def from_leader(make, world: World):
    """Run ``make()`` on rank 0 and hand its result to every rank. A VaeError raised there is
    raised on every rank, so all stop together with the same message."""
    if world.size == 1:
        return make()
    box = [None]
    if world.leader:
        try:
            box = [("ok", make())]
        except VaeError as e:
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise VaeError(value)
    return value


class Objective(nn.Module):
    """The module DDP wraps: forward(x, y) = ranks × this rank's loss, differentiable.

    ``eps`` (through the model's ``hand_loss``) fixes the reparameterisation noise, which is how a
    test compares a distributed step with a single-process one on the same ε.
    """

    def __init__(self, estimator: estimators.Estimator, vae: nn.Module, world_size: int):
        super().__init__()
        self.estimator, self.vae, self.world_size = estimator, vae, world_size
        if estimator.baseline_net is not None:
            self.baseline_net = estimator.baseline_net

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        if eps is not None:
            return self.world_size * self.vae.hand_loss(x, y, eps=eps)
        return self.world_size * self.estimator.loss(self.vae, x, y)


def wrap(estimator: estimators.Estimator, vae: nn.Module, world: World, device: torch.device) -> DistributedDataParallel:
    if not hasattr(estimator.elbo, "differentiable_loss"):
        raise VaeError(
            f"{estimator.name} cannot train under torchrun: Pyro's {type(estimator.elbo).__name__} has no "
            "differentiable loss for DistributedDataParallel to average; train it in one process"
        )
    ids = [world.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(Objective(estimator, vae, world.size), device_ids=ids)


class DDPTrainer:
    """One torch Adam (implementation ``adam``) over the module's parameters, gradients averaged across ranks by DDP."""

    def __init__(self, estimator: estimators.Estimator, vae: nn.Module, lr: float, world: World, device: torch.device,
                 adam: str = ADAMS[0]):
        pyro.clear_param_store()
        self.estimator, self.world = estimator, world
        self.ddp = wrap(estimator, vae, world, device)
        self.optim = torch_adam(estimator, vae, lr, adam)

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> float:
        """One synchronised step; returns this rank's loss (a sum over its images)."""
        self.optim.zero_grad()
        with pyro.validation_enabled(False):
            loss = self.ddp(x, y, eps)
        loss.backward()
        self.optim.step()
        return loss.item() / self.world.size

    def state_dict(self) -> dict:
        return {"optim": self.optim.state_dict(), "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer(self.optim, state["optim"])
        self.estimator.load_state_dict(state["estimator"])
