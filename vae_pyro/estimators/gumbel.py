"""`gumbel-st`: the straight-through Gumbel-softmax / concrete estimator (Jang, Gu & Poole 2017;
Maddison, Mnih & Teh 2017; Bengio et al. 2013). Each draw is the exact discrete sample,

    Bernoulli:  b = 1[α + ℓ > 0],  ℓ ~ Logistic(0, 1);     one-hot:  b = onehot(argmax(α + g)),  g ~ Gumbel(0, 1),

and in the backward pass the gradient flows through its relaxation y = σ((α + ℓ)/τ) or
softmax((α + g)/τ) at temperature τ (``--temperature``), as if b were y: the value is b + (y − ⊥y).
f's densities of z are extended off the vertices (``discrete.OffVertexDensities``), so ∂f/∂b includes
the prior's and the guide's terms at one-hot sites as at Bernoulli ones (torch's one-hot density reads
only the argmax, which left the KL term without a path).
The bound's value and its gradient in θ are those of the ELBO (b is an exact draw); its gradient in
φ is biased, the more so the further f(z) = log p_θ(x, z) − log q_φ(z | x) is from linear in z.
"""

import torch
import torch.nn.functional as F

from vae_pyro.estimators.discrete import AtPoints, OffVertexDensities
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects


def straight_through(site_kind: str, alpha: torch.Tensor, temperature: float) -> torch.Tensor:
    """An exact draw b whose gradient is the relaxed sample's: b + (y − ⊥y)."""
    u = torch.rand_like(alpha).clamp(torch.finfo(alpha.dtype).tiny, 1 - torch.finfo(alpha.dtype).eps)
    if site_kind == "bernoulli":
        noisy = alpha + torch.log(u) - torch.log1p(-u)
        soft, hard = torch.sigmoid(noisy / temperature), (noisy > 0).to(alpha.dtype)
    else:
        noisy = alpha - torch.log(-torch.log(u))
        soft = torch.softmax(noisy / temperature, -1)
        hard = F.one_hot(noisy.argmax(-1), alpha.shape[-1]).to(alpha.dtype)
    return hard + (soft - soft.detach())  # the difference first: exactly 0, so the value is exactly b


class GumbelStraightThrough(ParticleBound):
    """:param num_particles: L draws per data point.  :param temperature: τ > 0 of the relaxation."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, temperature: float = 1.0, **kwargs):
        self.temperature = temperature
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        at = AtPoints(lambda name, site_kind, alpha: (straight_through(site_kind, alpha, self.temperature), None),
                      1, -(self.max_plate_nesting + 1), "gumbel-st")
        with OffVertexDensities():
            log_w, _, _ = self.log_weights(model, guide, args, kwargs, handler=at)
        return log_w.mean(0).sum(), log_w.detach().mean(0).sum()


SPEC = EstimatorSpec(
    name="gumbel-st", build=GumbelStraightThrough, summary="ELBO; straight-through Gumbel-softmax at Bernoulli and "
    "one-hot sites, temperature τ (biased in φ)", paper="Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017",
    reference=expects("elbo", guide=False), options={"temperature": 1.0}, needs=frozenset({"relaxable"}))
