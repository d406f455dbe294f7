"""Does the hand-derived ELBO compute what Pyro's estimators compute? Three checks on real batches.

(a) ``hand`` and ``meanfield`` on the very ε Pyro drew: equal losses and gradients (float64).
(b) ``trace`` − ``hand`` on shared ε is the Monte-Carlo KL error, zero in expectation:
    its mean over many draws lies within 4 standard errors of 0.
(c) the closed-form KL equals ``torch.distributions.kl_divergence``.
"""

import copy
from dataclasses import dataclass

import pyro.infer as infer
import torch
from pyro import poutine
from torch.distributions import Independent, Normal, kl_divergence

from vae_pyro import data, hand
from vae_pyro.config import Config
from vae_pyro.estimators import batch
from vae_pyro.experiment import EVAL_SEED, build_vae

Z_SCORE = 4.0  # tolerance of a statistical check, in standard errors


def pyro_loss_and_eps(elbo: infer.ELBO, vae, x: torch.Tensor, y: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pyro's loss on batch ``x`` (labels ``y`` for a CVAE) and the ε it drew: ε = (z − μ) / σ, shape (L, batch, k)."""
    guide = poutine.trace(vae.guide)
    loss = elbo.differentiable_loss(vae.model, guide, *batch(x, y))
    z = guide.trace.nodes["z"]["value"].detach()
    loc, scale = (t.detach() for t in vae.encode(x, y))
    eps = (z - loc) / scale
    return loss, eps if eps.dim() == 3 else eps.unsqueeze(0)


def same_eps_gap(vae, x: torch.Tensor, particles: int = 1, y: torch.Tensor | None = None) -> tuple[float, float]:
    """(max |Δ loss| per image, max |Δ gradient| / max |gradient|) between meanfield and hand on one ε."""
    elbo = infer.TraceMeanField_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    params = list(vae.parameters())
    pyro_loss, eps = pyro_loss_and_eps(elbo, vae, x, y)
    hand_loss = hand.loss(vae, x, y, particles=particles, eps=eps)
    g_pyro = torch.autograd.grad(pyro_loss, params)
    g_hand = torch.autograd.grad(hand_loss, params)
    loss_gap = (pyro_loss - hand_loss).abs().item() / len(x)
    grad_gap = max((a - b).abs().max().item() for a, b in zip(g_pyro, g_hand))
    grad_scale = max(a.abs().max().item() for a in g_pyro)
    return loss_gap, grad_gap / grad_scale


def trace_minus_hand(vae, x: torch.Tensor, draws: int) -> torch.Tensor:
    """Per draw, (trace loss − hand loss) per image on shared ε: Σ_i [log q − log p](z_i) − KL_i, over batch."""
    elbo = infer.Trace_ELBO(max_plate_nesting=1)
    out = torch.empty(draws, dtype=torch.float64)
    with torch.no_grad():
        for d in range(draws):
            loss, eps = pyro_loss_and_eps(elbo, vae, x)
            out[d] = (loss - hand.loss(vae, x, eps=eps)).item() / len(x)
    return out


def kl_gap(loc: torch.Tensor, scale: torch.Tensor) -> float:
    """max |closed-form KL − torch.distributions.kl_divergence| against N(0, I)."""
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(scale)), 1)
    return (hand.gaussian_kl(loc, scale) - kl_divergence(q, p)).abs().max().item()


@dataclass
class Check:
    name: str
    value: str
    tolerance: str
    passed: bool


def run_checks(draws: int = 2000, seed: int = 0, batch: int = 64, vae=None, verbose: bool = True) -> bool:
    """Run (a)-(c) on a binarised batch of the bundled MNIST digits; print a table; True if all pass.

    ``vae`` defaults to a freshly initialised module of the default configuration.
    """
    ds = data.load("mnist5k")
    x = data.binarise(ds.test_x[:batch], data.seeded(EVAL_SEED))
    vae = vae or build_vae(Config(seed=seed), ds.x_dim, torch.device("cpu"))
    vae64, x64 = copy.deepcopy(vae).double(), x.double()
    torch.manual_seed(seed)

    checks = []
    for particles in (1, 5):
        loss_gap, grad_gap = same_eps_gap(vae64, x64, particles)
        checks.append(Check(f"(a) hand vs meanfield, same eps, L={particles}: |d loss| per image",
                            f"{loss_gap:.1e}", "< 1e-9", loss_gap < 1e-9))
        checks.append(Check(f"(a) hand vs meanfield, same eps, L={particles}: |d grad| / |grad|",
                            f"{grad_gap:.1e}", "< 1e-9", grad_gap < 1e-9))
    diff = trace_minus_hand(vae64, x64, draws)
    mean, se = diff.mean().item(), diff.std().item() / draws**0.5
    checks.append(Check(f"(b) trace - hand over {draws} draws: mean +- se per image",
                        f"{mean:+.4f} +- {se:.4f}", f"|mean| < {Z_SCORE:g} se", abs(mean) < Z_SCORE * se))
    with torch.no_grad():
        loc, scale = vae64.encode(x64)
    gen = torch.Generator().manual_seed(seed)
    rand_loc = 3 * torch.randn(1000, 20, generator=gen, dtype=torch.float64)
    rand_scale = torch.exp(torch.randn(1000, 20, generator=gen, dtype=torch.float64))
    gap = max(kl_gap(loc, scale), kl_gap(rand_loc, rand_scale))
    checks.append(Check("(c) closed-form KL vs kl_divergence: max |d|", f"{gap:.1e}", "< 1e-9", gap < 1e-9))

    if verbose:
        print(f"{'check':62}{'value':>22}{'tolerance':>18}  result")
        for c in checks:
            print(f"{c.name:62}{c.value:>22}{c.tolerance:>18}  {'ok' if c.passed else 'FAILED'}")
    return all(c.passed for c in checks)
