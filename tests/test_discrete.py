"""The discrete-latent estimators where exact gradients exist: on a model with d = 6 binary latents all
2^6 values (and all 64^K tuples of K draws) are enumerated, so the ELBO, the IWAE bound and their
gradients are known exactly. Every unbiased estimator's mean gradient (guide and model, projected on
a fixed direction) lies within 4 standard errors of its bound's;
a leave-one-out baseline that includes its own draw (a silent bias) does not; gumbel-st's bias is
shown, and falls with its temperature while its variance rises. At fixed weights on the binary VAE,
the variance claims of the papers that hold here are asserted (``docs``: the measured table)."""

import contextlib
import itertools
import math
import runpy
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from vae_pyro import estimators
from vae_pyro.errors import VaeError
from vae_pyro.estimators import arm, gumbel, relax, rloo
from vae_pyro.lab import traces
from vae_pyro.models.binary_vae import PriorLogits

discrete_variance = runpy.run_path(str(Path(__file__).parents[1] / "experiments" / "discrete_variance.py"))
chunked = discrete_variance["chunked"]

D, X, N, DRAWS = 6, 8, 16, 500


class TinyBits(nn.Module):
    """z ∈ {0, 1}^6 with learned prior logits; x ∈ {0, 1}^8; linear encoder and decoder."""

    def __init__(self, x_dim: int = X):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(x_dim, D), nn.Linear(D, x_dim)
        self.prior = PriorLogits(D)

    @staticmethod
    def support() -> torch.Tensor:
        """Every value of z: (2^6, 6)."""
        return torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior.logits.expand(len(x), D)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


VARIABLES, CLASSES = 2, 4


class TinyCategories(nn.Module):
    """z: 2 one-hot variables of 4 classes (16 values) with learned prior logits; x ∈ {0, 1}^8; linear nets."""

    def __init__(self, x_dim: int = X):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(x_dim, VARIABLES * CLASSES), nn.Linear(VARIABLES * CLASSES, x_dim)
        self.prior = PriorLogits(VARIABLES * CLASSES)

    @staticmethod
    def support() -> torch.Tensor:
        """Every value of z: (4^2, 2, 4)."""
        eye = torch.eye(CLASSES)
        return torch.stack([torch.stack([eye[i], eye[j]]) for i in range(CLASSES) for j in range(CLASSES)])

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        with pyro.plate("data", len(x)):
            prior = self.prior.logits.reshape(VARIABLES, CLASSES).expand(len(x), VARIABLES, CLASSES)
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z.flatten(-2))).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.OneHotCategorical(logits=self.encoder(x).unflatten(-1, (VARIABLES, CLASSES)))
                        .to_event(1))


def enumerated(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z | x_i), log p(x_i, z)) at every value z of the module's ``support()``: (values, N) each,
    differentiable."""
    log_q, log_p = [], []
    for value in module.support().to(x.dtype):
        z = {"z": value.expand(len(x), *value.shape)}
        guide = poutine.trace(poutine.condition(module.guide, z)).get_trace(x)
        model = poutine.trace(poutine.condition(module.model, z)).get_trace(x)
        log_q.append(guide.nodes["z"]["fn"].log_prob(z["z"]))
        log_p.append(model.nodes["z"]["fn"].log_prob(z["z"]) + model.nodes["x"]["fn"].log_prob(x))
    return torch.stack(log_q), torch.stack(log_p)


def exact_bound(module: nn.Module, x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Σ_i E_{z_1..z_k ~ q(· | x_i)} log (1/k) Σ_j w(z_j), every (z_1, ..., z_k) enumerated: the ELBO at k = 1,
    the IWAE bound of k draws above."""
    log_q, log_p = enumerated(module, x)
    log_w, joint_q = log_p - log_q, log_q
    values = len(log_q)
    for _ in range(k - 1):  # one more draw: the grid of (earlier draws, this draw), flattened
        log_w = torch.logaddexp(log_w.unsqueeze(1), (log_p - log_q).unsqueeze(0)).reshape(-1, len(x))
        joint_q = (joint_q.unsqueeze(1) + log_q.unsqueeze(0)).reshape(-1, len(x))
    assert joint_q.shape[0] == values**k
    return (joint_q.exp() * (log_w - math.log(k))).sum()


def exact_gradient(module: nn.Module, x: torch.Tensor, groups: dict, k: int = 1) -> dict[str, torch.Tensor]:
    """The exact gradient of −(the bound of k draws) per group, flattened."""
    module.zero_grad()
    (-exact_bound(module, x, k)).backward()
    exact = {g: torch.cat([p.grad.flatten() for p in ps]) for g, ps in groups.items()}
    module.zero_grad(set_to_none=True)
    return exact


def make_setting(cls: type[nn.Module], along_exact: bool = False) -> tuple:
    """(module, batch, parameter groups, projection directions, the exact projected gradient of −ELBO per group).
    The directions are random, or with ``along_exact`` the exact gradient's own (where an estimator of none
    at all is furthest from it, in standard errors)."""
    with torch.random.fork_rng():  # the session's RNG stream is left as it was
        torch.manual_seed(0)
        module = cls().double()
        with torch.no_grad():  # logits of a few nats: far from 1/2, where the estimators differ
            module.encoder.weight.mul_(3)
            module.decoder.weight.mul_(3)
            module.prior.logits.copy_(torch.randn(module.prior.logits.shape))
        x = (torch.rand(N, X, dtype=torch.float64) < 0.5).double()
    groups = traces.parameter_groups(module, x)
    gen = torch.Generator().manual_seed(1)
    direction = {g: [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ps] for g, ps in groups.items()}
    exact = exact_gradient(module, x, groups)
    if along_exact:
        direction = {g: list((exact[g] / exact[g].norm()).split([p.numel() for p in ps]))
                     for g, ps in groups.items()}
        direction = {g: [u.reshape(p.shape) for u, p in zip(us, groups[g])] for g, us in direction.items()}
    flat = {g: torch.cat([u.flatten() for u in direction[g]]) for g in groups}
    return module, x, groups, direction, {g: (exact[g] @ flat[g]).item() for g in groups}


@pytest.fixture(scope="module")
def setting():
    return make_setting(TinyBits)


@pytest.fixture(scope="module")
def categories():
    return make_setting(TinyCategories, along_exact=True)  # on a random direction, φ's is within 4 se of 0


def draws(setting, name: str, draws: int = DRAWS, **options) -> dict[str, torch.Tensor]:
    """``draws`` gradients of −ELBO per group, flattened: {group: (draws, parameters)}. nvil's guide gradient
    is multiplied back by the max(1, √v) it was divided by (v from the draws before, so each stays unbiased)."""
    module, x, groups, _, _ = setting
    pyro.clear_param_store()
    out = {g: [] for g in groups}
    with torch.random.fork_rng():
        torch.manual_seed(2)  # before the estimator: RELAX's network draws its initial weights
        est = estimators.make(name, 1, X, **options)
        if est.baseline_net is not None:
            est.baseline_net.double()
        for _ in range(draws):
            scale = {"guide": est.baseline_net.var.sqrt().clamp_min(1).item() if name == "nvil" else 1.0, "model": 1.0}
            module.zero_grad(set_to_none=True)
            est.backward(module, x)
            for g, ps in groups.items():
                out[g].append(scale[g] * torch.cat([p.grad.flatten() for p in ps]))
    module.zero_grad(set_to_none=True)
    return {g: torch.stack(v) for g, v in out.items()}


def projected(setting, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each draw's gradient on the fixed random direction of its group."""
    direction = setting[3]
    return {g: v @ torch.cat([u.flatten() for u in direction[g]]) for g, v in grads.items()}


def z_of(values: torch.Tensor, exact: float) -> float:
    return ((values.mean() - exact) / (values.std() / math.sqrt(len(values)))).item()


UNBIASED = [("rloo", {"iwae_k": 2}), ("rloo", {"iwae_k": 5}), ("arm", {}), ("disarm", {}), ("disarm", {"particles": 3}),
            ("rebar", {}), ("relax", {}), ("nvil", {})]  # score (Pyro's): the conformance suite, on zoo.Bits


def assert_unbiased(setting, name: str, options: dict) -> None:
    """Each group's projected gradient within 4 se of the enumerated one, with the power to tell it from none."""
    exact = setting[-1]
    got = projected(setting, draws(setting, name, **options))
    for group in ("guide", "model"):
        assert abs(z_of(got[group], exact[group])) < 4, (group, z_of(got[group], exact[group]))
        # the power to see an estimator of none at all (|∇| from the truth) or of the wrong sign (2|∇|) at 4 se
        assert abs(exact[group]) > 4 * got[group].std().item() / math.sqrt(len(got[group])), group


@pytest.mark.parametrize("name,options", UNBIASED, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in UNBIASED])
def test_expected_gradient_equals_the_enumerated_one(setting, name, options):
    assert_unbiased(setting, name, options)


ONE_HOT = [("rebar", {}), ("relax", {}), ("rloo", {"iwae_k": 2})]


@pytest.mark.parametrize("name,options", ONE_HOT, ids=[n for n, _ in ONE_HOT])
def test_one_hot_estimators_equal_the_enumerated_gradient(categories, name, options):
    """At one-hot sites (the Gumbel-max draw, its conditional z̃ given b, the softmax relaxation)."""
    assert_unbiased(categories, name, options)


def test_rebar_with_z_in_place_of_its_conditional_draw_is_caught(categories, monkeypatch):
    """Negative control: c(z) at the very noise that chose b, instead of z̃ ~ p(z | b) drawn afresh, makes the
    control variate correlate with b's score: the guide gradient is biased, and the comparison must fail."""
    original = relax.one_hot_points

    def without_conditional(alpha, u, v):
        b, z, _, score = original(alpha, u, v)
        return b, z, z, score

    monkeypatch.setitem(relax.POINTS, "one-hot", (without_conditional, relax.POINTS["one-hot"][1]))
    exact = categories[-1]
    assert abs(z_of(projected(categories, draws(categories, "rebar"))["guide"], exact["guide"])) > 4


def test_gumbel_straight_through_at_one_hot_sites_follows_the_kl_term_too(categories, monkeypatch):
    """With a decoder blind to z, f = log p(z) − log q(z | x) and the exact φ-gradient is −∇KL. The
    straight-through gradient must follow it (its projection on the exact direction > 4 se above 0): through
    one-hot densities that read only the argmax it had no path, and a mean of zero (the negative control)."""
    module, x, groups = categories[:3]
    with torch.no_grad():
        saved = module.decoder.weight.clone()
        module.decoder.weight.zero_()
    try:
        exact = exact_gradient(module, x, groups)["guide"]
        u = exact / exact.norm()

        def along_exact():
            return draws(categories, "gumbel-st", temperature=0.5)["guide"] @ u

        with_path = along_exact()
        assert z_of(with_path, 0.0) > 4, z_of(with_path, 0.0)
        monkeypatch.setattr(gumbel, "OffVertexDensities", contextlib.nullcontext)
        without = along_exact()
        assert abs(z_of(without, 0.0)) < 4, z_of(without, 0.0)
    finally:
        with torch.no_grad():
            module.decoder.weight.copy_(saved)


def towards_iwae(setting, grads: dict[str, torch.Tensor], k: int) -> dict[str, tuple[float, float]]:
    """Each group's draws on u = (∇IWAE_k − ∇ELBO) / ‖∇IWAE_k − ∇ELBO‖, the direction in which the two bounds'
    exact gradients differ most: {group: (z against IWAE_k's, z against the ELBO's)}."""
    module, x, groups = setting[:3]
    iwae, elbo = exact_gradient(module, x, groups, k), exact_gradient(module, x, groups)
    out = {}
    for g, v in grads.items():
        u = (iwae[g] - elbo[g]) / (iwae[g] - elbo[g]).norm()
        out[g] = (z_of(v @ u, (iwae[g] @ u).item()), z_of(v @ u, (elbo[g] @ u).item()))
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_multi_sample_disarm_equals_the_enumerated_iwae_gradient(setting, k):
    """iwae-disarm's mean gradient is the IWAE bound's of K draws (all 64^K tuples enumerated), within 4 se on
    a random direction and on the one where it differs most from the ELBO's, where the ELBO's is > 4 se off."""
    module, x, groups, direction = setting[:4]
    exact = exact_gradient(module, x, groups, k)
    grads = draws(setting, "iwae-disarm", iwae_k=k)
    got = projected(setting, grads)
    for group in ("guide", "model"):
        on_direction = (exact[group] @ torch.cat([u.flatten() for u in direction[group]])).item()
        assert abs(z_of(got[group], on_direction)) < 4, (group, z_of(got[group], on_direction))
        against_iwae, against_elbo = towards_iwae(setting, grads, k)[group]
        assert abs(against_iwae) < 4 < abs(against_elbo), (group, against_iwae, against_elbo)


def test_multi_sample_disarm_without_the_weights_own_score_is_caught(setting, monkeypatch):
    """Negative control: the φ-gradient of log q at fixed b has mean zero in the ELBO but not in the IWAE
    bound; dropping it (log q held fixed, as ``disarm`` may) must fail the comparison."""
    pairs = arm.AugmentReinforceMerge.pairs
    monkeypatch.setattr(arm.AugmentReinforceMerge, "pairs",
                        lambda self, model, guide, args, kwargs, detach_q: pairs(self, model, guide, args, kwargs, True))
    against_iwae, _ = towards_iwae(setting, draws(setting, "iwae-disarm", iwae_k=2), 2)["guide"]
    assert abs(against_iwae) > 4, against_iwae


def test_a_baseline_that_sees_its_own_draw_is_caught(setting, monkeypatch):
    """Negative control: with the mean of all K draws as each one's baseline, the score term shrinks by
    (K − 1)/K (the half, at K = 2): the same comparison must fail."""
    monkeypatch.setattr(rloo, "leave_one_out_signal", lambda f: f - f.mean(0, keepdim=True))
    exact = setting[-1]
    assert abs(z_of(projected(setting, draws(setting, "rloo", iwae_k=2))["guide"], exact["guide"])) > 4


def test_disarm_with_the_wrong_sign_is_caught(setting, monkeypatch):
    """Negative control: DisARM with (−1)^b in place of (−1)^b̃ points the wrong way; the comparison must fail."""
    original = arm.disarm_gradient

    def flipped(f, f_tilde, u, alpha):
        return -original(f, f_tilde, u, alpha)

    monkeypatch.setattr(arm, "disarm_gradient", flipped)
    exact = setting[-1]
    assert abs(z_of(projected(setting, draws(setting, "disarm"))["guide"], exact["guide"])) > 4


def test_a_hierarchy_of_discrete_layers_is_refused_even_through_the_elbo_alone():
    """vp.elbo("arm") skips the lab's refusal: the stacked points find the dependence themselves."""
    import zoo

    torch.manual_seed(0)
    module, x = zoo.LayeredBits(x_dim=6), zoo.data().float()
    with pytest.raises(VaeError, match="depend on x alone"):
        for _ in range(20):  # the copies differ once some upper unit's pair differs
            estimators.make("arm", 1, 6).backward(module, x)


def test_gumbel_straight_through_is_biased_less_so_and_noisier_as_the_temperature_falls(setting):
    """The bias as ‖E ĝ − ∇‖² (estimated without its noise: ‖ḡ − ∇‖² − tr Ĉov / S, per chunk of draws) and
    the variance as tr Cov, over φ's parameters, at τ = 2 and τ = 0.25."""
    exact = exact_gradient(*setting[:3])["guide"]

    def bias2(g):
        return ((g.mean(0) - exact) ** 2).sum() - g.var(0).sum() / len(g)

    hot, cold = (draws(setting, "gumbel-st", temperature=t)["guide"] for t in (2.0, 0.25))
    worst = ((hot.mean(0) - exact) / (hot.var(0) / DRAWS).sqrt()).abs().max().item()
    assert worst > 5, worst  # some coordinate's mean is off by more than 5 se: beyond chance over its 54 coordinates
    (hot_b, hot_se), (cold_b, cold_se) = chunked(hot, bias2), chunked(cold, bias2)
    assert hot_b - cold_b > 4 * math.hypot(hot_se, cold_se), (hot_b, cold_b)
    (hot_v, hot_vse), (cold_v, cold_vse) = (chunked(g, lambda c: c.var(0).sum()) for g in (hot, cold))
    assert cold_v - hot_v > 4 * math.hypot(hot_vse, cold_vse), (hot_v, cold_v)


@pytest.fixture(scope="module")
def variances() -> dict[str, tuple[float, float]]:
    """The docs' table (``experiments/discrete_variance.py``): tr Cov of the encoder's gradient, (mean, se)."""
    return discrete_variance["variances"]()


def below(variances, low: str, high: str) -> float:
    """How many standard errors ``low``'s variance lies below ``high``'s."""
    (a, a_se), (b, b_se) = variances[low], variances[high]
    return (b - a) / math.hypot(a_se, b_se)


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_disarm_has_less_variance_than_arm(variances):
    """Dong, Mnih & Tucker 2020: DisARM is ARM with u integrated out given the pair."""
    assert below(variances, "disarm", "arm") > 4


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_rebar_and_relax_fitted_at_the_weights_have_less_variance_than_rloo_and_disarm(variances):
    """With their control variates fitted (on other training batches), the relaxation's correction, at one more
    evaluation of f, beats the leave-one-out baseline and DisARM here. How DisARM and RLOO, and RELAX and
    REBAR, compare is reported in the docs, not asserted."""
    for low in ("rebar", "relax"):
        for high in ("rloo", "disarm"):
            assert below(variances, low, high) > 4, (low, high)
