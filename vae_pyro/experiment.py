"""What a run is made of, built from its Config: the device, the data tensors and the module."""

from dataclasses import dataclass

import torch

from vae_pyro import data, estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.models import AE, CVAE, VAE
from vae_pyro.nets import SIDE
from vae_pyro.runs import Run

EVAL_SEED = 2013  # the test set's fixed binarisation and evaluation noise: the same for every run
STATIC = 1  # stream key of a static training-set binarisation


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


def load_data(cfg: Config, device: torch.device) -> Data:
    ds = data.load(cfg.dataset, cfg.data_dir)
    for split, x in (("training", ds.train_x), ("test", ds.test_x)):
        data.check_pixels(x, cfg.likelihood, f"{cfg.dataset} {split} set")
    ds = ds.to(device)
    train_x, test_x = ds.train_x, ds.test_x
    if cfg.binarize != "none":
        test_x = data.binarise(test_x, data.seeded(EVAL_SEED, device=device))
    if cfg.binarize == "static":
        train_x = data.binarise(train_x, data.seeded(cfg.seed, STATIC, device=device))
    return Data(train_x, ds.train_y, test_x, ds.test_y)


def build_vae(cfg: Config, x_dim: int, device: torch.device) -> VAE | CVAE | AE:
    """The module, initialised from ``cfg.seed`` alone: the same weights whatever the estimator."""
    if cfg.conv and x_dim != SIDE * SIDE:
        raise VaeError(f"--conv needs {SIDE}x{SIDE} images, but {cfg.dataset} has {x_dim} values per point; drop --conv")
    torch.manual_seed(cfg.seed)
    common = (x_dim, cfg.z_dim, cfg.hidden, cfg.likelihood, cfg.activation, cfg.min_scale)
    if cfg.model == "ae":
        model = AE(*common, conv=cfg.conv)
    elif cfg.model == "cvae":
        model = CVAE(*common, cfg.beta, cfg.conv, cfg.prior)
    else:
        model = VAE(*common, cfg.beta, cfg.conv)
    return model.to(device)


def make_estimator(cfg: Config, x_dim: int) -> estimators.Estimator:
    return estimators.make(cfg.estimator, cfg.particles, cfg.baseline, cfg.iwae_k, x_dim)


def restore(run_dir, device: torch.device) -> tuple[Config, VAE, dict]:
    """A run's config, its module with the last checkpoint's weights, and that checkpoint."""
    run = Run.open(run_dir)
    cfg = run.config()
    ckpt = run.load_checkpoint(device)
    vae = build_vae(cfg, ckpt["x_dim"], device)
    vae.load_state_dict(ckpt["module"])
    return cfg, vae, ckpt
