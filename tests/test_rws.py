"""rws is reweighted wake-sleep: Pyro's ReweightedWakeSleep draw for draw on one image, per-image
weights on a batch, and wake-φ converging to −∇φ KL(p(z|x) ‖ q(z|x)) on the linear-Gaussian model,
whose posterior is exact."""

import math

import pyro
import pytest
import torch
from conftest import EXAMPLES, projected_draws, z_score
from pyro.infer import ReweightedWakeSleep as PyroReweightedWakeSleep

from vae_pyro import estimators
from vae_pyro.errors import VaeError
from vae_pyro.lab import traces
from vae_pyro.models import VAE, contract


def flat_grad(module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("k", [3, 10])
def test_rws_is_pyros_reweighted_wake_sleep_on_one_image(batch, k):
    """With one image per batch Pyro's batch-wide weights are per-image weights: same loss, same gradients."""
    torch.manual_seed(0)
    vae, x = VAE(z_dim=4, hidden=(32,)).double(), batch[:1].double()
    grads, values = [], []
    for elbo in (estimators.make("rws", iwae_k=k).elbo, PyroReweightedWakeSleep(num_particles=k, max_plate_nesting=1)):
        pyro.clear_param_store()
        vae.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss = elbo.loss_and_grads(vae.model, vae.guide, x)
        values.append(loss[0] if isinstance(loss, tuple) else loss)  # Pyro's returns (wake-θ loss, φ loss)
        grads.append(flat_grad(vae))
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_rws_weights_each_image_on_its_own(batch, monkeypatch):
    """On a batch, with the draws held fixed, the gradient is the sum of each image's gradient alone
    (Pyro's batch-wide weights would mix the images)."""
    torch.manual_seed(0)
    vae, x = VAE(z_dim=4, hidden=(32,)).double(), batch[:3].double()
    z = torch.randn(4, 3, 4, dtype=torch.float64)
    rws = estimators.make("rws", iwae_k=4)

    def gradient(images: slice) -> torch.Tensor:
        monkeypatch.setattr(rws.elbo, "draw", lambda guide, args, kwargs: ({"z": z[:, images]}, len(x[images])))
        vae.zero_grad(set_to_none=True)
        rws.backward(vae, x[images])
        return flat_grad(vae)

    together = gradient(slice(0, 3))
    alone = sum(gradient(slice(i, i + 1)) for i in range(3))
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-10)
    monkeypatch.undo()  # the real draws again
    values = []
    for elbo in (rws.elbo, PyroReweightedWakeSleep(num_particles=4, max_plate_nesting=1)):  # negative control
        pyro.clear_param_store()
        vae.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        elbo.loss_and_grads(vae.model, vae.guide, x)
        values.append(flat_grad(vae))
    assert not torch.allclose(values[0], values[1], rtol=1e-3)


def near_posterior_linear_model():
    """examples/linear.py's model with its guide near, not at, the exact posterior N(C Wᵀ(x − b)/σ², C),
    C = (I + WᵀW/σ²)⁻¹: the inclusive KL has a sizable gradient and the importance weights are tame."""
    spec = f"{EXAMPLES / 'linear.py'}:LinearGaussian"
    torch.manual_seed(1)
    module = contract.construct(contract.load_class(spec), {"x_dim": 10, "z_dim": 2}, spec).double()
    x = torch.randn(8, 10, dtype=torch.float64) * 2
    with torch.no_grad():
        w, b, s2 = module.decoder.weight, module.decoder.bias, module.sigma**2
        cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + w.T @ w / s2)
        a = cov @ w.T / s2
        module.encoder.weight.copy_(a + 0.1 * torch.randn_like(a))
        module.encoder.bias.copy_(-(a @ b) + 0.1)
        module.raw_s.copy_(torch.log(torch.expm1(1.3 * torch.diagonal(cov).sqrt() - 1e-3)))
    return module, x, cov


def inclusive_kl(module, x, cov) -> torch.Tensor:
    """KL(N(m, C) ‖ N(μ, diag s²)) = ½ [tr(S⁻¹C) + (μ − m)ᵀS⁻¹(μ − m) − k + log det S − log det C], summed over x."""
    w, b, s2 = module.decoder.weight, module.decoder.bias, module.sigma**2
    mean = (x - b) @ (cov @ w.T / s2).T
    loc, var = module.encoder(x), (torch.nn.functional.softplus(module.raw_s) + 1e-3) ** 2
    k = len(var)
    return 0.5 * ((torch.diagonal(cov) / var).sum() + ((loc - mean) ** 2 / var).sum(-1) - k + var.log().sum()
                  - torch.logdet(cov)).sum()


def test_wake_phi_is_the_inclusive_kl_gradient_as_k_grows():
    """E[Σ_k w̃_k ∇φ log q(z_k)] → −∇φ KL(p ‖ q): within 4 se at K = 10,000; at K = 10 the
    self-normalisation bias is many standard errors (so the check can fail)."""
    module, x, cov = near_posterior_linear_model()
    guide = traces.parameter_groups(module, x)["guide"]
    gen = torch.Generator().manual_seed(123)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in guide]
    module.zero_grad(set_to_none=True)
    inclusive_kl(module, x, cov).backward()
    exact = -sum((p.grad * u).sum() for p, u in zip(guide, direction)).item()
    z = {}
    for k, draws in ((10, 400), (10_000, 100)):
        rws = estimators.make("rws", iwae_k=k)
        torch.manual_seed(0)
        values = torch.empty(draws, dtype=torch.float64)
        for d in range(draws):
            module.zero_grad(set_to_none=True)
            rws.backward(module, x)  # the loss's gradient is −Σ_k w̃_k ∇φ log q
            values[d] = -sum((p.grad * u).sum() for p, u in zip(guide, direction))
        z[k] = ((values.mean() - exact) / (values.std() / math.sqrt(draws))).item()
    assert abs(z[10_000]) < 4
    assert abs(z[10]) > 10


def test_rws_model_gradient_is_iwaes(vae_and_batch):
    """Wake-θ is the IWAE bound's θ gradient: the same expectation (within 4 se), and its value the bound."""
    vae, x = vae_and_batch
    rws, iwae = (projected_draws(n, vae, x, 300, seed, iwae_k=5) for n, seed in (("rws", 1), ("iwae", 2)))
    assert abs(z_score(rws["model"], iwae["model"])) < 4


def test_rws_trains_a_discrete_site_and_needs_two_draws(tmp_path):
    """No reparameterised sample is needed (the mixture prior's c is accepted); K = 1 is refused."""
    spec = f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE"
    module = contract.construct(contract.load_class(spec), {"x_dim": 784, "z_dim": 2, "width": 16}, spec)
    x = (torch.rand(4, 784) < 0.5).float()
    guide_tr, model_tr = contract.run_traces(module, x, None)
    estimators.check_model("rws", module, guide_tr, model_tr)  # accepted
    with pytest.raises(VaeError, match="rws needs at least 2 draws per image; use --iwae-k 2"):
        estimators.check_options("rws", {"iwae_k": 1})
