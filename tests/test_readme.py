"""Every ```python and ```bash block of README.md and of the pages of docs/ runs, so the
documentation cannot drift from the code (the pages in :data:`RUN_ELSEWHERE` are run by their own
tests).

Blocks run in one scratch folder holding the files the README names (``talk.flac``, ``x.wav``,
``FE_e199.ckpt``, ``tasks.csv``, ``runs/plus`` ...), made here from synthetic audio and tiny
models. A block right after ``<!-- no-test: reason -->`` is skipped with that reason. A block
whose first line is ``# NAME.py`` / ``# NAME.yaml`` is a file the README asks the reader to
write: it is written there first (and Python ones run).

Shell commands: ``pase ...`` runs as a subprocess and must exit 0 without a traceback, except
the commands below that take hours on real data, which are parsed with the real parser only
(so a renamed option still fails); ``torchrun ... -m pase.cli ...`` is parsed the same way.
Any other command needs a rule in :data:`OTHER_COMMANDS`, so a new kind of command cannot slip
through untested.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: docs/ pages whose blocks another test runs, against the objects they document.
RUN_ELSEWHERE = {
    "data.md": "tests/test_corpora.py",
    "loss.md": "tests/test_loss.py",
    "streaming.md": "tests/test_streaming.py",
}
DOCUMENTS = [README, *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in RUN_ELSEWHERE)]

#: ``pase`` commands that are parsed but not run, and why.
PARSE_ONLY: tp.Sequence[tuple[tp.Callable[[list[str]], bool], str]] = (
    (
        lambda a: a[0] == "train" and "--data" in a,
        "a real training run takes hours; test_train.py runs the same loop on tiny data",
    ),
    (
        lambda a: a[0] == "eval" and "--task" in a,
        "the built-in tasks need the speech bundle and take minutes to hours; "
        "the --manifest command runs the same code here",
    ),
    (
        lambda a: a[0] == "ablate" and "--data" in a,
        "an ablation trains every variant for minutes; test_ablate.py runs it end to end on tiny data",
    ),
)
#: Commands other than ``pase``: how each is checked.
OTHER_COMMANDS = {
    "torchrun": "parsed: its `-m pase.cli` arguments go through the real parser",
    "tensorboard": "a viewer outside pase: the log folder it is pointed at must exist",
    "python": "a bench or recipe script: it must exist and answer --help (its runs are in its results/)",
    "bash": "a bench or recipe shell script: it must exist (tests/test_gpu_run.py runs gpu_run.sh --dry-run)",
}


@dataclasses.dataclass
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None  # the reason of a preceding <!-- no-test: reason -->
    document: str = "README.md"  # relative to the repository root

    @property
    def file_name(self) -> str | None:
        """``NAME.py`` when the block's first line is ``# NAME.py`` (a file to write)."""
        first = self.text.splitlines()[0] if self.text else ""
        match = re.fullmatch(r"#\s*([\w.-]+\.(?:py|ya?ml))\b.*", first)
        return match[1] if match else None


def readme_blocks(text: str, document: str = "README.md") -> list[Block]:
    """The fenced code blocks of ``text`` (the contents of ``document``), with their language and
    skip reason."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\w+)\s*", lines[i])
        if opening:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = re.fullmatch(r"<!--\s*no-test:\s*(.*?)\s*-->", before)
            body = "\n".join(lines[i + 1 : end])
            blocks.append(Block(opening[1], i + 1, body, skip[1] if skip else None, document))
            i = end
        i += 1
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


BLOCKS = [
    block
    for doc in DOCUMENTS
    for block in readme_blocks(doc.read_text(encoding="utf-8"), doc.relative_to(ROOT).as_posix())
]
RUNNABLE = [b for b in BLOCKS if b.lang in ("python", "bash", "sh")]


def test_the_extractor_finds_the_readme_blocks() -> None:
    langs = [b.lang for b in RUNNABLE if b.document == "README.md"]
    assert langs.count("python") >= 2 and langs.count("bash") >= 6
    assert all(b.skip for b in RUNNABLE if "make demo" in b.text or "pip install" in b.text)
    assert {"README.md", "docs/training.md", "docs/evaluation.md"} <= {b.document for b in RUNNABLE}
    for page, test in RUN_ELSEWHERE.items():  # each page left out here is read by its own test
        assert page in (ROOT / test).read_text(encoding="utf-8"), (page, test)
    sample = "a\n<!-- no-test: why -->\n\n```bash\nls \\\n  -l  # c\n```\n```python\n# w.py\nx = 1\n```\n"
    first, second = readme_blocks(sample)
    assert (first.lang, first.line, first.skip) == ("bash", 4, "why")
    assert shell_commands(first.text) == [["ls", "-l"]]
    assert (second.skip, second.file_name) == (None, "w.py")


# ----------------------------------------------------------------------------- the scratch folder


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _interrupted_run(folder: Path, corpus: Path) -> None:
    """A tiny `pase train` run stopped by SIGINT after step 1 of 2: a checkpoint, no encoder/."""
    from test_train import tiny_config

    from pase.train import Trainer

    def stop(step: int, row: dict[str, float]) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    config = tiny_config(corpus, max_steps=2, valid_every=2)
    assert Trainer(config, folder, on_step=stop, progress=False).run() == 130


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pase import Encoder
    from pase.hub import ours_to_original

    root = tmp_path_factory.mktemp("readme")
    sf.write(root / "talk.flac", synth_speechlike(2.0, seed=1), 16000)
    sf.write(root / "speech.flac", synth_speechlike(1.5, seed=2), 16000)
    sf.write(root / "x.wav", synth_speechlike(1.0, 22050, seed=3), 22050)
    sf.write(root / "y.flac", synth_speechlike(0.5, seed=4), 16000)
    (root / "files.txt").write_text("x.wav\ny.flac\n")
    (root / "data" / "a").mkdir(parents=True)
    sf.write(root / "data" / "a" / "b.flac", synth_speechlike(0.8, seed=5), 16000)
    sf.write(root / "data" / "c.wav", synth_speechlike(0.6, seed=6), 16000)

    torch.manual_seed(0)
    torch.save(ours_to_original(Encoder.from_config("pase+").state_dict()), root / "FE_e199.ckpt")
    for run in ("exp1", "x"):
        Encoder.from_config("pase").save_pretrained(root / "runs" / run / "encoder")

    rows = ["path,label,split"]
    (root / "wavs").mkdir()
    for i in range(8):
        split = "train" if i < 6 else "test"
        sf.write(root / "wavs" / f"v{i}.wav", synth_speechlike(0.3, seed=10 + i), 16000)
        sf.write(root / "wavs" / f"t{i}.wav", _tone(0.3, 3000 + 50 * i, seed=i), 16000)
        rows += [f"wavs/v{i}.wav,voiced,{split}", f"wavs/t{i}.wav,tone,{split}"]
    (root / "tasks.csv").write_text("\n".join(rows) + "\n")

    # The speech bundle's noise/ and rir/, so show-distortions simulates no rooms.
    (root / "speech" / "noise").mkdir(parents=True)
    (root / "speech" / "rir").mkdir()
    sf.write(root / "speech" / "noise" / "hum.wav", _tone(2.0, 100, seed=7), 16000)
    t = np.arange(2000) / 16000
    rir = np.random.default_rng(0).standard_normal(2000) * np.exp(-t / 0.05)
    sf.write(root / "speech" / "rir" / "room.wav", rir.astype(np.float32), 16000)

    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    for spk in range(8):
        for utt in range(2):
            sf.write(
                corpus / "audio" / f"{spk}-1-{utt}.wav", synth_speechlike(0.6, seed=10 * spk + utt), 16000
            )
    (corpus / "rir").mkdir()
    sf.write(corpus / "rir" / "room.wav", rir.astype(np.float32), 16000)
    _interrupted_run(root / "runs" / "plus", corpus)

    (root / "path" / "to" / "this").mkdir(parents=True)
    (root / "path" / "to" / "this" / "repo").symlink_to(ROOT)
    for block in BLOCKS:  # files the README asks the reader to write
        if block.file_name and not block.skip:
            (root / block.file_name).write_text(block.text + "\n")
    return root


def _env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PASE_SPEECH_DIR": str(workdir / "speech"),
        "PASE_CACHE_DIR": str(workdir / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def _run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _here(args: list[str]) -> list[str]:
    """``--device cuda`` becomes cpu on a machine without CUDA (stated: the option still parses)."""
    if torch.cuda.is_available():
        return args
    return ["cpu" if a.startswith("cuda") and args[i - 1] == "--device" else a for i, a in enumerate(args)]


def _parse(args: list[str], workdir: Path) -> None:
    from pase.cli import build_parser

    cwd = Path.cwd()
    try:
        os.chdir(workdir)
        build_parser().parse_args(_here(args))
    finally:
        os.chdir(cwd)


def _check_command(words: list[str], workdir: Path) -> None:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value before a command
        words = words[1:]
    program, args = words[0], words[1:]
    if program == "pase":
        reason = next((why for matches, why in PARSE_ONLY if matches(args)), None)
        if reason:
            _parse(args, workdir)
        else:
            _run([sys.executable, "-m", "pase", *_here(args)], workdir)
    elif program == "torchrun":
        at = args.index("pase.cli")
        assert args[at - 1] == "-m"
        _parse(args[at + 1 :], workdir)
    elif program in ("python", "bash"):
        script = ROOT / args[0]
        assert script.is_file(), f"README runs {args[0]}, which does not exist"
        if program == "python":
            _run([sys.executable, str(script), "--help"], workdir)
    elif program == "tensorboard":
        logdir = args[args.index("--logdir") + 1]
        assert (workdir / logdir).is_dir() or "tensorboard" not in _installed(), logdir
    else:
        pytest.fail(f"README runs `{program}`: add a rule for it to OTHER_COMMANDS in {__file__}")


def _installed() -> set[str]:
    import importlib.util

    return {name for name in ("tensorboard",) if importlib.util.find_spec(name)}


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.document}-{b.lang}-line{b.line}" for b in RUNNABLE])
def test_readme_block_runs(block: Block, workdir: Path) -> None:
    if block.skip:
        pytest.skip(block.skip)
    if block.lang == "python":
        if block.file_name:
            _run([sys.executable, block.file_name], workdir)
        else:
            _run([sys.executable, "-c", block.text], workdir)
        return
    for words in shell_commands(block.text):
        _check_command(words, workdir)


@pytest.mark.slow
def test_readme_plugin_config_trains_the_plugin_worker(workdir: Path) -> None:
    """The README's run.yaml names my_workers.py relative to itself and adds its worker."""
    from pase.cli import build_parser
    from pase.train import config_from_args
    from pase.workers import WORKERS, load_plugins

    args = build_parser().parse_args(
        ["train", "--out", str(workdir / "r"), "--config", str(workdir / "run.yaml")]
    )
    config = config_from_args(args)
    assert config.plugins == [str(workdir / "my_workers.py")]
    try:
        load_plugins(config.plugins)
        assert [w["kind"] for w in config.extra_workers] == ["log_energy"] and "log_energy" in WORKERS
    finally:
        WORKERS.pop("log_energy", None)


@pytest.mark.slow
def test_readme_demo_outputs(workdir: Path) -> None:
    """What `make demo` runs (`pase demo`), on a folder of audio: the outputs the README names."""
    done = _run([sys.executable, "-m", "pase", "demo", "--data", "data", "--out", "demo_out"], workdir)
    assert sorted(p.name for p in (workdir / "demo_out" / "features").glob("*.npy")) == ["b.npy", "c.npy"]
    assert (workdir / "demo_out" / "features" / "index.jsonl").is_file()
    assert (workdir / "demo_out" / "features.png").read_bytes()[:4] == b"\x89PNG"
    assert "picture (spectrogram over features): demo_out/features.png" in done.stdout


@pytest.mark.slow
def test_demo_without_a_speech_folder_uses_the_packaged_audio(tmp_path: Path) -> None:
    """`make demo` on a machine that has only the repository: the two packaged LibriSpeech
    utterances, named in the output, with their attribution beside them."""
    from pase.demo import PACKAGED_AUDIO

    env = {**_env(tmp_path), "PASE_SPEECH_DIR": str(tmp_path / "no-speech-here")}
    done = subprocess.run(
        [sys.executable, "-m", "pase", "demo", "--out", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"using the 2 LibriSpeech test-clean utterances packaged in {PACKAGED_AUDIO}" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out" / "features").glob("*.npy")) == [
        "1089-134686-0001.npy",
        "121-121726-0004.npy",
    ]
    assert (tmp_path / "out" / "features.png").read_bytes()[:4] == b"\x89PNG"
    assert "0/0" not in done.stderr  # no bar before the number of files is known
    attribution = (PACKAGED_AUDIO / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in attribution or "Attribution 4.0" in attribution
    assert all(f"`{p.name}`" in attribution for p in PACKAGED_AUDIO.glob("*.flac"))
    assert sum(p.stat().st_size for p in PACKAGED_AUDIO.iterdir()) < 500_000
