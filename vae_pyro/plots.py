"""Figures: seaborn on matplotlib's Agg backend for plots, torchvision grids for images.
Each function writes one PNG, atomically, and returns its path."""

import io
from pathlib import Path

import matplotlib
import torch
from torch.distributions import ContinuousBernoulli, Normal
from torchvision.utils import make_grid, save_image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vae_pyro.runs import atomic_write  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
DPI = 100  # a figure of (w, h) inches is a PNG of (100 w, 100 h) pixels
SIDE = 28


def save(fig: plt.Figure, path: Path) -> Path:
    fig.set_layout_engine("constrained")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
    return path


def curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """Test ELBO against epoch and against cumulative training seconds, one line per estimator."""
    rows = []
    for name, history in histories.items():
        seconds = 0.0
        for r in history:
            seconds += r["seconds"]
            rows.append({"estimator": name, "epoch": r["epoch"], "seconds": seconds, "test ELBO (nats)": r["test_elbo"]})
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, x in zip(axes, ("epoch", "seconds")):
        sns.lineplot(df, x=x, y="test ELBO (nats)", hue="estimator", ax=ax, marker="o", markersize=3)
        ax.set_xlabel("epoch" if x == "epoch" else "training wall-clock seconds")
    lo = df.groupby("estimator")["test ELBO (nats)"].max().min()
    axes[0].set_ylim(lo - 60, df["test ELBO (nats)"].max() + 5)  # the first epochs of a slow estimator fall below
    axes[1].get_legend().remove()
    return save(fig, path)


def gradients(stats: list[dict], path: Path) -> Path:
    """Per-parameter gradient variance (log scale) and SNR, encoder vs decoder, per estimator and point."""
    df = pd.DataFrame(stats)
    points = list(dict.fromkeys(df["point"]))
    fig, axes = plt.subplots(2, len(points), figsize=(6.5 * len(points), 7.5), squeeze=False)
    for j, point in enumerate(points):
        sub = df[df["point"] == point]
        for i, (col, label) in enumerate((("variance", "mean per-parameter variance"), ("snr", "mean |E g| / std g"))):
            ax = axes[i, j]
            sns.barplot(sub, x="estimator", y=col, hue="group", ax=ax)
            ax.set_ylabel(label)
            ax.set_xlabel("")
            ax.tick_params(axis="x", rotation=30)
            if col == "variance":
                ax.set_yscale("log")
                ax.set_title(f"gradients at {point}")
            if i or j:
                ax.get_legend().remove()
    return save(fig, path)


def loss_values(draws: dict[str, list[float]], path: Path) -> Path:
    """Distribution of each estimator's loss value over many draws at fixed parameters."""
    df = pd.DataFrame([{"estimator": n, "loss per image (nats)": v} for n, vs in draws.items() for v in vs])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.violinplot(df, x="estimator", y="loss per image (nats)", ax=ax, inner="quartile", cut=0)
    ax.set_xlabel("")
    return save(fig, path)


def bound_vs_k(rows: list[dict], exact: dict[str, float], path: Path) -> Path:
    """IWAE bound (mean ± 2 se over draws) against K, one panel per parameter point, with that
    point's exact log p(x) as a dashed line. ``rows``: {"point", "k", "bound", "se"}."""
    df = pd.DataFrame(rows)
    points = list(dict.fromkeys(df["point"]))
    fig, axes = plt.subplots(1, len(points), figsize=(6 * len(points), 4.2), squeeze=False)
    for ax, point in zip(axes[0], points):
        sub = df[df["point"] == point]
        ax.errorbar(sub["k"], sub["bound"], yerr=2 * sub["se"], marker="o", capsize=3, label="IWAE bound (± 2 se)")
        ax.axhline(exact[point], color="k", linestyle="--", label="exact log p(x)")
        ax.set_xscale("log")
        ax.set_xlabel("K (samples per point)")
        ax.set_ylabel("nats per point")
        ax.set_title(point)
        ax.legend(loc="lower right")
    return save(fig, path)


# --- images -----------------------------------------------------------------------------------


def save_grid(images: torch.Tensor, nrow: int, path: Path) -> Path:
    """(N, 784) pixels in [0, 1] as a grid of 28×28 images, ``nrow`` per row, 2-pixel padding."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1).reshape(-1, 1, SIDE, SIDE), nrow=nrow, padding=2)
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
    return path


def mean_image(model, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """E[x | z]: the picture a decoder output stands for."""
    if model.likelihood.startswith("gaussian"):
        return params[0]
    if model.likelihood == "continuous-bernoulli":
        return ContinuousBernoulli(logits=params[0]).mean
    return torch.sigmoid(params[0])


def prior_draws(model, n: int, label: int | None, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n latent draws from p(z) (the autoencoder: from N(0, I) too), or from p(z|y) for a CVAE."""
    device = next(model.parameters()).device
    eps = torch.randn(n, model.z_dim, generator=gen).to(device)
    if not model.conditional:
        return eps, None
    y = torch.full((n,), label, device=device) if label is not None else torch.arange(n, device=device) % 10
    loc, scale = model.prior(eps, y)
    return loc + scale * eps, y


@torch.no_grad()
def samples(model, path: Path, n: int = 64, label: int | None = None, seed: int = 0) -> Path:
    """Decoded prior samples. A CVAE without ``label``: one column per class, 0-9 (n rounded up to tens)."""
    if model.conditional and label is None:
        n = 10 * -(-n // 10)
    z, y = prior_draws(model, n, label, torch.Generator().manual_seed(seed))
    return save_grid(mean_image(model, model.decode(z, y)), 10 if model.conditional and label is None else 8, path)


@torch.no_grad()
def reconstructions(model, x: torch.Tensor, y: torch.Tensor | None, path: Path, n: int = 16) -> Path:
    """The first ``n`` test images (top row) above their reconstructions from z = μ(x) (bottom row)."""
    x, y = x[:n], y[:n] if y is not None else None
    recon = mean_image(model, model.decode(model.encode(x, y)[0], y))
    return save_grid(torch.cat([x, recon]), n, path)


@torch.no_grad()
def traversals(model, x: torch.Tensor, y: torch.Tensor | None, path: Path, dims: int = 10, steps: int = 9) -> Path:
    """Row d: latent coordinate d swept over N(0, 1)'s 5%-95% quantiles, the others at μ(x) of one test image."""
    dims = min(dims, model.z_dim)
    code = model.encode(x[:1], y[:1] if y is not None else None)[0]
    values = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps)).to(code)
    z = code.repeat(dims * steps, 1)
    for d in range(dims):
        z[d * steps : (d + 1) * steps, d] = values
    cond = y[:1].expand(len(z)) if y is not None else None
    return save_grid(mean_image(model, model.decode(z, cond)), steps, path)


@torch.no_grad()
def latent_space(model, x: torch.Tensor, y: torch.Tensor, path: Path, grid: int = 15) -> Path:
    """Posterior means μ(x) of test images coloured by label ``y``: the two latent coordinates when
    z = 2 (with the decoded manifold on an inverse-CDF grid, as in Kingma & Welling 2013, fig. 4),
    else the first two principal components."""
    cond = y if model.conditional else None
    codes = torch.cat([model.encode(x[i : i + 1000], cond[i : i + 1000] if cond is not None else None)[0]
                       for i in range(0, len(x), 1000)]).float().cpu()
    if model.z_dim == 2:
        xy, axes_names = codes, ("z1", "z2")
    else:
        centred = codes - codes.mean(0)
        xy, axes_names = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T, ("PC 1", "PC 2")
    manifold = model.z_dim == 2 and not model.conditional
    fig, axes = plt.subplots(1, 2 if manifold else 1, figsize=(12 if manifold else 6.5, 5.5), squeeze=False)
    df = pd.DataFrame({axes_names[0]: xy[:, 0].numpy(), axes_names[1]: xy[:, 1].numpy(), "label": y.cpu().numpy()})
    sns.scatterplot(df, x=axes_names[0], y=axes_names[1], hue="label", palette="tab10", s=12, ax=axes[0, 0])
    axes[0, 0].set_title("posterior means of test images" + ("" if model.z_dim == 2 else f" (z = {model.z_dim}, PCA)"))
    if manifold:  # row i: z2 = q[grid - 1 - i] (high at the top); column j: z1 = q[j]
        q = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, grid))
        z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
        images = mean_image(model, model.decode(z.to(next(model.parameters()))))
        tiles = images.float().cpu().clamp(0, 1).reshape(-1, 1, SIDE, SIDE)
        axes[0, 1].imshow(make_grid(tiles, nrow=grid, padding=0)[0].numpy(), cmap="gray")
        axes[0, 1].set_title("decoded manifold (inverse-CDF grid over z)")
        axes[0, 1].axis("off")
    return save(fig, path)


def run_curves(history: list[dict], path: Path) -> Path:
    """One run's training curves: the test terms (ELBO, reconstruction, KL) and the training objective per epoch."""
    keys = [k for k in history[0] if k.startswith(("train_", "test_"))]
    df = pd.DataFrame([{"epoch": r["epoch"], "term": k, "nats per image": r[k]} for r in history for k in keys])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(df, x="epoch", y="nats per image", hue="term", marker="o", markersize=3, ax=ax)
    return save(fig, path)
