"""Does each estimator compute what its record claims, on this model? The conformance check.

An estimator's record names its reference (``EstimatorSpec.reference``): the bound its value equals in
expectation, and the bound whose gradient its gradient equals in expectation, for the guide's
parameters φ and the model's θ separately. The reference is computed here, not by any estimator:
from the lab's own K-draw traces (``traces.particle_traces``), the per-image log-weights
log w_d = log p(x, z_d) − log q(z_d | x) (with the program's ``poutine.scale`` weights) and, for
latent sites without a reparameterised sample, the score-function surrogate

    S = Σ_n [ b_n(log w) + ⊥b_n(log w) · Σ_d log q(z_{d,n} | x_n) ],      ⊥: no gradient,

whose value is the bound b and whose gradient is an unbiased estimate of ∇ E[b] for any guide
(pathwise through reparameterised draws, score function elsewhere). Each of S paired draws (the same
seed for the estimator and the reference) gives the difference of the losses per image and of the
gradients projected onto a fixed random unit direction per parameter group; a row passes when the
mean difference lies within ``Z_SCORE`` standard errors of zero, plus float rounding.
"""

import copy
import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import pyro
import torch
from pyro import poutine
from torch import nn
from tqdm.auto import tqdm

from vae_pyro import estimators
from vae_pyro.errors import VaeError
from vae_pyro.estimators import bounds
from vae_pyro.estimators.spec import QUANTITIES, batch
from vae_pyro.lab import traces
from vae_pyro.models import contract

Z_SCORE = 4.0  # tolerance of a statistical check, in standard errors
ROUNDING = 1e-8  # relative float64 rounding allowed on top (estimator and reference on the same draws)
LABELS = {"value": "value", "guide": "guide gradient", "model": "model gradient"}


@dataclass
class Row:
    """One quantity of one estimator against its reference, over ``draws`` paired draws."""

    estimator: str
    reference: str
    quantity: str
    difference: float
    se: float
    scale: float  # |reference's mean|, which sets the rounding allowed
    draws: int

    @property
    def z(self) -> float:
        """The difference in standard errors, the float rounding allowed counted in: |z| ≤ ``Z_SCORE`` passes."""
        return self.difference / (self.se + ROUNDING * (1 + self.scale) / Z_SCORE)

    @property
    def ok(self) -> bool:
        return abs(self.z) <= Z_SCORE

    def to_dict(self) -> dict:
        return {**asdict(self), "z": self.z, "ok": self.ok}


@dataclass
class Conformance:
    """The rows of every estimator that applies to the model, the estimators refused with why, and those
    that failed when run on it (the error's first line): a failure is not a pass."""

    rows: list[Row]
    refused: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every row ok, none failed to run, and something was checked."""
        return bool(self.rows) and all(r.ok for r in self.rows) and not self.errors

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.to_dict() for r in self.rows])

    def __repr__(self) -> str:
        failed = [f"{r.estimator} {r.quantity}" for r in self.rows if not r.ok]
        return (f"Conformance({len(self.rows)} rows, {len(self.rows) - len(failed)} ok"
                f"{', failed: ' + ', '.join(failed) if failed else ''}; {len(self.refused)} estimators refused, "
                f"{len(self.errors)} failed to run)")


def parameter_groups(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, list[torch.Tensor]]:
    """The leaves each program's parameters live in, guide's (φ) and model's (θ): the module's own
    parameters and any ``pyro.param`` (its unconstrained tensor), as the current param store holds them.
    A parameter both programs touch counts as the guide's."""
    groups, seen = {}, set()
    for where in ("guide", "model"):
        trace = poutine.trace(getattr(module, where), param_only=True).get_trace(*batch(x, y))
        leaves = []
        for site in trace.nodes.values():
            if site["type"] == "param":
                leaf = site["value"].unconstrained() if hasattr(site["value"], "unconstrained") else site["value"]
                if id(leaf) not in seen and leaf.requires_grad:
                    seen.add(id(leaf))
                    leaves.append(leaf)
        groups[where] = leaves
    return groups


def _project(grads, direction) -> float:
    return sum((g.double() * u).sum().item() for g, u in zip(grads, direction) if g is not None)


def _directions(groups: dict[str, list[torch.Tensor]], seed: int) -> dict[str, list[torch.Tensor]]:
    """A fixed random unit direction per parameter group."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for g, leaves in groups.items():
        u = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device) for p in leaves]
        norm = math.sqrt(sum((v**2).sum().item() for v in u)) or 1.0
        out[g] = [v / norm for v in u]
    return out


def reference_draw(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, draws: int, nesting: int,
                   reference: dict[str, str], options: dict, groups: dict[str, list[torch.Tensor]],
                   direction: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """One draw of the reference: −bound per image ("value") and each projected gradient of −S."""
    guide_tr, model_tr = traces.particle_traces(module, x, y, draws, nesting)
    log_w = traces.terms(guide_tr, model_tr, draws, nesting, scaled=True).log_w
    score = traces.score_terms(guide_tr, log_w, nesting).sum(0)
    out = {}
    for quantity, name in reference.items():
        bound = bounds.BOUNDS[name](log_w, **options)
        if quantity == "value":
            out[quantity] = -bound.sum().item() / len(x)
            continue
        if not groups[quantity]:  # a program without parameters of its own
            out[quantity] = 0.0
            continue
        surrogate = -(bound + bound.detach() * score).sum()
        grads = torch.autograd.grad(surrogate, groups[quantity], retain_graph=True, allow_unused=True)
        out[quantity] = _project(grads, direction[quantity])
    return out


def estimator_draw(estimator, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                   groups: dict[str, list[torch.Tensor]], direction: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """One draw of the estimator: its loss per image and its projected gradients."""
    for leaves in groups.values():
        for p in leaves:
            p.grad = None
    loss = estimator.backward(module, x, y)
    out = {"value": loss / len(x)}
    for g, leaves in groups.items():
        out[g] = _project([p.grad for p in leaves], direction[g])
    return out


BOUND_OPTIONS = {"renyi": "alpha", "miwae": "iwae_m", "ciwae": "ciwae_beta"}  # the option each bound reads


def _label(bound: str, draws: int, options: dict) -> str:
    """The reference as a row names it: the bound, its draws per image, and its option if it has one."""
    option = BOUND_OPTIONS.get(bound)
    return f"{bound} (D={draws}{f', {option}={options[option]}' if option else ''})"


def check_estimator(name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, draws: int = 200,
                    seed: int = 0, nesting: int = 1, **options) -> list[Row]:
    """The rows of estimator ``name`` (options as ``estimators.make`` takes them) against its reference, on
    ``module`` and batch ``x`` as given (the caller chooses the dtype: float64 keeps rounding out of it).

    It runs on a fresh param store (the caller's is left as it was), so the traces' param sites are this
    module's own parameters; a ``pyro.param`` outside the module starts there from its initial value."""
    estimator = estimators.make(name, nesting, x.shape[1], **options)
    spec, own = estimator.spec, estimator.options
    total = spec.bound_draws(estimator.samples, own)
    devices = [x.device] if x.device.type == "cuda" else []
    with pyro.get_param_store().scope(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        groups = parameter_groups(module, x, y)
        direction = _directions(groups, seed)
        pairs = []
        for d in range(draws):
            torch.manual_seed(seed + 1 + d)
            ours = estimator_draw(estimator, module, x, y, groups, direction)
            torch.manual_seed(seed + 1 + d)
            theirs = reference_draw(module, x, y, total, nesting, spec.reference, own, groups, direction)
            pairs.append((ours, theirs))
    module.zero_grad(set_to_none=True)
    rows = []
    for quantity in QUANTITIES:
        if quantity not in spec.reference or (quantity != "value" and not groups.get(quantity)):
            continue
        diff = torch.tensor([a[quantity] - b[quantity] for a, b in pairs], dtype=torch.float64)
        ref = torch.tensor([b[quantity] for _, b in pairs], dtype=torch.float64)
        se = diff.std().item() / math.sqrt(draws) if draws > 1 else math.inf
        bound = spec.reference[quantity]
        rows.append(Row(name, _label(bound, total, own), LABELS[quantity], diff.mean().item(), se,
                        abs(ref.mean().item()), draws))
    return rows


def conformance(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, names: list[str] | None = None,
                draws: int = 200, seed: int = 0, progress: bool = False, **options) -> Conformance:
    """Every estimator in ``names`` (default: all) that applies to ``module``, against its reference on batch
    ``x`` (a float64 copy of both is used); the others listed with the reason they are refused. ``options``:
    the estimators' (``particles``, ``iwae_k``, ``alpha``, ...), each passed to those that own it."""
    if draws < 2:
        raise VaeError(f"a standard error needs at least 2 draws, got {draws}")
    unknown = sorted(set(options) - {"particles", "iwae_k", *estimators.owned_options()})
    if unknown:
        raise VaeError(f"unknown estimator option {unknown[0]!r}; the options are particles, iwae_k, "
                       f"{', '.join(sorted(estimators.owned_options()))}")
    module64, x64 = copy.deepcopy(module).double(), x.double()
    with traces.seeded_rng(seed, x.device):
        guide_tr, model_tr = contract.check(module64, x64, y)
        nesting = traces.plate_nesting(module64, x64[:1], None if y is None else y[:1])
    rows, refused, errors = [], {}, {}
    for name in tqdm(names or estimators.NAMES, desc="conformance", disable=not progress, leave=False):
        spec = estimators.spec(name)
        own = {k: v for k, v in options.items() if k in spec.options}
        samples = {k: v for k, v in options.items() if k == estimators.SAMPLE_OPTIONS[spec.samples]}
        try:
            estimators.check_options(name, {**samples, **own})
            why = estimators.refusal(name, module64, guide_tr, model_tr)
        except VaeError as e:
            why = str(e)
        if why:
            refused[name] = why
            continue
        try:
            rows += check_estimator(name, module64, x64, y, draws, seed, nesting, **samples, **own)
        except Exception as e:  # noqa: BLE001 - an estimator that cannot run on the model is reported, not raised
            errors[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return Conformance(rows, refused, errors)


def print_conformance(result: Conformance) -> None:
    print(f"{'estimator':14}{'reference':30}{'quantity':16}{'difference':>13}{'± se':>11}{'z':>8}  result")
    for r in result.rows:
        print(f"{r.estimator:14}{r.reference:30}{r.quantity:16}{r.difference:+13.3e}{r.se:11.2e}{r.z:+8.2f}  "
              f"{'ok' if r.ok else 'FAILED'}")
    for name, why in result.refused.items():
        print(f"{name:14}refused: {why}")
    for name, error in result.errors.items():
        print(f"{name:14}FAILED to run on this model: {error}")
