"""The categorical VAE of Jang, Gu & Poole 2017: 20 latent variables of 10 classes each, one-hot,

    p(z) = Π_d OneHotCategorical(z_d; uniform),    p_θ(x | z) = Π_j Bernoulli(x_j; σ(g_θ(z))_j),
    q_φ(z | x) = Π_d OneHotCategorical(z_d; softmax(f_φ(x)_d)),

encoder 784-512-256-(20·10), decoder (20·10)-256-512-784, ReLU between layers.
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from vae_pyro.models.nets import mlp


class CategoricalVAE(nn.Module):
    """z ∈ one-hot(classes)^latents; see the module's docstring."""

    conditional = False

    def __init__(self, x_dim: int = 784, latents: int = 20, classes: int = 10, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        self.latents, self.classes = latents, classes
        self.encoder = mlp([x_dim, *hidden, latents * classes], "relu")
        self.decoder = mlp([latents * classes, *hidden[::-1], x_dim], "relu")

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            uniform = x.new_zeros(x.shape[0], self.latents, self.classes)
            z = pyro.sample("z", dist.OneHotCategorical(logits=uniform).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z.flatten(-2)), validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            logits = self.encoder(x).unflatten(-1, (self.latents, self.classes))
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))
