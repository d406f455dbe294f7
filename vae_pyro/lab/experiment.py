"""What a run is made of, built from its Config: the device, the data tensors, the module and its
estimator; and a run folder read back into those objects (``restore_run``, the one place that does)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyro
import torch
from torch import nn

from vae_pyro import data, estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import traces
from vae_pyro.lab.runs import EVALUATION, Run
from vae_pyro.models import contract

EVAL_SEED = 2013  # the test set's fixed binarisation and evaluation noise: the same for every run
STATIC = 1  # stream key of a static training-set binarisation
GRAD_BATCH = 2  # stream key of the fixed batch for gradient diagnostics
PROBE = 3  # stream key of the images the lab's checks and probes run a model on


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


@dataclass
class Data:
    """Pixels on the device. ``test_x`` is binarised once (fixed seed) when training binarises."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_data(cfg: Config, device: torch.device, dataset: data.Dataset | None = None) -> Data:
    """``cfg.dataset`` (or ``dataset``, tensors given from Python) on ``device``, checked and binarised."""
    ds = dataset if dataset is not None else data.load(cfg.dataset, cfg.data_dir)
    for split, x in (("training", ds.train_x), ("test", ds.test_x)):
        data.check_pixels(x, cfg.likelihood if cfg.binarize == "none" else "bernoulli", f"{cfg.dataset} {split} set")
    ds = ds.to(device)
    train_x, test_x = ds.train_x, ds.test_x
    if cfg.binarize != "none":
        test_x = data.binarise(test_x, data.seeded(EVAL_SEED, device=device))
    if cfg.binarize == "static":
        train_x = data.binarise(train_x, data.seeded(cfg.seed, STATIC, device=device))
    return Data(train_x, ds.train_y, test_x, ds.test_y)


def labels(module: nn.Module, y: torch.Tensor) -> torch.Tensor | None:
    """The labels a conditional model takes, None for any other."""
    return y if getattr(module, "conditional", False) else None


def probe_batch(tensors: Data, cfg: Config, n: int, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``n`` training images as training shows them to the model (binarised from a fixed stream
    when training binarises: a model that validates its Bernoulli observations refuses grey ones), and their
    labels for a conditional model: what the contract check, the memory probe and the warm-up run."""
    x = tensors.train_x[:n]
    if cfg.binarize == "dynamic":
        x = data.binarise(x, data.seeded(EVAL_SEED, PROBE, device=x.device))
    return x, labels(module, tensors.train_y[:n])


def instantiate(cfg: Config, x_dim: int, device: torch.device | str = "cpu") -> nn.Module:
    """``cfg.model`` built from its options and ``x_dim``, initialised from ``cfg.seed`` alone (the same
    weights whatever the estimator)."""
    cls = contract.load_class(cfg.model)
    torch.manual_seed(cfg.seed)
    return contract.construct(cls, {"x_dim": x_dim, **cfg.model_kwargs()}, cfg.model).to(device)


def build_model(cfg: Config, data: Data, device: torch.device) -> nn.Module:
    """``instantiate``, then checked against the contract and the estimator on two training images,
    without touching the RNG stream."""
    module = instantiate(cfg, data.train_x.shape[1], device)
    if callable(getattr(module, "init_from_data", None)):
        module.init_from_data(data.train_x)
    x, y = probe_batch(data, cfg, 2, module)
    with traces.seeded_rng(cfg.seed, device):
        guide_tr, model_tr = contract.check(module, x, y)
    estimators.check_model(cfg.estimator, module, guide_tr, model_tr)
    if cfg.kl_warmup and not hasattr(module, "beta"):
        raise VaeError(f"--kl-warmup sets the model's KL weight each epoch, and {cfg.model} has no beta attribute; "
                       "drop --kl-warmup")
    return module


def make_estimator(cfg: Config, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None
                   ) -> estimators.Estimator:
    """``cfg.estimator`` for ``module``, with its plate nesting read from a trace on data point(s) ``x``."""
    x, y = x[:1], None if y is None else y[:1]
    with traces.seeded_rng(cfg.seed, x.device):
        nesting = traces.plate_nesting(module, x, y)
    estimator = estimators.make(cfg.estimator, nesting, x.shape[1], **cfg.estimator_options())
    net = estimator.baseline_net
    if net is not None and any(isinstance(p, nn.parameter.UninitializedParameter) for p in net.parameters()):
        # a network sized at its first call (RELAX's r): sized here, from cfg.seed, before an optimizer, a
        # checkpoint or DistributedDataParallel sees it
        with traces.seeded_rng(cfg.seed, x.device), pyro.get_param_store().scope():
            estimator.loss(module, x, y)
    return estimator


def history_frame(history: list[dict]) -> pd.DataFrame:
    """A run's history (metrics.jsonl), one row per epoch, indexed by epoch."""
    return pd.DataFrame(history).set_index("epoch") if history else pd.DataFrame(index=pd.Index([], name="epoch"))


def describe(kind: str, path: Path, cfg: Config, history: list[dict]) -> str:
    """A run in one line: its folder, model and estimator, epochs, last test ELBO."""
    last = f", test ELBO {history[-1]['test_elbo']:.2f}" if history and "test_elbo" in history[-1] else ""
    return f"{kind}({path}: {cfg.model} × {cfg.estimator}, {len(history)} epochs{last})"


@dataclass(repr=False)
class RestoredRun:
    """A run folder read back: its config, data, module at the last checkpoint, history; ``metrics`` the
    history as a DataFrame, ``evaluation`` its evaluation.json (empty if never evaluated)."""

    path: Path
    config: Config
    data: Data
    module: nn.Module
    history: list[dict]
    checkpoint: dict

    @property
    def epochs(self) -> int:
        return self.checkpoint["epoch"]

    @property
    def metrics(self) -> pd.DataFrame:
        return history_frame(self.history)

    @property
    def evaluation(self) -> dict:
        path = self.path / EVALUATION
        return json.loads(path.read_text()) if path.is_file() else {}

    def __repr__(self) -> str:
        return describe("RestoredRun", self.path, self.config, self.history)

    def _repr_html_(self) -> str:
        return f"<p><code>{self}</code></p>" + self.metrics.to_html(float_format="{:.3f}".format)


def restore_run(run_dir: str | Path, device: str | torch.device = "auto", loaded: Data | None = None) -> RestoredRun:
    """A run's config, its data, its module with the last checkpoint's weights, and that checkpoint.
    ``loaded``: its data set already loaded (the runs of one comparison share it; tensors given from Python,
    which a run folder does not hold)."""
    run = Run.open(run_dir)
    cfg = run.config()
    device = resolve_device(device) if isinstance(device, str) else device
    if cfg.dataset == data.GIVEN and loaded is None:
        raise VaeError(f"{run_dir} was trained on tensors given from Python, which a run folder does not hold; "
                       "evaluate it from Python with those data")
    ckpt = run.load_checkpoint(device)
    loaded = loaded if loaded is not None else load_data(cfg, device)
    module = build_model(cfg, loaded, device)
    module.load_state_dict(ckpt["module"])
    return RestoredRun(run.path, cfg, loaded, module, ckpt["history"], ckpt)


def fixed_batch(tensors: Data, cfg: Config, conditional: bool = False, index: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fixed batch ``index`` of the gradient and loss diagnostics: ``cfg.batch_size`` random training
    points, the same for every run and seed, binarised when training binarises (and their labels, for a
    conditional model)."""
    train_x = tensors.train_x
    gen = data.seeded(EVAL_SEED, GRAD_BATCH, index, device=train_x.device)
    idx = torch.randperm(len(train_x), generator=gen, device=train_x.device)[: cfg.batch_size]
    x = data.binarise(train_x[idx], gen) if cfg.binarize != "none" else train_x[idx]
    return x, tensors.train_y[idx] if conditional else None
