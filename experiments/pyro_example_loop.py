"""Seconds per training epoch: a loop written the way Pyro's own example is (examples/vae/vae.py)
against `vae-pyro train`, at the same network and batch, on full Fashion-MNIST, side by side.

The reference loop, as that example trains: the images held in memory as one float tensor (the
example's ``MNISTCached`` scales and flattens them once) and read through a per-sample ``DataLoader``
(shuffled, batch 256, its last batch partial; NaN labels beside, as the unsupervised set carries them),
``pyro.optim.Adam`` and ``SVI`` with ``Trace_ELBO``; the
VAE 784-400-50-400-784 with softplus hidden layers, a sigmoid decoder and the grey pixels scored by
the Bernoulli likelihood. `vae-pyro train` runs the same sizes, estimator (`trace`), activation, batch
and grey pixels (``binarize="none"``) through ``fit``, once per estimator given (``hand``: the same loop
on the loss derived by hand in plain PyTorch, no Pyro in the step: what any Pyro loop could approach).
Epochs alternate between all of them; only training is timed (``fit``'s per-epoch test ELBO is not).
Each epoch is a new ``fit`` call (resuming the run), so a ``jit-*`` estimator would compile again
every epoch inside the timing: time those with ``bench.py``. Beside them, with a C++ compiler, the
fastest float32 step measured at this batch, with no Pyro in its arithmetic (``fastest_step``: compiled
once, before the timing), over the same shuffled batches as ``fit``: a bound for any Pyro loop of this
arithmetic. Last, one pass over the example's ``DataLoader`` alone, without steps. On ``--device cuda``
the example's loop moves each batch to the GPU after the ``DataLoader``, as the example's ``--cuda``
does, and ``fit`` trains on that device.

    python experiments/pyro_example_loop.py [--epochs 3] [--estimators trace,hand,trace+fused] [--device cpu]
                                            [--out runs/pyro-example-loop]
"""

import argparse
import statistics
import time
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vae_pyro as vp
from vae_pyro.config import DEVICES, Config
from vae_pyro.data import batches, seeded
from vae_pyro.errors import VaeError
from vae_pyro.lab.compiling import compile_model, cxx_found
from vae_pyro.lab.experiment import instantiate, make_estimator, resolve_device
from vae_pyro.lab.trainers import make_trainer

HIDDEN, Z, BATCH = 400, 50, 256
EXTRAS = {"fused": {"adam": "fused"}}  # an --estimators row's suffixes: fit's options


class Encoder(nn.Module):
    """x -> softplus(400) -> (loc, exp(log-scale)), as the example's encoder."""

    def __init__(self):
        super().__init__()
        self.hidden, self.loc, self.log_scale = nn.Linear(784, HIDDEN), nn.Linear(HIDDEN, Z), nn.Linear(HIDDEN, Z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = nn.functional.softplus(self.hidden(x.reshape(-1, 784)))
        return self.loc(h), torch.exp(self.log_scale(h))


class ExampleVAE(nn.Module):
    """The example's model and guide: z ~ N(0, I), x ~ Bernoulli(sigmoid(decoder(z))); q(z|x) from the encoder."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.Sequential(nn.Linear(Z, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, 784), nn.Sigmoid())

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x.reshape(-1, 784))

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))


def cached_loader(images: torch.Tensor) -> DataLoader:
    """The example's training data: the images held as one tensor, with the unsupervised set's NaN labels,
    batched by a shuffling per-sample ``DataLoader`` (``MNISTCached`` through ``setup_data_loaders``)."""
    return DataLoader(TensorDataset(images, torch.full((len(images), 1), float("nan"))), batch_size=BATCH,
                      shuffle=True)


def epoch_seconds(loader: DataLoader, step: Callable[[torch.Tensor], object]) -> float:
    """Seconds of one pass over ``loader``, calling ``step`` on each batch of images."""
    start = time.perf_counter()
    for x, _ in loader:
        step(x)
    return time.perf_counter() - start


def fastest_step(x: torch.Tensor) -> Callable[[torch.Tensor], float] | None:
    """The fastest float32 training step measured at this batch, with no Pyro in its arithmetic: the hand loop
    (the lab's VAE at the same sizes, its loss derived by hand) compiled as ``--compile`` does, with torch's
    fused Adam, on ``x``'s device: ``bench.py``'s `hand loop compiled fused`. None without the C++ compiler
    Inductor needs."""
    if not cxx_found():
        return None
    cfg = Config(hidden=(HIDDEN,), z_dim=Z, activation="softplus", estimator="hand", adam="fused")
    vae = instantiate(cfg, x.shape[1], x.device)
    compile_model(vae)
    return make_trainer(make_estimator(cfg, vae, x), vae, cfg.lr, cfg.loop, cfg.adam).step


def plain_epoch_seconds(x: torch.Tensor, step: Callable[[torch.Tensor], float], epoch: int) -> float:
    """Seconds of one pass over ``x`` in the shuffled full batches ``fit`` takes, without its bookkeeping."""
    start = time.perf_counter()
    for idx in batches(len(x), BATCH, seeded(0, epoch - 1, device=x.device)):  # fit's epochs count from 0
        step(x[idx])
    return time.perf_counter() - start


def train_options(row: str, p: argparse.ArgumentParser) -> dict:
    """``trace`` -> {estimator: trace}; ``trace+fused`` adds ``adam="fused"``. (No ``--compile`` row: each epoch
    is a new ``fit``, which would compile again inside the timing; ``bench.py`` times the compiled steps.)"""
    name, *extras = row.split("+")
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        p.error(f"--estimators {row}: unknown suffix {', '.join(sorted(unknown))}; choose from +{', +'.join(EXTRAS)}")
    return {"estimator": name, **{k: v for extra in extras for k, v in EXTRAS[extra].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--estimators", default="trace,hand", help="vae-pyro train's estimators, each a row; a row "
                   "name+fused trains with --adam fused")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="for both loops [cpu]")
    p.add_argument("--out", default="runs/pyro-example-loop")
    args = p.parse_args()
    try:
        device = resolve_device(args.device)
    except VaeError as e:
        p.error(str(e))

    pyro.set_rng_seed(0)
    data = vp.load_data("fashion-mnist")
    loader = cached_loader(data.train_x)
    example = ExampleVAE().to(device)
    pyro.clear_param_store()
    svi = SVI(example.model, example.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())

    options = dict(hidden=(HIDDEN,), z_dim=Z, batch_size=BATCH, activation="softplus", binarize="none",
                   device=device.type, progress=False)
    rows = {row: train_options(row, p) for row in args.estimators.split(",")}
    ours = {row: [] for row in rows}
    theirs, fastest = [], []
    x_plain = data.train_x.to(device)
    plain = fastest_step(x_plain)
    if plain is not None:
        plain(x_plain[:BATCH])  # compiled here, outside the timing
    for epoch in range(1, args.epochs + 1):
        theirs.append(epoch_seconds(loader, lambda x: svi.step(x.to(device))))
        if plain is not None:
            fastest.append(plain_epoch_seconds(x_plain, plain, epoch))
        for row, seconds in ours.items():
            result = vp.fit("vae", data, out=f"{args.out}/{row}", epochs=epoch, resume=epoch > 1, force=epoch == 1,
                            **rows[row], **options)
            seconds.append(result.history[-1]["seconds"])
        pyro.clear_param_store()  # fit cleared the store; the example's SVI registers its parameters again
    example_s = statistics.median(theirs)
    print(f"full Fashion-MNIST (60,000 images), MLP 784-{HIDDEN}-{Z}-{HIDDEN}-784, batch {BATCH}, grey pixels, "
          f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, pyro-ppl {pyro.__version__}")
    print(f"| loop | s/epoch, median of {args.epochs} (each) | x faster than the example |\n|---|---|---|")
    print(f"| Pyro's example (cached tensors through a DataLoader, pyro.optim.Adam, SVI, trace) | {example_s:.2f} "
          f"({', '.join(f'{t:.2f}' for t in theirs)}) | 1.00 |")
    for row, seconds in ours.items():
        s = statistics.median(seconds)
        flags = " ".join(f"--{k} {v}" if v is not True else f"--{k}" for k, v in rows[row].items())
        print(f"| vae-pyro train {flags} | {s:.2f} ({', '.join(f'{t:.2f}' for t in seconds)}) | {example_s / s:.2f} |")
    if fastest:
        s = statistics.median(fastest)
        print(f"| the hand loop compiled, fused Adam, without fit's bookkeeping (no Pyro) | {s:.2f} "
              f"({', '.join(f'{t:.2f}' for t in fastest)}) | {example_s / s:.2f} |")
    else:
        print("(no C++ compiler found: the compiled plain-PyTorch loop was left out)")
    print(f"\nthe example's DataLoader alone, one pass: {epoch_seconds(loader, lambda x: None):.2f} s ({len(loader)} batches; "
          f"vae-pyro train takes {len(data.train_x) // BATCH}, dropping the partial one)")


if __name__ == "__main__":
    main()
