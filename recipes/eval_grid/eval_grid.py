"""The LibriSpeech evaluation grid of the README: CTC ASR (WER/CER) under clean, noisy and
reverberant test audio, 40-speaker ID, and fine-tuned vs frozen encoders, one ``pase eval`` call
per cell, resumable, then one table.

    python recipes/eval_grid/eval_grid.py --out ~/pase_runs/eval_grid              # every part
    python recipes/eval_grid/eval_grid.py --out DIR --parts asr --features mfcc,fbank
    python recipes/eval_grid/eval_grid.py --out DIR --table-only                    # rebuild grid.{json,md}

Each cell runs in its own folder (``OUT/<part>/<condition>/<features>``) and is skipped when it
finished before (``grid_cell.json``, written last), so a stopped grid resumes where it was
(features are cached by ``pase eval`` too). Cells run one after another, on ``--num-threads``
(default 1: the grid is meant to run beside a training run on a 2-core machine; wall times are
reported as measured, with the load average). ``grid.json`` and ``grid.md`` in OUT gather every finished cell.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

from pase.eval.results import TaskResult

FEATURES = ("mfcc", "fbank", "random:pase+", "pase+")
CONDITIONS = ("clean", "noise:5dB", "reverb")
# (task, encoder) pairs fine-tuned, most telling first: the packaged encoder on a frame task,
# four utterance tasks and ASR, and the random-init encoder on two of the same tasks.
FINETUNE = (("emodb-phone", "pase+"), ("ravdess-speaker", "pase+"), ("fsdd-digit", "pase+"),
            ("emodb-emotion", "pase+"), ("emodb-phone", "random:pase+"), ("librispeech-asr", "pase+"),
            ("ravdess-emotion", "pase+"), ("fsdd-digit", "random:pase+"))  # fmt: skip


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in name)


def cells(parts: tp.Sequence[str], features: tp.Sequence[str], asr_seeds: str) -> list[dict[str, tp.Any]]:
    """Every cell of the requested parts: its folder and ``pase eval`` options."""
    out: list[dict[str, tp.Any]] = []
    if "asr" in parts:
        for cond in CONDITIONS:
            for feat in features:
                args = ["--task", "librispeech-asr", "--features", feat, "--seeds", asr_seeds]
                args += [] if cond == "clean" else ["--distort", cond]
                out.append({"part": "asr", "condition": cond, "features": feat, "args": args})
    if "speaker40" in parts:
        for feat in features:
            args = ["--task", "librispeech-speaker40", "--features", feat, "--seeds", "0,1,2"]
            out.append({"part": "speaker40", "condition": "clean", "features": feat, "args": args})
    if "finetune" in parts:
        for task, feat in FINETUNE:
            args = ["--task", task, "--features", feat, "--seeds", "0", "--finetune"]
            out.append({"part": "finetune", "condition": task, "features": feat, "args": args})
    for c in out:
        c["dir"] = f"{c['part']}/{safe(c['condition'])}/{safe(c['features'])}"
    return out


def run_cell(cell: dict[str, tp.Any], root: Path, data: dict[str, str], threads: int) -> bool:
    folder = root / cell["dir"]
    if (folder / "grid_cell.json").exists():  # written last, after pase eval succeeded
        return True
    librispeech = cell["args"][1].startswith("librispeech")
    cmd = [sys.executable, "-m", "pase", "eval", *cell["args"], "--out", str(folder)]
    cmd += ["--num-threads", str(threads), "--data", data["librispeech" if librispeech else "speech"]]
    print(f"[{time.strftime('%H:%M:%S')}] {cell['dir']}: {' '.join(cmd[3:])}", flush=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    code = subprocess.call(cmd)
    wall = time.perf_counter() - start
    if code != 0:
        print(f"  failed (exit {code}) after {wall:.0f} s", flush=True)
        return False
    meta = {"wall_s": round(wall, 1), "threads": threads, "loadavg_1min_at_start": load}
    (folder / "grid_cell.json").write_text(json.dumps(meta) + "\n")
    print(f"  done in {wall:.0f} s", flush=True)
    return True


def gather(root: Path, all_cells: tp.Sequence[dict[str, tp.Any]]) -> list[dict[str, tp.Any]]:
    rows = []
    for cell in all_cells:
        folder = root / cell["dir"]
        if not (folder / "grid_cell.json").exists():
            continue
        meta = json.loads((folder / "grid_cell.json").read_text())
        # one task and one feature set: pase eval writes results.json in the folder itself
        r = TaskResult.from_dict(json.loads((folder / "results.json").read_text()))
        row = {k: cell[k] for k in ("part", "condition", "features")}
        scores = {k: r.scores.get(k) for k in ("wer", "cer", "accuracy", "accuracy_std")}
        row.update(task=r.task, **scores, seeds=r.seeds)
        if r.finetuned is not None:
            tuned = r.finetuned
            row.update({f"finetuned_{k}": tuned.scores.get(k) for k in ("accuracy", "wer", "cer")})
            row["finetuned_seconds"] = tuned.seconds
            row["finetuned_best_step"] = tuned.per_seed[0].get("best_step")
        rows.append({**row, **meta})
    return rows


def markdown(rows: tp.Sequence[dict[str, tp.Any]]) -> str:
    def pct(v: tp.Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    def wall(r: dict[str, tp.Any]) -> str:
        seconds = float(r.get("wall_s", 0))
        return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"

    out = []
    asr = [r for r in rows if r["part"] == "asr"]
    if asr:
        out += ["## librispeech-asr: WER / CER (%), 200 test-clean utterances, wall time", ""]
        out += ["| features | " + " | ".join(CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
        for feat in dict.fromkeys(r["features"] for r in asr):
            cols = []
            for cond in CONDITIONS:
                r = next((x for x in asr if x["features"] == feat and x["condition"] == cond), None)
                cols.append("" if r is None else f"{pct(r['wer'])} / {pct(r['cer'])} ({wall(r)})")
            out.append(f"| {feat} | " + " | ".join(cols) + " |")
        out.append("")
    spk = [r for r in rows if r["part"] == "speaker40"]
    if spk:
        out += ["## librispeech-speaker40: accuracy (%), mean ± std over seeds", ""]
        out += ["| features | accuracy | wall |", "|---|---|---|"]
        for r in spk:
            out.append(f"| {r['features']} | {pct(r['accuracy'])} ± {pct(r['accuracy_std'])} | {wall(r)} |")
        out.append("")
    ft = [r for r in rows if r["part"] == "finetune"]
    if ft:
        out += ["## Frozen vs fine-tuned (accuracy %, for ASR CER %; seed 0)", ""]
        out += ["| task | encoder | frozen | fine-tuned | kept step | wall |", "|---|---|---|---|---|---|"]
        for r in ft:
            key = "cer" if r.get("cer") is not None else "accuracy"
            out.append(
                f"| {r['condition']} | {r['features']} | {pct(r[key])} | "
                f"{pct(r.get(f'finetuned_{key}'))} | {r.get('finetuned_best_step', '-')} | {wall(r)} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="grid folder (resumable)")
    parser.add_argument("--parts", default="asr,speaker40,finetune", help="asr, speaker40, finetune")
    parser.add_argument("--features", default=",".join(FEATURES), help="feature sets (default: the four)")
    parser.add_argument("--asr-seeds", default="0", help="CTC probe seeds per ASR cell (default 0)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument(
        "--librispeech",
        default=os.environ.get("PASE_LIBRISPEECH", str(Path.home() / ".cache/pase/speech_extra/LibriSpeech")),
        help="LibriSpeech folder with train-clean-5 and test-clean",
    )
    parser.add_argument(
        "--speech",
        default=os.environ.get(
            "PASE_SPEECH_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "speech")
        ),
        help="speech bundle of the built-in tasks",
    )
    parser.add_argument("--table-only", action="store_true", help="only gather finished cells")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"asr", "speaker40", "finetune"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    todo = cells(parts, features, args.asr_seeds)
    failed = 0
    if not args.table_only:
        data = {"librispeech": args.librispeech, "speech": args.speech}
        for cell in todo:
            failed += not run_cell(cell, args.out, data, args.num_threads)
    rows = gather(args.out, cells(["asr", "speaker40", "finetune"], features, args.asr_seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grid.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = markdown(rows)
    (args.out / "grid.md").write_text(text + "\n")
    print(text)
    if failed:
        print(f"{failed} cell(s) failed; rerun to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
