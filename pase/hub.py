"""Encoder weights in and out: ``save_pretrained`` / ``from_pretrained`` directories (safetensors +
``config.json``), the packaged pretrained weights, the Hugging Face Hub, and checkpoints of the
original PASE code.

This module deals in encoder configs (``EncoderConfig.to_dict()`` dicts) and state dicts only, so
it never imports :mod:`pase.encoder`; :class:`pase.Encoder`'s classmethods build the network.

Loading never executes code: weights come from safetensors, and original checkpoints are read
with ``torch.load(weights_only=True)``. Every saved directory records the SHA-256 of its weights
file, and loading verifies it, so a tampered or truncated file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing as tp
from pathlib import Path

import torch

from pase.audio import write_atomic

#: A state dict: tensor name -> tensor.
State = dict[str, torch.Tensor]


class Pretrained(tp.NamedTuple):
    """What a pretrained directory holds, read and verified by :func:`read_pretrained`."""

    state: State
    #: ``EncoderConfig.to_dict()`` of the saved encoder.
    config: dict[str, tp.Any]
    config_path: Path
    weights_path: Path


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
    state: tp.Mapping[str, torch.Tensor],
    config: dict[str, tp.Any],
    directory: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write an encoder's ``state`` (its ``state_dict()``) and ``config`` (``EncoderConfig.to_dict()``)
    as ``directory/model.safetensors`` and ``directory/config.json``, atomically.

    ``dtype=torch.float16`` halves the file (the packaged weights are stored so); running
    statistics and counters keep their own dtype and floating tensors are restored to float32 on load.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }
    weights = directory / WEIGHTS_NAME
    write_atomic(weights, lambda tmp: save_file(stored, tmp, metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT,
        "config": config,
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
    if not path.exists() and is_repo_id(key):
        return download_from_hub(key, revision=revision)
    raise FileNotFoundError(
        f"{path}: not a pretrained encoder directory (expected {CONFIG_NAME} and {WEIGHTS_NAME}); "
        f"packaged names are {sorted(PACKAGED)}; Hugging Face Hub repos are named 'org/name'"
    )


# --------------------------------------------------------------------------------------------
# The Hugging Face Hub (optional extra: pip install 'pase-speech[hub]')
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is spelled like a Hub repository id (``org/name``)."""
    return _REPO_ID.fullmatch(text) is not None


def _import_hub(what: str) -> tp.Any:
    try:
        import huggingface_hub
    except ImportError:
        from pase.cli_args import install_hint  # the pip command for how pase was installed

        raise ImportError(f"{what} needs the huggingface_hub package: {install_hint('hub')}") from None
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
    state: tp.Mapping[str, torch.Tensor],
    config: dict[str, tp.Any],
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload PASE encoder",
) -> str:
    """Upload an encoder's ``state`` and ``config`` to the Hub as ``config.json`` +
    ``model.safetensors`` (creating the repository if needed); returns the commit URL.
    ``Encoder.from_pretrained(repo_id)`` loads it."""
    import tempfile

    hf = _import_hub(f"pushing to {repo_id!r} on the Hugging Face Hub")
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(state, config, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


#: The largest ``config.json`` of a pretrained directory read (PASE+'s is under 1 kB).
MAX_CONFIG_BYTES = 1 << 20


def read_pretrained(
    name_or_dir: str | os.PathLike[str],
    revision: str | None = None,
    verify: bool = True,
    weights_limit: tp.Callable[[dict[str, tp.Any]], int] | None = None,
) -> Pretrained:
    """The weights and config of a directory written by :func:`save_pretrained`, a
    packaged name, or a Hugging Face Hub repo id (``revision``: a branch, tag or commit of that
    repo), the weights' checksum verified. The config is checked by ``EncoderConfig.from_dict``
    and the state by :func:`check_state` when the encoder is built.

    The weights must be a regular file inside the directory, of at most ``weights_limit(config)``
    bytes (a ``ValueError`` from it is an invalid config), and ``config.json`` must record their
    SHA-256; ``verify=False`` accepts a directory without one (a mismatch is always an error).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_pretrained(name_or_dir, revision=revision)
    cfg_path = directory / CONFIG_NAME
    meta = _read_meta(cfg_path)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_path}: invalid encoder config (not a JSON object)")
    weights = _weights_path(directory, meta.get("weights", WEIGHTS_NAME), cfg_path)
    if weights_limit is not None:
        try:
            limit = weights_limit(meta["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: invalid encoder config ({exc})") from None
        size = weights.stat().st_size
        if size > limit:
            raise CheckpointError(
                f"{weights}: {size:,} bytes, more than the {limit:,} its config's encoder can need"
            )
    expected = meta.get("sha256")
    if expected is None and verify:
        # No command line option turns the check off: the message says how to record the digest.
        raise CheckpointError(
            f"{cfg_path}: records no sha256 of {weights.name}, so the weights cannot be verified; if "
            f'you trust them, add "sha256": "<the digest `sha256sum {weights.name}` prints>" to '
            f"{cfg_path.name}, or re-save the folder with Encoder.from_pretrained(FOLDER, verify=False)"
            ".save_pretrained(NEW_FOLDER) (in Python, verify=False also loads them unverified)"
        )
    if expected is not None:
        actual = sha256_file(weights)
        if actual != expected:
            raise CheckpointError(
                f"{weights}: checksum mismatch (sha256 {actual[:16]}..., config.json expects "
                f"{str(expected)[:16]}...): the file is corrupted, truncated or was modified"
            )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors ({exc})") from None
    return Pretrained(state, meta["config"], cfg_path, weights)


def _read_meta(cfg_path: Path) -> dict[str, tp.Any]:
    """A pretrained directory's ``config.json``: a regular file of bounded size, a JSON object."""
    try:
        if not cfg_path.is_file():
            raise CheckpointError(f"{cfg_path}: missing or not a file; not a pretrained encoder directory")
        if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{cfg_path}: over {MAX_CONFIG_BYTES:,} bytes; not an encoder config")
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{cfg_path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} config (missing 'format'/'config')")
    return meta


def _weights_path(directory: Path, name: tp.Any, cfg_path: Path) -> Path:
    """The weights file ``config.json`` names: a plain file name inside ``directory``, a regular
    file (a device or FIFO would be read without end)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(
            f"{cfg_path}: 'weights' must name a file inside {directory} (a plain file name), got {name!r}"
        )
    weights = directory / name
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights file missing")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not a regular file")
    return weights


def check_state(
    state: tp.Mapping[str, torch.Tensor], own: tp.Mapping[str, torch.Tensor], source: str, architecture: str
) -> State:
    """``state`` in the dtypes of ``own`` (the state dict of the module it is for, described as
    ``architecture`` in messages), ready for ``load_state_dict``; any missing, extra or misshapen
    tensor is a :class:`CheckpointError` naming ``source``, so a load is never partial."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the {architecture} "
            f"architecture (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    return {k: v.to(own[k].dtype) for k, v in state.items()}


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


def load_checkpoint(path: str | os.PathLike[str], mmap: bool = False) -> tp.Any:
    """The object ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (no code runs;
    ``mmap``: tensors stay on disk until used); a :class:`CheckpointError` naming the file when
    it is not a PyTorch checkpoint, or when it is a run checkpoint whose digest does not match
    (:func:`verify_run_checkpoint`)."""
    source = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"{source}: no such checkpoint file")
    if not Path(path).is_file():
        raise CheckpointError(f"{source}: not a regular file")
    verify_run_checkpoint(Path(path))
    with open(source, "rb") as fh:
        magic = fh.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # a zip archive (torch.save) or a legacy pickle
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle/zip errors come in many types
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "Weights only load failed" in str(exc):
            problem = "it holds Python objects besides tensors, which loading would execute; refused"
        raise CheckpointError(f"{source}: cannot read as a PyTorch checkpoint ({problem})") from None


def original_state(obj: tp.Any, source: str) -> tuple[State, dict[str, tp.Any]]:
    """(state in our names, the ``EncoderConfig`` fields that differ from PASE+'s defaults) of a
    loaded checkpoint of the original code; the architecture (PASE+ with QRNN, or PASE v1) is
    inferred from the keys."""
    state = original_to_ours(_unwrap(obj, source))
    if "W.weight" not in state:
        raise CheckpointError(f"{source}: no 'W.weight' key; not a PASE encoder checkpoint")
    has_rnn = "rnn.rnn.linear.weight" in state
    if any(state[k].dim() < 2 for k in ("W.weight", "rnn.rnn.linear.weight") if k in state):
        raise CheckpointError(f"{source}: weight shapes do not fit a PASE encoder")
    cfg = {
        "rnn": "qrnn" if has_rnn else "none",
        "dense_skips": any(k.startswith("denseskips.") for k in state),
        "embedding_dim": int(state["W.weight"].shape[0]),
        "rnn_hidden": int(state["rnn.rnn.linear.weight"].shape[0] // 3) if has_rnn else 512,
    }
    return state, cfg


def read_original(path: str | os.PathLike[str]) -> tuple[State, dict[str, tp.Any]]:
    """Read an original PASE/PASE+ checkpoint (``FE_e199.ckpt``: 78 keys, flat or
    ``{"step", "state_dict"}``) without executing code: see :func:`original_state`."""
    return original_state(load_checkpoint(path), str(path))


# --------------------------------------------------------------------------------------------
# Checkpoints of `pase train` (RUN/checkpoint.pt)
#: The checkpoint file in a run folder.
RUN_CHECKPOINT = "checkpoint.pt"
#: The one before it, kept so that a corrupt latest checkpoint is not the end of a run.
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
#: The SHA-256 of both (``sha256sum -c`` reads it), written by ``pase train`` before each rename.
CHECKPOINT_DIGESTS = "checkpoint.sha256"


def read_digests(folder: Path) -> dict[str, str] | None:
    """File name -> SHA-256 of ``folder/checkpoint.sha256``; ``None`` in a run folder written
    before checkpoints had digests. A line that is not ``DIGEST  NAME`` is a :class:`CheckpointError`."""
    path = folder / CHECKPOINT_DIGESTS
    if not path.exists():
        return None
    try:
        if not path.is_file() or path.stat().st_size > 4096:
            raise CheckpointError(f"{path}: not a digest file")
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
    digests = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            raise CheckpointError(f"{path}: not a digest file (line {line[:40]!r})")
        digests[name] = digest
    return digests


def verify_run_checkpoint(path: Path) -> None:
    """Refuse a run checkpoint whose content matches none of the digests its run folder records:
    a file corrupted on disk, truncated, or modified. Files of a folder without digests (older
    runs, other checkpoints) pass unchecked. Any digest of the file counts, not only the one under
    its name: a write interrupted between the digest file and the renames leaves each file valid."""
    if path.name not in (RUN_CHECKPOINT, PREVIOUS_CHECKPOINT):
        return
    digests = read_digests(path.parent)
    if digests is None:
        return
    actual = sha256_file(path)
    if actual not in digests.values():
        expected = digests.get(path.name, "none")
        raise CheckpointError(
            f"{path}: checksum mismatch (sha256 {actual[:16]}..., {CHECKPOINT_DIGESTS} expects "
            f"{expected[:16]}...): the file is corrupted, truncated or was modified"
        )


_ENCODER_PREFIX = "encoder."


_T = tp.TypeVar("_T")


def read_latest_checkpoint(
    run: Path, read: tp.Callable[[Path], _T], fell_back: tp.Callable[[str, Path], None] | None = None
) -> tuple[Path, _T]:
    """``(path, read(path))`` of the newest checkpoint of the run folder ``run`` that reads:
    ``checkpoint.pt``, else ``checkpoint.prev.pt`` (then ``fell_back(why the latest was refused,
    that path)`` is called). Neither: a :class:`CheckpointError` that says why each was refused
    (the one problem alone when there is no previous checkpoint)."""
    problems = []
    for path in (run / RUN_CHECKPOINT, run / PREVIOUS_CHECKPOINT):
        if not path.exists():
            continue
        try:
            contents = read(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems and fell_back is not None:
            fell_back(problems[0], path)
        return path, contents
    if not problems:
        raise CheckpointError(f"no checkpoint in {run}")
    if len(problems) == 1:
        raise CheckpointError(problems[0])
    raise CheckpointError(f"{problems[0]}; and {problems[1]}")


def is_run_checkpoint(obj: tp.Any) -> bool:
    """Whether a loaded checkpoint is a ``pase train`` one (model and its config) rather than an
    original encoder state dict."""
    return isinstance(obj, dict) and "model" in obj and "model_config" in obj


def run_checkpoint_state(obj: tp.Any, source: str) -> tuple[State, dict[str, tp.Any], int]:
    """(the encoder's state, its config dict, the step) of a loaded ``pase train`` checkpoint."""
    try:
        config = json.loads(obj["model_config"])["encoder"]
        state = {
            k.removeprefix(_ENCODER_PREFIX): v
            for k, v in obj["model"].items()
            if k.startswith(_ENCODER_PREFIX)
        }
        step = int(obj.get("step", 0))
    except Exception as err:  # missing keys and malformed JSON come in many types
        raise not_a_run_checkpoint(source, err) from None
    return state, config, step


def not_a_run_checkpoint(source: str, err: Exception) -> CheckpointError:
    """The error for a file that is no usable ``pase train`` checkpoint, saying why."""
    problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CheckpointError(f"{source}: not a `pase train` checkpoint ({type(err).__name__}: {problem})")
