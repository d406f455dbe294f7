"""ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020): unbiased gradients in the logits α of
factorised Bernoulli sites from an antithetic pair of draws sharing one uniform u,

    b = 1[u < σ(α)],    b̃ = 1[u > σ(−α)]      (each marginally Bernoulli(σ(α))),

    ARM      ∇_α E_q f = E_u[(f(b̃) − f(b)) (u − ½)]
    DisARM   ∇_α E_q f = E_u[½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|)]

(DisARM is ARM with u integrated out given the pair: never more variance). f(z) = log p_θ(x, z) −
log q_φ(z | x) per image; the gradient then reaches φ through α only (the score of f's own log q has
mean zero and is left out) and θ through the pair's mean of log p_θ(x, z). ``--particles L``: L pairs,
2L draws per image.
"""

from collections.abc import Callable

import torch

from vae_pyro.errors import VaeError
from vae_pyro.estimators.discrete import AtPoints, per_logit
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects


def antithetic(u: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, b̃) = (1[u < σ(α)], 1[u > σ(−α)])."""
    return (u < torch.sigmoid(alpha)).to(alpha.dtype), (u > torch.sigmoid(-alpha)).to(alpha.dtype)


def arm_gradient(f: torch.Tensor, f_tilde: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(f(b̃) − f(b)) (u − ½), per logit; f, f̃ already broadcast to the logits' shape (``per_logit``); α is
    unused (the signature DisARM's shares)."""
    return (f_tilde - f) * (u - 0.5)


def disarm_gradient(f: torch.Tensor, f_tilde: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|), per logit."""
    b, b_tilde = antithetic(u, alpha)
    return 0.5 * (f - f_tilde) * (1 - 2 * b_tilde) * (b != b_tilde) * torch.sigmoid(alpha.abs())


class AugmentReinforceMerge(ParticleBound):
    """:param num_particles: L antithetic pairs per data point (2L draws).
    :param disarm: DisARM's gradient, else ARM's."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, disarm: bool = True, **kwargs):
        self.gradient = disarm_gradient if disarm else arm_gradient
        self.name = "disarm" if disarm else "arm"
        super().__init__(num_particles=2 * num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        uniforms = {}

        def pair(name, site_kind, alpha):
            if site_kind != "bernoulli":
                raise VaeError(f"{self.name} needs Bernoulli sites, and {name!r} is one-hot")  # the record refuses it
            uniforms[name] = u = torch.rand_like(alpha)
            return torch.cat(antithetic(u, alpha.detach())), None

        at = AtPoints(pair, 2, -(self.max_plate_nesting + 1), self.name)
        log_w, _, _ = self.log_weights(model, guide, args, kwargs, detach_q=True, handler=at)  # θ's gradient only
        f, f_tilde = log_w.detach().chunk(2)
        nesting = self.max_plate_nesting
        surrogate = sum((self.gradient(per_logit(f, a, nesting), per_logit(f_tilde, a, nesting), uniforms[n],
                                       a.detach()).mean(0) * a.mean(0)).sum() for n, a in at.logits.items())
        return surrogate + log_w.mean(0).sum(), log_w.detach().mean(0).sum()


def _build(disarm: bool) -> Callable[..., AugmentReinforceMerge]:
    return lambda **kwargs: AugmentReinforceMerge(disarm=disarm, **kwargs)


SPECS = tuple(EstimatorSpec(
    name=name, build=_build(name == "disarm"), summary=f"ELBO; {what} of L antithetic pairs at Bernoulli sites",
    paper=paper, reference=expects("elbo"), needs=frozenset({"bernoulli"}), per_sample=2)
    for name, what, paper in (("arm", "ARM", "Yin & Zhou 2019"), ("disarm", "DisARM", "Dong, Mnih & Tucker 2020")))
