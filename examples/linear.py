"""The linear-Gaussian model (probabilistic PCA) written as a user's model, where log p(x) is exact:

    z ~ N(0, I_k),  x | z ~ N(W z + b, σ² I)      ⇒      p(x) = N(x | b, W Wᵀ + σ² I)
    q(z | x) = N(A x + a, diag s²)                 (linear amortised guide, learned s)

``exact_log_likelihood`` gives the value every estimator's bound must lie below, and that the
importance-sampled estimate reaches as K grows. Use it on real-valued data without binarisation:

    vae-pyro compare --model examples/linear.py:LinearGaussian --dataset synthetic-linear --binarize none
"""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


class LinearGaussian(nn.Module):
    def __init__(self, x_dim: int = 10, z_dim: int = 2):
        super().__init__()
        self.decoder = nn.Linear(z_dim, x_dim)  # W, b
        self.raw_sigma = nn.Parameter(torch.zeros(()))
        self.encoder = nn.Linear(x_dim, z_dim)  # A, a
        self.raw_s = nn.Parameter(torch.zeros(z_dim))
        self.z_dim = z_dim

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.raw_sigma) + 1e-3

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("decoder", self.decoder)
        pyro.param("raw_sigma", self.raw_sigma)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        pyro.param("raw_s", self.raw_s)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.encoder(x), F.softplus(self.raw_s) + 1e-3).to_event(1))

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x | b, W Wᵀ + σ² I) per point, through the Cholesky factor of the covariance."""
        w, b = self.decoder.weight, self.decoder.bias
        cov = w @ w.T + self.sigma**2 * torch.eye(len(b), dtype=w.dtype, device=w.device)
        chol = torch.linalg.cholesky(cov)
        white = torch.linalg.solve_triangular(chol, (x - b).unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (len(b) * math.log(2 * math.pi) + 2 * chol.diagonal().log().sum() + (white**2).sum(-1))
