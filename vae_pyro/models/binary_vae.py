"""The binary VAE of the discrete-gradient literature's benchmark (Dong, Mnih & Tucker 2020, after
Tucker et al. 2017 and Yin & Zhou 2019): 200 Bernoulli latents with a learned prior,

    p_a(z) = Π_d Bernoulli(z_d; σ(a_d)),    p_θ(x | z) = Π_j Bernoulli(x_j; σ(g_θ(z))_j),
    q_φ(z | x) = Π_d Bernoulli(z_d; σ(f_φ(x − x̄))_d),

with f, g linear (784 → 200, 200 → 784) or, with ``net="nonlinear"``, two hidden layers of 200 with
LeakyReLU(0.3) on each side. The encoder sees de-meaned images (x̄, the training set's pixel means),
and the decoder's output bias starts at the pixel logits log x̄ − log(1 − x̄) (``init_from_data``).
The protocol trains the prior logits a at 100× the networks' learning rate (``lr_scale``).
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

NETS = ("linear", "nonlinear")
HIDDEN, SLOPE = 200, 0.3
PIXEL_CLAMP = 1e-3  # keeps the initial output logits finite for pixels never (or always) on


def leaky_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between ``sizes``, LeakyReLU(0.3) between them."""
    layers: list[nn.Module] = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(m, n)] + ([nn.LeakyReLU(SLOPE)] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class PriorLogits(nn.Module):
    def __init__(self, z_dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(z_dim))


class BinaryVAE(nn.Module):
    """z ∈ {0, 1}^z_dim; see the module's docstring."""

    conditional = False
    lr_scale = {"prior": 100.0}  # 1e-2 for the prior logits when the networks train at 1e-4

    def __init__(self, x_dim: int = 784, z_dim: int = 200, net: str = "linear"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"unknown net {net!r}; choose one of {', '.join(NETS)}")
        middle = [HIDDEN, HIDDEN] if net == "nonlinear" else []
        self.z_dim = z_dim
        self.encoder = leaky_mlp([x_dim, *middle, z_dim])
        self.decoder = leaky_mlp([z_dim, *middle, x_dim])
        self.prior = PriorLogits(z_dim)
        self.register_buffer("pixel_mean", torch.zeros(x_dim))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """x̄ from the training images; the decoder's output bias at its logits."""
        self.pixel_mean.copy_(x.mean(0))
        self.decoder[-1].bias.copy_(torch.logit(self.pixel_mean.clamp(PIXEL_CLAMP, 1 - PIXEL_CLAMP)))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        with pyro.plate("data", x.shape[0]):
            logits = self.prior.logits.expand(x.shape[0], self.z_dim)
            z = pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x - self.pixel_mean)).to_event(1))
