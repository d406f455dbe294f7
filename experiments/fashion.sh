#!/usr/bin/env bash
# Full-scale results on Fashion-MNIST (60,000 / 10,000 images, dynamic binarisation; the files of
# Debian's dataset-fashion-mnist package or a torchvision download): the README's Fashion-MNIST tables.
# Every step resumes: after a stop, run the same command again and finished runs are kept.
#
#   nohup bash experiments/fashion.sh > runs/fashion.log 2>&1 &      # the default settings below
#   EPOCHS=50 SEEDS=5 bash experiments/fashion.sh                    # a longer run, for a night or a GPU
#
# The defaults are estimated (from bench.py's step times and its evaluation rate, not yet from a
# finished run) at about 5.5 hours on 2 CPU cores, nearly half of it the K = 5,000 evaluations
# (about 8 minutes per model): two sessions of resuming, or K_FINAL=1000 to skip that part.
#
# Then `python experiments/fashion_tables.py runs/fashion` prints the tables and copies the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fashion}
EPOCHS=${EPOCHS:-10}       # passes over the 60,000 training images, every run
SEEDS=${SEEDS:-3}          # table 1's estimators at K = 5, and score, over seeds 0..SEEDS-1
K_EVAL=${K_EVAL:-1000}     # IS samples per test image for every run, all 10,000 test images
K_FINAL=${K_FINAL:-5000}   # IS samples per test image for seed 0's runs (table 1) and table 2
JOBS=${JOBS:-1}
read -r -a extra <<< "${EXTRA:-}"   # more compare options, e.g. EXTRA="--grad-draws 5 --device cuda"
common=(--dataset fashion-mnist --batch-size 128 --epochs "$EPOCHS" --k "$K_EVAL" --jobs "$JOBS" --resume --quiet
        "${extra[@]}")
vae=(--z-dim 50 --hidden 400)   # the one-layer VAE: MLP 784-400-50, relu
two=(--model examples/two_layer.py:TwoLayerVAE)   # Burda et al.'s two stochastic layers (100 and 50 units)
mkdir -p "$OUT"

# 1. Estimators on the one-layer VAE, over seeds; the K = 50 pair on seed 0.
vae-pyro compare "${common[@]}" "${vae[@]}" --seeds "$SEEDS" --iwae-k 5 \
    --estimators meanfield,trace,hand,stl,iwae,iwae-dreg,vimco --out "$OUT/vae-k5"
vae-pyro compare "${common[@]}" "${vae[@]}" --seeds "$SEEDS" --baseline "${BASELINE:-neural}" \
    --estimators meanfield,score --out "$OUT/vae-score"
vae-pyro compare "${common[@]}" "${vae[@]}" --iwae-k 50 --estimators iwae,iwae-dreg --out "$OUT/vae-k50"

# 2. Burda et al. 2016's experiment: one and two stochastic layers, the ELBO with K samples (VAE)
#    and the IWAE bound at K = 1, 5, 50 (at K = 1 they are one estimator), seed 0.
for arch in vae two; do
    declare -n opts=$arch
    vae-pyro compare "${common[@]}" "${opts[@]}" --estimators trace --out "$OUT/burda-$arch-k1"
    for k in 5 50; do
        vae-pyro compare "${common[@]}" "${opts[@]}" --particles "$k" --iwae-k "$k" --estimators trace,iwae \
            --out "$OUT/burda-$arch-k$k"
    done
done

# 3. The final IS estimate at K_FINAL for seed 0's runs (skipped where evaluation.json already has it).
#    vae-pyro evaluate keeps the K_EVAL estimate in evaluation.json beside the new one.
for run in "$OUT"/vae-k5/seed-0/* "$OUT"/vae-score/seed-0/score "$OUT"/vae-k50/* "$OUT"/burda-*/*; do
    [ -f "$run/checkpoint.pt" ] || continue
    grep -q "\"test_is_log_likelihood_k$K_FINAL\"" "$run/evaluation.json" 2>/dev/null && continue
    vae-pyro evaluate "$run" --k "$K_FINAL" > /dev/null
done
echo "done: python experiments/fashion_tables.py $OUT"
