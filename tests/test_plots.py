"""Every figure function writes a PNG of the size it promises."""

import struct
import subprocess
import sys

import pytest
import torch

from vae_pyro.cli import main
from vae_pyro.config import Config
from vae_pyro.lab.experiment import instantiate
from vae_pyro.models import CVAE
from vae_pyro.report import figures as plots


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return struct.unpack(">II", data[16:24])


def grid(columns: int, rows: int) -> tuple[int, int]:
    """torchvision's make_grid with 2-pixel padding around 28-pixel tiles."""
    return columns * 30 + 2, rows * 30 + 2


@pytest.fixture(scope="module")
def models():
    cpu = torch.device("cpu")
    return {name: instantiate(Config(model=name, z_dim=z, hidden=(32,)), 784, cpu)
            for name, z in (("vae", 2), ("cvae", 5), ("ae", 32))}


@pytest.mark.parametrize("name", ["vae", "cvae", "ae"])
def test_image_figures(tmp_path, models, mnist5k, name):
    model = models[name]
    y = mnist5k.test_y if model.conditional else None
    assert png_size(plots.reconstructions(model, mnist5k.test_x, y, tmp_path / "r.png")) == grid(16, 2)
    if name == "ae":  # no latent site: nothing to traverse, scatter or draw from a prior
        assert plots.traversals(model, mnist5k.test_x, y, tmp_path / "t.png") is None
        assert plots.latent_space(model, mnist5k.test_x, mnist5k.test_y, tmp_path / "l.png") is None
        return
    samples = plots.samples(model, 784, tmp_path / "s.png", n=64)
    assert png_size(samples) == (grid(10, 7) if model.conditional else grid(8, 8))
    assert png_size(plots.traversals(model, mnist5k.test_x, y, tmp_path / "t.png")) == grid(9, min(10, model.z_dim))
    wide = model.z_dim == 2 and not model.conditional  # scatter + decoded manifold
    expected = (1200, 550) if wide else (650, 550)
    assert png_size(plots.latent_space(model, mnist5k.test_x, mnist5k.test_y, tmp_path / "l.png")) == expected


def test_cvae_samples_of_one_label(tmp_path):
    torch.manual_seed(0)
    assert png_size(plots.samples(CVAE(z_dim=3, hidden=(16,)), 784, tmp_path / "s.png", n=16, label=7)) == grid(8, 2)


def test_plot_figures(tmp_path):
    history = [{"epoch": e, "train_elbo": -200.0 + e, "test_elbo": -210.0 + e, "test_recon": -190.0 + e,
                "test_kl": 20.0, "kl_weight": 1.0, "seconds": 0.5} for e in (1, 2, 3)]
    assert png_size(plots.run_curves(history, tmp_path / "a.png")) == (700, 420)
    assert png_size(plots.curves({"trace": [history], "hand": [history, history]}, tmp_path / "b.png")) == (1200, 420)
    stats = [{"estimator": f"{e}-{k}" if k else e, "family": e, "k": k, "group": g, "variance": v * b, "snr": 1.0 + b,
              "draws": 10, "point": p, "batch": b}
             for e, v, k in (("trace", 2.0, None), ("score", 1e4, None), ("iwae", 3.0, 1), ("iwae", 2.0, 5))
             for g in ("guide", "model") for p in ("initialisation", "trained") for b in (1, 2)]
    assert png_size(plots.gradients(stats, tmp_path / "c.png")) == (1300, 750)
    assert png_size(plots.snr_vs_k(stats, tmp_path / "f.png")) == (1100, 800)
    per_seed = [{"estimator": e, "seed": s, "test_elbo": -100.0 - s - d, "test_is_log_likelihood_k10": -90.0 - s - d}
                for e, d in (("trace", 0.0), ("iwae", 2.0)) for s in (0, 1, 2)]
    rows = [{"estimator": "trace", "test_elbo": -101.0, "test_is_log_likelihood_k10": -91.0},
            {"estimator": "iwae", "test_elbo": -103.0, "test_is_log_likelihood_k10": -93.0,
             **{f"{m}_diff{end}": -2.0 + shift for m in ("test_elbo", "test_is_log_likelihood_k10")
                for end, shift in (("", 0.0), ("_lo", -0.5), ("_hi", 0.5))}}]
    assert png_size(plots.seed_differences(per_seed, rows, "trace", ["test_elbo", "test_is_log_likelihood_k10"],
                                           tmp_path / "g.png")) == (1200, 720)
    assert png_size(plots.loss_values({"trace": [1.0, 2.0, 3.0], "iwae": [0.5, 0.7, 0.6]}, tmp_path / "d.png")) == (800, 420)
    rows = [{"point": "p", "k": k, "bound": -10 - 1 / k, "se": 0.01} for k in (1, 5, 50)]
    assert png_size(plots.bound_vs_k(rows, {"p": -10.0}, tmp_path / "e.png")) == (600, 420)


def test_sample_command(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--model", "cvae", "--epochs", "1", "--hidden", "32", "--z-dim", "4", "--out", str(out), "--quiet"])
    assert (out / "report.md").exists() and "![samples" in (out / "report.md").read_text()
    capsys.readouterr()
    main(["sample", str(out), "--label", "3", "--n", "8"])
    assert png_size(out / "figures" / "samples-label3.png") == grid(8, 1)
    with pytest.raises(SystemExit) as e:
        main(["sample", str(out), "--label", "12"])
    assert e.value.code == 2 and "--label must be a class from 0 to 9" in capsys.readouterr().err


def test_observed_mean_with_fixed_latents_is_the_decoder_at_those_latents(mnist5k):
    """The manifold and traversal pictures fix z: what they show must be E[x | z] at exactly that z,
    and a reconstruction E[x | z = μ(x)]."""
    from vae_pyro.lab import traces
    from vae_pyro.models import VAE

    torch.manual_seed(0)
    vae = VAE(z_dim=2, hidden=(16,))
    z = torch.randn(5, 2)
    fixed = traces.observed_mean(vae, torch.zeros(5, 784), latents={"z": z}, from_prior=True)
    torch.testing.assert_close(fixed, torch.sigmoid(vae.decode(z)[0]))
    x = mnist5k.test_x[:5]
    torch.testing.assert_close(traces.observed_mean(vae, x), torch.sigmoid(vae.decode(vae.encode(x)[0])[0]))


def test_importing_vae_pyro_changes_nothing_global():
    """No backend chosen, no style set, no warning filter installed by importing the package and its figures
    (the libraries it builds on are imported first: what they do on import is theirs)."""
    code = """
import sys, warnings, matplotlib, pandas, pyro, seaborn, torch, torchvision, tqdm
def state():  # the backend as set, read without resolving it; every other rcParam; the warning filters
    return (dict.__getitem__(matplotlib.rcParams, "backend"),
            {k: v for k, v in dict.items(matplotlib.rcParams) if k != "backend"}, list(warnings.filters))
before = state()
import vae_pyro, vae_pyro.report.figures, vae_pyro.estimators
assert state() == before, "global state changed"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
