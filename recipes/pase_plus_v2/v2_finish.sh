#!/usr/bin/env bash
# Issue 12's last stretch, in one resumable call: wait until the v2 run is finished (RUN/encoder
# written and its `pase train` gone), export the encoder as fp16 (what would ship) to RUN_final,
# then run the new encoder's half of the model card grid as two 1-thread jobs side by side (the
# LibriSpeech tasks; beside them the built-in tasks, which decide the ship, then the final --full
# curve point).
# Every part skips what it finished before, so after an interruption run it again.
#   bash recipes/pase_plus_v2/v2_finish.sh [RUN] [EVAL_OUT]     (default ~/pase_runs/v2, ~/pase_runs/card_eval)
# Then: python recipes/pase_plus_v2/card_tables.py EVAL_OUT, the model card, and the ship decision.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/v2}"
EVAL_OUT="${2:-$HOME/pase_runs/card_eval}"
FINAL="${RUN%/}_final"
PASE="${PASE:-.venv/bin/pase}"
PYTHON="${PYTHON:-.venv/bin/python}"
while [ ! -f "$RUN/encoder/config.json" ] || pgrep -f "pase train --out $RUN" > /dev/null; do
  sleep 30
done
[ -f "$FINAL/config.json" ] || "$PASE" export "$RUN/encoder" "$FINAL" --dtype float16
SETS=new PARTS="speaker40 asr" bash recipes/pase_plus_v2/model_card_eval.sh "$FINAL" "$EVAL_OUT" 1 > "$EVAL_OUT.new_librispeech.log" 2>&1 &
librispeech=$!
SETS=new PARTS=builtin bash recipes/pase_plus_v2/model_card_eval.sh "$FINAL" "$EVAL_OUT" 1
source recipes/malloc_env.sh
"$PYTHON" recipes/pase_plus_v2/v2_curve.py --run "$RUN" --full --num-threads 1
wait "$librispeech" || { echo "v2_finish: the LibriSpeech half failed, see $EVAL_OUT.new_librispeech.log" >&2; exit 1; }
echo "v2_finish: done; tables: $PYTHON recipes/pase_plus_v2/card_tables.py $EVAL_OUT"
