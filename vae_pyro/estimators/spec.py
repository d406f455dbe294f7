"""An estimator declared once: ``EstimatorSpec`` is the record that stands beside each estimator's
class, and ``Estimator`` is one built from it for a run. Refusals, the command line's help, the
docs' table, the conformance check and ``vae_pyro.elbo`` all read the records (``registry.py``)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer import ELBO
from torch import nn

from vae_pyro.estimators import pyro_compat

QUANTITIES = ("value", "guide", "model")
RSAMPLE = frozenset({"rsample"})  # the need of every estimator that takes z's path  # the loss's value, its gradient in φ (guide), in θ (model)


def expects(bound: str, guide: str | bool = True, model: str | bool = True) -> dict[str, str]:
    """An estimator's reference: {quantity: the bound (``bounds.BOUNDS``) it equals in expectation}.

    The value is ``bound``; each gradient is that bound's too (True), another bound's (its name), or
    not expected to equal any (False: a biased gradient, as iwae-stl's in φ)."""
    out = {"value": bound}
    for quantity, given in (("guide", guide), ("model", model)):
        if given:
            out[quantity] = bound if given is True else given
    return out


@dataclass(frozen=True)
class EstimatorSpec:
    """What an estimator is and what it needs.

    ``build(num_particles, max_plate_nesting, **options)`` makes its Pyro ELBO; ``samples`` says whether
    its draws per image are L (``--particles``) or K (``--iwae-k``), at least ``min_samples``; ``options``
    are the Config fields it owns, with their defaults; ``needs`` the kinds of site it requires
    (``registry.NEEDS``); ``reference`` what its value and gradients equal in expectation (``expects``);
    ``guide(estimator, guide)`` the guide it runs in place of the model's (score's, enum's); ``network(x_dim,
    options)`` a network trained beside the module (score's neural baseline); ``check(samples, options)``
    a rule of its own on those, returning what is wrong and the fix, or None; ``per_sample`` the draws each
    sample takes (ARM's pairs: 2).
    """

    name: str
    build: Callable[..., ELBO]
    summary: str
    paper: str
    reference: dict[str, str]
    samples: str = "L"
    min_samples: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    guide: Callable | None = None
    network: Callable[[int, dict], nn.Module | None] | None = None
    check: Callable[[int, dict], str | None] | None = None
    per_sample: int = 1

    def bound_draws(self, samples: int, options: dict[str, Any]) -> int:
        """Draws per image of the bound the loss estimates (its reference's D): the samples, times M groups
        for the grouped bounds (``iwae_m``)."""
        return samples * options.get("iwae_m", 1)

    def draws(self, samples: int, options: dict[str, Any]) -> int:
        """Draws per image one loss evaluates: the bound's, times ``per_sample`` (2 for an antithetic pair)."""
        return self.bound_draws(samples, options) * self.per_sample


@dataclass
class Estimator:
    """One estimator built for a run: its record, its draws per image, its options (defaults filled
    in) and its Pyro ELBO, plus any network it trains beside the module.

    Pyro's ELBOs reach the module's parameters through Pyro's global param store, and the jit-* ones
    compile against it: before using a new estimator on another module, clear the store
    (``pyro.clear_param_store()``; the trainers and diagnostics do).
    """

    spec: EstimatorSpec
    samples: int
    elbo: ELBO
    options: dict[str, Any] = field(default_factory=dict)
    baseline_net: nn.Module | None = None

    _bound: tuple | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def pyro_fns(self, vae) -> tuple[Callable, Callable]:
        """(model, guide) for Pyro, made once per module: the jit-* ELBOs key their compiled
        function on the callables' ids, and ``vae.model`` is a new bound method on every access."""
        if self._bound is None or self._bound[0] is not vae:
            self._bound = (vae, vae.model, self.guide(vae.guide))
        return self._bound[1], self._bound[2]

    def guide(self, guide: Callable) -> Callable:
        """The guide this estimator runs: the model's own, or its record's transformation of it."""
        return guide if self.spec.guide is None else self.spec.guide(self, guide)

    def loss(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """−(bound) summed over the batch, differentiable (the ELBOs that offer it)."""
        return self.elbo.differentiable_loss(*self.pyro_fns(vae), *batch(x, y))

    def value(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """One draw of −(bound) summed over the batch, no gradients."""
        with torch.no_grad():
            return self.elbo.loss(*self.pyro_fns(vae), *batch(x, y))

    def backward(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Accumulate one draw of this estimator's gradient into ``.grad``; return the loss."""
        return self.elbo.loss_and_grads(*self.pyro_fns(vae), *batch(x, y))

    def state_dict(self) -> dict:
        """What an estimator keeps beside the module: its network's weights and the decaying-average
        baselines (TraceGraph_ELBO keeps those in the param store)."""
        return {
            "baseline_net": self.baseline_net.state_dict() if self.baseline_net is not None else {},
            "baseline_avg": pyro_compat.decaying_baselines(),
        }

    def load_state_dict(self, state: dict) -> None:
        if self.baseline_net is not None:
            self.baseline_net.load_state_dict(state["baseline_net"])
        pyro_compat.load_decaying_baselines(state["baseline_avg"])


def batch(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The arguments of model and guide: (x,) or, for a conditional model, (x, y)."""
    return (x,) if y is None else (x, y)
