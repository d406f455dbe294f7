"""The hand-derived ELBO against torch.distributions and against Pyro's estimators."""

import copy

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_pyro.estimators.bounds import log_mean_exp
from vae_pyro.lab import checks, conformance, traces
from vae_pyro.models import CVAE, VAE, hand
from vae_pyro.models.likelihoods import LIKELIHOODS


def test_closed_form_kl_equals_torch_kl_divergence():
    gen = torch.Generator().manual_seed(0)
    loc = 3 * torch.randn(500, 10, generator=gen, dtype=torch.float64)
    scale = torch.exp(torch.randn(500, 10, generator=gen, dtype=torch.float64))
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    torch.testing.assert_close(hand.gaussian_kl(loc, scale), kl_divergence(q, p), rtol=1e-12, atol=1e-12)
    assert checks.kl_gap(loc, scale) < 1e-9


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_log_likelihood_formulas_equal_pyro_distributions(name):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(32, 784, generator=gen, dtype=torch.float64).round()
    params = (torch.randn(32, 784, generator=gen, dtype=torch.float64),)
    if name == "gaussian":
        params += (torch.rand(32, 784, generator=gen, dtype=torch.float64) + 0.05,)
    expected = LIKELIHOODS[name].distribution(*params).log_prob(x)
    torch.testing.assert_close(LIKELIHOODS[name].log_prob(x, *params), expected, rtol=1e-12, atol=1e-9)


def test_normal_log_prob_is_the_diagonal_gaussian_density():
    gen = torch.Generator().manual_seed(2)
    v, loc = torch.randn(2, 50, 6, generator=gen, dtype=torch.float64)
    scale = torch.rand(50, 6, generator=gen, dtype=torch.float64) + 0.1
    expected = dist.Normal(loc, scale).to_event(1).log_prob(v)
    torch.testing.assert_close(hand.normal_log_prob(v, loc, scale), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_hand_equals_meanfield_on_the_same_eps(batch, name, particles, beta):
    torch.manual_seed(0)
    vae = VAE(z_dim=5, hidden=(32,), likelihood=name, beta=beta).double()
    loss_gap, grad_gap = checks.same_eps_gap(vae, batch.double(), particles)
    # float64 arithmetic on ~500-nat losses: differences are rounding only (~1e-13)
    assert loss_gap < 1e-9
    assert grad_gap < 1e-9


def test_same_eps_check_detects_a_wrong_kl(batch, monkeypatch):
    """The equivalence check has teeth: a KL off by a factor 1.01 is caught."""
    torch.manual_seed(0)
    vae = VAE(z_dim=5, hidden=(32,)).double()
    with torch.no_grad():  # move q away from the prior so the KL is sizable
        vae.encoder.net[-1].bias[:5] += 1.0
    right = hand.gaussian_kl
    monkeypatch.setattr(hand, "gaussian_kl", lambda loc, scale: 1.01 * right(loc, scale))
    loss_gap, _ = checks.same_eps_gap(vae, batch.double())
    assert loss_gap > 1e-3


def test_trace_kl_is_unbiased_for_the_closed_form(trained, batch):
    """E[(log q − log p)(z)] = KL: meanfield's loss minus the directly computed ELBO on the same draws of z
    is 0 within 4 standard errors."""
    vae = copy.deepcopy(trained).double()
    value = conformance.check_estimator("meanfield", vae, batch.double(), draws=300)[0]
    assert value.quantity == "value" and value.se > 0  # the Monte-Carlo KL does vary draw to draw
    assert value.se < 0.05  # and there are draws enough to see a bias of 0.2 nats per image
    assert value.ok


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_generic_log_weights_equal_the_hand_derived_ones_on_the_same_draws(mnist5k, batch, model):
    """The lab's log-weights, read from traces of any model, equal the VAE's written out by hand
    (hand.log_weights) on the z the traces drew, to float64 precision; so do their log-mean-exps,
    the IS estimate of log p(x)."""
    torch.manual_seed(0)
    vae = (CVAE if model == "cvae" else VAE)(z_dim=5, hidden=(32,)).double()
    x, y = batch.double(), mnist5k.test_y[: len(batch)] if model == "cvae" else None
    torch.manual_seed(1)
    generic = traces.log_weights(vae, x, y, k=7).log_w
    torch.manual_seed(1)
    guide_tr, _ = traces.particle_traces(vae, x, y, 7, 1)
    loc, scale = vae.encode(x, y)
    eps = (guide_tr.nodes["z"]["value"] - loc) / scale
    by_hand = hand.log_weights(vae, x, eps, y)
    torch.testing.assert_close(generic, by_hand, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(log_mean_exp(generic), log_mean_exp(by_hand), rtol=1e-12, atol=1e-9)
