"""The exactness lab: a linear-Gaussian model, where log p(x) is known in closed form.

    z ~ N(0, I_k),   x | z ~ N(W z + b, σ² I_D)   ⇒   p(x) = N(x | b, C),  C = W Wᵀ + σ² I_D

(probabilistic PCA, Tipping & Bishop 1999). A VAE with a linear decoder and one shared σ
(``--hidden none --likelihood gaussian-shared``) *is* such a model, so its exact log p(x) can be
set against every estimator's bound; and the best such model for a data set has Tipping &
Bishop's closed form, which a linear VAE with a diagonal posterior reaches (Lucas et al. 2019).
"""

import math

import torch

from vae_pyro.data import Dataset, seeded

# the generating model of --dataset synthetic-linear
TRUE_SEED, X_DIM, Z_DIM, NOISE, N_TRAIN, N_TEST = 1999, 10, 2, 0.5, 4000, 1000


def synthetic_linear() -> Dataset:
    """Data from a fixed pPCA model: W with N(0, 1) entries, b ~ N(0, 1), σ = 0.5; labels all 0."""
    gen = seeded(TRUE_SEED)
    w = torch.randn(X_DIM, Z_DIM, generator=gen)
    b = torch.randn(X_DIM, generator=gen)
    z = torch.randn(N_TRAIN + N_TEST, Z_DIM, generator=gen)
    x = z @ w.T + b + NOISE * torch.randn(N_TRAIN + N_TEST, X_DIM, generator=gen)
    y = torch.zeros(N_TRAIN + N_TEST, dtype=torch.int64)
    return Dataset("synthetic-linear", x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x | m, C) = −½ (D log 2π + log det C + (x − m)ᵀ C⁻¹ (x − m)), via the Cholesky factor of C."""
    chol = torch.linalg.cholesky(cov)
    white = torch.linalg.solve_triangular(chol, (x - mean).unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2 * chol.diagonal().log().sum()
    return -0.5 * (x.shape[-1] * math.log(2 * math.pi) + log_det + (white**2).sum(-1))


def decoder_params(vae) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, b, σ) of a linear decoder with one shared σ."""
    if vae.likelihood != "gaussian-shared" or len(vae.decoder.net) != 1:
        raise ValueError("exact log p(x) needs a linear VAE: --hidden none --likelihood gaussian-shared")
    layer = vae.decoder.net[0]
    sigma = vae.decoder(torch.zeros(1, vae.z_dim, dtype=layer.weight.dtype, device=layer.weight.device))[1][0, 0]
    return layer.weight, layer.bias, sigma


@torch.no_grad()
def exact_log_likelihood(vae, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per point under the linear VAE's own generative model: N(b, W Wᵀ + σ² I)."""
    w, b, sigma = decoder_params(vae)
    cov = w @ w.T + sigma**2 * torch.eye(len(b), dtype=w.dtype, device=w.device)
    return gaussian_log_prob(x, b, cov)


def ppca_max_log_likelihood(x: torch.Tensor, k: int) -> float:
    """Mean log-likelihood per point of the maximum-likelihood pPCA fit with k components.

    With S the sample covariance and λ_1 ≥ … ≥ λ_D its eigenvalues: σ² = mean of the D − k
    smallest, C = U_k (Λ_k − σ² I) U_kᵀ + σ² I (Tipping & Bishop 1999, eqs. 7-8), and the
    mean log-likelihood is −½ (D log 2π + log det C + tr(C⁻¹ S)).
    """
    x = x.double()
    centred = x - x.mean(0)
    s = centred.T @ centred / len(x)
    eigvals, eigvecs = torch.linalg.eigh(s)  # ascending
    sigma2 = eigvals[:-k].mean()
    u, lam = eigvecs[:, -k:], eigvals[-k:]
    cov = u @ torch.diag(lam - sigma2) @ u.T + sigma2 * torch.eye(len(s), dtype=s.dtype)
    d = len(s)
    return (-0.5 * (d * math.log(2 * math.pi) + torch.logdet(cov) + torch.trace(torch.linalg.solve(cov, s)))).item()
