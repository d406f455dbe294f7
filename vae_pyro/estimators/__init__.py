"""The ELBO estimators: one file per family, each a Pyro ELBO class with its equation and paper, and
beside it its record (``EstimatorSpec``); ``registry.py`` collects the records. Every estimator works
with the *negative* bound summed over the batch, as Pyro's ELBOs do, on any model that keeps the
contract (``vae_pyro.models.contract``), or is refused for it in one line that says why."""

from vae_pyro.estimators.registry import (
    BASELINES,
    NAMES,
    SAMPLE_OPTIONS,
    SPECS,
    check_model,
    check_options,
    elbo,
    make,
    names_with,
    options_of,
    owned_options,
    owners,
    refusal,
    samples_of,
    spec,
)
from vae_pyro.estimators.spec import Estimator, EstimatorSpec, batch

__all__ = ["BASELINES", "NAMES", "SAMPLE_OPTIONS", "SPECS", "Estimator", "EstimatorSpec", "batch", "check_model", "check_options",
           "elbo", "make", "names_with", "options_of", "owned_options", "owners", "refusal", "samples_of", "spec"]
