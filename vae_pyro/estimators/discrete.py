"""What the discrete-latent estimators share: reading a Bernoulli or one-hot site's logits, and a guide
handler that sets every latent site to points the estimator computes from those logits, stacked on
the particle plate (ARM's antithetic pairs, REBAR's b, σ_λ(z), σ_λ(z̃), a straight-through draw).

The points of one site are computed from one set of logits, so the handler checks that the guide
gives every stacked copy the same logits: a guide whose logits depend on another latent draw (a
hierarchy of discrete layers) is refused, not silently mis-estimated.
"""

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from vae_pyro.errors import VaeError

KINDS = {"bernoulli": Bernoulli, "one-hot": OneHotCategorical}


Distribution = torch.distributions.Distribution


def base(fn: Distribution) -> Distribution:
    """The distribution under Independent / expand wrappers."""
    while isinstance(fn, Independent | ExpandedDistribution):
        fn = fn.base_dist
    return fn


def kind(fn: Distribution) -> str | None:
    """"bernoulli", "one-hot", or None for any other site."""
    inner = base(fn)
    return next((name for name, cls in KINDS.items() if isinstance(inner, cls)), None)


def logits(fn: Distribution) -> torch.Tensor:
    """A Bernoulli or one-hot site's logits, broadcast to the site's full shape (batch + event)."""
    return base(fn).logits.expand(fn.batch_shape + fn.event_shape)


def rewrap(fn: Distribution, inner: Distribution) -> Distribution:
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


class _DrawsAsLeaves(Messenger):
    """Guide handler: each real-valued latent draw continues as a leaf that requires a gradient, and each
    Bernoulli or one-hot site whose logits have a gradient in an earlier draw is recorded."""

    def __init__(self):
        super().__init__()
        self.draws: list[torch.Tensor] = []
        self.dependent: list[str] = []

    def _pyro_post_sample(self, msg: dict) -> None:
        if msg["is_observed"] or site_is_subsample(msg):
            return
        if kind(msg["fn"]) is not None and self.draws and logits(msg["fn"]).requires_grad:
            grads = torch.autograd.grad(logits(msg["fn"]).sum(), self.draws, allow_unused=True, retain_graph=True)
            if any(g is not None for g in grads):
                self.dependent.append(msg["name"])
        if msg["value"].is_floating_point():
            msg["value"] = msg["value"].detach().requires_grad_()
            self.draws.append(msg["value"])


def depending_on_draws(guide: Callable, *args, **kwargs) -> list[str]:
    """The guide's Bernoulli and one-hot sites whose logits depend on an earlier latent draw (a hierarchy of
    discrete layers), found from the gradient's graph in one run on a fresh param store, the caller's
    RNG stream left as it was."""
    device = args[0].device if args and isinstance(args[0], torch.Tensor) else torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            pyro.get_param_store().scope(), _DrawsAsLeaves() as leaves:
        guide(*args, **kwargs)
    return leaves.dependent


class LinearOneHot(dist.OneHotCategorical):
    """OneHotCategorical whose log-density extends off the vertices linearly, log π(y) = Σ_c y_c log π_c
    (the usual one at a one-hot y), as Bernoulli's extends to [0, 1]: it has a gradient at relaxed points."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.logits).sum(-1)


def relaxed_density(site_kind: str, alpha: torch.Tensor) -> Distribution:
    """Bernoulli(σ(α)) or OneHotCategorical(softmax(α)), its log-density taking relaxed values (σ(z/λ) in
    [0, 1], softmax(z/λ) on the simplex), unvalidated."""
    return dist.Bernoulli(logits=alpha, validate_args=False) if site_kind == "bernoulli" \
        else LinearOneHot(logits=alpha, validate_args=False)


def off_vertex(fn: Distribution) -> Distribution:
    """A Bernoulli or one-hot site's distribution with its own logits, as ``relaxed_density``."""
    return rewrap(fn, relaxed_density(kind(fn), logits(fn)))


class OffVertexDensities(Messenger):
    """Model and guide handler: every latent Bernoulli or one-hot site's density is ``off_vertex``'s, so that
    f = log p_θ(x, ·) − log q_φ(· | x) can be evaluated, and differentiated, at relaxed points."""

    def _pyro_sample(self, msg: dict) -> None:
        if not msg["is_observed"] and not site_is_subsample(msg) and kind(msg["fn"]) is not None:
            msg["fn"] = off_vertex(msg["fn"])


def per_logit(per_image: torch.Tensor, alpha: torch.Tensor, nesting: int) -> torch.Tensor:
    """A (draws, N) value laid out as a site's logits (draws, ..., N, event...): the data plate's dim is
    ``nesting`` (the ELBO's ``max_plate_nesting``), the event dims follow."""
    shape = (per_image.shape[0],) + (1,) * (nesting - 1) + (per_image.shape[1],) + (1,) * (alpha.dim() - nesting - 1)
    return per_image.reshape(shape)
