"""A VAE whose prior is a mixture of Gaussians: the conditional prior p(z|y) of the CVAE with the
label y left unobserved, as a component c the model infers (a Gaussian-mixture VAE).

    c ~ Cat(π),  z | c ~ N(μ_c, diag σ_c²),  x | z ~ Bernoulli(logits(z))
    q(c | x) = Cat(softmax(f(x))),  q(z | x) = N(μ(x), diag σ²(x))

c has no reparameterised sample: `enum` sums it out exactly (TraceEnum_ELBO with c enumerated in
the guide), `score` and `trace` sample it and use the score function. The lab reports how well
q(c|x) clusters the digits beside the bounds.

    vae-pyro compare --model examples/mixture_prior.py:MixturePriorVAE --estimators trace,score,enum
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


class MixturePriorVAE(nn.Module):
    def __init__(self, x_dim: int = 784, z_dim: int = 10, components: int = 10, width: int = 400):
        super().__init__()
        self.prior = nn.ParameterDict({
            "logits": nn.Parameter(torch.zeros(components)),  # π = softmax(logits)
            "loc": nn.Parameter(torch.randn(components, z_dim)),  # μ_c: spread so the components start apart
            "raw_scale": nn.Parameter(torch.zeros(components, z_dim)),  # σ_c = softplus(raw) + 1e-3
        })
        self.encoder = nn.Sequential(nn.Linear(x_dim, width), nn.ReLU(), nn.Linear(width, components + 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, x_dim))
        self.components, self.z_dim = components, z_dim

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)
        p = self.prior
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(logits=p["logits"].expand(len(x), self.components)))
            z = pyro.sample("z", dist.Normal(p["loc"][c], F.softplus(p["raw_scale"][c]) + 1e-3).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module("encoder", self.encoder)
        logits, loc, raw = self.encoder(x).split([self.components, self.z_dim, self.z_dim], dim=-1)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))
