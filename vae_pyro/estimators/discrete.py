"""What the discrete-latent estimators share: reading a Bernoulli or one-hot site's logits, and a guide
handler that sets every latent site to points the estimator computes from those logits, stacked on
the particle plate (ARM's antithetic pairs, REBAR's b, σ_λ(z), σ_λ(z̃), a straight-through draw).

The points of one site are computed from one set of logits, so the handler checks that the guide
gives every stacked copy the same logits: a guide whose logits depend on another latent draw (a
hierarchy of discrete layers) is refused, not silently mis-estimated.
"""

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from vae_pyro.errors import VaeError

KINDS = {"bernoulli": Bernoulli, "one-hot": OneHotCategorical}


def base(fn) -> torch.distributions.Distribution:
    """The distribution under Independent / expand wrappers."""
    while isinstance(fn, Independent | ExpandedDistribution):
        fn = fn.base_dist
    return fn


def kind(fn) -> str | None:
    """"bernoulli", "one-hot", or None for any other site."""
    inner = base(fn)
    return next((name for name, cls in KINDS.items() if isinstance(inner, cls)), None)


def logits(fn) -> torch.Tensor:
    """A Bernoulli or one-hot site's logits, broadcast to the site's full shape (batch + event)."""
    return base(fn).logits.expand(fn.batch_shape + fn.event_shape)


def rewrap(fn, inner: torch.distributions.Distribution):
    """``inner`` with ``fn``'s event dimensions: the site's distribution with new logits."""
    event = len(fn.event_shape) - len(inner.event_shape)
    return inner.to_event(event) if event else inner


class AtPoints(Messenger):
    """Guide handler: every latent site takes the values ``points(name, kind, α)`` returns, where α are the
    logits of the first of ``copies`` equal slices of the particle plate (dim ``dim``); ``points`` returns
    (the values of all the copies, the site's distribution or None to keep the guide's). ``self.logits``
    keeps each site's α (with its gradient)."""

    def __init__(self, points: Callable, copies: int, dim: int, estimator: str):
        super().__init__()
        self.points, self.copies, self.dim, self.estimator = points, copies, dim, estimator
        self.logits: dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or site_is_subsample(msg) or msg["value"] is not None:
            return
        site_kind = kind(msg["fn"])
        if site_kind is None:
            raise VaeError(f"{self.estimator} needs Bernoulli or one-hot latent sites, and {msg['name']!r} is "
                           f"{type(base(msg['fn'])).__name__}")
        full = logits(msg["fn"])
        dim = self.dim - len(msg["fn"].event_shape)  # the particle plate's dim counted on the full shape
        parts = full.chunk(self.copies, dim)
        if any(not torch.equal(parts[0], p) for p in parts[1:]):
            raise VaeError(f"{self.estimator} needs a guide whose logits at {msg['name']!r} depend on x alone, not on "
                           "another latent draw (a hierarchy of discrete layers); use rloo, nvil, vimco or rws")
        alpha = parts[0].movedim(dim, 0)
        values, fn = self.points(msg["name"], site_kind, alpha)
        msg["value"] = values.movedim(0, dim)
        if fn is not None:
            msg["fn"] = rewrap(msg["fn"], fn)
        msg["done"] = True
        self.logits[msg["name"]] = alpha


def bernoulli(logits: torch.Tensor) -> dist.Bernoulli:
    """Bernoulli(σ(logits)) whose log-density also takes values in [0, 1] (the relaxed points)."""
    return dist.Bernoulli(logits=logits, validate_args=False)


def per_logit(per_image: torch.Tensor, alpha: torch.Tensor, nesting: int) -> torch.Tensor:
    """A (draws, N) value laid out as a site's logits (draws, ..., N, event...): the data plate's dim is
    ``nesting`` (the ELBO's ``max_plate_nesting``), the event dims follow."""
    shape = (per_image.shape[0],) + (1,) * (nesting - 1) + (per_image.shape[1],) + (1,) * (alpha.dim() - nesting - 1)
    return per_image.reshape(shape)
