"""--compile: the compiled networks and hand loss compute what the eager ones do, the option reaches
training and evaluation, and without a C++ compiler a run says so in one line and stays eager."""

import pytest
import torch
from conftest import TINY

from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import compiling, evaluate
from vae_pyro.lab.experiment import instantiate
from vae_pyro.lab.train import fit


@pytest.mark.skipif(not compiling.cxx_found(), reason="torch.compile's CPU kernels need a C++ compiler")
def test_compiled_model_computes_what_the_eager_one_does(batch):
    """Same weights, same ε: the hand loss, its gradient and the IS estimate (Pyro traces around the
    compiled networks) agree to float32 rounding (fused kernels sum in another order)."""
    cfg = Config(z_dim=4, hidden=(64,))
    eager, compiled = instantiate(cfg, 784), instantiate(cfg, 784)
    assert compiling.compile_model(compiled)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # a checkpoint fits either
    eps = torch.randn(3, len(batch), 4, generator=torch.Generator().manual_seed(0))
    loss = {}
    for name, m in (("eager", eager), ("compiled", compiled)):
        loss[name] = m.hand_loss(batch, particles=3, eps=eps)
        loss[name].backward()
    torch.testing.assert_close(loss["compiled"], loss["eager"], rtol=1e-5, atol=0)
    for p, q in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    log_px = [evaluate.is_log_likelihood(m, batch[:8], k=50) for m in (eager, compiled)]
    torch.testing.assert_close(log_px[1], log_px[0], rtol=1e-5, atol=0)


def test_without_a_cxx_compiler_one_line_and_eager(monkeypatch, capsys):
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    vae = instantiate(Config(z_dim=4, hidden=(64,)), 784)
    assert not compiling.compile_model(vae)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C++ compiler found" in err and "running eager" in err
    assert "hand_loss" not in vars(vae) and all(c._compiled_call_impl is None for c in vae.children())


def test_compile_reaches_training_and_evaluation(tmp_path, monkeypatch):
    """fit compiles the module it trains, evaluate_run the one it restores, and a run trained eagerly
    may be resumed compiled (it changes how a run continues, not what it is)."""
    compiled = []
    monkeypatch.setattr(compiling, "compile_model", lambda module: compiled.append(module) or True)
    fit(Config(**{**TINY, "epochs": 1}), tmp_path / "run", progress=False)
    assert compiled == []
    resumed = fit(Config(**TINY, compile=True), tmp_path / "run", resume=True, progress=False)
    assert compiled == [resumed.module] and len(resumed.history) == 2
    evaluate.evaluate_run(tmp_path / "run", k=2, compile=True)
    assert len(compiled) == 2


def test_compile_with_a_jit_estimator_is_refused():
    with pytest.raises(VaeError, match="two compilers of one step"):
        Config(estimator="jit-trace", compile=True)
