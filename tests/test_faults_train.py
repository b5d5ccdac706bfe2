"""Fault injection for training, checkpoints, weights and configs (issue 31, items 1, 2, 5-8).

Each test reproduces one reported case: corrupt or crafted files, a full disk (``RLIMIT_FSIZE``
in a subprocess), a process killed mid-write (a patched function calling ``os._exit``) and bad
option values. Before the change each of them either ran code, trusted corrupt data, hung,
allocated gigabytes or printed a traceback; the comment of each test says what it did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_train_compat import TINY_RUN, old_layout_run, write_corpus

import pase
from pase import Encoder
from pase.cli import main
from pase.hub import (
    CHECKPOINT_DIGESTS,
    PREVIOUS_CHECKPOINT,
    CheckpointError,
    ours_to_original,
    read_digests,
    sha256_file,
)
from pase.train import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_corpus")
    write_corpus(root)
    return root


def _resume_argv(run: Path, corpus: Path, max_steps: int) -> list[str]:
    return [
        "--no-progress", "train", "--out", str(run), "--resume", "--max-steps", str(max_steps),
        "--ckpt-every", "1", "--data", str(corpus / "audio"), "--distortions.rir-dir", str(corpus / "rir"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A 2-step run in the layout written before checkpoint digests (test_train_compat's)."""
    run = tmp_path_factory.mktemp("old") / "run"
    old_layout_run(corpus, run)
    return run


@pytest.fixture(scope="module")
def digested(tmp_path_factory: pytest.TempPathFactory, corpus: Path, old_run: Path) -> Path:
    """The compat fixture's run resumed to step 3: ``checkpoint.pt`` (step 3), ``checkpoint.prev.pt``
    (step 2) and their digests."""
    run = tmp_path_factory.mktemp("faults") / "run"
    shutil.copytree(old_run, run)
    assert main(_resume_argv(run, corpus, 3)) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def _one_line(err: str, prefix: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


def test_a_checkpoint_write_keeps_the_previous_one_and_records_both_digests(digested: Path) -> None:
    assert _step(digested / CHECKPOINT) == 3 and _step(digested / PREVIOUS_CHECKPOINT) == 2
    digests = read_digests(digested)
    assert digests == {
        CHECKPOINT: sha256_file(digested / CHECKPOINT),
        PREVIOUS_CHECKPOINT: sha256_file(digested / PREVIOUS_CHECKPOINT),
    }


# -- item 1: a run folder's plugins are code ----------------------------------------------------
def _run_with_plugin(tmp_path: Path, old_run: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    helper = tmp_path / "helper.py"
    helper.write_text(f"open({str(marker)!r}, 'w').close()\n")
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "plugins": [str(helper)]}))
    return run, marker


def test_resume_refuses_plugins_named_only_by_the_run_folder(
    tmp_path: Path, corpus: Path, old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the helper was imported (and ran) on --resume.
    run, marker = _run_with_plugin(tmp_path, old_run)
    assert main(_resume_argv(run, corpus, 3)) == 2
    line = _one_line(capsys.readouterr().err, f"pase train: {run / 'config.json'} names worker plugins")
    assert "--plugins" in line and "--trust-plugins" in line
    assert not marker.exists()


@pytest.mark.parametrize("allow", [["--trust-plugins"], ["--plugins", "HELPER"]])
def test_plugins_named_again_or_trusted_are_imported(tmp_path: Path, old_run: Path, allow: list[str]) -> None:
    from pase.cli import build_parser
    from pase.train import config_from_args

    run, _ = _run_with_plugin(tmp_path, old_run)
    allow = [str(tmp_path / "helper.py") if a == "HELPER" else a for a in allow]
    args = build_parser().parse_args(["train", "--out", str(run), "--resume", *allow])
    assert config_from_args(args).plugins == [str(tmp_path / "helper.py")]


# -- item 2 and 7: corrupt checkpoints -----------------------------------------------------------
def _flip(path: Path, at: float = 0.5, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + n] = bytes(b ^ 0xFF for b in data[start : start + n])
    path.write_bytes(bytes(data))


def test_a_corrupt_latest_checkpoint_is_reported_and_the_previous_one_resumes(
    digested: Path, tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: 64 flipped bytes went unnoticed and the run continued from the corrupt state.
    run = _copy(digested, tmp_path)
    _flip(run / CHECKPOINT)
    assert main(_resume_argv(run, corpus, 4)) == 0
    err = capsys.readouterr().err
    assert f"{run / CHECKPOINT}: checksum mismatch" in err and "resuming from checkpoint.prev.pt" in err
    assert "resuming" in err and "after step 2" in err
    assert _step(run / CHECKPOINT) == 4 and _step(run / PREVIOUS_CHECKPOINT) == 3


def test_both_checkpoints_corrupt_is_one_line(
    digested: Path, tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(digested, tmp_path)
    _flip(run / CHECKPOINT)
    _flip(run / PREVIOUS_CHECKPOINT, at=0.3)
    assert main(_resume_argv(run, corpus, 4)) == 2
    line = _one_line(capsys.readouterr().err, f"pase train: {run / CHECKPOINT}: checksum mismatch")
    assert f"{run / PREVIOUS_CHECKPOINT}: checksum mismatch" in line


def _pickle_flipped(path: Path) -> bytes:
    """``path``'s bytes with one byte of its ``data.pkl`` member changed (the zip stays readable)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"data.pkl") + 100
    data[at] ^= 0x80
    return bytes(data)


@pytest.mark.parametrize("content", ["truncated", "empty", "random", "pickle"])
def test_an_unreadable_checkpoint_of_an_older_run_is_one_line(
    tmp_path: Path, corpus: Path, old_run: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    # Before: a traceback each (the pickle case: "'utf-8' codec can't decode..." without the file).
    run = tmp_path / "run"
    shutil.copytree(old_run, run)  # no digests: written before they existed
    original = (run / CHECKPOINT).read_bytes()
    bad = {
        "truncated": original[: len(original) // 2],
        "empty": b"",
        "random": os.urandom(4096),
        "pickle": _pickle_flipped(run / CHECKPOINT),
    }[content]
    (run / CHECKPOINT).write_bytes(bad)
    assert main(_resume_argv(run, corpus, 3)) == 2
    _one_line(capsys.readouterr().err, f"pase train: {run / CHECKPOINT}: ")


# -- item 7 and 8: a full disk, a killed write -----------------------------------------------------
def _train_in_subprocess(prelude: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(prelude) + f"\nfrom pase.cli import main\nraise SystemExit(main({argv!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_last_one(
    digested: Path, tmp_path: Path, corpus: Path
) -> None:
    # Before: torch.save's RuntimeError ("PytorchStreamWriter failed writing file") as a traceback.
    run = _copy(digested, tmp_path)
    before = {p.name: p.read_bytes() for p in run.glob("checkpoint*")}
    limit = (run / CHECKPOINT).stat().st_size // 2  # every other file of the run is smaller
    prelude = f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """
    result = _train_in_subprocess(prelude, _resume_argv(run, corpus, 4))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith(f"pase train: {run / CHECKPOINT}: cannot write the checkpoint (")
        and "Traceback" not in result.stderr
    )
    assert {p.name: p.read_bytes() for p in run.glob("checkpoint*")} == before
    assert not list(run.glob(".checkpoint*"))


def test_a_write_killed_after_the_save_leaves_a_temporary_file_the_next_run_removes(
    digested: Path, tmp_path: Path, corpus: Path
) -> None:
    # Before: the 174 MB .checkpoint.pt.tmp<pid> of a killed write stayed for good.
    run = _copy(digested, tmp_path)
    prelude = """
        import os, pase.train.checkpoint as checkpoint
        checkpoint.sha256_file = lambda path: os._exit(9)  # killed right after torch.save
    """
    assert _train_in_subprocess(prelude, _resume_argv(run, corpus, 4)).returncode == 9
    (stale,) = run.glob(".checkpoint.pt.tmp*")
    result = _train_in_subprocess("", _resume_argv(run, corpus, 4))
    assert result.returncode == 0, result.stderr
    assert f"removed {stale}" in result.stderr and not stale.exists()
    assert _step(run / CHECKPOINT) == 4


def test_a_write_killed_between_its_renames_resumes_from_the_previous_checkpoint(
    digested: Path, tmp_path: Path, corpus: Path
) -> None:
    run = _copy(digested, tmp_path)
    prelude = """
        import os
        from pathlib import Path
        replace = os.replace
        def killed_before_the_last_rename(src, dst):
            if Path(dst).name == "checkpoint.pt":
                os._exit(9)
            replace(src, dst)
        os.replace = killed_before_the_last_rename
    """
    assert _train_in_subprocess(prelude, _resume_argv(run, corpus, 4)).returncode == 9
    assert not (run / CHECKPOINT).exists() and _step(run / PREVIOUS_CHECKPOINT) == 3
    result = _train_in_subprocess("", _resume_argv(run, corpus, 4))
    assert result.returncode == 0, result.stderr
    assert _step(run / CHECKPOINT) == 4


# -- item 8: option values ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--encoder-lr", "-1"], "--encoder-lr must be at least 0, got -1.0"),
        (["--valid-fraction", "2"], "--valid-fraction must be at least 0 and below 1"),
        (["--encoder", '{"channels": 5}'], '--encoder {"channels": 5}: channels must be a list of integers'),
        (["--encoder", '{"rnn_hidden": 1000000}'], "rnn_hidden must be an integer from 1 to 8192"),
        (["--chunk-size", "10"], "--chunk-size must be from 400 to"),
    ],
)
def test_bad_option_values_are_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    # Before: -1 and 2 were accepted silently, {"channels": 5} was a TypeError traceback.
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), *option]) == 2
    assert message in _one_line(capsys.readouterr().err, "pase train: ")
    assert not (tmp_path / "run").exists()


# -- items 5 and 6: weights and configs from anywhere --------------------------------------------
TINY = {"channels": [8, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8, "embedding_dim": 8}


def _saved(tmp_path: Path, **meta: object) -> Path:
    folder = Encoder.from_config(TINY).save_pretrained(tmp_path / "enc")
    config = json.loads((folder / "config.json").read_text())
    config.update(meta)
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("/dev/zero", "'weights' must name a file inside"),  # before: hung reading its checksum
        ("../outside.safetensors", "'weights' must name a file inside"),  # before: loaded it
    ],
)
def test_a_pretrained_folder_names_only_its_own_files(tmp_path: Path, weights: str, message: str) -> None:
    folder = _saved(tmp_path, weights=weights)
    shutil.copy(folder / "model.safetensors", tmp_path / "outside.safetensors")
    with pytest.raises(CheckpointError, match=message):
        Encoder.from_pretrained(folder)


def test_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    folder = _saved(tmp_path, weights="zero.safetensors")
    (folder / "zero.safetensors").symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="not a regular file"):
        Encoder.from_pretrained(folder)


MISSING_SHA256 = (
    ": records no sha256 of model.safetensors, so the weights cannot be verified; if you trust them, "
    'add "sha256": "<the digest `sha256sum model.safetensors` prints>" to config.json, or re-save the '
    "folder with Encoder.from_pretrained(FOLDER, verify=False).save_pretrained(NEW_FOLDER) "
    "(in Python, verify=False also loads them unverified)"
)


def test_a_missing_checksum_is_an_error_unless_verify_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a config without its sha256 loaded modified weights without a word; then the message
    # told command line users to pass verify=False, which no option does.
    folder = _saved(tmp_path, sha256=None)
    with pytest.raises(CheckpointError) as refused:
        Encoder.from_pretrained(folder)
    assert str(refused.value) == f"{folder / 'config.json'}{MISSING_SHA256}"
    assert Encoder.from_pretrained(folder, verify=False).config.rnn_hidden == 8
    assert main(["export", str(folder), str(tmp_path / "out")]) == 2
    assert _one_line(capsys.readouterr().err, "pase export: ") == (
        f"pase export: {folder / 'config.json'}{MISSING_SHA256}"
    )
    # Both ways the message offers give a folder that loads verified.
    Encoder.from_pretrained(folder, verify=False).save_pretrained(tmp_path / "resaved")
    assert Encoder.from_pretrained(tmp_path / "resaved").config.rnn_hidden == 8
    meta = json.loads((folder / "config.json").read_text())
    meta["sha256"] = sha256_file(folder / "model.safetensors")  # what sha256sum prints
    (folder / "config.json").write_text(json.dumps(meta))
    assert main(["export", str(folder), str(tmp_path / "out")]) == 0


def test_weights_larger_than_their_config_needs_are_refused(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    with open(folder / "model.safetensors", "ab") as fh:
        fh.truncate(10 * 4 * 10**6)  # sparse: 40 MB for an encoder of a few thousand weights
    with pytest.raises(CheckpointError, match="more than the .* its config's encoder can need"):
        Encoder.from_pretrained(folder)


def _huge(tmp_path: Path, change: dict[str, object]) -> Path:
    """A save_pretrained folder of the tiny encoder whose config.json asks for ``change``."""
    folder = _saved(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(change)
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def _wav_folder(tmp_path: Path) -> Path:
    """Audio for ``pase extract`` to read once its model loads (it never does here)."""
    folder = tmp_path / "audio"
    write_corpus(tmp_path)
    return folder


@pytest.mark.parametrize(
    "change",
    [{"sinc_channels": 10**9}, {"rnn_hidden": 10**6}, {"channels": [4096] * 7, "kernels": [4096] * 7}],
)
def test_huge_configs_are_refused_before_anything_is_allocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object]
) -> None:
    # Before: 4.2 GB / 12.3 GB asked of the allocator, a raw RuntimeError, a traceback from export.
    folder = _huge(tmp_path, change)
    with pytest.raises(CheckpointError, match="invalid encoder config"):
        Encoder.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="invalid encoder config"):
        pase.load_encoder(str(folder))
    assert main(["export", str(folder), str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, f"pase export: {folder / 'config.json'}: invalid encoder config")
    argv = ["extract", str(_wav_folder(tmp_path)), "--model", str(folder), "--out", str(tmp_path / "feats")]
    assert main(argv) == 2
    _one_line(
        capsys.readouterr().err,
        f"pase extract: cannot load model '{folder}': {folder / 'config.json'}: invalid encoder config",
    )
    assert not (tmp_path / "out").exists() and not list((tmp_path / "feats").glob("*"))


def _original(tmp_path: Path, **replace: torch.Tensor) -> Path:
    state = ours_to_original(Encoder.from_config("pase+").state_dict())
    path = tmp_path / "FE.ckpt"
    torch.save({"step": 1, "state_dict": {**state, **replace}}, path)
    return path


def _absurd(tmp_path: Path) -> Path:
    """An original checkpoint whose (3e6, 0) QRNN weight (no bytes) says rnn_hidden is 1e6: a
    12.3 GB encoder."""
    return _original(tmp_path, **{"rnn.layers.0.linear.weight": torch.empty(3_000_000, 0)})


ABSURD = "invalid encoder config (rnn_hidden must be an integer from 1 to 8192, got 1000000)"


def test_an_original_checkpoint_of_absurd_shapes_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a (3e6, 0) tensor (no bytes) made rnn_hidden 1e6: 12.3 GB asked, then a traceback.
    ckpt = _absurd(tmp_path)
    assert main(["convert-original", str(ckpt), str(tmp_path / "out")]) == 1
    line = _one_line(capsys.readouterr().err, f"pase convert-original: {ckpt}: invalid encoder config")
    assert "rnn_hidden must be an integer from 1 to 8192" in line


def test_an_original_checkpoint_of_absurd_shapes_is_refused_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pase.models.frontend import wf_builder

    ckpt = _absurd(tmp_path)
    # Python: the project's error, naming the file (a raw RuntimeError of the allocator before).
    with pytest.raises(CheckpointError) as refused:
        Encoder.from_original(ckpt)
    assert str(refused.value) == f"{ckpt}: {ABSURD}"
    with pytest.raises(CheckpointError) as refused:
        pase.load_encoder(str(ckpt))
    assert str(refused.value) == f"{ckpt}: {ABSURD}"
    with pytest.raises(CheckpointError, match=f"{ckpt}: rnn.rnn.linear.weight has shape"):
        wf_builder("PASE+").load_pretrained(ckpt)  # into a built PASE+: a shape mismatch
    # The command line: one line each, exit 2, no output written.
    assert main(["export", str(ckpt), str(tmp_path / "out")]) == 2
    assert _one_line(capsys.readouterr().err, "pase export: ") == f"pase export: {ckpt}: {ABSURD}"
    argv = ["extract", str(_wav_folder(tmp_path)), "--model", str(ckpt), "--out", str(tmp_path / "feats")]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err, f"pase extract: cannot load model '{ckpt}': {ckpt}: {ABSURD}")
    assert not (tmp_path / "out").exists() and not list((tmp_path / "feats").glob("*")), line


#: The address space of a ``pase train`` process below (its peak is under 1 GB on the CPU): an
#: encoder of several gigabytes then fails to allocate at once instead of swapping the machine.
ADDRESS_SPACE = 4 << 30


@pytest.mark.parametrize("init", ["huge folder", "absurd original"])
def test_train_init_of_a_huge_encoder_is_one_line_and_allocates_nothing(
    tmp_path: Path, corpus: Path, init: str
) -> None:
    # Before: refused before building (4.2 GB, 12.3 GB), but the line did not name --init. A
    # regression that builds the encoder fails here at once (RLIMIT_AS), not after gigabytes.
    spec = _huge(tmp_path, {"sinc_channels": 10**9}) if init == "huge folder" else _absurd(tmp_path)
    problem = f"{spec / 'config.json'}: invalid encoder config" if spec.is_dir() else f"{spec}: {ABSURD}"
    run, peak = tmp_path / "run", tmp_path / "peak_rss_kib"
    prelude = f"""
        import atexit, resource
        resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
        def record_peak():  # VmHWM: this process image's own peak (ru_maxrss keeps the forking
            # parent's across exec, so inside a big pytest process it read the parent's 1.3 GB)
            status = open("/proc/self/status").read().splitlines()
            kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
            with open({str(peak)!r}, "w") as fh:
                fh.write(kib)
        atexit.register(record_peak)
    """
    argv = [
        "--no-progress", "train", "--out", str(run), "--data", str(corpus / "audio"), *TINY_RUN,
        "--distortions.rir-dir", str(corpus / "rir"), "--max-steps", "1", "--init", str(spec),
    ]  # fmt: skip
    result = _train_in_subprocess(prelude, argv)
    assert result.returncode == 2, result.stderr
    _one_line(result.stderr, f"pase train: --init {problem}")
    assert int(peak.read_text()) < 1 << 20, "peak RSS of 1 GiB or more"  # KiB: about 400 MB measured
    assert not run.exists()


def test_convert_original_to_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: FileExistsError from mkdir, as a traceback.
    ckpt = _original(tmp_path)
    (tmp_path / "FILE").write_text("")
    assert main(["convert-original", str(ckpt), str(tmp_path / "FILE")]) == 1
    _one_line(
        capsys.readouterr().err, f"pase convert-original: {tmp_path / 'FILE'}: exists and is not a folder"
    )


def test_a_run_checkpoint_with_a_bad_digest_is_refused_by_every_reader(
    digested: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(digested, tmp_path)
    _flip(run / CHECKPOINT)
    assert main(["export", str(run / CHECKPOINT), str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, f"pase export: {run / CHECKPOINT}: checksum mismatch")
    assert (run / CHECKPOINT_DIGESTS).exists()
    # The run folder: its encoder comes from the checkpoint before, with one warning line.
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith(f"pase export: warning: {run / CHECKPOINT}: checksum mismatch")
    assert warning.endswith(f"loaded {run / PREVIOUS_CHECKPOINT}, the checkpoint before it")


def test_an_encoder_loads_from_the_previous_checkpoint_when_the_latest_is_corrupt(
    digested: Path, tmp_path: Path
) -> None:
    from pase.hub import CheckpointError
    from pase.loading import read_encoder

    run = _copy(digested, tmp_path)
    assert read_encoder(str(run))[1].step == 3
    _flip(run / CHECKPOINT)
    with pytest.warns(
        UserWarning, match=r"checkpoint\.pt: checksum mismatch .*; loaded .*checkpoint\.prev\.pt"
    ):
        encoder, origin = read_encoder(str(run))
    assert origin.step == 2 and origin.path == run / PREVIOUS_CHECKPOINT
    _flip(run / PREVIOUS_CHECKPOINT, at=0.3)
    with pytest.raises(
        CheckpointError, match=r"checkpoint\.pt: checksum mismatch .*; and .*prev\.pt: checksum mismatch"
    ):
        read_encoder(str(run))
