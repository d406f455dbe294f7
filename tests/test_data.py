"""Data sets, the IDX reader, batches and binarisation."""

import gzip
import hashlib

import numpy as np
import pytest
import torch

from vae_pyro import data
from vae_pyro.data.idx import read_idx, write_idx
from vae_pyro.errors import VaeError


def test_bundled_files_match_their_checksums():
    for name, digest in data.MNIST5K_SHA256.items():
        assert hashlib.sha256((data.ASSETS / name).read_bytes()).hexdigest() == digest


def test_mnist5k_is_a_fixed_stratified_4000_1000_split(mnist5k):
    assert mnist5k.train_x.shape == (4000, 784) and mnist5k.test_x.shape == (1000, 784)
    assert torch.equal(torch.bincount(mnist5k.train_y), torch.full((10,), 400))
    assert torch.equal(torch.bincount(mnist5k.test_y), torch.full((10,), 100))
    assert mnist5k.train_x.min() >= 0 and mnist5k.train_x.max() <= 1
    # no test image appears in the training set
    train_rows = {tuple(r) for r in (mnist5k.train_x * 255).round().to(torch.uint8).tolist()}
    assert not any(tuple(r) in train_rows for r in (mnist5k.test_x * 255).round().to(torch.uint8).tolist())
    again = data.load("mnist5k")
    assert torch.equal(again.test_x, mnist5k.test_x) and torch.equal(again.train_y, mnist5k.train_y)


def test_corrupt_bundled_file_is_refused(monkeypatch, tmp_path):
    for name in data.MNIST5K_SHA256:
        (tmp_path / name).write_bytes((data.ASSETS / name).read_bytes()[:-10])
    monkeypatch.setattr(data, "ASSETS", tmp_path)
    with pytest.raises(VaeError, match="missing or corrupt; reinstall"):
        data.load("mnist5k")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / f"a{suffix}", array)
    assert np.array_equal(read_idx(tmp_path / f"a{suffix}"), array)


def valid_idx_bytes() -> bytes:
    return bytes([0, 0, 8, 2]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(range(6))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x12\x34\x08\x02" + bytes(14), "bad magic number"),
        (bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + bytes(16), "not unsigned byte"),
        (valid_idx_bytes()[:-1], "truncated or corrupt"),
        (valid_idx_bytes() + b"\0", "truncated or corrupt"),
        (valid_idx_bytes()[:7], "truncated IDX header"),
        (gzip.compress(valid_idx_bytes())[:-6], "corrupt gzip"),
        (b"", "bad magic number"),
    ],
)
def test_bad_idx_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(VaeError, match=message):
        read_idx(path)


def write_mnist_like(folder, n_train=30, n_test=10, shape=(28, 28), gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = data.IDX_FILES[split]
        write_idx(folder / f"{images}{suffix}", rng.integers(0, 256, size=(n, *shape), dtype=np.uint8))
        write_idx(folder / f"{labels}{suffix}", rng.integers(0, 10, size=n, dtype=np.uint8))


def no_network(name, root):
    raise AssertionError("the test tried to download")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_idx_files_already_in_the_data_dir(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(data, "_download", no_network)
    write_mnist_like(tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw", gz=layout == "flat")
    ds = data.load("mnist", tmp_path)
    assert ds.train_x.shape == (30, 784) and ds.test_x.shape == (10, 784) and ds.test_y.shape == (10,)
    assert ds.train_x.dtype == torch.float32 and ds.train_x.min() >= 0 and ds.train_x.max() <= 1


def test_offline_mnist_fails_with_one_line_naming_folder_files_and_fallback(tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(VaeError) as e:
        data.load("mnist", tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "--dataset mnist5k" in message
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert stem in message


def test_fashion_mnist_uses_the_debian_package_files(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", no_network)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    write_mnist_like(tmp_path / "debian", n_train=20, n_test=5)
    ds = data.load("fashion-mnist", tmp_path / "empty-cache")
    assert ds.train_x.shape == (20, 784) and ds.test_x.shape == (5, 784)


def test_label_count_must_match_image_count(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", no_network)
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(VaeError, match="10 images but 9 labels"):
        data.load("mnist", tmp_path)


def test_unknown_dataset_is_refused():
    with pytest.raises(VaeError, match="unknown dataset 'cifar'; choose one of mnist5k"):
        data.load("cifar")


@pytest.mark.parametrize("bad, message", [(float("nan"), "NaN or Inf"), (1.5, "need \\[0, 1\\]"), (-0.1, "need \\[0, 1\\]")])
def test_check_pixels_refuses_what_bernoulli_cannot_score(bad, message):
    x = torch.rand(4, 784)
    x[2, 3] = bad
    with pytest.raises(VaeError, match=message):
        data.check_pixels(x, "bernoulli", "test")


def test_gaussian_likelihood_accepts_values_outside_unit_interval():
    data.check_pixels(torch.randn(4, 784), "gaussian", "test")


def test_batches_are_a_seeded_permutation_without_the_partial_batch():
    idx = list(data.batches(10, 3, data.seeded(0, 1)))
    assert [len(b) for b in idx] == [3, 3, 3]
    flat = torch.cat(idx)
    assert len(set(flat.tolist())) == 9
    assert torch.equal(flat, torch.cat(list(data.batches(10, 3, data.seeded(0, 1)))))
    assert not torch.equal(flat, torch.cat(list(data.batches(10, 3, data.seeded(0, 2)))))


def test_binarise_draws_bernoulli_with_pixel_probabilities():
    x = torch.full((2000, 784), 0.3)
    b = data.binarise(x, data.seeded(0))
    assert set(b.unique().tolist()) == {0.0, 1.0}
    # mean of 1.568M Bernoulli(0.3) draws: standard error 3.7e-4
    assert abs(b.mean().item() - 0.3) < 4 * (0.3 * 0.7 / b.numel()) ** 0.5
