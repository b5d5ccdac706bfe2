"""What the command line says when the user gets something wrong: one clear line, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import typing as tp
from pathlib import Path

import pytest
import torch

from pase.cli import main
from pase.train import CHECKPOINT
from pase.train.loop import _StopFlag

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``pase ARGV``: (exit code, stderr), whether it returned or exited."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_abbreviated_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["eval", "--task", "fsdd-digit", "--layer", "all"], capsys)
    assert code == 2 and "unrecognized arguments: --layer" in err


def test_an_unknown_option_points_to_the_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["demo", "--colour", "red"], capsys)
    assert (code, err) == (
        2,
        "pase demo: error: unrecognized arguments: --colour red\n(see `pase demo --help`)\n",
    )
    code, err = _run(["--colour"], capsys)
    assert code == 2 and err.endswith("(see `pase --help`)\n")


def test_bad_preset_says_so_without_the_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(["train", "--preset", "pase++", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err == (
        "pase train: error: argument --preset: invalid choice: 'pase++' "
        "(choose from 'pase+', 'pase+cpu', 'pase+cpu-bilinear', 'pase+v3', 'pase')\n"
        "(see `pase train --help`)\n"
    )


def test_bad_asr_probe_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["eval", "--task", "librispeech-asr", "--features", "fbank", "--out", str(tmp_path)]
    code, err = _run([*argv, "--asr-probe", "base:strid=3"], capsys)
    assert code != 0 and err.startswith("pase eval: ASR probe 'base:strid=3': 'strid=3' is not field=value")
    code, err = _run([*argv, "--asr-probe", "tiny"], capsys)
    assert code != 0 and "unknown ASR probe preset 'tiny'; choose from small, base" in err


@pytest.mark.parametrize("command", [["demo"], ["eval", "--task", "fsdd-digit"]])
def test_device_gpu_is_named_as_the_problem(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([*command, "--device", "gpu"], capsys)
    assert code == 2
    assert "argument --device: not a device name; use cpu, cuda or cuda:N" in err


@NO_CUDA
@pytest.mark.parametrize("command", [["demo"], ["eval", "--task", "fsdd-digit"]])
def test_device_cuda_without_cuda(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([*command, "--device", "cuda"], capsys)
    assert code == 2
    assert "argument --device: CUDA is not available on this machine; use --device cpu" in err


@NO_CUDA
def test_train_device_cuda_without_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--device", "cuda"], capsys)
    assert (code, err) == (
        2,
        "pase train: --device cuda: CUDA is not available on this machine; use --device cpu\n",
    )


def test_broken_yaml_config_names_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 8\nseed: [1, 2\n")
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--config", str(config)], capsys)
    assert code == 2
    assert err.startswith(f"pase train: {config}:3:1: not a valid config file: expected ',' or ']'")
    assert len(err.splitlines()) == 1


def test_broken_json_config_names_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text('{"batch_size": 8,\n}')
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--config", str(config)], capsys)
    assert (code, err) == (
        2,
        f"pase train: {config}:2:1: not a valid config file: "
        "Expecting property name enclosed in double quotes\n",
    )


def test_plugin_path_of_a_config_file_is_relative_to_that_file(tmp_path: Path) -> None:
    from pase.cli import build_parser
    from pase.train import config_from_args

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "run.yaml").write_text("plugins: [my_workers.py, mypkg.workers, /abs/w.py]\n")
    args = build_parser().parse_args(
        ["train", "--out", "run", "--config", str(tmp_path / "cfg" / "run.yaml")]
    )
    assert config_from_args(args).plugins == [
        str(tmp_path / "cfg" / "my_workers.py"),
        "mypkg.workers",
        "/abs/w.py",
    ]


def test_batch_size_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--batch-size", "0"], capsys)
    assert (code, err) == (2, "pase train: --batch-size must be at least 1, got 0\n")


def test_eval_num_threads_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(["eval", "--task", "fsdd-digit", "--num-threads", "0", "--out", str(tmp_path)], capsys)
    assert (code, err) == (2, "pase eval: --num-threads must be >= 1, got 0\n")


def test_resume_without_a_checkpoint_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--resume", "--data", str(tmp_path)], capsys)
    assert code == 2
    assert (
        err == f"pase train: no checkpoint in {tmp_path / 'run'} to resume "
        "(--resume-or-start starts a fresh run)\n"
    )


def test_resume_to_a_horizon_already_passed_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 50}, run / CHECKPOINT)
    (run / "config.json").write_text(json.dumps({"max_steps": 100, "data": ["x"]}))
    before = (run / "config.json").read_bytes()
    code, err = _run(["train", "--out", str(run), "--resume", "--max-steps", "40"], capsys)
    assert code == 2
    assert err == (
        f"pase train: {run} is at step 50: --max-steps 40 leaves nothing to train; "
        "pass --max-steps above 50 to continue the run\n"
    )
    assert (run / "config.json").read_bytes() == before


def test_sigterm_exit_status_is_143() -> None:
    with _StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.exit_code == 143
    with _StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.exit_code == 130


def test_convert_original_on_a_text_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("hello\n")
    code, err = _run(["convert-original", str(tmp_path / "notes.ckpt"), str(tmp_path / "out")], capsys)
    assert code == 1
    assert (
        err == f"pase convert-original: {tmp_path / 'notes.ckpt'}: "
        "not a PyTorch checkpoint (neither a zip archive nor a pickle)\n"
    )


def test_convert_original_refuses_pickled_objects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import numpy as np

    torch.save({"W.weight": np.zeros(3)}, tmp_path / "objects.ckpt")
    code, err = _run(["convert-original", str(tmp_path / "objects.ckpt"), str(tmp_path / "out")], capsys)
    assert code == 1
    assert "holds Python objects besides tensors, which loading would execute; refused" in err
    assert "weights_only" not in err and len(err.splitlines()) == 1


def test_convert_original_on_misshapen_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch.save({"W.weight": torch.zeros(())}, tmp_path / "odd.ckpt")
    code, err = _run(["convert-original", str(tmp_path / "odd.ckpt"), str(tmp_path / "out")], capsys)
    assert (code, err) == (
        1,
        f"pase convert-original: {tmp_path / 'odd.ckpt'}: weight shapes do not fit a PASE encoder\n",
    )


def test_missing_matplotlib_names_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "metrics.csv").write_text("step,loss,lr,xrt\n1,2.0,0.001,1.0\n")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the checkout: the hint says "."
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code, err = _run(["plot", str(tmp_path)], capsys)
    assert (code, err) == (
        2,
        "pase plot: this needs matplotlib, which is not installed: pip install -e '.[eval]'\n",
    )


def test_install_hints_fit_how_pase_was_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pase.cli_args
    from pase.cli_args import install_hint

    root = Path(pase.cli_args.__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert install_hint("eval") == f"pip install -e '{root}[eval]'"  # a source checkout, elsewhere
    monkeypatch.setattr(pase.cli_args, "installed_from", lambda: ("/src/pase", False))
    assert install_hint("hub") == "pip install '/src/pase[hub]'"  # `pip install /src/pase`
    monkeypatch.setattr(pase.cli_args, "installed_from", lambda: None)
    assert install_hint("hub") == "pip install 'pase-speech[hub]'"  # a wheel


def test_no_progress_is_accepted_after_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pase.plots
    from pase.progress import enabled

    seen: dict[str, tp.Any] = {}

    def plot(args: argparse.Namespace) -> int:
        seen.update(progress=enabled(), tqdm=os.environ.get("TQDM_DISABLE"))
        return 0

    monkeypatch.setattr(pase.plots, "_main", plot)
    monkeypatch.delenv("PASE_NO_PROGRESS", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(["plot", str(tmp_path), "--no-progress"]) == 0
    assert seen == {"progress": False, "tqdm": "1"}
    assert enabled() and "TQDM_DISABLE" not in os.environ  # for that command only


def _subparser(name: str) -> argparse.ArgumentParser:
    from pase.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return tp.cast(argparse.ArgumentParser, sub.choices[name])


def test_every_train_option_has_help_with_its_default() -> None:
    parser = _subparser("train")
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 60
    for action in options:
        assert action.help and len(action.help) > 20, action.option_strings
        if action.dest not in ("out", "config", "resume", "resume_or_start"):
            assert "default: " in action.help, action.option_strings
    by_dest = {a.dest: a.help for a in options}
    assert by_dest["batch_size"] == (
        "Examples per optimizer step and per process (global batch = this x world size). "
        "(default: 16; 4 with --preset pase+cpu; 4 with --preset pase+cpu-bilinear; 4 with --preset pase+v3; "
        "32 with --preset pase)"
    )
    assert by_dest["distortions.noise_p"] == "Probability of additive noise (step 3). (default: 0.4)"
    assert "--model alone changes only the encoder" in str(by_dest["preset"])
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text and ":meth:" not in text


def test_field_docs_reads_comments_above_and_strings_below() -> None:
    import dataclasses

    from pase.cli_args import field_docs

    @dataclasses.dataclass
    class Example:
        #: Learning rates of the encoder
        #: and of the workers (``Adam``).
        encoder_lr: float = 1.0
        workers_lr: float = 2.0
        seed: int = 0
        steps: int = 3
        """Steps of :class:`pase.train.Trainer`."""

    assert field_docs(Example, {"seed": "The seed."}) == {
        "encoder_lr": "Learning rates of the encoder and of the workers (Adam).",
        "workers_lr": "Learning rates of the encoder and of the workers (Adam).",
        "seed": "The seed.",
        "steps": "Steps of pase.train.Trainer.",
    }


def test_command_list_matches_the_commands_and_imports_no_torch() -> None:
    """`pase --help` lists each command with its module's own help, without importing torch."""
    import subprocess

    from pase.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    real = {choice.dest: choice.help for choice in sub._choices_actions}
    assert real == {name: help_text for name, (_, help_text) in COMMANDS.items()}
    script = (
        "import sys, contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    from pase.cli import main; main(['--help'])\n"
        "import pase; print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_progress_reaches_a_command_that_has_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import pase.extract.cli

    seen = {}
    monkeypatch.setattr(
        pase.extract.cli, "_run", lambda args: seen.setdefault("no_progress", args.no_progress) and 0
    )
    monkeypatch.setenv("PASE_NO_PROGRESS", "0")
    monkeypatch.setenv("TQDM_DISABLE", "0")
    main(["extract", "x.wav", "--out", "o", "--no-progress"])
    assert seen == {"no_progress": True}
