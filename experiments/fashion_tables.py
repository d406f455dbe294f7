"""The README's Fashion-MNIST tables from the folders `experiments/fashion.sh` wrote: printed as
markdown, with the learning curves copied to docs/figures/. Parts not yet run are left out and named.

    python experiments/fashion_tables.py runs/fashion
"""

import argparse
import json
import shutil
from pathlib import Path

from vae_pyro.report.markdown import markdown_table


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def final_k(run: Path) -> tuple[int, float, float] | None:
    """(K, IS log p(x), se) of the largest K in the run's evaluation.json."""
    ev = load(run / "evaluation.json") or {}
    ks = [int(key.rsplit("k", 1)[1]) for key in ev if key.startswith("test_is_log_likelihood_k") and key[-1].isdigit()]
    if not ks:
        return None
    k = max(ks)
    return k, ev[f"test_is_log_likelihood_k{k}"], ev[f"test_is_log_likelihood_k{k}_se"]


def seeds_rows(folder: Path, names: list[str] | None = None) -> list[list[str]]:
    """Table 1's rows from a comparison: mean ± se over seeds (or the one seed), seed 0's final IS estimate."""
    summary = load(folder / "summary.json")
    if summary is None:
        return []
    k = next(key for key in summary["estimators"][0] if key.startswith("test_is_log_likelihood_k") and key[-1].isdigit())
    several = "seeds" in summary
    seed0 = folder / f"seed-{summary['seeds'][0]}" if several else folder
    rows = []
    for r in summary["estimators"]:
        if names and r["estimator"] not in names:
            continue
        cfg = summary["config"][r["estimator"]] if not several else json.loads(
            (seed0 / r["estimator"] / "config.json").read_text())
        label = f"`{r['estimator']}`" + (f" K={cfg['iwae_k']}" if r["estimator"] in ("iwae", "iwae-dreg", "vimco") else "") \
            + (f" ({cfg['baseline']} baseline)" if r["estimator"] == "score" else "")
        spread = (lambda key: f"{r[key]:.2f} ± {r[key + '_se']:.2f}") if several else (lambda key: f"{r[key]:.2f}")
        final = final_k(seed0 / r["estimator"])
        rows.append([label, str(len(summary.get("seeds", [0]))), spread(k), spread("test_elbo"),
                     f"{final[1]:.2f} ± {final[2]:.2f} (K={final[0]})" if final else "not yet",
                     f"{r['active_units']:.1f}", f"{r['seconds_per_epoch']:.2f}"])
    return rows


def burda_rows(out: Path) -> list[list[str]]:
    rows = []
    for arch, label in (("vae", "one layer (z = 50)"), ("two", "two layers (z₁ = 100, z₂ = 50)")):
        for k in (1, 5, 50):
            summary = load(out / f"burda-{arch}-k{k}" / "summary.json")
            if summary is None:
                continue
            for r in summary["estimators"]:
                final = final_k(out / f"burda-{arch}-k{k}" / r["estimator"])
                what = "VAE (ELBO)" if r["estimator"] == "trace" else "IWAE"
                rows.append([label, what, str(k), f"{-final[1]:.2f} (K={final[0]})" if final else "not yet",
                             f"{-r['test_elbo']:.2f}", str(r["active_units"]), f"{r['seconds_per_epoch']:.2f}"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/fashion")
    p.add_argument("--figures", default="docs/figures")
    args = p.parse_args()
    out = Path(args.out)
    header = ["estimator", "seeds", "test log p(x), IS (K of the runs)", "test ELBO", "seed 0: final IS log p(x)",
              "active units", "s/epoch"]
    rows = seeds_rows(out / "vae-k5") + seeds_rows(out / "vae-score", ["score"]) + seeds_rows(out / "vae-k50")
    print("Table 1: estimators on the one-layer VAE\n")
    print(markdown_table(header, rows) if rows else "(not run yet)")
    print("\nTable 2: Burda et al.'s experiment, test −log p(x) and −ELBO in nats\n")
    rows = burda_rows(out)
    header = ["stochastic layers", "objective", "K", "test −log p(x), IS", "test −ELBO", "active units", "s/epoch"]
    print(markdown_table(header, rows) if rows else "(not run yet)")
    curves = out / "vae-k5" / "figures" / "curves.png"
    if curves.exists():
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        shutil.copy(curves, Path(args.figures) / "fashion-curves.png")
        print(f"\nlearning curves: {Path(args.figures) / 'fashion-curves.png'}")


if __name__ == "__main__":
    main()
