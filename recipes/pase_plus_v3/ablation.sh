#!/usr/bin/env bash
# The ablation that chooses PASE+ v3's recipe. Every variant continues the packaged v2 encoder
# (`init=pase+`, fresh workers that first fit its frozen features for 100 steps) for 600 steps of
# batch 4 on 2 threads, one poly decay from the base learning rates, same seed and held-out
# speakers; then MLP probes (3 seeds) on the tasks that decide, clean and with the test audio
# reverberated or at 5 dB noise. The base (`all`) is `pase+cpu` on v3's data: pretrain.csv +
# pretrain_more.csv + the bundle's train-clean-100 (16.5 h, ~2 580 speakers).
#   bash recipes/pase_plus_v3/ablation.sh [OUT [EXTRA pase ablate OPTIONS]]   (default ~/pase_runs/v3_ablation)
# Rerun to resume (finished variants are read back, an interrupted one continues from its checkpoint).
# Why a continuation and not from scratch: v3 itself continues v2 (the issue's default), and 600
# steps from scratch leave an encoder far from any 10 000-step model, so its differences say
# little about v3's.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-$HOME/pase_runs/v3_ablation}"
shift || true
EXTRA="${PASE_EXTRA_SPEECH:-$HOME/.cache/pase/speech_extra}"
SPEECH="${PASE_SPEECH_DIR:-../shared/speech}"
PASE="${PASE:-.venv/bin/pase}"
THREADS="${THREADS:-2}"
for f in "$EXTRA/pretrain.csv" "$EXTRA/pretrain_more.csv" "$SPEECH/librispeech/train-clean-100"; do
  [ -e "$f" ] || { echo "v3 ablation: $f not found (see ../shared/data/README.md)" >&2; exit 2; }
done
# Rows committed in results/ablation_partial.json (a machine can be replaced between sessions)
# are put back as finished variants, so only the missing ones train again.
PY="$(dirname "$PASE")/python"; [ -x "$PY" ] || PY=python3
"$PY" - "$OUT" recipes/pase_plus_v3/results/ablation_partial.json <<'EOF'
import json, os, sys
out, committed = sys.argv[1], sys.argv[2]
for row in json.load(open(committed)) if os.path.exists(committed) else []:
    done = os.path.join(out, "variants", row["variant"], "done.json")
    if not os.path.exists(done):
        os.makedirs(os.path.dirname(done), exist_ok=True)
        with open(done + ".tmp", "w") as f:
            json.dump(row, f, indent=2)
        os.replace(done + ".tmp", done)
        print(f"v3 ablation: {row['variant']}: row read back from {committed}", file=sys.stderr)
EOF
OLD_DATA="[\"$EXTRA/pretrain.csv\",\"$SPEECH/librispeech/train-clean-100\"]"
source recipes/malloc_env.sh  # glibc malloc keeps its memory: 23 % less wall time, same losses
exec "$PASE" ablate --preset pase+cpu \
  --data "$EXTRA/pretrain.csv" "$EXTRA/pretrain_more.csv" "$SPEECH/librispeech/train-clean-100" \
  --out "$OUT" \
  --set "init=pase+,freeze_encoder_steps=100,batch_size=4,num_threads=$THREADS,valid_every=200,ckpt_every=50,valid_batches=32" \
  --max-steps 600 \
  --variant 'bilinear:worker_options.lim.head=bilinear,worker_options.lim.negatives=batch,worker_options.lim.pool=20,worker_options.gim.head=bilinear,worker_options.gim.negatives=batch' \
  --variant 'noreverb:distortions.reverb_p=0' \
  --variant 'distctxt:distort_context=true' \
  --variant 'lps512:worker_options.lps.target=lps_512,worker_options.lps_long.target=lps_long_512' \
  --variant 'rand2b:rand_from_batch=true' \
  --variant "olddata:data=$OLD_DATA" \
  --variant 'v3mix:distort_context=true,worker_options.lps.target=lps_512,worker_options.lps_long.target=lps_long_512' \
  --variant 'ctxtspk:ctxt_source=speaker' \
  --tasks ravdess-speaker,emodb-emotion,librispeech-speaker40,emodb-phone,fsdd-digit \
  --distort 'reverb@ravdess-speaker,fsdd-digit,librispeech-speaker40' \
  --distort 'noise:5dB@ravdess-speaker,fsdd-digit' \
  --eval-data "$SPEECH" --seeds 0,1,2 "$@"
