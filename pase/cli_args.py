"""Argparse helpers that every ``pase`` command shares: the parser class, device checks, help
text from docstrings and field comments, and advice for a missing optional dependency.

Kept apart from :mod:`pase.cli` (the dispatcher), so that the commands' own modules use them
without importing the dispatcher that imports them.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import re
import textwrap
import typing as tp

#: Optional dependencies and the extra that installs each.
EXTRAS = {"matplotlib": "eval", "yaml": "train", "pyroomacoustics": "train", "tensorboard": "train"}


class Parser(argparse.ArgumentParser):
    """argparse with whole option names only (``--layer`` is not ``--layers``) and short errors:
    the problem and where to read more, without the whole usage first."""

    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> tp.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")

    def parse_args(  # type: ignore[override]
        self, args: tp.Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        # argparse reports a command's unknown option from the top parser, which would point to
        # `pase --help`; the command's own help is the one that lists its options.
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(
                2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)}\n(see `{prog} --help`)\n"
            )
        return parsed


def check_device(spec: str) -> str:
    """``spec`` if this machine can run on it; else a ``ValueError`` saying what is wrong.

    Accepts ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` where available.
    """
    import torch

    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {spec}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {spec}: unsupported device type {device.type!r}; use cpu or cuda")
    return spec


def device_arg(spec: str) -> str:
    """:func:`check_device` as an argparse ``type``: a bad device is a usage error."""
    try:
        return check_device(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None


def plain(text: str) -> str:
    """Docstring text without reST markup, for ``--help``: ``x`` and :class:`a.B` -> x and B."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return re.sub(r"(?<![\w*])\*(\w[^*]*\w)\*(?!\w)", r"\1", text)


def field_docs(cls: type, fallback: tp.Mapping[str, str] | None = None) -> dict[str, str]:
    """The documentation of each field of a dataclass, read from its source: the ``#:`` comment
    lines above the field, or the string literal below it. A field without either takes its
    text from ``fallback``, else shares the text of the field above it (one comment often
    describes a group, e.g. two learning rates). Markup is removed (:func:`plain`)."""
    fallback = fallback or {}
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    previous = ""
    for i, node in enumerate(body.body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        row = node.lineno - 2  # the line above, 0-based
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        after = body.body[i + 1] if i + 1 < len(body.body) else None
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            comment = [str(after.value.value)]
        text = " ".join(" ".join(comment).split()) or fallback.get(node.target.id, previous)
        docs[node.target.id] = previous = plain(text)
    return docs


def installed_from() -> tuple[str, bool] | None:
    """Where this ``pase`` was installed from, when that was a folder: its path and whether the
    install is editable; None for an install from a wheel or an index.

    A package imported from a source checkout (an editable install, or ``PYTHONPATH``) is that
    checkout, editable; otherwise pip's ``direct_url.json`` (PEP 610) says which folder
    ``pip install`` was given."""
    import importlib.metadata
    import json
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    checkout = Path(__file__).resolve().parents[1]
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file() and 'name = "pase-speech"' in pyproject.read_text(encoding="utf-8"):
        return str(checkout), True
    try:
        direct = importlib.metadata.distribution("pase-speech").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    info = json.loads(direct or "{}")
    url = urlparse(info.get("url", ""))
    if "dir_info" not in info or url.scheme != "file":
        return None
    return unquote(url.path), bool(info["dir_info"].get("editable"))


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation: ``pip install -e '.[eval]'`` in
    a source checkout (``pase-speech`` is not on PyPI), ``pip install 'pase-speech[eval]'``
    for an install from a wheel."""
    source = installed_from()
    if source is None:
        return f"pip install 'pase-speech[{extra}]'"
    folder, editable = source
    where = "." if os.path.realpath(folder) == os.path.realpath(os.getcwd()) else folder
    return f"pip install {'-e ' if editable else ''}'{where}[{extra}]'"


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """Advice that names the extra to install (:func:`install_hint`) when ``err`` is an optional
    dependency."""
    root = (err.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f"this needs {root}, which is not installed: {install_hint(EXTRAS[root])}"
