"""`rloo`: REINFORCE with the leave-one-out baseline over K draws per image (Kool, van Hoof & Welling
2019; Salimans & Knowles 2014; the VarGrad view: Richter et al. 2020), at every latent site:

    ∇φ ELBO ≈ (1/K) Σ_k (f(z_k) − (1/(K−1)) Σ_{j≠k} f(z_j)) ∇φ log q_φ(z_k | x),
    ∇θ ELBO ≈ (1/K) Σ_k ∇θ log p_θ(x, z_k),       f(z) = log p_θ(x, z) − log q_φ(z | x),

z_k ~ q_φ(z | x) without a path. Each draw's baseline is the mean of the others, so it is independent
of that draw and the estimate stays unbiased; f's own score term, of mean zero, is left out. K ≥ 2.
"""

import torch

from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects


def leave_one_out_signal(f: torch.Tensor) -> torch.Tensor:
    """f_k − mean_{j≠k} f_j along dim 0."""
    k = f.shape[0]
    return f - (f.sum(0, keepdim=True) - f) / (k - 1)


class LeaveOneOut(ParticleBound):
    """:param num_particles: K ≥ 2 draws per data point."""

    min_particles = 2

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q, score, n = self.score_draws(guide, args, kwargs)
        log_p = self.log_p_at(model, z, n, args, kwargs)
        f = (log_p - log_q).detach()
        return (log_p + leave_one_out_signal(f) * score).mean(0).sum(), f.mean(0).sum()


SPEC = EstimatorSpec(
    name="rloo", build=LeaveOneOut, summary="ELBO; score function at every site, each of K draws baselined by the "
    "mean of the others", paper="Kool, van Hoof & Welling 2019; Richter et al. 2020", reference=expects("elbo"),
    samples="K", min_samples=2)
