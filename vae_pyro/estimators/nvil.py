"""`nvil`: neural variational inference and learning (Mnih & Gregor 2014), the score function with a
learned, input-dependent baseline and a running normalisation of the learning signal,

    ℓ = f(z) − b_ψ(x) − c,      ∇φ ≈ (ℓ / max(1, √v)) ∇φ log q_φ(z | x),      ∇θ ≈ ∇θ log p_θ(x, z),

f(z) = log p_θ(x, z) − log q_φ(z | x), z ~ q_φ(z | x) without a path; c and v are running averages
(decay 0.8) of the mean and variance of f − b_ψ(x), and b_ψ (one tanh layer of 100) is trained to
minimise E ℓ². The baselines keep the gradient unbiased; the normalisation divides φ's gradient by
max(1, √v), a step size that adapts: in direction, not in length, it is the ELBO's gradient. Under
torchrun, c and v follow rank 0's draws (DistributedDataParallel broadcasts the buffers each step).
"""

import pyro
import torch
from torch import nn

from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects
from vae_pyro.models.nets import ACTIVATIONS

DECAY, HIDDEN = 0.8, 100


class Baseline(nn.Module):
    """b_ψ(x), one value per image, with the running mean c and variance v of f − b_ψ(x)."""

    def __init__(self, x_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, HIDDEN), ACTIVATIONS["tanh"](), nn.Linear(HIDDEN, 1), nn.Flatten(-2))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def update(self, centred: torch.Tensor) -> None:
        """c ← 0.8 c + 0.2 mean(f − b), v ← 0.8 v + 0.2 var(f − b)."""
        self.mean.mul_(DECAY).add_((1 - DECAY) * centred.mean())
        self.var.mul_(DECAY).add_((1 - DECAY) * centred.var(unbiased=False))


class NVIL(ParticleBound):
    """:param num_particles: L draws per data point, each with the baseline b_ψ(x).
    :param network: the ``Baseline`` (trained beside the module)."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, *, network: Baseline, **kwargs):
        self.network = network
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _surrogate_and_bound(self, model, guide, x, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q, score, n = self.score_draws(guide, (x, *args), kwargs)
        log_p = self.log_p_at(model, z, n, (x, *args), kwargs)
        f = (log_p - log_q).detach()
        pyro.module("nvil_baseline", self.network.to(x))  # on the data's device and dtype (the parameters stay)
        b = self.network(x.reshape(len(x), -1))
        # c and v from the draws before these, so that the baseline is independent of this draw
        signal = (f - b.detach() - self.network.mean) / self.network.var.sqrt().clamp_min(1.0)
        fit_baseline = -((f - b - self.network.mean) ** 2)
        if torch.is_grad_enabled():  # a training step, not an evaluation of the loss
            self.network.update(f - b.detach())
        return (log_p + signal * score + fit_baseline).mean(0).sum(), f.mean(0).sum()


SPEC = EstimatorSpec(
    name="nvil", build=NVIL, summary="ELBO; score function with a learned baseline b(x) and a running "
    "normalisation (its guide gradient is the ELBO's / max(1, √v))", paper="Mnih & Gregor 2014",
    reference=expects("elbo", guide=False), network=lambda x_dim, options: Baseline(x_dim))
