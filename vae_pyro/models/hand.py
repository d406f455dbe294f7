"""The ELBO derived by hand, in plain PyTorch: no Pyro anywhere in this file.

    log p_θ(x) ≥ ELBO = E_q[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z))          (Jensen)

with q_φ(z|x) = N(μ, diag σ²) and p(z) = N(0, I). The KL is in closed form; the
reconstruction term is a reparameterised Monte-Carlo average over L samples
z_l = μ + σ ⊙ ε_l, ε_l ~ N(0, I) (Kingma & Welling 2013, eq. 10).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(
    loc: torch.Tensor, scale: torch.Tensor, prior_loc: torch.Tensor | None = None, prior_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ (tr Σ + μᵀμ − k − log det Σ), over the last dimension.

    With a prior N(m, diag s²) (the CVAE's p(z|y)): ½ Σ_j (σ_j²/s_j² + (μ_j − m_j)²/s_j² − 1 − log σ_j²/s_j²).
    """
    if prior_loc is None:
        var = scale**2
        return 0.5 * (var + loc**2 - 1 - torch.log(var)).sum(-1)
    ratio = (scale / prior_scale) ** 2
    return 0.5 * (ratio + ((loc - prior_loc) / prior_scale) ** 2 - 1 - torch.log(ratio)).sum(-1)


def reparameterise(loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ⊙ ε with ε ~ N(0, I): a sample of q that is differentiable in μ and σ."""
    return loc + scale * eps


def normal_log_prob(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(v | μ, diag σ²) = Σ_j −½((v_j − μ_j)/σ_j)² − log σ_j − ½ log 2π."""
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bern(x | sigmoid(l)) = Σ_j x_j l_j − log(1 + exp l_j).

    Without gradients, log(1 + exp l) = max(l, 0) + log(1 + exp(−|l|)) in place: on the CPU torch's
    softplus, log1p and log-sigmoid kernels are not vectorised, and this form takes about a third of
    their time (the evaluation's hot spot; ``experiments/bench.py``). ``log(1 + u)`` for ``log1p(u)``
    loses only the u's below float32's epsilon beside 1: under 1e-7 nats a pixel.
    """
    if torch.is_grad_enabled() and (x.requires_grad or logits.requires_grad):
        return (x * logits - F.softplus(logits)).sum(-1)
    softplus = logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp_min(0))
    return (x * logits).sub_(softplus).sum(-1)


def continuous_bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log CB(x | λ) = log Bern(x | λ) + log C(λ), λ = sigmoid(l) (Loaiza-Ganem & Cunningham 2019).

    The normaliser C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) is, in logits, l / tanh(l / 2): with
    1 − 2λ = −tanh(l/2), artanh(1 − 2λ) = −l/2. Near l = 0 (λ = ½) it is 2 (1 + l²/12 + O(l⁴)).
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)  # keeps the unused branch finite
    log_norm = torch.where(small, math.log(2) + logits**2 / 12, torch.log(safe / torch.tanh(safe / 2)))
    return bernoulli_log_prob(x, logits) + log_norm.sum(-1)


class ELBOTerms(NamedTuple):
    """Per-image terms, each of shape (batch,): elbo = recon − kl."""

    elbo: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


def elbo_terms(
    vae, x: torch.Tensor, y: torch.Tensor | None = None, particles: int = 1, eps: torch.Tensor | None = None
) -> ELBOTerms:
    """ELBO = (1/L) Σ_l log p_θ(x | μ + σ ⊙ ε_l) − KL(q ‖ p), per image.

    ``eps`` of shape (L, batch, k) (or (batch, k) for L = 1) replaces the draw of ε, so the
    estimate can be made on the very sample another estimator used. ``y``: labels, for a CVAE.
    """
    loc, scale = vae.encode(x, y)
    if eps is None:
        eps = torch.randn((particles, *loc.shape), dtype=loc.dtype, device=loc.device)
    elif eps.dim() == loc.dim():
        eps = eps.unsqueeze(0)
    z = reparameterise(loc, scale, eps)
    recon = vae.log_likelihood(x, vae.decode(z, y)).mean(0)
    kl = gaussian_kl(loc, scale) if vae.prior_net is None else gaussian_kl(loc, scale, *vae.prior(x, y))
    return ELBOTerms(recon - kl, recon, kl)


def loss(
    vae, x: torch.Tensor, y: torch.Tensor | None = None, particles: int = 1, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """The training loss: −Σ_i (recon_i − β KL_i), summed over the batch like Pyro's ELBOs."""
    terms = elbo_terms(vae, x, y, particles, eps)
    return -(terms.recon - vae.beta * terms.kl).sum()


def log_weights(vae, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p_θ(x | z_k) + log p(z_k) − log q_φ(z_k | x) with z_k = μ + σ ⊙ ε_k, for ``eps`` of
    shape (K, batch, k); shape (K, batch). log (1/K) Σ_k w_k is the IWAE bound, and the importance-
    sampled estimate of log p(x) (Burda et al. 2016, eq. 8)."""
    loc, scale = vae.encode(x, y)
    z = reparameterise(loc, scale, eps)
    log_prior = normal_log_prob(z, *vae.prior(x, y))
    return vae.log_likelihood(x, vae.decode(z, y)) + log_prior - normal_log_prob(z, loc, scale)
