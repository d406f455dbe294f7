"""The neural networks: encoder x -> (loc, scale) of q(z|x), decoder z -> parameters of p(x|z)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh}
# how many per-pixel parameters the decoder emits for each likelihood
LIKELIHOOD_PARAMS = {"bernoulli": 1, "gaussian": 2, "gaussian-shared": 1}
MIN_ENCODER_SCALE = 1e-3


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, ``activation`` after all but the last."""
    layers: list[nn.Module] = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(m, n))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def positive(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """A smooth positive scale bounded away from 0: floor + softplus(raw)."""
    return floor + F.softplus(raw)


class Encoder(nn.Module):
    """q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)): one MLP, its output split into μ and raw σ."""

    def __init__(self, x_dim: int, hidden: Sequence[int], z_dim: int, activation: str = "relu"):
        super().__init__()
        self.net = mlp([x_dim, *hidden, 2 * z_dim], activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(x).chunk(2, dim=-1)
        return loc, positive(raw, MIN_ENCODER_SCALE)


class Decoder(nn.Module):
    """z -> per-pixel likelihood parameters: Bernoulli logits; Gaussian (μ(z), σ(z)); or
    ``gaussian-shared``: (μ(z), σ) with one learned σ for every pixel and every z."""

    def __init__(
        self,
        z_dim: int,
        hidden: Sequence[int],
        x_dim: int,
        likelihood: str = "bernoulli",
        activation: str = "relu",
        min_scale: float = 0.01,
    ):
        super().__init__()
        self.likelihood, self.min_scale = likelihood, min_scale
        self.net = mlp([z_dim, *hidden, LIKELIHOOD_PARAMS[likelihood] * x_dim], activation)
        if likelihood == "gaussian-shared":
            self.raw_scale = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(z)
        if self.likelihood == "gaussian":
            loc, raw = out.chunk(2, dim=-1)
            return loc, positive(raw, self.min_scale)
        if self.likelihood == "gaussian-shared":
            return out, positive(self.raw_scale, self.min_scale).expand_as(out)
        return (out,)
