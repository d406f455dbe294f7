"""The conformance suite: every estimator against the bound and gradients its record names, on a zoo
of guide families (``zoo.py``), at fixed seeds, within 4 standard errors; with negative controls that
show the check fails an estimator that is wrong."""

import pyro
import pytest
import torch
import zoo
from conftest import EXAMPLES
from torch.distributions import Independent

import vae_pyro as vp
from vae_pyro.cli import main
from vae_pyro.estimators import particles
from vae_pyro.lab import diagnostics
from vae_pyro.lab.conformance import check_estimator, conformance

ZOO = f"{zoo.__file__}"
# torch.jit.trace cannot always compile these guides (the spline's data-dependent shapes, the mixture's
# custom gradient): the check then reports a failure to run, not a pass
JIT = {"jit-trace", "jit-meanfield"}
CANNOT_JIT = {"SplineFlow", "Mixture"}
NEEDS_RSAMPLE = {"meanfield", "iwae", "jit-trace", "jit-meanfield", "stl", "iwae-stl", "iwae-dreg", "renyi", "miwae",
                 "piwae", "ciwae"}


def build(cls):
    torch.manual_seed(0)
    return cls(x_dim=6)


BERNOULLI_ONLY, RELAXABLE_OF_X, RELAXABLE_ONLY = {"arm", "disarm", "iwae-disarm"}, {"rebar", "relax"}, {"gumbel-st"}


def refusals(cls) -> set[str]:
    """The estimators a zoo family is refused, by the kinds of its latent sites."""
    bernoulli, one_hot, category = issubclass(cls, zoo.Bits), cls is zoo.OneHotCategory, cls is zoo.Category
    layered = cls is zoo.LayeredBits  # its second layer's logits depend on the first's draw
    return ({"hand"} | (NEEDS_RSAMPLE if bernoulli or one_hot or category else set())
            | (set() if category else {"enum"}) | (set() if bernoulli and not layered else BERNOULLI_ONLY)
            | (set() if (bernoulli or one_hot) and not layered else RELAXABLE_OF_X)
            | (set() if bernoulli or one_hot else RELAXABLE_ONLY))


def assert_conforms(cls, draws: int) -> None:
    result = conformance(build(cls), zoo.data(), draws=draws, seed=1)
    failed = [(r.estimator, r.quantity, round(r.z, 1)) for r in result.rows if not r.ok]
    assert not failed, failed
    assert set(result.errors) <= (JIT if cls.__name__ in CANNOT_JIT else set()), result.errors
    if cls is zoo.LayeredBits:  # the stacked points of ARM, DisARM, REBAR and RELAX need logits of x alone
        assert all("z depends on another latent draw" in result.refused[n] for n in BERNOULLI_ONLY | RELAXABLE_OF_X)
    refused = refusals(cls)
    assert set(result.refused) == refused
    checked = {r.estimator for r in result.rows}
    assert checked == set(vp.estimators.NAMES) - refused - set(result.errors)


@pytest.mark.parametrize("cls", zoo.FAMILIES, ids=lambda c: c.__name__)
def test_every_estimator_equals_its_reference_on_every_guide_family(cls):
    assert_conforms(cls, draws=25)


@pytest.mark.slow
@pytest.mark.parametrize("cls", zoo.FAMILIES, ids=lambda c: c.__name__)
def test_every_estimator_equals_its_reference_on_every_guide_family_many_draws(cls):
    assert_conforms(cls, draws=400)


def rebuilt_with_detached_parameters(fn, value):
    """What the path estimators did before: rebuild the distribution from its arg_constraints with the
    parameters detached (a TransformedDistribution became its base distribution)."""
    def detached(d):
        if hasattr(d, "base_dist"):
            base = detached(d.base_dist)
            if isinstance(d, Independent):
                return Independent(base, d.reinterpreted_batch_ndims)
            return base.expand(d.batch_shape) if d.batch_shape != base.batch_shape else base
        params = {n: getattr(d, n).detach() for n in d.arg_constraints if n in d.__dict__}
        return type(d)(**params, validate_args=False)

    return detached(fn).log_prob(value)


@pytest.mark.parametrize("cls", [zoo.NormalAndLogNormal, zoo.Flow], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ["stl", "iwae-dreg"])
def test_the_check_fails_the_old_rebuilt_distributions(cls, name, monkeypatch):
    """Negative control: with q's parameters held fixed by rebuilding the distribution (the bug the
    path-only log-density replaced), stl and iwae-dreg are caught on LogNormal and flow guides."""
    module, x = build(cls).double(), zoo.data()
    options = {"iwae_k": 5} if name == "iwae-dreg" else {}
    assert all(r.ok for r in check_estimator(name, module, x, draws=25, seed=1, **options))
    monkeypatch.setattr(particles, "log_prob_path_only", rebuilt_with_detached_parameters)
    rows = check_estimator(name, module, x, draws=25, seed=1, **options)
    assert not next(r for r in rows if r.quantity == "value").ok


def test_the_check_fails_a_wrong_hand_loss():
    rows = check_estimator("hand", build(zoo.WrongHand).double(), zoo.data(), draws=25, seed=1)
    assert not next(r for r in rows if r.quantity == "value").ok


def test_stl_guide_gradient_vanishes_at_an_exact_full_covariance_posterior():
    """log p(x, z) − log q(z|x) = log p(x) for every z when q is the exact (full-covariance) posterior:
    stl's guide gradient is zero on every draw (float64 rounding), trace's is not."""
    module = build(zoo.LinearFullCovariance).double()
    module.set_exact_posterior()
    x = zoo.data(32)
    variance = {}
    for name in ("stl", "trace"):
        pyro.clear_param_store()
        rows = diagnostics.gradient_stats(vp.estimators.make(name), module, x, draws=50, seed=5)
        variance[name] = {r.group: r.variance for r in rows}
    assert variance["stl"]["guide"] < 1e-20
    assert variance["trace"]["guide"] > 1e-4
    assert check_estimator("stl", module, x, draws=25)[0].ok  # and stl's value is still the ELBO


@pytest.mark.parametrize("name, cls, options", [
    ("iwae-dreg", zoo.Flow, {"iwae_k": 3}), ("score", zoo.DiagonalNormal, {"baseline": "decaying"}),
    ("enum", zoo.Category, {}), ("vimco", zoo.Bits, {"iwae_k": 3}), ("hand", None, {}),
])
def test_every_estimator_drives_a_users_own_svi_loop(name, cls, options, batch):
    """vp.elbo(name) is a Pyro ELBO that SVI takes, with the guide it needs applied inside: its loss is the
    estimator's, and SVI moves every parameter the estimator's gradient reaches."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    module, x = (vp.VAE(z_dim=2, hidden=(16,)), batch[:8]) if cls is None else (cls(x_dim=6), zoo.data().float())
    before = [p.detach().clone() for p in module.parameters()]
    svi = pyro.infer.SVI(module.model, module.guide, pyro.optim.Adam({"lr": 1e-2}), loss=vp.elbo(name, **options))
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = [not torch.equal(a, p) for a, p in zip(before, module.parameters())]
    assert all(moved), [n for (n, _), m in zip(module.named_parameters(), moved) if not m]


def test_check_prints_a_row_per_quantity_and_exits_1_on_a_failure(capsys):
    main(["check", "--model", f"{ZOO}:Bits", "--draws", "10", "--batch", "8", "--quiet"])
    out = capsys.readouterr().out
    for line in ("trace         elbo (D=1)", "vimco         iwae (D=5)", "iwae          refused: iwae needs a "
                 "reparameterised sample at every latent site, and Bits's z has none",
                 "enum          refused: enum needs a discrete latent site to sum out exactly, and Bits has none it "
                 "can enumerate (z jointly takes 2^3 values; declare its dimensions independent with a plate to "
                 "enumerate each alone)"):
        assert line in out
    with pytest.raises(SystemExit) as e:
        main(["check", "--model", f"{ZOO}:WrongHand", "--estimators", "hand,trace", "--draws", "10", "--quiet"])
    assert e.value.code == 1 and "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("model, options", [
    ("vae", ["--hidden", "32", "--z-dim", "4"]),
    pytest.param("cvae", ["--hidden", "32", "--z-dim", "4"], marks=pytest.mark.slow),  # the 10-minute budget
    pytest.param("ae", [], marks=pytest.mark.slow),
    pytest.param(f"{EXAMPLES / 'two_layer.py'}:TwoLayerVAE", [], marks=pytest.mark.slow),
    (f"{EXAMPLES / 'mixture_prior.py'}:MixturePriorVAE", ["--model-option", "width=32"]),
    pytest.param(f"{EXAMPLES / 'linear.py'}:LinearGaussian", ["--dataset", "synthetic-linear", "--binarize", "none"],
                 marks=pytest.mark.slow),
    ("binary-vae", ["--z-dim", "20", "--model-option", "net=nonlinear"]), ("categorical-vae", []),
])
def test_check_passes_on_the_built_in_models_and_the_examples(model, options, capsys):
    main(["check", "--model", model, *options, "--draws", "10", "--batch", "8", "--quiet"])
    out = capsys.readouterr().out
    assert "FAILED" not in out and " ok" in out
