"""Progress bars that suit a terminal and a log file alike.

On a terminal, :func:`progress` is a plain tqdm bar. When stderr is not a terminal (a log
file, a CI job, ``nohup``), tqdm's carriage returns would pile up into one line of hundreds of
kilobytes, so the bar prints a whole line instead, at most every :data:`LOG_INTERVAL`
seconds, and its final state once; so it does under ``torchrun`` with several processes, where
another rank's message would otherwise land on the end of a bar's line. ``pase --no-progress``
(or ``PASE_NO_PROGRESS=1``) turns the bars off (:func:`disabled`); :func:`say` prints a message
without tearing a bar that is on screen.
"""

from __future__ import annotations

import contextlib
import os
import sys
import typing as tp

from tqdm import tqdm

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0


def enabled() -> bool:
    """Whether progress is shown (``PASE_NO_PROGRESS`` unset, empty or ``0``)."""
    return os.environ.get("PASE_NO_PROGRESS", "") in ("", "0")


@contextlib.contextmanager
def disabled() -> tp.Iterator[None]:
    """No progress bars inside the block, in this process and the processes it starts."""
    # tqdm reads TQDM_* variables as defaults, so bars not made here (a library's) obey too.
    names = ("PASE_NO_PROGRESS", "TQDM_DISABLE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_terminal(stream: tp.Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def several_processes() -> bool:
    """Whether this process is one of several ``torchrun`` ranks (``WORLD_SIZE`` > 1).

    Read from the environment as :meth:`pase.distributed.Ranks.from_env` does, so that this
    module stays free of torch (``pase plot`` draws bars without it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class _LogLines(tqdm):  # type: ignore[type-arg]
    """tqdm writing whole lines (no carriage return), for logs; throttled by ``mininterval``."""

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        # tqdm clears its line on close (msg ""): a log has nothing to clear; returning None
        # (falsy) also keeps tqdm from writing its trailing carriage return. A bar that counts
        # nothing yet (made before its total is known) would only log a stray "0/0".
        if msg == "" or (not self.total and not self.n):
            return
        self._shown_n = self.n
        self.fp.write((msg if msg is not None else str(self)) + "\n")
        self.fp.flush()

    # tqdm redraws on every new postfix or description; in a log that is a line per call (per
    # file), so they wait for the next throttled line instead.
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description_str(self, desc: str | None = None, refresh: bool | None = True) -> None:
        super().set_description_str(desc, refresh=False)

    def close(self) -> None:
        if not self.disable and getattr(self, "_shown_n", None) != self.n:
            self.display()  # the final count, once
        self.leave = False  # the final line is already written
        super().close()


def progress(iterable: tp.Iterable[tp.Any] | None = None, **kwargs: tp.Any) -> tqdm:  # type: ignore[type-arg]
    """A tqdm bar on stderr: a live bar on a terminal, periodic lines otherwise (see module doc)."""
    stream = kwargs.pop("file", None) or sys.stderr
    kwargs["disable"] = kwargs.get("disable", False) or not enabled()
    if is_terminal(stream) and not several_processes():
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    kwargs.pop("dynamic_ncols", None)
    return _LogLines(iterable, file=stream, **kwargs)


def say(line: str) -> None:
    """Print ``line`` to stderr without breaking a progress bar on screen."""
    # One write of the whole line (tqdm.write writes the newline apart): under torchrun, two
    # ranks writing at once then cannot glue their messages together on unbuffered streams.
    with tqdm.external_write_mode(file=sys.stderr):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
