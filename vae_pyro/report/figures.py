"""Figures: seaborn on matplotlib ``Figure`` objects (no pyplot, so no backend is chosen and no global
style is set: the house style applies inside each figure function only); images tiled into grids.
Each function returns its ``Figure``, which a notebook shows inline; given ``path=`` it also writes it
there as a PNG, atomically (what the command line does). A function that draws one panel takes
``ax=``, an axes of the caller's own figure, to draw into."""

import io
from functools import wraps
from pathlib import Path

import matplotlib
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torch.distributions import Normal

from vae_pyro.lab import traces
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.lab.runs import atomic_write
from vae_pyro.models.nets import SIDE  # images are SIDE x SIDE, as the conv nets take them

DPI = 100  # a figure of (w, h) inches is a PNG of (100 w, 100 h) pixels


def themed(draw):
    """Draw inside seaborn's whitegrid / notebook style, for this figure only (the caller's rcParams stay)."""

    @wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}):
            return draw(*args, **kwargs)

    return drawn


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kwargs):
    """A new ``Figure`` (constrained layout) and its axes, as ``plt.subplots`` makes them but outside pyplot's state."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def panel(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and its figure, or a new figure of one panel."""
    return (ax.figure, ax) if ax is not None else subplots(figsize=figsize)


def finish(fig: Figure, path: Path | None) -> Figure:
    """``fig``, written to ``path`` as a PNG first when a path is given."""
    if path is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    return fig


def draw(folder: Path, name: str, plot, *args, **kwargs) -> Path | None:
    """``plot(*args, path=folder / name, **kwargs)``; the PNG's path, or None when it had nothing to draw."""
    path = folder / name
    return path if plot(*args, path=path, **kwargs) is not None else None


@themed
def curves(histories: dict[str, list[list[dict]]], path: Path | None = None) -> Figure:
    """Test ELBO against epoch and against training seconds, one line per estimator: the mean over its
    runs (one per seed), with a band of ± 1 se over seeds where there are several. The seconds axis is
    each epoch's cumulative training time averaged over the seeds."""
    rows = []
    for name, runs in histories.items():
        for seed, history in enumerate(runs):
            seconds = 0.0
            for r in history:
                seconds += r["seconds"]
                rows.append({"estimator": name, "seed": seed, "epoch": r["epoch"], "seconds": seconds,
                             "test ELBO (nats)": r["test_elbo"]})
    df = pd.DataFrame(rows)
    df["seconds"] = df.groupby(["estimator", "epoch"])["seconds"].transform("mean")
    fig, axes = subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, x in zip(axes, ("epoch", "seconds")):
        sns.lineplot(df, x=x, y="test ELBO (nats)", hue="estimator", ax=ax, marker="o", markersize=3, errorbar="se")
        ax.set_xlabel("epoch" if x == "epoch" else "training wall-clock seconds (mean over seeds)")
    lo = df.groupby("estimator")["test ELBO (nats)"].max().min()
    axes[0].set_ylim(lo - 60, df["test ELBO (nats)"].max() + 5)  # the first epochs of a slow estimator fall below
    axes[1].get_legend().remove()
    return finish(fig, path)


@themed
def grad_variance(histories: dict[str, list[list[dict]]], steps_per_epoch: int, path: Path | None = None,
                  ax: Axes | None = None) -> Figure:
    """log of the guide gradient's variance (``--grad-variance``, after each epoch) against training steps, one
    line per estimator: the mean over its runs (one per seed) with a band of ± 1 se."""
    rows = [{"estimator": name, "seed": seed, "training steps": r["epoch"] * steps_per_epoch,
             "log variance of the guide's gradient": r["log_guide_grad_variance"]}
            for name, runs in histories.items() for seed, history in enumerate(runs) for r in history
            if "log_guide_grad_variance" in r]
    fig, ax = panel(ax, (7, 4.2))
    sns.lineplot(pd.DataFrame(rows), x="training steps", y="log variance of the guide's gradient", hue="estimator",
                 ax=ax, marker="o", markersize=3, errorbar="se")
    return finish(fig, path)


def per_unit(stats: list[dict]) -> tuple[pd.DataFrame, str]:
    """Gradient rows averaged to one value per unit: per seed (its fixed batches' mean) when the rows
    carry seeds, else per fixed batch; and the unit's name (what the error bars are over)."""
    df = pd.DataFrame(stats)
    unit = "seed" if "seed" in df else "batch"
    keys = ["estimator", "family", "group", "point", unit]
    df = df.groupby(keys, sort=False, dropna=False)[["variance", "snr", "k"]].mean().reset_index()
    return df, unit


@themed
def gradients(stats: list[dict], path: Path | None = None) -> Figure:
    """Per-parameter gradient variance (log scale) and SNR, guide (φ) vs model (θ), per estimator and
    point; bars are means over the fixed batches (or seeds), error bars ± 1 se over them."""
    df, unit = per_unit(stats)
    points = list(dict.fromkeys(df["point"]))
    fig, axes = subplots(2, len(points), figsize=(6.5 * len(points), 7.5), squeeze=False)
    for j, point in enumerate(points):
        sub = df[df["point"] == point]
        for i, (col, label) in enumerate((("variance", "mean per-parameter variance"), ("snr", "mean |E g| / std g"))):
            ax = axes[i, j]
            sns.barplot(sub, x="estimator", y=col, hue="group", ax=ax, errorbar="se", capsize=0.1)
            ax.set_ylabel(label)
            ax.set_xlabel("")
            ax.tick_params(axis="x", rotation=30)
            if col == "variance":
                ax.set_yscale("log")
                ax.set_title(f"gradients at {point} (± 1 se over {unit}s)")
            if i or j:
                ax.get_legend().remove()
    return finish(fig, path)


@themed
def snr_vs_k(stats: list[dict], path: Path | None = None) -> Figure:
    """Gradient SNR against K for the multi-sample estimators, one panel per parameter group and point,
    ± 1 se over the fixed batches (or seeds)."""
    df, unit = per_unit([g for g in stats if g["k"] is not None])
    groups, points = ["guide", "model"], list(dict.fromkeys(df["point"]))
    fig, axes = subplots(len(points), 2, figsize=(11, 4 * len(points)), squeeze=False)
    for i, point in enumerate(points):
        for j, group in enumerate(groups):
            ax = axes[i, j]
            sub = df[(df["point"] == point) & (df["group"] == group)]
            sns.lineplot(sub, x="k", y="snr", hue="family", ax=ax, marker="o", errorbar="se", err_style="bars")
            ax.set_xscale("log")
            ax.set_xlabel("K (samples per image)")
            ax.set_ylabel("mean |E g| / std g")
            ax.set_title(f"{'φ (guide)' if group == 'guide' else 'θ (model)'} at {point}, ± 1 se over {unit}s",
                         fontsize=10)
            if i or j:
                ax.get_legend().remove()
    return finish(fig, path)


@themed
def seed_differences(per_seed: list[dict], rows: list[dict], reference: str, metrics: list[str],
                     path: Path | None = None) -> Figure:
    """Per metric two panels: each seed's value per estimator (dots) with the mean; and the paired
    difference to ``reference`` with its 95% interval (rows of ``stats.over_seeds``)."""
    df = pd.DataFrame(per_seed)
    names = [r["estimator"] for r in rows]
    others = [r for r in rows if r["estimator"] != reference]
    fig, axes = subplots(len(metrics), 2, figsize=(12, 3.6 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        label = "test ELBO" if metric == "test_elbo" else f"test log p(x), IS K={LikelihoodKey.parse(metric).k}"
        ax = axes[i, 0]
        sns.stripplot(df, x="estimator", y=metric, order=names, ax=ax, color="0.35", size=5, jitter=0.1)
        ax.scatter(names, [r[metric] for r in rows], marker="_", s=600, color="C3", zorder=3, label="mean over seeds")
        ax.set_ylabel(f"{label} (nats)")
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(loc="lower right", fontsize=8)
        ax = axes[i, 1]
        mean = [r[f"{metric}_diff"] for r in others]
        err = [[m - r[f"{metric}_diff_lo"] for m, r in zip(mean, others)],
               [r[f"{metric}_diff_hi"] - m for m, r in zip(mean, others)]]
        ax.errorbar([r["estimator"] for r in others], mean, yerr=err, fmt="o", capsize=4)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylabel(f"Δ {label} vs {reference} (nats)")
        ax.set_title(f"paired difference over {df['seed'].nunique()} seeds, 95% interval", fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    return finish(fig, path)


@themed
def loss_values(draws: dict[str, list[float]], path: Path | None = None, ax: Axes | None = None) -> Figure:
    """Distribution of each estimator's loss value over many draws at fixed parameters."""
    df = pd.DataFrame([{"estimator": n, "loss per image (nats)": v} for n, vs in draws.items() for v in vs])
    fig, ax = panel(ax, (8, 4.2))
    sns.violinplot(df, x="estimator", y="loss per image (nats)", ax=ax, inner="quartile", cut=0)
    ax.set_xlabel("")
    return finish(fig, path)


@themed
def bound_vs_k(rows: list[dict], exact: dict[str, float], path: Path | None = None) -> Figure:
    """IWAE bound (mean ± 2 se over draws) against K, one panel per parameter point, with that
    point's exact log p(x) as a dashed line. ``rows``: {"point", "k", "bound", "se"}."""
    df = pd.DataFrame(rows)
    points = list(dict.fromkeys(df["point"]))
    fig, axes = subplots(1, len(points), figsize=(6 * len(points), 4.2), squeeze=False)
    for ax, point in zip(axes[0], points):
        sub = df[df["point"] == point]
        ax.errorbar(sub["k"], sub["bound"], yerr=2 * sub["se"], marker="o", capsize=3, label="IWAE bound (± 2 se)")
        ax.axhline(exact[point], color="k", linestyle="--", label="exact log p(x)")
        ax.set_xscale("log")
        ax.set_xlabel("K (samples per point)")
        ax.set_ylabel("nats per point")
        ax.set_title(point)
        ax.legend(loc="lower right")
    return finish(fig, path)


# --- images -----------------------------------------------------------------------------------


def tiled(images: torch.Tensor, nrow: int, padding: int) -> torch.Tensor:
    """(N, 784) images as one picture of ``nrow`` per row, ``padding`` zero pixels between and around them:
    (rows·(28 + p) + p, min(nrow, N)·(28 + p) + p), the layout of torchvision's ``make_grid``."""
    n, cell = len(images), SIDE + padding
    cols = min(nrow, n)
    rows = -(-n // cols)
    tiles = images.new_zeros(rows * cols, cell, cell)
    tiles[:n, padding:, padding:] = images.reshape(n, SIDE, SIDE)
    picture = tiles.reshape(rows, cols, cell, cell).transpose(1, 2).reshape(rows * cell, cols * cell)
    return F.pad(picture, (0, padding, 0, padding))


def image_grid(images: torch.Tensor, nrow: int, path: Path | None = None) -> Figure:
    """(N, 784) pixels in [0, 1] as a grid of 28×28 images, ``nrow`` per row, 2-pixel padding: a figure of the
    grid at one inch per 100 pixels; given ``path``, the grid itself written there as a PNG, pixel for pixel."""
    grid = tiled(images.detach().float().cpu().clamp(0, 1), nrow, padding=2)
    if path is not None:
        buffer = io.BytesIO()
        Image.fromarray(grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()).save(buffer, format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    fig = Figure(figsize=(grid.shape[1] / DPI, grid.shape[0] / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    return fig


def image_site(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[str, dict] | None:
    """The guide's first continuous latent site with one vector per image (the one nearest the data
    in a model with layers), or None."""
    for name, site in traces.latent_sites(module, x[:2], None if y is None else y[:2]).items():
        if not site["fn"].support.is_discrete and len(site["fn"].event_shape) == 1:
            return name, site
    return None


def class_labels(module: nn.Module, n: int, label: int | None, classes: int, device: torch.device) -> torch.Tensor | None:
    """Labels for a conditional model's samples: all ``label``, or 0, 1, …, classes − 1 repeated; None otherwise."""
    if not getattr(module, "conditional", False):
        return None
    return torch.full((n,), label, device=device) if label is not None else torch.arange(n, device=device) % classes


@torch.no_grad()
def samples(module: nn.Module, x_dim: int, n: int = 64, label: int | None = None, seed: int = 0, classes: int = 10,
            path: Path | None = None) -> Figure:
    """E[x | z] for z drawn from the model's prior (the observed site unconditioned). A conditional
    model without ``label``: one column per class (n rounded up to a multiple of ``classes``)."""
    device = next(module.parameters()).device
    columns = classes if getattr(module, "conditional", False) and label is None else 8
    n = columns * -(-n // columns) if columns == classes else n
    y = class_labels(module, n, label, classes, device)
    with traces.seeded_rng(seed, device):
        images = traces.observed_mean(module, torch.zeros(n, x_dim, device=device), y, from_prior=True)
    return image_grid(images, columns, path)


@torch.no_grad()
def reconstructions(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, n: int = 16, path: Path | None = None
                    ) -> Figure:
    """The first ``n`` test images (top row) above E[x | z] with z at the guide's mean (bottom row)."""
    x, y = x[:n], y[:n] if y is not None else None
    return image_grid(torch.cat([x, traces.observed_mean(module, x, y)]), n, path)


@torch.no_grad()
def traversals(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, dims: int = 10, steps: int = 9,
               path: Path | None = None) -> Figure | None:
    """Row d: coordinate d of the latent site nearest the data swept over N(0, 1)'s 5%-95% quantiles, the
    others at the guide's mean for one test image. None when the model has no such site."""
    found = image_site(module, x, y)
    if found is None:
        return None
    name, site = found
    code = site["fn"].mean[:1]
    dims = min(dims, code.shape[-1])
    values = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps)).to(code)
    z = code.repeat(dims * steps, 1)
    for d in range(dims):
        z[d * steps : (d + 1) * steps, d] = values
    cond = y[:1].expand(len(z)) if y is not None else None
    with traces.seeded_rng(0, z.device):
        images = traces.observed_mean(module, x[:1].expand(len(z), -1), cond, latents={name: z}, from_prior=True)
    return image_grid(images, steps, path)


@torch.no_grad()
@themed
def latent_space(module: nn.Module, x: torch.Tensor, y: torch.Tensor, grid: int = 15, path: Path | None = None
                 ) -> Figure | None:
    """Guide means of test images coloured by label ``y`` for the latent site nearest the data: its two
    coordinates when it is 2-dimensional (with the decoded manifold on an inverse-CDF grid, as in Kingma &
    Welling 2013, fig. 4, for an unconditional model), else its first two principal components."""
    cond = y if getattr(module, "conditional", False) else None
    found = image_site(module, x, cond)
    if found is None:
        return None
    name = found[0]
    codes = torch.cat([traces.latent_sites(module, x[i : i + 1000], cond[i : i + 1000] if cond is not None else None)
                       [name]["fn"].mean for i in range(0, len(x), 1000)]).float().cpu()
    two = codes.shape[1] == 2
    if two:
        xy, axes_names = codes, (f"{name}1", f"{name}2")
    else:
        centred = codes - codes.mean(0)
        xy, axes_names = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T, ("PC 1", "PC 2")
    manifold = two and cond is None
    fig, axes = subplots(1, 2 if manifold else 1, figsize=(12 if manifold else 6.5, 5.5), squeeze=False)
    df = pd.DataFrame({axes_names[0]: xy[:, 0].numpy(), axes_names[1]: xy[:, 1].numpy(), "label": y.cpu().numpy()})
    sns.scatterplot(df, x=axes_names[0], y=axes_names[1], hue="label", palette="tab10", s=12, ax=axes[0, 0])
    axes[0, 0].set_title(f"guide means of test images ({name}" + (")" if two else f", {codes.shape[1]} dims, PCA)"))
    if manifold:  # row i: z2 = q[grid - 1 - i] (high at the top); column j: z1 = q[j]
        q = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, grid))
        z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2).to(x)
        with traces.seeded_rng(0, z.device):
            images = traces.observed_mean(module, x[:1].expand(len(z), -1), None, latents={name: z}, from_prior=True)
        axes[0, 1].imshow(tiled(images.float().cpu().clamp(0, 1), grid, padding=0).numpy(), cmap="gray")
        axes[0, 1].set_title(f"decoded manifold (inverse-CDF grid over {name})")
        axes[0, 1].axis("off")
    return finish(fig, path)


@themed
def run_curves(history: list[dict], path: Path | None = None, ax: Axes | None = None) -> Figure:
    """One run's training curves: the test terms (ELBO, reconstruction, KL) and the training objective per epoch."""
    keys = [k for k in history[0] if k.startswith(("train_", "test_"))]
    df = pd.DataFrame([{"epoch": r["epoch"], "term": k, "nats per image": r[k]} for r in history for k in keys])
    fig, ax = panel(ax, (7, 4.2))
    sns.lineplot(df, x="epoch", y="nats per image", hue="term", marker="o", markersize=3, ax=ax)
    return finish(fig, path)
