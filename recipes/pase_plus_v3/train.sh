#!/usr/bin/env bash
# PASE+ v3: the recipe chosen by recipes/pase_plus_v3/ablation.sh, continuing the v2 encoder (the
# packaged pase+ until v3 ships; at commit 1228934 for later reproductions: `git show
# 1228934:pase/pretrained/pase_plus/model.safetensors`) with fresh workers for HORIZON steps of batch 4
# on v3's data (pretrain.csv + pretrain_more.csv + the bundle's train-clean-100), one poly decay over
# the whole horizon, checkpoints every 50 steps, validation every 250.
# Start it once; run it again in any later session to resume (only the thread count follows THREADS).
# Stop it with SIGINT (kill -INT PID): it checkpoints and exits.
#   bash recipes/pase_plus_v3/train.sh [RUN] [THREADS]        (default ~/pase_runs/v3, 2 threads)
# If RUN is gone but the committed warm start (checkpoints/warm_start: an fp16 encoder and the step it
# was taken at) exists, a new leg starts from it with --init --start-step (fresh workers that first fit
# its features for FREEZE steps; the poly decay stays the whole horizon's). Every leg's command line is
# appended to RUN/legs.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/v3}"
THREADS="${2:-2}"
HORIZON="${HORIZON:-10000}"
PRESET="${PRESET:-pase+v3}"
INIT="${INIT:-pase+}"
EXTRA="${PASE_EXTRA_SPEECH:-$HOME/.cache/pase/speech_extra}"
SPEECH="${PASE_SPEECH_DIR:-../shared/speech}"
PASE="${PASE:-.venv/bin/pase}"
WARM="${WARM:-checkpoints/warm_start}"
DATA=("$EXTRA/pretrain.csv" "$EXTRA/pretrain_more.csv" "$SPEECH/librispeech/train-clean-100")
COMMON=(--data "${DATA[@]}" --out "$RUN" --max-steps "$HORIZON" --num-threads "$THREADS"
        --ckpt-every 50 --valid-every 250 --valid-batches 64)
mkdir -p "$RUN"
source recipes/malloc_env.sh  # glibc malloc keeps its memory: 23 % less wall time, same losses
if [ -f "$RUN/checkpoint.pt" ]; then
  cmd=("$PASE" train --out "$RUN" --resume --num-threads "$THREADS")
else
  for f in "${DATA[@]}"; do
    [ -e "$f" ] || { echo "v3: $f not found (see ../shared/data/README.md)" >&2; exit 2; }
  done
  if [ -f "$WARM/config.json" ] && [ -f "$WARM/step.txt" ]; then
    cmd=("$PASE" train --preset "$PRESET" --init "$WARM" --start-step "$(cat "$WARM/step.txt")"
         --freeze-encoder-steps "${FREEZE:-150}" --seed 1 --split-seed 0 "${COMMON[@]}")
  else
    cmd=("$PASE" train --preset "$PRESET" --init "$INIT" --freeze-encoder-steps 100 --seed 0 "${COMMON[@]}")
  fi
fi
echo "$(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD) ${cmd[*]}" >> "$RUN/legs.txt"
exec "${cmd[@]}"
