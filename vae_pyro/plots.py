"""Figures (seaborn on matplotlib's Agg backend). Each function writes one PNG, atomically."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vae_pyro.runs import atomic_write  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def save(fig: plt.Figure, path: Path) -> Path:
    fig.set_layout_engine("constrained")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
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
