"""The exactness lab on --dataset synthetic-linear: bounds against an exact log p(x).

1. Trains a linear VAE (linear encoder and decoder, Gaussian likelihood with one shared sigma)
   with `meanfield` and compares its training-set ELBO with the maximum pPCA log-likelihood
   (Tipping & Bishop's closed form): a linear VAE with diagonal posterior recovers pPCA.
2. At the initial and the trained weights, every estimator's bound against the exact log p(x)
   of that same model, and the IWAE bound for K = 1, 5, 50, 500 (figure).

    python experiments/linear_exact.py [--out runs/linear-exact] [--draws 20]
"""

import argparse
from pathlib import Path

import torch

from vae_pyro.data.linear import exact_log_likelihood, ppca_max_log_likelihood
from vae_pyro.lab import diagnostics
from vae_pyro.lab.compare import config_for
from vae_pyro.lab.experiment import instantiate, load_data, make_estimator, restore_run
from vae_pyro.lab.train import fit
from vae_pyro.models import hand
from vae_pyro.report import figures as plots

OPTIONS = dict(dataset="synthetic-linear", hidden=(), likelihood="gaussian-shared", z_dim=2,
               batch_size=500, epochs=400, lr=0.005, seed=0)
KS = (1, 5, 50, 500)


def bound(cfg, vae, x, draws: int) -> tuple[float, float]:
    """Mean over draws of the estimator's bound per point, and its standard error."""
    values = -diagnostics.loss_draws(make_estimator(cfg, vae, x), vae, x, draws)
    return values.mean().item(), values.std().item() / len(values) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/linear-exact")
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    out = Path(args.out)

    cfg = config_for(OPTIONS, "meanfield")
    fit(cfg, out / "run", force=True, progress=False)
    cpu = torch.device("cpu")
    x = load_data(cfg, cpu).train_x.double()
    vaes = {"initial weights": instantiate(cfg, x.shape[1], cpu).double(), "trained weights": restore_run(out / "run", cpu).module.double()}

    torch.manual_seed(0)
    with torch.no_grad():
        elbo = hand.elbo_terms(vaes["trained weights"], x, particles=1000).elbo.mean().item()
    ppca = ppca_max_log_likelihood(x, cfg.z_dim)
    print(f"training set, nats per point ({len(x)} points, D = {x.shape[1]}, k = {cfg.z_dim})")
    print(f"  pPCA maximum log-likelihood        {ppca:10.4f}")
    print(f"  exact log p(x) of the trained VAE  {exact_log_likelihood(vaes['trained weights'], x).mean().item():10.4f}")
    print(f"  ELBO of the trained VAE (L=1000)   {elbo:10.4f}   gap to pPCA {ppca - elbo:.4f}")

    rows, exact = [], {}
    for point, vae in vaes.items():
        exact[point] = exact_log_likelihood(vae, x).mean().item()
        print(f"\n{point}: exact log p(x) = {exact[point]:.4f}; bounds, mean ± se over {args.draws} draws")
        for name in ("trace", "meanfield", "hand", "score"):
            mean, se = bound(config_for(OPTIONS, name), vae, x, args.draws)
            print(f"  {name:10} {mean:10.4f} ± {se:.4f}")
        for k in KS:
            mean, se = bound(config_for({**OPTIONS, "iwae_k": k}, "iwae"), vae, x, args.draws)
            rows.append({"point": point, "k": k, "bound": mean, "se": se})
            print(f"  iwae K={k:<4} {mean:10.4f} ± {se:.4f}")
    print(f"\nfigure: {plots.draw(out, 'iwae_vs_k.png', plots.bound_vs_k, rows, exact)}")


if __name__ == "__main__":
    main()
