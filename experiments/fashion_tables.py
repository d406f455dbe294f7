"""The README's Fashion-MNIST tables from the folders `experiments/fashion.sh` wrote: printed as
markdown, with the learning curves copied to docs/figures/. Parts not yet run are left out; a comparison
still running shows its finished runs.

    python experiments/fashion_tables.py runs/fashion
"""

import argparse
import json
import shutil
from pathlib import Path

from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.report.markdown import markdown_table

# Burda et al.'s table: (layers, K) -> [(objective, compare folder, estimator)], from fashion.sh's
# burda-{one,two}-k{1,5,50} folders.
LAYERS = {"one": "one (z = 50)", "two": "two (z₁ = 100, z₂ = 50)"}
OBJECTIVES = [("VAE", "trace"), ("IWAE", "iwae")]  # at K = 1 they are one estimator: the first alone
BURDA = {(label, k): [(objective, f"burda-{layers}-k{k}", estimator) for objective, estimator in OBJECTIVES[:1 + (k > 1)]]
         for layers, label in LAYERS.items() for k in (1, 5, 50)}


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def is_keys(row: dict) -> list[int]:
    """The K of every IS estimate in a summary row or evaluation.json, ascending."""
    return [key.k for key in LikelihoodKey.all_in(row)]


def final_is(row: dict, run: Path, sign: float = 1.0) -> str:
    """``sign`` × the IS estimate at the largest K beyond the first: the summary row's (``compare --k
    1000,5000``: over seeds where there are several), else the run's evaluation.json (``vae-pyro evaluate``
    at another K), else '–'."""
    for record in (row, load(run / "evaluation.json") or {}):
        ks = is_keys(record)
        if len(ks) > 1:
            return f"{spread(record, f'test_is_log_likelihood_k{ks[-1]}', sign)} (K={ks[-1]})"
    return "–"


def final_difference(row: dict, reference: str) -> str:
    """The paired difference to ``reference`` at the largest K, with its 95% interval over seeds, or '–' (one
    seed, or one K)."""
    ks = is_keys(row)
    if len(ks) < 2:
        return "–"
    if row["estimator"] == reference and "seeds" in row:
        return "reference"
    key = f"test_is_log_likelihood_k{ks[-1]}_diff"
    if key not in row:
        return "–"
    return f"{row[key]:+.2f} [{row[key + '_lo']:+.2f}, {row[key + '_hi']:+.2f}]"


def seed0(out: Path, folder: str, estimator: str) -> tuple[dict, Path] | None:
    """An estimator's summary row and run folder from a comparison's first seed."""
    summary = load(out / folder / "summary.json")
    if summary is None:
        return None
    if "seeds" not in summary:
        row = next(r for r in summary["estimators"] if r["estimator"] == estimator)
        return row, out / folder / estimator
    s = summary["seeds"][0]
    row = next(r for r in summary["per_seed"] if r["estimator"] == estimator and r["seed"] == s)
    return row, out / folder / f"seed-{s}" / estimator


def spread(row: dict, key: str, sign: float = 1.0) -> str:
    """'value ± se': over seeds in a several-seed summary, over test images in one run's row."""
    return f"{sign * row[key]:.2f} ± {row[key + '_se']:.2f}"


def estimator_rows(out: Path, folder: str) -> list[list[str]]:
    """Table 1's rows: mean ± se over seeds (or seed 0's value ± the se over test images), and at the larger K
    the paired difference to the comparison's reference."""
    summary = load(out / folder / "summary.json")
    if summary is None:
        return []
    rows = []
    for r in summary["estimators"]:
        name = r["estimator"]
        _, run = seed0(out, folder, name)
        cfg = json.loads((run / "config.json").read_text())
        label = f"`{name}`" + (f" K={cfg['iwae_k']}" if name in ("iwae", "iwae-dreg", "vimco") else "") \
            + (f" ({cfg['baseline']} baseline)" if name == "score" else "")
        k = is_keys(r)[0]
        rows.append([label, str(r.get("seeds", 1)), spread(r, f"test_is_log_likelihood_k{k}"), final_is(r, run),
                     final_difference(r, summary.get("reference", "")), spread(r, "test_elbo"), f"{r['active_units']:.1f}",
                     f"{r['seconds_per_epoch']:.2f}"])
    return rows


def finished_runs(out: Path, folder: str) -> list[list[str]]:
    """A comparison still running (no summary.json yet): one row per finished run, from its evaluation.json."""
    if (out / folder / "summary.json").exists():
        return []
    rows = []
    for path in sorted((out / folder).glob("seed-*/*/evaluation.json")):
        e = json.loads(path.read_text())
        rows.append([f"`{path.parent.name}`", path.parent.parent.name.removeprefix("seed-"),
                     spread(e, f"test_is_log_likelihood_k{is_keys(e)[0]}"), final_is(e, path.parent),
                     spread(e, "test_elbo"), str(e["active_units"])])
    return rows


def burda_rows(out: Path) -> list[list[str]]:
    rows = []
    for (layers, k), runs in BURDA.items():
        for objective, folder, estimator in runs:
            found = seed0(out, folder, estimator)
            if found is None:
                continue
            r, run = found
            rows.append([layers, objective, str(k), spread(r, f"test_is_log_likelihood_k{is_keys(r)[0]}", -1.0),
                         final_is(r, run, -1.0), spread(r, "test_elbo", -1.0), str(r["active_units"]),
                         f"{r['seconds_per_epoch']:.2f}"])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    """Markdown, without the columns no row fills (the larger K's, when no run has one)."""
    kept = [i for i in range(len(header)) if any(row[i] != "–" for row in rows)]
    return markdown_table([header[i] for i in kept], [[row[i] for i in kept] for row in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/fashion")
    p.add_argument("--figures", default="docs/figures")
    args = p.parse_args()
    out = Path(args.out)
    reference = (load(out / "vae-k5" / "summary.json") or {}).get("reference", "the reference")
    header = ["estimator", "seeds", "test log p(x), IS", "IS at the larger K", f"Δ vs `{reference}` at the larger K [95%]",
              "test ELBO", "active units", "s/epoch"]
    rows = estimator_rows(out, "vae-k5") + estimator_rows(out, "vae-k50")
    print("Table 1: estimators on the one-layer VAE\n")
    print(table(header, rows) if rows else "(not run yet)")
    running = finished_runs(out, "vae-k5")
    if running:
        print("\nTable 1's K = 5 comparison, still running: its finished runs (± the se over test images)\n")
        print(table(["estimator", "seed", "test log p(x), IS", "IS at the larger K", "test ELBO", "active units"],
                    running))
    print("\nTable 2: Burda et al.'s experiment, seed 0, test −log p(x) and −ELBO in nats\n")
    rows = burda_rows(out)
    header = ["stochastic layers", "objective", "K", "test −log p(x), IS", "IS at the larger K", "test −ELBO",
              "active units", "s/epoch"]
    print(table(header, rows) if rows else "(not run yet)")
    curves = out / "vae-k5" / "figures" / "curves.png"
    if curves.exists():
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        shutil.copy(curves, Path(args.figures) / "fashion-curves.png")
        print(f"\nlearning curves: {Path(args.figures) / 'fashion-curves.png'}")


if __name__ == "__main__":
    main()
