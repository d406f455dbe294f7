"""The open lab: a model written in this file, the examples, and the built-in models go through
compare, evaluate, gradient diagnostics and check; every broken rule of the contract is refused."""

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import vae_pyro as vp
from vae_pyro import estimators
from vae_pyro.cli import main
from vae_pyro.data.linear import synthetic_linear
from vae_pyro.errors import VaeError
from vae_pyro.lab import diagnostics, traces
from vae_pyro.lab.experiment import restore_run
from vae_pyro.models import contract

EXAMPLES = Path(__file__).parent.parent / "examples"
FAST = dict(k=10, grad_draws=5, loss_draws=10, progress=False)


class ToyVAE(nn.Module):
    """A modeller's own VAE, nothing from vae_pyro: linear encoder and decoder, z of 2 dimensions."""

    def __init__(self, x_dim: int, z_dim: int = 2):
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Linear(x_dim, 2 * z_dim)
        self.dec = nn.Linear(z_dim, x_dim)

    def model(self, x, y=None):
        pyro.module("dec", self.dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("enc", self.enc)
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


@pytest.fixture(scope="module")
def small(mnist5k):
    """500 training and 200 test digits."""
    return vp.Dataset("small", mnist5k.train_x[:500], mnist5k.train_y[:500], mnist5k.test_x[:200], mnist5k.test_y[:200])


def test_a_model_of_ones_own_goes_through_compare_evaluate_gradients_and_check(small, tmp_path):
    result = vp.compare(ToyVAE, small, ["trace", "meanfield", "iwae"], out=tmp_path / "c", epochs=1, batch_size=100,
                        z_dim=3, **FAST)
    assert list(result.table["estimator"]) == ["trace", "meanfield", "iwae"]
    assert (result.table["test_is_log_likelihood_k10"] < 0).all() and (result.table["active_units"] <= 3).all()
    assert {"guide", "model"} == set(result.gradients["group"])
    assert (tmp_path / "c" / "report.md").exists() and (tmp_path / "c" / "trace" / "figures" / "samples.png").exists()

    fitted = vp.fit(ToyVAE, small, out=tmp_path / "f", epochs=2, batch_size=100, progress=False)
    assert fitted.history[-1]["test_elbo"] > fitted.history[0]["test_elbo"]
    ev = vp.evaluate(fitted.module, fitted.data, k=50)
    # the IS estimate lies above the ELBO by more than both standard errors
    assert ev["test_is_log_likelihood_k50"] - ev["test_elbo"] > 2 * (ev["test_elbo_se"] + ev["test_is_log_likelihood_k50_se"])
    x = fitted.data.test_x[:50]
    stats = vp.gradient_stats(fitted.module, x, ["trace", "meanfield"], draws=20)
    groups = stats.set_index(["estimator", "group"])["variance"]
    assert groups[("meanfield", "model")] == pytest.approx(groups[("trace", "model")])  # same z, same decoder noise
    checked = vp.check(fitted.module, x[:16], estimators=["trace", "meanfield", "iwae", "stl"], draws=30)
    assert checked.passed and len(checked.exact) == 2 and len(checked.table) == 4 * 3 and checked.table["ok"].all()


class ValidatedVAE(ToyVAE):
    """ToyVAE with Pyro's argument validation left on, as a modeller writes it: its Bernoulli refuses grey
    pixels, so the lab may run it only on images binarised as training binarises them."""

    def model(self, x, y=None):
        pyro.module("dec", self.dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z), validate_args=True).to_event(1), obs=x)


def test_a_model_that_validates_its_observations_trains_and_compares(small, tmp_path):
    """Every probe of the lab (contract check, memory estimate, plate nesting, warm-up) sees binary images;
    before, the contract check fed this model grey ones and it stopped with a traceback."""
    fitted = vp.fit(ValidatedVAE, small, out=tmp_path / "f", epochs=1, batch_size=100, progress=False)
    assert len(fitted.history) == 1
    result = vp.compare(ValidatedVAE, small, ["trace", "meanfield"], out=tmp_path / "c", epochs=1, batch_size=100,
                        grad_batches=1, **FAST)
    assert list(result.table["estimator"]) == ["trace", "meanfield"]
    with pytest.raises(ValueError, match="within the support"):  # the negative control: grey images are refused
        pyro.poutine.trace(ValidatedVAE(784).model).get_trace(small.train_x[:2]).compute_log_prob()


def test_guide_and_model_parameters_are_found_from_the_traces(small):
    toy = ToyVAE(784)
    groups = traces.parameter_groups(toy, small.test_x[:4])
    assert [id(p) for p in groups["guide"]] == [id(p) for p in toy.enc.parameters()]
    assert [id(p) for p in groups["model"]] == [id(p) for p in toy.dec.parameters()]


def test_the_built_in_cvae_goes_through_compare_gradvar_and_check(tmp_path, capsys):
    main(["compare", "--model", "cvae", "--estimators", "trace,meanfield", "--epochs", "1", "--hidden", "32",
          "--z-dim", "3", "--k", "10", "--grad-draws", "5", "--loss-draws", "10", "--quiet", "--out", str(tmp_path / "c")])
    main(["gradvar", str(tmp_path / "c" / "trace"), "--estimators", "trace,hand", "--draws", "5"])
    main(["check", "--run", str(tmp_path / "c" / "meanfield"), "--draws", "20", "--estimators", "trace,hand",
          "--quiet"])
    out = capsys.readouterr().out
    assert "hand" in out and "FAILED" not in out and out.count(" ok") == 5 + 2 * 3


def test_the_autoencoder_is_refused_what_needs_a_latent_site(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--model", "ae", "--out", str(tmp_path / "c")])
    assert e.value.code == 2 and "has no latent site" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


BAD = {
    "no_guide": ("class M(nn.Module):\n    def __init__(self, x_dim): super().__init__()\n"
                 "    def model(self, x, y=None): pass\n", "has no guide(x, y=None) method"),
    "not_module": ("class M:\n    def __init__(self, x_dim): pass\n", "is not an nn.Module class"),
    "outside_plate": (
        "class M(nn.Module):\n    def __init__(self, x_dim):\n        super().__init__(); self.d = nn.Linear(2, x_dim)\n"
        "    def model(self, x, y=None):\n        pyro.module('d', self.d)\n"
        "        z = pyro.sample('z', dist.Normal(torch.zeros(2), 1.).to_event(1))\n"
        "        with pyro.plate('data', len(x)):\n"
        "            pyro.sample('x', dist.Bernoulli(logits=self.d(z).expand(len(x), -1)).to_event(1), obs=x)\n"
        "    def guide(self, x, y=None):\n        pyro.sample('z', dist.Normal(torch.zeros(2), 1.).to_event(1))\n",
        "site 'z' of M.guide is outside pyro.plate('data', len(x)) at dim -1"),
    "unregistered": (
        "class M(nn.Module):\n    def __init__(self, x_dim):\n        super().__init__(); self.d = nn.Linear(2, x_dim)\n"
        "    def model(self, x, y=None):\n        with pyro.plate('data', len(x)):\n"
        "            z = pyro.sample('z', dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))\n"
        "            pyro.sample('x', dist.Bernoulli(logits=self.d(z)).to_event(1), obs=x)\n"
        "    def guide(self, x, y=None):\n        with pyro.plate('data', len(x)):\n"
        "            pyro.sample('z', dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))\n",
        "are registered in neither model nor guide; call pyro.module"),
    "no_x": (
        "class M(nn.Module):\n    def __init__(self, x_dim): super().__init__()\n"
        "    def model(self, x, y=None):\n        with pyro.plate('data', len(x)):\n"
        "            pyro.sample('pixels', dist.Bernoulli(0.5 * torch.ones_like(x)).to_event(1), obs=x)\n"
        "    def guide(self, x, y=None): pass\n", "has no observed site named 'x'"),
    "broken": ("class M(nn.Module):\n    def __init__(self, x_dim): super().__init__()\n"
               "    def model(self, x, y=None): pass\n    def guide(self, x, y=None): raise KeyError('oops')\n",
               "M.guide failed on a batch of 2 (KeyError"),
}
HEADER = "import pyro, torch\nimport pyro.distributions as dist\nfrom torch import nn\n\n"


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_broken_rule_of_the_contract_is_one_line_and_exit_2(case, tmp_path, capsys):
    source, message = BAD[case]
    (tmp_path / "bad.py").write_text(HEADER + source)
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", f"{tmp_path / 'bad.py'}:M", "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "nowhere.py:M"], "model file nowhere.py not found"),
    (["--model", f"{EXAMPLES / 'two_layer.py'}:Nope"], "defines no 'Nope'"),
    (["--model", "no_such_package_x:M"], "cannot import module 'no_such_package_x'"),
    (["--model", "vae", "--model-option", "depth=3"], "vae takes no option depth"),
    (["--model", f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE", "--z-dim", "5"], "takes no option z_dim"),
    (["--model", f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE"], "meanfield needs a guide that samples the latent sites in the model's order"),
    (["--model", f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE", "--estimator", "iwae"],
     "iwae needs a reparameterised sample at every latent site"),
    (["--model", f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE", "--estimator", "hand"],
     "hand needs the model's own hand_loss"),
    (["--model", "ae", "--kl-warmup", "2"], "has no beta attribute"),
    (["--estimator", "enum"], "enum needs a discrete latent site to sum out exactly, and VAE has none it can"),
])
def test_a_model_an_option_or_an_estimator_that_does_not_fit_is_refused(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_model_options_reach_the_constructor_and_the_run_folder(tmp_path):
    spec = f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE"
    main(["train", "--model", spec, "--model-option", "z1_dim=6", "--model-option", "z2_dim=3",
          "--estimator", "trace", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")])
    run = restore_run(tmp_path / "r", "cpu")
    assert run.module.q_z1.net[-1].out_features == 12 and run.config.model_options == {"z1_dim": 6, "z2_dim": 3}


def test_a_mistyped_keyword_in_the_api_names_the_option_meant_and_writes_nothing(small, tmp_path):
    with pytest.raises(VaeError, match=r"no option epoch= \(did you mean epochs=\?\)"):
        vp.fit(ToyVAE, small, out=tmp_path / "r", epoch=1)
    with pytest.raises(VaeError, match=r"no option zdim= \(did you mean z_dim=\?\).*ToyVAE takes \(z_dim\)"):
        vp.config(ToyVAE, small, zdim=3)
    with pytest.raises(VaeError, match=r"no option z1dim= \(did you mean z1_dim=\?\)"):  # given as model_options
        vp.config(f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE", small, model_options={"z1dim": 6})
    assert not (tmp_path / "r").exists()
    cfg = vp.config(f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE", small, epochs=1, z1_dim=6)  # the control: both kinds
    assert (cfg.epochs, cfg.model_options) == (1, {"z1_dim": 6})


def test_two_layer_example_trains_with_trace_and_iwae(small, tmp_path):
    for estimator in ("trace", "iwae"):
        result = vp.fit(f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE", small, estimator=estimator,
                        out=tmp_path / estimator, epochs=2, batch_size=100, progress=False, z1_dim=20, z2_dim=10)
        assert result.history[-1]["test_elbo"] > result.history[0]["test_elbo"] > -550


def test_mixture_prior_enum_and_score_agree_in_expectation_on_the_loss(small):
    """At the same weights, enum (c summed out) and score (c sampled) estimate the same −ELBO: the
    means of 400 loss draws each differ by less than 4 standard errors of the difference."""
    torch.manual_seed(0)
    spec = f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE"
    module = contract.construct(contract.load_class(spec), {"x_dim": 784, "width": 64}, spec)
    x = torch.bernoulli(small.test_x[:64], generator=torch.Generator().manual_seed(0))
    draws = {}
    for name in ("enum", "score", "trace"):
        pyro.clear_param_store()
        draws[name] = diagnostics.loss_draws(estimators.make(name), module, x, draws=400, seed=1)
    for name in ("score", "trace"):
        diff = draws[name].mean() - draws["enum"].mean()
        se = math.sqrt(draws[name].var() / 400 + draws["enum"].var() / 400)
        assert abs(diff) < 4 * se, (name, diff, se)
    assert draws["enum"].std() < draws["score"].std()  # summing c out removes its share of the noise


def test_mixture_prior_reports_its_cluster_accuracy(small, tmp_path):
    result = vp.fit(f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE", small, estimator="enum", out=tmp_path / "m",
                    epochs=1, batch_size=100, progress=False, width=64)
    ev = vp.evaluate(result.module, result.data, k=10, samples=2)
    assert 0.1 <= ev["test_cluster_accuracy_c"] <= 1.0


def test_linear_example_every_bound_below_exact_and_is_reaches_it_as_k_grows(tmp_path):
    """On pPCA data with the exact log p(x) known: the IS estimate's mean lies below it (within 4 se)
    for every K, and its gap shrinks as K grows, from the ELBO's (K = 1) to a small fraction of it."""
    data = synthetic_linear()
    result = vp.fit(f"{EXAMPLES / 'linear.py'}:LinearGaussian", data, out=tmp_path / "lin",
                    estimator="meanfield", binarize="none", epochs=3, batch_size=200, lr=0.05, progress=False)
    module, x = result.module.double(), data.test_x[:300].double()
    exact = module.exact_log_likelihood(x)
    gaps = {}
    for k in (1, 10, 100, 1000):
        gap = exact - vp.log_likelihood(module, x, k=k, seed=k)
        mean, se = gap.mean().item(), gap.std().item() / math.sqrt(len(gap))
        assert mean > -4 * se  # a lower bound in expectation
        gaps[k] = mean
    assert gaps[1] > gaps[10] > gaps[100] > gaps[1000] and gaps[1000] < 0.1 * gaps[1]


def test_mixture_prior_compares_vimco_with_trace_and_enum(small, tmp_path):
    """The estimators for a discrete site, side by side; vimco has no gradient row at K = 1."""
    result = vp.compare(f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE", small, ["trace", "enum", "vimco"],
                        out=tmp_path / "c", epochs=1, batch_size=100, width=32, **FAST)
    assert list(result.table["estimator"]) == ["trace", "enum", "vimco"]
    assert "test_cluster_accuracy_c" in result.table
    labels = set(result.gradients["estimator"])
    assert {"vimco-5", "vimco-50"} <= labels and "vimco-1" not in labels  # K = 1 has no leave-one-out
