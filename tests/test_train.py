"""`pase train`: config precedence, schedule, kill-and-resume, logs, export and 2-process DDP."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import signal
import socket
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import write_train_corpus

from pase import Encoder
from pase.cli import build_parser
from pase.plots import plot_run
from pase.train import TrainConfig, Trainer, config_from_args, learning_rate_factor, select_workers
from pase.workers import preset_workers

TINY_ENCODER = {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 speakers x 2 files of 0.6 s speech-like audio, and one synthetic room response."""
    return write_train_corpus(tmp_path_factory.mktemp("train_corpus"), speakers=8, seconds=0.6)


def tiny_config(corpus: Path, **overrides: tp.Any) -> TrainConfig:
    """PASE+ workers and every distortion, on a tiny encoder and 0.2 s chunks."""
    return TrainConfig.pase_plus().updated(
        {
            "encoder": TINY_ENCODER,
            "data": [str(corpus / "audio")],
            "cache_dir": str(corpus / "cache"),
            "min_seconds": 0.2,
            "valid_fraction": 0.25,
            "batch_size": 2,
            "chunk_size": 3200,
            "max_steps": 6,
            "stats_batches": 2,
            "valid_every": 3,
            "valid_batches": 1,
            "ckpt_every": 100,
            "num_threads": 1,
            "distortions": {"n_sim_rooms": 0, "rir_dir": str(corpus / "rir")},
            **overrides,
        }
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_config_precedence_preset_file_cli_and_resume(tmp_path: Path) -> None:
    parser = build_parser()
    run = tmp_path / "run"
    args = parser.parse_args(["train", "--preset", "pase", "--out", str(run)])
    assert config_from_args(args) == TrainConfig.pase()
    assert TrainConfig.pase().batch_size == 32 and TrainConfig.pase_plus().encoder_lr == 1e-3
    # pase+cpu: the reference recipe less the waveform decoder, at batch 4, nothing else changed
    cpu = config_from_args(parser.parse_args(["train", "--preset", "pase+cpu", "--out", str(run)]))
    assert cpu == TrainConfig.pase_plus().updated({"batch_size": 4, "drop_workers": ["waveform"]})
    assert "waveform" not in [w.name for w in select_workers(preset_workers(cpu.architecture), cpu)]
    # pase+cpu-bilinear: pase+cpu with symmetric similarity heads and batch negatives for LIM/GIM
    argv = ["train", "--preset", "pase+cpu-bilinear", "--out", str(run)]
    bil = config_from_args(parser.parse_args(argv))
    assert bil == cpu.updated({"worker_options": TrainConfig.BILINEAR_DISCRIMINATORS})
    forms = {w.name: w for w in select_workers(preset_workers(bil.architecture), bil)}
    assert (forms["lim"].head, forms["lim"].negatives, forms["lim"].pool) == ("bilinear", "batch", 20)
    assert (forms["gim"].head, forms["gim"].negatives) == ("bilinear", "batch")
    # pase+v3: pase+cpu with distorted context chunks and the 512-point LPS targets
    v3 = config_from_args(parser.parse_args(["train", "--preset", "pase+v3", "--out", str(run)]))
    assert v3 == cpu.updated({"distort_context": True, "worker_options": TrainConfig.LPS_512})
    v3_workers = {w.name: w for w in select_workers(preset_workers(v3.architecture), v3)}
    cpu_workers = {w.name: w for w in select_workers(preset_workers(cpu.architecture), cpu)}
    assert (v3_workers["lps"].target, v3_workers["lps_long"].target) == ("lps_512", "lps_long_512")
    assert {k: w for k, w in v3_workers.items() if not k.startswith("lps")} == {
        k: w for k, w in cpu_workers.items() if not k.startswith("lps")
    }

    (tmp_path / "c.yaml").write_text("batch_size: 8\nseed: 3\ndistortions:\n  noise_p: 0.9\n")
    argv = ["train", "--out", str(run), "--config", str(tmp_path / "c.yaml"), "--seed", "5"]
    argv += ["--grad-clip", "1.5", "--no-amplitude-scaling", "--distortions.clip-p", "0"]
    argv += ["--distortions.noise-snrs", "[3, 6]", "--data", "a", "b"]
    cfg = config_from_args(parser.parse_args(argv))
    assert (cfg.batch_size, cfg.seed, cfg.grad_clip, cfg.amplitude_scaling) == (8, 5, 1.5, False)
    assert cfg.data == ["a", "b"] and cfg.encoder_lr == 1e-3
    assert (cfg.distortions.noise_p, cfg.distortions.clip_p) == (0.9, 0.0)
    assert cfg.distortions.noise_snrs == (3.0, 6.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    resumed = config_from_args(
        parser.parse_args(["train", "--out", str(run), "--resume", "--max-steps", "9"])
    )
    assert resumed == cfg.updated({"max_steps": 9})
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        cfg.updated({"batchsize": 1})


def test_learning_rate_schedules() -> None:
    poly = TrainConfig.pase_plus()
    assert learning_rate_factor(poly, 0, 100, 10) == 1.0
    assert learning_rate_factor(poly, 50, 100, 10) == pytest.approx(0.5**0.9)
    # A resumed run with a longer horizon decays against the new one.
    assert learning_rate_factor(poly, 50, 200, 10) == pytest.approx(0.75**0.9)
    step = TrainConfig.pase()
    assert [learning_rate_factor(step, s, 10**6, 10) for s in (0, 299, 300, 600)] == [1, 1, 0.5, 0.25]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert Trainer(tiny_config(corpus), straight, progress=False).run() == 0

    def kill_at_3(step: int, row: dict[str, float]) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    killed = tmp_path / "killed"
    assert Trainer(tiny_config(corpus), killed, on_step=kill_at_3, progress=False).run() == 130
    assert [int(r["step"]) for r in _rows(killed / "metrics.csv")] == [1, 2, 3]
    assert not (killed / "encoder").exists()
    with pytest.raises(ValueError, match="--resume"):
        Trainer(tiny_config(corpus), killed, progress=False)
    assert Trainer(tiny_config(corpus), killed, resume=True, progress=False).run() == 0

    a, b = _rows(straight / "metrics.csv"), _rows(killed / "metrics.csv")
    assert [int(r["step"]) for r in b] == [1, 2, 3, 4, 5, 6]
    assert list(a[0])[:3] == ["step", "loss", "waveform"] and list(a[0])[-2:] == ["lr", "xrt"]
    assert len(a[0]) == 2 + 12 + 2  # step, loss, the 12 PASE+ workers, lr, xrt
    for ra, rb in zip(a, b, strict=True):
        for col in list(ra)[1:-1]:  # every loss and the lr; xrt is a timing
            assert float(ra[col]) == pytest.approx(float(rb[col]), rel=1e-4, abs=1e-6), col
    assert [int(r["step"]) for r in _rows(killed / "valid.csv")] == [3, 6]
    assert float(a[0]["lr"]) == pytest.approx(1e-3) and float(a[-1]["lr"]) < float(a[0]["lr"])

    checkpoint = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 6
    assert checkpoint["data"] == {"epoch": 0, "position": 6}  # each step read a new batch
    encoder = Encoder.from_pretrained(killed / "encoder")
    assert encoder.config.embedding_dim == 16
    state = {k[len("encoder.") :]: v for k, v in checkpoint["model"].items() if k.startswith("encoder.")}
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, state[name])
    assert any((killed / "tb").iterdir())
    # The data record: one entry per leg, the same manifest (and hash) for both legs and runs.
    legs = json.loads((killed / "data.json").read_text())["starts"]
    assert [leg["step"] for leg in legs] == [0, 3] and legs[0]["sha256"] == legs[1]["sha256"]
    lines = (killed / "data.tsv").read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == legs[0]["train_files"] + legs[0]["valid_files"]
    assert all(line.split("\t")[0] in ("train", "valid") and "/" not in line for line in lines)
    assert (straight / "data.tsv").read_text() == (killed / "data.tsv").read_text()

    png = plot_run(killed, smooth=2)
    assert png == killed / "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_names_the_missing_log(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_run(tmp_path)
    args = build_parser().parse_args(["plot", str(tmp_path)])
    assert args.func(args) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_rank(rank: int, port: int, corpus: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    os.environ.update(WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    trainer = Trainer(tiny_config(Path(corpus), max_steps=3), out, progress=False)
    assert trainer.run() == 0
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_end_with_identical_weights(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    mp.start_processes(_ddp_rank, args=(_free_port(), str(corpus), str(out)), nprocs=2, start_method="spawn")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name
    assert [int(r["step"]) for r in _rows(out / "metrics.csv")] == [1, 2, 3]
    cfg = tiny_config(corpus)
    assert json.loads((out / "config.json").read_text())["batch_size"] == cfg.batch_size


def test_user_worker_from_a_plugin_file(corpus: Path, tmp_path: Path) -> None:
    """A worker written in the user's own file is trained by naming it in the config."""
    from pase.workers import WORKERS

    plugin = Path(__file__).with_name("example_worker.py")
    (tmp_path / "run.yaml").write_text(
        f"plugins: [{plugin}]\n"
        "workers: [{name: mfcc}]\n"
        "extra_workers: [{name: energy, kind: log_energy, context: 3}]\n"
    )
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--out", str(tmp_path / "run"), "--config", str(tmp_path / "run.yaml")]
    )
    config = config_from_args(args).updated(
        {
            k: v
            for k, v in dataclasses.asdict(tiny_config(corpus, max_steps=2)).items()
            if k not in PLUGIN_KEYS
        }
    )
    try:
        Trainer(config, tmp_path / "run", progress=False).run()
        rows = _rows(tmp_path / "run" / "metrics.csv")
        assert [r["step"] for r in rows] == ["1", "2"]
        assert {"mfcc", "energy"} <= set(rows[0]) and "lps" not in rows[0]
        assert all(np.isfinite(float(r["energy"])) for r in rows)
    finally:
        WORKERS.pop("log_energy", None)


PLUGIN_KEYS = ("plugins", "workers", "extra_workers")


def test_bad_plugin_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    config = tiny_config(corpus, plugins=[str(tmp_path / "missing.py")])
    with pytest.raises(ValueError, match="cannot load worker plugin"):
        Trainer(config, tmp_path / "run", progress=False)


def test_prefetch_stops_its_reader_and_reraises_its_errors() -> None:
    """Ending training joins the read-ahead thread (a live daemon thread inside torch code aborts
    the process at exit), and an error while reading reaches the training loop, not a hang."""
    import threading

    from pase.train.loop import _prefetch

    def endless() -> tp.Iterator[int]:
        n = 0
        while True:
            n += 1
            yield n

    batches = _prefetch(endless(), pin=False)  # type: ignore[arg-type]
    assert [next(batches) for _ in range(3)] == [1, 2, 3]
    batches.close()
    assert not any(t.name == "pase-prefetch" for t in threading.enumerate())

    def broken() -> tp.Iterator[int]:
        yield 1
        raise OSError("disk gone: a.wav")

    batches = _prefetch(broken(), pin=False)  # type: ignore[arg-type]
    assert next(batches) == 1
    with pytest.raises(OSError, match="a.wav"):
        next(batches)


def test_time_budget_ends_the_run_and_drives_the_schedule(corpus: Path, tmp_path: Path) -> None:
    """``max_seconds`` alone ends a run once its steps have used the budget, the poly decay runs
    over it, and the spent time survives a checkpoint."""
    cfg = tiny_config(corpus, max_steps=None, max_seconds=1.0, valid_every=1000)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    ticks = itertools.count()
    trainer.clock = lambda: 0.25 * next(ticks)  # every step "takes" 0.25 s, whatever the load
    assert trainer.run() == 0
    assert trainer.train_seconds == 1.0 and trainer.step == 4
    rows = _rows(tmp_path / "run" / "metrics.csv")
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == pytest.approx([1e-3 * (1 - k / 4) ** 0.9 for k in range(4)], rel=1e-4)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["train_seconds"] == pytest.approx(trainer.train_seconds)
    assert len(_rows(tmp_path / "run" / "valid.csv")) == 1  # the final validation
    half = learning_rate_factor(cfg, 0, 10**9, 10, seconds=0.5)
    assert half == pytest.approx(0.5**0.9)


def test_drop_workers_and_worker_options(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        corpus,
        drop_workers=["waveform", "lps", "lps_long"],
        worker_options={"gim": {"negatives": "batch", "head": "cosine"}, "lim": {"pool": 4}},
        max_steps=2,
        valid_every=2,
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert "waveform" not in trainer.model.workers and len(trainer.model.workers) == 9
    assert trainer.model.workers["gim"].config.negatives == "batch"
    assert trainer.run() == 0
    valid = _rows(tmp_path / "run" / "valid.csv")[-1]
    # discriminators report their pair accuracy on the held-out speakers
    assert 0.0 <= float(valid["lim_acc"]) <= 1.0 and 0.0 <= float(valid["gim_acc"]) <= 1.0
    with pytest.raises(ValueError, match="unknown workers"):
        Trainer(tiny_config(corpus, drop_workers=["nope"]), tmp_path / "bad", progress=False)


def test_overlap_interferer_is_never_the_items_own_negative(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(corpus), tmp_path / "run", progress=False)
    seen: dict[str, torch.Tensor] = {}

    def spy(chunk: torch.Tensor, *, other: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen["other"] = other
        return chunk

    trainer.distorter = spy  # type: ignore[assignment]
    batch = next(iter(trainer.batches))
    trainer._losses(batch, trainer.distortion_gen, trainer.model)
    for i in range(batch.rand.shape[0]):
        assert not torch.equal(seen["other"][i], batch.rand[i])


@pytest.mark.parametrize("rand_from_batch", [False, True])
def test_distort_context_distorts_ctxt_and_rand_with_their_own_draws(
    corpus: Path, tmp_path: Path, rand_from_batch: bool
) -> None:
    def module_inputs(distort_context: bool) -> tuple[torch.Tensor, ...]:
        cfg = tiny_config(corpus, distort_context=distort_context, rand_from_batch=rand_from_batch)
        cfg.distortions.reverb_p = 1.0  # every chunk is reverberated: each call draws its own room
        trainer = Trainer(cfg, tmp_path / f"run{distort_context}", progress=False)
        seen: list[torch.Tensor | None] = []
        batch = next(iter(trainer.batches))
        trainer._losses(batch, trainer.distortion_gen, lambda *args: seen.extend(args))
        return batch.chunk, batch.ctxt, batch.rand, *seen  # type: ignore[return-value]

    chunk, ctxt, rand, anchor, clean, seen_ctxt, seen_rand = module_inputs(False)
    assert torch.equal(clean, chunk) and not torch.equal(anchor, chunk)
    assert torch.equal(seen_ctxt, ctxt)  # the reference: only the anchor is distorted
    assert seen_rand is None if rand_from_batch else torch.equal(seen_rand, rand)
    chunk, ctxt, rand, anchor2, clean, seen_ctxt, seen_rand = module_inputs(True)
    assert torch.equal(anchor2, anchor)  # the anchor's draws come first and are unchanged
    assert seen_ctxt.shape == ctxt.shape and not torch.equal(seen_ctxt, ctxt)
    if rand_from_batch:
        assert seen_rand is None  # the workers take the previous item's (distorted) ctxt
    else:
        assert seen_rand.shape == rand.shape and not torch.equal(seen_rand, rand)
        assert not torch.allclose(seen_ctxt / seen_ctxt.norm(), seen_rand / seen_rand.norm())
