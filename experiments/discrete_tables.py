"""The discrete-latent benchmark's tables and figures from the folders `experiments/discrete.sh` wrote:
one table per model (the two folders of a model paired by seed against its reference), printed as
markdown; the curves and the gradient log-variance along training drawn to docs/figures/. Parts not
yet run are left out.

    python experiments/discrete_tables.py runs/discrete
"""

import argparse
import json
from pathlib import Path

from vae_pyro.lab import stats
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.lab.runs import Run
from vae_pyro.report import figures
from vae_pyro.report.markdown import markdown_table

# model -> (its compare folders, the reference of its paired differences, steps per epoch)
MODELS = {
    "binary VAE, linear": (("linear", "linear-L2"), "disarm", 1200),
    "binary VAE, nonlinear": (("nonlinear", "nonlinear-L2"), "disarm", 1200),
    "categorical VAE (20 x 10)": (("categorical", "categorical-L2", "categorical-relax"), "rloo", 1200),
    "Gaussian VAE (z = 50), score with rloo's control variate": (("gaussian-rloo-k2", "gaussian-rloo-k5"), None, 468),
}


def labelled(folder: Path) -> tuple[dict, dict[str, str]]:
    """A compare folder's summary, and each estimator's label in the tables: its name, with its K in the folders
    that differ only by K (rloo-2, rloo-5)."""
    summary = json.loads((folder / "summary.json").read_text())
    names = [r["estimator"] for r in summary["estimators"]]
    with_k = folder.name.startswith("gaussian")
    return summary, {n: f"{n}-{summary['config'][n]['iwae_k']}" if with_k else n for n in names}


def per_seed_rows(folders: list[Path]) -> dict[int, list[dict]]:
    """{seed: the rows of every folder's estimators at that seed}."""
    out: dict[int, list[dict]] = {}
    for folder in folders:
        summary, label = labelled(folder)
        for row in summary["per_seed"]:
            out.setdefault(row["seed"], []).append({**row, "estimator": label[row["estimator"]]})
    return out


def histories(folders: list[Path]) -> dict[str, list[list[dict]]]:
    """{label: each seed's metrics.jsonl, read back by the lab's run folder}."""
    out: dict[str, list[list[dict]]] = {}
    for folder in folders:
        summary, label = labelled(folder)
        for seed in summary["seeds"]:
            for name in label:
                out.setdefault(label[name], []).append(Run.open(folder / f"seed-{seed}" / name).metrics())
    return out


def fmt(row: dict, metric: str, reference: str | None) -> list[str]:
    cell = f"{row[metric]:.2f} ± {row[f'{metric}_se']:.2f}"
    if reference is None:
        return [cell]
    if row["estimator"] == reference:
        return [cell, "reference"]
    lo, hi = row[f"{metric}_diff_lo"], row[f"{metric}_diff_hi"]
    return [cell, f"{row[f'{metric}_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (" (holds 0)" if lo <= 0 <= hi else "")]


def seconds_per_epoch(runs: list[list[dict]]) -> float:
    """An estimator's fastest epoch over every epoch of every seed: its own cost, as a timing's minimum over
    repeats is (another process on the machine only ever slows an epoch)."""
    return min(r["seconds"] for history in runs for r in history)


def table(title: str, folders: list[Path], reference: str | None, steps: int, figures_dir: Path) -> None:
    by_seed = per_seed_rows(folders)
    seeds = sorted(by_seed)
    rows_by_seed = [by_seed[s] for s in seeds]
    k = LikelihoodKey.first_in(rows_by_seed[0][0])
    metrics = ["test_elbo", k.name]
    ref = reference or rows_by_seed[0][0]["estimator"]
    rows = stats.over_seeds(rows_by_seed, ref, metrics)
    curves = histories(folders)
    epochs = len(next(iter(curves.values()))[0])
    print(f"\n### {title}: {epochs} epochs of {steps} steps, seeds {', '.join(map(str, seeds))}\n")
    head = ["estimator", "test ELBO", *(["Δ vs " + ref + " [95%]"] if reference else []),
            f"test log p(x), IS K={k.k}", *(["Δ [95%]"] if reference else []), "log var φ-gradient (last epoch)",
            "s/epoch (fastest)"]
    body = []
    for row in rows:
        log_var = [h[-1].get("log_guide_grad_variance") for h in curves[row["estimator"]]]
        var_cell = f"{sum(log_var) / len(log_var):.2f}" if None not in log_var else "–"
        body.append([f"`{row['estimator']}`", *fmt(row, "test_elbo", reference), *fmt(row, k.name, reference),
                     var_cell, f"{seconds_per_epoch(curves[row['estimator']]):.1f}"])
    print(markdown_table(head, body))
    stem = "discrete-" + folders[0].name
    drawn = [figures.draw(figures_dir, f"{stem}-curves.png", figures.curves, curves)]
    if any("log_guide_grad_variance" in h[0] for runs in curves.values() for h in runs):
        drawn.append(figures.draw(figures_dir, f"{stem}-grad-variance.png", figures.grad_variance, curves, steps))
    if "nvil" in curves:
        print("\n(nvil's gradient is measured as it trains: divided by max(1, √v), its running normalisation)")
    print(f"\nfigures: {', '.join(map(str, drawn))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the folder experiments/discrete.sh wrote")
    p.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = p.parse_args()
    for title, (names, reference, steps) in MODELS.items():
        folders = [args.out / n for n in names if (args.out / n / "summary.json").exists()]
        if folders:
            table(title, folders, reference, steps, args.figures)


if __name__ == "__main__":
    main()
