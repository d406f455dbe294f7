"""Every place vae_pyro leans on Pyro's private internals, in one module. Each coupling has a
probe here that ``tests/test_pyro_compat.py`` runs, so a Pyro release that breaks one fails
loudly, naming it, instead of silently slowing or corrupting a run."""

from collections.abc import Callable

import pyro
import pyro.infer as infer
import pyro.optim
import torch

# TraceGraph_ELBO keeps its decaying-average baselines in the param store under this prefix.
BASELINE_AVG = "__baseline_avg"


class JitTraceMeanField_ELBO(infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's JitTraceMeanField_ELBO compiles its loss anew on every call: it checks for a
    cached ``_loss_and_surrogate_loss`` but stores ``_differentiable_loss``, so each step re-traces
    (4.5x slower than the hand-written loop, where JitTrace_ELBO is 1.2x). This reuses the first.

    Coupling: the private attribute ``_differentiable_loss`` and the ``_pyro_model_id`` /
    ``_pyro_guide_id`` keywords of the compiled function."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, **kwargs, _pyro_model_id=id(model), _pyro_guide_id=id(guide))


def decaying_baselines() -> dict[str, torch.Tensor]:
    """The decaying-average baselines TraceGraph_ELBO has learned (copies), by param-store name."""
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store if k.startswith(BASELINE_AVG)}


def load_decaying_baselines(state: dict[str, torch.Tensor]) -> None:
    for name, value in state.items():
        pyro.get_param_store()[name] = value


def set_optim_lr(state: dict, lr_of: Callable[[str], float]) -> dict:
    """``pyro.optim.PyroOptim.get_state()`` (one torch optimizer state_dict per parameter name)
    with each parameter's learning rate set to ``lr_of(name)``, for a resume that changes it.
    Coupling: that format."""
    for name, param_state in state.items():
        for group in param_state["param_groups"]:
            group["lr"] = lr_of(name)
    return state


class CouplingBroken(RuntimeError):
    """A Pyro internal that vae_pyro relies on has changed."""


def probe_jit_meanfield_cache() -> None:
    """The compiled loss is cached under ``_differentiable_loss`` after the first call."""
    pyro.clear_param_store()

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", pyro.distributions.Normal(pyro.param("q_loc", torch.zeros(())), 1.0))

    elbo = JitTraceMeanField_ELBO(max_plate_nesting=1)
    elbo.differentiable_loss(model, guide, torch.zeros(3))
    if getattr(elbo, "_differentiable_loss", None) is None:
        raise CouplingBroken(f"pyro {pyro.__version__}: JitTraceMeanField_ELBO no longer caches its compiled loss "
                             "under _differentiable_loss; revisit pyro_compat.JitTraceMeanField_ELBO")
    elbo.differentiable_loss(model, guide, torch.zeros(3))


def probe_baseline_names() -> None:
    """A decaying-average baseline appears in the param store under ``BASELINE_AVG``."""
    pyro.clear_param_store()

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", pyro.distributions.Normal(pyro.sample("z", pyro.distributions.Normal(0.0, 1.0)), 1.0),
                        obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            fn = pyro.distributions.Normal(pyro.param("q_loc", torch.zeros(())), 1.0)
            pyro.sample("z", fn.has_rsample_(False), infer={"baseline": {"use_decaying_avg_baseline": True}})

    infer.TraceGraph_ELBO(max_plate_nesting=1).loss_and_grads(model, guide, torch.zeros(3))
    if not decaying_baselines():
        raise CouplingBroken(f"pyro {pyro.__version__}: TraceGraph_ELBO keeps no param named {BASELINE_AVG}*; "
                             "score's decaying baselines would not be checkpointed: revisit pyro_compat.BASELINE_AVG")
    pyro.clear_param_store()


def probe_optim_state() -> None:
    """``pyro.optim.Adam.get_state()`` is {param name: torch optimizer state_dict with param_groups}."""
    pyro.clear_param_store()
    optim = pyro.optim.Adam({"lr": 0.1})
    p = pyro.param("p", torch.zeros(2))
    p.sum().backward()
    optim([p.unconstrained()])
    state = optim.get_state()
    try:
        resumed = pyro.optim.Adam({"lr": 0.1})  # as a resumed trainer: a fresh optimizer, then the saved state
        resumed.set_state(set_optim_lr(state, lambda name: 0.01))
        resumed([p.unconstrained()])
        lr = next(iter(resumed.optim_objs.values())).param_groups[0]["lr"]
    except (KeyError, TypeError, AttributeError, StopIteration) as e:
        raise CouplingBroken(f"pyro {pyro.__version__}: pyro.optim's state format changed ({type(e).__name__}: {e}); "
                             "revisit pyro_compat.set_optim_lr") from None
    if lr != 0.01:
        raise CouplingBroken(f"pyro {pyro.__version__}: pyro.optim ignores param_groups' lr in set_state; "
                             "revisit pyro_compat.set_optim_lr")
    pyro.clear_param_store()


PROBES = (probe_jit_meanfield_cache, probe_baseline_names, probe_optim_state)
