"""A run's configuration: one flat dataclass, saved as ``config.json`` in the run folder."""

from dataclasses import asdict, dataclass, fields

from vae_pyro import estimators
from vae_pyro.data import BINARISATIONS, DATASETS
from vae_pyro.errors import VaeError
from vae_pyro.models import MODELS, PRIORS
from vae_pyro.nets import ACTIVATIONS, LIKELIHOOD_PARAMS

DEVICES = ("auto", "cpu", "cuda")
LOOPS = ("fast", "svi")
# keys a resumed run may change: they alter how it continues, not what it is
RESUMABLE_CHANGES = {"epochs", "lr", "device", "data_dir"}


@dataclass
class Config:
    model: str = "vae"  # vae | cvae | ae
    dataset: str = "mnist5k"
    data_dir: str | None = None
    estimator: str | None = None  # None: meanfield, or reconstruction for the autoencoder
    particles: int = 1
    baseline: str = "none"  # score estimator's control variate: none | decaying | neural
    iwae_k: int = 5  # samples per image of the iwae bound
    z_dim: int | None = None  # None: 20, or 32 for the autoencoder (784 -> 32 -> 784)
    hidden: tuple[int, ...] = (400,)
    conv: bool = False  # convolutional encoder / decoder for 28x28 images instead of the MLP's input layers
    activation: str = "relu"
    likelihood: str = "bernoulli"
    min_scale: float = 0.01  # floor of the Gaussian decoder's sigma
    prior: str = "learned"  # the CVAE's p(z|y): learned | standard
    beta: float = 1.0
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to beta
    binarize: str | None = None  # None: dynamic for Bernoulli, none otherwise
    batch_size: int = 128
    epochs: int = 30
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    loop: str = "fast"  # fast: one torch optimizer for every estimator; svi: pyro.infer.SVI (the reference)

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        if self.estimator is None:
            self.estimator = "reconstruction" if self.model == "ae" else "meanfield"
        if self.z_dim is None:
            self.z_dim = 32 if self.model == "ae" else 20
        if self.binarize is None:
            self.binarize = "dynamic" if self.likelihood == "bernoulli" else "none"
        self.validate()

    def validate(self) -> None:
        """Raise VaeError naming the first bad value and the accepted ones."""
        choices = {
            "model": MODELS,
            "prior": PRIORS,
            "dataset": DATASETS,
            "activation": tuple(ACTIVATIONS),
            "likelihood": tuple(LIKELIHOOD_PARAMS),
            "binarize": BINARISATIONS,
            "device": DEVICES,
            "loop": LOOPS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise VaeError(f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        estimators.check_options(self.estimator, self.particles, self.baseline, self.model)
        if self.kl_warmup < 0:
            raise VaeError(f"--kl-warmup must be a number of epochs >= 0, got {self.kl_warmup}")
        if self.kl_warmup and self.estimator.startswith("jit-"):
            raise VaeError("--kl-warmup changes the KL weight every epoch, which a jit-* estimator would have "
                           "compiled as a constant; use trace or meanfield")
        for key in ("particles", "iwae_k", "z_dim", "batch_size", "epochs"):
            if getattr(self, key) < 1:
                raise VaeError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(self, key)}")
        if self.hidden and min(self.hidden) < 1:
            raise VaeError(f"--hidden must be positive layer sizes such as 400 or 512,256 (or none), got {self.hidden}")
        for key in ("lr", "min_scale"):
            if not getattr(self, key) > 0:
                raise VaeError(f"--{key.replace('_', '-')} must be positive, got {getattr(self, key)}")
        if not self.beta >= 0:
            raise VaeError(f"--beta must be non-negative, got {self.beta}")

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
