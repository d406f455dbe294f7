"""The Python API: the lab's commands as functions over objects, for any model that keeps the contract.

    import vae_pyro as vp
    data = vp.load_data("mnist5k")                   # or vp.Dataset("mine", train_x, train_y, test_x, test_y)
    result = vp.fit(MyVAE, data, estimator="meanfield", epochs=10, out="runs/mine", z_dim=8)
    comparison = vp.compare(MyVAE, data, estimators=["trace", "meanfield", "iwae"], epochs=10, out="runs/c")
    comparison.table                                 # a pandas DataFrame, one row per estimator
    vp.load_comparison("runs/c").curves              # any compare folder read back (the CLI's too)
    vp.load_run("runs/mine").metrics                 # any run folder: config, module, metrics, evaluation
    vp.log_likelihood(result.module, x, k=1000)      # IS log p(x) per image
    vp.gradient_stats(result.module, x, ["trace", "meanfield"])   # variance and SNR of φ's and θ's gradients

``model`` is a class (an ``nn.Module`` keeping the contract, ``vae_pyro.models.contract``) or a
name: ``vae``, ``cvae``, ``ae``, ``path/to/file.py:Class``, ``package.module:Class``. Keyword
options that are ``Config`` fields (``z_dim``, ``lr``, ``seed``, …) set those; any other goes to the
model's constructor (what ``--model-option`` does on the command line).
"""

from dataclasses import fields
from difflib import get_close_matches
from pathlib import Path
from time import strftime
from typing import Any

import pandas as pd
import pyro
import torch
from torch import nn

from vae_pyro import data as datasets
from vae_pyro import estimators as registry
from vae_pyro import tracking
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import checks, diagnostics, traces
from vae_pyro.lab import evaluate as evaluation
from vae_pyro.lab.compare import DEFAULT_ESTIMATORS, CompareSpec, config_for
from vae_pyro.lab.compare import compare as compare_runs
from vae_pyro.lab.executors import Executor, ExecutorSpec
from vae_pyro.lab.experiment import Data, resolve_device
from vae_pyro.lab.experiment import load_data as prepare
from vae_pyro.lab.results import Comparison, load_comparison
from vae_pyro.lab.train import FitResult
from vae_pyro.lab.train import fit as fit_run
from vae_pyro.models import contract

Dataset = datasets.Dataset
FIELDS = {f.name for f in fields(Config)}


def load_data(name: str = "mnist5k", data_dir: str | None = None) -> datasets.Dataset:
    """A data set by name (``mnist5k``, ``mnist``, ``fashion-mnist``, ``synthetic-linear``), pixels in [0, 1]."""
    return datasets.load(name, data_dir)


def config(model: type | str = "vae", dataset: datasets.Dataset | str | None = None, **options: Any) -> Config:
    """The Config of a run: Config fields from ``options``, every other option to the model's constructor."""
    spec = model if isinstance(model, str) else contract.spec_of(model)
    cfg = {k: v for k, v in options.items() if k in FIELDS}
    model_options = {**cfg.pop("model_options", {}), **{k: v for k, v in options.items() if k not in FIELDS}}
    _refuse_unknown(model if isinstance(model, type) else contract.load_class(model), spec, model_options)
    if isinstance(dataset, str):
        cfg["dataset"] = dataset
    elif dataset is not None:
        cfg["dataset"] = dataset.name if dataset.name in datasets.DATASETS else datasets.GIVEN
    return Config(model=spec, model_options=model_options, **cfg)


def _refuse_unknown(cls: type, spec: str, model_options: dict) -> None:
    """A keyword that is neither a Config field nor taken by the model's constructor: one line naming the nearest
    of either, as a typo in a run option (``epoch=3``) would otherwise be blamed on the model."""
    unknown = contract.unknown_options(cls, model_options)
    if unknown:
        taken = contract.options_taken(cls)
        names = FIELDS | taken
        hints = [f"{k}= (did you mean {close[0]}=?)" if (close := get_close_matches(k, names, n=1)) else f"{k}="
                 for k in unknown]
        raise VaeError(f"no option {', '.join(hints)}: keywords are Config fields (epochs, lr, seed, ...) or options "
                       f"{spec} takes ({', '.join(sorted(taken - {'x_dim'}))})")  # x_dim: the data's


def _prepared(cfg: Config, dataset: datasets.Dataset | Data | str | None) -> Data:
    if isinstance(dataset, Data):
        return dataset
    return prepare(cfg, resolve_device(cfg.device), dataset if isinstance(dataset, datasets.Dataset) else None)


def _out(out: str | Path | None, what: str) -> Path:
    return Path(out) if out is not None else Path("runs") / f"{strftime('%Y%m%d-%H%M%S')}-{what}"


def fit(model: type | str = "vae", data: datasets.Dataset | str | None = None, out: str | Path | None = None,
        resume: bool = False, force: bool = False, progress: bool = True, log: str | None = None,
        log_uri: str | None = None, **options: Any) -> FitResult:
    """Train ``model`` on ``data`` into run folder ``out``; return the trained module, data and history.
    ``log``: ``tensorboard`` or ``mlflow`` tracks every step's loss live (at ``log_uri``, default inside ``out``)."""
    cfg, sink = config(model, data, **options), tracking.requested(log, log_uri)
    return fit_run(cfg, _out(out, cfg.estimator), resume, force, progress, data=_prepared(cfg, data), log=sink)


def compare(model: type | str = "vae", data: datasets.Dataset | str | None = None,
            estimators: list[str] = DEFAULT_ESTIMATORS, out: str | Path | None = None, k: int | tuple[int, ...] = 1000,
            grad_draws: int = 100, loss_draws: int = 500, jobs: int = 1, resume: bool = False, force: bool = False,
            progress: bool = True, seeds: int = 1, reference: str | None = None, grad_batches: int = 3,
            log: str | None = None, log_uri: str | None = None, executor: str | Executor = "local",
            scheduler: str | None = None, slurm: dict | None = None, **options: Any) -> Comparison:
    """Every estimator in ``estimators`` on ``model`` from the same start: trained, evaluated, diagnosed,
    for ``seeds`` seeds (then one row per estimator with its mean and se over seeds and its paired
    difference to ``reference`` with a 95% interval). The files are those of ``vae-pyro compare``; the
    result is the folder read back (``load_comparison``). ``k``: importance samples per test image, or several
    (``(1000, 5000)``: an estimate at each, side by side). ``log``: ``tensorboard`` or ``mlflow``, one
    experiment with a run per estimator and seed (``seed-S/estimator``), at ``log_uri`` (default inside ``out``).
    ``executor``: where the runs' tasks go: ``local`` (``jobs`` processes; 1: this one), ``dask`` (the cluster
    at ``scheduler``, or a local one of ``jobs`` workers), ``slurm`` (submitit jobs; ``slurm``: ``partition``,
    ``minutes``, ``mem_gb``, ``gpus``), or any executor object with ``submit(fn, *args)``."""
    spelled = {k.removeprefix("slurm_"): v for k, v in options.items() if k.startswith("slurm_")}
    if spelled:  # the command line's --slurm-partition and friends, which would otherwise go to the model
        raise VaeError(f"compare takes the SLURM options in one dict: slurm={spelled!r}, not "
                       f"{', '.join(f'slurm_{k}=' for k in spelled)}")
    from vae_pyro.report.comparison import write as write_comparison  # seaborn and matplotlib: 1.2 s, loaded to draw

    cfg, sink = config(model, data, **options), tracking.requested(log, log_uri)
    given = {k: v for k, v in cfg.to_dict().items() if k != "estimator"}
    out = _out(out, "compare")
    ks = (k,) if isinstance(k, int) else tuple(k)
    spec = CompareSpec(tuple(estimators), seeds, reference, ks, grad_draws, grad_batches, loss_draws)
    if isinstance(executor, str):
        executor = ExecutorSpec(executor, jobs, scheduler, **{f"slurm_{k}": v for k, v in (slurm or {}).items()})
    compare_runs(given, spec, out, resume, force, progress, command="vae_pyro.compare(...)",
                 dataset=data if isinstance(data, datasets.Dataset) else None, render=write_comparison, log=sink,
                 executor=executor)
    return load_comparison(out)


def _test(module: nn.Module, data: Data | datasets.Dataset) -> Data:
    return data if isinstance(data, Data) else prepare(Config(), next(module.parameters()).device, data)


def evaluate(module: nn.Module, data: Data | datasets.Dataset, k: int = 1000, samples: int = 10) -> dict:
    """Test ELBO ± se (``samples`` draws per image), IS log-likelihood ± se, KL, reconstruction, active units.
    ``data``: ``FitResult.data`` (binarised as in training), or a Dataset (binarised once, with a fixed seed)."""
    return evaluation.evaluate(module, _test(module, data), k, samples)


def log_likelihood(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1000,
                   seed: int = 0) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k|x) per image, for any model and guide of the contract."""
    return evaluation.is_log_likelihood(module, x, y, k, seed)


def gradient_stats(module: nn.Module, x: torch.Tensor, estimators: list[str], y: torch.Tensor | None = None,
                   draws: int = 100, seed: int = 0, **options: Any) -> pd.DataFrame:
    """Per-parameter gradient variance and SNR of each estimator, for the guide's (φ) and the model's (θ)
    parameters, at the module's current weights on batch (x, y). ``options``: estimator options
    (``particles``, ``iwae_k``, ``baseline``, ``alpha``, ``iwae_m``, ``ciwae_beta``)."""
    nesting = traces.plate_nesting(module, x[:1], None if y is None else y[:1])
    rows = []
    for name in estimators:
        cfg = config_for(options, name)
        pyro.clear_param_store()
        estimator = registry.make(name, nesting, x.shape[1], **cfg.estimator_options())
        rows += [s.to_dict() for s in diagnostics.gradient_stats(estimator, module, x, draws, seed, y=y)]
    return pd.DataFrame(rows)


def check(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, estimators: list[str] | None = None,
          draws: int = 100, seed: int = 0, progress: bool = False, **options: Any) -> checks.CheckReport:
    """``vae-pyro check`` on a module and batch: the exact checks (hand vs meanfield on the same ε, the
    closed-form KL), then every estimator in ``estimators`` (default: all that apply) against the bound and
    gradients its record names, one row per quantity (``.table``), the refused ones with why (``.conformance
    .refused``). ``options``: the estimators' (``iwae_k``, ``particles``, ``alpha``, ...)."""
    return checks.run(module, x, y, estimators, draws, seed, progress, **options)


def elbo(name: str, max_plate_nesting: int = 1, x_dim: int = 784, **options: Any) -> pyro.infer.ELBO:
    """Estimator ``name`` as a Pyro ELBO for your own ``pyro.infer.SVI`` loop; the guide it needs (score's,
    enum's) is applied inside. ``options``: ``particles`` or ``iwae_k`` (as its record says) and its own
    (``baseline``, ``alpha``, ``iwae_m``, ``ciwae_beta``); ``max_plate_nesting``: the plates your model nests
    (``x_dim`` sizes score's neural baseline)::

        svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=vp.elbo("iwae-dreg", iwae_k=5))
    """
    return registry.elbo(name, max_plate_nesting, x_dim, **options)
