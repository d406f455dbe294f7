"""The exactness lab: closed forms, and every bound against an exact log p(x)."""

import pytest
import torch

from vae_pyro.data import load
from vae_pyro.data.linear import (
    N_TRAIN,
    X_DIM,
    decoder_params,
    exact_log_likelihood,
    gaussian_log_prob,
    ppca_max_log_likelihood,
)
from vae_pyro.lab import diagnostics
from vae_pyro.lab.compare import config_for
from vae_pyro.lab.experiment import instantiate, make_estimator, restore_run
from vae_pyro.lab.train import fit
from vae_pyro.models import hand

LINEAR = dict(dataset="synthetic-linear", hidden=(), likelihood="gaussian-shared", z_dim=2, seed=0)


def test_gaussian_log_prob_equals_torch_multivariate_normal():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64)
    mean, x = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(50, 6, generator=gen, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mean, cov), expected, rtol=1e-12, atol=1e-10)


def test_exact_log_likelihood_is_the_marginal_of_the_linear_vae():
    vae = instantiate(config_for(LINEAR, "meanfield"), X_DIM, torch.device("cpu")).double()
    w, b, sigma = decoder_params(vae)
    x = load("synthetic-linear").test_x[:100].double()
    cov = w @ w.T + sigma**2 * torch.eye(X_DIM, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    torch.testing.assert_close(exact_log_likelihood(vae, x), expected.detach(), rtol=1e-10, atol=1e-10)


def test_ppca_closed_form_is_the_maximum_of_the_likelihood():
    """Tipping & Bishop's closed form against a numerical maximisation (L-BFGS) of the same likelihood."""
    x = load("synthetic-linear").train_x.double()
    closed = ppca_max_log_likelihood(x, 2)
    torch.manual_seed(0)
    w = torch.randn(X_DIM, 2, dtype=torch.float64, requires_grad=True)
    b = x.mean(0).clone().requires_grad_(True)
    log_sigma = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b, log_sigma], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        cov = w @ w.T + torch.exp(2 * log_sigma) * torch.eye(X_DIM, dtype=torch.float64)
        loss = -gaussian_log_prob(x, b, cov).mean()
        loss.backward()
        return loss

    opt.step(nll)
    assert -nll().item() == pytest.approx(closed, abs=1e-6)


@pytest.fixture(scope="module")
def linear_points(tmp_path_factory):
    """A linear VAE at its initial weights and after one epoch."""
    cfg = config_for({**LINEAR, "epochs": 1, "batch_size": 500, "lr": 0.005}, "meanfield")
    out = tmp_path_factory.mktemp("linear") / "run"
    fit(cfg, out, progress=False)
    cpu = torch.device("cpu")
    return {"initial": instantiate(cfg, X_DIM, cpu).double(), "one epoch": restore_run(out, cpu).module.double()}


def bound(options: dict, name: str, vae, x, draws: int = 10) -> tuple[float, float]:
    values = -diagnostics.loss_draws(make_estimator(config_for(options, name), vae, x), vae, x, draws)
    return values.mean().item(), values.std().item() / draws**0.5


@pytest.mark.parametrize("point", ["initial", "one epoch"])
def test_every_bound_is_below_the_exact_log_likelihood_and_iwae_rises_toward_it(linear_points, point):
    vae, x = linear_points[point], load("synthetic-linear").train_x.double()
    exact = exact_log_likelihood(vae, x).mean().item()
    for name in ("trace", "meanfield", "hand", "score"):
        mean, se = bound(LINEAR, name, vae, x)
        assert mean < exact + 4 * se, name
    previous = None
    for k in (1, 5, 50, 500):
        mean, se = bound({**LINEAR, "iwae_k": k}, "iwae", vae, x)
        assert mean < exact + 4 * se
        if previous is not None:  # a strict rise, by more than 4 standard errors of the difference
            assert mean - previous[0] > 4 * (se**2 + previous[1] ** 2) ** 0.5, k
        previous = (mean, se)


def test_trained_linear_vae_reaches_the_ppca_maximum_likelihood(tmp_path):
    """A linear VAE with diagonal posterior recovers pPCA (Lucas et al. 2019): ELBO within 0.05 nats."""
    cfg = config_for({**LINEAR, "epochs": 400, "batch_size": 500, "lr": 0.005}, "meanfield")
    fit(cfg, tmp_path / "run", progress=False)
    vae = restore_run(tmp_path / "run", torch.device("cpu")).module.double()
    x = load("synthetic-linear").train_x.double()
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = hand.elbo_terms(vae, x, particles=1000).elbo.mean().item()  # MC error ~1e-3 nats over 4,000 points
    best = ppca_max_log_likelihood(x, 2)
    assert len(x) == N_TRAIN
    assert best - 0.05 < elbo <= best
