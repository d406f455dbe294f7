"""The VAE as a Pyro model p(z) p_θ(x|z) and guide q_φ(z|x), side by side (Kingma & Welling 2013)."""

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from vae_pyro.models import hand
from vae_pyro.models.likelihoods import LIKELIHOODS
from vae_pyro.models.nets import Decoder, Encoder, check_shapes


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
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        check_shapes(x_dim, activation, conv)
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

    def log_likelihood(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """log p_θ(x|z) per image for decoder output ``params``, written out by hand."""
        return LIKELIHOODS[self.likelihood].log_prob(x, *params)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("decoder", self.decoder)
        if self.prior_net is not None:
            pyro.module("prior", self.prior_net)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.prior(x, y)
            with kl_weighted(self.beta):
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", LIKELIHOODS[self.likelihood].distribution(*self.decode(z, y)), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x, y)
            with kl_weighted(self.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def hand_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, particles: int = 1,
                  eps: torch.Tensor | None = None) -> torch.Tensor:
        """The ELBO derived by hand (``hand.py``), as a loss: −Σ_i (recon_i − β KL_i)."""
        return hand.loss(self, x, y, particles, eps)
