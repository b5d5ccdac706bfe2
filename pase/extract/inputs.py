"""What ``pase extract`` extracts and where each output goes: command-line inputs (audio files,
folders, list files) resolved to :class:`Job` s, one input file and its output path each.

The layout is described in :mod:`pase.extract`.
"""

from __future__ import annotations

import os
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from pase.audio import AudioError, find_audio_files

LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Job:
    """One input file and the output path it is written to."""

    source: Path
    output: Path


def _read_list(list_path: Path) -> list[Path]:
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AudioError(list_path, f"cannot read list file ({type(exc).__name__}: {exc})") from None
    entries = (line.strip() for line in lines)
    return [list_path.parent / e for e in entries if e and not e.startswith("#")]


def _is_list_file(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def resolve_inputs(
    inputs: tp.Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], suffix: str
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Map command-line inputs to :class:`Job` s (layout: :mod:`pase.extract`).

    Returns ``(jobs, problems)``: ``problems`` are ``(input, problem)`` pairs for list files that
    cannot be read, folders without audio, and outputs that two inputs would both write. A path
    that does not exist stays a job so that loading reports it like any other bad file.
    """
    out = Path(out_dir)
    jobs: dict[Path, Job] = {}
    problems: list[tuple[str, str]] = []

    def add(source: Path, output: Path) -> None:
        previous = jobs.get(output)
        if previous is None:
            jobs[output] = Job(source, output)
        elif previous.source.resolve() != source.resolve():
            problems.append((str(source), f"output {output} is already written for {previous.source}"))

    def visit(path: Path, from_list: bool) -> None:
        if path.is_dir():
            files = find_audio_files(path)
            if not files:
                problems.append((str(path), "folder holds no audio files"))
            for f in files:
                add(f, out / f.relative_to(path).with_suffix(suffix))
        elif not from_list and _is_list_file(path):
            for entry in _read_list(path):
                visit(entry, from_list=True)
        else:
            add(path, out / (path.stem + suffix))

    for item in inputs:
        text = os.fspath(item)
        try:
            if text.startswith("@"):
                for entry in _read_list(Path(text[1:])):
                    visit(entry, from_list=True)
            else:
                visit(Path(text), from_list=False)
        except AudioError as err:
            problems.append((err.path, err.problem))
    return list(jobs.values()), problems
