"""The estimator registry: a name -> an objective over (vae, batch).

Every estimator returns the *negative* bound summed over the batch, as Pyro's ELBOs do,
and every one takes ``particles`` = L Monte-Carlo samples, vectorised.

| name            | KL term                       | reconstruction term |
|-----------------|-------------------------------|---------------------|
| `trace`         | Monte Carlo, log q − log p at z | reparameterised   |
| `meanfield`     | analytic (``kl_divergence``)  | reparameterised     |
| `hand`          | analytic, closed form by hand | reparameterised     |
| `jit-trace`     | as `trace`, compiled          |                     |
| `jit-meanfield` | as `meanfield`, compiled      |                     |
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pyro.infer as infer
import torch

from vae_pyro import hand
from vae_pyro.errors import VaeError

PYRO_ELBOS: dict[str, Callable[..., infer.ELBO]] = {
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "jit-trace": infer.JitTrace_ELBO,
    "jit-meanfield": infer.JitTraceMeanField_ELBO,
}
NAMES = (*PYRO_ELBOS, "hand")

# torch.jit.trace warns about every Python-level shape read in a Pyro model, and that it is
# deprecated; neither concerns a user of the jit-* estimators.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", message="`torch.jit.trace` is deprecated", category=FutureWarning)


@dataclass
class Estimator:
    """One named objective. ``elbo`` is the Pyro ELBO object, or None for the hand-derived loss."""

    name: str
    particles: int
    elbo: infer.ELBO | None

    def loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        """−(bound) summed over the batch, differentiable in the module's parameters."""
        if self.elbo is None:
            return hand.loss(vae, x, self.particles)
        return self.elbo.differentiable_loss(vae.model, vae.guide, x)


def make(name: str, particles: int = 1) -> Estimator:
    """Build estimator ``name`` (one of ``NAMES``) with L = ``particles`` samples per image."""
    if name not in NAMES:
        raise VaeError(f"unknown estimator {name!r}; choose one of {', '.join(NAMES)}")
    if particles < 1:
        raise VaeError(f"--particles must be a positive integer, got {particles}")
    if name == "hand":
        return Estimator(name, particles, None)
    elbo = PYRO_ELBOS[name](num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    return Estimator(name, particles, elbo)
