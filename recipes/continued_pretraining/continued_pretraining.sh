#!/usr/bin/env bash
# Continued pretraining, measured (issue 11): the packaged PASE+ adapted to LibriSpeech
# train-clean-5 with the pase+cpu recipe (`pase train --init pase+`: fresh workers, target
# statistics fitted on the new audio), then 40-way speaker ID on test-clean before and after
# (other speakers than train-clean-5's, so the adaptation never sees a test speaker).
#   bash recipes/continued_pretraining/continued_pretraining.sh [RUN] [THREADS]     (default ~/pase_runs/init_ls, 1 thread)
# STEPS (default 300) sets the budget; rerunning resumes an interrupted run, or (once `pase train`
# has written RUN/encoder at its last step) only evaluates again.
# Writes RUN/encoder (save_pretrained), RUN/eval/summary.md and RUN/before_after.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/init_ls}"
THREADS="${2:-1}"
STEPS="${STEPS:-300}"
LS="${PASE_LIBRISPEECH:-$HOME/.cache/pase/speech_extra/LibriSpeech}"
PASE="${PASE:-.venv/bin/pase}"
[ -d "$LS/train-clean-5" ] || { echo "continued_pretraining: $LS/train-clean-5 not found (see ../shared/data/README.md)" >&2; exit 2; }
start=$(date +%s)
if [ -f "$RUN/encoder/config.json" ]; then
  echo "continued_pretraining: $RUN finished before (its encoder is there): evaluating only"
elif [ -f "$RUN/checkpoint.pt" ]; then
  "$PASE" train --out "$RUN" --resume --num-threads "$THREADS"
else
  "$PASE" train --init pase+ --preset pase+cpu --data "$LS/train-clean-5" --out "$RUN" \
    --max-steps "$STEPS" --num-threads "$THREADS" --seed 0 --ckpt-every 50 --valid-every 100 --valid-batches 32
fi
train_s=$(( $(date +%s) - start ))  # pase train saved RUN/encoder at its last step
"$PASE" eval --task librispeech-speaker40 --features "pase+,$RUN/encoder" --seeds 0,1,2 \
  --data "$LS" --out "$RUN/eval" --num-threads "$THREADS"
python3 - "$RUN" "$train_s" <<'PY'
import json, sys
from pathlib import Path
run, train_s = Path(sys.argv[1]), int(sys.argv[2])
rows = {}
for f in sorted((run / "eval").rglob("results.json")):
    r = json.loads(f.read_text())
    rows[r["features"]] = {"accuracy": r["accuracy"], "accuracy_std": r.get("accuracy_std"), "f1": r.get("f1")}
out = {"task": "librispeech-speaker40", "train_seconds_this_call": train_s, "results": rows}
(run / "before_after.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
PY
