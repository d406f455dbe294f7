#!/usr/bin/env bash
# Re-make every number and figure in README.md (about 6.5 hours on 2 CPU cores: the speed bench, the
# Fashion-MNIST tables, about 2 hours, and the discrete-latent benchmark, about 2.5, included).
#   bash experiments/readme.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/figures

# The core figure: meanfield, z=20, hidden 400, 30 epochs; IS log-likelihood with K=1,000.
vae-pyro train --estimator meanfield --z-dim 20 --hidden 400 --epochs 30 --out runs/meanfield-30 --force --quiet
vae-pyro evaluate runs/meanfield-30
vae-pyro check --run runs/meanfield-30

# The headline: five estimators on the bundled digits, over three seeds.
vae-pyro compare --seeds 3 --out runs/compare-mnist5k --force --quiet
for f in seeds curves gradients; do cp runs/compare-mnist5k/figures/$f.png docs/figures/compare-$f.png; done
cp runs/compare-mnist5k/seed-0/figures/loss_values.png docs/figures/compare-loss_values.png

# The estimators Pyro lacks, over three seeds, and their gradients' SNR against K.
vae-pyro compare --seeds 3 --estimators meanfield,iwae,stl,iwae-stl,iwae-dreg,renyi,miwae,piwae,ciwae,vimco,rws \
    --grad-draws 50 --grad-batches 1 --out runs/compare-estimators --force --quiet
for f in seeds snr_vs_k; do cp runs/compare-estimators/figures/$f.png docs/figures/estimators-$f.png; done

# The exactness lab on synthetic-linear.
python experiments/linear_exact.py --out runs/linear-exact
cp runs/linear-exact/iwae_vs_k.png docs/figures/linear-iwae-vs-k.png

# Models and pictures: the z = 2 latent space, the CVAE's classes, the autoencoder against the VAE.
vae-pyro train --z-dim 2 --out runs/vae-z2 --force --quiet
vae-pyro train --model cvae --z-dim 2 --out runs/cvae-z2 --force --quiet
vae-pyro train --model cvae --out runs/cvae --force --quiet
vae-pyro evaluate runs/cvae
vae-pyro train --model ae --out runs/ae --force --quiet          # 784 -> 32 -> 784 code, same hidden layers
vae-pyro train --z-dim 32 --out runs/vae-z32 --force --quiet
vae-pyro evaluate runs/ae
vae-pyro evaluate runs/vae-z32
cp runs/vae-z2/figures/latent.png docs/figures/vae-z2-latent.png
cp runs/cvae-z2/figures/samples.png docs/figures/cvae-z2-samples.png
cp runs/cvae/figures/samples.png docs/figures/cvae-samples.png
cp runs/vae-z32/figures/samples.png docs/figures/vae-z32-samples.png
cp runs/vae-z32/figures/reconstructions.png docs/figures/vae-z32-reconstructions.png
cp runs/ae/figures/reconstructions.png docs/figures/ae-reconstructions.png
rm -rf runs/latent-dims
python experiments/latent_dims.py --out runs/latent-dims
cp runs/latent-dims/latent_dims.png docs/figures/latent-dims.png

# The example models (examples/): their compare tables.
bash experiments/examples.sh

# Speed (full Fashion-MNIST from Debian's dataset-fashion-mnist package, or the torchvision download).
python experiments/bench.py
python experiments/bench.py --discrete
python experiments/pyro_example_loop.py --epochs 5
python experiments/bench.py --batch 256 --activation softplus --estimators meanfield,trace,jit-trace,jit-meanfield

# Full scale: the Fashion-MNIST tables and learning curves (resumable; about 2 hours on 2 cores).
bash experiments/score_baselines.sh
bash experiments/fashion.sh
python experiments/fashion_tables.py runs/fashion

# Discrete latents: the variance at fixed weights, and the benchmark (resumable; about 2.5 hours on 2 cores).
python experiments/discrete_variance.py
bash experiments/discrete.sh
python experiments/discrete_tables.py runs/discrete
