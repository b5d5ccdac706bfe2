"""Issue 28's training curve: a point every ~2 500 steps of the v3 run on the cells that chose its
recipe (the ablation's: ravdess-speaker, emodb-emotion, librispeech-speaker40, emodb-phone and
fsdd-digit clean; ravdess-speaker, fsdd-digit and librispeech-speaker40 under ``reverb``;
ravdess-speaker and fsdd-digit under ``noise:5dB``), MLP probe, 3 seeds.

    python recipes/pase_plus_v3/curve.py                 # ~/pase_runs/v3, its current checkpoint
    python recipes/pase_plus_v3/curve.py --run DIR --num-threads 2
    python recipes/pase_plus_v3/curve.py --plot-only

The machinery is v2's (``recipes/pase_plus_v2/v2_curve.py``: the checkpoint copied, its encoder
exported to ``RUN/curve/step_N/encoder``, a step probed once, ``curve.{csv,png}`` redrawn; the
reference is the packaged ``pase+``, v2 until v3 ships). Pause the training run first on a 2-core
machine (SIGINT checkpoints; ``train.sh`` resumes it), or give each job one thread.
"""

from __future__ import annotations

import importlib.util
import sys
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = ["ravdess-speaker", "emodb-emotion", "librispeech-speaker40", "emodb-phone", "fsdd-digit"]
CONDITIONS: list[str | None] = [
    None,
    "reverb@ravdess-speaker,fsdd-digit,librispeech-speaker40",
    "noise:5dB@ravdess-speaker,fsdd-digit",
]


def load_v2_curve() -> tp.Any:
    """v2's curve module with the ablation's cells and v3's name."""
    path = HERE.parent / "pase_plus_v2" / "v2_curve.py"
    spec = importlib.util.spec_from_file_location("pase_plus_v3_curve_base", path)
    assert spec is not None and spec.loader is not None
    module: tp.Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.TASKS, module.CONDITIONS, module.TITLE = TASKS, CONDITIONS, "v3"
    return module


def main(argv: tp.Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--full" in argv or "--backfill" in argv:
        print("v3 curve: --full / --backfill are v2's; v3's acceptance grid is card.py's", file=sys.stderr)
        return 2
    return int(load_v2_curve().main(argv, default_run=Path.home() / "pase_runs" / "v3"))


if __name__ == "__main__":
    raise SystemExit(main())
