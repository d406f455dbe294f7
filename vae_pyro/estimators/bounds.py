"""The bounds the estimators optimise, written once as functions of the per-image log-weights
log w_d = log p_θ(x, z_d) − log q_φ(z_d | x) of D draws, shape (D, N) → (N,):

    elbo    (1/D) Σ_d log w_d                                        Kingma & Welling 2013
    iwae    log (1/D) Σ_d w_d                                        Burda, Grosse & Salakhutdinov 2016
    renyi   1/(1−α) · log (1/D) Σ_d w_d^(1−α)                        Li & Turner 2016 (α = 0: iwae)
    miwae   (1/M) Σ_m log (1/K) Σ_k w_{m,k},  D = M·K                 Rainforth et al. 2018
    ciwae   β · elbo + (1 − β) · iwae                                 Rainforth et al. 2018

They are what an estimator's value must equal in expectation (its record's ``reference``), and the
lab's conformance check computes them directly from the lab's own log-weights.
"""

import math

import torch


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) Σ_k exp(log_w_k) along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def elbo(log_w: torch.Tensor, **_) -> torch.Tensor:
    return log_w.mean(0)


def iwae(log_w: torch.Tensor, **_) -> torch.Tensor:
    return log_mean_exp(log_w)


def renyi(log_w: torch.Tensor, alpha: float, **_) -> torch.Tensor:
    return log_mean_exp((1 - alpha) * log_w) / (1 - alpha)


def miwae(log_w: torch.Tensor, iwae_m: int, **_) -> torch.Tensor:
    return log_mean_exp(log_w.reshape(iwae_m, -1, log_w.shape[-1]), 1).mean(0)


def ciwae(log_w: torch.Tensor, ciwae_beta: float, **_) -> torch.Tensor:
    return ciwae_beta * elbo(log_w) + (1 - ciwae_beta) * iwae(log_w)


BOUNDS = {"elbo": elbo, "iwae": iwae, "renyi": renyi, "miwae": miwae, "ciwae": ciwae}
