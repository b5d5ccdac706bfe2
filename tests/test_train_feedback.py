"""What a training run tells its user: the room simulation, validation and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import corpus, tiny_config  # noqa: F401  (corpus is a fixture)

from pase.train import Trainer


def test_validation_and_checkpoints_are_announced(
    corpus: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tiny_config(corpus, max_steps=3, valid_every=2, ckpt_every=2)
    assert Trainer(config, tmp_path / "run", progress=False).run() == 0
    err = capsys.readouterr().err
    assert "step 2: validating on 1 batches ...\n" in err
    assert "step 2: valid loss " in err and "step 3: valid loss " in err
    assert f"step 2: writing {tmp_path / 'run' / 'checkpoint.pt'}\n" in err
    assert "step 3: writing" not in err  # the final checkpoint is announced with the encoder


def test_room_simulation_is_announced_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyroomacoustics")
    from pase.rirs import RirBank, RoomSpec

    spec = RoomSpec(n_rooms=2, size_min=(3.0, 3.0, 2.5), size_max=(3.5, 3.5, 2.6), rt60_range=(0.2, 0.25))
    bank = RirBank.simulated(spec, tmp_path, verbose=True, workers=1)
    assert len(bank) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "simulating 2 rooms for the reverberation distortion with pyroomacoustics (1 process(es)); "
        f"done once, then read from {tmp_path}/rirs-2rooms-"
    )
    assert "rooms: 100%" in err  # the progress, as a plain line when stderr is not a terminal
    RirBank.simulated(spec, tmp_path, verbose=True)
    assert capsys.readouterr().err == ""  # from the cache: nothing to announce
