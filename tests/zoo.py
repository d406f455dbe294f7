"""A zoo of small models, one per guide family a modeller uses, each keeping the lab's contract
(loaded by path, as a user's file is: ``tests/zoo.py:FullCovariance``). Data are real vectors of
``x_dim`` values; every likelihood is x ~ N(decoder(latents), 0.5²); the guides are amortised by a
small network of x unless said otherwise."""

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional as F

Z = 2  # latent dimensions
HIDDEN = 8
SIGMA = 0.5


class Zoo(nn.Module):
    """An encoder x → ``outputs`` numbers per image and a linear decoder ``latent_dim`` → x."""

    outputs = 2 * Z
    latent_dim = Z

    def __init__(self, x_dim: int = 6):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, self.outputs))
        self.decoder = nn.Linear(self.latent_dim, x_dim)

    def observe(self, x: torch.Tensor, code: torch.Tensor) -> None:
        pyro.sample("x", dist.Normal(self.decoder(code), SIGMA).to_event(1), obs=x)

    def standard_normal(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Normal(x.new_zeros(len(x), Z), 1.0).to_event(1)

    def model(self, x: torch.Tensor, y=None) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            self.observe(x, pyro.sample("z", self.standard_normal(x)))


class DiagonalNormal(Zoo):
    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 0.1).to_event(1))


class FullCovariance(Zoo):
    """q(z|x) = N(μ(x), L(x) L(x)ᵀ), L lower triangular (``scale_tril``, or ``covariance_matrix`` given)."""

    outputs = 2 * Z + 1
    by_covariance = False

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            out = self.encoder(x)
            below = torch.zeros(len(x), Z, Z, dtype=x.dtype)
            below[:, 1, 0] = out[:, 2 * Z]
            tril = torch.diag_embed(F.softplus(out[:, Z:2 * Z]) + 0.1) + below
            q = (dist.MultivariateNormal(out[:, :Z], covariance_matrix=tril @ tril.transpose(-1, -2))
                 if self.by_covariance else dist.MultivariateNormal(out[:, :Z], scale_tril=tril))
            pyro.sample("z", q)
            self.more_latents(out)

    def more_latents(self, out: torch.Tensor) -> None:
        """Sites a subclass's guide adds inside the data plate, from the encoder's output."""


class FullCovarianceMatrix(FullCovariance):
    by_covariance = True


class NormalAndLogNormal(FullCovariance):
    """z ~ N(0, I) with a full-covariance guide, beside a per-image scale s ~ LogNormal(0, 0.5):
    x ~ N(s · W z + b, 0.5²)."""

    outputs = 2 * Z + 3

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", self.standard_normal(x))
            s = pyro.sample("s", dist.LogNormal(x.new_zeros(len(x)), 0.5))
            pyro.sample("x", dist.Normal(s.unsqueeze(-1) * self.decoder(z), SIGMA).to_event(1), obs=x)

    def more_latents(self, out):
        pyro.sample("s", dist.LogNormal(out[:, -2], F.softplus(out[:, -1]) + 0.1))


class Flow(Zoo):
    """q(z|x): a standard Normal through a conditional affine autoregressive flow with context x."""

    def __init__(self, x_dim: int = 6):
        super().__init__(x_dim)
        del self.encoder  # the flow is the guide's only network
        self.flow = self.make_flow(x_dim)

    @staticmethod
    def make_flow(x_dim: int):
        return T.conditional_affine_autoregressive(Z, x_dim, hidden_dims=[HIDDEN])

    def guide(self, x, y=None):
        pyro.module("flow", self.flow)
        with pyro.plate("data", len(x)):
            base = dist.Normal(x.new_zeros(len(x), Z), 1.0).to_event(1)
            pyro.sample("z", dist.ConditionalTransformedDistribution(base, [self.flow]).condition(x))


class SplineFlow(Flow):
    @staticmethod
    def make_flow(x_dim: int):
        return T.conditional_spline(Z, x_dim, hidden_dims=[HIDDEN], count_bins=4)


class GammaScale(Zoo):
    """A positive latent: s ~ Gamma(2, 2), x ~ N(s · w + b, 0.5²); q(s|x) = Gamma(α(x), β(x))."""

    latent_dim = 1

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            s = pyro.sample("s", dist.Gamma(x.new_full((len(x), 1), 2.0), 2.0).to_event(1))
            self.observe(x, s)

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            a, b = (F.softplus(o) + 0.5 for o in self.encoder(x)[:, :2].chunk(2, -1))
            pyro.sample("s", dist.Gamma(a, b).to_event(1))


class BetaWeight(Zoo):
    """A latent in (0, 1): p ~ Beta(2, 2); q(p|x) = Beta(a(x), b(x))."""

    latent_dim = 1

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            self.observe(x, pyro.sample("p", dist.Beta(x.new_full((len(x), 1), 2.0), 2.0).to_event(1)))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            a, b = (F.softplus(o) + 0.5 for o in self.encoder(x)[:, :2].chunk(2, -1))
            pyro.sample("p", dist.Beta(a, b).to_event(1))


class DirichletMixture(Zoo):
    """A simplex latent: π ~ Dirichlet(1, 1, 1), x ~ N(W π + b, 0.5²); q(π|x) = Dirichlet(α(x))."""

    outputs = latent_dim = 3

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            self.observe(x, pyro.sample("pi", dist.Dirichlet(x.new_ones(len(x), 3))))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("pi", dist.Dirichlet(F.softplus(self.encoder(x)) + 0.5))


class Mixture(Zoo):
    """q(z|x): Pyro's MixtureOfDiagNormals of two components."""

    outputs = 2 * (2 * Z) + 2

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            out = self.encoder(x)
            locs = out[:, :2 * Z].reshape(-1, 2, Z)
            scales = F.softplus(out[:, 2 * Z:4 * Z]).reshape(-1, 2, Z) + 0.1
            pyro.sample("z", dist.MixtureOfDiagNormals(locs, scales, out[:, 4 * Z:]))


class RelaxedBits(Zoo):
    """Relaxed binary latents: z ~ RelaxedBernoulli(τ = 0.5, p = 1/2)^2; q(z|x) = RelaxedBernoulli(τ, logits(x))."""

    outputs = Z
    temperature = 0.5

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            prior = dist.RelaxedBernoulli(torch.tensor(self.temperature).to(x), logits=x.new_zeros(len(x), Z))
            self.observe(x, pyro.sample("z", prior.to_event(1)))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            logits = self.encoder(x).clamp(-3, 3)
            pyro.sample("z", dist.RelaxedBernoulli(torch.tensor(self.temperature).to(x), logits=logits).to_event(1))


class RelaxedCategory(Zoo):
    """A relaxed one-hot latent of 3 classes, τ = 0.5."""

    outputs = latent_dim = 3
    temperature = 0.5

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            prior = dist.RelaxedOneHotCategorical(torch.tensor(self.temperature).to(x), logits=x.new_zeros(len(x), 3))
            self.observe(x, pyro.sample("c", prior))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            q = dist.RelaxedOneHotCategorical(torch.tensor(self.temperature).to(x), logits=self.encoder(x).clamp(-3, 3))
            pyro.sample("c", q)


class NestedPlate(Zoo):
    """Two latent sites of different shapes: z (2 per image) and u (one per image and group, under a
    nested plate at dim -2): u_g ~ N(c_g, 1), x ~ N(W z + V u, 0.5²)."""

    groups = 3
    outputs = 2 * Z + 2 * 3

    def __init__(self, x_dim: int = 6):
        super().__init__(x_dim)
        self.c = nn.Parameter(torch.zeros(self.groups, 1))
        self.v = nn.Linear(self.groups, x_dim, bias=False)

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        pyro.module("v", self.v)
        c = pyro.param("c", self.c)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", self.standard_normal(x))  # (..., 1, N, Z): dim -2 is the groups'
            with pyro.plate("groups", self.groups, dim=-2):
                u = pyro.sample("u", dist.Normal(c.expand(self.groups, len(x)), 1.0))  # (..., G, N)
            mean = self.decoder(z) + self.v(u.transpose(-1, -2).unsqueeze(-3))
            pyro.sample("x", dist.Normal(mean, SIGMA).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            out = self.encoder(x)
            pyro.sample("z", dist.Normal(out[:, :Z], F.softplus(out[:, Z:2 * Z]) + 0.1).to_event(1))
            with pyro.plate("groups", self.groups, dim=-2):
                loc, raw = out[:, 2 * Z:].T.chunk(2, 0)
                pyro.sample("u", dist.Normal(loc, F.softplus(raw) + 0.1))


class ParamScale(Zoo):
    """A guide whose scale is a ``pyro.param`` (positive, shared by all images) and whose mean is amortised."""

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        scale = pyro.param("q_scale", lambda: x.new_full((Z,), 0.7), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.encoder(x)[:, :Z], scale).to_event(1))


class Bits(Zoo):
    """Discrete latents: z ∈ {0, 1}^3 with a learned prior and a Bernoulli guide (no reparameterised sample)."""

    outputs = latent_dim = 3

    def __init__(self, x_dim: int = 6):
        super().__init__(x_dim)
        self.prior_logits = nn.Parameter(torch.zeros(3))

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        logits = pyro.param("prior_logits", self.prior_logits)
        with pyro.plate("data", len(x)):
            self.observe(x, pyro.sample("z", dist.Bernoulli(logits=logits.expand(len(x), 3)).to_event(1)))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


class ScaledBits(Bits):
    """Bits with its latent site weighted by poutine.scale(0.5) in model and guide (a KL weight β on a discrete
    site): the objective is scaled, the density the draws come from is not."""

    def model(self, x, y=None):
        with poutine.scale(scale=0.5):
            super().model(x, y)

    def guide(self, x, y=None):
        with poutine.scale(scale=0.5):
            super().guide(x, y)


class Category(Zoo):
    """An enumerable discrete latent: c ∈ {0, 1, 2} per image, a uniform prior, a Categorical guide."""

    outputs = latent_dim = 3

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(len(x), 3)))
            self.observe(x, F.one_hot(c, 3).to(x.dtype))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=self.encoder(x)))


FAMILIES = (DiagonalNormal, FullCovariance, FullCovarianceMatrix, NormalAndLogNormal, Flow, SplineFlow, GammaScale,
            BetaWeight, DirichletMixture, Mixture, RelaxedBits, RelaxedCategory, NestedPlate, ParamScale, Bits, ScaledBits, Category)


def data(n: int = 8, x_dim: int = 6, seed: int = 0) -> torch.Tensor:
    """Real vectors with some structure: a 2-d code through a fixed map, plus noise (float64)."""
    gen = torch.Generator().manual_seed(seed)
    code = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return code @ torch.randn(2, x_dim, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(
        n, x_dim, generator=gen, dtype=torch.float64)


class LinearFullCovariance(Zoo):
    """The linear-Gaussian model x ~ N(W z + b, σ² I), z ~ N(0, I), whose posterior is N(m(x), S) with
    S = σ² (WᵀW + σ² I)⁻¹ full covariance and m(x) = S Wᵀ (x − b) / σ²: a linear encoder and one shared
    scale_tril can hold it exactly (``set_exact_posterior``)."""

    def __init__(self, x_dim: int = 6):
        super().__init__(x_dim)
        self.encoder = nn.Linear(x_dim, Z)
        self.raw_tril = nn.Parameter(torch.zeros(Z, Z))

    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.raw_tril, -1) + torch.diag(torch.exp(torch.diagonal(self.raw_tril)))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        pyro.param("raw_tril", self.raw_tril)  # registered; scale_tril() reads the module's own tensor
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(self.encoder(x), scale_tril=self.scale_tril()))

    @torch.no_grad()
    def set_exact_posterior(self) -> None:
        w, b = self.decoder.weight, self.decoder.bias
        cov = SIGMA**2 * torch.linalg.inv(w.T @ w + SIGMA**2 * torch.eye(Z, dtype=w.dtype))
        gain = cov @ w.T / SIGMA**2
        self.encoder.weight.copy_(gain)
        self.encoder.bias.copy_(-gain @ b)
        tril = torch.linalg.cholesky(cov)
        self.raw_tril.copy_(torch.tril(tril, -1) + torch.diag(torch.log(torch.diagonal(tril))))


class WrongHand(DiagonalNormal):
    """A negative control: a hand_loss that takes the decoder's σ² for its σ (what the check must catch)."""

    def hand_loss(self, x, y=None, particles=1, eps=None):
        loc, raw = self.encoder(x).chunk(2, -1)
        q = dist.Normal(loc, F.softplus(raw) + 0.1)
        z = q.rsample((particles,))
        recon = dist.Normal(self.decoder(z), SIGMA**2).log_prob(x).sum(-1).mean(0)
        kl = torch.distributions.kl_divergence(q, dist.Normal(torch.zeros_like(loc), 1.0)).sum(-1)
        return -(recon - kl).sum()


class OneHotCategory(Zoo):
    """Two one-hot latents of 3 classes each (the categorical VAE's kind of site), a uniform prior."""

    outputs = latent_dim = 6

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.OneHotCategorical(logits=x.new_zeros(len(x), 2, 3)).to_event(1))
            self.observe(x, z.flatten(-2))

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.OneHotCategorical(logits=self.encoder(x).unflatten(-1, (2, 3))).to_event(1))


class LayeredBits(Bits):
    """Two layers of binary latents, the second's guide logits depending on the first's draw (a sigmoid
    belief net's guide): ARM, DisARM, REBAR and RELAX's stacked points cannot be formed, and are refused."""

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        logits = pyro.param("prior_logits", self.prior_logits)
        with pyro.plate("data", len(x)):
            top = pyro.sample("top", dist.Bernoulli(logits=logits.expand(len(x), 3)).to_event(1))
            z = pyro.sample("z", dist.Bernoulli(logits=2 * top - 1).to_event(1))
            self.observe(x, z)

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            out = self.encoder(x)
            top = pyro.sample("top", dist.Bernoulli(logits=out).to_event(1))
            pyro.sample("z", dist.Bernoulli(logits=out + 2 * top - 1).to_event(1))


FAMILIES += (OneHotCategory, LayeredBits)
