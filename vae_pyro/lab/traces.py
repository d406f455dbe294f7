"""What the lab reads from any model that keeps the contract, from traces alone.

For K draws z_k ~ q_φ(z|x) (the guide run under a particle plate, the model replayed on it):

    log w_k = Σ_{observed s} log p(s | ·) + Σ_{latent s} [log p(z_s | ·) − log q(z_s | ·)]

per image (each site's log-density summed over every dimension but the data plate's). Its mean
over k is the ELBO, log (1/K) Σ_k w_k the IWAE bound and importance-sampled log p(x) (Burda et
al. 2016). The observed site "x" gives the reconstruction term, the latent sites the KL term.
Latent sites the model samples but the guide does not are proposed from the model itself, so
their log-densities cancel and they are left out. Densities are the model's own: ``poutine.scale``
and ``poutine.mask`` (a KL weight β, a warm-up) weight training, not the quantities measured here
(``terms(scaled=True)`` gives the weighted objective, for the conformance check).
"""

from contextlib import contextmanager
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch import nn

from vae_pyro.estimators.particles import per_image
from vae_pyro.models import hand
from vae_pyro.models.contract import OBSERVED, is_latent, is_sample, run_traces


@contextmanager
def seeded_rng(seed: int, device: torch.device):
    """Draws inside the block come from ``seed``; the caller's RNG state is restored after it, so
    evaluating or checking never disturbs training's random stream."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _args(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    return (x,) if y is None else (x, y)


def plate_nesting(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """How many plates the program nests (Pyro's max_plate_nesting), read from one trace of each
    (drawn on a forked RNG: the caller's random stream is left as it was)."""
    nesting = 1
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        guide_tr, model_tr = run_traces(module, x, y)
    for trace in (guide_tr, model_tr):
        for site in trace.nodes.values():
            if is_sample(site):
                nesting = max([nesting, *(-f.dim for f in site["cond_indep_stack"] if f.vectorized)])
    return nesting


def particle_traces(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, k: int, nesting: int):
    """Guide and replayed model traces with K draws per image, vectorised by a particle plate."""
    dim = -(nesting + 1)

    def under_plate(fn):
        def wrapped(*args):
            with pyro.plate("particles", k, dim=dim):
                return fn(*args)

        return wrapped

    guide_tr = poutine.trace(under_plate(module.guide)).get_trace(*_args(x, y))
    model_tr = poutine.trace(poutine.replay(under_plate(module.model), trace=guide_tr)).get_trace(*_args(x, y))
    return guide_tr, model_tr


def log_density(fn, value: torch.Tensor) -> torch.Tensor:
    """``fn.log_prob(value)``; without gradients, a Bernoulli of pixels given by logits (``.to_event``)
    through ``hand.bernoulli_log_prob``'s faster form: the evaluations' hot spot."""
    base, event_dims = fn, 0
    while isinstance(base, torch.distributions.Independent):
        base, event_dims = base.base_dist, event_dims + base.reinterpreted_batch_ndims
    bernoulli = getattr(type(base), "log_prob", None) is torch.distributions.Bernoulli.log_prob  # not a variant's
    if (torch.is_grad_enabled() or not event_dims or not bernoulli
            or "logits" not in base.__dict__):  # given by logits (probs would be made from them lazily)
        return fn.log_prob(value)
    log_prob = hand.bernoulli_log_prob(value, base.logits)  # summed over the last dim
    return log_prob.sum(tuple(range(-(event_dims - 1), 0))) if event_dims > 1 else log_prob


def _per_image(site: dict, k: int, n: int, nesting: int, scaled: bool = False) -> torch.Tensor:
    """The site's log-density, summed over all but the particle and data dims: (K, N); unscaled and
    unmasked unless ``scaled`` (then weighted by ``poutine.scale`` / ``mask``, as training sees it)."""
    log_prob = log_density(site["fn"], site["value"])
    return per_image(scale_and_mask(log_prob, site["scale"], site["mask"]) if scaled else log_prob, k, n, nesting)


class LogWeights(NamedTuple):
    """Per-draw, per-image terms, each (K, N): log w = recon − kl."""

    recon: torch.Tensor  # log-densities of the observed sites
    kl: torch.Tensor  # Σ over latent sites of log q − log p

    @property
    def log_w(self) -> torch.Tensor:
        return self.recon - self.kl


def log_weights(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1,
                nesting: int | None = None) -> LogWeights:
    """K draws of the per-image reconstruction and KL terms (the module's RNG: seed it to repeat)."""
    nesting = nesting or plate_nesting(module, x[:1], None if y is None else y[:1])
    return terms(*particle_traces(module, x, y, k, nesting), k, nesting)


def terms(guide_tr, model_tr, k: int, nesting: int, scaled: bool = False) -> LogWeights:
    """The reconstruction and KL terms of K-draw traces (``particle_traces``); ``scaled``: with the
    weights of ``poutine.scale`` / ``mask`` (the objective training optimises, a KL weight β included)."""
    n = model_tr.nodes[OBSERVED]["value"].shape[0]
    sites = [(name, s) for name, s in model_tr.nodes.items() if is_sample(s)]
    recon = sum(_per_image(s, k, n, nesting, scaled) for _, s in sites if s["is_observed"])
    kl = sum((_per_image(guide_tr.nodes[name], k, n, nesting, scaled) - _per_image(s, k, n, nesting, scaled)
              for name, s in sites if not s["is_observed"] and name in guide_tr.nodes), torch.zeros_like(recon))
    return LogWeights(recon, kl)


def score_terms(guide_tr, like: torch.Tensor, nesting: int) -> torch.Tensor:
    """Σ log q over the latent sites that have no reparameterised sample, per draw and image, shaped as
    ``like`` (K, N): what a score-function gradient multiplies; zero when every site is reparameterised."""
    k, n = like.shape  # the sampling density itself: unscaled and unmasked, as in Pyro's score_parts
    return sum((_per_image(s, k, n, nesting) for s in guide_tr.nodes.values()
                if is_latent(s) and not s["fn"].has_rsample), torch.zeros_like(like))


def latent_sites(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, dict]:
    """The guide's latent sites on batch ``x``: name -> site (fn, value, ...)."""
    guide_tr = poutine.trace(module.guide).get_trace(*_args(x, y))
    return {name: site for name, site in guide_tr.nodes.items() if is_latent(site)}


def parameter_groups(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None
                     ) -> dict[str, list[nn.Parameter]]:
    """The module's parameters by the program that registers them: the guide's (φ) and the model's (θ).

    A parameter both register counts as the guide's. The traces run on a fresh param store, so their
    param sites are this module's own parameters.
    """
    with pyro.get_param_store().scope():
        traces = {where: poutine.trace(getattr(module, where), param_only=True).get_trace(*_args(x, y))
                  for where in ("guide", "model")}
    ids = {where: {id(s["value"]) for s in t.nodes.values() if s["type"] == "param"} for where, t in traces.items()}
    params = list(module.parameters())
    guide = [p for p in params if id(p) in ids["guide"]]
    model = [p for p in params if id(p) in ids["model"] and id(p) not in ids["guide"]]
    return {"guide": guide, "model": model}


def central_value(fn) -> torch.Tensor:
    """A latent site's representative value: its mean where the distribution has one; for a discrete site its
    most probable value (``mode``: elementwise for Bernoulli vectors, the argmax for a Categorical); for a
    transformed distribution without a mean (a flow), its base distribution's mean pushed through the
    transforms; else one draw."""
    if fn.support.is_discrete:
        try:
            return torch.nan_to_num(fn.mode, nan=1.0)  # a Bernoulli's mode at p = 1/2 is undefined: take 1
        except NotImplementedError:
            return fn.sample()
    try:
        return fn.mean
    except NotImplementedError:
        pass
    if isinstance(fn, torch.distributions.TransformedDistribution):
        value = central_value(fn.base_dist)
        for transform in fn.transforms:
            value = transform(value)
        return value
    return fn.sample()


class _AtMean(poutine.messenger.Messenger):
    """Latent sites take their ``central_value`` instead of a draw."""

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        msg["value"] = central_value(msg["fn"])


@torch.no_grad()
def observed_mean(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                  latents: dict[str, torch.Tensor] | None = None, from_prior: bool = False) -> torch.Tensor:
    """E[x | latents]: the mean of the observed site's distribution, shape of ``x``.

    The latents are the guide's means given ``x`` (a reconstruction), or with ``from_prior`` draws
    from the model's prior (samples; ``x`` then only sets the batch size); ``latents`` fixes sites
    to given values (a grid, a traversal) in either case.
    """
    # uncondition inside condition: the handler nearest the program acts first, so "x" is released
    # before the latents are fixed (the other way round, uncondition would release those too)
    model = poutine.condition(poutine.uncondition(module.model), data=latents or {})
    if from_prior:
        model_tr = poutine.trace(model).get_trace(*_args(x, y))
    else:
        guide = _AtMean()(poutine.condition(module.guide, data=latents or {}))
        guide_tr = poutine.trace(guide).get_trace(*_args(x, y))
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*_args(x, y))
    return model_tr.nodes[OBSERVED]["fn"].mean


@torch.no_grad()
def recon_at_mean(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over observed sites of log p(s | latents), per image, with every latent at its guide's mean
    (the most probable value for a discrete site): z = μ(x) for a VAE, the code for an autoencoder."""
    nesting = plate_nesting(module, x[:1], None if y is None else y[:1])
    guide_tr = poutine.trace(_AtMean()(module.guide)).get_trace(*_args(x, y))
    model_tr = poutine.trace(poutine.replay(module.model, trace=guide_tr)).get_trace(*_args(x, y))
    observed = [s for s in model_tr.nodes.values() if is_sample(s) and s["is_observed"]]
    return sum(_per_image(s, 1, len(x), nesting) for s in observed)[0]
