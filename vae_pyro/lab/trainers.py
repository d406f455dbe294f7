"""The trainers: one optimisation step of an estimator on a batch, and the state a checkpoint keeps."""

import pyro
import pyro.optim
import torch
from pyro.infer import SVI

from vae_pyro import estimators
from vae_pyro.config import ADAMS
from vae_pyro.errors import VaeError
from vae_pyro.estimators import pyro_compat
from vae_pyro.models import contract


class SVITrainer:
    """The reference path: ``SVI(model, guide, pyro.optim.Adam, elbo).step``, one torch Adam per parameter of
    the implementation ``adam`` names (``foreach`` or ``fused``).

    Its state is the optimizer's plus the estimator's (`score`'s baselines).
    """

    def __init__(self, estimator: estimators.Estimator, vae, lr: float, adam: str = ADAMS[0]):
        pyro.clear_param_store()
        self.estimator = estimator
        scale = getattr(vae, "lr_scale", {})
        contract.lr_groups(vae, lr)  # refuses an lr_scale that names no submodule
        # Pyro names a module's parameters "module$$$path" ("module.path" as optim_args gets it): the
        # submodule is the first part, when pyro.module registers it under its attribute's name
        self.lr_of = lambda name: lr * scale.get(name.replace("$$$", ".").split(".")[0], 1.0)
        implementation = adam_options(adam, next(vae.parameters()).device)
        self.optim = pyro.optim.Adam(lambda name: {"lr": self.lr_of(name), **implementation})
        self.svi = SVI(*estimator.pyro_fns(vae), self.optim, loss=estimator.elbo)

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        return self.svi.step(*estimators.batch(x, y))

    def state_dict(self) -> dict:
        return {"optim": self.optim.get_state(), "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The saved moments and steps, at this trainer's learning rate (a resume may change it)."""
        self.optim.set_state(pyro_compat.set_optim_lr(state["optim"], self.lr_of))
        self.estimator.load_state_dict(state["estimator"])


class TorchTrainer:
    """The fast path: any estimator's gradient (Pyro's ``loss_and_grads`` for its ELBOs) into one
    multi-tensor ``torch.optim.Adam`` over all parameters, with Pyro's validation off in the loop.

    For Pyro's ELBOs it takes the very steps SVI takes, bit for bit (``tests/test_train.py``):
    the gradients are the same, and Adam's arithmetic per element is the same whether one
    optimizer steps every tensor (here) or one optimizer per tensor does (``pyro.optim``), for
    either implementation ``adam`` (``fused``: one kernel for the whole update, rounded otherwise
    than ``foreach``'s pass per operation).
    """

    def __init__(self, estimator: estimators.Estimator, vae, lr: float, adam: str = ADAMS[0]):
        pyro.clear_param_store()
        self.estimator, self.vae = estimator, vae
        self.optim = torch_adam(estimator, vae, lr, adam)

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        self.optim.zero_grad()
        with pyro.validation_enabled(False):
            loss = self.estimator.backward(self.vae, x, y)
        self.optim.step()
        return loss

    def state_dict(self) -> dict:
        return {"optim": self.optim.state_dict(), "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The saved moments and steps, at this trainer's learning rate (a resume may change it)."""
        load_optimizer(self.optim, state["optim"])
        self.estimator.load_state_dict(state["estimator"])


def param_groups(estimator: estimators.Estimator, vae, lr: float) -> list[dict]:
    """The optimizer's groups: the module's (``contract.lr_groups``: at lr, and any ``lr_scale``d submodule at
    its rate), with the network an estimator trains beside it in the group at lr (one group in all, as
    before models had an lr_scale, so the checkpoints of those runs still load)."""
    groups = contract.lr_groups(vae, lr)
    if estimator.baseline_net is not None:
        plain = next((g for g in groups if g["lr"] == lr), None)
        if plain is None:
            groups.append(plain := {"params": [], "lr": lr})
        plain["params"] = plain["params"] + list(estimator.baseline_net.parameters())
    return groups


def adam_options(adam: str, device: torch.device) -> dict[str, bool]:
    """torch Adam's keyword for the implementation ``adam`` (``config.ADAMS``), refused in one line where this
    torch has no such Adam on ``device`` (the fused one runs on the CPU from torch 2.4)."""
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], **{adam: True})
    except RuntimeError as e:
        raise VaeError(f"--adam {adam}: torch {torch.__version__} has no such Adam on {device.type} "
                       f"({str(e).splitlines()[0][:100]}); use --adam {ADAMS[0]}") from None
    return {adam: True}


def torch_adam(estimator: estimators.Estimator, vae, lr: float, adam: str) -> torch.optim.Adam:
    """One torch Adam of the implementation ``adam`` over the optimizer's groups (``param_groups``)."""
    return torch.optim.Adam(param_groups(estimator, vae, lr), lr=lr, **adam_options(adam, next(vae.parameters()).device))


def load_optimizer(optim: torch.optim.Optimizer, state: dict) -> None:
    """Load a torch optimizer's saved state but keep its current learning rates."""
    lrs = [group["lr"] for group in optim.param_groups]
    optim.load_state_dict(state)
    for group, lr in zip(optim.param_groups, lrs):
        group["lr"] = lr


def make_trainer(estimator: estimators.Estimator, vae, lr: float, loop: str = "fast", adam: str = ADAMS[0]
                 ) -> SVITrainer | TorchTrainer:
    """``fast``: TorchTrainer; ``svi``: the reference path, ``pyro.infer.SVI`` (every estimator is a Pyro ELBO);
    ``adam``: torch Adam's implementation, ``foreach`` or ``fused`` (``config.ADAMS``)."""
    if loop == "svi":
        return SVITrainer(estimator, vae, lr, adam)
    return TorchTrainer(estimator, vae, lr, adam)
