#!/usr/bin/env bash
# The README's tables for the example models (examples/), each a `vae-pyro compare` on a model
# written as a user would (about 40 minutes on 2 CPU cores).
#   bash experiments/examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Two stochastic layers x <- z1 <- z2, over three seeds: meanfield is refused (its guide is not mean-field).
vae-pyro compare --model examples/two_layer.py:TwoLayerVAE --estimators trace,iwae --seeds 3 --jobs 2 \
    --out runs/two-layer --force --quiet

# A Gaussian-mixture prior, one seed: the component c enumerated (enum) or sampled (trace, score with a baseline).
vae-pyro compare --model examples/mixture_prior.py:MixturePriorVAE --model-option z_dim=10 \
    --estimators trace,score,enum --baseline decaying --out runs/mixture-prior --force --quiet
cp runs/mixture-prior/figures/curves.png docs/figures/mixture-prior-curves.png

# The linear-Gaussian model, where log p(x) is exact, one seed.
python experiments/linear_user_model.py --out runs/linear-user
