"""Do the estimators compute what they claim? ``vae-pyro check`` on a real batch, for any model of the contract.

Exact checks (float64):
(a) with a ``hand_loss``: it and ``meanfield`` on the very ε Pyro drew give equal losses and
    gradients: ε = (z − μ) / σ of every Normal latent site of the guide trace.
(b) the closed-form Gaussian KL of ``hand.py`` equals ``torch.distributions.kl_divergence``.
Then the conformance rows (``conformance.py``): every estimator that applies to the model against the
reference its record states, value and gradients, within 4 standard errors.
"""

import copy
from dataclasses import dataclass

import pandas as pd
import torch
from pyro import infer, poutine
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from vae_pyro.estimators import batch
from vae_pyro.lab import traces
from vae_pyro.lab.conformance import Conformance, conformance, print_conformance
from vae_pyro.models import contract, hand


def _normal(fn) -> Normal:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def pyro_loss_and_eps(elbo: infer.ELBO, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None):
    """Pyro's loss on batch ``x`` and the ε it drew: ε = (z − μ) / σ per Normal latent site, shape (L, batch, ...);
    a tensor for a guide with one latent site, else a dict by site name."""
    guide = poutine.trace(module.guide)
    loss = elbo.differentiable_loss(module.model, guide, *batch(x, y))
    eps = {}
    for name, site in guide.trace.nodes.items():
        if contract.is_latent(site):
            normal = _normal(site["fn"])
            e = ((site["value"] - normal.loc) / normal.scale).detach()
            vectorized = any(f.name == "num_particles_vectorized" for f in site["cond_indep_stack"])
            eps[name] = e if vectorized else e.unsqueeze(0)
    return loss, next(iter(eps.values())) if len(eps) == 1 else eps


def same_eps_gap(module: nn.Module, x: torch.Tensor, particles: int = 1, y: torch.Tensor | None = None
                 ) -> tuple[float, float]:
    """(max |Δ loss| per image, max |Δ gradient| / max |gradient|) between meanfield and hand_loss on one ε."""
    nesting = traces.plate_nesting(module, x[:1], None if y is None else y[:1])
    elbo = infer.TraceMeanField_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=nesting)
    params = list(module.parameters())
    pyro_loss, eps = pyro_loss_and_eps(elbo, module, x, y)
    hand_loss = module.hand_loss(x, y, particles=particles, eps=eps)
    g_pyro = torch.autograd.grad(pyro_loss, params, allow_unused=True)
    g_hand = torch.autograd.grad(hand_loss, params, allow_unused=True)
    zero = torch.zeros(())  # a parameter one loss does not use has no gradient there
    pairs = [(zero if a is None else a, zero if b is None else b) for a, b in zip(g_pyro, g_hand)]
    grad_gap = max((a - b).abs().max().item() for a, b in pairs)
    grad_scale = max(a.abs().max().item() for a, _ in pairs)
    return (pyro_loss - hand_loss).abs().item() / len(x), grad_gap / grad_scale


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
    note: str = ""  # why a check does not apply to this model


def exact_checks(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> list[Check]:
    """(a) and (b) on ``module`` and batch ``x`` (float64 copies); what does not apply to the model says why."""
    module64, x64 = copy.deepcopy(module).double(), x.double()
    out = []
    if callable(getattr(module64, "hand_loss", None)):
        for particles in (1, 5):
            loss_gap, grad_gap = same_eps_gap(module64, x64, particles, y)
            out.append(Check(f"(a) hand vs meanfield, same eps, L={particles}: |d loss| per image",
                             f"{loss_gap:.1e}", "< 1e-9", loss_gap < 1e-9))
            out.append(Check(f"(a) hand vs meanfield, same eps, L={particles}: |d grad| / |grad|",
                             f"{grad_gap:.1e}", "< 1e-9", grad_gap < 1e-9))
    else:
        out.append(Check("(a) hand vs meanfield: not applicable", "-", "-", True,
                         f"{type(module).__name__} has no hand_loss"))
    gen = torch.Generator().manual_seed(0)
    loc = 3 * torch.randn(1000, 20, generator=gen, dtype=torch.float64)
    scale = torch.exp(torch.randn(1000, 20, generator=gen, dtype=torch.float64))
    gap = kl_gap(loc, scale)
    out.append(Check("(b) closed-form KL vs kl_divergence: max |d|", f"{gap:.1e}", "< 1e-9", gap < 1e-9))
    return out


@dataclass
class CheckReport:
    """What ``vae-pyro check`` found: the exact checks and the conformance of every estimator."""

    exact: list[Check]
    conformance: Conformance

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.exact) and self.conformance.passed

    @property
    def table(self) -> pd.DataFrame:
        """The conformance rows: estimator, reference, quantity, difference, se, z, ok."""
        return self.conformance.table

    @property
    def exact_table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(c) for c in self.exact])

    def __repr__(self) -> str:
        return f"CheckReport({'passed' if self.passed else 'FAILED'}: {len(self.exact)} exact checks, {self.conformance})"

    def _repr_html_(self) -> str:
        return self.exact_table.to_html(index=False) + self.table.to_html(index=False)


def run(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, names: list[str] | None = None,
        draws: int = 100, seed: int = 0, progress: bool = False, **options) -> CheckReport:
    """The exact checks, then every estimator in ``names`` (default: all that apply) against its reference."""
    with traces.seeded_rng(seed, x.device):
        exact = exact_checks(module, x, y)
    return CheckReport(exact, conformance(module, x, y, names, draws, seed, progress, **options))


def print_report(report: CheckReport) -> None:
    print(f"{'check':62}{'value':>22}{'tolerance':>18}  result")
    for c in report.exact:
        print(f"{c.name:62}{c.value:>22}{c.tolerance:>18}  {'ok' if c.passed else 'FAILED'}")
        if c.note:
            print(f"    {c.note}")
    print()
    print_conformance(report.conformance)
