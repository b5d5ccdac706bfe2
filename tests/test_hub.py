"""The Hugging Face Hub: ``Encoder.push_to_hub`` and ``Encoder.from_pretrained("org/name")``.

Offline throughout: pushes go to a stand-in for ``HfApi`` that files the upload into a Hugging
Face cache exactly where a download would put it, and loading runs in a fresh process with
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing at that cache (the variables are read when
huggingface_hub is imported, as for a user).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pase import Encoder

REPO = Path(__file__).resolve().parents[1]


class LocalHub:
    """Stands in for ``huggingface_hub.HfApi``: an upload lands in the Hub cache as a download would."""

    cache: Path
    created: list[str] = []

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def create_repo(self, repo_id: str, private: bool | None = None, exist_ok: bool = False) -> None:
        self.created.append(repo_id)

    def upload_folder(self, *, repo_id: str, folder_path: str, commit_message: str) -> str:
        files = sorted(Path(folder_path).iterdir())
        commit = hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return f"https://huggingface.co/{repo_id}/commit/{commit}"


def _offline_python(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_push_then_load_offline_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf = pytest.importorskip("huggingface_hub")
    LocalHub.cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf, "HfApi", LocalHub)
    encoder = Encoder.from_config("pase+").eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    url = encoder.push_to_hub("someone/pase-plus-test")
    assert "someone/pase-plus-test/commit/" in url and LocalHub.created == ["someone/pase-plus-test"]
    wav = torch.randn(1, 8000)
    torch.save(wav, tmp_path / "wav.pt")
    code = f"""
import json, torch
from pase import Encoder
enc = Encoder.from_pretrained("someone/pase-plus-test")
with torch.no_grad():
    torch.save(enc(torch.load({str(tmp_path / "wav.pt")!r})), {str(tmp_path / "out.pt")!r})
torch.save(enc.state_dict(), {str(tmp_path / "weights.pt")!r})
try:
    Encoder.from_pretrained("someone/never-pushed")
except FileNotFoundError as exc:
    print(json.dumps(str(exc)))
"""
    proc = _offline_python(code, LocalHub.cache)
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        # the weights round-trip bit for bit; the outputs up to float rounding, since the other
        # process may run another number of threads
        for name, value in torch.load(tmp_path / "weights.pt").items():
            torch.testing.assert_close(value, encoder.state_dict()[name], atol=0, rtol=0)
        torch.testing.assert_close(torch.load(tmp_path / "out.pt"), encoder(wav), atol=1e-5, rtol=1e-4)
    message = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "someone/never-pushed" in message and "HF_HUB_OFFLINE" in message


def test_pase_extract_takes_a_hub_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf = pytest.importorskip("huggingface_hub")
    LocalHub.cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf, "HfApi", LocalHub)
    Encoder.from_config("pase").push_to_hub("someone/pase-v1")
    noise = 0.1 * np.random.default_rng(0).standard_normal(4000)
    sf.write(tmp_path / "a.wav", noise.astype(np.float32), 16000)
    code = (
        "import sys; from pase.cli import main; "
        f"sys.exit(main(['extract', {str(tmp_path / 'a.wav')!r}, '--out', {str(tmp_path / 'out')!r}, "
        "'--model', 'someone/pase-v1']))"
    )
    proc = _offline_python(code, LocalHub.cache)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "out" / "a.npy").shape == (25, 100)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import re

    from pase.cli_args import install_hint

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    # the pip command for how pase was installed: `pip install -e '.[hub]'` in a source
    # checkout (as here), `pip install 'pase-speech[hub]'` from a wheel
    hint = re.escape(install_hint("hub")) + "$"
    with pytest.raises(ImportError, match=r"someone/model.*needs the huggingface_hub package: " + hint):
        Encoder.from_pretrained("someone/model")
    with pytest.raises(ImportError, match=hint):
        Encoder.from_config("pase").push_to_hub("someone/model")
    # A missing local folder that does not look like a repo id stays a plain local-path error.
    with pytest.raises(FileNotFoundError, match="not a pretrained encoder directory"):
        Encoder.from_pretrained(tmp_path / "a" / "b" / "c")
