#!/usr/bin/env bash
# Issue 28's last stretch after the v3 run, with issue 32's robust-ASR grid, in one resumable call:
#  1. wait until RUN/encoder is written and the run's `pase train` is gone; export the fp16 encoder
#     (what would ship) to RUN_final;
#  2. the last curve point (recipes/pase_plus_v3/curve.py; a step probed before is skipped);
#  3. v3's half of the model card grid: the 7 tasks x clean / noise 5 dB / reverb, MLP and linear
#     probes, 3 seeds (the baselines' cells are the v2 card's, committed);
#  4. librispeech-asr (greedy and with the word n-gram LM) and librispeech-phone, clean / noise 5 dB /
#     reverb, ASR_SEEDS probe seeds, for mfcc, fbank, random:pase+, the packaged pase+ (v2: this part
#     must run BEFORE v3 replaces it) and v3. The baselines' half needs no v3: start it early with
#       SETS=base PARTS="asr phone" ASR_SEEDS=0,1 LM=... bash recipes/pase_plus_v2/model_card_eval.sh - CARD
#  5. the card's acceptance checks (recipes/pase_plus_v3/card.py) and the robust-ASR table
#     (recipes/asr_probe/table.py).
# Every cell with a done file is skipped, so after an interruption run it again.
#   bash recipes/pase_plus_v3/finish.sh [RUN] [CARD]       (default ~/pase_runs/v3, ~/pase_runs/v3_card)
# Then: the fine-tuning table, the model card, the ship decision.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/v3}"
CARD="${2:-$HOME/pase_runs/v3_card}"
FINAL="${RUN%/}_final"
PASE="${PASE:-.venv/bin/pase}"
PYTHON="${PYTHON:-.venv/bin/python}"
LM="${LM:-$HOME/.cache/pase/lm/tc5-3gram.arpa}"
ASR_SEEDS="${ASR_SEEDS:-0,1}"
[ -f "$LM" ] || { echo "finish: $LM not found (build it as recipes/asr_probe/README.md says)" >&2; exit 2; }
while [ ! -f "$RUN/encoder/config.json" ] || pgrep -f "pase train .*--out $RUN( |\$)" > /dev/null; do
  sleep 30
done
[ -f "$FINAL/config.json" ] || "$PASE" export "$RUN/encoder" "$FINAL" --dtype float16
"$PYTHON" recipes/pase_plus_v3/curve.py --run "$RUN" --num-threads 2
SETS=new PARTS="builtin speaker40" bash recipes/pase_plus_v2/model_card_eval.sh "$FINAL" "$CARD" 2
SETS="base new" PARTS="asr phone" ASR_SEEDS="$ASR_SEEDS" LM="$LM" \
  bash recipes/pase_plus_v2/model_card_eval.sh "$FINAL" "$CARD" 2
"$PYTHON" recipes/pase_plus_v3/card.py "$CARD"
"$PYTHON" recipes/asr_probe/table.py "$CARD"
echo "finish: done; the card's checks in recipes/pase_plus_v3/results/card/card.md, the ASR table in recipes/asr_probe/results/table/table.md"
