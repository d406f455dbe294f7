"""The VAE as a Pyro model p(z) p_θ(x|z) and guide q_φ(z|x), side by side (Kingma & Welling 2013)."""

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from vae_pyro.nets import Decoder, Encoder


def likelihood(name: str, params: tuple[torch.Tensor, ...]) -> dist.Distribution:
    """p_θ(x|z) as a Pyro distribution over a whole image (pixels are one event)."""
    if name.startswith("gaussian"):
        return dist.Normal(*params).to_event(1)
    # validate_args=False: grey pixels in [0, 1] are scored too (checked on load, data.check_pixels)
    return dist.Bernoulli(logits=params[0], validate_args=False).to_event(1)


class VAE(nn.Module):
    """p(z) = N(0, I), p_θ(x|z) from the decoder; q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)).

    ``beta`` weights the KL term: the latent site is scaled by β in both model and guide
    (``poutine.scale``), so every ELBO sees β·(log p(z) − log q(z|x)).
    """

    def __init__(
        self,
        x_dim: int = 784,
        z_dim: int = 20,
        hidden: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        activation: str = "relu",
        min_scale: float = 0.01,
        beta: float = 1.0,
    ):
        super().__init__()
        self.z_dim, self.likelihood, self.beta = z_dim, likelihood, beta
        self.encoder = Encoder(x_dim, hidden, z_dim, activation)
        self.decoder = Decoder(z_dim, hidden[::-1], x_dim, likelihood, activation, min_scale)

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", likelihood(self.likelihood, self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
