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
