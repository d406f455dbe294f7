"""REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017) and RELAX (Grathwohl, Choi, Wu, Roeder
& Duvenaud 2018) at factorised Bernoulli sites with logits α. With u, v ~ U(0, 1),

    z = α + logit u,   b = 1[z > 0],   z̃ = α + logit u′,  u′ = b (1 − p + p v) + (1 − b)(1 − p) v,  p = σ(α)

(z̃ ~ p(z | b), a reparameterised draw of the logistic noise given b), the gradient in α

    ĝ = (f(b) − c(z̃)) ∇α log q(b | α) + ∇α c(z) − ∇α c(z̃)

is unbiased for any control variate c: REBAR's c(z) = η f(σ(z/λ)), the ELBO's integrand
f = log p_θ(x, ·) − log q_φ(· | x) at the concrete relaxation of temperature λ; RELAX adds a network,
c(z) = η f(σ(z/λ)) + r_ρ(σ(z/λ), x). η, λ (and ρ) are trained beside the module to minimise the
variance of ĝ, by the gradient of Σ ĝ² (here: of the gradient in the logits α, per image). φ gets
ĝ through α; θ gets ∇θ log p_θ(x, b). Each sample evaluates f three times (b, σ(z/λ), σ(z̃/λ)).

At one-hot sites (log-probabilities α, Gumbel noise; the RELAX paper's appendix), with g(u) = −log(−log u),

    z = α + g(u),   b = onehot(argmax z),   z̃_b = g(v_b),   z̃_i = −log(−e^{−α_i} log v_i − log v_b)  (i ≠ b),

the relaxation softmax(z/λ), ∇α log q(b | α) = b − softmax(α), and f's densities extended linearly off the
vertices (``discrete.OffVertexDensities``).
"""

import math

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from vae_pyro.estimators.discrete import AtPoints, OffVertexDensities, per_logit, relaxed_density
from vae_pyro.estimators.particles import ParticleBound
from vae_pyro.estimators.spec import EstimatorSpec, expects

HIDDEN = 200


class ControlVariate(nn.Module):
    """η, λ = exp(log λ) and, for RELAX, the network r_ρ(σ(z/λ), x) (its input size set at the first call)."""

    def __init__(self, network: bool):
        super().__init__()
        self.eta = nn.Parameter(torch.ones(()))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.5)))
        self.r = nn.Sequential(nn.LazyLinear(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1), nn.Flatten(-2)) if network \
            else None

    def forward(self, f_relaxed: torch.Tensor, relaxed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """c per draw and image: η f(σ(z/λ)) (+ r_ρ(σ(z/λ), x))."""
        if self.r is None:
            return self.eta * f_relaxed
        return self.eta * f_relaxed + self.r(torch.cat([relaxed, x.expand(*relaxed.shape[:-1], x.shape[-1])], -1))


def logit(u: torch.Tensor) -> torch.Tensor:
    """log u − log(1 − u)."""
    return torch.log(u) - torch.log1p(-u)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """−log(−log u): Gumbel(0, 1) noise from a uniform."""
    return -torch.log(-torch.log(u))


def bernoulli_points(alpha: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(b, z, z̃ ~ p(z | b), ∇α log q(b | α)) at a Bernoulli site."""
    z = alpha + logit(u)
    b = (z > 0).to(alpha.dtype)
    p = torch.sigmoid(alpha)
    tiny, eps = torch.finfo(alpha.dtype).tiny, torch.finfo(alpha.dtype).eps
    u_given_b = (b * (1 - p + p * v) + (1 - b) * (1 - p) * v).clamp(tiny, 1 - eps)
    return b, z, alpha + logit(u_given_b), b - p


def one_hot_points(alpha: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(b, z, z̃ ~ p(z | b), ∇α log q(b | α)) at a one-hot site, classes on the last dim."""
    alpha = torch.log_softmax(alpha, -1)  # log-probabilities: the largest of z then has location 0
    z = alpha + gumbel(u)
    b = F.one_hot(z.argmax(-1), alpha.shape[-1]).to(alpha.dtype)
    log_v_b = (b * torch.log(v)).sum(-1, keepdim=True)
    z_tilde = torch.where(b.bool(), gumbel(v), -torch.log(-torch.exp(-alpha) * torch.log(v) - log_v_b))
    return b, z, z_tilde, b - alpha.exp()


POINTS = {"bernoulli": (bernoulli_points, torch.sigmoid), "one-hot": (one_hot_points, lambda y: torch.softmax(y, -1))}


class RELAX(ParticleBound):
    """:param num_particles: L draws per data point (3L evaluations of f).
    :param network: the ``ControlVariate`` (trained beside the module)."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, *, network: ControlVariate, **kwargs):
        self.draws, self.control = num_particles, network
        self.name = "rebar" if network.r is None else "relax"
        super().__init__(num_particles=3 * num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _surrogate_and_bound(self, model, guide, x, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        drawn: dict[str, tuple] = {}
        temperature = self.control.to(x).log_temperature.exp()  # on the data's device and dtype (the parameters stay)

        def points(name, site_kind, alpha):
            tiny, eps = torch.finfo(alpha.dtype).tiny, torch.finfo(alpha.dtype).eps
            u, v = (torch.rand_like(alpha).clamp(tiny, 1 - eps) for _ in range(2))
            draw, relax = POINTS[site_kind]
            b, z, z_tilde, score = draw(alpha, u, v)
            drawn[name] = (b, relax(z / temperature), relax(z_tilde / temperature), score)
            return torch.cat(drawn[name][:3]), relaxed_density(site_kind, torch.cat([alpha] * 3))  # c's α-path too

        at = AtPoints(points, 3, -(self.max_plate_nesting + 1), self.name)
        with OffVertexDensities():  # f at the relaxed points: the model's densities extended off the vertices
            log_w, _, _ = self.log_weights(model, guide, (x, *args), kwargs, handler=at)
        f, f_z, f_z_tilde = log_w.chunk(3)
        bound = f.detach().mean(0).sum()
        if not torch.is_grad_enabled():
            return bound, bound
        log_p = f + self.log_q[: self.draws]  # log p_θ(x, b): the gradient in θ alone
        x_flat, n = x.reshape(len(x), -1), f.shape[1]

        def per_image(i: int) -> torch.Tensor:  # every site's i-th point, one vector per draw and image
            return torch.cat([r[i].movedim(self.max_plate_nesting, 1).reshape(self.draws, n, -1)
                              for r in drawn.values()], -1)

        c_z = self.control(f_z, per_image(1), x_flat)
        c_z_tilde = self.control(f_z_tilde, per_image(2), x_flat)
        pyro.module(f"{self.name}_control_variate", self.control)
        alphas, nesting = list(at.logits.values()), self.max_plate_nesting
        paths = torch.autograd.grad((c_z - c_z_tilde).mean(0).sum(), alphas, create_graph=True)
        # (f(b) − c(z̃)) ∇α log q(b | α), with ∇α log q(b | α) = b − σ(α) or b − softmax(α): the coefficient
        # keeps its dependence on η, λ, ρ, so that the variance below reaches them through it too
        coefficient = f.detach() - c_z_tilde
        g = [per_logit(coefficient, a, nesting) * drawn[name][3] / self.draws + path
             for (name, a), path in zip(at.logits.items(), paths)]
        variance = sum((gi**2).sum() for gi in g)
        own = [p for p in self.control.parameters() if p.requires_grad]
        d_variance = torch.autograd.grad(variance, own, retain_graph=True, allow_unused=True)
        fit_control = -sum((d.detach() * p).sum() for d, p in zip(d_variance, own) if d is not None)
        through_alpha = sum((gi.detach() * a).sum() for gi, a in zip(g, alphas))
        return through_alpha + log_p.mean(0).sum() + fit_control, bound


SPECS = tuple(EstimatorSpec(
    name=name, build=RELAX, summary=f"ELBO; {what} at Bernoulli and one-hot sites, trained to minimise its "
    "variance", paper=paper, reference=expects("elbo"), needs=frozenset({"relaxable_of_x"}), per_sample=3,
    network=lambda x_dim, options, net=(name == "relax"): ControlVariate(net))
    for name, what, paper in (
        ("rebar", "REBAR's concrete-relaxation control variate", "Tucker et al. 2017"),
        ("relax", "RELAX's control variate, concrete relaxation plus a network", "Grathwohl et al. 2018")))
