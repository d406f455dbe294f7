"""The models: the VAE as a Pyro model p(z) p_θ(x|z) and guide q_φ(z|x), side by side
(Kingma & Welling 2013); its conditional twin with a prior p(z|y) (Sohn et al. 2015); and the
deterministic autoencoder they are measured against."""

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from vae_pyro.nets import Decoder, Encoder, positive

N_CLASSES = 10
MODELS = ("vae", "cvae", "ae")
PRIORS = ("standard", "learned")


def likelihood(name: str, params: tuple[torch.Tensor, ...]) -> dist.Distribution:
    """p_θ(x|z) as a Pyro distribution over a whole image (pixels are one event)."""
    if name.startswith("gaussian"):
        return dist.Normal(*params).to_event(1)
    if name == "continuous-bernoulli":
        return dist.ContinuousBernoulli(logits=params[0]).to_event(1)
    # validate_args=False: grey pixels in [0, 1] are scored too (checked on load, data.check_pixels)
    return dist.Bernoulli(logits=params[0], validate_args=False).to_event(1)


def kl_weighted(beta: float) -> poutine.messenger.Messenger:
    """The handler that weights the latent site by β: ``poutine.scale``, or, at β = 0 (the start
    of a KL warm-up), ``poutine.mask(False)``, which drops the site's terms (Pyro's scale must be > 0)."""
    return poutine.scale(scale=beta) if beta > 0 else poutine.mask(mask=False)


class VAE(nn.Module):
    """p(z) = N(0, I), p_θ(x|z) from the decoder; q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)).

    ``beta`` weights the KL term: the latent site is scaled by β in both model and guide
    (``poutine.scale``), so every ELBO sees β·(log p(z) − log q(z|x)). ``y`` is accepted and
    ignored, so every model takes the same batch.
    """

    conditional = False

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, beta: float = 1.0, conv: bool = False,
                 cond_dim: int = 0):
        super().__init__()
        self.z_dim, self.likelihood, self.beta = z_dim, likelihood, beta
        self.encoder = Encoder(x_dim, hidden, z_dim, activation, cond_dim, conv)
        self.decoder = Decoder(z_dim, hidden[::-1], x_dim, likelihood, activation, min_scale, cond_dim, conv)
        self.prior_net: nn.Module | None = None  # p(z) = N(0, I) unless a subclass learns p(z|y)

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, self.condition(y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return self.decoder(z, self.condition(y))

    def prior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z), shaped (batch, k)."""
        loc = x.new_zeros(x.shape[0], self.z_dim)
        return loc, torch.ones_like(loc)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("decoder", self.decoder)
        if self.prior_net is not None:
            pyro.module("prior", self.prior_net)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.prior(x, y)
            with kl_weighted(self.beta):
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", likelihood(self.likelihood, self.decode(z, y)), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x, y)
            with kl_weighted(self.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class CVAE(VAE):
    """Labels condition everything: q_φ(z|x, y), p_θ(x|z, y), and the prior p(z|y).

    ``prior="learned"``: p(z|y) = N(μ(y), diag σ(y)²), one learned (μ, σ) per class (a linear map
    of the one-hot label); ``"standard"``: p(z|y) = N(0, I).
    """

    conditional = True

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, beta: float = 1.0, conv: bool = False,
                 prior: str = "learned"):
        super().__init__(x_dim, z_dim, hidden, likelihood, activation, min_scale, beta, conv, cond_dim=N_CLASSES)
        if prior == "learned":
            self.prior_net = nn.Linear(N_CLASSES, 2 * z_dim)

    def condition(self, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("a conditional VAE needs the labels y")
        return F.one_hot(y, N_CLASSES).to(self.encoder.net[0].weight.dtype)

    def prior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prior_net is None:
            return super().prior(x, y)
        loc, raw = self.prior_net(self.condition(y)).chunk(2, dim=-1)
        return loc, positive(raw, 1e-3)


class AE(nn.Module):
    """The deterministic autoencoder baseline: code c = f_φ(x), reconstruction p_θ(x | c).

    The same encoder (its mean head only) and decoder networks as the VAE, trained on
    −log p_θ(x | f_φ(x)) alone: no prior, no KL, no ELBO.
    """

    conditional = False

    def __init__(self, x_dim: int = 784, z_dim: int = 32, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, conv: bool = False):
        super().__init__()
        self.z_dim, self.likelihood = z_dim, likelihood
        self.encoder = Encoder(x_dim, hidden, z_dim, activation, conv=conv, deterministic=True)
        self.decoder = Decoder(z_dim, hidden[::-1], x_dim, likelihood, activation, min_scale, conv=conv)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return self.decoder(z)
