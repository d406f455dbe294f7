"""Seconds per training epoch: a loop written the way Pyro's own example is (examples/vae/vae.py)
against `vae-pyro train`, at the same network and batch, on full Fashion-MNIST, side by side.

The reference loop, as that example trains: a torchvision data set read through a per-sample
``DataLoader`` (``ToTensor``, shuffled, batch 256), ``pyro.optim.Adam`` and ``SVI`` with
``Trace_ELBO``; the VAE 784-400-50-400-784 with softplus hidden layers, a sigmoid decoder and the
grey pixels scored by the Bernoulli likelihood. `vae-pyro train` runs the same sizes, estimator
(`trace`), activation and batch through ``fit`` (in-memory tensors, index-slice batches, one torch
Adam, dynamic binarisation). Epochs alternate between the two; only training is timed (``fit``'s
per-epoch test ELBO is not).

    python experiments/pyro_example_loop.py [--epochs 3] [--out runs/pyro-example-loop]
"""

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import vae_pyro as vp
from vae_pyro.data import DEBIAN_FASHION_MNIST, IDX_FILES, default_data_dir

HIDDEN, Z, BATCH = 400, 50, 256


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


def torchvision_root() -> Path:
    """A torchvision FashionMNIST folder: the user's download cache, or one made from the Debian files."""
    cache = default_data_dir()
    if (cache / "FashionMNIST" / "raw" / IDX_FILES["train"][0]).exists():
        return cache
    root = Path(tempfile.mkdtemp(prefix="fashion-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (*IDX_FILES["train"], *IDX_FILES["test"]):
        with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def example_epoch(svi: SVI, loader: DataLoader) -> float:
    start = time.perf_counter()
    for x, _ in loader:
        svi.step(x)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="runs/pyro-example-loop")
    args = p.parse_args()

    pyro.set_rng_seed(0)
    train = datasets.FashionMNIST(torchvision_root(), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(train, batch_size=BATCH, shuffle=True)
    example = ExampleVAE()
    pyro.clear_param_store()
    svi = SVI(example.model, example.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())

    options = dict(estimator="trace", hidden=(HIDDEN,), z_dim=Z, batch_size=BATCH, activation="softplus",
                   progress=False)
    data = vp.load_data("fashion-mnist")
    ours, theirs = [], []
    for epoch in range(1, args.epochs + 1):
        theirs.append(example_epoch(svi, loader))
        result = vp.fit("vae", data, out=args.out, epochs=epoch, resume=epoch > 1, force=epoch == 1, **options)
        ours.append(result.history[-1]["seconds"])
        pyro.clear_param_store()  # fit cleared the store; the example's SVI registers its parameters again
    a, b = statistics.median(theirs), statistics.median(ours)
    print(f"full Fashion-MNIST (60,000 images), MLP 784-{HIDDEN}-{Z}-{HIDDEN}-784, batch {BATCH}, trace, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, pyro-ppl {pyro.__version__}")
    print("| loop | s/epoch, median of " + f"{args.epochs} (each) |\n|---|---|")
    print(f"| Pyro's example (DataLoader, pyro.optim.Adam, SVI) | {a:.2f} ({', '.join(f'{t:.2f}' for t in theirs)}) |")
    print(f"| vae-pyro train | {b:.2f} ({', '.join(f'{t:.2f}' for t in ours)}) |")
    print(f"\nvae-pyro train is {a / b:.2f}x faster per epoch")


if __name__ == "__main__":
    main()
