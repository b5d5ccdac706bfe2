#!/usr/bin/env bash
# Commit-sized warm start of the v2 run (issue 12): its encoder at the current checkpoint, fp16
# safetensors (~16 MB) + config.json + step.txt + leg.json (the leg's first step and its seconds of
# training so far: the model card's wall time survives the run folder), in checkpoints/warm_start
# (the one warm-start path recipes/README.md allows). Run it at the end of a session and commit the
# folder: if the machine is replaced, WARM=checkpoints/warm_start recipes/pase_plus_v2/pretrain_v2.sh
# continues from it.
#   bash recipes/pase_plus_v2/snapshot_v2.sh [RUN] [DEST]        (default ~/pase_runs/v2, checkpoints/warm_start)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN="${1:-$HOME/pase_runs/v2}"
DEST="${2:-checkpoints/warm_start}"
PY="${PY:-.venv/bin/python}"
"$PY" - "$RUN" "$DEST" <<'PY'
import json, shutil, sys, tempfile
from pathlib import Path

import torch

from pase.export import export_encoder

run, dest = Path(sys.argv[1]), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    snapshot = Path(tmp) / "checkpoint.pt"
    shutil.copyfile(run / "checkpoint.pt", snapshot)  # pase train writes it atomically
    staged, step = export_encoder(snapshot, Path(tmp) / "staged", dtype="float16")
    (staged / "step.txt").write_text(f"{step}\n")
    state = torch.load(snapshot, map_location="cpu", weights_only=True)
    config = json.loads(state["config"])
    leg = {"step": step, "leg_start_step": config.get("start_step", 0), "train_seconds": state["train_seconds"]}
    (staged / "leg.json").write_text(json.dumps(leg, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, dest)
print(f"{dest}: the encoder of {run} at step {step} (fp16)")
PY
