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

from vae_pyro.estimators.particles import ParticleBound, log_mean_exp

KINDS = ("miwae", "piwae", "ciwae")


def miwae(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """(1/M) Σ_m log (1/K) Σ_k w_{m,k} per image, for log_w of shape (M·K, N)."""
    return log_mean_exp(log_w.reshape(m, -1, log_w.shape[-1]), 1).mean(0)


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
            bound = self.beta * log_w.mean(0) + (1 - self.beta) * log_mean_exp(log_w)
            return bound.sum(), bound.detach().sum()
        if self.kind == "miwae":
            bound = miwae(log_w, self.m)
            return bound.sum(), bound.detach().sum()
        log_p = self.log_p_at(model, fixed_z, n, args, kwargs)
        log_w_theta = log_p - (log_p - log_w).detach()  # = log w in value; its gradient reaches θ alone
        surrogate = miwae(log_w, self.m) + log_mean_exp(log_w_theta) - miwae(log_w_theta, self.m)
        return surrogate.sum(), log_mean_exp(log_w.detach()).sum()
