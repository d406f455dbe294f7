"""fit(): train a VAE with one estimator, an epoch at a time, checkpointing after each.

Pyro's ELBOs train through the reference path, ``pyro.infer.SVI`` with ``pyro.optim.Adam``;
the hand-derived loss trains through ``torch.optim.Adam`` over the same parameters at the
same learning rate. Data order and binarisation come from generators keyed by (seed, epoch),
and the checkpoint holds module, optimizer and RNG state, so a resumed run repeats exactly
what an uninterrupted one would have done.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from vae_pyro import estimators, evaluate
from vae_pyro.config import Config
from vae_pyro.data import batches, binarise, seeded
from vae_pyro.errors import VaeError
from vae_pyro.experiment import EVAL_SEED, build_vae, load_data, make_estimator, resolve_device
from vae_pyro.runs import Run


class Diverged(VaeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""

    exit_code = 3


class SVITrainer:
    """The reference path: ``SVI(model, guide, pyro.optim.Adam, elbo).step``.

    Its state is the optimizer's plus the estimator's (`score`'s baselines).
    """

    def __init__(self, estimator: estimators.Estimator, vae, lr: float):
        pyro.clear_param_store()
        self.estimator = estimator
        self.optim = pyro.optim.Adam({"lr": lr})
        self.svi = SVI(vae.model, estimator.guide(vae), self.optim, loss=estimator.elbo)

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        return self.svi.step(*estimators.batch(x, y))

    def state_dict(self) -> dict:
        return {"optim": self.optim.get_state(), "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state(state["optim"])
        self.estimator.load_state_dict(state["estimator"])


class TorchTrainer:
    """Any estimator's gradient through one ``torch.optim.Adam`` over the module's parameters."""

    def __init__(self, estimator: estimators.Estimator, vae, lr: float):
        self.estimator, self.vae = estimator, vae
        self.optim = torch.optim.Adam(vae.parameters(), lr=lr)

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        self.optim.zero_grad()
        loss = self.estimator.backward(self.vae, x, y)
        self.optim.step()
        return loss

    def state_dict(self) -> dict:
        return self.optim.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optim.load_state_dict(state)


def make_trainer(estimator: estimators.Estimator, vae, lr: float) -> SVITrainer | TorchTrainer:
    return TorchTrainer(estimator, vae, lr) if estimator.elbo is None else SVITrainer(estimator, vae, lr)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class FitResult:
    run: Path
    history: list[dict]  # one metrics.jsonl record per epoch
    final: dict[str, dict[str, float]]  # {"train" | "test": evaluate.metrics(...)}


def kl_weight(cfg: Config, epoch: int) -> float:
    """β_e = β · min(1, e / W) for epoch e = 0, 1, … and warm-up W epochs (W = 0: β throughout)."""
    return cfg.beta * min(1.0, epoch / cfg.kl_warmup) if cfg.kl_warmup else cfg.beta


def train_epoch(trainer, x: torch.Tensor, y: torch.Tensor | None, cfg: Config, epoch: int, bar: tqdm) -> tuple[float, float]:
    """One pass over shuffled batches; returns (mean training objective per image, seconds).

    ``y`` (labels) is passed on to a conditional model, None otherwise.
    """
    gen = seeded(cfg.seed, epoch, device=x.device)
    if cfg.binarize == "dynamic":
        x = binarise(x, gen)
    total, seen, start = 0.0, 0, time.perf_counter()
    for step, idx in enumerate(batches(len(x), cfg.batch_size, gen)):
        loss = trainer.step(x[idx], y[idx] if y is not None else None)
        if not math.isfinite(loss):
            raise Diverged(
                f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; the checkpoint of epoch {epoch} "
                f"is kept: continue with --resume --lr {cfg.lr / 10:g} (or smaller)"
            )
        total, seen = total + loss, seen + len(idx)
        bar.update()
    return -total / seen, time.perf_counter() - start


def fit(
    cfg: Config, out: str | Path, resume: bool = False, force: bool = False, progress: bool = True,
    label: str | None = None, position: int = 0,
) -> FitResult:
    """Train ``cfg`` into run folder ``out``, or continue it there when ``resume``.

    Progress: a bar per epoch; with a ``label``, one bar for the whole run at line ``position``
    (how `compare` shows one bar per estimator).
    """
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    if cfg.batch_size > len(data.train_x):
        raise VaeError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train_x)} training images; lower it")
    vae = build_vae(cfg, data.train_x.shape[1], device)
    trainer = make_trainer(make_estimator(cfg, data.train_x.shape[1]), vae, cfg.lr)
    run = Run.resume(out, cfg) if resume else Run.create(out, cfg, force)

    history: list[dict] = []
    if resume:
        ckpt = run.load_checkpoint(device)
        vae.load_state_dict(ckpt["module"])
        trainer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], device)
        history = ckpt["history"]
        run.write_metrics(history)

    steps = len(data.train_x) // cfg.batch_size
    run_bar = tqdm(total=steps * (cfg.epochs - len(history)), desc=label, unit="step", position=position,
                   disable=not progress or label is None)
    labels = (data.train_y, data.test_y) if vae.conditional else (None, None)
    objective = "recon" if cfg.model == "ae" else "elbo"
    for epoch in range(len(history), cfg.epochs):
        if cfg.model != "ae":
            vae.beta = kl_weight(cfg, epoch)
        epoch_bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                         disable=not progress or label is not None)
        bar = epoch_bar if label is None else run_bar
        train_value, seconds = train_epoch(trainer, data.train_x, labels[0], cfg, epoch, bar)
        test = evaluate.metrics(vae, data.test_x, labels[1])
        bar.set_postfix({f"train_{objective}": f"{train_value:.2f}", f"test_{objective}": f"{test[objective]:.2f}"})
        epoch_bar.close()
        record = {"epoch": epoch + 1, f"train_{objective}": train_value, **{f"test_{k}": v for k, v in test.items()}}
        if cfg.model != "ae":
            record["kl_weight"] = vae.beta
        history.append({**record, "seconds": seconds})
        state = {"epoch": epoch + 1, "config": cfg.to_dict(), "x_dim": data.train_x.shape[1], "module": vae.state_dict(),
                 "optimizer": trainer.state_dict(), "rng": rng_state(device), "history": history}
        run.save_checkpoint(state)
        run.write_metrics(history)
    run_bar.close()

    train_x = data.train_x if cfg.binarize != "dynamic" else binarise(data.train_x, seeded(EVAL_SEED, 1, device=device))
    final = {"train": evaluate.metrics(vae, train_x, labels[0]), "test": evaluate.metrics(vae, data.test_x, labels[1])}
    return FitResult(run.path, history, final)
