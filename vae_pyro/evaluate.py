"""Evaluation: the test ELBO with its reconstruction / KL split, and the importance-sampled log p(x)."""

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae_pyro import hand
from vae_pyro.data import seeded
from vae_pyro.experiment import EVAL_SEED, load_data, resolve_device, restore
from vae_pyro.runs import write_json


def _eps(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)


@torch.no_grad()
def elbo(vae, x: torch.Tensor, seed: int = EVAL_SEED, batch: int = 1000) -> dict[str, float]:
    """Per-image means (nats) of ELBO, reconstruction and KL: closed-form KL, one reparameterised sample.

    The noise comes from its own generator, so evaluating never disturbs training's RNG.
    """
    gen = seeded(seed, device=x.device)
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    for xb in x.split(batch):
        eps = _eps((len(xb), vae.z_dim), xb, gen)
        sums += torch.stack([t.sum().double() for t in hand.elbo_terms(vae, xb, eps=eps)])
    elbo_, recon, kl = (sums / len(x)).tolist()
    return {"elbo": elbo_, "recon": recon, "kl": kl}


@torch.no_grad()
def log_weights(vae, x: torch.Tensor, k: int, gen: torch.Generator, rows: int = 32768) -> torch.Tensor:
    """log w_k = log p_θ(x | z_k) + log p(z_k) − log q_φ(z_k | x), z_k ~ q_φ(z | x); shape (K, batch).

    Drawn in chunks of about ``rows`` decoder passes, so memory stays bounded for any K.
    """
    loc, scale = vae.encoder(x)
    chunk = max(1, rows // len(x))
    out = []
    for start in range(0, k, chunk):
        z = hand.reparameterise(loc, scale, _eps((min(chunk, k - start), *loc.shape), x, gen))
        log_lik = hand.log_likelihood(vae.likelihood, x, vae.decoder(z))
        log_prior = hand.normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
        out.append(log_lik + log_prior - hand.normal_log_prob(z, loc, scale))
    return torch.cat(out)


@torch.no_grad()
def is_log_likelihood(
    vae, x: torch.Tensor, k: int = 1000, seed: int = EVAL_SEED, batch: int = 100, progress: bool = False
) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k | x), per image (Burda et al. 2016, eq. 8).

    A lower bound in expectation that tightens as K grows; K = 1 is the ELBO with a sampled KL.
    """
    gen = seeded(seed, device=x.device)
    chunks = tqdm(x.split(batch), desc=f"log p(x), K={k}", unit="batch", disable=not progress)
    return torch.cat([torch.logsumexp(log_weights(vae, xb, k, gen), 0) - math.log(k) for xb in chunks])


@torch.no_grad()
def active_units(vae, x: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions u with Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016, sec. 5.2)."""
    loc = torch.cat([vae.encoder(xb)[0] for xb in x.split(1000)])
    return int((loc.var(0) > threshold).sum())


def evaluate_run(run_dir: str | Path, k: int = 1000, device: str = "auto", progress: bool = False) -> dict[str, float]:
    """Test ELBO, its split, the K-sample IS log-likelihood and the active units of a run's last checkpoint.

    Written to ``evaluation.json`` in the run folder and returned.
    """
    dev = resolve_device(device)
    cfg, vae, ckpt = restore(run_dir, dev)
    data = load_data(cfg, dev)
    terms = elbo(vae, data.test_x)
    result = {
        "epochs": ckpt["epoch"],
        "test_elbo": terms["elbo"],
        "test_recon": terms["recon"],
        "test_kl": terms["kl"],
        f"test_is_log_likelihood_k{k}": is_log_likelihood(vae, data.test_x, k, progress=progress).mean().item(),
        "active_units": active_units(vae, data.test_x),
    }
    write_json(Path(run_dir) / "evaluation.json", result)
    return result
