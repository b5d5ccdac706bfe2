#!/usr/bin/env bash
# The model card's full evaluation (issue 12) of a new encoder against mfcc, fbank, random:pase+
# and the packaged pase+ ("old"): every built-in task with the MLP and the linear probe, 3 probe
# seeds, clean and with the test audio under noise 5 dB and reverb; then librispeech-speaker40
# (same grid) and librispeech-asr (clean, noise 5 dB, reverb; ASR_SEEDS probe seeds, default 0:
# one CTC probe costs ~20 min on one core). Features and trained CTC probes are cached, so the
# baselines that an earlier grid measured are read back, and a rerun resumes.
#   bash bench/model_card_eval.sh NEW_ENCODER_DIR [OUT] [THREADS]     (OUT default ~/pase_runs/card_eval)
set -euo pipefail
cd "$(dirname "$0")/.."
NEW="${1:?usage: bench/model_card_eval.sh NEW_ENCODER_DIR [OUT] [THREADS]}"
OUT="${2:-$HOME/pase_runs/card_eval}"
THREADS="${3:-2}"
ASR_SEEDS="${ASR_SEEDS:-0}"
LS="${PASE_LIBRISPEECH:-$HOME/.cache/pase/speech_extra/LibriSpeech}"
PASE="${PASE:-.venv/bin/pase}"
FEATS="mfcc,fbank,random:pase+,pase+,$NEW"
run() {  # run DIR ARGS...: one pase eval call, skipped when DIR/done exists
  local dir="$OUT/$1"; shift
  [ -f "$dir/done" ] && { echo "done before: $dir"; return 0; }
  echo "[$(date +%T)] $dir: pase eval $*"
  local t0; t0=$(date +%s)
  "$PASE" eval "$@" --out "$dir" --num-threads "$THREADS"
  echo "$(( $(date +%s) - t0 )) s" > "$dir/done"
}
for probe in mlp linear; do
  run "builtin/$probe/clean" --task fsdd-digit,ravdess-speaker,ravdess-emotion,emodb-emotion,emodb-phone,librispeech-speaker --features "$FEATS" --probe "$probe"
  for cond in noise:5dB reverb; do
    run "builtin/$probe/${cond//:/_}" --task fsdd-digit,ravdess-speaker,ravdess-emotion,emodb-emotion,emodb-phone,librispeech-speaker --features "$FEATS" --probe "$probe" --distort "$cond"
  done
done
if [ -d "$LS/test-clean" ]; then
  for probe in mlp linear; do
    run "speaker40/$probe/clean" --task librispeech-speaker40 --features "$FEATS" --probe "$probe" --data "$LS"
    for cond in noise:5dB reverb; do
      run "speaker40/$probe/${cond//:/_}" --task librispeech-speaker40 --features "$FEATS" --probe "$probe" --data "$LS" --distort "$cond"
    done
  done
  run asr/clean --task librispeech-asr --features "$FEATS" --seeds "$ASR_SEEDS" --data "$LS"
  for cond in noise:5dB reverb; do
    run "asr/${cond//:/_}" --task librispeech-asr --features "$FEATS" --seeds "$ASR_SEEDS" --data "$LS" --distort "$cond"
  done
else
  echo "model_card_eval: $LS/test-clean not found: LibriSpeech tasks skipped (see ../shared/data/README.md)" >&2
fi
echo "model card evaluation in $OUT (summary.md / summary_asr.md per folder); tables and acceptance counts: python bench/card_tables.py $OUT"
