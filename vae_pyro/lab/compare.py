"""`vae-pyro compare`: every estimator from the same initial weights, data order and seed, on any
model that keeps the contract, repeated over ``seeds``.

Each estimator trains in its own run folder under the compare folder (``seed-S/`` per seed when
there are several; one after another, or ``jobs`` at a time in separate processes); then each is
evaluated (IS log-likelihood, active units), the gradient diagnostics run for all estimators at two
shared parameter points (the initial weights, and the weights the reference estimator reached) on
``grad_batches`` fixed batches, and each seed's summary, figures and report are written. Over
several seeds the comparison's own summary gives each metric's mean and standard error over seeds
and its paired difference to the reference with a 95% interval (``stats.py``). The data are loaded
once; the trained modules are passed on as objects (read back from their run folders only when
other processes trained them).
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
from torch import nn

from vae_pyro import data as datasets
from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.estimators import IWAE_FAMILY, NAMES, OWNED_OPTIONS, PATHLESS
from vae_pyro.lab import diagnostics, distributed, stats, traces
from vae_pyro.lab.evaluate import evaluate
from vae_pyro.lab.experiment import (
    EVAL_SEED,
    Data,
    build_model,
    labels,
    load_data,
    make_estimator,
    resolve_device,
    restore_run,
)
from vae_pyro.lab.runs import CHECKPOINT, FolderLock, atomic_write, write_json
from vae_pyro.lab.train import Interrupted, fit
from vae_pyro.lab.trainers import make_trainer
from vae_pyro.models import VAE
from vae_pyro.report import figures as plots
from vae_pyro.report.markdown import write_report, write_run_report, write_seeds_report

SNR_KS = (1, 5, 50)  # the IWAE rows of the gradient diagnostics
MANIFEST = "compare.json"
GRAD_BATCH = 2  # stream key of the fixed batch for gradient diagnostics
DEFAULT_ESTIMATORS = ("trace", "meanfield", "hand", "score", "iwae")


def config_for(options: dict, name: str) -> Config:
    """The run of estimator ``name``: the shared options, minus those it cannot take."""
    opts = {**options, "estimator": name}
    for key, owners in OWNED_OPTIONS.items():
        if name not in owners:
            opts.pop(key, None)
    if name in IWAE_FAMILY:
        opts.pop("particles", None)
    return Config(**opts)


def warm_up() -> None:
    """One tiny training step, so the process's one-off start-up costs (lazy imports, allocator,
    kernel selection) are not billed to whichever estimator happens to train first."""
    vae = VAE(x_dim=784, z_dim=2, hidden=(8,))
    make_trainer(estimators.make("meanfield"), vae, 1e-3).step(torch.zeros(4, 784))
    pyro.clear_param_store()


def _train(cfg: dict, run_dir: str, mode: str, position: int, label: str, threads: int | None, progress: bool,
           data: Data | None = None):
    """One estimator's run (in this process, or in a pool's: then ``data`` is None and it loads its own)."""
    if threads:
        torch.set_num_threads(threads)
    warm_up()
    label = f"{label:>13}"
    result = fit(Config.from_dict(cfg), run_dir, resume=mode == "resume", force=mode == "force",
                 progress=progress, label=label, position=position, data=data)
    return result if data is not None else None


def _mode(run_dir: Path, resume: bool, force: bool) -> str:
    if resume and (run_dir / CHECKPOINT).is_file():
        return "resume"
    return "force" if force or resume else "new"


def train_all(configs: dict[str, Config], out: Path, data: Data, jobs: int, resume: bool, force: bool,
              progress: bool) -> dict[str, tuple[nn.Module, list[dict], dict]]:
    """Train every configuration (name: its run folder under ``out``); return name -> (trained module,
    history, estimator state)."""
    args = [(c.to_dict(), str(out / n), _mode(out / n, resume, force), i, n) for i, (n, c) in enumerate(configs.items())]
    if jobs == 1:
        results = {n: _train(*a, None, progress, data) for n, a in zip(configs, args)}
        return {n: (r.module, r.history, r.estimator_state) for n, r in results.items()}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_train, *a, threads, progress) for a in args]:
            future.result()
    runs = {n: restore_run(out / n, data.train_x.device) for n in configs}
    return {n: (r.module, r.history, r.checkpoint["optimizer"]["estimator"]) for n, r in runs.items()}


def fixed_batch(data: Data, cfg: Config, conditional: bool = False, index: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fixed batch ``index`` of the gradient and loss diagnostics: ``cfg.batch_size`` random training
    points, the same for every run and seed, binarised when training binarises (and their labels, for a
    conditional model)."""
    gen = datasets.seeded(EVAL_SEED, GRAD_BATCH, index, device=data.train_x.device)
    idx = torch.randperm(len(data.train_x), generator=gen, device=data.train_x.device)[: cfg.batch_size]
    x = datasets.binarise(data.train_x[idx], gen) if cfg.binarize != "none" else data.train_x[idx]
    return x, data.train_y[idx] if conditional else None


def gradient_specs(names: list[str], options: dict) -> list[tuple[str, Config]]:
    """(label, config) of each estimator's gradient diagnostics; `iwae` once per K in SNR_KS and its own."""
    specs = []
    for name in names:
        if name in IWAE_FAMILY:
            ks = sorted(k for k in {*SNR_KS, config_for(options, name).iwae_k} if k >= (2 if name in PATHLESS else 1))
            specs += [(f"{name}-{k}", config_for({**options, "iwae_k": k}, name)) for k in ks]
        else:
            specs.append((name, config_for(options, name)))
    return specs


def gradient_rows(specs: list[tuple[str, Config]], module: nn.Module, batches: list[tuple[torch.Tensor, ...]],
                  point: str, draws: int, progress: bool, score_state: dict | None = None) -> list[dict]:
    """Gradient statistics of every estimator at the module's current parameters, one row per estimator,
    parameter group and fixed batch (x, y) of ``batches`` (the b-th batch's draws seeded by b).

    ``score_state``: the baselines `score` learned in its own run, used in place of fresh ones.
    """
    rows = []
    for label, cfg in specs:
        k = cfg.iwae_k if cfg.estimator in IWAE_FAMILY else None
        for b, (x, y) in enumerate(batches):
            estimator = make_estimator(cfg, module, x, y)
            pyro.clear_param_store()
            if score_state is not None and cfg.estimator == "score":
                estimator.load_state_dict(score_state)
            warmup = 20 if cfg.baseline == "decaying" else 0
            for s in diagnostics.gradient_stats(estimator, module, x, draws, seed=b, warmup=warmup,
                                                progress=progress, label=label, y=y):
                rows.append({**s.to_dict(), "family": cfg.estimator, "k": k, "point": point, "batch": b})
    return rows


def check_estimators(names: list[str], configs: dict[str, Config], data: Data, device: torch.device) -> None:
    """Refuse, before anything is written, an estimator the model cannot use, or a model with nothing to compare."""
    for name in names:
        module = build_model(configs[name], data, device)
    x, y = data.train_x[:1], labels(module, data.train_y[:1])
    if not traces.latent_sites(module, x, y):
        raise VaeError(f"compare compares ELBO estimators, and {configs[names[0]].model} has no latent site, so "
                       "every estimator's loss is the same; train it with vae-pyro train")


def compare(options: dict, names: list[str], out: str | Path, jobs: int = 1, resume: bool = False, force: bool = False,
            k: int = 1000, grad_draws: int = 100, loss_draws: int = 500, progress: bool = True,
            command: str = "vae-pyro compare", dataset: datasets.Dataset | None = None, seeds: int = 1,
            reference: str | None = None, grad_batches: int = 3) -> dict:
    """Train, evaluate and diagnose every estimator in ``names`` on the model ``options["model"]``, for
    ``seeds`` seeds from ``options["seed"]`` on; write summaries, figures and reports; return the summary
    (over seeds when there are several). ``reference``: what paired differences are taken to (default
    meanfield when compared, else the first). ``dataset``: tensors given from Python."""
    out = Path(out)
    if not names or len(set(names)) != len(names) or any(n not in NAMES for n in names):
        raise VaeError(f"--estimators must name distinct estimators from {', '.join(NAMES)}; "
                       f"got {','.join(names) or 'none'}")
    for key, value in (("jobs", jobs), ("seeds", seeds), ("grad-batches", grad_batches)):
        if value < 1:
            raise VaeError(f"--{key} must be a positive integer, got {value}")
    reference = reference or ("meanfield" if "meanfield" in names else names[0])
    if reference not in names:
        raise VaeError(f"--reference {reference} is not among the compared estimators ({','.join(names)}); "
                       "name one of them")
    if jobs > 1 and distributed.launched():
        raise VaeError("--jobs trains estimators side by side in one machine's processes; under torchrun use --jobs 1")
    base = config_for(options, names[0])
    if jobs > 1 and (dataset is not None or base.model.startswith("__main__:")):
        raise VaeError("--jobs trains in fresh processes, which can load neither tensors given from Python nor a "
                       "class defined in __main__; use jobs=1, or put the class in a file (path/to/file.py:Class)")
    seed_list = list(range(base.seed, base.seed + seeds))
    folders = {s: "" if seeds == 1 else f"seed-{s}" for s in seed_list}
    runs = {(s, n): config_for({**options, "seed": s}, n) for s in seed_list for n in names}
    device = resolve_device(base.device)
    world = distributed.init(device)
    data = load_data(base, device, dataset)  # fails early on bad data, before anything is written
    check_estimators(names, {n: runs[seed_list[0], n] for n in names}, data, device)
    manifest = {"estimators": names, "seeds": seeds, "options": options, "command": command}

    def prepare() -> None:
        if (out / MANIFEST).exists() and not (resume or force):
            raise VaeError(f"{out} already holds a comparison; pass --resume to finish it, --force to redo it, "
                           "or another --out")
        if resume and (out / MANIFEST).exists():
            saved = json.loads((out / MANIFEST).read_text())
            if (saved["estimators"], saved.get("seeds", 1)) != (names, seeds):
                raise VaeError(f"cannot resume {out}: it compares {','.join(saved['estimators'])} over "
                               f"{saved.get('seeds', 1)} seed(s), asked {','.join(names)} over {seeds}")
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        write_json(out / MANIFEST, manifest)

    lock = FolderLock(out)  # one compare per folder; each run folder has its own writer's lock besides
    distributed.from_leader(prepare, world)
    try:
        trained = train_all({str(Path(folders[s]) / n): c for (s, n), c in runs.items()}, out, data, jobs, resume,
                            force, progress)
        if not world.leader:  # under torchrun the other ranks only train; rank 0 evaluates and reports
            return {}
        summaries = {}
        for s in seed_list:
            keys = {n: str(Path(folders[s]) / n) for n in names}
            summaries[s] = report(names, {**options, "seed": s}, {n: runs[s, n] for n in names},
                                  {n: trained[key] for n, key in keys.items()}, data, out / folders[s], k,
                                  grad_draws, grad_batches, loss_draws, reference, progress, command)
        if seeds == 1:
            return summaries[seed_list[0]]
        histories = {n: [trained[str(Path(folders[s]) / n)][1] for s in seed_list] for n in names}
        return report_seeds(summaries, histories, names, reference, out, command)
    except Interrupted as e:
        raise Interrupted(f"{e} -- for the whole comparison: vae-pyro compare --out {out} --resume", e.signum) from None
    finally:
        lock.release()


def report(names: list[str], options: dict, configs: dict[str, Config], trained: dict[str, tuple], data: Data,
           out: Path, k: int, grad_draws: int, grad_batches: int, loss_draws: int, reference: str, progress: bool,
           command: str) -> dict:
    """Evaluate and diagnose one seed's trained estimators (``train_all``'s result); write its summary,
    figures and report."""
    modules = {n: t[0] for n, t in trained.items()}
    histories = {n: t[1] for n, t in trained.items()}
    evaluations = {n: _evaluation(out / n, modules[n], data, len(histories[n]), k, progress) for n in names}
    for n in names:
        write_run_report(out / n, configs[n], modules[n], data, histories[n])

    base = configs[names[0]]
    conditional = getattr(modules[reference], "conditional", False)
    batches = [fixed_batch(data, base, conditional, b) for b in range(grad_batches)]
    specs = gradient_specs(names, options)
    device = data.train_x.device
    grads = gradient_rows(specs, build_model(base, data, device), batches, "initialisation", grad_draws, progress)
    grads += gradient_rows(specs, modules[reference], batches, f"{reference}'s trained weights", grad_draws,
                           progress, trained["score"][2] if "score" in names else None)
    losses = _loss_draws(configs, modules[reference], *batches[0], loss_draws)

    summary = _summary(names, configs, histories, evaluations, grads, losses, k)
    summary.update({"reference": reference, "command": command, "machine": machine(), "model": base.model,
                    "seed": base.seed})
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", summary["estimators"])
    figures = {
        "curves": plots.curves({n: [h] for n, h in histories.items()}, out / "figures" / "curves.png"),
        "gradients": plots.gradients(grads, out / "figures" / "gradients.png"),
        "loss_values": plots.loss_values({n: v["draws"] for n, v in losses.items()},
                                         out / "figures" / "loss_values.png"),
        **_snr_figure(grads, out),
    }
    write_report(out, summary, figures)
    return summary


def _snr_figure(grads: list[dict], out: Path) -> dict[str, Path]:
    """The SNR-against-K figure, where the IWAE family was diagnosed at several K."""
    ks = {g["k"] for g in grads if g["k"] is not None}
    return {"snr_vs_k": plots.snr_vs_k(grads, out / "figures" / "snr_vs_k.png")} if len(ks) > 1 else {}


def report_seeds(summaries: dict[int, dict], histories: dict[str, list[list[dict]]], names: list[str],
                 reference: str, out: Path, command: str) -> dict:
    """The comparison over seeds: per metric the mean and se over seeds and the paired difference to
    ``reference`` with its 95% interval; figures with error bars and bands; summary, csv and report."""
    first = next(iter(summaries.values()))
    metrics = [key for key, value in first["estimators"][0].items()
               if isinstance(value, int | float) and key != "epochs" and not key.endswith("_se")]
    rows = stats.over_seeds([s["estimators"] for s in summaries.values()], reference, metrics)
    per_seed = [{**r, "seed": seed} for seed, s in summaries.items() for r in s["estimators"]]
    grads = [{**g, "seed": seed} for seed, s in summaries.items() for g in s["gradients"]]
    summary = {"estimators": rows, "per_seed": per_seed, "gradients": grads,
               "gradient_table": stats.gradient_table(grads), "seeds": list(summaries),
               "reference": reference, "command": command, "machine": first["machine"], "model": first["model"],
               "config": first["config"], "level": stats.LEVEL}
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", rows)
    likelihood = next(m for m in metrics if m.startswith("test_is_log_likelihood_k"))
    figures = {
        "curves": plots.curves(histories, out / "figures" / "curves.png"),
        "seeds": plots.seed_differences(per_seed, rows, reference, ["test_elbo", likelihood],
                                        out / "figures" / "seeds.png"),
        "gradients": plots.gradients(grads, out / "figures" / "gradients.png"),
        **_snr_figure(grads, out),
    }
    write_seeds_report(out, summary, figures)
    return summary


def _evaluation(run_dir: Path, module: nn.Module, data: Data, epochs: int, k: int, progress: bool) -> dict:
    """The run's evaluation.json if it is of this K and the final epoch, else a fresh evaluation (written there)."""
    path = run_dir / "evaluation.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("epochs") == epochs and f"test_is_log_likelihood_k{k}" in saved:
            return saved
    result = {"epochs": epochs, **evaluate(module, data, k, progress=progress)}
    write_json(path, result)
    return result


def _loss_draws(configs: dict[str, Config], module: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                draws: int) -> dict[str, dict]:
    out = {}
    for name, cfg in configs.items():
        pyro.clear_param_store()
        estimator = make_estimator(cfg, module, x, y)
        values = diagnostics.loss_draws(estimator, module, x, draws, y=y)
        out[name] = {"mean": values.mean().item(), "std": values.std().item(), "draws": values.tolist()}
    return out
def _summary(names, configs, histories, evaluations, grads, losses, k) -> dict:
    batches = len({g["batch"] for g in grads})
    rows = []
    for name in names:
        history, ev = histories[name], evaluations[name]
        seconds = sorted(r["seconds"] for r in history)
        row = {
            "estimator": name,
            "epochs": len(history),
            **{key: ev[key] for key in ("test_elbo", "test_elbo_se", f"test_is_log_likelihood_k{k}",
                                        f"test_is_log_likelihood_k{k}_se", "test_kl", "active_units")},
            **{key: v for key, v in ev.items() if key.startswith("test_cluster_accuracy")},
            "seconds_per_epoch": seconds[len(seconds) // 2],
            "loss_std_per_image": losses[name]["std"],
        }
        label = f"{name}-{configs[name].iwae_k}" if name in IWAE_FAMILY else name
        for g in grads:  # the mean over the fixed batches
            if g["estimator"] == label:
                point = "init" if g["point"] == "initialisation" else "trained"
                for key, stat in (("var", "variance"), ("snr", "snr")):
                    column = f"grad_{key}_{g['group']}_{point}"
                    row[column] = row.get(column, 0.0) + g[stat] / batches
        rows.append(row)
    return {"estimators": rows, "gradients": grads, "gradient_table": stats.gradient_table(grads),
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
