"""VIMCO (Mnih & Rezende 2016): the IWAE bound with a multi-sample score-function gradient for
latent sites that have no reparameterised sample, each draw's learning signal baselined by the
bound with that draw left out:

    L = log (1/K) Σ_k w_k,      L_{−k} = log (1/K) (Σ_{j≠k} w_j + exp((1/(K−1)) Σ_{j≠k} log w_j)),

    ∇L ≈ Σ_k (L − L_{−k}) ∇ log q(z_k | x) + Σ_k w̃_k ∇ log w_k

(the second sum is the IWAE gradient through the densities and any reparameterised path). K ≥ 2.
"""

import math

import torch

from vae_pyro.estimators.bounds import log_mean_exp
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects


def leave_one_out(log_w: torch.Tensor) -> torch.Tensor:
    """L_{−k} per draw and image: the bound with w_k replaced by the geometric mean of the others."""
    k = log_w.shape[0]
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(eye, others_mean.unsqueeze(0), log_w.unsqueeze(0))  # [k, j]: w_j, or the mean at j = k
    return torch.logsumexp(replaced, 1) - math.log(k)


class VIMCO(ParticleBound):
    """:param num_particles: K ≥ 2 draws per data point (leave-one-out baselines)."""

    min_particles = 2

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        log_w, _, _ = self.log_weights(model, guide, args, kwargs)
        bound = log_mean_exp(log_w)
        signal = (bound.detach().unsqueeze(0) - leave_one_out(log_w.detach()))
        return bound.sum() + (signal * self.score_log_q).sum(), bound.detach().sum()


SPEC = EstimatorSpec(
    name="vimco", build=VIMCO, summary="IWAE bound of K draws; score function with leave-one-out baselines where "
    "no rsample", paper="Mnih & Rezende 2016", reference=expects("iwae"), samples="K", min_samples=2)
