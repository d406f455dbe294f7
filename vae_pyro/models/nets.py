"""The neural networks: encoder x(, y) -> (loc, scale) of q(z|x), decoder z(, y) -> parameters of p(x|z).

Each comes as an MLP or, with ``conv=True``, a small convolutional body for 28×28 images
with the same interface. A condition (a one-hot label, for the CVAE) is concatenated to the
input of the fully connected part. Inputs may carry extra leading dimensions (particles).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vae_pyro.models.likelihoods import LIKELIHOODS

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh}
MIN_ENCODER_SCALE = 1e-3
SIDE, CHANNELS = 28, (32, 64)  # the conv nets: 28 -> 14 -> 7 with two stride-2 layers


def check_shapes(x_dim: int, activation: str, conv: bool) -> None:
    """Refuse what the networks cannot be built for: an unknown activation, --conv on non-28×28 data."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if conv and x_dim != SIDE * SIDE:
        raise ValueError(f"--conv needs {SIDE}x{SIDE} images, but x_dim is {x_dim}; drop --conv")


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


def with_condition(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """[h, cond] along the last dimension, ``cond`` broadcast over h's extra leading dimensions."""
    if cond is None:
        return h
    return torch.cat([h, cond.expand(*h.shape[:-1], cond.shape[-1])], -1)


class ConvBody(nn.Module):
    """(..., 784) -> (..., 64·7·7): two stride-2 convolutions."""

    def __init__(self, activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(nn.Conv2d(1, CHANNELS[0], 4, 2, 1), act(), nn.Conv2d(*CHANNELS, 4, 2, 1), act())
        self.out_dim = CHANNELS[1] * (SIDE // 4) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, 1, SIDE, SIDE)).reshape(*lead, self.out_dim)


class ConvHead(nn.Module):
    """(..., 64·7·7) -> (..., channels·784): two stride-2 transposed convolutions."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.in_dim, self.channels = CHANNELS[1] * (SIDE // 4) ** 2, channels
        self.net = nn.Sequential(
            act(), nn.ConvTranspose2d(CHANNELS[1], CHANNELS[0], 4, 2, 1), act(),
            nn.ConvTranspose2d(CHANNELS[0], channels, 4, 2, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]
        out = self.net(h.reshape(-1, CHANNELS[1], SIDE // 4, SIDE // 4))
        return out.reshape(*lead, self.channels * SIDE * SIDE)  # channel-major: chunk() splits parameters


class Encoder(nn.Module):
    """q_φ(z|x(, y)) = N(μ_φ, diag σ²_φ): one network, its output split into μ and raw σ.

    ``deterministic``: only μ (the autoencoder's code); forward returns (μ, None).
    """

    def __init__(self, x_dim: int, hidden: Sequence[int], z_dim: int, activation: str = "relu",
                 cond_dim: int = 0, conv: bool = False, deterministic: bool = False):
        super().__init__()
        self.body = ConvBody(activation) if conv else nn.Identity()
        in_dim = self.body.out_dim if conv else x_dim
        self.deterministic = deterministic
        self.net = mlp([in_dim + cond_dim, *hidden, (1 if deterministic else 2) * z_dim], activation)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.net(with_condition(self.body(x), cond))
        if self.deterministic:
            return out, None
        loc, raw = out.chunk(2, dim=-1)
        return loc, positive(raw, MIN_ENCODER_SCALE)


class Decoder(nn.Module):
    """z(, y) -> per-pixel likelihood parameters: Bernoulli or continuous-Bernoulli logits;
    Gaussian (μ(z), σ(z)); or ``gaussian-shared``: (μ(z), σ) with one learned σ for all pixels."""

    def __init__(self, z_dim: int, hidden: Sequence[int], x_dim: int, likelihood: str = "bernoulli",
                 activation: str = "relu", min_scale: float = 0.01, cond_dim: int = 0, conv: bool = False):
        super().__init__()
        self.likelihood, self.min_scale = likelihood, min_scale
        params = LIKELIHOODS[likelihood].params
        self.head = ConvHead(params, activation) if conv else nn.Identity()
        out_dim = self.head.in_dim if conv else params * x_dim
        self.net = mlp([z_dim + cond_dim, *hidden, out_dim], activation)
        if likelihood == "gaussian-shared":
            self.raw_scale = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.head(self.net(with_condition(z, cond)))
        if self.likelihood == "gaussian":
            loc, raw = out.chunk(2, dim=-1)
            return loc, positive(raw, self.min_scale)
        if self.likelihood == "gaussian-shared":
            return out, positive(self.raw_scale, self.min_scale).expand_as(out)
        return (out,)
