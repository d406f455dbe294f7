"""The estimator registry: a name -> an objective over (vae, batch).

Every estimator works with the *negative* bound summed over the batch, as Pyro's ELBOs do,
and takes ``particles`` = L Monte-Carlo samples per image, vectorised (for `score`, a loop).

| name            | bound | KL term                          | reconstruction term |
|-----------------|-------|----------------------------------|---------------------|
| `trace`         | ELBO  | Monte Carlo, log q − log p at z  | reparameterised     |
| `meanfield`     | ELBO  | analytic (``kl_divergence``)     | reparameterised     |
| `hand`          | ELBO  | analytic, closed form by hand    | reparameterised     |
| `score`         | ELBO  | score function (+ baseline)      | score function      |
| `iwae`          | IWAE, K samples (Burda et al. 2016)                 | reparameterised |
| `jit-trace`     | as `trace`, compiled by ``torch.jit.trace``                             |
| `jit-meanfield` | as `meanfield`, compiled                                                |

and, for the deterministic autoencoder (``--model ae``) only, `reconstruction`: −log p_θ(x | f_φ(x)).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.infer as infer
import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from vae_pyro import hand
from vae_pyro.errors import VaeError
from vae_pyro.nets import mlp


class JitTraceMeanField_ELBO(infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's JitTraceMeanField_ELBO compiles its loss anew on every call: it checks for a
    cached ``_loss_and_surrogate_loss`` but stores ``_differentiable_loss``, so each step re-traces
    (4.5x slower than the hand-written loop, where JitTrace_ELBO is 1.2x). This reuses the first."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, **kwargs, _pyro_model_id=id(model), _pyro_guide_id=id(guide))


PYRO_ELBOS: dict[str, Callable[..., infer.ELBO]] = {
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "score": infer.TraceGraph_ELBO,
    "iwae": lambda **kw: infer.RenyiELBO(alpha=0, **kw),
    "jit-trace": infer.JitTrace_ELBO,
    "jit-meanfield": JitTraceMeanField_ELBO,
}
ELBO_NAMES = ("trace", "meanfield", "hand", "score", "iwae", "jit-trace", "jit-meanfield")  # for a VAE / CVAE
NAMES = (*ELBO_NAMES, "reconstruction")
BASELINES = ("none", "decaying", "neural")
BASELINE_AVG = "__baseline_avg"  # TraceGraph_ELBO's param-store prefix for decaying-average baselines

# torch.jit.trace warns about every Python-level shape read in a Pyro model, and that it is
# deprecated; neither concerns a user of the jit-* estimators.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", message="`torch.jit.trace` is deprecated", category=FutureWarning)


class ScoreFunction(Messenger):
    """Guide handler: latent sites lose their pathwise gradient (``has_rsample_(False)``) and get
    ``baseline`` as their variance-reduction option, so TraceGraph_ELBO uses the score function
    ∇φ E_q[f(z)] = E_q[(f(z) − b) ∇φ log q_φ(z|x)] (Williams 1992; Ranganath et al. 2014)."""

    def __init__(self, baseline: dict):
        super().__init__()
        self.baseline = baseline

    def _pyro_sample(self, msg: dict) -> None:
        if not msg["is_observed"]:
            fn = msg["fn"]
            while hasattr(fn, "base_dist"):  # Independent / expanded wrappers read has_rsample from their base
                fn = fn.base_dist
            fn.has_rsample_(False)
            msg["infer"]["baseline"] = self.baseline


def reconstruction_loss(ae, x: torch.Tensor, y: torch.Tensor | None = None, particles: int = 1) -> torch.Tensor:
    """The autoencoder's loss: −Σ_i log p_θ(x_i | f_φ(x_i)), deterministic (``particles`` unused)."""
    code, _ = ae.encode(x, y)
    return -hand.log_likelihood(ae.likelihood, x, ae.decode(code, y)).sum()


TORCH_LOSSES = {"hand": hand.loss, "reconstruction": reconstruction_loss}


@dataclass
class Estimator:
    """One named objective. ``elbo`` is the Pyro ELBO object, or None for a plain-PyTorch loss
    (``TORCH_LOSSES``: the hand-derived ELBO, or the autoencoder's reconstruction).

    ``baseline`` / ``baseline_net`` belong to `score`: the control variate it subtracts, and for
    ``neural`` the network b(x) trained alongside (Mnih & Gregor 2014).

    Pyro's ELBOs reach the module's parameters through Pyro's global param store, and the jit-*
    ones compile against it: before using a new estimator on another module, clear the store
    (``pyro.clear_param_store()``; the trainers and diagnostics do).
    """

    name: str
    particles: int
    elbo: infer.ELBO | None
    baseline: str = "none"
    baseline_net: nn.Module | None = None

    _bound: tuple | None = field(default=None, repr=False)

    def pyro_fns(self, vae) -> tuple[Callable, Callable]:
        """(model, guide) for Pyro, made once per module: the jit-* ELBOs key their compiled
        function on the callables' ids, and ``vae.model`` is a new bound method on every access."""
        if self._bound is None or self._bound[0] is not vae:
            self._bound = (vae, vae.model, self.guide(vae))
        return self._bound[1], self._bound[2]

    def guide(self, vae) -> Callable:
        if self.name != "score":
            return vae.guide

        def score_guide(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
            options = {
                "none": {},
                "decaying": {"use_decaying_avg_baseline": True},
                "neural": {"nn_baseline": self.baseline_net, "nn_baseline_input": x},
            }[self.baseline]
            if self.baseline_net is not None:
                pyro.module("baseline", self.baseline_net)
            with ScoreFunction(options):
                vae.guide(x, y)

        return score_guide

    def loss(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """−(bound) summed over the batch, differentiable (plain-PyTorch losses and the ELBOs that offer it)."""
        if self.elbo is None:
            return TORCH_LOSSES[self.name](vae, x, y, self.particles)
        return self.elbo.differentiable_loss(*self.pyro_fns(vae), *batch(x, y))

    def value(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """One draw of −(bound) summed over the batch, no gradients."""
        with torch.no_grad():
            if self.elbo is None:
                return self.loss(vae, x, y).item()
            return self.elbo.loss(*self.pyro_fns(vae), *batch(x, y))

    def state_dict(self) -> dict:
        """What `score` keeps beside the module: the neural baseline's weights and the
        decaying-average baselines (TraceGraph_ELBO keeps those in the param store)."""
        store = pyro.get_param_store()
        return {
            "baseline_net": self.baseline_net.state_dict() if self.baseline_net is not None else {},
            "baseline_avg": {k: store[k].detach().clone() for k in store.keys() if k.startswith(BASELINE_AVG)},
        }

    def load_state_dict(self, state: dict) -> None:
        if self.baseline_net is not None:
            self.baseline_net.load_state_dict(state["baseline_net"])
        for name, value in state["baseline_avg"].items():
            pyro.get_param_store()[name] = value

    def backward(self, vae, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Accumulate one draw of this estimator's gradient into ``.grad``; return the loss."""
        if self.elbo is None:
            loss = self.loss(vae, x, y)
            loss.backward()
            return loss.item()
        return self.elbo.loss_and_grads(*self.pyro_fns(vae), *batch(x, y))


def batch(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The arguments of model and guide: (x,) or, for a conditional model, (x, y)."""
    return (x,) if y is None else (x, y)


def check_options(name: str, particles: int, baseline: str, model: str = "vae") -> None:
    """Refuse combinations an estimator cannot use, with the fix."""
    if name not in NAMES:
        raise VaeError(f"unknown estimator {name!r}; choose one of {', '.join(NAMES)}")
    if (model == "ae") != (name == "reconstruction"):
        raise VaeError("the autoencoder (--model ae) trains on --estimator reconstruction only, and only it does; "
                       f"got --model {model} --estimator {name}")
    if baseline not in BASELINES:
        raise VaeError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if name == "iwae" and particles != 1:
        raise VaeError("--particles does not apply to iwae, whose samples per image are K; use --iwae-k")
    if name == "reconstruction" and particles != 1:
        raise VaeError("--particles does not apply to the autoencoder, which samples nothing; drop it")
    if baseline != "none" and name != "score":
        raise VaeError(f"--baseline applies to the score estimator only, not {name}; drop it")
    if baseline == "neural" and particles != 1:
        raise VaeError("--baseline neural predicts one value per image, so it needs --particles 1")


def make(name: str, particles: int = 1, baseline: str = "none", iwae_k: int = 5, x_dim: int = 784) -> Estimator:
    """Build estimator ``name`` (one of ``NAMES``) with L = ``particles`` samples per image.

    `iwae` draws K = ``iwae_k`` samples per image instead; `score` uses ``baseline``.
    """
    check_options(name, particles, baseline, "ae" if name == "reconstruction" else "vae")
    if name in TORCH_LOSSES:
        return Estimator(name, particles, None)
    samples = iwae_k if name == "iwae" else particles
    # score's particles run in a loop: Pyro 1.9 cannot broadcast an Independent distribution
    # with has_rsample=False across the particle plate (it tries to set a read-only property).
    vectorize = name != "score"
    elbo = PYRO_ELBOS[name](num_particles=samples, vectorize_particles=vectorize, max_plate_nesting=1)
    net = None
    if baseline == "neural":
        net = nn.Sequential(mlp([x_dim, 100, 1], "relu"), nn.Flatten(0))
    return Estimator(name, samples, elbo, baseline, net)
