"""Evaluation: the test ELBO with its reconstruction / KL split, the importance-sampled log p(x),
active units; for the autoencoder, its reconstruction term alone."""

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae_pyro import hand
from vae_pyro.data import seeded
from vae_pyro.experiment import EVAL_SEED, load_data, resolve_device, restore
from vae_pyro.models import AE
from vae_pyro.runs import write_json

LABELS = torch.Tensor | None


def _eps(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)


def _chunks(x: torch.Tensor, y: LABELS, size: int):
    return zip(x.split(size), y.split(size) if y is not None else [None] * math.ceil(len(x) / size))


@torch.no_grad()
def metrics(model, x: torch.Tensor, y: LABELS = None, seed: int = EVAL_SEED, batch: int = 1000) -> dict[str, float]:
    """Per-image means (nats). A VAE: ELBO, reconstruction and KL, with the closed-form KL and one
    reparameterised sample. The autoencoder: its reconstruction log p_θ(x | f_φ(x)) alone.

    The noise comes from its own generator, so evaluating never disturbs training's RNG.
    """
    if isinstance(model, AE):
        recon = sum(hand.log_likelihood(model.likelihood, xb, model.decode(model.encode(xb)[0])).sum().item()
                    for xb in x.split(batch))
        return {"recon": recon / len(x)}
    gen = seeded(seed, device=x.device)
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    for xb, yb in _chunks(x, y, batch):
        eps = _eps((len(xb), model.z_dim), xb, gen)
        sums += torch.stack([t.sum().double() for t in hand.elbo_terms(model, xb, yb, eps=eps)])
    elbo, recon, kl = (sums / len(x)).tolist()
    return {"elbo": elbo, "recon": recon, "kl": kl}


@torch.no_grad()
def log_weights(vae, x: torch.Tensor, y: LABELS, k: int, gen: torch.Generator, rows: int = 32768) -> torch.Tensor:
    """log w_k = log p_θ(x | z_k) + log p(z_k) − log q_φ(z_k | x), z_k ~ q_φ(z | x); shape (K, batch).

    Drawn in chunks of about ``rows`` decoder passes, so memory stays bounded for any K.
    """
    loc, scale = vae.encode(x, y)
    prior_loc, prior_scale = vae.prior(x, y)
    chunk = max(1, rows // len(x))
    out = []
    for start in range(0, k, chunk):
        z = hand.reparameterise(loc, scale, _eps((min(chunk, k - start), *loc.shape), x, gen))
        log_lik = hand.log_likelihood(vae.likelihood, x, vae.decode(z, y))
        out.append(log_lik + hand.normal_log_prob(z, prior_loc, prior_scale) - hand.normal_log_prob(z, loc, scale))
    return torch.cat(out)


@torch.no_grad()
def is_log_likelihood(vae, x: torch.Tensor, y: LABELS = None, k: int = 1000, seed: int = EVAL_SEED, batch: int = 100,
                      progress: bool = False) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k | x), per image (Burda et al. 2016, eq. 8).

    A lower bound in expectation that tightens as K grows; K = 1 is the ELBO with a sampled KL.
    For a CVAE it is log p(x | y).
    """
    gen = seeded(seed, device=x.device)
    chunks = tqdm(list(_chunks(x, y, batch)), desc=f"log p(x), K={k}", unit="batch", disable=not progress)
    return torch.cat([torch.logsumexp(log_weights(vae, xb, yb, k, gen), 0) - math.log(k) for xb, yb in chunks])


@torch.no_grad()
def active_units(model, x: torch.Tensor, y: LABELS = None, threshold: float = 0.01) -> int:
    """Latent dimensions u with Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016, sec. 5.2)."""
    loc = torch.cat([model.encode(xb, yb)[0] for xb, yb in _chunks(x, y, 1000)])
    return int((loc.var(0) > threshold).sum())


def evaluate_run(run_dir: str | Path, k: int = 1000, device: str = "auto", progress: bool = False) -> dict[str, float]:
    """A run's last checkpoint on the test set: its metrics, the K-sample IS log-likelihood and the
    active units (a VAE), the reconstruction from the code z = μ(x) (every model).

    Written to ``evaluation.json`` in the run folder and returned.
    """
    dev = resolve_device(device)
    cfg, model, ckpt = restore(run_dir, dev)
    data = load_data(cfg, dev)
    y = data.test_y if model.conditional else None
    result: dict = {"epochs": ckpt["epoch"], **{f"test_{k_}": v for k_, v in metrics(model, data.test_x, y).items()}}
    if isinstance(model, AE):  # its reconstruction is already from the code
        result["test_recon_at_code"] = result["test_recon"]
    else:
        with torch.no_grad():
            code = model.encode(data.test_x, y)[0]
            result["test_recon_at_code"] = hand.log_likelihood(cfg.likelihood, data.test_x,
                                                               model.decode(code, y)).mean().item()
        result[f"test_is_log_likelihood_k{k}"] = is_log_likelihood(model, data.test_x, y, k, progress=progress).mean().item()
    result["active_units"] = active_units(model, data.test_x, y)
    write_json(Path(run_dir) / "evaluation.json", result)
    return result
