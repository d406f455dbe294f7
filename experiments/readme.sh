#!/usr/bin/env bash
# Re-make every number and figure in README.md (about 6 minutes on 2 CPU cores).
#   bash experiments/readme.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/figures

# The core figure: meanfield, z=20, hidden 400, 30 epochs; IS log-likelihood with K=1,000.
vae-pyro train --estimator meanfield --z-dim 20 --hidden 400 --epochs 30 --out runs/meanfield-30 --force --quiet
vae-pyro evaluate runs/meanfield-30
vae-pyro check --run runs/meanfield-30

# The headline: every estimator on the bundled digits.
vae-pyro compare --out runs/compare-mnist5k --force --quiet
for f in curves gradients loss_values; do cp runs/compare-mnist5k/figures/$f.png docs/figures/compare-$f.png; done

# The exactness lab on synthetic-linear.
python experiments/linear_exact.py --out runs/linear-exact
cp runs/linear-exact/iwae_vs_k.png docs/figures/linear-iwae-vs-k.png
