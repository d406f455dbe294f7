"""fit(): learning, exact resume, divergence, one set of initial weights."""

import json
import math

import pytest
import torch
from conftest import DISCRETE_NEEDS, TINY

from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import evaluate
from vae_pyro.lab.experiment import build_model, instantiate, load_data
from vae_pyro.lab.runs import Run
from vae_pyro.lab.train import Diverged, fit
from vae_pyro.lab.trainers import TorchTrainer, make_trainer


def weights(run_dir) -> dict:
    return Run.open(run_dir).load_checkpoint()["module"]


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_two_epochs_raise_the_test_elbo(tmp_path):
    cfg = Config(epochs=2)
    data = load_data(cfg, torch.device("cpu"))
    before = evaluate.metrics(instantiate(cfg, 784, torch.device("cpu")), data.test_x)["elbo"]
    result = fit(cfg, tmp_path / "run", progress=False)
    after = [r["test_elbo"] for r in result.history]
    assert before < -500 and after[-1] > -250  # an untrained decoder scores ~ 784 log 2; two epochs learn a lot
    assert after[1] > after[0] > before
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert set(result.history[0]) == {"epoch", "train_elbo", "test_elbo", "test_recon", "test_kl", "test_elbo_se", "kl_weight", "seconds"}
    assert result.final["test"]["elbo"] == pytest.approx(after[-1])


@pytest.mark.parametrize(
    "options", [{"estimator": "meanfield"}, {"estimator": "hand"}, {"estimator": "trace"}, {"estimator": "iwae"},
                {"estimator": "score", "baseline": "decaying"}, {"estimator": "score", "baseline": "neural"},
                {"estimator": "trace", "adam": "fused"}]
)
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, options):
    cfg = Config(**options, **{**TINY, "epochs": 3})
    whole = fit(cfg, tmp_path / "whole", progress=False)
    fit(Config(**options, **{**TINY, "epochs": 1}), tmp_path / "parts", progress=False)
    resumed = fit(cfg, tmp_path / "parts", resume=True, progress=False)
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loop", ["fast", "svi"])
@pytest.mark.parametrize("estimator", ["nvil", "relax"])  # running averages; a network sized at its first call
def test_a_resumed_discrete_run_equals_an_uninterrupted_one(tmp_path, estimator, loop):
    options = {"estimator": estimator, "loop": loop, **BINARY, "z_dim": 8, "batch_size": 256}
    whole = fit(Config(**{**options, "epochs": 2}), tmp_path / "whole", progress=False)
    fit(Config(**options), tmp_path / "parts", progress=False)
    resumed = fit(Config(**{**options, "epochs": 2}), tmp_path / "parts", resume=True, progress=False)
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    assert whole.estimator_state["baseline_net"].keys() == resumed.estimator_state["baseline_net"].keys()
    assert all(torch.equal(whole.estimator_state["baseline_net"][k], resumed.estimator_state["baseline_net"][k])
               for k in whole.estimator_state["baseline_net"])


def test_same_initial_weights_whatever_the_estimator():
    first = instantiate(Config(estimator="trace", seed=3), 784, torch.device("cpu")).state_dict()
    for name in estimators.NAMES:
        other = instantiate(Config(estimator=name, seed=3), 784, torch.device("cpu")).state_dict()
        assert all(torch.equal(first[k], other[k]) for k in first)
    different = instantiate(Config(seed=4), 784, torch.device("cpu")).state_dict()
    assert not torch.equal(first["encoder.net.0.weight"], different["encoder.net.0.weight"])


@pytest.fixture(scope="module")
def untrained_test_elbo() -> float:
    cfg = Config(**TINY)
    return evaluate.metrics(instantiate(cfg, 784, torch.device("cpu")), load_data(cfg, torch.device("cpu")).test_x)["elbo"]


# the estimators of discrete sites only: the binary VAE's (below); enum's: tests/test_user_models.py
@pytest.mark.parametrize("estimator", [n for n in estimators.NAMES if not estimators.spec(n).needs & DISCRETE_NEEDS])
@pytest.mark.parametrize("samples", [1, 3])
def test_every_estimator_trains(tmp_path, estimator, samples, untrained_test_elbo):
    spec = estimators.spec(estimator)
    k = max(samples, spec.min_samples)  # vimco's and rws's weights need two draws
    options = {"iwae_k": k} if spec.samples == "K" else {"particles": samples}
    result = fit(Config(estimator=estimator, **options, **{**TINY, "epochs": 1}), tmp_path / "r", progress=False)
    assert math.isfinite(result.history[0]["train_elbo"])
    assert result.history[0]["test_elbo"] > untrained_test_elbo + 50  # one epoch gains well over 50 nats


BINARY = dict(model="binary-vae", z_dim=50, batch_size=64, epochs=1, lr=1e-3)


@pytest.fixture(scope="module")
def untrained_binary_elbo() -> float:
    cfg = Config(estimator="disarm", **BINARY)
    data = load_data(cfg, torch.device("cpu"))
    return evaluate.metrics(build_model(cfg, data, torch.device("cpu")), data.test_x)["elbo"]


@pytest.mark.parametrize("estimator", ["rloo", "nvil", "arm", "disarm", "iwae-disarm", "rebar", "relax", "gumbel-st", "vimco", "rws"])
def test_every_discrete_estimator_trains_the_binary_vae(tmp_path, estimator, untrained_binary_elbo):
    """One epoch of mnist5k (62 steps) from the protocol's start (the decoder's bias at the pixel logits)."""
    options = {"iwae_k": 2} if estimators.spec(estimator).samples == "K" else {}
    result = fit(Config(estimator=estimator, **options, **BINARY), tmp_path / "r", progress=False)
    assert result.history[0]["test_elbo"] > untrained_binary_elbo + 2  # measured: 3.3 to 4.7 nats


@pytest.mark.parametrize("estimator", ["rebar", "relax"])
def test_rebar_and_relax_train_the_categorical_vae(tmp_path, estimator):
    """At one-hot sites: one epoch of mnist5k (79 steps) from the untrained test ELBO of -544 (measured with
    relax: -209)."""
    cfg = Config(estimator=estimator, model="categorical-vae", batch_size=64, epochs=1, lr=1e-3)
    data = load_data(cfg, torch.device("cpu"))
    untrained = evaluate.metrics(build_model(cfg, data, torch.device("cpu")), data.test_x)["elbo"]
    assert fit(cfg, tmp_path / "r", progress=False).history[0]["test_elbo"] > untrained + 100


def test_gaussian_likelihood_trains(tmp_path):
    result = fit(Config(likelihood="gaussian", **TINY), tmp_path / "r", progress=False)
    assert result.history[1]["test_elbo"] > result.history[0]["test_elbo"]
    # a notebook shows it in a line and its history as a table
    assert repr(result) == f"FitResult({tmp_path / 'r'}: vae × meanfield, 2 epochs, test ELBO {result.history[1]['test_elbo']:.2f})"
    assert list(result.metrics.index) == [1, 2] and "<table" in result._repr_html_()


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step, calls = TorchTrainer.step, []

    def step_that_diverges_in_epoch_2(self, x, y=None):
        calls.append(1)
        return float("nan") if len(calls) > 40 else real_step(self, x, y)  # an epoch of TINY is 31 steps

    monkeypatch.setattr(TorchTrainer, "step", step_that_diverges_in_epoch_2)
    with pytest.raises(Diverged, match=r"epoch 2, step 10; the checkpoint of epoch 1 is kept: continue with --resume --lr"):
        fit(Config(**TINY), tmp_path / "r", progress=False)
    ckpt = Run.open(tmp_path / "r").load_checkpoint()
    assert ckpt["epoch"] == 1 and len(Run.open(tmp_path / "r").metrics()) == 1
    monkeypatch.setattr(TorchTrainer, "step", real_step)
    result = fit(Config(**{**TINY, "lr": 1e-4}), tmp_path / "r", resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_existing_run_is_never_overwritten_without_force(tmp_path):
    fit(Config(**{**TINY, "epochs": 1}), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(VaeError, match="already holds a run; pass --resume"):
        fit(Config(**{**TINY, "epochs": 1}), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    fit(Config(**{**TINY, "epochs": 1, "seed": 1}), tmp_path / "r", force=True, progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() != before


def test_resume_refuses_another_configuration_naming_the_keys(tmp_path):
    fit(Config(**{**TINY, "epochs": 1}), tmp_path / "r", progress=False)
    with pytest.raises(VaeError, match="z_dim: run has 4, asked 5.*seed: run has 0, asked 9.*adam: run has 'foreach', "
                                       "asked 'fused'"):  # the optimizer's rounding is the run's too
        fit(Config(**{**TINY, "z_dim": 5, "seed": 9, "adam": "fused"}), tmp_path / "r", resume=True, progress=False)


def test_resume_without_checkpoint_is_refused(tmp_path):
    Run.create(tmp_path / "r", Config(**TINY))
    with pytest.raises(VaeError, match="never finished an epoch"):
        fit(Config(**TINY), tmp_path / "r", resume=True, progress=False)


@pytest.mark.parametrize(
    "options", [{"estimator": "meanfield"}, {"estimator": "trace", "particles": 2}, {"estimator": "iwae"},
                {"estimator": "score", "baseline": "decaying"}, {"estimator": "score", "baseline": "neural"},
                {"estimator": "jit-trace"}, {"model": "cvae"}, {"estimator": "trace", "adam": "fused"}]
)
def test_fast_loop_takes_the_same_steps_as_svi_bit_for_bit(tmp_path, options):
    """One multi-tensor (or fused) torch Adam over every parameter == pyro.infer.SVI with pyro.optim.Adam of the
    same implementation."""
    fast = fit(Config(**options, **{**TINY, "epochs": 2}), tmp_path / "fast", progress=False)
    svi = fit(Config(**options, loop="svi", **{**TINY, "epochs": 2}), tmp_path / "svi", progress=False)
    assert without_seconds(fast.history) == without_seconds(svi.history)
    a, b = weights(tmp_path / "fast"), weights(tmp_path / "svi")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loop", ["fast", "svi"])
def test_adam_fused_is_the_optimizer_that_steps(batch, loop):
    """--adam fused reaches every torch Adam of either loop (a flag lost on the way would train foreach, silently)."""
    cfg = Config(estimator="trace", adam="fused", loop=loop, **TINY)
    vae = instantiate(cfg, 784, torch.device("cpu"))
    trainer = make_trainer(estimators.make("trace"), vae, cfg.lr, loop, cfg.adam)
    trainer.step(batch)
    optims = [trainer.optim] if loop == "fast" else list(trainer.optim.optim_objs.values())
    groups = [g for o in optims for g in o.param_groups]
    assert sum(len(g["params"]) for g in groups) == len(list(vae.parameters()))  # every parameter is stepped
    assert all(g["fused"] and not g["foreach"] for g in groups)


def test_adam_fused_where_torch_has_none_is_refused_in_one_line(batch, monkeypatch):
    """A torch without a fused Adam on the device (the CPU's came in 2.4) is refused before training, naming the fix."""
    real = torch.optim.Adam

    def without_fused(params, *args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices: ['cuda', 'xpu', 'privateuseone'] but torch.float32 and cpu")
        return real(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", without_fused)
    vae = instantiate(Config(**TINY), 784, torch.device("cpu"))
    with pytest.raises(VaeError, match=r"^--adam fused: torch .* has no such Adam on cpu \(`fused=True` requires.*\); "
                                       r"use --adam foreach$"):
        make_trainer(estimators.make("trace"), vae, 1e-3, "fast", "fused")
    make_trainer(estimators.make("trace"), vae, 1e-3, "fast", "foreach").step(batch)  # the default still trains


def test_adam_fused_takes_foreachs_steps_to_float_rounding(tmp_path):
    """The same update in one kernel: two epochs end at the same weights but for float32 rounding (4e-8 apart
    here; a wrong update moves them by about lr = 1e-3 a step)."""
    foreach = fit(Config(estimator="meanfield", **TINY), tmp_path / "foreach", progress=False)
    fused = fit(Config(estimator="meanfield", adam="fused", **TINY), tmp_path / "fused", progress=False)
    a, b = weights(tmp_path / "foreach"), weights(tmp_path / "fused")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    saved = [Run.open(tmp_path / run).load_checkpoint()["optimizer"]["optim"]["param_groups"] for run in ("foreach", "fused")]
    assert [bool(g["fused"]) for g in saved[0]] == [False] and [g["fused"] for g in saved[1]] == [True]  # fit took each
    assert [h["test_elbo"] for h in fused.history] == pytest.approx([h["test_elbo"] for h in foreach.history], abs=1e-4)


@pytest.mark.parametrize("name", ["jit-trace", "jit-meanfield"])
def test_jit_estimators_trace_once(batch, monkeypatch, name):
    """Pyro 1.9.2's JitTraceMeanField_ELBO re-traced every step; ours compiles once, like JitTrace_ELBO."""
    real, calls = torch.jit.trace, []

    def counting_trace(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counting_trace)
    cfg = Config(estimator=name, **TINY)
    vae = instantiate(cfg, 784, torch.device("cpu"))
    trainer = TorchTrainer(estimators.make(name), vae, 1e-3)
    for _ in range(5):
        assert math.isfinite(trainer.step(batch))
    assert len(calls) == 1


def test_gradient_variance_along_training_leaves_training_as_it_was(tmp_path):
    """nvil keeps running averages and draws from the training RNG stream: measuring its gradient's variance
    after each epoch must change neither."""
    two_epochs = {**BINARY, "epochs": 2}  # the second epoch runs after the first measurement
    plain = fit(Config(estimator="nvil", **two_epochs), tmp_path / "a", progress=False)
    measured = fit(Config(estimator="nvil", **two_epochs, grad_variance=5), tmp_path / "b", progress=False)
    assert [h["test_elbo"] for h in measured.history] == [h["test_elbo"] for h in plain.history]
    assert all(math.isfinite(h["log_guide_grad_variance"]) for h in measured.history)
    assert "log_guide_grad_variance" not in plain.history[0]
