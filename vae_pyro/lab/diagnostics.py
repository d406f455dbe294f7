"""Gradient diagnostics: per-parameter variance and signal-to-noise ratio of each estimator.

At fixed parameters and on a fixed batch, draw S gradient estimates g_1..g_S and report, for
the guide's parameters (φ) and the model's (θ) separately (found from the traces: the
parameters each program registers),

    variance = mean_j Var[g_j]          SNR = mean_j |E g_j| / std g_j

(the SNR as in Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").
"""

import copy
import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from vae_pyro.estimators import Estimator
from vae_pyro.lab import traces


@dataclass
class GradStats:
    estimator: str
    group: str  # "guide" (φ) | "model" (θ)
    variance: float
    snr: float
    draws: int

    def to_dict(self) -> dict:
        return asdict(self)


def _flat_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                      for p in params])


def gradient_stats(
    estimator: Estimator, vae, x: torch.Tensor, draws: int = 100, seed: int = 0, warmup: int = 0,
    progress: bool = False, label: str | None = None, y: torch.Tensor | None = None,
) -> list[GradStats]:
    """Variance and SNR of ``draws`` gradient estimates at the module's current parameters.

    ``warmup`` draws come first and are discarded (they let `score`'s decaying baseline settle).
    Moments are accumulated in float64, so memory is two vectors per group whatever S is. The param
    store is left as it is: clear it before a new estimator, then load what that estimator keeps there.
    """
    torch.manual_seed(seed)
    groups = {g: ps for g, ps in traces.parameter_groups(vae, x, y).items() if ps}
    size = {g: sum(p.numel() for p in ps) for g, ps in groups.items()}
    sums = {g: torch.zeros(2, n, dtype=torch.float64, device=x.device) for g, n in size.items()}  # Σg, Σg²
    for i in tqdm(range(warmup + draws), desc=f"gradients {label or estimator.name}", disable=not progress, leave=False):
        vae.zero_grad(set_to_none=True)
        estimator.backward(vae, x, y)
        if i < warmup:
            continue
        for g, params in groups.items():
            grad = _flat_grads(params).double()
            sums[g] += torch.stack([grad, grad**2])
    vae.zero_grad(set_to_none=True)
    out = []
    for g, (s1, s2) in sums.items():
        mean = s1 / draws
        var = (s2 / draws - mean**2).clamp_min(0) * draws / (draws - 1)
        varying = var > 0
        snr = (mean[varying].abs() / var[varying].sqrt()).mean().item()
        out.append(GradStats(label or estimator.name, g, var.mean().item(), snr, draws))
    return out


def loss_draws(estimator: Estimator, vae, x: torch.Tensor, draws: int = 500, seed: int = 0,
               y: torch.Tensor | None = None) -> torch.Tensor:
    """``draws`` values of the estimator's loss per image at fixed parameters (no gradients)."""
    torch.manual_seed(seed)
    return torch.tensor([estimator.value(vae, x, y) / len(x) for _ in range(draws)], dtype=torch.float64)


def guide_log_variance(estimator: Estimator, vae, x: torch.Tensor, y: torch.Tensor | None = None, draws: int = 20,
                       seed: int = 0) -> float:
    """log of the guide gradient's variance (``gradient_stats``) at the current weights, measured during
    training without disturbing it: the RNG stream, the estimator's running state (NVIL's averages,
    score's baselines) and every gradient are left as they were."""
    kept = copy.deepcopy(estimator.state_dict())
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        stats = gradient_stats(estimator, vae, x, draws=draws, seed=seed, y=y)
    estimator.load_state_dict(kept)
    if estimator.baseline_net is not None:
        estimator.baseline_net.zero_grad(set_to_none=True)
    return math.log(next(s.variance for s in stats if s.group == "guide"))
