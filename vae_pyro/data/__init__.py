"""Data sets as whole in-memory tensors, seeded shuffled batches, and binarisation.

Every data set becomes a :class:`Dataset` of float pixels in [0, 1] (images flattened to
784-vectors) and integer labels. Batches are index slices of a seeded permutation: no
per-sample ``DataLoader``.
"""

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_pyro.data.idx import read_idx
from vae_pyro.errors import VaeError

ASSETS = Path(__file__).parent.parent / "assets"
MNIST5K_SHA256 = {
    "mnist5k-images-idx3-ubyte.gz": "c6b100a5a2c03680cfe2ea9a6cb50df61c85444712901c9827140677184ff468",
    "mnist5k-labels-idx1-ubyte.gz": "86843f81a1849db34cf2a8117f2c27d94bdb2638b0633e53343f198187730267",
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DATASETS = ("mnist5k", "mnist", "fashion-mnist", "synthetic-linear")
GIVEN = "tensors"  # the data set name of a run trained on tensors given from Python
BINARISATIONS = ("dynamic", "static", "none")


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # (N, D) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def x_dim(self) -> int:
        return self.train_x.shape[1]

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.name, *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def default_data_dir() -> Path:
    """The user cache for downloaded data sets: ``$XDG_CACHE_HOME/vae_pyro`` or ``~/.cache/vae_pyro``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vae_pyro"


def seeded(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator whose stream depends on all of ``keys`` (e.g. seed, epoch, purpose)."""
    (state,) = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state) >> 1)


def load(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``) into memory."""
    if name == "mnist5k":
        return _mnist5k()
    if name in TORCHVISION_FOLDER:
        return _idx_dataset(name, Path(data_dir) if data_dir else default_data_dir())
    if name == "synthetic-linear":
        from vae_pyro.data.linear import synthetic_linear

        return synthetic_linear()
    if name == GIVEN:
        raise VaeError(f"--dataset {GIVEN} stands for tensors given from Python (vae_pyro.fit(..., data=...)); "
                       f"choose one of {', '.join(DATASETS)}")
    raise VaeError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _pixels_and_labels(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3:
        raise VaeError(f"{source}: images have shape {images.shape}, expected (N, height, width); use an idx3 image file")
    if labels.ndim != 1:
        raise VaeError(f"{source}: labels have shape {labels.shape}, expected (N,); use an idx1 label file")
    if len(images) != len(labels):
        raise VaeError(f"{source}: {len(images)} images but {len(labels)} labels; the files do not belong together")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def _mnist5k() -> Dataset:
    """5,000 real MNIST digits bundled with the package; a fixed stratified 4,000 / 1,000 split."""
    for file, digest in MNIST5K_SHA256.items():
        path = ASSETS / file
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise VaeError(f"bundled data file {path} is missing or corrupt; reinstall vae_pyro")
    x, y = _pixels_and_labels(
        read_idx(ASSETS / "mnist5k-images-idx3-ubyte.gz"), read_idx(ASSETS / "mnist5k-labels-idx1-ubyte.gz"), "mnist5k"
    )
    # Order by (label, random key); every fifth is a test image: 100 of each digit.
    key = torch.rand(len(y), generator=seeded(5000))
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), float(key[i])))
    test = torch.tensor(order[::5])
    train = torch.tensor([i for j, i in enumerate(order) if j % 5])
    return Dataset("mnist5k", x[train], y[train], x[test], y[test])


def _find(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for path in (folder / stem, folder / f"{stem}.gz"):
            if path.is_file():
                return path
    return None


def _download(name: str, root: Path) -> None:
    """Fetch the IDX files through torchvision into ``root/<Name>/raw`` (needs a network)."""
    import torchvision.datasets as tvd

    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    for train in (True, False):
        cls(str(root), train=train, download=True)


def _idx_dataset(name: str, root: Path) -> Dataset:
    folders = [root, root / TORCHVISION_FOLDER[name] / "raw"]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    stems = [s for pair in IDX_FILES.values() for s in pair]
    if any(_find(folders, s) is None for s in stems):
        try:
            _download(name, root)
        except Exception as e:  # noqa: BLE001 - any failure to fetch becomes one actionable line
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VaeError(
                f"cannot download {name} into {root} ({reason}); place {', '.join(s + '.gz' for s in stems)} "
                f"in that folder (or pass --data-dir), or use --dataset mnist5k"
            ) from None
    arrays = {}
    for split, (images, labels) in IDX_FILES.items():
        img_path, lab_path = _find(folders, images), _find(folders, labels)
        arrays[split] = _pixels_and_labels(read_idx(img_path), read_idx(lab_path), str(img_path))
    return Dataset(name, *arrays["train"], *arrays["test"])


def check_pixels(x: torch.Tensor, likelihood: str | None, source: str) -> None:
    """Refuse data a likelihood cannot score: NaN/Inf anywhere, values outside [0, 1] for Bernoulli
    and for binarisation."""
    if not torch.isfinite(x).all():
        raise VaeError(f"{source}: data contain NaN or Inf values; clean the data set")
    if likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise VaeError(
            f"{source}: values in [{x.min():.3g}, {x.max():.3g}] but binarisation and the Bernoulli likelihood need "
            f"[0, 1]; rescale the data, or use --binarize none with a model for real values (--likelihood gaussian)"
        )


def binarise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x_b ~ Bernoulli(x), pixel by pixel. A fresh generator each epoch makes it dynamic; one draw, static."""
    return torch.bernoulli(x, generator=generator)


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index slices of one seeded permutation of range(n); the last, partial batch is dropped.

    Dropping it keeps every step's shape fixed (which the JIT estimators rely on); a
    fresh permutation each epoch means every image is still seen.
    """
    perm = torch.randperm(n, generator=generator, device=generator.device)
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start : start + batch_size]
