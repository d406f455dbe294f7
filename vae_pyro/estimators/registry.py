"""The estimator records collected, and everything derived from them: the names, the options each
owns, the refusals of options and of models an estimator cannot use, and building one.

A new estimator is one file (its class and its ``EstimatorSpec``) and one line in ``SPECS`` here (and, for a
new option, a Config field and its rule in ``OPTION_RULES``; for a new bound, a function in ``bounds.py``)."""

import math
from typing import Any

from pyro.infer import ELBO

from vae_pyro.errors import VaeError
from vae_pyro.estimators import (
    arm,
    discrete,
    gumbel,
    hand,
    nvil,
    pathwise,
    pyro_elbos,
    rainforth,
    relax,
    rloo,
    rws,
    score,
    vimco,
)
from vae_pyro.estimators.bounds import BOUNDS
from vae_pyro.estimators.spec import Estimator, EstimatorSpec
from vae_pyro.models.contract import is_latent

_TRACE, _MEANFIELD, _IWAE, _RENYI, _JIT_TRACE, _JIT_MEANFIELD, _ENUM = pyro_elbos.SPECS
SPECS: dict[str, EstimatorSpec] = {s.name: s for s in (
    _TRACE, _MEANFIELD, hand.SPEC, score.SPEC, _IWAE, _JIT_TRACE, _JIT_MEANFIELD, _ENUM, *pathwise.SPECS, _RENYI,
    *rainforth.SPECS, vimco.SPEC, rws.SPEC, rloo.SPEC, nvil.SPEC, *arm.SPECS, *relax.SPECS, gumbel.SPEC)}
NAMES = tuple(SPECS)
BASELINES = score.BASELINES
SAMPLE_OPTIONS = {"L": "particles", "K": "iwae_k"}  # the Config field that sets each kind of samples


def _finite_nonnegative_not_one(a: float) -> bool:
    return a >= 0 and a != 1 and math.isfinite(a)


# option -> (test of a value, what it must do)
OPTION_RULES = {
    "baseline": (lambda b: b in BASELINES, f"be one of {', '.join(BASELINES)}"),
    "alpha": (_finite_nonnegative_not_one, "be a finite number >= 0 other than 1 (the ELBO: use trace)"),
    "iwae_m": (lambda m: isinstance(m, int) and m >= 1, "be a positive integer"),
    "ciwae_beta": (lambda b: 0 <= b <= 1, "lie in [0, 1]"),
    "temperature": (lambda t: t > 0 and math.isfinite(t), "be a finite number > 0"),
}


def spec(name: str) -> EstimatorSpec:
    if name not in SPECS:
        raise VaeError(f"unknown estimator {name!r}; choose one of {', '.join(NAMES)}")
    return SPECS[name]


def owners(option: str) -> tuple[str, ...]:
    """The estimators that take ``option`` (a Config field such as ``alpha``)."""
    return tuple(n for n, s in SPECS.items() if option in s.options)


def owned_options() -> set[str]:
    return {o for s in SPECS.values() for o in s.options}


def names_with(samples: str) -> tuple[str, ...]:
    """The estimators whose draws per image are ``samples`` ("L" or "K")."""
    return tuple(n for n, s in SPECS.items() if s.samples == samples)


NOT_GIVEN = {"baseline": "none"}  # the value Config holds for an option never given (None for the others)


def is_given(option: str, value: Any) -> bool:
    return value is not None and value != NOT_GIVEN.get(option)


def options_of(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Estimator ``name``'s own options: its record's defaults, overridden by those given (not None)."""
    return {k: given[k] if given.get(k) is not None else default for k, default in spec(name).options.items()}


def samples_of(name: str, particles: int = 1, iwae_k: int = 5) -> int:
    return {"L": particles, "K": iwae_k}[spec(name).samples]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options estimator ``name`` cannot use, with the fix. ``options``: Config fields (``particles``,
    ``iwae_k`` and the owned options: ``baseline``, ``alpha``, ...); None or a default means not given."""
    s = spec(name)
    for option, value in options.items():
        if option in OPTION_RULES and value is not None:
            ok, must = OPTION_RULES[option]
            if not ok(value):
                raise VaeError(f"--{option.replace('_', '-')} must {must}, got {value!r}")
    for option in owned_options() - set(s.options):
        if is_given(option, options.get(option)):
            who = owners(option)
            who = f"the {who[0]} estimator" if len(who) == 1 else " and ".join(who)
            raise VaeError(f"--{option.replace('_', '-')} applies to {who} only, not {name}; drop it")
    if s.samples == "K" and options.get("particles", 1) != 1:
        raise VaeError(f"--particles does not apply to {name}, whose samples per image are K; use --iwae-k")
    samples = samples_of(name, options.get("particles", 1), options.get("iwae_k", 5))
    if samples < s.min_samples:
        flag = "--" + SAMPLE_OPTIONS[s.samples].replace("_", "-")
        raise VaeError(f"{name} needs at least {s.min_samples} draws per image; use {flag} {s.min_samples} or more")
    why = s.check(samples, options_of(name, options)) if s.check else None
    if why:
        raise VaeError(why)


NEEDS = {"rsample": "a reparameterised sample at every latent site", "enumerable": "an enumerable discrete site",
         "bernoulli": "Bernoulli latent sites only, their logits of x alone",
         "relaxable": "Bernoulli or one-hot categorical latent sites only",
         "relaxable_of_x": "Bernoulli or one-hot categorical latent sites only, their logits of x alone",
         "hand_loss": "the model's `hand_loss`", "model_order": "the guide's sites in the model's order"}
for _spec in SPECS.values():  # a typo in a record would silently disable its refusal or its check
    assert _spec.needs <= set(NEEDS), f"{_spec.name} needs unknown site kinds {_spec.needs - set(NEEDS)}"
    assert set(_spec.reference.values()) <= set(BOUNDS), f"{_spec.name}'s reference names an unknown bound"


# need -> (the kinds of latent site it takes, whether their logits must depend on x alone)
SITE_KINDS = {"bernoulli": ({"bernoulli"}, True), "relaxable": (set(discrete.KINDS), False),
              "relaxable_of_x": (set(discrete.KINDS), True)}


def _discrete(latent: dict) -> list[str]:
    return [n for n, site in latent.items() if not site["fn"].has_rsample]


def _joint_support(fn) -> str:
    """How many values a discrete site with event dimensions takes jointly: "2^200", or "?"."""
    inner = discrete.base(fn)
    try:
        values = inner.enumerate_support(expand=False).shape[0]
    except NotImplementedError:
        return "?"
    copies = math.prod(fn.event_shape) // max(math.prod(inner.event_shape), 1)
    return f"{values}^{copies}"


def _unmet(need: str, module, latent: dict, guide_trace, model_trace) -> str | None:
    """Why ``module``'s traces do not meet ``need``, or None."""
    model = type(module).__name__
    if need == "rsample" and _discrete(latent):
        return (f"a reparameterised sample at every latent site, and {model}'s {', '.join(_discrete(latent))} has "
                "none (it would get no gradient through it)")
    if need == "enumerable" and not any(latent[n]["fn"].has_enumerate_support for n in _discrete(latent)):
        sizes = ", ".join(f"{n} jointly takes {_joint_support(latent[n]['fn'])} values" for n in _discrete(latent))
        some = f" ({sizes}; declare its dimensions independent with a plate to enumerate each alone)" if sizes else ""
        return f"a discrete latent site to sum out exactly, and {model} has none it can enumerate{some}"
    if need in SITE_KINDS:
        kinds, of_x = SITE_KINDS[need]
        other = [f"{n} ({type(discrete.base(s['fn'])).__name__})" for n, s in latent.items()
                 if discrete.kind(s["fn"]) not in kinds]
        if other or not latent:
            what = NEEDS[need].split(",")[0]
            return f"{what}, and {model}'s {', '.join(other) or 'guide'} {'is' if len(other) == 1 else 'are'} not"
        inputs = guide_trace.nodes["_INPUT"]
        dependent = discrete.depending_on_draws(module.guide, *inputs["args"], **inputs["kwargs"]) if of_x else []
        if dependent:
            return (f"sites whose logits depend on x alone, and {model}'s {', '.join(dependent)} "
                    f"depend{'s' if len(dependent) == 1 else ''} on another latent draw (a hierarchy of discrete "
                    "layers)")
    if need == "hand_loss" and not callable(getattr(module, "hand_loss", None)):
        return f"the model's own hand_loss(x, y=None, particles=1, eps=None), and {model} has none"
    if need == "model_order":
        order = [n for n in model_trace.nodes if n in latent]
        if order != list(latent):
            return (f"a guide that samples the latent sites in the model's order for its analytic KL (the guide "
                    f"samples {', '.join(latent)}, the model {', '.join(order)}), or it is biased")
    return None


def refusal(name: str, module, guide_trace, model_trace) -> str | None:
    """Why estimator ``name`` cannot apply to this model (from one guide trace and the model trace replayed
    on it), or None."""
    latent = {n: s for n, s in guide_trace.nodes.items() if is_latent(s)}
    for need in sorted(spec(name).needs):
        why = _unmet(need, module, latent, guide_trace, model_trace)
        if why:
            return f"{name} needs {why}"
    return None


def check_model(name: str, module, guide_trace, model_trace) -> None:
    """Refuse, in one line that says why and which estimators do apply, an estimator the model cannot use."""
    why = refusal(name, module, guide_trace, model_trace)
    if why:
        fits = [n for n in NAMES if refusal(n, module, guide_trace, model_trace) is None]
        raise VaeError(f"{why}; use {', '.join(fits)}")


def make(name: str, max_plate_nesting: int = 1, x_dim: int = 784, particles: int = 1, iwae_k: int = 5,
         **options: Any) -> Estimator:
    """Estimator ``name`` with its draws per image (``particles`` = L or ``iwae_k`` = K, as its record says)
    and its own options (``baseline``, ``alpha``, ``iwae_m``, ``ciwae_beta``; the record's defaults for those
    not given). ``max_plate_nesting``: the model's (``lab.traces.plate_nesting``); given, so Pyro never
    guesses it by running the model, which would draw from the training RNG stream. ``x_dim`` sizes a
    network the estimator trains beside the module."""
    s = spec(name)
    unknown = sorted(set(options) - owned_options())
    if unknown:
        raise VaeError(f"unknown estimator option {unknown[0]!r}; the options are particles, iwae_k, "
                       f"{', '.join(sorted(owned_options()))}")
    check_options(name, {"particles": 1 if s.samples == "K" else particles, "iwae_k": iwae_k, **options})
    own = options_of(name, options)
    samples = samples_of(name, particles, iwae_k)
    net = s.network(x_dim, own) if s.network else None
    with_net = {"network": net} if net is not None else {}
    elbo = s.build(num_particles=samples, max_plate_nesting=max_plate_nesting, vectorize_particles=True, **with_net,
                   **own)
    return Estimator(s, samples, elbo, own, net)


class ForSVI(ELBO):
    """An estimator as a Pyro ELBO for ``pyro.infer.SVI(model, guide, optim, loss=...)``: the guide it
    needs (score's, enum's) is applied inside, and any network it trains beside the module is registered
    with Pyro (so SVI steps it)."""

    def __init__(self, estimator: Estimator):
        self.estimator = estimator
        self._guides: dict[int, tuple] = {}
        super().__init__(num_particles=estimator.samples, max_plate_nesting=estimator.elbo.max_plate_nesting)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("ForSVI delegates to its estimator's ELBO")

    def _guide(self, guide):
        """The transformed guide, made once per guide (the jit-* ELBOs key their compilation on its id)."""
        if id(guide) not in self._guides:
            self._guides[id(guide)] = (guide, self.estimator.guide(guide))
        return self._guides[id(guide)][1]

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.estimator.elbo.loss(model, self._guide(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.estimator.elbo.differentiable_loss(model, self._guide(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        return self.estimator.elbo.loss_and_grads(model, self._guide(guide), *args, **kwargs)


def elbo(name: str, max_plate_nesting: int = 1, x_dim: int = 784, **options: Any) -> ELBO:
    """Estimator ``name`` as a Pyro ELBO for your own SVI loop (options as ``make`` takes them)::

        svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=vp.elbo("iwae-dreg", iwae_k=5))
    """
    return ForSVI(make(name, max_plate_nesting, x_dim, **options))
