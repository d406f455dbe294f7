"""Test ELBO and IS log-likelihood against the latent dimension (Kingma & Welling 2013, fig. 2, on our data).

Trains one VAE per z in --dims with every other option at vae-pyro's defaults (or as given),
evaluates each (IS with K = 1,000), prints a Markdown table and writes a seaborn figure.
Runs already trained in --out are resumed, not redone.

    python experiments/latent_dims.py [--dataset mnist5k] [--dims 2,5,10,20,50] [--epochs 30] [--out runs/latent-dims]
"""

import argparse
from pathlib import Path

import pandas as pd
import seaborn as sns

from vae_pyro.config import Config
from vae_pyro.lab.evaluate import LikelihoodKey, evaluate_run
from vae_pyro.lab.runs import CHECKPOINT
from vae_pyro.lab.train import fit
from vae_pyro.report.figures import save, subplots, themed
from vae_pyro.report.markdown import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--dims", default="2,5,10,20,50")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--out", default="runs/latent-dims")
    args = parser.parse_args()
    out = Path(args.out)

    rows = []
    for z in (int(d) for d in args.dims.split(",")):
        run = out / f"z{z}"
        cfg = Config(dataset=args.dataset, z_dim=z, epochs=args.epochs)
        fit(cfg, run, resume=(run / CHECKPOINT).exists(), force=True, progress=False, label=f"z={z:<3}")
        ev = evaluate_run(run, k=args.k)
        rows.append({"z": z, "test ELBO": ev["test_elbo"], f"test log p(x), IS K={args.k}": ev[LikelihoodKey(args.k).name],
                     "test KL": ev["test_kl"], "active units": ev["active_units"]})

    df = pd.DataFrame(rows)
    print(markdown_table(list(rows[0]), [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]))
    long = df.melt(id_vars="z", value_vars=["test ELBO", f"test log p(x), IS K={args.k}"], var_name="", value_name="nats per image")
    print(f"\nfigure: {figure(df, long, f'{args.dataset}, {args.epochs} epochs', out / 'latent_dims.png')}")


@themed
def figure(df: pd.DataFrame, long: pd.DataFrame, title: str, path: Path) -> Path:
    fig, ax = subplots(figsize=(7, 4.2))
    sns.lineplot(long, x="z", y="nats per image", hue="", marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_xticks(df["z"], [str(z) for z in df["z"]])
    ax.set_xlabel("latent dimensions z")
    ax.set_title(title)
    return save(fig, path)


if __name__ == "__main__":
    main()
