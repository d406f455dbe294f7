"""Path-derivative gradient estimators: a bound (the ELBO or the IWAE bound) composed with a
gradient path for the guide's parameters φ, for any model and guide whose latent sites have
reparameterised samples. With K draws z_k = g_φ(ε_k) and log-weights computed with q's
parameters held fixed,

    log w_k = log p_θ(x, z_k) − log q_{⊥φ}(z_k | x),      w̃_k = w_k / Σ_j w_j,

the surrogate whose gradient is the estimator is

    stl        (ELBO)  (1/K) Σ_k log w_k                                  Roeder, Wu & Duvenaud 2017
    iwae-stl   (IWAE)  Σ_k ⊥(w̃_k) log w_k                                  Roeder et al. 2017; biased for K > 1
    iwae-dreg  (IWAE)  Σ_k ⊥(w̃_k²) log w_k + Σ_k ⊥(w̃_k − w̃_k²) log p_θ(x, ⊥z_k)   Tucker, Lawson, Gu & Maddison 2018

(⊥: no gradient). φ's gradient flows only through z_k's path; θ's is the bound's usual one (for
iwae-dreg the second sum tops the first's weights w̃² up to w̃). The value returned is the bound.
"""

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample

BOUNDS = ("elbo", "iwae")
GUIDE_GRADIENTS = ("stl", "dreg")


def detached(fn):
    """The distribution ``fn`` with its parameters held fixed (no gradient to φ through log q)."""
    if hasattr(fn, "base_dist"):  # Independent, or Pyro's expanded / masked wrappers
        base = detached(fn.base_dist)
        if isinstance(fn, torch.distributions.Independent):
            return torch.distributions.Independent(base, fn.reinterpreted_batch_ndims)
        return base.expand(fn.batch_shape) if fn.batch_shape != base.batch_shape else base
    params = {name: getattr(fn, name).detach() for name in fn.arg_constraints if name in fn.__dict__}
    return type(fn)(**params, validate_args=False)


def per_image(log_prob: torch.Tensor, k: int, n: int, nesting: int) -> torch.Tensor:
    """Sum over every dim but the particle plate's and the data plate's: (K, N)."""
    lp = log_prob.reshape((1,) * (nesting + 1 - log_prob.dim()) + log_prob.shape) if log_prob.dim() < nesting + 1 \
        else log_prob
    if nesting > 1:
        lp = lp.sum(tuple(range(-nesting, -1)))
    return lp.expand(k, n)


class PathwiseELBO(ELBO):
    """A bound (``"elbo"`` or ``"iwae"``) with a path-derivative guide gradient (``"stl"`` or ``"dreg"``,
    the latter for the IWAE bound only); see the module's docstring for the equations.

    :param num_particles: K draws per data point (vectorised under a particle plate).
    :param max_plate_nesting: plates the model nests; the data plate must be at dim -1.
    """

    def __init__(self, bound: str = "elbo", guide_gradient: str = "stl", num_particles: int = 1,
                 max_plate_nesting: int = 1, **kwargs):
        if bound not in BOUNDS or guide_gradient not in GUIDE_GRADIENTS or (bound, guide_gradient) == ("elbo", "dreg"):
            raise ValueError(f"no estimator for bound {bound!r} with guide gradient {guide_gradient!r}")
        kwargs["vectorize_particles"] = True  # the particles are always a vectorised plate here
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)
        self.bound, self.guide_gradient = bound, guide_gradient

    def _get_trace(self, model, guide, args, kwargs):
        """One (model trace, guide trace) pair, as Pyro's ELBO interface asks (the estimator itself
        draws its particles under one vectorised plate, ``_surrogate_and_bound``)."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _particle_plate(self, fn):
        def wrapped(*args, **kwargs):
            with pyro.plate("num_particles_vectorized", self.num_particles, dim=-(self.max_plate_nesting + 1)):
                return fn(*args, **kwargs)

        return wrapped

    def _model_log_prob(self, model_trace, n: int) -> torch.Tensor:
        model_trace.compute_log_prob()
        return sum(per_image(s["log_prob"], self.num_particles, n, self.max_plate_nesting)
                   for s in model_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s))

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(the surrogate whose gradient is the estimator, the bound), each summed over the batch."""
        guide_trace = poutine.trace(self._particle_plate(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(self._particle_plate(model), trace=guide_trace)
                                    ).get_trace(*args, **kwargs)
        latent = {name: s for name, s in guide_trace.nodes.items()
                  if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}
        n = next(f.size for s in latent.values() for f in s["cond_indep_stack"] if f.dim == -1) if latent \
            else args[0].shape[0]
        log_q = sum((per_image(scale_and_mask(detached(s["fn"]).log_prob(s["value"]), s["scale"], s["mask"]),
                                self.num_particles, n, self.max_plate_nesting) for s in latent.values()),
                    0.0)
        log_w = self._model_log_prob(model_trace, n) - log_q  # (K, N)
        k = self.num_particles
        if self.bound == "elbo":
            return log_w.mean(0).sum(), log_w.detach().mean(0).sum()
        bound = (torch.logsumexp(log_w.detach(), 0) - math.log(k)).sum()
        w = torch.softmax(log_w.detach(), 0)
        if self.guide_gradient == "stl":
            return (w * log_w).sum(), bound
        fixed_z = {name: s["value"].detach() for name, s in latent.items()}
        model_at_fixed_z = poutine.trace(poutine.condition(self._particle_plate(model), data=fixed_z)
                                         ).get_trace(*args, **kwargs)
        log_p_fixed_z = self._model_log_prob(model_at_fixed_z, n)
        return (w**2 * log_w).sum() + ((w - w**2) * log_p_fixed_z).sum(), bound

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−bound in value, the estimator in gradient: −(bound + surrogate − ⊥surrogate)."""
        surrogate, bound = self._surrogate_and_bound(model, guide, *args, **kwargs)
        return -(bound + surrogate - surrogate.detach())

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return -self._surrogate_and_bound(model, guide, *args, **kwargs)[1].item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
