"""How ``make`` chooses the torch build (``.ci/torch_source.sh``), without the network: a fake
``nvidia-smi`` on PATH and a local HTTP server standing in for PyTorch's CPU index."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "torch_source.sh"
UNREACHABLE = "http://127.0.0.1:9/whl/cpu"  # the discard port: refused at once


@pytest.fixture
def cpu_index(tmp_path: Path) -> tp.Iterator[str]:
    """A local index with a ``torch/`` page, as PyTorch's CPU wheel index has."""
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu.whl</a>\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def choose(tmp_path: Path, gpu: bool, index: str, **env: str) -> tuple[str, str]:
    """(pip arguments, reason) with a fake ``nvidia-smi`` that works or fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexit {0 if gpu else 9}\n")
    fake.chmod(0o755)
    environ = {
        **{k: v for k, v in os.environ.items() if k != "TORCH_INDEX"},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "PASE_TORCH_CPU_INDEX": index,
        **env,
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.strip()


def test_gpu_machine_gets_the_default_cuda_build(tmp_path: Path, cpu_index: str) -> None:
    args, why = choose(tmp_path, gpu=True, index=cpu_index)
    assert args == "torch==2.13.0" and "CUDA" in why


def test_cpu_machine_gets_the_cpu_index_when_it_answers(tmp_path: Path, cpu_index: str) -> None:
    args, why = choose(tmp_path, gpu=False, index=cpu_index)
    assert args == f"torch==2.13.0 --index-url {cpu_index}" and "CPU build" in why


def test_offline_cpu_machine_falls_back_to_the_pinned_torch_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    args, why = choose(tmp_path, gpu=False, index=UNREACHABLE)
    assert args == "torch==2.13.0" and "unreachable" in why
    assert time.monotonic() - start < 20


def test_torch_index_wins_and_nothing_is_probed(tmp_path: Path) -> None:
    args, _ = choose(tmp_path, gpu=True, index=UNREACHABLE, TORCH_INDEX="https://example.org/whl")
    assert args == "torch==2.13.0 --index-url https://example.org/whl"
