"""Every figure function returns its Figure and, given a path, writes a PNG of the size it promises; the
one-panel ones draw into a caller's axes."""

import struct
import subprocess
import sys

import pytest
import torch
from matplotlib.figure import Figure

from vae_pyro.cli import main
from vae_pyro.config import Config
from vae_pyro.lab.experiment import instantiate
from vae_pyro.models import CVAE
from vae_pyro.report import figures as plots


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return struct.unpack(">II", data[16:24])


def written(plot, *args, path, **kwargs) -> tuple[int, int]:
    """The size of the PNG ``plot`` wrote to ``path``; the Figure it returned is of that size too."""
    fig = plot(*args, path=path, **kwargs)
    size = png_size(path)
    assert isinstance(fig, Figure) and tuple(round(v) for v in fig.get_size_inches() * fig.dpi) == size
    return size


def grid(columns: int, rows: int) -> tuple[int, int]:
    """torchvision's make_grid with 2-pixel padding around 28-pixel tiles."""
    return columns * 30 + 2, rows * 30 + 2


@pytest.mark.parametrize("n, nrow, padding", [(32, 16, 2), (64, 8, 2), (70, 10, 2), (5, 8, 2), (100, 10, 0), (7, 3, 1)])
def test_tiled_images_lie_where_torchvisions_make_grid_puts_them(n, nrow, padding):
    from torchvision.utils import make_grid

    images = torch.rand(n, 784, generator=torch.Generator().manual_seed(n))
    expected = make_grid(images.reshape(n, 1, 28, 28), nrow=nrow, padding=padding)[0]
    torch.testing.assert_close(plots.tiled(images, nrow, padding), expected, rtol=0, atol=0)


@pytest.fixture(scope="module")
def models():
    cpu = torch.device("cpu")
    return {name: instantiate(Config(model=name, z_dim=z, hidden=(32,)), 784, cpu)
            for name, z in (("vae", 2), ("cvae", 5), ("ae", 32))}


@pytest.mark.parametrize("name", ["vae", "cvae", "ae"])
def test_image_figures(tmp_path, models, mnist5k, name):
    model = models[name]
    y = mnist5k.test_y if model.conditional else None
    assert written(plots.reconstructions, model, mnist5k.test_x, y, path=tmp_path / "r.png") == grid(16, 2)
    if name == "ae":  # no latent site: nothing to traverse, scatter or draw from a prior
        assert plots.traversals(model, mnist5k.test_x, y, path=tmp_path / "t.png") is None
        assert plots.latent_space(model, mnist5k.test_x, mnist5k.test_y, path=tmp_path / "l.png") is None
        return
    samples = written(plots.samples, model, 784, n=64, path=tmp_path / "s.png")
    assert samples == (grid(10, 7) if model.conditional else grid(8, 8))
    assert written(plots.traversals, model, mnist5k.test_x, y, path=tmp_path / "t.png") == grid(9, min(10, model.z_dim))
    wide = model.z_dim == 2 and not model.conditional  # scatter + decoded manifold
    expected = (1200, 550) if wide else (650, 550)
    assert written(plots.latent_space, model, mnist5k.test_x, mnist5k.test_y, path=tmp_path / "l.png") == expected


def test_cvae_samples_of_one_label(tmp_path):
    torch.manual_seed(0)
    assert written(plots.samples, CVAE(z_dim=3, hidden=(16,)), 784, n=16, label=7, path=tmp_path / "s.png") == grid(8, 2)


def test_plot_figures(tmp_path):
    history = [{"epoch": e, "train_elbo": -200.0 + e, "test_elbo": -210.0 + e, "test_recon": -190.0 + e,
                "test_kl": 20.0, "kl_weight": 1.0, "seconds": 0.5} for e in (1, 2, 3)]
    assert written(plots.run_curves, history, path=tmp_path / "a.png") == (700, 420)
    assert written(plots.curves, {"trace": [history], "hand": [history, history]}, path=tmp_path / "b.png") == (1200, 420)
    stats = [{"estimator": f"{e}-{k}" if k else e, "family": e, "k": k, "group": g, "variance": v * b, "snr": 1.0 + b,
              "draws": 10, "point": p, "batch": b}
             for e, v, k in (("trace", 2.0, None), ("score", 1e4, None), ("iwae", 3.0, 1), ("iwae", 2.0, 5))
             for g in ("guide", "model") for p in ("initialisation", "trained") for b in (1, 2)]
    assert written(plots.gradients, stats, path=tmp_path / "c.png") == (1300, 750)
    assert written(plots.snr_vs_k, stats, path=tmp_path / "f.png") == (1100, 800)
    per_seed = [{"estimator": e, "seed": s, "test_elbo": -100.0 - s - d, "test_is_log_likelihood_k10": -90.0 - s - d}
                for e, d in (("trace", 0.0), ("iwae", 2.0)) for s in (0, 1, 2)]
    rows = [{"estimator": "trace", "test_elbo": -101.0, "test_is_log_likelihood_k10": -91.0},
            {"estimator": "iwae", "test_elbo": -103.0, "test_is_log_likelihood_k10": -93.0,
             **{f"{m}_diff{end}": -2.0 + shift for m in ("test_elbo", "test_is_log_likelihood_k10")
                for end, shift in (("", 0.0), ("_lo", -0.5), ("_hi", 0.5))}}]
    assert written(plots.seed_differences, per_seed, rows, "trace", ["test_elbo", "test_is_log_likelihood_k10"],
                   path=tmp_path / "g.png") == (1200, 720)
    assert written(plots.loss_values, {"trace": [1.0, 2.0, 3.0], "iwae": [0.5, 0.7, 0.6]}, path=tmp_path / "d.png") == (800, 420)
    rows = [{"point": "p", "k": k, "bound": -10 - 1 / k, "se": 0.01} for k in (1, 5, 50)]
    assert written(plots.bound_vs_k, rows, {"p": -10.0}, path=tmp_path / "e.png") == (600, 420)


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


def test_one_panel_figures_draw_into_the_callers_axes(tmp_path):
    """A notebook's own figure of two panels: run_curves and loss_values each fill one, write nothing, and
    return the caller's figure; without a path nothing is written either."""
    history = [{"epoch": e, "train_elbo": -200.0 + e, "test_elbo": -210.0 + e, "log_guide_grad_variance": 1.0 / e,
                "seconds": 0.5} for e in (1, 2)]
    fig = Figure()
    left, middle, right = fig.subplots(1, 3)
    assert plots.run_curves(history, ax=left) is fig and left.lines
    assert plots.loss_values({"trace": [1.0, 2.0, 3.0]}, ax=middle) is fig and middle.collections
    assert plots.grad_variance({"rloo": [history]}, 100, ax=right) is fig and right.lines
    assert isinstance(plots.gradients([{"estimator": "trace", "family": "trace", "k": None, "group": g, "variance": 1.0,
                                        "snr": 1.0, "draws": 2, "point": "p", "batch": 0} for g in ("guide", "model")]),
                      Figure)
    assert list(tmp_path.iterdir()) == []
