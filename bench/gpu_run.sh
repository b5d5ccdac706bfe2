#!/usr/bin/env bash
# One call on a lent GPU machine: CUDA tests, extraction and training throughput (bf16 and fp32,
# QRNN scan vs loop), then the reference PASE+ recipe (bf16) for the minutes left, on the compact
# speech of bench/pack_speech.py. Everything it needs is built on CPU first; it writes at most 8
# files to $OUT (the device tool brings back 8 files of <= 16 MiB, two folders deep):
#   tests.txt  extract.json  train_bench.json  metrics.csv  valid.csv
#   encoder/model.safetensors (fp16)  encoder/config.json  summary.json
#
# Usage, from the repository root:
#   python bench/pack_speech.py --data PRETRAIN.csv ../shared/speech/librispeech/train-clean-100
#   bash bench/gpu_run.sh --dry-run        # CPU, tiny config, about a minute: CI runs this
#   OUT=/path bash bench/gpu_run.sh        # on the GPU machine (gpu_data/ and .whl/ beside it)
# Environment: OUT (default out/gpu), PASE_GPU_DEADLINE (seconds for the whole script, default
# 540: the device tool's limit per command is 600), PASE_GPU_DATA (default gpu_data), PYTHON,
# PASE_GPU_BATCH (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-out/gpu}"
DATA="${PASE_GPU_DATA:-gpu_data}"
DEADLINE="${PASE_GPU_DEADLINE:-540}"
BATCH="${PASE_GPU_BATCH:-32}"
PY="${PYTHON:-python3}"
START=$(date +%s)
mkdir -p "$OUT"
log() { echo "[gpu_run +$(($(date +%s) - START))s] $*"; }
left() { echo $((DEADLINE - ($(date +%s) - START))); }

# The GPU image has torch but not soundfile/soxr: install the carried wheels (README.md, "Train on a GPU machine in one call").
if ! "$PY" -c "import soundfile, soxr" 2>/dev/null; then
  [ -d .whl ] || { echo "gpu_run: soundfile/soxr missing and no .whl/ folder of wheels" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pase-site .whl/*.whl
  export PYTHONPATH="/tmp/pase-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pase-gpu.XXXXXX")"
DEVICE=cuda
if [ $DRY = 1 ]; then DEVICE=cpu; BATCH=2; fi
# TrainConfig fields over the pase+ preset: distortions from the packed noise clips and rooms (no
# pyroomacoustics and no ../shared there); the dry run adds a tiny encoder and 0.2 s chunks.
recipe() {  # recipe QRNN_IMPL FILE
  "$PY" - "$1" "$2" "$DRY" "$DATA" "$WORK" <<'PY'
import json, sys
impl, path, dry, data, work = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5]
cfg = {
    "encoder": {"qrnn_impl": impl},
    "distortions": {"n_sim_rooms": 0, "rir_dir": f"{data}/rirs", "noise_dir": f"{data}/noise"},
    "cache_dir": f"{work}/cache", "valid_fraction": 0.05, "stats_batches": 8,
}
if dry:
    cfg["encoder"].update(channels=[8, 8, 8, 16, 16, 16, 16], rnn_hidden=16, embedding_dim=16)
    cfg.update(chunk_size=3200, min_seconds=0.2, stats_batches=1, valid_batches=1)
open(path, "w").write(json.dumps(cfg))
PY
}
[ -f "$DATA/speech.csv" ] || { echo "gpu_run: no $DATA/speech.csv: run bench/pack_speech.py first" >&2; exit 2; }

status=()
step() {  # step NAME TIMEOUT CMD...: run, record the exit code, never stop the script
  local name=$1 limit=$2
  shift 2
  log "$name (limit ${limit}s)"
  local rc=0
  timeout "$limit" "$@" || rc=$?
  status+=("\"$name\": $rc")
  log "$name: exit $rc"
}

if [ $DRY = 1 ]; then
  step tests 60 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_qrnn.py -k "cuda or bf16" -o addopts=""
else
  step tests 120 bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider -k 'cuda or bf16' tests 2>&1 | tee '$OUT/tests.txt' | tail -5"
  step extract 90 "$PY" bench/extract.py --cuda-only --repeats 2 --out "$OUT/extract.json"
fi
[ -f "$OUT/tests.txt" ] || echo "dry run: CUDA tests not run on CPU" >"$OUT/tests.txt"

# Training throughput: bf16 and fp32 with the scan QRNN, bf16 with the reference loop.
for variant in bf16:scan fp32:scan bf16:loop; do
  prec=${variant%%:*}
  impl=${variant##*:}
  recipe "$impl" "$WORK/bench_$impl.json"
  step "train_bench_${prec}_${impl}" 100 "$PY" bench/train.py --devices "$DEVICE" --cpu-batch "$BATCH" \
    --cuda-batch "$BATCH" --precision "$prec" --steps 3 --repeats 1 --data "$DATA/speech.csv" \
    --config "$WORK/bench_$impl.json" --out "$WORK/train_${prec}_${impl}.json"
done
"$PY" - "$WORK" "$OUT/train_bench.json" <<'PY'
import json, sys
from pathlib import Path
rows = []
for p in sorted(Path(sys.argv[1]).glob("train_*_*.json")):
    rows += json.loads(p.read_text())["rows"]
Path(sys.argv[2]).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
PY

# The reference recipe for the time that is left (60 s kept for export and summary).
budget=$(($(left) - 60))
[ $DRY = 1 ] && budget=5
if [ "$budget" -lt 5 ]; then
  log "no time left to train ($budget s)"
else
  precision=bf16
  [ $DRY = 1 ] && precision=fp32
  recipe scan "$WORK/recipe.json"
  step train $((budget + 120)) "$PY" -m pase.cli train --preset pase+ --config "$WORK/recipe.json" \
    --data "$DATA/speech.csv" --out "$WORK/run" --device "$DEVICE" --precision "$precision" \
    --batch-size "$BATCH" --max-seconds "$budget" --valid-every 1000000 --ckpt-every 1000000 \
    --log-every 10 --num-threads 8
fi
if [ -f "$WORK/run/encoder/config.json" ]; then  # a finished run: its encoder, stored again as fp16
  "$PY" -m pase.cli export "$WORK/run/encoder" "$OUT/encoder" --dtype float16
  cp "$WORK/run/metrics.csv" "$WORK/run/valid.csv" "$OUT/"
fi

IFS=,
summary="{\"dry_run\": $DRY, \"device\": \"$DEVICE\", \"batch\": $BATCH, \"train_seconds_budget\": $budget, \"seconds\": $(($(date +%s) - START)), \"exit_codes\": {${status[*]}}}"
unset IFS
"$PY" - "$summary" "$DATA/manifest.json" "$OUT/summary.json" <<'PY'
import json, sys
from pathlib import Path
summary = json.loads(sys.argv[1])
manifest = Path(sys.argv[2])
summary["data"] = json.loads(manifest.read_text()) if manifest.exists() else None
try:
    import torch
    summary["torch"] = torch.__version__
    summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except ImportError:
    pass
Path(sys.argv[3]).write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary))
PY
rm -rf "$WORK"
log "done; files in $OUT: $(cd "$OUT" && find . -type f | wc -l)"
