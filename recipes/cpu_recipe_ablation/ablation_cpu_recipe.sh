#!/usr/bin/env bash
# The ablation that chooses the CPU recipe (issue 10): every variant trains 900 CPU-seconds on one
# thread (process clock, so runs beside other jobs stay comparable), on the same data, seed and
# held-out speakers, then pase eval probes it (1 seed, MLP) on fsdd-digit, ravdess-speaker and
# emodb-phone, clean and with 5 dB noise on the test audio of fsdd-digit and emodb-phone.
# Start it once per core (each process takes the next free variant); rerun to resume.
#   bash recipes/cpu_recipe_ablation/ablation_cpu_recipe.sh [OUT [EXTRA pase ablate OPTIONS]]   (default ~/pase_runs/ablate1)
#   bash recipes/cpu_recipe_ablation/ablation_cpu_recipe.sh ~/pase_runs/ablate1 --reeval --seeds 0,1,2   (3 probe seeds)
# Data: ../shared/data/prepare_extra_speech.sh output (pretrain.csv) + the bundle's train-clean-100.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-$HOME/pase_runs/ablate1}"
shift || true
EXTRA="${PASE_EXTRA_SPEECH:-$HOME/.cache/pase/speech_extra}"
SPEECH="${PASE_SPEECH_DIR:-../shared/speech}"
PASE="${PASE:-.venv/bin/pase}"
exec "$PASE" ablate --preset pase+ \
  --data "$EXTRA/pretrain.csv" "$SPEECH/librispeech/train-clean-100" \
  --out "$OUT" \
  --set 'batch_size=4,num_threads=1,valid_every=100,ckpt_every=50,valid_batches=16' \
  --budget 900 --clock process \
  --variant 'cpu:drop_workers=["waveform","lps","lps_long"],rand_from_batch=true,worker_options.gim.negatives=batch,worker_options.gim.head=cosine,worker_options.lim.negatives=batch,worker_options.lim.head=cosine,worker_options.lim.pool=10' \
  --variant 'cpu2:drop_workers=["waveform"],rand_from_batch=true,worker_options.gim.negatives=batch,worker_options.gim.head=cosine' \
  --variant 'fastbil:drop_workers=["waveform"],rand_from_batch=true,worker_options.gim.negatives=batch,worker_options.gim.head=bilinear,worker_options.lim.negatives=batch,worker_options.lim.head=bilinear,worker_options.lim.pool=10' \
  --variant 'fast:drop_workers=["waveform"],rand_from_batch=true' \
  --variant 'bil:worker_options.gim.negatives=batch,worker_options.gim.head=bilinear,worker_options.lim.negatives=batch,worker_options.lim.head=bilinear,worker_options.lim.pool=10' \
  --variant 'disc:worker_options.gim.negatives=batch,worker_options.gim.head=cosine,worker_options.lim.negatives=batch,worker_options.lim.head=cosine,worker_options.lim.pool=10' \
  --variant 'rand2b:rand_from_batch=true' \
  --variant 'nowav-cos05:drop_workers=["waveform"],worker_options.gim.negatives=batch,worker_options.gim.head=cosine,worker_options.gim.weight=0.05,worker_options.lim.negatives=batch,worker_options.lim.head=cosine,worker_options.lim.pool=10,worker_options.lim.weight=0.05' \
  --drop waveform --drop lps,lps_long --drop lim,gim \
  --tasks fsdd-digit,ravdess-speaker,emodb-phone --distort 'noise:5dB@fsdd-digit,emodb-phone' \
  --eval-data "$SPEECH" --seeds 0 "$@"
