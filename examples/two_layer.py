"""A VAE with two stochastic layers, x ← z1 ← z2, written as a modeller would for the lab
(Burda, Grosse & Salakhutdinov 2016, sec. 5: 100 and 50 latent units, tanh layers of 200 and 100).

    p(z2) = N(0, I),  p(z1 | z2) = N(μ(z2), σ²(z2)),  p(x | z1) = Bernoulli(logits(z1))
    q(z1 | x) = N(μ(x), σ²(x)),  q(z2 | z1) = N(μ(z1), σ²(z1))

    vae-pyro compare --model examples/two_layer.py:TwoLayerVAE --estimators trace,iwae
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


class Gaussian(nn.Module):
    """in -> (μ, σ) through two tanh layers; σ = softplus(raw) + 1e-3."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * out_dim))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(h).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-3


class TwoLayerVAE(nn.Module):
    def __init__(self, x_dim: int = 784, z1_dim: int = 100, z2_dim: int = 50, hidden1: int = 200, hidden2: int = 100):
        super().__init__()
        self.z2_dim = z2_dim
        self.q_z1 = Gaussian(x_dim, hidden1, z1_dim)
        self.q_z2 = Gaussian(z1_dim, hidden2, z2_dim)
        self.p_z1 = Gaussian(z2_dim, hidden2, z1_dim)
        self.p_x = nn.Sequential(nn.Linear(z1_dim, hidden1), nn.Tanh(), nn.Linear(hidden1, hidden1), nn.Tanh(),
                                 nn.Linear(hidden1, x_dim))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("p_z1", self.p_z1)
        pyro.module("p_x", self.p_x)
        with pyro.plate("data", len(x)):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(len(x), self.z2_dim), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(*self.p_z1(z2)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.p_x(z1), validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("q_z1", self.q_z1)
        pyro.module("q_z2", self.q_z2)
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Normal(*self.q_z1(x)).to_event(1))
            pyro.sample("z2", dist.Normal(*self.q_z2(z1)).to_event(1))
