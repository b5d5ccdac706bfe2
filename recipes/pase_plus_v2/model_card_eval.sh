#!/usr/bin/env bash
# The model card's full evaluation (issue 12) of a new encoder against mfcc, fbank, random:pase+
# and the packaged pase+ ("old"): every built-in task with the MLP and the linear probe, 3 probe
# seeds, clean and with the test audio under noise 5 dB and reverb; then librispeech-speaker40
# (same grid) and librispeech-asr (clean, noise 5 dB, reverb; ASR_SEEDS probe seeds, default 0,1,2;
# ASR_PROBE the CTC probe, default base: about 45 minutes of 2-core CPU per probe; LM an ARPA word
# n-gram to decode with too), and with PARTS "phone" librispeech-phone (same seeds and probe).
# Features and trained CTC probes are cached, and a cell whose folder has a `done` file is skipped,
# so a rerun resumes; an ASR or phone cell's done file names its seeds, probe and LM, and a rerun
# with others redoes it (reusing the probes trained before).
#   bash recipes/pase_plus_v2/model_card_eval.sh NEW_ENCODER_DIR [OUT] [THREADS]     (OUT default ~/pase_runs/card_eval)
# SETS (default "base new") picks the feature sets: "base" = the four baselines, "new" = the new
# encoder, each in its own folder tree (OUT/base/..., OUT/new/...), so the baselines can be measured
# while the new encoder is still training (NEW_ENCODER_DIR may then be "-"). PARTS (default
# "builtin speaker40 asr"; "phone" on request) picks the task groups; two calls with disjoint
# PARTS and THREADS=1 can run side by side. "old" must be measured BEFORE the packaged pase+ is replaced by the new encoder.
# Each finished cell's summary.{json,md} (results.{json,md} where a cell ran one task with one
# feature set, as the new encoder's LibriSpeech cells do) and done file are committed under
# recipes/pase_plus_v2/results/card_eval; on a new machine, copy that tree into OUT first and the finished cells are not run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
NEW="${1:?usage: recipes/pase_plus_v2/model_card_eval.sh NEW_ENCODER_DIR [OUT] [THREADS]}"
OUT="${2:-$HOME/pase_runs/card_eval}"
THREADS="${3:-2}"
SETS="${SETS:-base new}"
PARTS="${PARTS:-builtin speaker40 asr}"
ASR_SEEDS="${ASR_SEEDS:-0,1,2}"
ASR_PROBE="${ASR_PROBE:-base}"
LM="${LM:-}"
NEED=""  # a string the done file must contain for the cell to count as done
LS="${PASE_LIBRISPEECH:-$HOME/.cache/pase/speech_extra/LibriSpeech}"
PASE="${PASE:-.venv/bin/pase}"
BUILTIN="fsdd-digit,ravdess-speaker,ravdess-emotion,emodb-emotion,emodb-phone,librispeech-speaker"
source recipes/malloc_env.sh  # the allocator settings of the v2 training run
has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }
run() {  # run DIR ARGS...: one pase eval call, skipped when DIR/done exists (and contains $NEED)
  local dir="$OUT/$1"; shift
  if [ -f "$dir/done" ] && grep -qF -- "$NEED" "$dir/done"; then echo "done before: $dir"; return 0; fi
  echo "[$(date +%T)] $dir: pase eval $*"
  local t0; t0=$(date +%s)
  "$PASE" eval "$@" --out "$dir" --num-threads "$THREADS"
  echo "$(( $(date +%s) - t0 )) s ($THREADS threads, $(hostname), $(date -u +%FT%TZ))${NEED:+ $NEED}" > "$dir/done"
}
conditions() {  # conditions DIR ARGS...: one cell per test condition (clean, noise 5 dB, reverb)
  local dir="$1"; shift
  run "$dir/clean" "$@"
  for cond in noise:5dB reverb; do
    run "$dir/${cond//:/_}" "$@" --distort "$cond"
  done
}
for set in $SETS; do
  case "$set" in
    base) FEATS="mfcc,fbank,random:pase+,pase+" ;;
    new)
      [ -f "$NEW/config.json" ] || { echo "model_card_eval: $NEW is not an encoder folder (config.json)" >&2; exit 2; }
      FEATS="$NEW" ;;
    *) echo "model_card_eval: unknown set '$set' in SETS (base, new)" >&2; exit 2 ;;
  esac
  if has "$PARTS" builtin; then
    for probe in mlp linear; do
      conditions "$set/builtin/$probe" --task "$BUILTIN" --features "$FEATS" --probe "$probe"
    done
  fi
  if has "$PARTS" speaker40 || has "$PARTS" asr || has "$PARTS" phone; then
    if [ ! -d "$LS/test-clean" ]; then
      echo "model_card_eval: $LS/test-clean not found: LibriSpeech tasks skipped (see ../shared/data/README.md)" >&2
      continue
    fi
  fi
  if has "$PARTS" speaker40; then
    for probe in mlp linear; do
      conditions "$set/speaker40/$probe" --task librispeech-speaker40 --features "$FEATS" --probe "$probe" --data "$LS"
    done
  fi
  if has "$PARTS" asr; then
    NEED="seeds $ASR_SEEDS; probe $ASR_PROBE;${LM:+ lm $(basename "$LM");}"
    conditions "$set/asr" --task librispeech-asr --features "$FEATS" --seeds "$ASR_SEEDS" --data "$LS" \
      --asr-probe "$ASR_PROBE" ${LM:+--lm "$LM"}
    NEED=""
  fi
  if has "$PARTS" phone; then
    NEED="seeds $ASR_SEEDS; probe $ASR_PROBE;"
    conditions "$set/phone" --task librispeech-phone --features "$FEATS" --seeds "$ASR_SEEDS" --data "$LS" \
      --asr-probe "$ASR_PROBE"
    NEED=""
  fi
done
echo "model card evaluation in $OUT (summary.md / summary_asr.md, or results.md, per folder); tables and acceptance counts: python recipes/pase_plus_v2/card_tables.py $OUT"
