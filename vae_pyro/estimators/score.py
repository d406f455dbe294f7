"""`score`: the score-function (REINFORCE) estimator of the ELBO's gradient for every latent site,

    ∇φ E_q[f(z)] = E_q[(f(z) − b) ∇φ log q_φ(z|x)]          (Williams 1992; Ranganath et al. 2014)

run by Pyro's ``TraceGraph_ELBO`` on a guide whose sites lose their pathwise gradient, with the
control variate b of ``--baseline``: none, a decaying average, or a network b(x) trained beside the
module (Mnih & Gregor 2014).
"""

import pyro
import torch
from pyro import infer
from pyro.poutine.messenger import Messenger
from torch import nn

from vae_pyro.estimators.spec import EstimatorSpec, expects
from vae_pyro.models.nets import mlp

BASELINES = ("none", "decaying", "neural")


class ScoreFunction(Messenger):
    """Guide handler: latent sites lose their pathwise gradient (``has_rsample_(False)``) and get
    ``baseline`` as their variance-reduction option."""

    def __init__(self, baseline: dict):
        super().__init__()
        self.baseline = baseline

    def _pyro_sample(self, msg: dict) -> None:
        if not msg["is_observed"]:
            fn = msg["fn"]
            # Independent / expanded wrappers read has_rsample from their base; a transformed distribution
            # (RelaxedBernoulli, LogNormal) over a plain torch base keeps its own
            while hasattr(getattr(fn, "base_dist", None), "has_rsample_"):
                fn = fn.base_dist
            fn.has_rsample_(False)
            msg["infer"]["baseline"] = self.baseline


def score_guide(estimator, guide):
    """``guide`` under ``ScoreFunction``, with the estimator's baseline (its network registered with Pyro)."""

    def guide_without_paths(x: torch.Tensor, *args, **kwargs) -> None:
        net = estimator.baseline_net
        options = {
            "none": {},
            "decaying": {"use_decaying_avg_baseline": True},
            "neural": {"nn_baseline": net, "nn_baseline_input": x},
        }[estimator.options["baseline"]]
        if net is not None:
            pyro.module("baseline", net)
        with ScoreFunction(options):
            guide(x, *args, **kwargs)

    return guide_without_paths


def baseline_network(x_dim: int, options: dict) -> nn.Module | None:
    """b(x), one value per image, for ``--baseline neural``."""
    return nn.Sequential(mlp([x_dim, 100, 1], "relu"), nn.Flatten(0)) if options["baseline"] == "neural" else None


def trace_graph(baseline: str = "none", network: nn.Module | None = None, **kwargs) -> infer.TraceGraph_ELBO:
    """TraceGraph_ELBO (``baseline`` and its ``network`` act in the guide, ``score_guide``)."""
    # the particles run in a loop: Pyro 1.9 cannot broadcast an Independent distribution with
    # has_rsample=False across the particle plate (it tries to set a read-only property)
    return infer.TraceGraph_ELBO(**{**kwargs, "vectorize_particles": False})


def one_draw_for_neural(samples: int, options: dict) -> str | None:
    if options["baseline"] == "neural" and samples != 1:
        return "--baseline neural predicts one value per image, so it needs --particles 1"
    return None


SPEC = EstimatorSpec(
    name="score", build=trace_graph, summary="ELBO; score function at every site, with a baseline: none, "
    "decaying or neural", paper="Williams 1992; Ranganath, Gerrish & Blei 2014; Mnih & Gregor 2014", reference=expects("elbo"),
    options={"baseline": "none"}, guide=score_guide, network=baseline_network, check=one_draw_for_neural)
