#!/usr/bin/env bash
# Which baseline `score` trains best with on Fashion-MNIST (the one fashion.sh uses): none, decaying
# and neural, 3 epochs each, seed 0, the one-layer VAE of table 1. Prints the test ELBO per epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/baseline-probe}
for b in none decaying neural; do
    vae-pyro train --dataset fashion-mnist --estimator score --baseline "$b" --z-dim 50 --hidden 400 \
        --batch-size 128 --epochs 3 --seed 0 --quiet --force --out "$OUT/$b" > /dev/null
    python -c "import json, sys; print(sys.argv[1], [round(json.loads(l)['test_elbo'], 2) for l in open(sys.argv[2])])" \
        "$b" "$OUT/$b/metrics.jsonl"
done
