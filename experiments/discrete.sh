#!/usr/bin/env bash
# The discrete-latent benchmark: the protocol of Dong, Mnih & Tucker 2020 (DisARM), reused by ARMS, RODEO and
# ReinMax, on dynamically binarised Fashion-MNIST (the full 60,000 / 10,000; Debian's dataset-fashion-mnist).
# The binary VAE, linear and nonlinear (200 Bernoulli latents), every estimator with two draws per image
# (arm, disarm: one antithetic pair; rebar, relax: one draw, three evaluations of f), batch 50, Adam at 1e-4
# for encoder and decoder and 1e-2 for the prior logits (the model's lr_scale), three seeds, the test
# 100-sample bound, the guide gradient's log-variance after every epoch. Beside it, the categorical VAE
# (20 x 10 one-hot) with rloo, gumbel-st, rws and vimco (and rebar, relax), and score with rloo's control variate (K = 2, 5)
# on the Gaussian VAE of the Fashion-MNIST table (z = 50, 400 relu, batch 128, 5 epochs, K = 1,000).
# Every step resumes: after a stop, run the same command again; a larger EPOCHS continues the runs.
#
#   nohup bash experiments/discrete.sh > runs/discrete.log 2>&1 &     # the default: about 2.5 h on 2 cores
#   bash experiments/discrete.sh --full                                 # the protocol's 10^6 steps: a GPU
#
# The protocol trains 10^6 steps; the default trains EPOCHS = 5 epochs of 1,200 steps (6,000 steps, 0.6%
# of it), so its numbers are early-training ones. Then `python experiments/discrete_tables.py runs/discrete`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/discrete}
EPOCHS=${EPOCHS:-5}
SEEDS=${SEEDS:-3}
if [ "${1:-}" = "--full" ]; then EPOCHS=834; fi   # 834 x 1,200 steps: the protocol's 10^6
read -r -a extra <<< "${EXTRA:-}"   # more compare options, e.g. EXTRA="--device cuda"
common=(--dataset fashion-mnist --seeds "$SEEDS" --resume --quiet --grad-draws 20 --grad-batches 1 --loss-draws 20
        "${extra[@]}")
binary=(--epochs "$EPOCHS" --batch-size 50 --lr 1e-4 --k 100 --grad-variance 20)
mkdir -p "$OUT"

# 1. The binary VAE. Two folders per network, as the draws are set per kind of estimator: K = 2 for the
#    K-draw ones (and one pair, or one draw, for the others), L = 2 for nvil and gumbel-st. The tables
#    pair them by seed (the same initial weights and batches in both).
for net in linear nonlinear; do
    model=(--model binary-vae --model-option "net=$net")
    vae-pyro compare "${common[@]}" "${binary[@]}" "${model[@]}" --iwae-k 2 --reference disarm \
        --estimators disarm,arm,rloo,rebar,relax,vimco,rws --out "$OUT/$net"
    vae-pyro compare "${common[@]}" "${binary[@]}" "${model[@]}" --particles 2 \
        --estimators nvil,gumbel-st --out "$OUT/$net-L2"
done

# 2. The categorical VAE (Jang, Gu & Poole 2017's 20 x 10), the same protocol.
vae-pyro compare "${common[@]}" "${binary[@]}" --model categorical-vae --iwae-k 2 --reference rloo \
    --estimators rloo,vimco,rws --out "$OUT/categorical"
vae-pyro compare "${common[@]}" "${binary[@]}" --model categorical-vae --particles 2 \
    --estimators gumbel-st --out "$OUT/categorical-L2"
vae-pyro compare "${common[@]}" "${binary[@]}" --model categorical-vae \
    --estimators rebar,relax --out "$OUT/categorical-relax"   # at one-hot sites: one draw, three evaluations of f

# 3. score with rloo's control variate on the Gaussian VAE of the Fashion-MNIST table.
for k in 2 5; do
    vae-pyro compare "${common[@]}" --epochs 5 --z-dim 50 --hidden 400 --batch-size 128 --k 1000 --iwae-k "$k" \
        --estimators rloo --out "$OUT/gaussian-rloo-k$k"
done
echo "done: python experiments/discrete_tables.py $OUT"
