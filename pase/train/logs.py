"""What a run records besides its checkpoint: ``metrics.csv`` and ``valid.csv``, the data record
(``data.tsv``, ``data.json``), TensorBoard scalars and the progress bar. Only rank 0 writes them.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import typing as tp
from pathlib import Path

import torch

from pase.audio import SAMPLE_RATE, write_atomic
from pase.progress import progress, say
from pase.train.checkpoint import CHECKPOINT

if tp.TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from pase.data import Utterance
    from pase.train.loop import Trainer


class CsvLog:
    """An append-only CSV log that a resumed run first truncates to its checkpoint's step."""

    def __init__(self, path: Path, columns: list[str], keep_until: int | None) -> None:
        self.path, self.columns = path, columns
        if keep_until is not None and path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != columns:
                    raise ValueError(f"{path}: columns {reader.fieldnames} differ from {columns}")
                kept = [row for row in reader if int(row["step"]) <= keep_until]
            write_atomic(path, lambda tmp: self._write_rows(tmp, kept))
        else:
            write_atomic(path, lambda tmp: self._write_rows(tmp, []))

    def _write_rows(self, tmp: str, rows: list[dict[str, str]]) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: tp.Mapping[str, float | int]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def data_manifest(train: tp.Sequence[Utterance], valid: tp.Sequence[Utterance]) -> list[str]:
    """The run's data as sorted lines ``<split>\t<file name>\t<samples at 16 kHz>``: no folder
    names, so the same audio gives the same lines (and hash) on any machine."""
    lines = [f"train\t{u.path.name}\t{u.num_samples}" for u in train]
    lines += [f"valid\t{u.path.name}\t{u.num_samples}" for u in valid]
    return sorted(lines)


def write_data_record(out: Path, lines: tp.Sequence[str], step: int) -> dict[str, tp.Any]:
    """``data.tsv`` (the manifest lines) and ``data.json``: its sha256, files and hours per split,
    one entry per start or resume of the run (the step it started from), so a model card can name
    the exact data of every leg."""
    import hashlib

    text = "".join(line + "\n" for line in lines)
    entry: dict[str, tp.Any] = {"step": step, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    for split in ("train", "valid"):
        samples = [int(line.split("\t")[2]) for line in lines if line.startswith(split + "\t")]
        entry[f"{split}_files"] = len(samples)
        entry[f"{split}_hours"] = round(sum(samples) / SAMPLE_RATE / 3600, 4)
    record_path = out / "data.json"
    starts = json.loads(record_path.read_text())["starts"] if record_path.exists() else []
    if starts and starts[-1]["sha256"] != entry["sha256"]:
        say(f"note: the training data differ from the previous leg's (sha256 {starts[-1]['sha256'][:12]})")
    record = {"manifest": "data.tsv", "sha256_of": "data.tsv", "starts": [*starts, entry]}
    write_atomic(out / "data.tsv", lambda tmp: Path(tmp).write_text(text))
    write_atomic(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return entry


class RunLog:
    """Rank 0's observability: progress bar, metrics.csv, valid.csv and TensorBoard."""

    def __init__(self, trainer: Trainer, resumed: bool) -> None:
        self.trainer = trainer
        cfg, out, start = trainer.config, trainer.out, trainer.step
        if resumed and start >= trainer.horizon and trainer.info.world_size == 1:
            # Checked before config.json is rewritten: a mistyped horizon must change nothing. (The
            # CLI checks --max-steps for every rank first; alone, rank 0 must not leave its peers.)
            raise ValueError(
                f"{out} is at step {start}, and this run's horizon is {trainer.horizon} steps: "
                f"nothing to train; pass --max-steps above {start} to continue it"
            )
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cfg.to_dict(), indent=2)
        write_atomic(out / "config.json", lambda tmp: Path(tmp).write_text(text))
        write_data_record(out, trainer.data_lines, start)
        names = trainer.model.worker_names
        keep = start if resumed else None
        self.metrics = CsvLog(out / "metrics.csv", ["step", "loss", *names, "lr", "xrt"], keep)
        metric_names = trainer.model.metric_names
        self.valid = CsvLog(out / "valid.csv", ["step", "loss", *names, *metric_names], keep)
        self.writer = _tensorboard(out / "tb", start + 1)
        self.bar = None
        if trainer.progress:
            total = None if trainer.horizon == sys.maxsize else trainer.horizon
            self.bar = progress(total=total, initial=start, unit="step", desc="training")
        world = trainer.info.world_size
        self.audio_per_step = cfg.batch_size * world * cfg.chunk_size / SAMPLE_RATE
        self.last_time, self.last_step = time.perf_counter(), start

    def step(
        self,
        step: int,
        total: torch.Tensor,
        losses: dict[str, torch.Tensor],
        lr: float,
        grad_norm: torch.Tensor,
        last: bool = False,
    ) -> None:
        cfg, trainer = self.trainer.config, self.trainer
        if step % cfg.log_every == 0 or last:
            now = time.perf_counter()
            xrt = self.audio_per_step * (step - self.last_step) / (now - self.last_time)
            self.last_time, self.last_step = now, step
            # One device-to-host copy for every value (a sync per value would stall a GPU).
            values = torch.stack([total, *losses.values(), grad_norm]).detach().float().tolist()
            row = {"step": step, "loss": values[0], **dict(zip(losses, values[1:-1], strict=True))}
            row.update(lr=lr, xrt=xrt)
            self.metrics.append(row)
            if self.writer is not None:
                _log_tb(self.writer, step, row, values[-1], trainer.optimizer)
            if self.bar is not None:
                self.bar.set_postfix(
                    loss=f"{row['loss']:.3f}", xRT=f"{xrt:.1f}", audio_h_per_s=f"{xrt / 3600:.4f}"
                )
            if trainer.on_step is not None:
                trainer.on_step(step, row)
        if self.bar is not None:
            self.bar.update(1)
        if trainer.valid is not None and (step % cfg.valid_every == 0 or last):
            n = min(cfg.valid_batches, trainer.valid.steps_per_epoch)
            say(f"step {step}: validating on {n} batches ...")
            start = time.perf_counter()
            scores = trainer.validate()
            seconds = time.perf_counter() - start
            self.last_time += seconds  # xRT measures training only
            say(f"step {step}: valid loss {scores['loss']:.4f} ({seconds:.0f} s)")
            self.valid.append({"step": step, **scores})
            if self.writer is not None:
                for name, value in scores.items():
                    self.writer.add_scalar(f"valid/{name}", value, step)
        if step % cfg.ckpt_every == 0 and not last:
            say(f"step {step}: writing {trainer.out / CHECKPOINT}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(path: Path, purge_step: int) -> SummaryWriter | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        say("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    # purge_step hides events that a killed run wrote after its last checkpoint.
    return SummaryWriter(str(path), purge_step=purge_step)


def _log_tb(
    writer: SummaryWriter,
    step: int,
    row: tp.Mapping[str, float],
    grad_norm: float,
    optimizer: torch.optim.Optimizer,
) -> None:
    writer.add_scalar("train/loss", row["loss"], step)
    for name, value in row.items():
        if name not in ("step", "loss", "lr", "xrt"):
            writer.add_scalar(f"worker/{name}", value, step)
    writer.add_scalar("train/lr_encoder", optimizer.param_groups[0]["lr"], step)
    writer.add_scalar("train/lr_workers", optimizer.param_groups[1]["lr"], step)
    writer.add_scalar("train/grad_norm", grad_norm, step)
    writer.add_scalar("train/xrt", row["xrt"], step)
