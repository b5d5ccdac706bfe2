"""``pase train --init``: continued pretraining starts from the given encoder weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train import TINY_ENCODER, corpus, tiny_config  # noqa: F401 - corpus is a fixture

from pase import Encoder
from pase.cli import build_parser
from pase.train import CHECKPOINT, Trainer, config_from_args


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder with non-default BatchNorm statistics, in save_pretrained format."""
    torch.manual_seed(123)
    enc = Encoder.from_config(TINY_ENCODER)
    enc.train()
    with torch.no_grad():
        enc(torch.randn(2, 3200))  # moves the running statistics off their init values
    return enc.eval().save_pretrained(tmp_path_factory.mktemp("init") / "enc")


def _first_forward(encoder: torch.nn.Module) -> torch.Tensor:
    wav = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out: torch.Tensor = encoder.eval()(wav)
    return out


def test_init_from_a_saved_encoder_gives_its_first_forward(corpus: Path, saved: Path, tmp_path: Path) -> None:  # noqa: F811
    trainer = Trainer(tiny_config(corpus, init=str(saved)), tmp_path / "run", progress=False)
    expected = _first_forward(Encoder.from_pretrained(saved))
    torch.testing.assert_close(_first_forward(trainer.model.encoder), expected, rtol=0, atol=0)
    fresh = Trainer(tiny_config(corpus), tmp_path / "fresh", progress=False)
    assert not torch.allclose(_first_forward(fresh.model.encoder), expected)


def test_init_runs_from_the_cli_and_resume_ignores_it(corpus: Path, saved: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    args = build_parser().parse_args(["train", "--out", str(run), "--init", str(saved), "--max-steps", "2"])
    config = config_from_args(args)
    assert config.init == str(saved)
    config = tiny_config(corpus, init=str(saved), max_steps=2)
    assert Trainer(config, run, progress=False).run() == 0
    assert (run / CHECKPOINT).exists() and len((run / "metrics.csv").read_text().splitlines()) == 3
    # a run's checkpoint is itself a valid --init, and resuming does not reload the weights
    resumed = Trainer(tiny_config(corpus, init=str(saved), max_steps=3), run, resume=True, progress=False)
    after_two = Trainer(tiny_config(corpus, init=str(run / CHECKPOINT)), tmp_path / "again", progress=False)
    torch.testing.assert_close(
        _first_forward(resumed.model.encoder), _first_forward(after_two.model.encoder), rtol=0, atol=0
    )
    assert not torch.allclose(
        _first_forward(resumed.model.encoder), _first_forward(Encoder.from_pretrained(saved))
    )


def test_init_with_another_architecture_is_a_clear_error(corpus: Path, saved: Path, tmp_path: Path) -> None:  # noqa: F811
    bigger = {**TINY_ENCODER, "embedding_dim": 32}
    with pytest.raises(ValueError, match=r"embedding_dim: 16 vs 32"):
        Trainer(tiny_config(corpus, init=str(saved), encoder=bigger), tmp_path / "r", progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        Trainer(tiny_config(corpus, init=str(bad)), tmp_path / "r2", progress=False)


def test_a_new_leg_counts_on_from_start_step_with_the_runs_decay(
    corpus: Path,  # noqa: F811
    saved: Path,
    tmp_path: Path,
) -> None:
    run = tmp_path / "leg"
    config = tiny_config(corpus, init=str(saved), start_step=5, max_steps=8, log_every=1, valid_every=100)
    assert Trainer(config, run, progress=False).run() == 0
    with open(run / "metrics.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()]
    header, rows = rows[0], rows[1:]
    steps = [int(r[0]) for r in rows]
    lrs = [float(r[header.index("lr")]) for r in rows]
    assert steps == [6, 7, 8]
    # the rate of the update that completes step s is the 8-step run's, not a restart at 1e-3
    expected = [config.encoder_lr * (1 - (s - 1) / 8) ** config.poly_power for s in steps]
    assert lrs == pytest.approx(expected, rel=1e-4)  # (the CSV keeps 6 digits)
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == 8


def test_start_step_needs_an_init_and_a_later_end(corpus: Path, saved: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="set init too"):
        Trainer(tiny_config(corpus, start_step=3), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="whole run's end step"):
        Trainer(
            tiny_config(corpus, init=str(saved), start_step=6, max_steps=6), tmp_path / "b", progress=False
        )


def test_split_seed_keeps_the_held_out_speakers_under_another_seed(corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    def held_out(**overrides: object) -> list[str]:
        trainer = Trainer(tiny_config(corpus, **overrides), tmp_path / str(len(overrides)), progress=False)
        return sorted(line for line in trainer.data_lines if line.startswith("valid\t"))

    first = held_out(seed=0)
    assert held_out(seed=3, split_seed=0) == first
    assert held_out(seed=3) != first  # (checks that the seed does choose them)


def test_frozen_encoder_steps_train_only_the_workers(corpus: Path, saved: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "warm"
    config = tiny_config(corpus, init=str(saved), start_step=4, freeze_encoder_steps=2, max_steps=6)
    first = Trainer(config, run, progress=False)
    encoder0 = {k: v.clone() for k, v in first.model.encoder.named_parameters()}
    workers0 = {k: v.clone() for k, v in first.model.workers.named_parameters()}
    batches = iter(first.batches)
    for _ in range(2):  # steps 5 and 6 of the whole run: the leg's first two
        first.train_step(next(batches))
        first.step += 1
    for name, value in first.model.encoder.named_parameters():
        torch.testing.assert_close(value, encoder0[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(v, workers0[k]) for k, v in first.model.workers.named_parameters())
    first.train_step(next(batches))  # the third step trains the encoder too
    assert any(not torch.equal(v, encoder0[k]) for k, v in first.model.encoder.named_parameters())
    with pytest.raises(ValueError, match="freeze_encoder_steps must be at least 0"):
        Trainer(tiny_config(corpus, freeze_encoder_steps=-1), tmp_path / "bad", progress=False)
