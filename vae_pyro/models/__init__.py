"""What a modeller writes: the contract every model keeps (``contract.py``), the networks, the
likelihood registry, the hand-derived ELBO, and the built-in models, which are ordinary clients
of the contract: the VAE, its conditional twin with a prior p(z|y), and the autoencoder baseline."""

from vae_pyro.models.ae import AE
from vae_pyro.models.cvae import CVAE
from vae_pyro.models.vae import VAE

__all__ = ["VAE", "CVAE", "AE"]
