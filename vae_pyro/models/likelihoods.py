"""The likelihoods p_θ(x|z) a decoder can parameterise: one registry, read by the networks (how many
per-pixel parameters to emit), the models (the Pyro distribution of the observed site) and the
hand-derived loss (the log-density written out in ``hand.py``)."""

from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from vae_pyro.models import hand


@dataclass(frozen=True)
class Likelihood:
    params: int  # per-pixel parameters the decoder emits
    distribution: Callable[..., dist.Distribution]  # decoder output -> Pyro distribution over one image
    log_prob: Callable[..., torch.Tensor]  # (x, *decoder output) -> log p(x|z) per image, by hand


def _normal(loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    return dist.Normal(loc, scale).to_event(1)


LIKELIHOODS = {
    # validate_args=False: grey pixels in [0, 1] are scored too (the Bernoulli log-density is defined there)
    "bernoulli": Likelihood(1, lambda logits: dist.Bernoulli(logits=logits, validate_args=False).to_event(1),
                            hand.bernoulli_log_prob),
    "continuous-bernoulli": Likelihood(1, lambda logits: dist.ContinuousBernoulli(logits=logits).to_event(1),
                                       hand.continuous_bernoulli_log_prob),
    "gaussian": Likelihood(2, _normal, hand.normal_log_prob),  # per-pixel σ(z)
    "gaussian-shared": Likelihood(1, _normal, hand.normal_log_prob),  # one learned σ for every pixel
}
