"""The contract between a modeller's Pyro program and the lab, and the code that checks it.

A model the lab can train, compare, evaluate and diagnose is

- an ``nn.Module`` class built from keyword options: ``x_dim`` (values per data point), any of
  the shared options it names in its constructor (``z_dim``, ``hidden``, ``likelihood``, …, set by
  ``--z-dim`` etc.), and whatever ``--model-option k=v`` passes;
- with ``model(x, y=None)`` and ``guide(x, y=None)``, Pyro programs whose every per-image site lies
  inside ``pyro.plate("data", len(x))`` at dim -1, whose observed site is named ``"x"``, and whose
  every parameter is registered with ``pyro.module`` (or ``pyro.param``) in one of the two;
- optionally ``conditional = True`` (model and guide need the labels ``y``), a ``beta`` attribute
  (the KL weight, which ``--kl-warmup`` sets each epoch), and a plain-PyTorch
  ``hand_loss(x, y=None, particles=1, eps=None)`` (−bound summed over the batch), which enables the
  ``hand`` estimator and the same-ε check;
- optionally ``init_from_data(x)``, called once with the training images when the module is built
  (pixel means, an output bias), and ``lr_scale = {"submodule": factor}``, learning-rate multipliers for
  the parameters of the named submodules (registered with ``pyro.module`` under the same names).

A model is named ``vae``, ``cvae``, ``ae``, ``binary-vae`` or ``categorical-vae`` (built in), ``path/to/file.py:Class`` or
``package.module:Class``. Every broken rule is a ``VaeError`` naming the rule and the fix.
"""

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from vae_pyro.errors import VaeError

BUILTIN = {"vae": "vae_pyro.models.vae:VAE", "cvae": "vae_pyro.models.cvae:CVAE", "ae": "vae_pyro.models.ae:AE",
           "binary-vae": "vae_pyro.models.binary_vae:BinaryVAE",
           "categorical-vae": "vae_pyro.models.categorical_vae:CategoricalVAE"}
DATA_PLATE, OBSERVED = "data", "x"
SHARED_HINT = {"z_dim", "hidden", "likelihood", "activation", "min_scale", "beta", "conv", "prior"}  # Config fields
CONTRACT = "see the model contract in vae_pyro.models.contract or the README"


def load_class(spec: str) -> type[nn.Module]:
    """The class a model name stands for: a built-in name, ``file.py:Class`` or ``module:Class``."""
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        raise VaeError(f"unknown model {spec!r}; use {', '.join(BUILTIN)}, path/to/file.py:Class or package.module:Class")
    where, name = target.rsplit(":", 1)
    if where.endswith(".py"):
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise VaeError(f"cannot import module {where!r} for --model {spec} ({e}); check the name, or give a file: "
                           "path/to/file.py:Class") from None
    cls = getattr(module, name, None)
    if cls is None:
        raise VaeError(f"{where} defines no {name!r}; check the class name after the colon in --model {spec}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise VaeError(f"{spec} is not an nn.Module class; a model is a torch.nn.Module subclass ({CONTRACT})")
    for method in ("model", "guide"):
        if not callable(getattr(cls, method, None)):
            raise VaeError(f"{spec} has no {method}(x, y=None) method; a model needs both model and guide ({CONTRACT})")
    return cls


def _import_file(path: Path):
    """Import a user's file as a module (cached, so a class loaded twice is the same class)."""
    if not path.is_file():
        raise VaeError(f"model file {path} not found; check the path before the colon in --model")
    name = f"vae_pyro_user.{path.resolve().with_suffix('').as_posix().strip('/').replace('/', '.')}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: any error there is theirs to fix, named in one line
        del sys.modules[name]
        raise VaeError(f"importing {path} failed ({type(e).__name__}: {e}); fix the file") from None
    return module


def spec_of(cls: type) -> str:
    """The name under which ``cls`` can be loaded again (by another process, or from a run folder)."""
    for name, target in BUILTIN.items():
        if f"{cls.__module__}:{cls.__qualname__}" == target:
            return name
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if cls.__module__.startswith("vae_pyro_user.") and file:
        return f"{file}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def options_taken(cls: type) -> set[str] | None:
    """The keyword options ``cls(...)`` accepts; None when it takes ``**kwargs`` (anything)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def unknown_options(cls: type, options: dict[str, Any]) -> list[str]:
    """The keys of ``options`` that ``cls(...)`` does not take, sorted."""
    taken = options_taken(cls)
    return sorted(set(options) - taken) if taken is not None else []


def construct(cls: type, options: dict[str, Any], spec: str) -> nn.Module:
    """``cls(**options)``, refusing an option the constructor does not take."""
    taken = options_taken(cls)
    if taken is not None and "x_dim" not in taken:
        raise VaeError(f"{spec}'s constructor takes no x_dim; a model is built as Class(x_dim=..., **options) ({CONTRACT})")
    unknown = unknown_options(cls, options)
    if unknown:
        flags = ", ".join(f"--{k.replace('_', '-')}" if k in SHARED_HINT else f"--model-option {k}=..." for k in unknown)
        raise VaeError(f"{spec} takes no option {', '.join(unknown)} (it takes {', '.join(sorted(taken))}); drop {flags}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise VaeError(f"building {spec}({', '.join(f'{k}={v!r}' for k, v in options.items())}) failed "
                       f"({type(e).__name__}: {e}); fix the options") from None


def lr_groups(module: nn.Module, lr: float) -> list[dict]:
    """``module``'s parameters as optimizer groups: each submodule named in its ``lr_scale`` at lr × factor,
    the rest at ``lr``."""
    scale = getattr(module, "lr_scale", {})
    unknown = sorted(set(scale) - {n for n, _ in module.named_children()})
    if unknown:
        raise VaeError(f"{type(module).__name__}.lr_scale names {', '.join(unknown)}, which are not submodules; "
                       "name the attributes that hold the networks")
    groups = {None: []} | {name: [] for name in scale}
    for name, p in module.named_parameters():
        groups[name.split(".")[0] if name.split(".")[0] in scale else None].append(p)
    return [{"params": ps, "lr": lr * scale.get(name, 1.0)} for name, ps in groups.items() if ps]


def is_latent(site: dict) -> bool:
    """A sample site the guide proposes: not observed, not a plate's subsample site."""
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def is_sample(site: dict) -> bool:
    return site["type"] == "sample" and not site_is_subsample(site)


def run_traces(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    """(guide trace, model trace replayed on it) for one batch, with the call's failure named in one line."""
    args = (x,) if y is None else (x, y)
    try:
        guide_tr = poutine.trace(module.guide).get_trace(*args)
    except Exception as e:  # noqa: BLE001 - the user's code: any failure becomes one line naming where
        raise VaeError(f"{type(module).__name__}.guide failed on a batch of {len(x)} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); fix the guide{_labels_hint(module, y)}") from None
    try:
        model_tr = poutine.trace(poutine.replay(module.model, trace=guide_tr)).get_trace(*args)
    except Exception as e:  # noqa: BLE001
        raise VaeError(f"{type(module).__name__}.model failed on a batch of {len(x)} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); fix the model{_labels_hint(module, y)}") from None
    return guide_tr, model_tr


def _labels_hint(module: nn.Module, y: torch.Tensor | None) -> str:
    if y is None and not getattr(module, "conditional", False):
        return " (if it needs the labels y, set conditional = True on the class)"
    return ""


def check(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None):
    """Run guide and model once on batch ``x`` and refuse a broken rule of the contract in one line;
    return the two traces (guide, model replayed on it). Runs on a fresh param store, so the traces'
    param sites are this module's own parameters, not those another module left under the same names."""
    name = type(module).__name__
    with pyro.get_param_store().scope():
        guide_tr, model_tr = run_traces(module, x, y)
    if OBSERVED not in model_tr.nodes or not model_tr.nodes[OBSERVED].get("is_observed"):
        raise VaeError(f"{name}.model has no observed site named 'x'; observe the data with "
                       f"pyro.sample('x', ..., obs=x) ({CONTRACT})")
    for where, trace in (("guide", guide_tr), ("model", model_tr)):
        for site_name, site in trace.nodes.items():
            if not is_sample(site):
                continue
            frames = {f.name: f for f in site["cond_indep_stack"]}
            frame = frames.get(DATA_PLATE)
            if frame is None or frame.dim != -1 or frame.size != len(x):
                raise VaeError(f"site {site_name!r} of {name}.{where} is outside pyro.plate('data', len(x)) at dim -1; "
                               f"put every per-image site inside that plate ({CONTRACT})")
    traced = {id(s["value"]) for t in (guide_tr, model_tr) for s in t.nodes.values() if s["type"] == "param"}
    missing = [n for n, p in module.named_parameters() if id(p) not in traced]
    if missing:
        raise VaeError(f"{name}'s parameters {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} are "
                       "registered in neither model nor guide; call pyro.module(name, net) there for every network")
    return guide_tr, model_tr
