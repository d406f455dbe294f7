"""Every model × likelihood × estimator; the CVAE's learned prior; the autoencoder; KL warm-up."""

import math

import pyro
import pytest
import torch
from conftest import DISCRETE_NEEDS, TINY
from pyro import poutine
from torch.distributions import ContinuousBernoulli

from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import checks, evaluate
from vae_pyro.lab.experiment import instantiate
from vae_pyro.lab.train import fit, kl_weight
from vae_pyro.models import AE, CVAE, VAE, hand

LIKELIHOODS = ["bernoulli", "continuous-bernoulli", "gaussian"]


@pytest.fixture(scope="module")
def grey(mnist5k):
    """8 grey test digits and their labels."""
    return mnist5k.test_x[:8], mnist5k.test_y[:8]


# the estimators of discrete sites only: tests/test_user_models.py (enum), tests/test_discrete.py
CONTINUOUS = [n for n in estimators.NAMES if not estimators.spec(n).needs & DISCRETE_NEEDS]


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("model", ["vae", "cvae"])
@pytest.mark.parametrize("estimator", CONTINUOUS)
def test_every_model_likelihood_and_estimator_gives_finite_losses_and_gradients(grey, model, likelihood, estimator, conv):
    x, y = grey
    pyro.clear_param_store()  # jit-* compile against the param store: no parameters of an earlier module there
    cfg = Config(model=model, likelihood=likelihood, estimator=estimator, z_dim=3, hidden=(16,), conv=conv)
    net = instantiate(cfg, 784, torch.device("cpu"))
    est = estimators.make(estimator, iwae_k=2)
    labels = y if net.conditional else None
    loss = est.backward(net, x, labels)
    assert torch.isfinite(torch.tensor(loss))
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    loc, scale = net.encode(x, labels)
    assert loc.shape == scale.shape == (8, 3)
    params = net.decode(torch.randn(2, 8, 3), labels)  # a leading particle dimension passes through
    assert all(p.shape == (2, 8, 784) for p in params)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_autoencoder_shapes_and_loss(grey, likelihood, conv):
    ae = instantiate(Config(model="ae", likelihood=likelihood, conv=conv, hidden=(16,)), 784, torch.device("cpu"))
    assert isinstance(ae, AE) and ae.z_dim == 32
    code, none = ae.encode(grey[0])
    assert code.shape == (8, 32) and none is None
    # in float64: the loss sums 6,272 pixels' terms of both signs, so float32 rounding (1e-5 of it, and
    # CPU-dependent) would hide or fake a difference between the two formulas
    ae, x = ae.double(), grey[0].double()
    loss = estimators.make("hand").loss(ae, x)  # its hand_loss: −Σ log p(x | f(x))
    torch.manual_seed(0)
    assert loss.item() == pytest.approx(estimators.make("trace").loss(ae, x).item(), rel=1e-9)


def test_continuous_bernoulli_formula_equals_torch(grey):
    """Against torch over |l| <= 15 (beyond, torch's own normaliser loses digits: 2e-5 at l = 30),
    through its small-|l| series, and on the asymptote log C(l) -> log |l| for large |l|."""
    x = grey[0].double()
    logits = torch.cat([torch.linspace(-15, 15, 780), torch.tensor([0.0, 1e-5, -2e-4, 5e-4])]).double().expand(8, 784)
    expected = ContinuousBernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(hand.continuous_bernoulli_log_prob(x, logits), expected, rtol=1e-12, atol=1e-9)
    big = torch.tensor([[40.0, -60.0]], dtype=torch.float64)
    log_norm = hand.continuous_bernoulli_log_prob(torch.zeros_like(big), big) - hand.bernoulli_log_prob(torch.zeros_like(big), big)
    assert log_norm.item() == pytest.approx(math.log(40.0 * 60.0), abs=1e-12)


@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_cvae_hand_equals_meanfield_on_the_same_eps(batch, mnist5k, prior):
    torch.manual_seed(0)
    cvae = CVAE(z_dim=4, hidden=(32,), prior=prior).double()
    with torch.no_grad():
        if cvae.prior_net is not None:  # a prior far from N(0, I), so it matters
            cvae.prior_net.bias.normal_()
    x, y = batch.double(), mnist5k.test_y[:64]
    loss_gap, grad_gap = checks.same_eps_gap(cvae, x, y=y)
    assert loss_gap < 1e-9 and grad_gap < 1e-9


def test_cvae_learned_prior_is_used_in_its_elbo(batch, mnist5k):
    """Changing only the prior network changes the KL, the ELBO, and Pyro's loss on the same ε."""
    torch.manual_seed(0)
    cvae = CVAE(z_dim=4, hidden=(32,), prior="learned").double()
    x, y = batch.double(), mnist5k.test_y[:64]
    eps = torch.randn(1, 64, 4, dtype=torch.float64)
    before = hand.elbo_terms(cvae, x, y, eps=eps)
    with torch.no_grad():
        cvae.prior_net.bias += 0.5
    after = hand.elbo_terms(cvae, x, y, eps=eps)
    assert torch.equal(before.recon, after.recon)
    assert (before.kl - after.kl).abs().min() > 1e-3
    # and the Pyro model sees the same prior: meanfield still equals hand after the change
    assert checks.same_eps_gap(cvae, x, y=y)[0] < 1e-9


def test_autoencoder_trains(tmp_path):
    result = fit(Config(model="ae", **{**TINY, "z_dim": 32, "epochs": 3}), tmp_path / "ae", progress=False)
    recon = [r["test_recon"] for r in result.history]
    assert recon[2] > recon[1] > recon[0]
    # no latent site: the ELBO is the reconstruction term and the KL is zero; no KL weight to record
    assert all(r["test_kl"] == 0 and r["test_elbo"] == r["test_recon"] for r in result.history)
    assert "kl_weight" not in result.history[0]


def test_kl_warmup_rises_from_zero_to_beta(tmp_path):
    cfg = Config(beta=0.8, kl_warmup=2, **{**TINY, "epochs": 4})
    assert [kl_weight(0.8, 2, e) for e in range(4)] == [0.0, 0.4, 0.8, 0.8]
    assert kl_weight(0.8, 0, 0) == 0.8
    result = fit(cfg, tmp_path / "r", progress=False)
    assert [r["kl_weight"] for r in result.history] == [0.0, 0.4, 0.8, 0.8]


@pytest.mark.parametrize("estimator", ["trace", "meanfield", "hand", "score", "iwae"])
def test_a_zero_kl_weight_leaves_only_the_reconstruction_term(batch, estimator):
    """β = 0 (the first warm-up epoch) masks the latent site: the loss is −log p(x|z) alone."""
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(32,), beta=0.0).double()
    with torch.no_grad():
        vae.encoder.net[-1].bias[:4] += 2.0  # q far from p: a KL of several nats that must not count
    x = batch.double()
    est = estimators.make(estimator, iwae_k=1)
    torch.manual_seed(1)
    draws = torch.tensor([est.value(vae, x) for _ in range(200)], dtype=torch.float64)
    recon_draws = torch.tensor([-hand.elbo_terms(vae, x).recon.sum().item() for _ in range(200)])
    # same expectation (both are −E_q log p(x|z)); the KL of the shifted q would add > 64 * 2 nats
    assert abs(draws.mean() - recon_draws.mean()) < 4 * (draws.var() / 200 + recon_draws.var() / 200).sqrt()
    assert hand.elbo_terms(vae, x).kl.sum() > 64 * 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"estimator": "reconstruction"}, "unknown estimator 'reconstruction'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"estimator": "jit-trace", "kl_warmup": 3}, "--kl-warmup changes the KL weight"),
        ({"kl_warmup": -1}, "--kl-warmup must be a number of epochs >= 0"),
    ],
)
def test_bad_model_options_are_refused(options, message):
    with pytest.raises(VaeError, match=message):
        Config(**options)


@pytest.mark.parametrize("options, message", [
    ({"model": "gan"}, "unknown model 'gan'"),
    ({"model": "cvae", "prior": "flat"}, "unknown prior 'flat'"),
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"model": "ae", "beta": 0.5}, "ae takes no option beta"),
    ({"dataset": "synthetic-linear", "likelihood": "gaussian", "conv": True}, "--conv needs 28x28 images, but x_dim is 10"),
])
def test_options_the_model_cannot_take_are_refused(options, message):
    with pytest.raises(VaeError, match=message):
        instantiate(Config(**options), 10 if "dataset" in options else 784, torch.device("cpu"))


def test_evaluation_of_a_cvae_uses_its_labels(tmp_path, mnist5k):
    fit(Config(model="cvae", **{**TINY, "epochs": 2}), tmp_path / "c", progress=False)
    from vae_pyro.lab.experiment import restore_run

    cvae = restore_run(tmp_path / "c", torch.device("cpu")).module
    x = torch.bernoulli(mnist5k.test_x, generator=torch.Generator().manual_seed(0))
    right = evaluate.metrics(cvae, x, mnist5k.test_y)["elbo"]
    wrong = evaluate.metrics(cvae, x, (mnist5k.test_y + 1) % 10)["elbo"]
    assert right > wrong + 1  # the labels carry information the decoder uses


def test_binary_vae_starts_from_the_pixel_logits_and_trains_its_prior_at_100x():
    from vae_pyro.estimators import make
    from vae_pyro.lab.trainers import SVITrainer, TorchTrainer
    from vae_pyro.models.binary_vae import BinaryVAE

    x = (torch.rand(500, 784) < torch.linspace(0.01, 0.99, 784)).float()
    vae = BinaryVAE(net="nonlinear")
    vae.init_from_data(x)
    assert torch.allclose(torch.sigmoid(vae.decoder[-1].bias), x.mean(0).clamp(1e-3, 1 - 1e-3), atol=1e-6)
    fast = TorchTrainer(make("disarm"), vae, 1e-4)
    assert sorted(g["lr"] for g in fast.optim.param_groups) == [1e-4, 1e-2]
    assert next(g for g in fast.optim.param_groups if g["lr"] == 1e-2)["params"] == [vae.prior.logits]
    svi = SVITrainer(make("disarm"), vae, 1e-4)
    svi.step(x[:8])
    lrs = {id(param): opt.param_groups[0]["lr"] for param, opt in svi.optim.optim_objs.items()}
    assert lrs.pop(id(vae.prior.logits)) == 1e-2 and set(lrs.values()) == {1e-4}
    state = svi.state_dict()  # a resume keeps each parameter's own rate
    svi.load_state_dict(state)
    assert {n: s["param_groups"][0]["lr"] for n, s in state["optim"].items()}["prior$$$logits"] == 1e-2
    with pytest.raises(ValueError, match="unknown net"):
        BinaryVAE(net="conv")


def test_categorical_vae_has_twenty_one_hot_latents_of_ten_classes():
    from vae_pyro.models.categorical_vae import CategoricalVAE

    z = poutine.trace(CategoricalVAE().guide).get_trace(torch.rand(3, 784)).nodes["z"]["value"]
    assert z.shape == (3, 20, 10) and torch.equal(z.sum(-1), torch.ones(3, 20))
