import math
from pathlib import Path

import pyro
import pytest
import torch

from vae_pyro import data, estimators
from vae_pyro.config import Config
from vae_pyro.lab import traces
from vae_pyro.lab.experiment import EVAL_SEED
from vae_pyro.lab.train import fit
from vae_pyro.models import VAE

DISCRETE_NEEDS = {"enumerable", "bernoulli", "relaxable", "relaxable_of_x"}  # the needs of the estimators of discrete sites only
TINY = dict(z_dim=4, hidden=(64,), epochs=2, batch_size=128)
EXAMPLES = Path(__file__).parent.parent / "examples"


def projected_draws(name: str | estimators.Estimator, module, x, draws: int, seed: int, **options
                    ) -> dict[str, torch.Tensor]:
    """``draws`` gradients of estimator ``name`` (or an Estimator), each projected onto a fixed random
    direction, for the guide's and the model's parameters: {group: (draws,) float64}."""
    groups = traces.parameter_groups(module, x)
    gen = torch.Generator().manual_seed(123)
    direction = {g: [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ps] for g, ps in groups.items()}
    pyro.clear_param_store()
    est = estimators.make(name, **options) if isinstance(name, str) else name
    torch.manual_seed(seed)
    out = {g: torch.empty(draws, dtype=torch.float64) for g in groups}
    for d in range(draws):
        module.zero_grad(set_to_none=True)
        est.backward(module, x)
        for g, ps in groups.items():
            out[g][d] = sum((p.grad.double() * u).sum() for p, u in zip(ps, direction[g]) if p.grad is not None)
    module.zero_grad(set_to_none=True)
    return out


def z_score(a: torch.Tensor, b: torch.Tensor) -> float:
    """(mean a − mean b) in standard errors of the difference (independent draws)."""
    return ((a.mean() - b.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b))).item()


@pytest.fixture(scope="module")
def vae_and_batch(batch):
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(32,)).double()
    with torch.no_grad():  # away from the optimum and from the prior: a sizable, informative gradient
        vae.encoder.net[-1].bias[:4] += 0.5
    return vae, batch[:16].double()


@pytest.fixture(scope="session")
def mnist5k() -> data.Dataset:
    return data.load("mnist5k")


@pytest.fixture(scope="session")
def batch(mnist5k) -> torch.Tensor:
    """64 real test digits, binarised with a fixed seed."""
    return data.binarise(mnist5k.test_x[:64], data.seeded(EVAL_SEED))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small VAE trained for 3 epochs on mnist5k, so q(z|x) is far from the prior."""
    from vae_pyro.lab.experiment import instantiate
    from vae_pyro.lab.runs import Run

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = Config(z_dim=8, hidden=(200,), epochs=3)
    fit(cfg, out, progress=False)
    vae = instantiate(cfg, 784, torch.device("cpu"))
    vae.load_state_dict(Run.open(out).load_checkpoint()["module"])
    return vae


# What the fault tests tried and survived, printed at the end of every run (README: Reliability).
RELIABILITY: dict[str, list[int]] = {}


def tried(kind: str, n: int = 1) -> None:
    RELIABILITY.setdefault(kind, [0, 0])[1] += n


def survived(kind: str, n: int = 1) -> None:
    RELIABILITY.setdefault(kind, [0, 0])[0] += n


def pytest_terminal_summary(terminalreporter) -> None:
    if RELIABILITY:
        parts = [f"{kind} {ok}/{tried}" for kind, (ok, tried) in RELIABILITY.items()]
        terminalreporter.write_line("reliability: " + "; ".join(parts))


def compare_and_report(options: dict, names: list[str], out, resume: bool = False, force: bool = False,
                       progress: bool = False, **spec) -> dict:
    """A comparison as `vae-pyro compare` runs it (its reports rendered); its summary. ``spec``: CompareSpec's fields,
    and ``jobs`` (local processes)."""
    from vae_pyro.lab.compare import CompareSpec, compare
    from vae_pyro.lab.executors import ExecutorSpec
    from vae_pyro.report.comparison import write

    executor = ExecutorSpec(jobs=spec.pop("jobs", 1))
    if "k" in spec:  # one K, as --k 10
        spec["ks"] = (spec.pop("k"),)
    return compare(options, CompareSpec(tuple(names), **spec), out, resume, force, progress, render=write,
                   executor=executor).summary
