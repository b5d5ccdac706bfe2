#!/usr/bin/env bash
# PASE+ v2 (issue 12): the pase+cpu recipe on the prepared pretraining set (pretrain.csv of
# ../shared/data/prepare_extra_speech.sh + the bundle's train-clean-100; no test-clean, RAVDESS,
# EmoDB or FSDD), one poly decay over the whole planned horizon, checkpoints every 50 steps.
# Start it once; run it again in any later session to resume (the saved config is kept, only the
# thread count follows THREADS). Stop it with SIGINT (kill -INT PID): it checkpoints and exits.
#   bash recipes/pase_plus_v2/pretrain_v2.sh [RUN] [THREADS]        (default ~/pase_runs/v2, 2 threads)
# Horizon: HORIZON steps of batch 4 (default 10000, 5.3x the packaged model's 1900 steps; the run
# started with 12000 and was cut to 10000 at step 2771, when its folder was lost and a new leg began
# anyway: the lr there fell from 0.79 to 0.74 of the base, and the 4.7-5 s steps of the new machine
# make 12000 about 2.5 h of 2-core time longer). Every leg's command line is appended to RUN/legs.txt.
# If RUN is gone but WARM names a snapshot of it (snapshot_v2.sh's folder: the encoder in fp16 and
# the step it was taken at; the run committed one at the end of each session until v2 shipped), a
# new leg starts from it with `--init`. WARM has no default: v2 is finished, and a fresh start must
# not pick up another run's snapshot at checkpoints/warm_start.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/v2}"
THREADS="${2:-2}"
HORIZON="${HORIZON:-10000}"
EXTRA="${PASE_EXTRA_SPEECH:-$HOME/.cache/pase/speech_extra}"
SPEECH="${PASE_SPEECH_DIR:-../shared/speech}"
PASE="${PASE:-.venv/bin/pase}"
mkdir -p "$RUN"
source recipes/malloc_env.sh  # glibc malloc keeps its memory: 23 % less wall time, same losses
WARM="${WARM:-}"  # a snapshot of this run (fp16 encoder + step.txt), if RUN was lost
if [ -f "$RUN/checkpoint.pt" ]; then
  cmd=("$PASE" train --out "$RUN" --resume --num-threads "$THREADS")
elif [ -n "$WARM" ] && [ -f "$WARM/config.json" ] && [ -f "$WARM/step.txt" ]; then
  # The run folder is gone (a new machine): continue from the last committed encoder with fresh
  # workers (a new leg; the recipe's README lists them). Steps count on from the encoder's step and the
  # poly decay stays the whole horizon's; another seed draws other batches than the first leg's,
  # --split-seed 0 keeps the first leg's held-out speakers; the fresh workers first fit the frozen
  # encoder's features for FREEZE steps, so that their early random gradients do not move it.
  done_steps=$(cat "$WARM/step.txt")
  cmd=("$PASE" train --preset pase+cpu --init "$WARM" --start-step "$done_steps" --freeze-encoder-steps "${FREEZE:-150}"
       --data "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100"
       --out "$RUN" --max-steps "$HORIZON" --num-threads "$THREADS" --seed 1 --split-seed 0
       --ckpt-every 50 --valid-every 250 --valid-batches 64)
else
  for f in "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100"; do
    [ -e "$f" ] || { echo "pretrain_v2: $f not found (see ../shared/data/README.md)" >&2; exit 2; }
  done
  cmd=("$PASE" train --preset pase+cpu --data "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100"
       --out "$RUN" --max-steps "$HORIZON" --num-threads "$THREADS" --seed 0
       --ckpt-every 50 --valid-every 250 --valid-batches 64)
fi
echo "$(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD) ${cmd[*]}" >> "$RUN/legs.txt"
exec "${cmd[@]}"
