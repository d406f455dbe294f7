"""A run's configuration: one flat dataclass, saved as ``config.json`` in the run folder.

It is the one source of every option's default, accepted values and help text: the command line
is generated from it (``cli.add_config_options``) and ``validate`` runs once, when it is made.
The shared model options (``z_dim`` … ``beta``) default to None, which leaves the model's own
constructor default; given, they are passed to any model whose constructor names them.
"""

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vae_pyro import estimators
from vae_pyro.data import BINARISATIONS, DATASETS, GIVEN
from vae_pyro.errors import VaeError

DEVICES = ("auto", "cpu", "cuda")
LOOPS = ("fast", "svi")
ADAMS = ("foreach", "fused")  # torch.optim.Adam's implementations, each named by its keyword; the first the default
# keys a resumed run may change: they alter how it continues, not what it is (not "adam": torch's load_state_dict
# would put back the saved implementation)
RESUMABLE_CHANGES = {"epochs", "lr", "device", "data_dir", "compile"}
# the estimators' draws per image and the options estimators own (``estimators.owned_options``)
ESTIMATOR_OPTIONS = ("particles", "iwae_k", "baseline", "alpha", "iwae_m", "ciwae_beta", "temperature")


def option(default: Any, help: str, choices: tuple | None = None, model: bool = False) -> Any:
    """A Config field with its help text, its accepted values, and whether it is passed to the model."""
    meta = {"help": help, "choices": choices, "model": model}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    model: str = option("vae", "vae, cvae (conditional on the label), ae (deterministic autoencoder), or your own: "
                               "path/to/file.py:Class or package.module:Class")
    model_options: dict = option({}, "K=V passed to the model's constructor; repeat for several")
    dataset: str = option("mnist5k", "mnist5k (bundled), mnist, fashion-mnist, synthetic-linear", (*DATASETS, GIVEN))
    data_dir: str | None = option(None, "folder for downloaded data sets [~/.cache/vae_pyro]")
    estimator: str = option("meanfield", ", ".join(estimators.NAMES), estimators.NAMES)
    particles: int = option(1, f"Monte-Carlo samples L per image of {', '.join(estimators.names_with('L'))}")
    baseline: str = option("none", "score estimator's baseline: none, decaying, neural", estimators.BASELINES)
    iwae_k: int = option(5, f"samples K per image of {', '.join(estimators.names_with('K'))}")
    alpha: float | None = option(None, "renyi's alpha >= 0, not 1 (0: the IWAE bound; towards 1: the ELBO) "
                                                f"[{estimators.spec('renyi').options['alpha']}]")
    iwae_m: int | None = option(None, "miwae / piwae: M groups of --iwae-k draws per image "
                                           f"[{estimators.spec('miwae').options['iwae_m']}]")
    ciwae_beta: float | None = option(None, "ciwae: weight beta of the ELBO against the IWAE bound, in "
                                                     f"[0, 1] [{estimators.spec('ciwae').options['ciwae_beta']}]")
    temperature: float | None = option(None, "gumbel-st: temperature tau > 0 of the relaxation its gradient flows "
                                             f"through [{estimators.spec('gumbel-st').options['temperature']}]")
    z_dim: int | None = option(None, "latent dimensions [the model's: 20 for vae/cvae, 32 for ae]", model=True)
    hidden: tuple[int, ...] | None = option(None, "hidden layer sizes, e.g. 400 or 512,256; none: linear [400]",
                                            model=True)
    conv: bool | None = option(None, "convolutional encoder/decoder (28x28 images)", model=True)
    activation: str | None = option(None, "relu, softplus, tanh [relu]", model=True)
    likelihood: str | None = option(None, "bernoulli, continuous-bernoulli, gaussian, gaussian-shared (one sigma) "
                                          "[bernoulli]", model=True)
    min_scale: float | None = option(None, "floor of the Gaussian decoder's sigma [0.01]", model=True)
    prior: str | None = option(None, "the cvae's p(z|y): learned, standard [learned]", model=True)
    beta: float | None = option(None, "weight of the KL term [1]", model=True)
    kl_warmup: int = option(0, "epochs over which the KL weight rises from 0 to beta (a model with a beta attribute)")
    binarize: str | None = option(None, "dynamic, static, none [dynamic unless --likelihood is not bernoulli]",
                                  BINARISATIONS)
    batch_size: int = option(128, "images per training step")
    epochs: int = option(30, "passes over the training set")
    lr: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "seeds weights, data order, binarisation and noise")
    device: str = option("auto", "auto, cpu, cuda", DEVICES)
    loop: str = option("fast", "fast (one torch optimizer) or svi (pyro.infer.SVI, the reference)", LOOPS)
    adam: str = option(ADAMS[0], "Adam's implementation: foreach (one pass per operation over all tensors) or "
                                  "fused (one kernel; the same update, rounded differently; experiments/bench.py)",
                       ADAMS)
    grad_variance: int = option(0, "after each epoch, draw the guide's gradient this many times (>= 2) on a fixed "
                                   "training batch and record the log of its variance in metrics.jsonl [0: off]")
    compile: bool = option(False, "torch.compile the model's networks and its hand_loss (opt-in; measured in "
                                  "experiments/bench.py)")

    def __post_init__(self) -> None:
        if self.hidden is not None:
            self.hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        self.model_options = dict(self.model_options)
        if self.binarize is None:
            self.binarize = "dynamic" if self.likelihood in (None, "bernoulli") else "none"
        self.validate()

    def validate(self) -> None:
        """Raise VaeError naming the first bad value and the accepted ones."""
        for f in fields(self):
            allowed = f.metadata["choices"]
            if allowed and getattr(self, f.name) not in allowed:
                raise VaeError(f"unknown {f.name} {getattr(self, f.name)!r}; choose one of {', '.join(allowed)}")
        for key in ("particles", "iwae_k", "z_dim", "batch_size", "epochs"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise VaeError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
        estimators.check_options(self.estimator, self.estimator_options())
        if self.grad_variance < 0 or self.grad_variance == 1:
            raise VaeError(f"--grad-variance needs at least 2 draws (or 0: off), got {self.grad_variance}")
        if self.seed < 0:
            raise VaeError(f"--seed must be an integer >= 0, got {self.seed}")
        if self.kl_warmup < 0:
            raise VaeError(f"--kl-warmup must be a number of epochs >= 0, got {self.kl_warmup}")
        if self.kl_warmup and self.estimator.startswith("jit-"):
            raise VaeError("--kl-warmup changes the KL weight every epoch, which a jit-* estimator would have "
                           "compiled as a constant; use trace or meanfield")
        if self.compile and self.estimator.startswith("jit-"):
            raise VaeError(f"--compile and {self.estimator} are two compilers of one step; drop one (--compile "
                           f"with {self.estimator.removeprefix('jit-')}, or {self.estimator} alone)")
        if self.hidden and min(self.hidden) < 1:
            raise VaeError(f"--hidden must be positive layer sizes such as 400 or 512,256 (or none), got {self.hidden}")
        for key in ("lr", "min_scale"):
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise VaeError(f"--{key.replace('_', '-')} must be a positive finite number, got {value}")
        if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
            raise VaeError(f"--beta must be a finite number >= 0, got {self.beta}")

    def estimator_options(self) -> dict[str, Any]:
        """The estimator's draws per image (``particles``, ``iwae_k``) and the options estimators own."""
        return {k: getattr(self, k) for k in ESTIMATOR_OPTIONS}

    def model_kwargs(self) -> dict[str, Any]:
        """The options given for the model's constructor: the shared ones that were set, and --model-option."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["model"]}
        return {**{k: v for k, v in shared.items() if v is not None}, **self.model_options}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise VaeError(f"unknown config keys {sorted(unknown)}; the run was made by another version of vae_pyro")
        return cls(**d)

    def differences(self, other: "Config") -> list[str]:
        """Names of the fields whose values differ."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]
