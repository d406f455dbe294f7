"""`vae-pyro compare`: every estimator from the same initial weights, data order and seed.

Each estimator trains in its own run folder under the compare folder (one after another, or
``jobs`` at a time in separate processes); then each is evaluated (IS log-likelihood, active
units), the gradient diagnostics run for all estimators at two shared parameter points (the
initial weights, and the weights the reference estimator reached), and the summary, figures
and report are written.
"""

import csv
import io
import json
import os
import platform
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyro
import torch

from vae_pyro import diagnostics, distributed, plots
from vae_pyro.config import Config
from vae_pyro.data import binarise, seeded
from vae_pyro.errors import VaeError
from vae_pyro.estimators import ELBO_NAMES
from vae_pyro.evaluate import evaluate_run
from vae_pyro.experiment import EVAL_SEED, build_vae, load_data, make_estimator, resolve_device, restore
from vae_pyro.models import VAE
from vae_pyro.report import write_report, write_run_report
from vae_pyro.runs import CHECKPOINT, Run, atomic_write, write_json
from vae_pyro.train import Interrupted, fit
from vae_pyro.trainers import make_trainer

SNR_KS = (1, 5, 50)  # the IWAE rows of the gradient diagnostics
MANIFEST = "compare.json"
GRAD_BATCH = 2  # stream key of the fixed batch for gradient diagnostics


def config_for(options: dict, name: str) -> Config:
    """The run of estimator ``name``: the shared options, minus those it cannot take."""
    opts = {**options, "estimator": name}
    if name != "score":
        opts.pop("baseline", None)
    if name == "iwae":
        opts.pop("particles", None)
    return Config(**opts)


def warm_up() -> None:
    """One tiny training step, so the process's one-off start-up costs (lazy imports, allocator,
    kernel selection) are not billed to whichever estimator happens to train first."""
    make_trainer(make_estimator(Config(), 784), VAE(x_dim=784, z_dim=2, hidden=(8,)), 1e-3).step(torch.zeros(4, 784))
    pyro.clear_param_store()


def _train(cfg: dict, run_dir: str, mode: str, position: int, threads: int | None, progress: bool) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    warm_up()
    label = f"{cfg['estimator']:>13}"
    result = fit(Config.from_dict(cfg), run_dir, resume=mode == "resume", force=mode == "force",
                 progress=progress, label=label, position=position)
    return result.history


def _mode(run_dir: Path, resume: bool, force: bool) -> str:
    if resume and (run_dir / CHECKPOINT).is_file():
        return "resume"
    return "force" if force or resume else "new"


def train_all(configs: dict[str, Config], out: Path, jobs: int, resume: bool, force: bool, progress: bool) -> None:
    args = [(c.to_dict(), str(out / n), _mode(out / n, resume, force), i) for i, (n, c) in enumerate(configs.items())]
    if jobs == 1:
        for a in args:
            _train(*a, None, progress)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_train, *a, threads, progress) for a in args]:
            future.result()


def fixed_batch(train_x: torch.Tensor, size: int) -> torch.Tensor:
    """The batch every gradient and loss diagnostic uses: ``size`` random training images, binarised, fixed."""
    gen = seeded(EVAL_SEED, GRAD_BATCH, device=train_x.device)
    idx = torch.randperm(len(train_x), generator=gen, device=train_x.device)[:size]
    return binarise(train_x[idx], gen)


def gradient_rows(names: list[str], vae, x: torch.Tensor, options: dict, point: str, draws: int, progress: bool,
                  score_state: dict | None = None) -> list[dict]:
    """Gradient statistics of every estimator at the module's current parameters; IWAE for each K.

    ``score_state``: the baselines `score` learned in its own run, used in place of fresh ones.
    """
    specs = []
    for name in names:
        if name == "iwae":
            ks = sorted({*SNR_KS, config_for(options, "iwae").iwae_k})
            specs += [(f"iwae-{k}", config_for({**options, "iwae_k": k}, "iwae")) for k in ks]
        else:
            specs.append((name, config_for(options, name)))
    rows = []
    for label, cfg in specs:
        estimator = make_estimator(cfg, x.shape[1])
        pyro.clear_param_store()
        if score_state is not None and cfg.estimator == "score":
            estimator.load_state_dict(score_state)
        warmup = 20 if cfg.baseline == "decaying" else 0
        for s in diagnostics.gradient_stats(estimator, vae, x, draws, warmup=warmup, progress=progress, label=label):
            rows.append({**s.to_dict(), "point": point})
    return rows


def compare(options: dict, names: list[str], out: str | Path, jobs: int = 1, resume: bool = False, force: bool = False,
            k: int = 1000, grad_draws: int = 100, loss_draws: int = 500, progress: bool = True,
            command: str = "vae-pyro compare") -> dict:
    """Train, evaluate and diagnose every estimator in ``names``; write summary, figures and report."""
    out = Path(out)
    unknown = [n for n in names if n not in ELBO_NAMES]
    if unknown or len(set(names)) != len(names) or not names:
        raise VaeError(f"--estimators must name distinct estimators from {', '.join(ELBO_NAMES)}; "
                       f"got {','.join(names) or 'none'}")
    if options.get("model") == "ae":
        raise VaeError("compare compares ELBO estimators; the autoencoder has none: train it with vae-pyro train --model ae")
    configs = {n: config_for(options, n) for n in names}
    if jobs < 1:
        raise VaeError(f"--jobs must be a positive integer, got {jobs}")
    if jobs > 1 and distributed.launched():
        raise VaeError("--jobs trains estimators side by side in one machine's processes; under torchrun use --jobs 1")
    device = resolve_device(configs[names[0]].device)
    world = distributed.init(device)
    data = load_data(configs[names[0]], device)  # fails early on bad data, before anything is written

    def prepare() -> None:
        if (out / MANIFEST).exists() and not (resume or force):
            raise VaeError(f"{out} already holds a comparison; pass --resume to finish it, --force to redo it, "
                           "or another --out")
        if resume and (out / MANIFEST).exists():
            saved = json.loads((out / MANIFEST).read_text())
            if saved["estimators"] != names:
                raise VaeError(f"cannot resume {out}: it compares {','.join(saved['estimators'])}, asked {','.join(names)}")
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MANIFEST, {"estimators": names, "options": options, "command": command})

    distributed.from_leader(prepare, world)
    try:
        train_all(configs, out, jobs, resume, force, progress)
    except Interrupted as e:
        raise Interrupted(f"{e} -- for the whole comparison: vae-pyro compare --out {out} --resume", e.signum) from None
    if not world.leader:  # under torchrun the other ranks only train; rank 0 evaluates and reports
        return {}
    evaluations = {n: _evaluation(out / n, k, progress) for n in names}
    for n in names:
        write_run_report(out / n)
    histories = {n: Run.open(out / n).metrics() for n in names}

    base = configs[names[0]]
    x = fixed_batch(data.train_x, base.batch_size)
    reference = "meanfield" if "meanfield" in names else names[0]
    grads = gradient_rows(names, build_vae(base, data.train_x.shape[1], device), x, options, "initialisation",
                          grad_draws, progress)
    _, trained, _ = restore(out / reference, device)
    score_state = Run.open(out / "score").load_checkpoint(device)["optimizer"]["estimator"] if "score" in names else None
    grads += gradient_rows(names, trained, x, options, f"{reference}'s trained weights", grad_draws, progress,
                           score_state)
    losses = _loss_draws(names, configs, trained, x, loss_draws)

    summary = _summary(names, configs, histories, evaluations, grads, losses, k)
    summary.update({"reference": reference, "command": command, "machine": machine()})
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", summary["estimators"])
    figures = {
        "curves": plots.curves(histories, out / "figures" / "curves.png"),
        "gradients": plots.gradients(grads, out / "figures" / "gradients.png"),
        "loss_values": plots.loss_values({n: v["draws"] for n, v in losses.items()}, out / "figures" / "loss_values.png"),
    }
    write_report(out, summary, figures)
    return summary


def _evaluation(run_dir: Path, k: int, progress: bool) -> dict:
    """The run's evaluation.json if it is of this K and the final epoch, else a fresh evaluation."""
    path, run = run_dir / "evaluation.json", Run.open(run_dir)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("epochs") == len(run.metrics()) and f"test_is_log_likelihood_k{k}" in saved:
            return saved
    return evaluate_run(run_dir, k=k, device=run.config().device, progress=progress)


def _loss_draws(names: list[str], configs: dict[str, Config], vae, x: torch.Tensor, draws: int) -> dict[str, dict]:
    out = {}
    for name in names:
        values = diagnostics.loss_draws(make_estimator(configs[name], x.shape[1]), vae, x, draws)
        out[name] = {"mean": values.mean().item(), "std": values.std().item(), "draws": values.tolist()}
    return out


def _summary(names, configs, histories, evaluations, grads, losses, k) -> dict:
    rows = []
    for name in names:
        history, ev = histories[name], evaluations[name]
        seconds = sorted(r["seconds"] for r in history)
        row = {
            "estimator": name,
            "epochs": len(history),
            "test_elbo": ev["test_elbo"],
            f"test_is_log_likelihood_k{k}": ev[f"test_is_log_likelihood_k{k}"],
            "test_kl": ev["test_kl"],
            "active_units": ev["active_units"],
            "seconds_per_epoch": seconds[len(seconds) // 2],
            "loss_std_per_image": losses[name]["std"],
        }
        label = f"iwae-{configs[name].iwae_k}" if name == "iwae" else name
        for g in grads:
            if g["estimator"] == label:
                point = "init" if g["point"] == "initialisation" else "trained"
                row[f"grad_var_{g['group']}_{point}"] = g["variance"]
                row[f"grad_snr_{g['group']}_{point}"] = g["snr"]
        rows.append(row)
    return {"estimators": rows, "gradients": grads,
            "loss_values": {n: {"mean": v["mean"], "std": v["std"]} for n, v in losses.items()},
            "config": {n: c.to_dict() for n, c in configs.items()}}


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue().encode())


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), pyro-ppl {pyro.__version__}, Python {platform.python_version()}")
