#!/usr/bin/env bash
# Full-size reproduction on one machine (a GPU makes it minutes; on 2 CPU cores it takes hours):
#   bash bench/full_run.sh [DATA] [RUNS] [THREE_SUBNET_EPOCHS]
# 1. the DCASE-sized synthetic set (seed 0), 2. the AE baseline (100 epochs, as the public recipe) and the
# three-subnetworks model trained side by side, 3. each scored with its second backend, 4. the seed-style
# tables of all four systems and the ensembles that exist. Prints everything; writes runs under RUNS.
set -euo pipefail
DATA=${1:-data/synth_full}
RUNS=${2:-runs/full}
EPOCHS=${3:-10}
PY=${PYTHON:-python3}
WORKERS=$(( $(nproc) > 8 ? 8 : $(nproc) ))
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-20}

t0=$(date +%s)
[ -f "$DATA/.asd_synth_done" ] || { $PY -m asdcore synth --out "$DATA" --scale full --seed 0 --workers "$(nproc)" && touch "$DATA/.asd_synth_done"; }
echo "synth done in $(( $(date +%s) - t0 )) s"

t1=$(date +%s)
$PY -m asdcore train "$DATA" --system ae-mse --out "$RUNS/ae" --epochs 100 --resume --set parallel_machines=7 > "$RUNS.ae.log" 2>&1 &
ae_pid=$!
$PY -m asdcore train "$DATA" --system three-subnet-kmeans --out "$RUNS/three-subnet" --epochs "$EPOCHS" --resume \
    --set num_workers="$WORKERS" --set embed_batch_size=64
echo "three-subnet trained+scored in $(( $(date +%s) - t1 )) s"
wait "$ae_pid" || { tail -50 "$RUNS.ae.log"; exit 1; }
tail -40 "$RUNS.ae.log"
echo "ae trained+scored; both finished after $(( $(date +%s) - t1 )) s"

$PY -m asdcore score "$RUNS/ae" "$DATA" --system ae-mahala --out "$RUNS/ae-mahala" --quiet
$PY -m asdcore score "$RUNS/three-subnet" "$DATA" --system three-subnet-gmm --out "$RUNS/three-subnet-gmm" --quiet \
    2>&1 | tail -40
$PY -m bench.quality "$DATA" --systems ae-mse,ae-mahala,three-subnet-gmm,three-subnet-kmeans --out "$RUNS" \
    --quiet --reuse-only
$PY -m asdcore ensemble "ae-mse=$RUNS/ae" "ae-mahala=$RUNS/ae-mahala" "three-subnet-kmeans=$RUNS/three-subnet" \
    "three-subnet-gmm=$RUNS/three-subnet-gmm" --preset ensemble-1 --out "$RUNS/ensemble-1" --data "$DATA"
$PY -m asdcore ensemble "ae-mse=$RUNS/ae" "ae-mahala=$RUNS/ae-mahala" "three-subnet-kmeans=$RUNS/three-subnet" \
    "three-subnet-gmm=$RUNS/three-subnet-gmm" --search --out "$RUNS/ensemble-search" --data "$DATA"
echo "all done in $(( $(date +%s) - t0 )) s"
