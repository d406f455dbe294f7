"""Pyro's own ELBOs, each as the lab runs it (the docstrings of ``pyro.infer`` state their estimators):

    trace          Trace_ELBO: Monte-Carlo ELBO, reparameterised where the guide allows, score function elsewhere
    meanfield      TraceMeanField_ELBO: the KL term analytic (``kl_divergence``) where Pyro knows it
    iwae           RenyiELBO(α = 0): the importance-weighted bound of K draws (Burda et al. 2016)
    renyi          RenyiELBO(α): the Rényi bound of order α (Li & Turner 2016)
    jit-trace, jit-meanfield   the same, compiled by ``torch.jit.trace``
    enum           TraceEnum_ELBO: discrete guide sites summed out exactly (``config_enumerate``)
"""

import warnings

import torch
from pyro import infer

from vae_pyro.estimators import pyro_compat
from vae_pyro.estimators.spec import RSAMPLE, EstimatorSpec, expects


class QuietJit:
    """torch.jit.trace warns, while it compiles, about every Python-level shape read in a Pyro model and
    that it is deprecated; neither concerns a user of the jit-* estimators, so they are silenced here,
    during these calls only."""

    def _quiet(self, method, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`torch.jit.trace` is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            return method(*args, **kwargs)

    def loss(self, *args, **kwargs):
        return self._quiet(super().loss, *args, **kwargs)

    def differentiable_loss(self, *args, **kwargs):
        return self._quiet(super().differentiable_loss, *args, **kwargs)

    def loss_and_grads(self, *args, **kwargs):
        return self._quiet(super().loss_and_grads, *args, **kwargs)


class JitTrace(QuietJit, infer.JitTrace_ELBO):
    pass


class JitMeanField(QuietJit, pyro_compat.JitTraceMeanField_ELBO):
    pass


def iwae(**kwargs) -> infer.RenyiELBO:
    return infer.RenyiELBO(alpha=0, **kwargs)


def enumerate_guide(estimator, guide):
    """The guide with every discrete site enumerated in parallel."""
    return infer.config_enumerate(guide, default="parallel")


ANALYTIC_KL = "ELBO; the KL term analytic where Pyro knows it, reparameterised reconstruction"
SPECS = (
    EstimatorSpec("trace", infer.Trace_ELBO, "ELBO; Monte-Carlo KL, reparameterised (score function where no "
                  "rsample)", "Kingma & Welling 2013; Ranganath et al. 2014", expects("elbo")),
    EstimatorSpec("meanfield", infer.TraceMeanField_ELBO, ANALYTIC_KL, "Kingma & Welling 2013", expects("elbo"),
                  needs=RSAMPLE | {"model_order"}),
    EstimatorSpec("iwae", iwae, "IWAE bound of K draws, reparameterised", "Burda, Grosse & Salakhutdinov 2016",
                  expects("iwae"), samples="K", needs=RSAMPLE),
    EstimatorSpec("renyi", infer.RenyiELBO, "Rényi bound of order --alpha over K draws (0: IWAE, towards 1: ELBO)",
                  "Li & Turner 2016", expects("renyi"), samples="K", options={"alpha": 0.5},
                  needs=RSAMPLE),
    EstimatorSpec("jit-trace", JitTrace, "as trace, compiled by torch.jit.trace", "Kingma & Welling 2013",
                  expects("elbo"), needs=RSAMPLE),
    EstimatorSpec("jit-meanfield", JitMeanField, "as meanfield, compiled by torch.jit.trace",
                  "Kingma & Welling 2013", expects("elbo"), needs=RSAMPLE | {"model_order"}),
    EstimatorSpec("enum", infer.TraceEnum_ELBO, "ELBO; discrete guide sites summed out exactly", "Pyro's "
                  "TraceEnum_ELBO (Obermeyer et al. 2019)", expects("elbo"), needs=frozenset({"enumerable"}),
                  guide=enumerate_guide),
)
