"""The linear-Gaussian user model (examples/linear.py) on synthetic-linear: `vae_pyro.compare` over
estimators, then each trained model's exact log p(x) beside its bounds; and, at the trained weights
of meanfield, the generic IS estimate against the exact value as K grows.

    python experiments/linear_user_model.py --out runs/linear-user
"""

import argparse
import math
from pathlib import Path

import vae_pyro as vp
from vae_pyro.lab.experiment import restore_run
from vae_pyro.report.markdown import markdown_table

MODEL = str(Path(__file__).parent.parent / "examples" / "linear.py") + ":LinearGaussian"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/linear-user")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    out = Path(args.out)
    names = ["trace", "meanfield", "score", "iwae"]
    comparison = vp.compare(MODEL, "synthetic-linear", names, out=out, force=True, progress=False, binarize="none",
                            epochs=args.epochs, batch_size=500, lr=5e-3, k=1000, grad_draws=50, loss_draws=100)
    rows = []
    for name, row in zip(names, comparison.summary["estimators"]):
        run = restore_run(out / name, "cpu")
        exact = run.module.double().exact_log_likelihood(run.data.test_x.double())
        rows.append([f"`{name}`", f"{row['test_elbo']:.4f} ± {row['test_elbo_se']:.4f}",
                     f"{row['test_is_log_likelihood_k1000']:.4f} ± {row['test_is_log_likelihood_k1000_se']:.4f}",
                     f"{exact.mean().item():.4f}"])
    print(markdown_table(["estimator", "test ELBO", "test log p(x), IS K=1000", "exact test log p(x)"], rows))

    run = restore_run(out / "meanfield", "cpu")
    module, x = run.module.double(), run.data.test_x.double()
    exact = module.exact_log_likelihood(x)
    rows = []
    for k in (1, 10, 100, 1000, 10000):
        gap = exact - vp.log_likelihood(module, x, k=k)
        rows.append([str(k), f"{gap.mean().item():.4f} ± {gap.std().item() / math.sqrt(len(gap)):.4f}"])
    print("\nmeanfield's trained model: exact log p(x) − IS estimate, per test point")
    print(markdown_table(["K", "gap (nats)"], rows))


if __name__ == "__main__":
    main()
