"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le, Kosiorek, Siddharth, Teh & Wood 2019), wake
phases, with importance weights per data point. With K draws z_k ~ q_φ(z | x) taken without a path
and self-normalised weights w̃_k = w_k / Σ_j w_j,

    wake-θ   ∇θ log (1/K) Σ_k w_k = Σ_k w̃_k ∇θ log p_θ(x, z_k)      (the IWAE bound's gradient in θ)
    wake-φ   Σ_k w̃_k ∇φ log q_φ(z_k | x)   ≈ −∇φ KL(p_θ(z | x) ‖ q_φ(z | x))

so the guide follows the inclusive KL and no latent site needs a reparameterised sample: discrete
latents train as continuous ones do. The value is the IWAE bound.

Pyro's ``ReweightedWakeSleep`` computes the same two gradients but weights a whole mini-batch as one
data point (its log-weights are summed over the batch before normalising, so for N images its
weights degenerate as N grows); here each image has its own K weights. With one image per batch the
two coincide (``tests/test_rws.py``). The sleep-φ phase needs the guide to take observations from
the model's prior samples, which the lab's contract does not ask of a guide, so it is not offered.
"""

import torch

from vae_pyro.estimators.bounds import log_mean_exp
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects


class ReweightedWakeSleep(ParticleBound):
    """Wake-θ and wake-φ with per-image weights; see the module's docstring.

    :param num_particles: K ≥ 2 draws per data point, vectorised under a particle plate.
    :param max_plate_nesting: plates the model nests; the data plate must be at dim -1.
    """

    min_particles = 2  # self-normalised weights

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        z, n = self.draw(guide, args, kwargs)
        log_p = self.log_p_at(model, z, n, args, kwargs)  # (K, N), gradient to θ only
        log_q = self.log_p_at(guide, z, n, args, kwargs)  # (K, N), gradient to φ only
        log_w = (log_p - log_q).detach()
        w = torch.softmax(log_w, 0)
        return (w * (log_p + log_q)).sum(), log_mean_exp(log_w).sum()


SPEC = EstimatorSpec(
    name="rws", build=ReweightedWakeSleep, summary="IWAE bound of K draws; θ by wake-θ, φ by wake-φ (the "
    "inclusive KL)", paper="Bornschein & Bengio 2015; Le et al. 2019", reference=expects("iwae", guide=False),
    samples="K", min_samples=2)
