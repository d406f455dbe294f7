"""The estimator registry: a name -> an objective over (module, batch), for any model that keeps
the contract (``vae_pyro.models.contract``).

Every estimator works with the *negative* bound summed over the batch, as Pyro's ELBOs do,
and takes ``particles`` = L Monte-Carlo samples per image, vectorised (for `score`, a loop).

| name            | bound | KL term                          | reconstruction term |
|-----------------|-------|----------------------------------|---------------------|
| `trace`         | ELBO  | Monte Carlo, log q − log p at z  | reparameterised     |
| `meanfield`     | ELBO  | analytic (``kl_divergence``)     | reparameterised     |
| `hand`          | ELBO  | analytic, closed form by hand    | reparameterised     |
| `score`         | ELBO  | score function (+ baseline)      | score function      |
| `iwae`          | IWAE, K samples (Burda et al. 2016)                 | reparameterised |
| `renyi`         | Rényi bound of order α, K samples (Li & Turner 2016) | reparameterised |
| `jit-trace`     | as `trace`, compiled by ``torch.jit.trace``                             |
| `jit-meanfield` | as `meanfield`, compiled                                                |
| `enum`          | ELBO, discrete guide sites enumerated exactly (``TraceEnum_ELBO``)      |
| `stl`, `iwae-stl`, `iwae-dreg` | ELBO / IWAE with path-derivative guide gradients (``pathwise.py``) |
| `miwae`, `piwae`, `ciwae` | Rainforth et al. 2018's bounds (``rainforth.py``)                         |
| `vimco`         | IWAE, multi-sample score function with leave-one-out baselines (``vimco.py``) |
| `rws`           | IWAE's θ gradient; φ by wake-φ, the inclusive KL (``rws.py``)           |

`hand` is the model's own ``hand_loss`` (the VAE's is derived in ``vae_pyro/models/hand.py``).
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.infer as infer
import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from vae_pyro.errors import VaeError
from vae_pyro.estimators import pyro_compat
from vae_pyro.estimators.pathwise import PathwiseELBO
from vae_pyro.estimators.rainforth import MultiSampleELBO
from vae_pyro.estimators.rws import ReweightedWakeSleep
from vae_pyro.estimators.vimco import VIMCO
from vae_pyro.models.contract import is_latent
from vae_pyro.models.nets import mlp

PYRO_ELBOS: dict[str, Callable[..., infer.ELBO]] = {
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "score": infer.TraceGraph_ELBO,
    "iwae": lambda **kw: infer.RenyiELBO(alpha=0, **kw),
    "jit-trace": infer.JitTrace_ELBO,
    "jit-meanfield": pyro_compat.JitTraceMeanField_ELBO,
    "enum": infer.TraceEnum_ELBO,
    "stl": lambda **kw: PathwiseELBO("elbo", "stl", **kw),
    "iwae-stl": lambda **kw: PathwiseELBO("iwae", "stl", **kw),
    "iwae-dreg": lambda **kw: PathwiseELBO("iwae", "dreg", **kw),
    "renyi": infer.RenyiELBO,
    "miwae": lambda **kw: MultiSampleELBO("miwae", **kw),
    "piwae": lambda **kw: MultiSampleELBO("piwae", **kw),
    "ciwae": lambda **kw: MultiSampleELBO("ciwae", **kw),
    "vimco": VIMCO,
    "rws": ReweightedWakeSleep,
}
NAMES = ("trace", "meanfield", "hand", "score", "iwae", "jit-trace", "jit-meanfield", "enum", "stl", "iwae-stl",
         "iwae-dreg", "renyi", "miwae", "piwae", "ciwae", "vimco", "rws")
# samples per image: --iwae-k
IWAE_FAMILY = ("iwae", "iwae-stl", "iwae-dreg", "renyi", "miwae", "piwae", "ciwae", "vimco", "rws")
PATHLESS = ("vimco", "rws")  # of the IWAE family, those that need no reparameterised sample, and K >= 2
GROUPED = ("miwae", "piwae")  # M groups of K draws (--iwae-m)
DEFAULTS = {"alpha": 0.5, "m": 4, "beta": 0.5}
# options only some estimators take (Config field -> those estimators): refused for the others, and
# dropped from the others' configurations when a comparison shares one set of options
OWNED_OPTIONS = {"baseline": ("score",), "alpha": ("renyi",), "iwae_m": GROUPED, "ciwae_beta": ("ciwae",)}  # renyi's α, miwae/piwae's M, ciwae's β when not given
BASELINES = ("none", "decaying", "neural")

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


@dataclass
class Estimator:
    """One named objective. ``elbo`` is the Pyro ELBO object, or None for the model's plain-PyTorch
    ``hand_loss``.

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
        if self.name == "enum":
            return infer.config_enumerate(vae.guide, default="parallel")
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
            return vae.hand_loss(x, y, particles=self.particles)
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
        return {
            "baseline_net": self.baseline_net.state_dict() if self.baseline_net is not None else {},
            "baseline_avg": pyro_compat.decaying_baselines(),
        }

    def load_state_dict(self, state: dict) -> None:
        if self.baseline_net is not None:
            self.baseline_net.load_state_dict(state["baseline_net"])
        pyro_compat.load_decaying_baselines(state["baseline_avg"])

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


def check_options(name: str, particles: int, baseline: str, alpha: float | None = None, m: int | None = None,
                  beta: float | None = None, iwae_k: int = 5) -> None:
    """Refuse combinations an estimator cannot use, with the fix."""
    if name not in NAMES:
        raise VaeError(f"unknown estimator {name!r}; choose one of {', '.join(NAMES)}")
    if baseline not in BASELINES:
        raise VaeError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if name in IWAE_FAMILY and particles != 1:
        raise VaeError(f"--particles does not apply to {name}, whose samples per image are K; use --iwae-k")
    given = {"baseline": None if baseline == "none" else baseline, "alpha": alpha, "iwae_m": m, "ciwae_beta": beta}
    for key, owners in OWNED_OPTIONS.items():
        if given[key] is not None and name not in owners:
            who = f"the {owners[0]} estimator" if len(owners) == 1 else " and ".join(owners)
            raise VaeError(f"--{key.replace('_', '-')} applies to {who} only, not {name}; drop it")
    if alpha is not None and not (alpha >= 0 and alpha != 1 and math.isfinite(alpha)):
        raise VaeError(f"--alpha must be a finite number >= 0 other than 1 (the ELBO: use trace), got {alpha}")
    if name in PATHLESS and iwae_k < 2:
        why = {"vimco": "leave-one-out baselines", "rws": "self-normalised weights"}[name]
        raise VaeError(f"{name}'s {why} need at least two draws per image; use --iwae-k 2 or more")
    if m is not None and m < 1:
        raise VaeError(f"--iwae-m must be a positive integer, got {m}")
    if beta is not None and not 0 <= beta <= 1:
        raise VaeError(f"--ciwae-beta must lie in [0, 1], got {beta}")
    if baseline == "neural" and particles != 1:
        raise VaeError("--baseline neural predicts one value per image, so it needs --particles 1")


def check_model(name: str, module, guide_trace, model_trace) -> None:
    """Refuse an estimator that cannot apply to this model, saying why (from one guide trace and the
    model trace replayed on it)."""
    model = type(module).__name__
    latent = {n: s for n, s in guide_trace.nodes.items() if is_latent(s)}
    discrete = [n for n, s in latent.items() if not s["fn"].has_rsample]
    if name == "hand" and not callable(getattr(module, "hand_loss", None)):
        raise VaeError(f"the hand estimator needs the model's own hand_loss(x, y=None, particles=1, eps=None), "
                       f"and {model} has none; choose a Pyro estimator such as meanfield")
    if name in ("meanfield", "jit-meanfield", "stl", *IWAE_FAMILY) and name not in PATHLESS and discrete:
        raise VaeError(f"{name} needs a reparameterised sample at every latent site, and {model}'s "
                       f"{', '.join(discrete)} has none (it would get no gradient through it); use trace, score or enum")
    if name in ("meanfield", "jit-meanfield"):
        model_order = [n for n, s in model_trace.nodes.items() if n in latent]
        if model_order != list(latent):
            raise VaeError(f"{name}'s analytic KL needs a guide that samples the latent sites in the model's order "
                           f"(the guide samples {', '.join(latent)}, the model {', '.join(model_order)}), or it is "
                           "biased; use trace")
    if name == "enum" and not discrete:
        raise VaeError(f"enum sums out discrete latent sites exactly, and {model} has none; use trace")
    if name.startswith("jit-") and discrete:
        raise VaeError(f"{name} compiles one trace and gives {', '.join(discrete)} no score-function term; "
                       "use trace or score")


def make(name: str, particles: int = 1, baseline: str = "none", iwae_k: int = 5, x_dim: int = 784,
         max_plate_nesting: int = 1, alpha: float | None = None, m: int | None = None,
         beta: float | None = None) -> Estimator:
    """Build estimator ``name`` (one of ``NAMES``, options as ``check_options`` accepts) with L =
    ``particles`` samples per image. The IWAE family (``IWAE_FAMILY``) draws K = ``iwae_k`` samples per
    image instead (miwae and piwae: ``m`` groups of K); `score` uses ``baseline``; `renyi` the order
    ``alpha`` (Li & Turner 2016); ciwae the weight ``beta`` (``DEFAULTS`` for those not given). ``max_plate_nesting``: the model's (``lab.traces.plate_nesting``); given, so
    Pyro never guesses it by running the model, which would draw from the training RNG stream."""
    if name == "hand":
        return Estimator(name, particles, None)
    samples = iwae_k if name in IWAE_FAMILY else particles
    # score's particles run in a loop: Pyro 1.9 cannot broadcast an Independent distribution
    # with has_rsample=False across the particle plate (it tries to set a read-only property).
    vectorize = name != "score"
    given = {"alpha": alpha, "m": m, "beta": beta}
    extra = {key: DEFAULTS[key] if given[key] is None else given[key]
             for key in {"renyi": ["alpha"], "miwae": ["m"], "piwae": ["m"], "ciwae": ["beta"]}.get(name, [])}
    elbo = PYRO_ELBOS[name](num_particles=samples, vectorize_particles=vectorize, max_plate_nesting=max_plate_nesting,
                            **extra)
    net = None
    if baseline == "neural":
        net = nn.Sequential(mlp([x_dim, 100, 1], "relu"), nn.Flatten(0))
    return Estimator(name, samples, elbo, baseline, net)
