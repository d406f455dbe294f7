"""vae_pyro: variational autoencoders as Pyro model/guide pairs, and a lab for comparing ELBO estimators."""

from vae_pyro.config import Config
from vae_pyro.models import VAE

__all__ = ["VAE", "Config"]
__version__ = "0.1.0"
