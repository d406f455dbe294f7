"""Rainforth et al. 2018 ("Tighter variational bounds are not necessarily better"): bounds that
trade the IWAE bound's tightness for the guide's gradient signal. With log-weights log w_{m,k} of
M groups of K reparameterised draws each,

    miwae (M, K)  (1/M) Σ_m log (1/K) Σ_k w_{m,k}                  M = 1: IWAE_K;  K = 1: the ELBO
    ciwae (β)     β · (1/K) Σ_k log w_k + (1 − β) · log (1/K) Σ_k w_k    β = 1: the ELBO;  β = 0: IWAE_K
    piwae (M, K)  θ follows IWAE_{M·K} (all draws as one IWAE bound), φ follows MIWAE_{M,K}

For piwae the surrogate is MIWAE(log w) + IWAE(log w°) − MIWAE(log w°), where log w° = log p_θ(x, ⊥z)
− ⊥log q: the last two terms reach θ alone, swapping its MIWAE gradient for the IWAE one. Its value
is the IWAE_{M·K} bound, the model's objective.
"""

import torch

from vae_pyro.estimators.bounds import ciwae, log_mean_exp, miwae
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import RSAMPLE, EstimatorSpec, expects

KINDS = ("miwae", "piwae", "ciwae")


class MultiSampleELBO(ParticleBound):
    """``kind`` one of miwae, piwae (M groups of K draws: ``num_particles`` = K, ``m`` = M) or ciwae
    (K draws, weight ``beta``); see the module's docstring for the bounds."""

    def __init__(self, kind: str, num_particles: int = 1, m: int = 1, beta: float = 0.5, max_plate_nesting: int = 1,
                 **kwargs):
        if kind not in KINDS:
            raise ValueError(f"unknown bound {kind!r}; choose one of {', '.join(KINDS)}")
        draws = num_particles * m if kind in ("miwae", "piwae") else num_particles
        super().__init__(num_particles=draws, max_plate_nesting=max_plate_nesting, **kwargs)
        self.kind, self.m, self.beta = kind, m, beta

    def _surrogate_and_bound(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        log_w, fixed_z, n = self.log_weights(model, guide, args, kwargs)
        if self.kind == "ciwae":
            bound = ciwae(log_w, ciwae_beta=self.beta)
            return bound.sum(), bound.detach().sum()
        if self.kind == "miwae":
            bound = miwae(log_w, iwae_m=self.m)
            return bound.sum(), bound.detach().sum()
        log_p = self.log_p_at(model, fixed_z, n, args, kwargs)
        log_w_theta = log_p - (log_p - log_w).detach()  # = log w in value; its gradient reaches θ alone
        surrogate = miwae(log_w, iwae_m=self.m) + log_mean_exp(log_w_theta) - miwae(log_w_theta, iwae_m=self.m)
        return surrogate.sum(), log_mean_exp(log_w.detach()).sum()


PAPER = "Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018"
SPECS = (
    EstimatorSpec("miwae", lambda iwae_m, **kw: MultiSampleELBO("miwae", m=iwae_m, **kw), "MIWAE bound: the "
                  "mean of --iwae-m IWAE bounds of K draws", PAPER, expects("miwae"), samples="K",
                  options={"iwae_m": 4}, needs=RSAMPLE),
    EstimatorSpec("piwae", lambda iwae_m, **kw: MultiSampleELBO("piwae", m=iwae_m, **kw), "IWAE bound of M·K "
                  "draws for θ, the MIWAE bound for φ", PAPER, expects("iwae", guide="miwae"), samples="K",
                  options={"iwae_m": 4}, needs=RSAMPLE),
    EstimatorSpec("ciwae", lambda ciwae_beta, **kw: MultiSampleELBO("ciwae", beta=ciwae_beta, **kw), "CIWAE: "
                  "β·ELBO + (1 − β)·IWAE over K draws, β = --ciwae-beta", PAPER, expects("ciwae"), samples="K",
                  options={"ciwae_beta": 0.5}, needs=RSAMPLE),
)
