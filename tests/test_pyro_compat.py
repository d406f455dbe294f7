"""Every coupling to Pyro's private internals (vae_pyro/estimators/pyro_compat.py) is probed: a Pyro
release that breaks one fails here, naming it."""

import pyro
import pytest

from vae_pyro.estimators import pyro_compat


@pytest.mark.parametrize("probe", pyro_compat.PROBES, ids=lambda p: p.__name__)
def test_pyro_internals_vae_pyro_relies_on_are_as_expected(probe):
    probe()


def test_a_probe_fails_loudly_naming_its_coupling(monkeypatch):
    """Negative control: with the cached attribute renamed, as a Pyro release could, the probe says so."""
    original = pyro.infer.JitTraceMeanField_ELBO.differentiable_loss

    def renamed(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        self._compiled_elsewhere = self.__dict__.pop("_differentiable_loss", None)
        return loss

    monkeypatch.setattr(pyro.infer.JitTraceMeanField_ELBO, "differentiable_loss", renamed)
    with pytest.raises(pyro_compat.CouplingBroken, match="no longer caches its compiled loss under _differentiable_loss"):
        pyro_compat.probe_jit_meanfield_cache()


def test_optim_lr_is_rewritten_in_every_param_group():
    state = {"a": {"param_groups": [{"lr": 0.1}, {"lr": 0.2}]}, "b": {"param_groups": [{"lr": 0.3}]}}
    lr_of = {"a": 0.01, "b": 1.0}.get  # each parameter's own (a model's lr_scale)
    assert pyro_compat.set_optim_lr(state, lr_of) == {"a": {"param_groups": [{"lr": 0.01}, {"lr": 0.01}]},
                                                     "b": {"param_groups": [{"lr": 1.0}]}}
