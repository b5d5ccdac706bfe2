"""Issue 12's training curve: export a running pretraining run's encoder and probe it on the fast
tasks, one point per call, so the model card can show whether the run still improves.

    python bench/v2_curve.py                          # ~/pase_runs/v2, its current checkpoint
    python bench/v2_curve.py --run DIR --seeds 0,1,2 --num-threads 1
    python bench/v2_curve.py --plot-only              # redraw curve.{csv,png} from the points

Each call copies ``RUN/checkpoint.pt`` (written atomically by ``pase train``, so the copy is one
consistent step) and exports its encoder to ``RUN/curve/step_N/encoder``; ``pase eval`` then
probes it (MLP probe, the seeds given) on the ablation's tasks: fsdd-digit, ravdess-speaker and
emodb-phone clean, fsdd-digit and emodb-phone under ``noise:5dB``. The packaged ``pase+`` is probed
the same way once (``RUN/curve/reference``) and drawn as dashed lines. A step already probed is
not probed again. The training run can keep going meanwhile; on a 2-core machine give each job
one thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import typing as tp
from pathlib import Path

TASKS = ["fsdd-digit", "ravdess-speaker", "emodb-phone"]
CONDITIONS: list[str | None] = [None, "noise:5dB@fsdd-digit,emodb-phone"]


def _plan(seeds: str, data: str | None) -> tp.Any:
    from pase.ablate import EvalPlan

    return EvalPlan(tasks=TASKS, conditions=CONDITIONS, seeds=seeds, probe="mlp", data=data)


def _valid_at(run: Path, step: int) -> dict[str, float]:
    """The validation row of ``run`` logged at or just before ``step`` (empty if none)."""
    path = run / "valid.csv"
    if not path.exists():
        return {}
    best: dict[str, float] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if int(float(row["step"])) <= step:
                best = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return best


def probe_point(run: Path, seeds: str, data: str | None) -> dict[str, tp.Any]:
    """Export ``run``'s current encoder and probe it (or read the point back if done before)."""
    from pase.audio import write_atomic
    from pase.export import export_encoder

    curve = run / "curve"
    curve.mkdir(parents=True, exist_ok=True)
    snapshot = curve / ".checkpoint.pt"
    shutil.copyfile(run / "checkpoint.pt", snapshot)
    tmp_encoder = curve / ".encoder"
    _, step = export_encoder(snapshot, tmp_encoder)
    snapshot.unlink()
    point_dir = curve / f"step_{step:06d}"
    done = point_dir / "point.json"
    if done.exists():
        shutil.rmtree(tmp_encoder)
        print(f"step {step} was probed before: {done}")
        return tp.cast(dict[str, tp.Any], json.loads(done.read_text()))
    point_dir.mkdir(exist_ok=True)
    if (point_dir / "encoder").exists():
        shutil.rmtree(point_dir / "encoder")
    tmp_encoder.rename(point_dir / "encoder")
    scores, stds = _plan(seeds, data).run(point_dir / "encoder", point_dir / "eval")
    valid = _valid_at(run, step)
    point = {"step": step, "seeds": seeds, "eval": scores, "eval_std": stds, "valid": valid}
    text = json.dumps(point, indent=2) + "\n"
    write_atomic(done, lambda tmp: Path(tmp).write_text(text))
    return point


def reference_point(run: Path, seeds: str, data: str | None) -> dict[str, tp.Any]:
    """The packaged ``pase+`` probed the same way (once)."""
    from pase.audio import write_atomic

    ref = run / "curve" / "reference"
    done = ref / "point.json"
    if done.exists():
        return tp.cast(dict[str, tp.Any], json.loads(done.read_text()))
    ref.mkdir(parents=True, exist_ok=True)
    scores, stds = _plan(seeds, data).run(Path("pase+"), ref / "eval")
    point = {"features": "pase+ (packaged)", "seeds": seeds, "eval": scores, "eval_std": stds}
    text = json.dumps(point, indent=2) + "\n"
    write_atomic(done, lambda tmp: Path(tmp).write_text(text))
    return point


def write_curve(run: Path) -> Path:
    """``curve.csv`` (one row per probed step) and ``curve.png`` from every ``point.json``."""
    from pase.audio import write_atomic

    curve = run / "curve"
    points = [json.loads(p.read_text()) for p in sorted(curve.glob("step_*/point.json"))]
    keys = sorted({k for p in points for k in p["eval"]})
    valid_keys = ["gim_acc", "lim_acc"]
    lines = [",".join(["step", *keys, *(f"valid_{k}" for k in valid_keys)])]
    for p in points:
        cells = [str(p["step"]), *(f"{p['eval'].get(k, float('nan')):.4f}" for k in keys)]
        cells += [f"{p['valid'].get(k, float('nan')):.4f}" for k in valid_keys]
        lines.append(",".join(cells))
    text = "\n".join(lines) + "\n"
    write_atomic(curve / "curve.csv", lambda tmp: Path(tmp).write_text(text))
    ref_file = curve / "reference" / "point.json"
    ref = json.loads(ref_file.read_text())["eval"] if ref_file.exists() else {}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: curve.png not drawn (pip install 'pase-speech[plots]')")
        return curve / "curve.csv"
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [p["step"] for p in points]
    for i, key in enumerate(keys):
        color = f"C{i}"
        ax.plot(steps, [p["eval"].get(key, float("nan")) for p in points], "o-", color=color, label=key)
        if key in ref:
            ax.axhline(ref[key], color=color, ls="--", lw=0.8)
    ax.set_xlabel("training step (batch 4)")
    ax.set_ylabel("test accuracy (MLP probe)")
    ax.set_title("v2 during training (dashed: packaged pase+)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = curve / "curve.png"
    write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return png


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=Path.home() / "pase_runs" / "v2")
    parser.add_argument("--seeds", default="0,1,2", help="probe seeds (default 0,1,2)")
    parser.add_argument("--data", help="speech bundle of the eval tasks (pase eval --data)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="do not probe the packaged pase+")
    parser.add_argument("--plot-only", action="store_true", help="only redraw curve.{csv,png}")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.num_threads)
    if not args.plot_only:
        if not (args.run / "checkpoint.pt").exists():
            print(f"v2_curve: no checkpoint.pt in {args.run}", file=sys.stderr)
            return 2
        point = probe_point(args.run, args.seeds, args.data)
        print(json.dumps(point["eval"], indent=2))
        if not args.no_reference:
            reference_point(args.run, args.seeds, args.data)
    print(f"curve: {write_curve(args.run)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
