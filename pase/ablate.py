"""``pase ablate``: train variants of a recipe under one budget, evaluate each, one table.

The PASE+ paper's worker ablation as a tool. Every variant starts from the same base config
(preset, ``--config`` file and ``--set`` overrides), so the data, seed, validation hold-out and
distortions are the same; only its own overrides differ. Each variant trains for the same budget
(``--budget SECONDS`` of training steps, on the wall clock or this process's CPU clock; and/or
``--max-steps``), the poly schedule decaying over that budget; then ``pase eval`` probes its
encoder on the chosen tasks, clean and under each ``--distort`` condition.

Variants: ``all`` (the base recipe) always; ``--drop X`` (repeatable; ``--drop lps,lps_long``
drops both in one variant ``no-lps+lps_long``); ``--variant NAME:KEY=VALUE,...`` with TrainConfig
fields as keys and dotted paths into nested ones (``worker_options.gim.negatives=batch``,
``distortions.noise_p=0``); values are JSON when they parse, else strings.

Output folder::

    OUT/variants/NAME/run/      the training run (resumable; see ``pase train``)
    OUT/variants/NAME/eval/     pase eval results per condition
    OUT/variants/NAME/done.json the variant's row (a finished variant is not re-run)
    OUT/ablation.json, ablation.md, ablation.png

Rerunning the same command resumes: finished variants are read back (``--reeval --seeds 0,1,2``
evaluates them again with more probe seeds, without retraining), an interrupted one
continues from its checkpoint with the time it had already spent. The same command started
several times at once (say one process per core, each ``num_threads=1``) shares the work: each
process takes the next variant that no live process holds (``OUT/variants/NAME/lock``), and the
table lists every finished variant whichever process trained it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import sys
import typing as tp
from pathlib import Path

from pase.audio import write_atomic

if tp.TYPE_CHECKING:
    from pase.train import TrainConfig

Row = dict[str, tp.Any]


@dataclasses.dataclass
class Variant:
    """A named set of TrainConfig overrides (nested dicts for nested fields)."""

    name: str
    overrides: dict[str, tp.Any] = dataclasses.field(default_factory=dict)


def _value(text: str) -> tp.Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(text: str) -> dict[str, tp.Any]:
    """``"a=1,b.c=x"`` -> ``{"a": 1, "b": {"c": "x"}}`` (values JSON when they parse).

    Commas inside brackets belong to the value: ``drop_workers=["lps","lps_long"]``."""
    out: dict[str, tp.Any] = {}
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    for part in filter(None, (p.strip() for p in parts)):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {part!r} (in {text!r})")
        node = out
        *path, leaf = key.strip().split(".")
        for k in path:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {k} is set both as a value and as a group")
        node[leaf] = _value(value.strip())
    return out


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE,...``."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--variant needs NAME:KEY=VALUE,..., got {text!r}")
    return Variant(name.strip(), parse_assignments(rest))


def drop_variant(text: str) -> Variant:
    """``--drop lps,lps_long`` -> variant ``no-lps+lps_long`` without those workers."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--drop needs worker names")
    return Variant("no-" + "+".join(names), {"drop_workers": names})


def _merge(base: dict[str, tp.Any], extra: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def variant_config(base: TrainConfig, variant: Variant) -> TrainConfig:
    from pase.train import TrainConfig

    return TrainConfig.from_dict(_merge(base.to_dict(), variant.overrides))


def _last_row(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)} if rows else {}


@dataclasses.dataclass
class EvalPlan:
    """What every variant's encoder is evaluated on (arguments of ``pase eval``)."""

    tasks: list[str]
    manifest: str | None = None
    conditions: list[str | None] = dataclasses.field(default_factory=lambda: [None])
    seeds: str = "0"
    probe: str = "mlp"
    data: str | None = None
    cache_dir: str | None = None

    def run(self, encoder: Path, out: Path) -> tuple[dict[str, float], dict[str, float]]:
        """``{"task" or "task@condition": accuracy}`` for this encoder (mean over the seeds),
        and the same keys with the standard deviation over seeds."""
        from pase.eval.__main__ import main
        from pase.eval.results import TaskResult

        scores: dict[str, float] = {}
        stds: dict[str, float] = {}
        for spec in self.conditions:
            # "noise:5dB@fsdd-digit,emodb-phone": a condition for some of the tasks only
            # ("@fsdd-digit": clean audio, some of the tasks only)
            cond, _, only = (spec or "").partition("@")
            tasks = [t.strip() for t in only.split(",") if t.strip()] or self.tasks
            where = out / (spec.replace(":", "_").replace("@", "_at_").replace(",", "+") if spec else "clean")
            args = ["--features", str(encoder), "--out", str(where), "--seeds", self.seeds]
            args += ["--probe", self.probe]
            args += ["--manifest", self.manifest] if self.manifest else ["--task", ",".join(tasks)]
            args += ["--data", self.data] if self.data else []
            args += ["--cache-dir", self.cache_dir] if self.cache_dir else []
            args += ["--distort", cond] if cond else []
            code = main(args)  # Ctrl-C raises KeyboardInterrupt through it: no partial row is recorded
            for path in sorted(where.rglob("results.json")):
                result = TaskResult.from_dict(json.loads(path.read_text()))
                key = result.task + (f"@{cond}" if cond else "")
                scores[key] = float(result.scores["accuracy"])
                stds[key] = float(result.scores.get("accuracy_std", 0.0))
            if code != 0 and not scores:
                raise RuntimeError(f"pase eval failed for {encoder} ({cond or 'clean'}); see above")
        return scores, stds


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _hold(vdir: Path) -> tp.Iterator[bool]:
    """Whether this process may work on the variant in ``vdir``: a lock file with our pid; a
    lock whose process is gone is taken over."""
    vdir.mkdir(parents=True, exist_ok=True)
    lock = vdir / "lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if _pid_alive(int(lock.read_text().strip() or "0")):
                    yield False
                    return
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


BUSY: Row = {"busy": True}


def _done_row(vdir: Path) -> Row | None:
    """The variant's finished row (``done.json``), or None."""
    done = vdir / "done.json"
    return tp.cast(Row, json.loads(done.read_text())) if done.exists() else None


def _stale(row: Row, plan: EvalPlan, reeval: bool) -> bool:
    """Whether ``reeval`` asks to probe a finished row again (its probes ran with other seeds)."""
    return reeval and row.get("eval_seeds", "0") != plan.seeds


def run_variant(
    variant: Variant,
    base: TrainConfig,
    out: Path,
    plan: EvalPlan,
    progress: bool = True,
    reeval: bool = False,
) -> Row | None:
    """Train (or resume) and evaluate one variant: its row; ``BUSY`` when another live process
    holds it; None when interrupted. ``reeval``: a finished variant whose probes ran with other
    seeds is evaluated again (its encoder is not retrained; cached features are reused)."""
    from pase.progress import say

    vdir = out / "variants" / variant.name
    row = _done_row(vdir)
    if row is not None and not _stale(row, plan, reeval):
        say(f"ablate: {variant.name}: finished earlier, not re-run")
        return row
    with _hold(vdir) as mine:
        if not mine:
            say(f"ablate: {variant.name}: another process is on it, next one")
            return BUSY
        row = _done_row(vdir)  # another process may have finished it since the check above
        if row is None:
            return _train_and_evaluate(variant, base, vdir, plan, progress)
        if not _stale(row, plan, reeval):
            return row
        say(f"ablate: {variant.name}: evaluating again with probe seeds {plan.seeds}")
        return _evaluate(row, vdir, plan)


def _evaluate(row: Row, vdir: Path, plan: EvalPlan) -> Row:
    """Probe the variant's encoder per ``plan`` and write its row to ``done.json``."""
    row["eval"], row["eval_std"] = plan.run(vdir / "run" / "encoder", vdir / "eval")
    row["eval_seeds"] = plan.seeds
    text = json.dumps(row, indent=2) + "\n"
    write_atomic(vdir / "done.json", lambda tmp: Path(tmp).write_text(text))
    return row


def _train_and_evaluate(
    variant: Variant, base: TrainConfig, vdir: Path, plan: EvalPlan, progress: bool
) -> Row | None:
    from pase.progress import say
    from pase.train import CHECKPOINT, Trainer

    config = variant_config(base, variant)
    run_dir = vdir / "run"
    resume = (run_dir / CHECKPOINT).exists()
    say(f"ablate: {variant.name}: {'resuming' if resume else 'training'} ({variant.overrides or 'base'})")
    trainer = Trainer(config, run_dir, resume=resume, progress=progress)
    if trainer.run() != 0:
        return None
    row: Row = {
        "variant": variant.name,
        "overrides": variant.overrides,
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 1),
        "budget_clock": config.budget_clock,
        "workers": trainer.model.worker_names,
        "valid": _last_row(run_dir / "valid.csv"),
    }
    return _evaluate(row, vdir, plan)


def ablation_markdown(rows: tp.Sequence[Row]) -> str:
    """One table: budget used, downstream accuracy per task, and validation loss per worker."""
    tasks = sorted({k for r in rows for k in r["eval"]})
    workers = sorted({k for r in rows for k in r["valid"] if k not in ("step",)})
    head = ["variant", "steps", "train s", *tasks, *(f"valid {w}" for w in workers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], str(r["steps"]), f"{r['train_seconds']:.0f}"]
        stds = r.get("eval_std", {}) if "," in str(r.get("eval_seeds", "0")) else {}
        cells += [
            "-" if t not in r["eval"] else f"{r['eval'][t]:.3f}" + (f" ± {stds[t]:.3f}" if t in stds else "")
            for t in tasks
        ]
        cells += [f"{r['valid'][w]:.4g}" if w in r["valid"] else "-" for w in workers]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        "\nDownstream columns: probe accuracy on the test split (`task@condition`: test audio "
        "distorted; mean ± std over the probe seeds when there are several). "
        "`valid *`: the last validation of the run (losses; `*_acc`: discriminator "
        "pair accuracy on held-out speakers, chance 0.5; `waveform_rel_l1`: 1.0 = silence).\n"
    )
    return "\n".join(lines) + "\n" + notes


def plot_ablation(rows: tp.Sequence[Row], path: Path) -> bool:
    """Grouped bars: accuracy per task per variant. False when matplotlib is missing."""
    try:
        from pase.plots import pyplot, save_figure

        plt = pyplot()
    except ImportError:
        return False
    import numpy as np

    tasks = sorted({k for r in rows for k in r["eval"]})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(tasks) + 2), 4))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(tasks))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r["eval"].get(t, np.nan) for t in tasks], width, label=r["variant"])
    ax.set_xticks(x + 0.4 - width / 2, tasks, rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_title("pase ablate: equal training budget per variant")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def write_ablation(rows: tp.Sequence[Row], out: Path) -> None:
    text = json.dumps(list(rows), indent=2) + "\n"
    write_atomic(out / "ablation.json", lambda tmp: Path(tmp).write_text(text))
    md = ablation_markdown(rows)
    write_atomic(out / "ablation.md", lambda tmp: Path(tmp).write_text(md))
    if not plot_ablation(rows, out / "ablation.png"):
        from pase.cli_args import install_hint

        print(f"pase ablate: no ablation.png ({install_hint('eval')} for matplotlib)", file=sys.stderr)


def run_ablation(
    base: TrainConfig,
    variants: tp.Sequence[Variant],
    out: Path,
    plan: EvalPlan,
    progress: bool = True,
    reeval: bool = False,
) -> int:
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    for v in variants:  # a typo fails now, not after hours of training the variants before it
        variant_config(base, v)
    busy = []
    for v in variants:
        try:
            row = run_variant(v, base, out, plan, progress, reeval)
        except KeyboardInterrupt:
            row = None
        if row is None:
            print(
                f"pase ablate: interrupted in {v.name}; rerun the same command to continue", file=sys.stderr
            )
            return 130
        if row is BUSY:
            busy.append(v.name)
        finished = finished_rows(variants, out)
        if finished:
            write_ablation(finished, out)
    rows = finished_rows(variants, out)
    held = f"; still running elsewhere: {', '.join(busy)}" if busy else ""
    print(
        f"pase ablate: {len(rows)} variant(s) finished; table in {out / 'ablation.md'}{held}", file=sys.stderr
    )
    return 0


def finished_rows(variants: tp.Sequence[Variant], out: Path) -> list[Row]:
    """The rows of the finished variants, in the order given (whichever process trained them)."""
    rows = []
    for v in variants:
        done = out / "variants" / v.name / "done.json"
        if done.exists():
            rows.append(tp.cast(Row, json.loads(done.read_text())))
    return rows


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="train recipe variants under one budget and compare them downstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="pase+", help="base training preset (default: pase+)")
    p.add_argument("--config", help="JSON or YAML file of TrainConfig fields for the base")
    p.add_argument("--data", nargs="+", help="training audio (as pase train --data)")
    p.add_argument("--out", required=True, type=Path, help="ablation folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...", help="base overrides")
    p.add_argument("--budget", type=float, help="training seconds per variant")
    p.add_argument(
        "--clock", choices=("wall", "process"), default="wall", help="budget clock (default: wall)"
    )
    p.add_argument("--max-steps", type=int, help="training steps per variant (with or instead of --budget)")
    # --drop and --variant fill one list, so variants train in the order given
    p.add_argument(
        "--drop",
        action="append",
        dest="variants",
        default=[],
        type=drop_variant,
        help="a variant without these workers (w1,w2)",
    )
    p.add_argument(
        "--variant",
        action="append",
        dest="variants",
        type=parse_variant,
        help="NAME:KEY=VALUE,... (repeatable)",
    )
    p.add_argument("--no-base", action="store_true", help="skip the 'all' (base recipe) variant")
    p.add_argument("--tasks", default="fsdd-digit,ravdess-speaker,emodb-phone", help="pase eval tasks")
    p.add_argument("--manifest", help="evaluate on a pase eval task manifest instead of --tasks")
    p.add_argument(
        "--distort",
        action="append",
        default=[],
        help="extra eval condition on the test audio, e.g. noise:5dB, or noise:5dB@fsdd-digit for some tasks",
    )
    p.add_argument("--seeds", default="0", help="probe seeds (default: 0)")
    p.add_argument(
        "--reeval",
        action="store_true",
        help="evaluate finished variants again when their probes ran with other --seeds "
        "(encoders are not retrained; cached features are reused, so only the probes run)",
    )
    p.add_argument("--probe", choices=("mlp", "linear"), default="mlp")
    p.add_argument("--eval-data", help="speech bundle of the eval tasks (pase eval --data)")
    p.add_argument("--eval-cache", help="feature cache of pase eval")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from pase.audio import AudioError
    from pase.train import TrainConfig, load_config_file

    try:
        base = TrainConfig.from_preset(args.preset)
        if args.config:
            base = base.updated(load_config_file(args.config))
        for text in args.set:
            base = TrainConfig.from_dict(_merge(base.to_dict(), parse_assignments(text)))
        budget: dict[str, tp.Any] = {"budget_clock": args.clock}
        if args.data:
            budget["data"] = args.data
        if args.budget is None and args.max_steps is None:
            raise ValueError("give --budget SECONDS and/or --max-steps N: every variant gets the same")
        budget["max_seconds"] = args.budget
        budget["max_steps"] = args.max_steps
        budget["epochs"] = None
        base = base.updated(budget)
        variants = [] if args.no_base else [Variant("all")]
        variants += args.variants
        if not variants:
            raise ValueError("no variants: drop --no-base or add --drop/--variant")
        plan = EvalPlan(
            tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
            manifest=args.manifest,
            conditions=[None, *args.distort],
            seeds=args.seeds,
            probe=args.probe,
            data=args.eval_data,
            cache_dir=args.eval_cache,
        )
        return run_ablation(base, variants, args.out, plan, progress=not args.no_progress, reeval=args.reeval)
    except (AudioError, ValueError, OSError, RuntimeError) as err:
        print(f"pase ablate: {err}", file=sys.stderr)
        return 2
