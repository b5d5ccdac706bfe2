#!/usr/bin/env bash
# Issue 10's criterion run: can LIM and GIM learn on held-out speakers within the packaged model's
# budget (1900 steps of batch 4)? The pase+cpu recipe on v2's pretraining set, rand from another
# speaker's file from step 0, one poly decay over the 1900 steps, validation every 100 steps on 64
# fixed held-out batches (256 pairs per discriminator). LIM pools 20 frames with a bilinear head
# and the batch's negatives: chosen on v2's frozen features at step 2554
# (recipes/cpu_recipe_ablation/results/discriminators_v2_2554.json: held-out pair accuracy lim:mlp:one:1 0.58,
# lim:mlp:one:20 0.63, lim:bilinear:batch:20 0.68; gim:mlp:one:0 0.76). GIM is the reference form.
#   bash recipes/cpu_recipe_ablation/discriminators_budget_run.sh [RUN] [THREADS]   (default ~/pase_runs/disc1900, 2)
# WORKER_OPTIONS (JSON for --worker-options) replaces the discriminator forms, e.g. the second run,
# GIM with the same bilinear head and batch negatives:
#   WORKER_OPTIONS='{"lim": {"head": "bilinear", "negatives": "batch", "pool": 20},
#                    "gim": {"head": "bilinear", "negatives": "batch"}}' \
#     bash recipes/cpu_recipe_ablation/discriminators_budget_run.sh ~/pase_runs/disc1900_gim 1
# Run it again to resume (with or without WORKER_OPTIONS); SIGINT checkpoints and stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/disc1900}"
THREADS="${2:-2}"
EXTRA="${PASE_EXTRA_SPEECH:-$HOME/.cache/pase/speech_extra}"
SPEECH="${PASE_SPEECH_DIR:-../shared/speech}"
PASE="${PASE:-.venv/bin/pase}"
DEFAULT_LIM='{"lim": {"head": "bilinear", "negatives": "batch", "pool": 20}}'
# A resumed run keeps the forms saved in its config.json unless WORKER_OPTIONS is given again
# (passing the default would replace a second run's saved GIM form).
opts=()
if [ -n "${WORKER_OPTIONS:-}" ]; then opts=(--worker-options "$WORKER_OPTIONS")
elif [ ! -e "$RUN/config.json" ]; then opts=(--worker-options "$DEFAULT_LIM"); fi
mkdir -p "$RUN"
for f in "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100"; do
  [ -e "$f" ] || { echo "discriminators_budget_run: $f not found (see ../shared/data/README.md)" >&2; exit 2; }
done
# --resume-or-start: the same command starts the run or continues it from its checkpoint
cmd=("$PASE" train --resume-or-start --preset pase+cpu --data "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100"
     --out "$RUN" --max-steps 1900 --num-threads "$THREADS" --seed 0 "${opts[@]}"
     --ckpt-every 50 --valid-every 100 --valid-batches 64)
echo "$(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD) ${cmd[*]}" >> "$RUN/legs.txt"
exec "${cmd[@]}"
