"""The base of the multi-sample estimators written here: K (or M·K) draws per data point under one
vectorised particle plate, per-image log-weights

    log w_k = log p_θ(x, z_k) − log q_φ(z_k | x),      z_k ~ q_φ reparameterised,

and a loss whose value is the bound and whose gradient is the estimator's:
−(bound + surrogate − ⊥surrogate), ⊥ meaning no gradient. A subclass writes ``_surrogate_and_bound``.
"""

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


def log_prob_path_only(fn, value: torch.Tensor) -> torch.Tensor:
    """log q(z) with the distribution's parameters held fixed: the value of ``fn.log_prob(z)``, and
    the gradient that reaches φ only through z's path (the path derivative of Roeder et al. 2017),

        log q_φ(z) − log q_φ(⊥z) + ⊥log q_φ(⊥z),      ⊥: no gradient.

    The second term is the score ∇φ log q_φ(z) at fixed z, which the first also holds; subtracting it
    leaves ∂ log q / ∂z · ∂z / ∂φ. Nothing is rebuilt, so it holds for any distribution with a
    log-density at a value it did not draw: transformed ones and flows (their inverse), full-covariance,
    implicitly reparameterised (Gamma, Beta, Dirichlet), mixtures, relaxed discrete."""
    log_q = fn.log_prob(value)  # first: a transform's cache then still maps z to its base draw
    at_fixed_z = fn.log_prob(value.detach())
    return log_q - at_fixed_z + at_fixed_z.detach()


def per_image(log_prob: torch.Tensor, k: int, n: int, nesting: int) -> torch.Tensor:
    """Sum over every dim but the particle plate's and the data plate's: (K, N)."""
    lp = log_prob.reshape((1,) * (nesting + 1 - log_prob.dim()) + log_prob.shape) if log_prob.dim() < nesting + 1 \
        else log_prob
    if nesting > 1:
        lp = lp.sum(tuple(range(-nesting, -1)))
    return lp.expand(k, n)


class Detached(Messenger):
    """Latent draws leave their sample statement without a path (``.detach()``)."""

    def _pyro_post_sample(self, msg: dict) -> None:
        if not msg["is_observed"] and not site_is_subsample(msg):
            msg["value"] = msg["value"].detach()


class ParticleBound(ELBO):
    """:param num_particles: draws per data point, vectorised under one particle plate.
    :param max_plate_nesting: plates the model nests; the data plate must be at dim -1."""

    min_particles = 1  # the draws per data point the estimator needs (2: a leave-one-out baseline, normalised weights)

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs):
        if num_particles < self.min_particles:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_particles} draws per data point, "
                             f"got {num_particles}")
        kwargs["vectorize_particles"] = True  # the particles are always a vectorised plate here
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        """One (model trace, guide trace) pair, as Pyro's ELBO interface asks (the estimators draw
        their particles under one vectorised plate, ``log_weights``)."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _particle_plate(self, fn):
        def wrapped(*args, **kwargs):
            with pyro.plate("num_particles_vectorized", self.num_particles, dim=-(self.max_plate_nesting + 1)):
                return fn(*args, **kwargs)

        return wrapped

    def _log_density(self, model_trace, n: int) -> torch.Tensor:
        model_trace.compute_log_prob()
        return sum(per_image(s["log_prob"], self.num_particles, n, self.max_plate_nesting)
                   for s in model_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s))

    def log_weights(self, model, guide, args, kwargs, detach_q: bool = False, handler: Messenger | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """(log w: (draws, N), the drawn latents without gradient, N); with ``detach_q`` log q is taken
        with the guide's parameters held fixed (z keeps its path); ``handler`` wraps the guide outside the
        particle plate (so it sees each site broadcast over the draws). Leaves ``self.score_log_q``: log q
        of the sites without a reparameterised sample, per draw and image (what a score function needs), and
        ``self.log_q``, log q as the objective weighs it (scaled), per draw and image."""
        guide = self._particle_plate(guide)
        guide_trace = poutine.trace(handler(guide) if handler else guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(self._particle_plate(model), trace=guide_trace)
                                    ).get_trace(*args, **kwargs)
        latent, n = self._latents(guide_trace, args)
        log_prob = log_prob_path_only if detach_q else (lambda fn, value: fn.log_prob(value))
        log_q = sum((per_image(scale_and_mask(log_prob(s["fn"], s["value"]), s["scale"], s["mask"]),
                               self.num_particles, n, self.max_plate_nesting) for s in latent.values()), 0.0)
        fixed_z = {name: s["value"].detach() for name, s in latent.items()}
        # the sampling density itself, unscaled and unmasked (as Pyro's score_parts): a KL weight β scales
        # the objective, not the density the draws come from
        self.score_log_q = sum((per_image(s["fn"].log_prob(s["value"]), self.num_particles, n, self.max_plate_nesting)
                                for s in latent.values() if not s["fn"].has_rsample), 0.0)
        self.log_q = log_q
        return self._log_density(model_trace, n) - log_q, fixed_z, n

    @staticmethod
    def _latents(guide_trace, args) -> tuple[dict[str, dict], int]:
        """The guide trace's latent sites, and N, the size of the data plate."""
        latent = {name: s for name, s in guide_trace.nodes.items()
                  if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}
        n = next(f.size for s in latent.values() for f in s["cond_indep_stack"] if f.dim == -1) if latent \
            else args[0].shape[0]
        return latent, n

    def draw(self, guide, args, kwargs) -> tuple[dict[str, torch.Tensor], int]:
        """(latents drawn from the guide with no gradient, N): the draws of an estimator that needs no path."""
        with torch.no_grad():
            latent, n = self._latents(poutine.trace(self._particle_plate(guide)).get_trace(*args, **kwargs), args)
        return {name: s["value"] for name, s in latent.items()}, n

    def score_draws(self, guide, args, kwargs) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, int]:
        """Draws for a score function, in one guide pass: (latents without gradient, log q_φ(z | x) at them
        as the objective weighs it, the sampling density log q_φ(z | x) unscaled, N). Each draw is cut
        from its path as it is drawn, so a later site's density depends on φ only through its own
        parameters. Log-densities per draw and image, (draws, N)."""
        with Detached():  # outside the trace, so that the trace records the detached values
            trace = poutine.trace(self._particle_plate(guide)).get_trace(*args, **kwargs)
        latent, n = self._latents(trace, args)
        k, nesting = self.num_particles, self.max_plate_nesting
        log_q = sum((per_image(scale_and_mask(s["fn"].log_prob(s["value"]), s["scale"], s["mask"]), k, n, nesting)
                     for s in latent.values()), 0.0)
        score = sum((per_image(s["fn"].log_prob(s["value"]), k, n, nesting) for s in latent.values()), 0.0)
        return {name: s["value"] for name, s in latent.items()}, log_q, score, n

    def log_p_at(self, program, fixed_z: dict, n: int, args, kwargs) -> torch.Tensor:
        """Σ of the program's log-densities per draw and image with its latents at ``fixed_z`` (no gradient
        through z): log p_θ(x, z) for the model, log q_φ(z | x) for the guide. Shape (draws, N)."""
        trace = poutine.trace(poutine.condition(self._particle_plate(program), data=fixed_z)).get_trace(*args, **kwargs)
        return self._log_density(trace, n)

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

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

