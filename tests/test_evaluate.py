"""The importance-sampled log-likelihood against the ELBO."""

import json

import pytest
import torch
from conftest import TINY

from vae_pyro.config import Config
from vae_pyro.lab import evaluate
from vae_pyro.lab.evaluate import evaluate_run
from vae_pyro.lab.train import fit
from vae_pyro.models import hand


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / len(values) ** 0.5


def test_is_log_likelihood_is_unbiased_for_the_elbo_at_k1_and_grows_with_k(trained, mnist5k):
    x = torch.bernoulli(mnist5k.test_x[:300], generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = hand.elbo_terms(trained, x, particles=2000).elbo  # the ELBO to within ~0.05 nats
    ll = {k: evaluate.is_log_likelihood(trained, x, k=k, seed=k) for k in (1, 10, 100)}

    # K = 1: log w = log p(x, z) − log q(z|x) with z ~ q, whose mean is the ELBO
    mean, se = mean_and_se(ll[1] - elbo)
    assert abs(mean) < 4 * se
    # larger K: a tighter bound, above the ELBO and rising with K, each step by more than 4 se
    for small, large in ((1, 10), (10, 100)):
        mean, se = mean_and_se(ll[large] - ll[small])
        assert mean > 4 * se
    mean, se = mean_and_se(ll[100] - elbo)
    assert mean > 4 * se


def test_evaluate_run_writes_its_numbers(tmp_path):
    fit(Config(**{**TINY, "epochs": 1}), tmp_path / "r", progress=False)
    result = evaluate_run(tmp_path / "r", k=20, device="cpu")
    assert json.loads((tmp_path / "r" / "evaluation.json").read_text()) == result
    assert result["test_elbo"] == pytest.approx(result["test_recon"] - result["test_kl"], abs=1e-4)
    assert result["test_is_log_likelihood_k20"] > result["test_elbo"]
    larger = evaluate_run(tmp_path / "r", k=40, device="cpu")  # another K: the first estimate is kept beside it
    assert larger["test_is_log_likelihood_k20"] == result["test_is_log_likelihood_k20"]
    assert larger["test_is_log_likelihood_k40"] > result["test_elbo"]
    fit(Config(**{**TINY, "epochs": 2}), tmp_path / "r", resume=True, progress=False)  # a later epoch: dropped
    assert "test_is_log_likelihood_k20" not in evaluate_run(tmp_path / "r", k=40, device="cpu")


def test_active_units_of_binary_and_one_hot_latents():
    """The discrete analogue: a Bernoulli unit is active when its probability varies over x, a one-hot variable
    when its class probabilities do; an encoder that ignores x has none."""
    from vae_pyro.models.binary_vae import BinaryVAE
    from vae_pyro.models.categorical_vae import CategoricalVAE

    torch.manual_seed(0)
    x = torch.rand(300, 784).round()
    binary, categorical = BinaryVAE(z_dim=30), CategoricalVAE(latents=4, classes=3)
    with torch.no_grad():
        binary.encoder[0].weight[:10].mul_(30)  # ten units that follow x
        binary.encoder[0].weight[10:].zero_()  # twenty at their bias
        for layer in (0, 2, 4):
            categorical.encoder[layer].weight.mul_(10)
    assert evaluate.active_units(binary, x) == 10
    assert evaluate.active_units(categorical, x) == 4
    with torch.no_grad():
        categorical.encoder[4].weight.zero_()
    assert evaluate.active_units(categorical, x) == 0


@pytest.mark.parametrize("grey", [False, True])
def test_the_fast_bernoulli_density_is_torchs_to_float32_rounding(grey):
    """traces.log_density's Bernoulli (no gradients, logits given: hand.bernoulli_log_prob's in-place form)
    against torch's own, in float64, on logits as large as a trained decoder's; and the distributions it does
    not take go to their log_prob."""
    import pyro.distributions as dist

    from vae_pyro.lab.traces import log_density

    gen = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(50, 20, 784, generator=gen)
    x = torch.rand(20, 784, generator=gen) if grey else torch.bernoulli(torch.full((20, 784), 0.3), generator=gen)
    fn = dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
    exact = dist.Bernoulli(logits=logits.double(), validate_args=False).to_event(1).log_prob(x.double())
    with torch.no_grad():
        fast = log_density(fn, x)
        by_probs = dist.Bernoulli(probs=torch.sigmoid(logits), validate_args=False).to_event(1)
        assert torch.equal(log_density(by_probs, x), by_probs.log_prob(x))  # not taken: torch's own
    assert fast.shape == exact.shape == (50, 20)
    torchs = fn.log_prob(x).double()
    # each a sum of 784 float32 terms: both within a few float32 steps of the sum's size
    tolerance = 8 * torch.finfo(torch.float32).eps * exact.abs().max()
    assert (fast.double() - exact).abs().max() < tolerance
    assert (torchs - exact).abs().max() < tolerance
    assert torch.equal(log_density(fn, x), fn.log_prob(x))  # with gradients on: torch's own


def test_the_is_estimate_keeps_its_value_with_the_fast_density(trained, mnist5k, monkeypatch):
    """The IS log-likelihood on the same draws, with the fast density and with torch's."""
    from vae_pyro.lab import traces

    x = torch.bernoulli(mnist5k.test_x[:50], generator=torch.Generator().manual_seed(1))
    fast = evaluate.is_log_likelihood(trained, x, k=200)
    monkeypatch.setattr(traces, "log_density", lambda fn, value: fn.log_prob(value))
    torchs = evaluate.is_log_likelihood(trained, x, k=200)
    assert (fast - torchs).abs().max() < 1e-3  # nats per image: float32 rounding of 784-pixel sums over draws
    assert not torch.equal(fast, torchs)  # the fast path did run
