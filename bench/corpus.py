"""Training-corpus start-up: how long ``load_corpus`` takes before training can start, and the
size of the audio cache it writes, today and at an older revision.

    python bench/corpus.py --out bench/results/corpus.json
    python bench/corpus.py --data ~/.cache/pase/speech_extra/pretrain.csv DIR --before c2d9e7b^1

Cases, each in a fresh child process (its imports are not timed; the corpus call is):
``cold`` prepares every file into an empty cache folder (decode, resample, write), ``warm`` runs
again on that cache (what every later start of a run pays). The current code runs with 1 and 2
preparation processes (``num_workers``); ``--before REV`` runs the same calls on that git
revision (checked out in a temporary worktree; the default is the revision before the int16
cache and the process pool). ``--files N`` also times a generated folder of N short files
(1.2 s of 16-bit WAV each), cold and warm, for the per-file overhead of a large folder. Source
files are read through the page cache after the first case, so cold cases after the first do not
pay the disk reads again; the JSON records the order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "c2d9e7b^1"  # main before the int16 cache and parallel preparation (issue 13)

# Runs in the child: time load_corpus on the given sources and cache, print one JSON line.
CHILD = r"""
import inspect, json, sys, time
from pathlib import Path
from pase.data import load_corpus
sources, cache, workers = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
kw = {"report": None}
if "num_workers" in inspect.signature(load_corpus).parameters:
    kw["num_workers"] = workers
elif workers > 1:
    sys.exit("this revision has no num_workers")
start = time.perf_counter()
corpus = load_corpus(sources, cache_dir=cache, **kw)
seconds = time.perf_counter() - start
files = list(Path(cache).rglob("*.npy"))
print(json.dumps({
    "seconds": seconds,
    "files": len(corpus),
    "hours": sum(u.num_samples for u in corpus) / 16000 / 3600,
    "cache_bytes": sum(f.stat().st_size for f in files),
}))
"""


def default_sources() -> list[str]:
    extra = Path(os.environ.get("PASE_EXTRA_SPEECH", Path.home() / ".cache/pase/speech_extra"))
    speech = Path(os.environ.get("PASE_SPEECH_DIR", REPO.parent / "shared" / "speech"))
    return [str(extra / "pretrain.csv"), str(speech / "librispeech" / "train-clean-100")]


def run_case(code_dir: Path, sources: list[str], cache: Path, workers: int) -> dict[str, tp.Any]:
    env = {**os.environ, "PYTHONPATH": str(code_dir), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, json.dumps(sources), str(cache), str(workers)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"corpus case failed ({code_dir}, workers={workers}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_short_files(folder: Path, n: int, seconds: float = 1.2) -> None:
    """``n`` 16 kHz 16-bit WAV files of ``seconds`` of noise, 100 per speaker folder."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    samples = int(seconds * 16000)
    for i in range(n):
        d = folder / f"spk{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        wav = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        sf.write(d / f"utt{i:05d}.wav", wav, 16000, subtype="PCM_16")


def measure(
    name: str, code_dir: Path, sources: list[str], workers: list[int], tmp: Path
) -> list[dict[str, tp.Any]]:
    rows = []
    for w in workers:
        cache = tmp / f"cache-{name}-{w}"
        for phase in ("cold", "warm"):
            r = run_case(code_dir, sources, cache, w)
            row = {"code": name, "phase": phase, "num_workers": w, **r}
            row["ms_per_file"] = 1000 * r["seconds"] / max(1, r["files"])
            print(
                f"{name:>8} {phase:<4} workers={w}: {r['files']} files, {r['hours']:.2f} h, "
                f"{r['seconds']:.1f} s ({row['ms_per_file']:.2f} ms/file), "
                f"cache {r['cache_bytes'] / 1e9:.2f} GB",
                flush=True,
            )
            rows.append(row)
        shutil.rmtree(cache)
    return rows


def table(rows: list[dict[str, tp.Any]]) -> str:
    lines = [
        "| corpus | code | processes | phase | files | hours | seconds | ms/file | cache GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['corpus']} | {r['code']} | {r['num_workers']} | {r['phase']} | {r['files']} | "
            f"{r['hours']:.2f} | {r['seconds']:.1f} | {r['ms_per_file']:.2f} | {r['cache_bytes'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", default=None, help="training sources (default: the 7 h set)")
    parser.add_argument("--before", default=BEFORE, help=f"older git revision (default {BEFORE}); '' skips")
    parser.add_argument("--workers", default="1,2", help="num_workers of the current code (default 1,2)")
    parser.add_argument("--files", type=int, default=10000, help="generated short files (0: skip)")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    sources = args.data or default_sources()
    label = "pretraining set" if args.data is None else "--data"
    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        parser.error(f"training data not found: {', '.join(missing)} (see ../shared/data/README.md)")
    workers = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()[0]
    rows: list[dict[str, tp.Any]] = []
    with tempfile.TemporaryDirectory(prefix="pase-corpus-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.before:
            old = tmp / "before"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before],
                check=True,
                capture_output=True,
            )
            try:
                rows += [{"corpus": label, **r} for r in measure("before", old, sources, [1], tmp)]
            finally:
                remove = ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)]
                subprocess.run(remove, check=False)
        rows += [{"corpus": label, **r} for r in measure("current", REPO, sources, workers, tmp)]
        if args.files:
            folder = tmp / "short"
            write_short_files(folder, args.files)
            label = f"{args.files} x 1.2 s WAV"
            rows += [{"corpus": label, **r} for r in measure("current", REPO, [str(folder)], workers, tmp)]
    print(table(rows))
    if args.out:
        from pase.audio import write_atomic

        report = {
            "rows": rows,
            "sources": sources,
            "before_revision": args.before,
            "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
        }
        write_atomic(args.out, lambda t: Path(t).write_text(json.dumps(report, indent=2) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
