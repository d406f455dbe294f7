#!/usr/bin/env bash
# Full-scale results on Fashion-MNIST (60,000 / 10,000 images, dynamic binarisation; the files of
# Debian's dataset-fashion-mnist package or a torchvision download): the README's Fashion-MNIST tables.
# Every step resumes: after a stop, run the same command again and finished runs are kept.
#
#   nohup bash experiments/fashion.sh > runs/fashion.log 2>&1 &         # the defaults: 1 h 59 min on 2 cores
#   EPOCHS=50 SEEDS=5 K_FINAL=5000 OUT=runs/fashion-full bash experiments/fashion.sh   # a night, or a GPU
#
# The defaults are sized to a 2-core machine's afternoon: 5 epochs, 3 seeds, every run's test log p(x)
# by importance sampling with K = 1,000 on all 10,000 test images (about 100 s per model here).
# K_FINAL adds a second estimate at that K to every run of both tables, evaluated in each run's own task
# (compare --k K_EVAL,K_FINAL), so --jobs or EXTRA="--executor dask --scheduler ..." spread it too: about
# 6 minutes per model at K = 5,000 here, 36 runs (26 in table 1, 10 in table 2); off by default. Set on a
# finished output folder, it adds only the new estimates (every step resumes). TABLES=2 runs table 2 alone;
# LAYERS and BURDA_KS choose its rows (LAYERS=two BURDA_KS="5 50": the two-layer rows at K = 5 and 50).
#
# Then `python experiments/fashion_tables.py runs/fashion` prints the tables and copies the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fashion}
EPOCHS=${EPOCHS:-5}        # passes over the 60,000 training images, every run
SEEDS=${SEEDS:-3}          # table 1's estimators at K = 5 over seeds 0..SEEDS-1
K_EVAL=${K_EVAL:-1000}     # IS samples per test image for every run, all 10,000 test images
K_FINAL=${K_FINAL:-0}      # 0: none; else a second IS estimate at this K for every run
BASELINE=${BASELINE:-decaying}   # score's baseline: the best of none / decaying / neural in a 3-epoch probe
JOBS=${JOBS:-1}
TABLES=${TABLES:-12}   # which tables to run: 1, 2 or 12
read -r -a layer_list <<< "${LAYERS:-one two}"   # table 2's stochastic layers
read -r -a burda_ks <<< "${BURDA_KS:-1 5 50}"   # table 2's K
for layers in "${layer_list[@]}"; do
    case $layers in one|two) ;; *) echo "fashion.sh: LAYERS takes one and two, not '$layers'" >&2; exit 2 ;; esac
done
for k in "${burda_ks[@]}"; do
    case $k in 1|5|50) ;; *) echo "fashion.sh: BURDA_KS takes 1, 5 and 50 (table 2's K), not '$k'" >&2; exit 2 ;; esac
done
read -r -a extra <<< "${EXTRA:-}"   # more compare options, e.g. EXTRA="--device cuda"
KS=$K_EVAL; [ "$K_FINAL" -gt 0 ] && KS="$K_EVAL,$K_FINAL"
common=(--dataset fashion-mnist --batch-size 128 --epochs "$EPOCHS" --k "$KS" --jobs "$JOBS" --resume --quiet
        --grad-draws 50 --grad-batches 1 --loss-draws 200 "${extra[@]}")
vae=(--z-dim 50 --hidden 400)   # the one-layer VAE: MLP 784-400-50, relu
two=(--model examples/two_layer.py:TwoLayerVAE)   # Burda et al.'s two stochastic layers (100 and 50 units)
mkdir -p "$OUT"

# 1. Estimators on the one-layer VAE: eight at K = 5 over seeds, the IWAE pair at K = 50 on seed 0.
if [[ $TABLES == *1* ]]; then
    vae-pyro compare "${common[@]}" "${vae[@]}" --seeds "$SEEDS" --iwae-k 5 --baseline "$BASELINE" \
        --estimators meanfield,trace,hand,stl,score,iwae,iwae-dreg,vimco --out "$OUT/vae-k5"
    vae-pyro compare "${common[@]}" "${vae[@]}" --iwae-k 50 --estimators iwae,iwae-dreg --out "$OUT/vae-k50"
fi

# 2. Burda et al. 2016's experiment, seed 0: the ELBO with K samples per image (VAE) against the IWAE
#    bound at K = 1, 5, 50 (at K = 1 they are one estimator), with one and two stochastic layers. Its own
#    folders, so TABLES=2 runs it alone (the one-layer K = 1 ELBO and K = 5, 50 IWAE runs repeat table 1's
#    seed-0 configurations).
if [[ $TABLES == *2* ]]; then
    for layers in "${layer_list[@]}"; do
        if [ "$layers" = one ]; then model=("${vae[@]}"); else model=("${two[@]}"); fi
        for k in "${burda_ks[@]}"; do
            if [ "$k" = 1 ]; then
                vae-pyro compare "${common[@]}" "${model[@]}" --estimators trace --out "$OUT/burda-$layers-k1"
            else
                vae-pyro compare "${common[@]}" "${model[@]}" --particles "$k" --iwae-k "$k" --estimators trace,iwae \
                    --out "$OUT/burda-$layers-k$k"
            fi
        done
    done
fi

echo "done: python experiments/fashion_tables.py $OUT"
