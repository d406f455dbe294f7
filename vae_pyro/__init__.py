"""vae_pyro: variational autoencoders as Pyro model/guide pairs, and a lab for comparing ELBO
estimators on any model that keeps its contract (``vae_pyro.models.contract``)."""

from vae_pyro.api import (
                          Comparison,
                          Dataset,
                          check,
                          compare,
                          config,
                          elbo,
                          evaluate,
                          fit,
                          gradient_stats,
                          load_comparison,
                          load_data,
                          log_likelihood,
)
from vae_pyro.config import Config
from vae_pyro.lab.results import load_run
from vae_pyro.models import AE, CVAE, VAE

__all__ = ["AE", "CVAE", "VAE", "Comparison", "Config", "Dataset", "check", "compare", "config", "elbo", "evaluate", "fit",
           "gradient_stats", "load_comparison", "load_data", "load_run", "log_likelihood"]
__version__ = "0.2.0"
