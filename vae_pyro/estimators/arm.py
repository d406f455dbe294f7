"""ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020): unbiased gradients in the logits α of
factorised Bernoulli sites from an antithetic pair of draws sharing one uniform u,

    b = 1[u < σ(α)],    b̃ = 1[u > σ(−α)]      (each marginally Bernoulli(σ(α))),

    ARM      ∇_α E_q f = E_u[(f(b̃) − f(b)) (u − ½)]
    DisARM   ∇_α E_q f = E_u[½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|)]

(DisARM is ARM with u integrated out given the pair: never more variance). ``arm``, ``disarm``: the
ELBO, f(z) = log p_θ(x, z) − log q_φ(z | x) per image; the gradient then reaches φ through α only (the
score of f's own log q has mean zero and is left out) and θ through the pair's mean of log p_θ(x, z);
``--particles L``: L pairs, 2L draws per image. ``iwae-disarm``: the IWAE bound of K draws, DisARM
applied to each draw's pair with the other draws held (``MultiSampleDisARM``).
"""

from collections.abc import Callable

import torch

from vae_pyro.errors import VaeError
from vae_pyro.estimators.bounds import log_mean_exp
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


def swapped_bounds(f: torch.Tensor, f_tilde: torch.Tensor) -> torch.Tensor:
    """L^(k) = log (1/K) (Σ_{j≠k} e^{f_j} + e^{f̃_k}) per draw k and image: the bound with draw k's
    log-weight replaced by its partner's. f, f̃: (K, N)."""
    k = f.shape[0]
    eye = torch.eye(k, dtype=torch.bool, device=f.device).unsqueeze(-1)
    replaced = torch.where(eye, f_tilde.unsqueeze(0), f.unsqueeze(0))  # [k, j]: f_j, or f̃_k at j = k
    return log_mean_exp(replaced, 1)


class AugmentReinforceMerge(ParticleBound):
    """:param num_particles: L antithetic pairs per data point (2L draws).
    :param disarm: DisARM's gradient, else ARM's."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, disarm: bool = True, **kwargs):
        self.gradient = disarm_gradient if disarm else arm_gradient
        self.name = "disarm" if disarm else "arm"
        super().__init__(num_particles=2 * num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def pairs(self, model, guide, args, kwargs, detach_q: bool
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """(log w of the first draws b, of their partners b̃, {site: (u, α)}); log w: (pairs, N)."""
        uniforms = {}

        def pair(name, site_kind, alpha):
            if site_kind != "bernoulli":
                raise VaeError(f"{self.name} needs Bernoulli sites, and {name!r} is one-hot")  # the record refuses it
            uniforms[name] = u = torch.rand_like(alpha)
            return torch.cat(antithetic(u, alpha.detach())), None

        at = AtPoints(pair, 2, -(self.max_plate_nesting + 1), self.name)
        log_w, _, _ = self.log_weights(model, guide, args, kwargs, detach_q=detach_q, handler=at)
        f, f_tilde = log_w.chunk(2)
        return f, f_tilde, {name: (uniforms[name], alpha) for name, alpha in at.logits.items()}

    def merged(self, f: torch.Tensor, f_tilde: torch.Tensor, sites: dict) -> torch.Tensor:
        """Σ_sites Σ_logits ĝ · α with ĝ = the estimator's gradient per pair and logit (f, f̃ without
        gradient, (pairs, N)), summed over the pairs."""
        nesting = self.max_plate_nesting
        return sum((self.gradient(per_logit(f, a, nesting), per_logit(f_tilde, a, nesting), u, a.detach()).sum(0)
                    * a.mean(0)).sum() for u, a in sites.values())

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        f, f_tilde, sites = self.pairs(model, guide, args, kwargs, detach_q=True)  # θ's gradient only
        log_w = torch.cat([f, f_tilde])
        surrogate = self.merged(f.detach(), f_tilde.detach(), sites) / len(f)
        return surrogate + log_w.mean(0).sum(), log_w.detach().mean(0).sum()


class MultiSampleDisARM(AugmentReinforceMerge):
    """DisARM for the IWAE bound (Dong, Mnih & Tucker 2020, section 5): K draws b_k, each with its
    antithetic partner b̃_k, and for each k the DisARM estimate with the function of b_k that holds the
    other draws fixed,

        L = log (1/K) Σ_j w(b_j),      L^(k) = L with w(b_k) replaced by w(b̃_k),

        ∇_α E L ≈ Σ_k ½ (L − L^(k)) (−1)^b̃_k 1[b_k ≠ b̃_k] σ(|α|),

    plus L's gradient through its weights (θ; and φ through log q at fixed b, which no longer has mean
    zero when K > 1). 2K draws per image; at K = 1 it is ``disarm``.

    :param num_particles: K draws in the bound (2K with their partners)."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, disarm=True, **kwargs)
        self.name = "iwae-disarm"

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        f, f_tilde, sites = self.pairs(model, guide, args, kwargs, detach_q=False)
        bound = log_mean_exp(f)
        held = bound.detach().expand_as(f)
        surrogate = self.merged(held, swapped_bounds(f.detach(), f_tilde.detach()), sites)
        return surrogate + bound.sum(), bound.detach().sum()


def _build(disarm: bool) -> Callable[..., AugmentReinforceMerge]:
    return lambda **kwargs: AugmentReinforceMerge(disarm=disarm, **kwargs)


SPECS = tuple(EstimatorSpec(
    name=name, build=_build(name == "disarm"), summary=f"ELBO; {what} of L antithetic pairs at Bernoulli sites",
    paper=paper, reference=expects("elbo"), needs=frozenset({"bernoulli"}), per_sample=2)
    for name, what, paper in (("arm", "ARM", "Yin & Zhou 2019"), ("disarm", "DisARM", "Dong, Mnih & Tucker 2020"))
) + (EstimatorSpec(
    name="iwae-disarm", build=MultiSampleDisARM, summary="IWAE bound of K draws; DisARM with each draw's "
    "antithetic partner at Bernoulli sites", paper="Dong, Mnih & Tucker 2020", reference=expects("iwae"),
    samples="K", needs=frozenset({"bernoulli"}), per_sample=2),)
