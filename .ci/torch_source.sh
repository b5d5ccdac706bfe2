#!/usr/bin/env bash
# The pip arguments that install torch for this machine (on stdout; the reason on stderr).
# The Makefile's set-up uses it; so does CI, through `make test`.
#   TORCH_INDEX set              -> torch from that index, nothing probed
#   nvidia-smi works             -> the default build (CUDA wheels on Linux)
#   PyTorch's CPU index answers  -> the CPU-only build from it (a few hundred MB, not GBs of CUDA)
#   otherwise                    -> the plain pinned torch from pip's configured indexes and
#                                   find-links (a local CPU wheel, or the default build)
# The probe waits at most PASE_PROBE_TIMEOUT seconds (5), so an offline machine loses no minutes.
set -euo pipefail
version=${TORCH_VERSION:-2.13.0}
cpu_index=${PASE_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
python=${PYTHON:-python3}

reachable() {
    "$python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=float(sys.argv[2])).close()' \
        "$1" "${PASE_PROBE_TIMEOUT:-5}" >/dev/null 2>&1
}

if [ -n "${TORCH_INDEX:-}" ]; then
    echo "torch $version: from TORCH_INDEX=$TORCH_INDEX" >&2
    echo "torch==$version --index-url $TORCH_INDEX"
elif nvidia-smi >/dev/null 2>&1; then
    echo "torch $version: nvidia-smi found a GPU, installing the default (CUDA) build" >&2
    echo "torch==$version"
elif reachable "$cpu_index"; then
    echo "torch $version: no GPU (no working nvidia-smi), installing the CPU build from $cpu_index" >&2
    echo "torch==$version --index-url $cpu_index"
else
    echo "torch $version: no GPU and $cpu_index unreachable, installing torch==$version from pip's configured sources" >&2
    echo "torch==$version"
fi
