"""fit(): train any model that keeps the contract with one estimator, an epoch at a time,
checkpointing after each.

Every estimator trains through one multi-tensor (or, with ``--adam fused``, fused) ``torch.optim.Adam``
over the module's parameters (the fast path); with ``--loop svi`` Pyro's ELBOs train through the reference path,
``pyro.infer.SVI`` with ``pyro.optim.Adam``, and give the same numbers bit for bit (both in
``trainers.py``). Data order and binarisation come from generators keyed by (seed, epoch),
and the checkpoint holds module, optimizer and RNG state, so a resumed run repeats exactly
what an uninterrupted one would have done.
"""

import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from vae_pyro.config import Config
from vae_pyro.data import batches, binarise, seeded
from vae_pyro.errors import VaeError
from vae_pyro.lab import compiling, diagnostics, distributed, evaluate, faults, memory
from vae_pyro.lab.experiment import (
    EVAL_SEED,
    Data,
    describe,
    fixed_batch,
    history_frame,
    labels,
    load_data,
    make_estimator,
    probe_batch,
    resolve_device,
)
from vae_pyro.lab.runs import CHECKPOINT, Run
from vae_pyro.lab.trainers import make_trainer

if TYPE_CHECKING:  # lab never imports the trackers: fit is handed one
    from vae_pyro.tracking import Sink, Tracking


class Diverged(VaeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(VaeError):
    """SIGINT or SIGTERM arrived; the step in progress finished and a checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message, signum)  # both in args, so the error pickles across --jobs processes
        self.signum, self.exit_code = signum, 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them

    def __str__(self) -> str:
        return self.args[0]


class StopOnSignal:
    """Within the block, SIGINT and SIGTERM only raise a flag (``signum``): training finishes the
    step in progress, writes a checkpoint and stops. Outside the main thread it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class EpochState:
    """Where an epoch stands: steps done, the summed loss over the images seen, training seconds.
    A checkpoint taken mid-epoch (on a signal) stores it, and the resumed epoch goes on from it."""

    step: int = 0
    total: float = 0.0
    seen: int = 0
    seconds: float = 0.0


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
    """What training made: the trained module, the data it saw, its history (``metrics``: as a DataFrame)
    and the run folder."""

    run: Path
    module: nn.Module
    data: Data
    history: list[dict]  # one metrics.jsonl record per epoch
    final: dict[str, dict[str, float]]  # {"train" | "test": evaluate.metrics(...)}
    config: Config
    estimator_state: dict  # what the estimator keeps beside the module (score's baselines)
    leader: bool = True  # False on the ranks > 0 of a torchrun job, which write nothing

    @property
    def metrics(self) -> pd.DataFrame:
        return history_frame(self.history)

    def __repr__(self) -> str:
        return describe("FitResult", self.run, self.config, self.history)

    def _repr_html_(self) -> str:
        return f"<p><code>{self}</code></p>" + self.metrics.to_html(float_format="{:.3f}".format)


def kl_weight(beta: float, warmup: int, epoch: int) -> float:
    """β_e = β · min(1, e / W) for epoch e = 0, 1, … and warm-up W epochs (W = 0: β throughout)."""
    return beta * min(1.0, epoch / warmup) if warmup else beta


def train_epoch(trainer, x: torch.Tensor, y: torch.Tensor | None, cfg: Config, epoch: int, bar: tqdm,
                world: distributed.World = distributed.SINGLE, state: EpochState | None = None,
                stop: StopOnSignal | None = None, on_step: Callable[[int, float], None] | None = None
                ) -> tuple[EpochState, bool]:
    """One pass over shuffled batches, from ``state`` (a resumed epoch) on; returns the epoch's
    state and whether it finished (False: a stop signal arrived and the epoch is to be resumed).
    ``on_step(step, loss per image)`` sees every step's loss (live tracking).

    ``y`` (labels) is passed on to a conditional model, None otherwise. Under torchrun every rank
    draws the same permutation and binarisation and trains on its shard of each global batch;
    the loss (and a stop request) are summed over all ranks, so every rank stops at the same step.
    """
    state = state or EpochState()
    gen = seeded(cfg.seed, epoch, device=x.device)
    if cfg.binarize == "dynamic":
        x = binarise(x, gen)
    start = time.perf_counter() - state.seconds
    for step, idx in enumerate(batches(len(x), cfg.batch_size * world.size, gen)):
        if step < state.step:  # done before the checkpoint this epoch resumes from
            continue
        mine = distributed.shard(idx, world)
        loss = trainer.step(x[mine], y[mine] if y is not None else None)
        faults.hit("step")
        loss, stopping = distributed.all_sum([loss, float(stop is not None and stop.signum is not None)], world, x.device)
        if not math.isfinite(loss):
            kept = (f"the checkpoint of epoch {epoch} is kept: continue with --resume --lr {cfg.lr / 10:g} (or smaller)"
                    if epoch or state.step else f"no epoch had finished: start again with --lr {cfg.lr / 10:g} (or smaller)")
            raise Diverged(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; {kept}")
        state = EpochState(step + 1, state.total + loss, state.seen + len(idx), time.perf_counter() - start)
        if on_step is not None:
            on_step(step, loss / len(idx))
        bar.update()
        if stopping:
            return state, False
    return state, True


def steps_per_epoch(cfg: Config, data: Data, world: distributed.World) -> int:
    """Full global batches per epoch (the last, partial one is dropped)."""
    return len(data.train_x) // (cfg.batch_size * world.size)


def setup(cfg: Config) -> tuple[torch.device, distributed.World]:
    """The device and, under torchrun, this process's place in the job (each rank its own GPU)."""
    device = resolve_device(cfg.device)
    if distributed.launched() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, distributed.init(device)


def build(cfg: Config, data: Data, device: torch.device, world: distributed.World):
    """(module, trainer): the module checked against the contract, the estimator and the memory available
    (before anything is written), compiled if asked; the trainer of the loop (DDP under torchrun)."""
    if cfg.batch_size * world.size > len(data.train_x):
        ranks = f" x {world.size} processes" if world.size > 1 else ""
        raise VaeError(f"--batch-size {cfg.batch_size}{ranks} exceeds the {len(data.train_x)} training images; lower it")
    vae = memory.checked_model(cfg, data, device)  # refuses a step that would not fit, before any write
    if cfg.compile:
        compiling.compile_model(vae)
    estimator = make_estimator(cfg, vae, *probe_batch(data, cfg, 1, vae))
    if world.size > 1:
        torch.manual_seed(int(seeded(cfg.seed, world.rank).initial_seed()))  # each rank its own noise
        return vae, distributed.DDPTrainer(estimator, vae, cfg.lr, world, device, cfg.adam)
    return vae, make_trainer(estimator, vae, cfg.lr, cfg.loop, cfg.adam)


def restore(run: Run, vae: nn.Module, trainer, data: Data, cfg: Config, world: distributed.World,
            device: torch.device) -> tuple[list[dict], EpochState]:
    """Load a resumed run's checkpoint into the module, trainer and RNG; its history and unfinished epoch."""
    ckpt = distributed.from_leader(lambda: run.load_checkpoint("cpu"), world)
    if len(ckpt["rng"]) != world.size:
        raise VaeError(f"{run.path} was trained by {len(ckpt['rng'])} processes; resume it with as many "
                       f"(torchrun --nproc_per_node), not {world.size}")
    if ckpt["x_dim"] != data.train_x.shape[1]:
        raise VaeError(f"{run.path} was trained on {ckpt['x_dim']} values per image, but {cfg.dataset} has "
                       f"{data.train_x.shape[1]}; resume it with the data it was trained on")
    try:
        vae.load_state_dict(ckpt["module"])
        trainer.load_state_dict(ckpt["optimizer"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise VaeError(f"{run.path}'s checkpoint does not fit this model and loop ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:120]}); it was written by another version: start again with --force") from None
    set_rng_state(ckpt["rng"][world.rank], device)
    if world.leader:
        run.write_metrics(ckpt["history"])
    return ckpt["history"], EpochState(**ckpt.get("partial", {}))


def save(run: Run, cfg: Config, vae: nn.Module, trainer, history: list[dict], epoch_state: EpochState, x_dim: int,
         world: distributed.World, device: torch.device) -> None:
    """Everything a resume needs, written atomically by rank 0: after an epoch, or mid-epoch on a signal."""
    rngs = distributed.gather(rng_state(device), world)
    if world.leader:
        state = {"epoch": len(history), "config": cfg.to_dict(), "x_dim": x_dim, "module": vae.state_dict(),
                 "optimizer": trainer.state_dict(), "rng": rngs, "history": history}
        if epoch_state.step:
            state["partial"] = asdict(epoch_state)
        run.save_checkpoint(state)
        run.write_metrics(history)


def fit(
    cfg: Config, out: str | Path, resume: bool = False, force: bool = False, progress: bool = True,
    label: str | None = None, position: int = 0, data: Data | None = None, log: "Tracking | None" = None,
) -> FitResult:
    """Train ``cfg`` into run folder ``out``, or continue it there when ``resume``. ``data``: the
    data already loaded (``experiment.load_data``), or tensors given from Python; by default
    ``cfg.dataset`` is loaded. ``log``: where every step's loss, the epochs and the final
    evaluation are tracked live (``vae_pyro.tracking``).

    Progress: a bar per epoch; with a ``label``, one bar for the whole run at line ``position``
    (how `compare` shows one bar per estimator). Started by torchrun with several processes, it
    trains data-parallel (``distributed.py``); rank 0 alone writes the run folder.
    """
    device, world = setup(cfg)
    data = data if data is not None else load_data(cfg, device)
    vae, trainer = build(cfg, data, device, world)
    made_here = not Path(out).exists()  # a folder this call creates is removed if it fails before a checkpoint
    run = distributed.from_leader(lambda: Run.resume(out, cfg) if resume else Run.create(out, cfg, force), world)
    sink = None
    try:
        history, partial = restore(run, vae, trainer, data, cfg, world, device) if resume else ([], EpochState())
        steps = steps_per_epoch(cfg, data, world)
        if log is not None and world.leader:
            sink = log.open(run.path, len(history) * steps + partial.step, cfg.to_dict(), history, steps)
        epochs(run, cfg, vae, trainer, data, history, partial, world, device, progress and world.leader, label,
               position, sink)
        train_y, test_y = labels(vae, data.train_y), labels(vae, data.test_y)
        train_x = data.train_x if cfg.binarize != "dynamic" else binarise(data.train_x, seeded(EVAL_SEED, 1, device=device))
        final = {"train": evaluate.metrics(vae, train_x, train_y), "test": evaluate.metrics(vae, data.test_x, test_y)}
        if sink is not None:
            sink.final({f"{split}_{k}": v for split, values in final.items() for k, v in values.items()})
        return FitResult(run.path, vae, data, history, final, cfg, trainer.state_dict()["estimator"], world.leader)
    except BaseException as e:
        if sink is not None:
            sink.close("KILLED" if isinstance(e, Interrupted | KeyboardInterrupt) else "FAILED")
            sink = None
        if made_here and world.leader and not (run.path / CHECKPOINT).exists():  # nothing worth keeping
            run.release()
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        if sink is not None:
            sink.close()
        run.release()


def epochs(run: Run, cfg: Config, vae: nn.Module, trainer, data: Data, history: list[dict], partial: EpochState,
           world: distributed.World, device: torch.device, progress: bool, label: str | None, position: int,
           sink: "Sink | None" = None) -> None:
    """The epochs from ``len(history)`` to ``cfg.epochs``: train, evaluate on the test set, append to
    ``history``, send it to ``sink`` (every step's loss too), checkpoint; on a stop signal, checkpoint the
    epoch's position and raise Interrupted."""
    beta = getattr(vae, "beta", None)  # the KL weight a warm-up rises to
    steps = steps_per_epoch(cfg, data, world)
    run_bar = tqdm(total=steps * (cfg.epochs - len(history)) - partial.step, desc=label, unit="step",
                   position=position, disable=not progress or label is None)
    train_y, test_y = labels(vae, data.train_y), labels(vae, data.test_y)
    with StopOnSignal() as stop:
        for epoch in range(len(history), cfg.epochs):
            if cfg.kl_warmup:
                vae.beta = kl_weight(beta, cfg.kl_warmup, epoch)
            epoch_bar = tqdm(total=steps, initial=partial.step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                             disable=not progress or label is not None)
            bar = epoch_bar if label is None else run_bar
            on_step = None if sink is None else (lambda step, loss, first=epoch * steps: sink.step(first + step, loss))
            state, finished = train_epoch(trainer, data.train_x, train_y, cfg, epoch, bar, world, partial, stop, on_step)
            partial = EpochState()
            if not finished:
                epoch_bar.close()
                if sink is not None:
                    sink.flush()
                save(run, cfg, vae, trainer, history, state, data.train_x.shape[1], world, device)
                name = signal.Signals(stop.signum).name
                raise Interrupted(f"{name} at epoch {epoch + 1}, step {state.step}: checkpoint written; continue "
                                  f"with: vae-pyro train --out {run.path} --resume", stop.signum)
            train_value = -state.total / state.seen
            test = evaluate.metrics(vae, data.test_x, test_y)
            bar.set_postfix({"train_elbo": f"{train_value:.2f}", "test_elbo": f"{test['elbo']:.2f}"})
            epoch_bar.close()
            record = {"epoch": epoch + 1, "train_elbo": train_value, **{f"test_{k}": v for k, v in test.items()}}
            if cfg.grad_variance:
                fixed_x, fixed_y = fixed_batch(data, cfg, train_y is not None)
                record["log_guide_grad_variance"] = diagnostics.guide_log_variance(
                    trainer.estimator, vae, fixed_x, fixed_y, cfg.grad_variance, EVAL_SEED)
            if beta is not None:
                record["kl_weight"] = vae.beta
            history.append({**record, "seconds": state.seconds})
            if sink is not None:  # flushed before the checkpoint that claims it
                sink.epoch(history[-1])
            save(run, cfg, vae, trainer, history, EpochState(), data.train_x.shape[1], world, device)
    run_bar.close()
