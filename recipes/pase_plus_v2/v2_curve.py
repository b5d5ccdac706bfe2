"""Issue 12's training curve: export a running pretraining run's encoder and probe it on the fast
tasks, one point per call, so the model card can show whether the run still improves.

    python recipes/pase_plus_v2/v2_curve.py               # ~/pase_runs/v2, its current checkpoint
    python recipes/pase_plus_v2/v2_curve.py --run DIR --seeds 0,1,2 --num-threads 1
    python recipes/pase_plus_v2/v2_curve.py --plot-only   # redraw curve.{csv,png} from the points

Each call copies ``RUN/checkpoint.pt`` (written atomically by ``pase train``, so the copy is one
consistent step) and exports its encoder to ``RUN/curve/step_N/encoder``; ``pase eval`` then
probes it (MLP probe, the seeds given) on the ablation's tasks: fsdd-digit, ravdess-speaker and
emodb-phone clean, fsdd-digit and emodb-phone under ``noise:5dB``. The packaged ``pase+`` is probed
the same way once (``RUN/curve/reference``) and drawn as dashed lines. A step already probed is
not probed again. The training run can keep going meanwhile; on a 2-core machine give each job
one thread.

``--full`` also probes the point on the issue's acceptance cells: the 6 built-in tasks, clean and
under ``noise:5dB`` (MLP probe; only the 7 cells the point has not measured yet, ~10 more minutes on
one thread); ``--backfill STEP`` does that for a step probed before, from its kept encoder.
``curve_full.{csv,png}`` draw those points against MFCC and the packaged ``pase+`` of the model
card's baseline grid (``--baselines``, the MLP folder of ``model_card_eval.sh``'s base set, beside
this script).
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
#: The model's name in the plots' titles (``recipes/pase_plus_v3/curve.py`` sets its own cells and name).
TITLE = "v2"


def _builtin_tasks() -> list[str]:
    from pase.eval.tasks import BUILTIN_TASKS, OPTIONAL_TASKS

    return [t for t in BUILTIN_TASKS if t not in OPTIONAL_TASKS]


FULL_TASKS = _builtin_tasks()  # the 6 tasks of the speech bundle, in pase eval's order
FULL_CONDITIONS: list[str | None] = [None, "noise:5dB"]


def _key(task: str, condition: str | None) -> str:
    """A cell's name in a point (``"task"`` clean, ``"task@condition"`` otherwise), as EvalPlan names it."""
    return task + (f"@{condition}" if condition else "")


FULL_KEYS = [_key(t, c) for c in FULL_CONDITIONS for t in FULL_TASKS]
BASELINES = Path(__file__).resolve().parent / "results" / "card_eval" / "base" / "builtin" / "mlp"
#: The baseline grid's feature sets drawn on curve_full.png, with their labels.
BASELINE_LABELS = {"mfcc": "MFCC", "pase+": "pase+ v1"}  # the grid measured v1, packaged until v2 shipped


def _plan(seeds: str, data: str | None) -> tp.Any:
    from pase.ablate import EvalPlan

    return EvalPlan(tasks=TASKS, conditions=CONDITIONS, seeds=seeds, probe="mlp", data=data)


def _full_plan(conditions: list[str], seeds: str, data: str | None) -> tp.Any:
    """``conditions``: ``"COND@task,task"`` specs (``COND`` empty for clean audio) of the cells to probe."""
    from pase.ablate import EvalPlan

    return EvalPlan(tasks=FULL_TASKS, conditions=list(conditions), seeds=seeds, probe="mlp", data=data)


def _point_dir(run: Path, step: int) -> Path:
    return run / "curve" / f"step_{step:06d}"


def _write_json(path: Path, data: dict[str, tp.Any]) -> None:
    from pase.audio import write_atomic

    text = json.dumps(data, indent=2) + "\n"
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


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
    from pase.export import export_encoder

    curve = run / "curve"
    curve.mkdir(parents=True, exist_ok=True)
    snapshot = curve / ".checkpoint.pt"
    shutil.copyfile(run / "checkpoint.pt", snapshot)
    tmp_encoder = curve / ".encoder"
    _, step = export_encoder(snapshot, tmp_encoder)
    snapshot.unlink()
    point_dir = _point_dir(run, step)
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
    _write_json(done, point)
    return point


def full_point(point_dir: Path, seeds: str, data: str | None) -> dict[str, tp.Any]:
    """Probe the kept encoder of a curve point on the 12 acceptance cells (once), into its point.json.

    The cells the point measured already with the same seeds (the fast ones) are taken from it, not
    probed again."""
    done = point_dir / "point.json"
    if not done.exists():
        raise FileNotFoundError(f"{point_dir}: no point.json (probe the step first)")
    point = tp.cast(dict[str, tp.Any], json.loads(done.read_text()))
    if "full" in point:
        return point
    if not (point_dir / "encoder" / "config.json").exists():
        raise FileNotFoundError(f"{point_dir}: its encoder was not kept, the full probe needs it")
    have = point["eval"] if point.get("seeds") == seeds else {}
    specs = []
    for cond in FULL_CONDITIONS:
        todo = [t for t in FULL_TASKS if _key(t, cond) not in have]
        if todo:
            specs.append(f"{cond or ''}@{','.join(todo)}")
    scores, stds = _full_plan(specs, seeds, data).run(point_dir / "encoder", point_dir / "eval_full")
    full = {k: scores[k] if k in scores else have[k] for k in FULL_KEYS if k in scores or k in have}
    full_std = {k: stds[k] if k in stds else point["eval_std"][k] for k in full}
    point.update(full=full, full_std=full_std, full_seeds=seeds)
    _write_json(done, point)
    return point


def baselines(folder: Path) -> dict[str, dict[str, float]]:
    """``{features: {"task" or "task@noise:5dB": accuracy}}`` of the baseline grid's MLP cells."""
    out: dict[str, dict[str, float]] = {}
    for sub, suffix in (("clean", ""), ("noise_5dB", "@noise:5dB")):
        path = folder / sub / "summary.json"
        if not path.exists():
            continue
        for row in json.loads(path.read_text())["results"]:
            out.setdefault(row["features"], {})[row["task"] + suffix] = float(row["accuracy"])
    return out


def reference_point(run: Path, seeds: str, data: str | None) -> dict[str, tp.Any]:
    """The packaged ``pase+`` probed the same way, once: the model packaged at that time (v1 for the
    v2 run: its reference was probed before v2 shipped)."""
    ref = run / "curve" / "reference"
    done = ref / "point.json"
    if done.exists():
        return tp.cast(dict[str, tp.Any], json.loads(done.read_text()))
    ref.mkdir(parents=True, exist_ok=True)
    scores, stds = _plan(seeds, data).run(Path("pase+"), ref / "eval")
    point = {"features": "pase+ (packaged)", "seeds": seeds, "eval": scores, "eval_std": stds}
    _write_json(done, point)
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
        from pase.plots import pyplot, save_figure

        plt = pyplot()
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
    ax.set_title(f"{TITLE} during training (dashed: the packaged pase+ when first probed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = curve / "curve.png"
    save_figure(fig, png, dpi=110)
    return png


def write_full_curve(run: Path, baseline_dir: Path) -> Path | None:
    """``curve_full.csv`` and ``curve_full.png`` (one panel per acceptance cell) from the points
    probed with ``--full``; None when there are none."""
    from pase.audio import write_atomic

    curve = run / "curve"
    points = [json.loads(p.read_text()) for p in sorted(curve.glob("step_*/point.json"))]
    points = [p for p in points if "full" in p]
    if not points:
        return None
    keys = FULL_KEYS
    lines = [",".join(["step", *keys])]
    for p in points:
        lines.append(",".join([str(p["step"]), *(f"{p['full'].get(k, float('nan')):.4f}" for k in keys)]))
    text = "\n".join(lines) + "\n"
    write_atomic(curve / "curve_full.csv", lambda tmp: Path(tmp).write_text(text))
    try:
        from pase.plots import pyplot, save_figure

        plt = pyplot()
    except ImportError:
        return curve / "curve_full.csv"
    base = baselines(baseline_dir)
    steps = [p["step"] for p in points]
    fig, axes = plt.subplots(2, len(FULL_TASKS), figsize=(16, 5.5), sharex=True)
    for ax, key in zip(axes.flat, keys, strict=True):
        values = [p["full"].get(key, float("nan")) for p in points]
        errors = [p.get("full_std", {}).get(key, 0.0) for p in points]
        label = f"{TITLE} (± std, 3 seeds)"
        ax.errorbar(steps, values, yerr=errors, fmt="o-", color="C0", capsize=2, label=label)
        for i, (features, name) in enumerate(BASELINE_LABELS.items()):
            if key in base.get(features, {}):
                ax.axhline(base[features][key], color=f"C{i + 1}", ls="--", lw=0.9, label=name)
        ax.set_title(key.replace("@noise:5dB", "\nnoise 5 dB"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(f"{TITLE} on the acceptance cells (MLP probe; dashed: the baseline grid)", fontsize=10)
    fig.tight_layout()
    png = curve / "curve_full.png"
    save_figure(fig, png, dpi=100)
    return png


def main(argv: tp.Sequence[str] | None = None, default_run: Path | None = None) -> int:
    """``default_run``: ``--run``'s default (``~/pase_runs/v2``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=default_run or Path.home() / "pase_runs" / "v2")
    parser.add_argument("--seeds", default="0,1,2", help="probe seeds (default 0,1,2)")
    parser.add_argument("--data", help="speech bundle of the eval tasks (pase eval --data)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="do not probe the packaged pase+")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the curves")
    parser.add_argument("--full", action="store_true", help="also probe the 12 acceptance cells")
    parser.add_argument("--backfill", type=int, metavar="STEP", help="only: --full for a step probed before")
    parser.add_argument("--baselines", type=Path, default=BASELINES, help="MLP folder of the baseline grid")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.num_threads)
    try:
        if args.backfill is not None:
            full_point(_point_dir(args.run, args.backfill), args.seeds, args.data)
        elif not args.plot_only:
            if not (args.run / "checkpoint.pt").exists():
                print(f"curve: no checkpoint.pt in {args.run}", file=sys.stderr)
                return 2
            point = probe_point(args.run, args.seeds, args.data)
            print(json.dumps(point["eval"], indent=2))
            if not args.no_reference:
                reference_point(args.run, args.seeds, args.data)
            if args.full:
                full_point(_point_dir(args.run, point["step"]), args.seeds, args.data)
    except FileNotFoundError as exc:
        print(f"curve: {exc}", file=sys.stderr)
        return 2
    print(f"curve: {write_curve(args.run)}")
    full = write_full_curve(args.run, args.baselines)
    if full is not None:
        print(f"acceptance cells: {full}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
