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

import torch

from vae_pyro.estimators.bounds import log_mean_exp
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import RSAMPLE, EstimatorSpec, expects

BOUNDS = ("elbo", "iwae")
GUIDE_GRADIENTS = ("stl", "dreg")


class PathwiseELBO(ParticleBound):
    """A bound (``"elbo"`` or ``"iwae"``) with a path-derivative guide gradient (``"stl"`` or ``"dreg"``,
    the latter for the IWAE bound only); see the module's docstring for the equations.

    :param num_particles: K draws per data point (vectorised under a particle plate).
    :param max_plate_nesting: plates the model nests; the data plate must be at dim -1.
    """

    def __init__(self, bound: str = "elbo", guide_gradient: str = "stl", num_particles: int = 1,
                 max_plate_nesting: int = 1, **kwargs):
        if bound not in BOUNDS or guide_gradient not in GUIDE_GRADIENTS or (bound, guide_gradient) == ("elbo", "dreg"):
            raise ValueError(f"no estimator for bound {bound!r} with guide gradient {guide_gradient!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)
        self.bound, self.guide_gradient = bound, guide_gradient

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(the surrogate whose gradient is the estimator, the bound), each summed over the batch."""
        log_w, fixed_z, n = self.log_weights(model, guide, args, kwargs, detach_q=True)  # (K, N)
        if self.bound == "elbo":
            return log_w.mean(0).sum(), log_w.detach().mean(0).sum()
        bound = log_mean_exp(log_w.detach()).sum()
        w = torch.softmax(log_w.detach(), 0)
        if self.guide_gradient == "stl":
            return (w * log_w).sum(), bound
        log_p_fixed_z = self.log_p_at(model, fixed_z, n, args, kwargs)
        return (w**2 * log_w).sum() + ((w - w**2) * log_p_fixed_z).sum(), bound


SPECS = (
    EstimatorSpec("stl", lambda **kw: PathwiseELBO("elbo", "stl", **kw), "ELBO; sticking the landing: φ's "
                  "gradient through z's path only", "Roeder, Wu & Duvenaud 2017", expects("elbo"), needs=RSAMPLE),
    EstimatorSpec("iwae-stl", lambda **kw: PathwiseELBO("iwae", "stl", **kw), "IWAE bound of K draws; φ's "
                  "gradient through the paths only (biased for K > 1)", "Roeder et al. 2017; Tucker et al. 2018",
                  expects("iwae", guide=False), samples="K", needs=RSAMPLE),
    EstimatorSpec("iwae-dreg", lambda **kw: PathwiseELBO("iwae", "dreg", **kw), "IWAE bound of K draws; "
                  "doubly reparameterised φ gradient", "Tucker, Lawson, Gu & Maddison 2018", expects("iwae"),
                  samples="K", needs=RSAMPLE),
)
