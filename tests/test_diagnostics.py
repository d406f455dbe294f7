"""Gradient variance and SNR: the ordering the theory predicts, on real digits."""

import pytest
import torch

from vae_pyro import estimators
from vae_pyro.lab import diagnostics
from vae_pyro.models import VAE


@pytest.fixture(scope="module")
def stats(batch):
    """Guide (φ) / model (θ) gradient statistics at a fixed initialisation, 200 draws per estimator."""
    torch.manual_seed(0)
    vae = VAE(z_dim=8, hidden=(64,))
    out = {}
    for label, kwargs in [("trace", {}), ("meanfield", {}), ("hand", {}), ("score", {}),
                          ("iwae-1", {"iwae_k": 1}), ("iwae-50", {"iwae_k": 50})]:
        est = estimators.make(label.split("-")[0], **kwargs)
        out[label] = {s.group: s for s in diagnostics.gradient_stats(est, vae, batch, draws=200)}
    return out


def test_encoder_gradient_variance_orders_score_trace_meanfield(stats):
    var = {name: s["guide"].variance for name, s in stats.items()}
    # Each figure averages the variance over ~100k parameters, each estimated from 200 draws
    # (relative se of one variance ~ sqrt(2/199) = 10%); the margins below are several times that.
    assert var["score"] > 100 * var["trace"]
    assert var["trace"] > 1.5 * var["meanfield"]
    assert var["hand"] == pytest.approx(var["meanfield"], rel=0.1)


def test_decoder_snr_rises_with_iwae_k(stats):
    assert stats["iwae-50"]["model"].snr > 1.2 * stats["iwae-1"]["model"].snr


def test_gradient_stats_of_a_noiseless_estimator_have_zero_variance(batch):
    """With particles that do not vary (encoder scale at its floor, KL analytic), draws are identical."""
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(16,))
    with torch.no_grad():
        vae.encoder.net[-1].bias[4:] = -50.0  # σ(x) = floor 1e-3 + softplus(-50) ≈ 1e-3: z ≈ μ(x)
        vae.encoder.net[-1].weight[4:] = 0.0
    stats = diagnostics.gradient_stats(estimators.make("meanfield"), vae, batch, draws=20)
    signal = diagnostics.gradient_stats(estimators.make("meanfield"), VAE(z_dim=4, hidden=(16,)), batch, draws=20)
    for quiet, loud in zip(stats, signal):
        assert quiet.variance < 1e-3 * loud.variance
