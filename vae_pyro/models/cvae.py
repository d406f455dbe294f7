"""The conditional VAE: labels condition the guide, the decoder and the prior p(z|y) (Sohn et al. 2015)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vae_pyro.models.nets import positive
from vae_pyro.models.vae import VAE

N_CLASSES = 10
PRIORS = ("standard", "learned")


class CVAE(VAE):
    """Labels condition everything: q_φ(z|x, y), p_θ(x|z, y), and the prior p(z|y).

    ``prior="learned"``: p(z|y) = N(μ(y), diag σ(y)²), one learned (μ, σ) per class (a linear map
    of the one-hot label); ``"standard"``: p(z|y) = N(0, I).
    """

    conditional = True

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, beta: float = 1.0, conv: bool = False,
                 prior: str = "learned"):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
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
