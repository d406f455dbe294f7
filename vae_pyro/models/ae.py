"""The deterministic autoencoder the VAE is measured against, written to the same contract."""

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from vae_pyro.models.likelihoods import LIKELIHOODS
from vae_pyro.models.nets import Decoder, Encoder, check_shapes


class AE(nn.Module):
    """Code c = f_φ(x), reconstruction p_θ(x | c): the VAE's encoder (its mean head only) and decoder.

    As a Pyro program the code is a deterministic function inside the model and the guide is
    empty, so every ELBO estimator's loss is −log p_θ(x | f_φ(x)): no prior, no KL. With no latent
    site it has no bound on log p(x), and the lab refuses what needs one (compare, IS log p(x)).
    """

    conditional = False

    def __init__(self, x_dim: int = 784, z_dim: int = 32, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, conv: bool = False):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        check_shapes(x_dim, activation, conv)
        self.z_dim, self.likelihood = z_dim, likelihood
        self.encoder = Encoder(x_dim, hidden, z_dim, activation, conv=conv, deterministic=True)
        self.decoder = Decoder(z_dim, hidden[::-1], x_dim, likelihood, activation, min_scale, conv=conv)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return self.decoder(z)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", LIKELIHOODS[self.likelihood].distribution(*self.decode(self.encode(x)[0])), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Nothing is latent: the code is a deterministic function of x, computed in the model."""

    def hand_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, particles: int = 1,
                  eps: torch.Tensor | None = None) -> torch.Tensor:
        """−Σ_i log p_θ(x_i | f_φ(x_i)), deterministic (``particles`` and ``eps`` unused)."""
        return -LIKELIHOODS[self.likelihood].log_prob(x, *self.decode(self.encode(x)[0])).sum()
