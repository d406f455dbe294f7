"""Evaluation of any model that keeps the contract, from traces: the test ELBO with its reconstruction
/ KL split (S draws per image, with its standard error), the importance-sampled log p(x), the
reconstruction at the guide's mean, active units of every continuous latent site."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from vae_pyro.estimators import discrete
from vae_pyro.estimators.bounds import log_mean_exp
from vae_pyro.lab import compiling, traces
from vae_pyro.lab.experiment import EVAL_SEED, Data, labels, restore_run
from vae_pyro.lab.runs import EVALUATION, write_json

LABELS = torch.Tensor | None


def _chunks(x: torch.Tensor, y: LABELS, size: int):
    return zip(x.split(size), y.split(size) if y is not None else [None] * math.ceil(len(x) / size))


@torch.no_grad()
def elbo_terms(module: nn.Module, x: torch.Tensor, y: LABELS = None, samples: int = 1, seed: int = EVAL_SEED,
               batch: int = 1000) -> traces.LogWeights:
    """Per image, the mean over ``samples`` draws of the reconstruction and KL terms: each (N,)."""
    nesting = traces.plate_nesting(module, x[:1], None if y is None else y[:1])
    recon, kl = [], []
    with traces.seeded_rng(seed, x.device):
        for xb, yb in _chunks(x, y, max(1, batch // samples)):
            terms = traces.log_weights(module, xb, yb, samples, nesting)
            recon.append(terms.recon.double().mean(0))
            kl.append(terms.kl.double().mean(0))
    return traces.LogWeights(torch.cat(recon), torch.cat(kl))


def metrics(module: nn.Module, x: torch.Tensor, y: LABELS = None, samples: int = 1, seed: int = EVAL_SEED
            ) -> dict[str, float]:
    """Per-image means (nats): ELBO = recon − KL, each estimated with ``samples`` draws per image,
    and the standard error of the ELBO across images."""
    terms = elbo_terms(module, x, y, samples, seed)
    elbo = terms.log_w
    return {"elbo": elbo.mean().item(), "recon": terms.recon.mean().item(), "kl": terms.kl.mean().item(),
            "elbo_se": (elbo.std() / math.sqrt(len(elbo))).item()}


@torch.no_grad()
def is_log_likelihood(module: nn.Module, x: torch.Tensor, y: LABELS = None, k: int = 1000, seed: int = EVAL_SEED,
                      batch: int = 100, rows: int = 2048, progress: bool = False) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k | x), z_k ~ q, per image (Burda et al. 2016, eq. 8).

    A lower bound in expectation that tightens as K grows; K = 1 is the ELBO. For a conditional
    model it is log p(x | y). Draws are vectorised by a particle plate, about ``rows`` (draws ×
    images) at a time, so memory stays bounded for any K. 2,048 rows of 784 pixels (6 MB a tensor) are
    the fastest on the CPU here: the chunk's buffers stay in the allocator's heap and in cache, where at
    4,096 glibc hands them back to the OS and every chunk page-faults them in afresh (a third slower;
    ``experiments/bench.py`` times 1,024 … 32,768).
    """
    nesting = traces.plate_nesting(module, x[:1], None if y is None else y[:1])
    out = []
    with traces.seeded_rng(seed, x.device):
        chunks = tqdm(list(_chunks(x, y, batch)), desc=f"log p(x), K={k}", unit="batch", disable=not progress)
        for xb, yb in chunks:
            step = max(1, rows // len(xb))
            log_w = torch.cat([traces.log_weights(module, xb, yb, min(step, k - start), nesting).log_w
                               for start in range(0, k, step)])
            out.append(log_mean_exp(log_w.double()))
    return torch.cat(out)


@torch.no_grad()
def active_units(module: nn.Module, x: torch.Tensor, y: LABELS = None, threshold: float = 0.01) -> int:
    """Units u of the guide's latent sites with Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016, sec. 5.2),
    counted over every site that has a mean. A Bernoulli unit's E_q[z_u | x] is its probability; a one-hot
    variable is one unit, its variance summed over its classes."""
    variances: dict[str, list[torch.Tensor]] = {}
    for xb, yb in _chunks(x, y, 1000):
        for name, site in traces.latent_sites(module, xb, yb).items():
            fn, site_kind = site["fn"], discrete.kind(site["fn"])
            if fn.support.is_discrete and site_kind is None:
                continue  # an index (a Categorical): no mean to vary
            variances.setdefault(name, []).append((fn.mean, site_kind))
    count = 0
    for chunks in variances.values():
        site_kind = chunks[0][1]
        means = torch.cat([m.reshape(len(m), -1, m.shape[-1]) if site_kind == "one-hot" else m.reshape(len(m), -1)
                           for m, _ in chunks])
        var = means.var(0)
        count += int(((var.sum(-1) if site_kind == "one-hot" else var) > threshold).sum())
    return count


@torch.no_grad()
def recon_at_mean(module: nn.Module, x: torch.Tensor, y: LABELS = None) -> float:
    """log p_θ(x | z) per image (mean over images) with every latent at its guide's mean."""
    return sum(traces.recon_at_mean(module, xb, yb).double().sum().item() for xb, yb in _chunks(x, y, 1000)) / len(x)


@torch.no_grad()
def cluster_accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, labels_y: LABELS = None) -> dict[str, float]:
    """For each discrete latent site with one value per image (a mixture component c): the accuracy of
    its most probable value under the guide, each value mapped to the label most frequent among the
    images it takes (cluster purity), against labels ``y``."""
    picks: dict[str, list[torch.Tensor]] = {}
    for xb, yb in _chunks(x, labels_y, 1000):
        for name, site in traces.latent_sites(module, xb, yb).items():
            probs = getattr(site["fn"], "probs", None)
            if site["fn"].support.is_discrete and probs is not None and site["fn"].event_shape == ():
                picks.setdefault(name, []).append(probs.argmax(-1))
    out = {}
    for name, chunks in picks.items():
        c = torch.cat(chunks)
        hits = sum(torch.bincount(y[c == v]).max().item() for v in c.unique())
        out[f"test_cluster_accuracy_{name}"] = hits / len(y)
    return out


@dataclass(frozen=True)
class LikelihoodKey:
    """Where the IS log-likelihood estimate at K samples, and its standard error, stand in an evaluation
    record (evaluation.json, a comparison's rows): the one place those names are made and read."""

    k: int

    PREFIX = "test_is_log_likelihood_k"

    @property
    def name(self) -> str:
        return f"{self.PREFIX}{self.k}"

    @property
    def se(self) -> str:
        return f"{self.name}_se"

    @classmethod
    def parse(cls, name: str) -> "LikelihoodKey | None":
        """The key whose estimate ``name`` is (not its se), or None."""
        digits = name.removeprefix(cls.PREFIX)
        return cls(int(digits)) if name.startswith(cls.PREFIX) and digits.isdigit() else None

    @classmethod
    def all_in(cls, record: dict) -> list["LikelihoodKey"]:
        """Every estimate in ``record``, by ascending K."""
        return sorted(filter(None, map(cls.parse, record)), key=lambda key: key.k)

    @classmethod
    def first_in(cls, record: dict) -> "LikelihoodKey":
        return cls.all_in(record)[0]


def likelihoods(module: nn.Module, data: Data, ks: tuple[int, ...], progress: bool = False) -> dict[str, float]:
    """The IS log-likelihood of ``data``'s test set at each K of ``ks``: its mean and se over the images."""
    x, y = data.test_x, labels(module, data.test_y)
    result = {}
    for k in ks:
        log_px = is_log_likelihood(module, x, y, k, progress=progress)
        key = LikelihoodKey(k)
        result[key.name] = log_px.mean().item()
        result[key.se] = (log_px.std() / math.sqrt(len(log_px))).item()
    return result


def evaluate(module: nn.Module, data: Data, k: int | tuple[int, ...] = 1000, samples: int = 10,
             progress: bool = False) -> dict:
    """The module on ``data``'s test set: ELBO (``samples`` draws per image) ± its standard error,
    reconstruction and KL, the IS log-likelihood at K = ``k`` (or at each of several), the reconstruction
    at the guide's mean, active units. A model with no latent site has no bound on log p(x): only its
    reconstruction."""
    x, y = data.test_x, labels(module, data.test_y)
    result = {f"test_{key}": v for key, v in metrics(module, x, y, samples).items()}
    result["elbo_samples"] = samples
    result["test_recon_at_mean"] = recon_at_mean(module, x, y)
    if traces.latent_sites(module, x[:1], None if y is None else y[:1]):
        result.update(likelihoods(module, data, (k,) if isinstance(k, int) else tuple(k), progress))
        result["active_units"] = active_units(module, x, y)
        result.update(cluster_accuracy(module, x, data.test_y, y))
    return result


def evaluate_run(run_dir: str | Path, k: int = 1000, device: str = "auto", progress: bool = False,
                 compile: bool = False) -> dict:
    """A run's last checkpoint on its test set (``evaluate``), written to ``evaluation.json`` and returned.
    The IS estimates of other K already there for the same epoch are kept beside this K's. ``compile``:
    its networks through ``torch.compile`` first (``lab.compiling``)."""
    run = restore_run(run_dir, device)
    if compile:
        compiling.compile_model(run.module)
    path = Path(run_dir) / EVALUATION
    saved = json.loads(path.read_text()) if path.exists() else {}
    kept = {name: saved[name] for key in LikelihoodKey.all_in(saved) for name in (key.name, key.se)} \
        if saved.get("epochs") == run.epochs else {}
    result = {"epochs": run.epochs, **kept, **evaluate(run.module, run.data, k, progress=progress)}
    write_json(path, result)
    return result
