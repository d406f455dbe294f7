import pytest
import torch

from vae_pyro import data
from vae_pyro.config import Config
from vae_pyro.lab.experiment import EVAL_SEED
from vae_pyro.lab.train import fit

TINY = dict(z_dim=4, hidden=(64,), epochs=2, batch_size=128)


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
