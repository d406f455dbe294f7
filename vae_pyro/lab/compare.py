"""`vae-pyro compare`: every estimator from the same initial weights, data order and seed, on any
model that keeps the contract, repeated over ``seeds``.

The work is two rounds of tasks on an executor (``executors.py``: this process, local processes, a
Dask cluster, SLURM jobs). First one task per (seed, estimator) trains the run in its own folder
under the compare folder (``seed-S/`` per seed when there are several) and evaluates it (IS
log-likelihood, active units); then one task per (seed, estimator) draws that estimator's gradients
at the seed's two shared parameter points (the initial weights, and the weights the reference
estimator reached) on ``grad_batches`` fixed batches, and its loss values. The parent gathers them
into each seed's summary (summary.json, summary.csv). Over several seeds the comparison's own
summary gives each metric's mean and standard error over seeds and its paired difference to the
reference with a 95% interval (``stats.py``). A task reads the trained runs it needs from their
folders, so the results are the same whichever executor ran it; a task run again after its worker
died resumes from the run's last checkpoint. ``compare`` returns a ``ComparisonRun``; its figures and
reports are the report's to draw (``vae_pyro.report.comparison.write``, passed as ``render``): lab
never imports report.
"""

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pyro
import torch
from torch import nn

from vae_pyro import data as datasets
from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.estimators import NAMES
from vae_pyro.lab import diagnostics, distributed, stats, traces
from vae_pyro.lab.evaluate import LikelihoodKey, evaluate, likelihoods
from vae_pyro.lab.executors import Executor, ExecutorSpec, run_all, started
from vae_pyro.lab.experiment import (
    Data,
    RestoredRun,
    build_model,
    fixed_batch,
    load_data,
    make_estimator,
    probe_batch,
    resolve_device,
    restore_run,
)
from vae_pyro.lab.runs import ATTEMPT, CHECKPOINT, DIAGNOSIS, EVALUATION, FolderLock, Run, atomic_write, write_json
from vae_pyro.lab.train import Interrupted, fit
from vae_pyro.lab.trainers import make_trainer

if TYPE_CHECKING:  # lab never imports the trackers: compare is handed one
    from vae_pyro.tracking import Tracking

SNR_KS = (1, 5, 50)  # the IWAE rows of the gradient diagnostics
MANIFEST = "compare.json"
DEFAULT_ESTIMATORS = ("trace", "meanfield", "hand", "score", "iwae")


@dataclass(frozen=True)
class CompareSpec:
    """What a comparison runs and measures: the estimators, over ``seeds`` seeds, paired differences to
    ``reference`` (default meanfield when compared, else the first); evaluation at each K of ``ks``
    importance samples; ``grad_draws`` gradient draws on each of ``grad_batches`` fixed batches; ``loss_draws`` loss
    draws."""

    names: tuple[str, ...] = DEFAULT_ESTIMATORS
    seeds: int = 1
    reference: str | None = None
    ks: tuple[int, ...] = (1000,)
    grad_draws: int = 100
    grad_batches: int = 3
    loss_draws: int = 500

    def checked(self) -> "CompareSpec":
        """This spec with its reference resolved, or a VaeError naming what is wrong."""
        names = list(self.names)
        if not names or len(set(names)) != len(names) or any(n not in NAMES for n in names):
            raise VaeError(f"--estimators must name distinct estimators from {', '.join(NAMES)}; "
                           f"got {','.join(names) or 'none'}")
        for key in ("seeds", "grad_batches", "grad_draws", "loss_draws"):
            if getattr(self, key) < 1:
                raise VaeError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(self, key)}")
        ks = tuple(self.ks)
        if not ks or len(set(ks)) != len(ks) or min(ks) < 1:
            raise VaeError(f"--k must be distinct positive integers such as 1000 or 1000,5000, got {ks}")
        reference = self.reference or ("meanfield" if "meanfield" in names else names[0])
        if reference not in names:
            raise VaeError(f"--reference {reference} is not among the compared estimators ({','.join(names)}); "
                           "name one of them")
        return CompareSpec(tuple(names), self.seeds, reference, ks, self.grad_draws, self.grad_batches,
                           self.loss_draws)


class Trained(NamedTuple):
    """One trained run as compare passes it on."""

    module: nn.Module
    history: list[dict]
    estimator_state: dict


@dataclass
class SeedResult:
    """One seed's comparison: its summary (written as summary.json) and what its figures are drawn from."""

    out: Path
    summary: dict
    configs: dict[str, Config]
    trained: dict[str, Trained]
    losses: dict[str, dict]  # estimator -> {"mean", "std", "draws"} of the loss per image at shared weights


@dataclass
class ComparisonRun:
    """A comparison as ``compare`` made it, in memory, for the report to draw: the summary (over seeds when
    there are several), each seed's result with its trained modules, the data. (The user's object is
    ``results.Comparison``, read back from the folder.)"""

    out: Path
    spec: CompareSpec
    summary: dict
    seeds: dict[int, SeedResult] = field(default_factory=dict)
    data: Data | None = None

    @property
    def over_seeds(self) -> bool:
        return len(self.seeds) > 1


def config_for(options: dict, name: str) -> Config:
    """The run of estimator ``name``: the shared options, minus those it cannot take."""
    spec = estimators.spec(name)
    opts = {k: v for k, v in options.items()
            if not (k in estimators.owned_options() and k not in spec.options)}
    if spec.samples == "K":
        opts.pop("particles", None)
    return Config(**{**opts, "estimator": name})


def warm_up(cfg: Config, data: Data) -> None:
    """One training step of the configured model and estimator on four images, on a forked RNG, so the
    process's one-off start-up costs (lazy imports, allocator, kernel selection) are not billed to
    whichever estimator happens to train first."""
    device = data.train_x.device
    with traces.seeded_rng(cfg.seed, device):
        module = build_model(cfg, data, device)
        x, y = probe_batch(data, cfg, 4, module)
        make_trainer(make_estimator(cfg, module, x, y), module, cfg.lr, cfg.loop, cfg.adam).step(x, y)
    pyro.clear_param_store()


def tracked_as(cfg: Config) -> str:
    """A run's name in the comparison's tracker: ``seed-S/estimator``."""
    return f"seed-{cfg.seed}/{cfg.estimator}"


@dataclass(frozen=True)
class RunTask:
    """One (seed, estimator) run, as a worker receives it: trained in ``run_dir`` in ``mode`` (new, force
    or resume, as the comparison was asked), then evaluated at each K of ``ks``. ``attempt`` names this
    comparison's call: a task run again after its worker died finds its own mark and resumes."""

    config: dict
    run_dir: str
    mode: str
    attempt: str
    ks: tuple[int, ...]
    label: str
    position: int = 0
    progress: bool = False
    threads: int | None = None
    log: "Tracking | None" = None


def run_mode(task: RunTask) -> str:
    """The task's mode, except that a run this comparison's call began continues from its checkpoint
    (one written after the mark: an older one is the run ``--force`` replaces), or, killed before its
    first one, starts again."""
    run_dir = Path(task.run_dir)
    mark, checkpoint = run_dir / ATTEMPT, run_dir / CHECKPOINT
    mine = mark.is_file() and mark.read_text() == task.attempt
    if task.mode == "resume" and checkpoint.is_file():
        return "resume"
    if mine and checkpoint.is_file() and checkpoint.stat().st_mtime_ns >= mark.stat().st_mtime_ns:
        return "resume"
    return "force" if mine else task.mode


def train_and_evaluate(task: RunTask, data: Data | None = None) -> dict | None:
    """Train one run (in this process, or a worker's: then ``data`` is None and it loads its own) and
    evaluate it; its evaluation (None on the ranks > 0 of a torchrun job)."""
    if task.threads:
        torch.set_num_threads(task.threads)
    config = Config.from_dict(task.config)
    data = data if data is not None else load_data(config, resolve_device(config.device))
    mode = run_mode(task)
    if mode != "resume" and not distributed.launched():  # the mark a retry of this task looks for
        Path(task.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(task.run_dir) / ATTEMPT, task.attempt.encode())
    warm_up(config, data)
    result = fit(config, task.run_dir, resume=mode == "resume", force=mode == "force", progress=task.progress,
                 label=f"{task.label:>13}", position=task.position, data=data,
                 log=None if task.log is None else task.log.named(tracked_as(config)))
    if not result.leader:
        return None
    return _evaluation(result.run, result.module, data, len(result.history), task.ks, task.progress)


@dataclass(frozen=True)
class DiagnoseTask:
    """One estimator's gradient diagnostics at a seed's two shared points (the initial weights, the trained
    weights of the ``reference`` run in ``reference_dir``) and its loss draws at the second. ``run_dir``:
    its own run, whose learned baselines `score` uses there."""

    options: dict
    name: str
    run_dir: str
    reference: str
    reference_dir: str
    grad_draws: int
    grad_batches: int
    loss_draws: int
    progress: bool = False
    threads: int | None = None


class Diagnosis(NamedTuple):
    """What a DiagnoseTask measures."""

    initial: list[dict]  # gradient rows at the initial weights
    trained: list[dict]  # gradient rows at the reference's trained weights
    losses: dict  # {"mean", "std", "draws"} of the loss per image at the reference's trained weights


def diagnosis_key(task: DiagnoseTask) -> dict:
    """What a diagnosis was measured at: the run's and the reference's checkpoints (by content), the draws."""
    def digest(folder: str) -> str:
        return hashlib.sha256((Path(folder) / CHECKPOINT).read_bytes()).hexdigest()

    return {"run": digest(task.run_dir), "reference": digest(task.reference_dir), "grad_draws": task.grad_draws,
            "grad_batches": task.grad_batches, "loss_draws": task.loss_draws}


def diagnose(task: DiagnoseTask, data: Data | None = None) -> Diagnosis:
    """Run a DiagnoseTask (in this process with ``data``, or in a worker that loads its own). The result is
    kept in the run's folder (diagnosis.json) and returned from there while its key holds (a resumed comparison)."""
    saved, key = Path(task.run_dir) / DIAGNOSIS, diagnosis_key(task)
    try:
        kept = json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError):
        kept = {}
    if kept.get("key") == key:
        return Diagnosis(**kept["diagnosis"])
    if task.threads:
        torch.set_num_threads(task.threads)
    cfg = config_for(task.options, task.name)
    device = resolve_device(cfg.device)
    data = data if data is not None else load_data(cfg, device)
    reference = restore_run(task.reference_dir, device, loaded=data).module
    conditional = getattr(reference, "conditional", False)
    batches = [fixed_batch(data, cfg, conditional, b) for b in range(task.grad_batches)]
    specs = gradient_specs([task.name], task.options)
    own = Run.open(task.run_dir).load_checkpoint(device)["optimizer"]["estimator"] if task.name == "score" else None
    initial = gradient_rows(specs, build_model(cfg, data, device), batches, "initialisation", task.grad_draws,
                            task.progress)
    trained = gradient_rows(specs, reference, batches, f"{task.reference}'s trained weights", task.grad_draws,
                            task.progress, own)
    losses = _loss_draws({task.name: cfg}, reference, *batches[0], task.loss_draws)[task.name]
    diagnosis = Diagnosis(initial, trained, losses)
    write_json(saved, {"key": key, "diagnosis": diagnosis._asdict()})
    return diagnosis


def _mode(run_dir: Path, resume: bool, force: bool) -> str:
    if resume and (run_dir / CHECKPOINT).is_file():
        return "resume"
    return "force" if force or resume else "new"


def gradient_specs(names: list[str], options: dict) -> list[tuple[str, Config]]:
    """(label, config) of each estimator's gradient diagnostics; `iwae` once per K in SNR_KS and its own."""
    specs = []
    for name in names:
        spec = estimators.spec(name)
        if spec.samples == "K":
            ks = sorted(k for k in {*SNR_KS, config_for(options, name).iwae_k} if k >= spec.min_samples)
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
        k = cfg.iwae_k if estimators.spec(cfg.estimator).samples == "K" else None
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
    x, y = probe_batch(data, configs[names[-1]], 1, module)
    if not traces.latent_sites(module, x, y):
        raise VaeError(f"compare compares ELBO estimators, and {configs[names[0]].model} has no latent site, so "
                       "every estimator's loss is the same; train it with vae-pyro train")


def compare(options: dict, spec: CompareSpec, out: str | Path, resume: bool = False, force: bool = False,
            progress: bool = True, command: str = "vae-pyro compare", dataset: datasets.Dataset | None = None,
            render: Callable[["ComparisonRun"], None] | None = None, log: "Tracking | None" = None,
            executor: ExecutorSpec | Executor | None = None) -> "ComparisonRun | None":
    """Train, evaluate and diagnose every estimator of ``spec`` on the model ``options["model"]``, for
    ``spec.seeds`` seeds from ``options["seed"]`` on; write each seed's summary (and the summary over
    seeds); return the comparison (None on the ranks > 0 of a torchrun job). ``dataset``: tensors given
    from Python. ``render`` (the report's writer, ``report.comparison.write``) draws the figures and
    reports while the folder's lock is still held. ``log``: one tracker experiment for the comparison,
    one run per estimator and seed (``seed-S/estimator``, with its evaluation and figures), and one
    named ``comparison`` with the comparison's figures. ``executor``: where the tasks run (an
    ``ExecutorSpec``, or any executor; default this process)."""
    out, spec = Path(out), spec.checked()
    log = None if log is None else log.within(out)
    chosen = (executor or ExecutorSpec()).checked() if isinstance(executor, ExecutorSpec | None) else executor
    in_process = isinstance(chosen, ExecutorSpec) and chosen.in_process
    threads = chosen.threads() if isinstance(chosen, ExecutorSpec) and not in_process else None
    names = list(spec.names)
    if not in_process and distributed.launched():
        raise VaeError("under torchrun every process trains each run together; compare in this process "
                       "(--executor local --jobs 1)")
    base = config_for(options, names[0])
    if not in_process and (dataset is not None or base.model.startswith("__main__:")):
        raise VaeError("other processes run the tasks, and they can load neither tensors given from Python nor a "
                       "class defined in __main__; use jobs=1, or put the class in a file (path/to/file.py:Class)")
    seed_list = list(range(base.seed, base.seed + spec.seeds))
    folders = {s: "" if spec.seeds == 1 else f"seed-{s}" for s in seed_list}
    runs = {(s, n): config_for({**options, "seed": s}, n) for s in seed_list for n in names}
    run_dirs = {key: out / folders[key[0]] / key[1] for key in runs}
    device = resolve_device(base.device)
    world = distributed.init(device)
    data = load_data(base, device, dataset)  # fails early on bad data, before anything is written
    check_estimators(names, {n: runs[seed_list[0], n] for n in names}, data, device)
    # a static binarisation is each seed's own
    seed_data = {s: data if s == base.seed or base.binarize != "static" else
                 load_data(runs[s, names[0]], device, dataset) for s in seed_list}
    manifest = {"estimators": names, "seeds": spec.seeds, "options": options, "command": command}

    def prepare() -> None:
        if (out / MANIFEST).exists() and not (resume or force):
            raise VaeError(f"{out} already holds a comparison; pass --resume to finish it, --force to redo it, "
                           "or another --out")
        if resume and (out / MANIFEST).exists():
            saved = json.loads((out / MANIFEST).read_text())
            if (saved["estimators"], saved.get("seeds", 1)) != (names, spec.seeds):
                raise VaeError(f"cannot resume {out}: it compares {','.join(saved['estimators'])} over "
                               f"{saved.get('seeds', 1)} seed(s), asked {','.join(names)} over {spec.seeds}")
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        write_json(out / MANIFEST, manifest)

    lock = FolderLock(out)  # one compare per folder; each run folder has its own writer's lock besides
    distributed.from_leader(prepare, world)
    attempt = uuid.uuid4().hex
    def given(seed: int) -> tuple:  # a task elsewhere loads its own
        return (seed_data[seed],) if in_process else ()

    try:
        with started(chosen, out) if isinstance(chosen, ExecutorSpec) else _as_is(chosen) as pool:
            train_tasks = [(RunTask(c.to_dict(), str(run_dirs[key]), _mode(run_dirs[key], resume, force), attempt,
                                    spec.ks, str(run_dirs[key].relative_to(out)), i, progress and in_process, threads,
                                    log), *given(key[0])) for i, (key, c) in enumerate(runs.items())]
            evaluations = run_all(pool, train_and_evaluate, train_tasks, "runs trained", progress and not in_process)
            if not world.leader:  # under torchrun the other ranks only train; rank 0 evaluates and reports
                return None
            diagnose_tasks = [(DiagnoseTask({**options, "seed": s}, n, str(run_dirs[s, n]), spec.reference,
                                            str(run_dirs[s, spec.reference]), spec.grad_draws, spec.grad_batches,
                                            spec.loss_draws, progress and in_process, threads), *given(s))
                              for s, n in runs]
            diagnoses = run_all(pool, diagnose, diagnose_tasks, "runs diagnosed", progress and not in_process)
        evaluated = dict(zip(runs, evaluations))
        diagnosed = dict(zip(runs, diagnoses))
        restored = {key: restore_run(run_dirs[key], device, loaded=seed_data[key[0]]) for key in runs}
        seeds = {s: summarise(spec, {n: runs[s, n] for n in names}, {n: restored[s, n] for n in names},
                              {n: evaluated[s, n] for n in names}, {n: diagnosed[s, n] for n in names},
                              out / folders[s], command) for s in seed_list}
        summary = seeds[seed_list[0]].summary if spec.seeds == 1 else summarise_seeds(seeds, spec, out, command)
        comparison = ComparisonRun(out, spec, summary, seeds, data)
        if render is not None:
            render(comparison)
        if log is not None:
            track_results(comparison, log)
        return comparison
    except Interrupted as e:
        raise Interrupted(f"{e} -- for the whole comparison: vae-pyro compare --out {out} --resume", e.signum) from None
    finally:
        lock.release()


@contextlib.contextmanager
def _as_is(executor: Executor) -> Iterator[Executor]:
    """An executor the caller made, and shuts down."""
    yield executor


def track_results(comparison: ComparisonRun, log: "Tracking") -> None:
    """Each run's evaluation and diagnostics (its summary row) and figures to its tracker run; the
    comparison's figures to the run named ``comparison``."""
    for seed in comparison.seeds.values():
        for row in seed.summary["estimators"]:
            name = row["estimator"]
            with log.named(tracked_as(seed.configs[name])).open(seed.out / name) as sink:
                sink.final(row, "summary")
                sink.figures(seed.out / name / "figures")
    with log.named("comparison").open(comparison.out) as sink:
        sink.figures(comparison.out / "figures")


def summarise(spec: CompareSpec, configs: dict[str, Config], runs: dict[str, RestoredRun],
              evaluations: dict[str, dict], diagnosed: dict[str, Diagnosis], out: Path, command: str) -> SeedResult:
    """One seed's summary from its tasks' results (each estimator's evaluation and diagnosis); written."""
    names = list(spec.names)
    histories = {n: runs[n].history for n in names}
    grads = [row for n in names for row in diagnosed[n].initial] + [row for n in names for row in diagnosed[n].trained]
    losses = {n: diagnosed[n].losses for n in names}
    base = configs[names[0]]
    summary = _summary(names, configs, histories, evaluations, grads, losses, spec.ks)
    summary.update({"reference": spec.reference, "command": command, "machine": machine(), "model": base.model,
                    "seed": base.seed})
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", summary["estimators"])
    trained = {n: Trained(r.module, r.history, r.checkpoint["optimizer"]["estimator"]) for n, r in runs.items()}
    return SeedResult(out, summary, configs, trained, losses)


def summarise_seeds(seeds: dict[int, SeedResult], spec: CompareSpec, out: Path, command: str) -> dict:
    """The comparison over seeds: per metric the mean and se over seeds and the paired difference to the
    reference with its 95% interval; written as summary.json and summary.csv."""
    summaries = {s: r.summary for s, r in seeds.items()}
    first = next(iter(summaries.values()))
    rows = stats.over_seeds([s["estimators"] for s in summaries.values()], spec.reference, seed_metrics(first))
    per_seed = [{**r, "seed": seed} for seed, s in summaries.items() for r in s["estimators"]]
    grads = [{**g, "seed": seed} for seed, s in summaries.items() for g in s["gradients"]]
    summary = {"estimators": rows, "per_seed": per_seed, "gradients": grads,
               "gradient_table": stats.gradient_table(grads), "seeds": list(summaries),
               "reference": spec.reference, "command": command, "machine": first["machine"], "model": first["model"],
               "config": first["config"], "level": stats.LEVEL}
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", rows)
    return summary


def seed_metrics(summary: dict) -> list[str]:
    """The numeric per-estimator metrics a comparison over seeds averages."""
    return [key for key, value in summary["estimators"][0].items()
            if isinstance(value, int | float) and key != "epochs" and not key.endswith("_se")]


def _evaluation(run_dir: Path, module: nn.Module, data: Data, epochs: int, ks: tuple[int, ...], progress: bool
                ) -> dict:
    """The run's evaluation at its final epoch and each K of ``ks`` (written to evaluation.json): what the file
    holds of that epoch, with the estimates it lacks added (all of it afresh when it is of another epoch)."""
    path = run_dir / EVALUATION
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("epochs") != epochs:
        saved = {"epochs": epochs, **evaluate(module, data, ks[0], progress=progress)}
    missing = tuple(k for k in ks if LikelihoodKey(k).name not in saved)
    result = {**saved, **likelihoods(module, data, missing, progress)}
    if result != saved or not path.exists():
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
def _summary(names, configs, histories, evaluations, grads, losses, ks) -> dict:
    batches = len({g["batch"] for g in grads})
    rows = []
    for name in names:
        history, ev = histories[name], evaluations[name]
        seconds = sorted(r["seconds"] for r in history)
        row = {
            "estimator": name,
            "epochs": len(history),
            **{key: ev[key] for key in ("test_elbo", "test_elbo_se")},
            **{key: ev[key] for k in ks for key in (LikelihoodKey(k).name, LikelihoodKey(k).se)},
            **{key: ev[key] for key in ("test_kl", "active_units")},
            **{key: v for key, v in ev.items() if key.startswith("test_cluster_accuracy")},
            "seconds_per_epoch": seconds[len(seconds) // 2],
            "loss_std_per_image": losses[name]["std"],
        }
        label = f"{name}-{configs[name].iwae_k}" if estimators.spec(name).samples == "K" else name
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
