"""Saving and loading encoders: ``save_pretrained`` / ``from_pretrained`` (safetensors +
``config.json``), the packaged pretrained weights, and checkpoints of the original PASE code.

Loading never executes code: weights come from safetensors, and original checkpoints are read
with ``torch.load(weights_only=True)``. Every saved directory records the SHA-256 of its weights
file, and loading verifies it, so a tampered or truncated file is refused with a clear message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import typing as tp
from pathlib import Path

import torch

from pase.audio import write_atomic
from pase.encoder import Encoder, EncoderConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "pase-encoder"
#: Packaged weights, resolved by name: ``from_pretrained("pase+")``.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
PACKAGED = {"pase+": "pase_plus", "pase_plus": "pase_plus"}


class CheckpointError(ValueError):
    """A weights file or directory that cannot be loaded; the message names the file."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_pretrained(
    encoder: Encoder, directory: str | os.PathLike[str], dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` atomically.

    ``dtype=torch.float16`` halves the file (the packaged weights are stored so); running
    statistics and counters keep their own dtype and floating tensors are restored to float32 on load.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in encoder.state_dict().items()
    }
    weights = directory / WEIGHTS_NAME
    write_atomic(weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT,
        "config": encoder.config.to_dict(),
        "weights": WEIGHTS_NAME,
        "sha256": sha256_file(weights),
        "dtype": str(dtype).replace("torch.", ""),
    }
    write_atomic(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return directory


def resolve_pretrained(name_or_dir: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A directory for a packaged name (``"pase+"``), a local directory, or a Hugging Face Hub repo
    id (``"org/name"``, downloaded or taken from the Hub cache); clear error otherwise."""
    key = str(name_or_dir)
    if key in PACKAGED and not Path(key).exists():
        path = PRETRAINED_DIR / PACKAGED[key]
        if not (path / CONFIG_NAME).exists():
            raise FileNotFoundError(
                f"no packaged weights for {key!r} in this installation ({path} is missing). "
                "Train an encoder with `pase train` and pass its RUN/encoder directory, "
                "or use Encoder.from_config('pase+') for a random-init encoder."
            )
        return path
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if not path.exists() and _REPO_ID.fullmatch(key):
        return download_from_hub(key, revision=revision)
    raise FileNotFoundError(
        f"{path}: not a pretrained encoder directory (expected {CONFIG_NAME} and {WEIGHTS_NAME}); "
        f"packaged names are {sorted(PACKAGED)}; Hugging Face Hub repos are named 'org/name'"
    )


# --------------------------------------------------------------------------------------------
# The Hugging Face Hub (optional extra: pip install 'pase-speech[hub]')
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_EXTRA_HINT = "pip install 'pase-speech[hub]'"


def _import_hub(what: str) -> tp.Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"{what} needs the huggingface_hub package: {HUB_EXTRA_HINT}") from None
    return huggingface_hub


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of ``repo_id`` (config + weights only), downloaded if needed.

    Offline (``HF_HUB_OFFLINE=1``) it comes from the Hub cache. Never executes code: the files are
    then read by :func:`load_pretrained` like any local directory, checksum included.
    """
    hf = _import_hub(f"loading {repo_id!r} from the Hugging Face Hub")
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        local = hf.snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}: not a local directory, not in the Hugging Face cache, and the Hub cannot be "
            "reached (offline: HF_HUB_OFFLINE is set or there is no network). Download it once "
            "online, or pass a local directory written by save_pretrained."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise FileNotFoundError(
            f"{repo_id}: not a local directory, and the Hugging Face Hub has no such model "
            f"repository{'' if revision is None else f' at revision {revision!r}'} ({type(exc).__name__})"
        ) from None
    return Path(local)


def push_to_hub(
    encoder: Encoder,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload PASE encoder",
) -> str:
    """Upload ``encoder`` to the Hub as ``config.json`` + ``model.safetensors`` (creating the
    repository if needed); returns the commit URL. ``Encoder.from_pretrained(repo_id)`` loads it."""
    import tempfile

    hf = _import_hub(f"pushing to {repo_id!r} on the Hugging Face Hub")
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(encoder, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def load_pretrained(
    name_or_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu", revision: str | None = None
) -> Encoder:
    """Build an encoder from a directory written by :func:`save_pretrained`, a packaged name, or a
    Hugging Face Hub repo id (``revision``: a branch, tag or commit of that repo)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_pretrained(name_or_dir, revision=revision)
    cfg_path = directory / CONFIG_NAME
    try:
        meta = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path}: missing; not a pretrained encoder directory") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} config (missing 'format'/'config')")
    weights = directory / meta.get("weights", WEIGHTS_NAME)
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights file missing")
    expected = meta.get("sha256")
    if expected is not None:
        actual = sha256_file(weights)
        if actual != expected:
            raise CheckpointError(
                f"{weights}: checksum mismatch (sha256 {actual[:16]}..., config.json expects "
                f"{expected[:16]}...): the file is corrupted, truncated or was modified"
            )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors ({exc})") from None
    try:
        encoder = Encoder(EncoderConfig.from_dict(meta["config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: invalid encoder config ({exc})") from None
    load_state(encoder, state, str(weights))
    return encoder.to(map_location).eval()


def load_state(encoder: Encoder, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` (our names) into ``encoder``; any missing, extra or misshapen tensor is a
    :class:`CheckpointError` naming ``source``, never a partial load."""
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the {encoder.config.rnn}/{encoder.embedding_dim}-d "
            f"architecture (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


# --------------------------------------------------------------------------------------------
# The original code's checkpoints (FE_e199.ckpt and friends)
#: Original key -> ours. Everything else already has the original's name.
_ORIGINAL_RENAMES = {
    "rnn.layers.0.linear.weight": "rnn.rnn.linear.weight",
    "rnn.layers.0.linear.bias": "rnn.rnn.linear.bias",
}


def original_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict in the original's 78-key PASE+ layout to ours."""
    return {_ORIGINAL_RENAMES.get(k, k): v for k, v in state.items()}


def ours_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`original_to_ours` (used to test the loader)."""
    inverse = {v: k for k, v in _ORIGINAL_RENAMES.items()}
    return {inverse.get(k, k): v for k, v in state.items()}


def _unwrap(obj: tp.Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{source}: not a state dict (expected a flat dict of tensors or {{'state_dict': ...}})"
        )
    # Checkpoints saved from a DataParallel/DDP wrapper carry a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_original(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], EncoderConfig]:
    """Read an original PASE/PASE+ checkpoint without executing code: (state in our names, config).

    The architecture (PASE+ with QRNN, or PASE v1) is inferred from the keys.
    """
    source = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{source}: no such checkpoint file")
    with open(source, "rb") as fh:
        magic = fh.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # a zip archive (torch.save) or a legacy pickle
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "Weights only load failed" in str(exc):
            problem = "it holds Python objects besides tensors, which loading would execute; refused"
        raise CheckpointError(f"{source}: cannot read as a PyTorch checkpoint ({problem})") from None
    state = original_to_ours(_unwrap(obj, source))
    if "W.weight" not in state:
        raise CheckpointError(f"{source}: no 'W.weight' key; not a PASE encoder checkpoint")
    has_rnn = "rnn.rnn.linear.weight" in state
    if any(state[k].dim() < 2 for k in ("W.weight", "rnn.rnn.linear.weight") if k in state):
        raise CheckpointError(f"{source}: weight shapes do not fit a PASE encoder")
    cfg = EncoderConfig(
        rnn="qrnn" if has_rnn else "none",
        dense_skips=any(k.startswith("denseskips.") for k in state),
        embedding_dim=int(state["W.weight"].shape[0]),
        rnn_hidden=int(state["rnn.rnn.linear.weight"].shape[0] // 3) if has_rnn else 512,
    )
    return state, cfg


def load_original(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Encoder:
    """Load a PASE+ checkpoint of the original code: 78 keys, flat or ``{"step", "state_dict"}``.

    The architecture (PASE+ with QRNN, or PASE v1) is inferred from the keys.
    """
    state, cfg = read_original(path)
    encoder = Encoder(cfg)
    load_state(encoder, state, str(path))
    return encoder.to(map_location).eval()


def register_cli(sub: tp.Any) -> None:
    p = sub.add_parser(
        "convert-original",
        help="convert a checkpoint of the original PASE code (e.g. FE_e199.ckpt) to a pretrained directory",
        description="Read an original PASE/PASE+ checkpoint (never executing code) and write "
        "model.safetensors + config.json, loadable with Encoder.from_pretrained(OUT_DIR).",
    )
    p.add_argument("ckpt", help="original checkpoint file")
    p.add_argument("out_dir", help="output directory")
    p.set_defaults(func=_convert_main)


def _convert_main(args: argparse.Namespace) -> int:
    import sys

    try:
        encoder = load_original(args.ckpt)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"pase convert-original: {exc}", file=sys.stderr)
        return 1
    out = save_pretrained(encoder, args.out_dir)
    n = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {out} ({encoder.config.rnn}, {encoder.embedding_dim}-d, {n:,} parameters)")
    return 0
