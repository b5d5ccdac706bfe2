"""What the pictures say: the demo's z-score colour bar, chance on LIM/GIM curves, the drawn
distortion parameters in show-distortions titles, counts in confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:  # type: ignore[type-arg]
    """The matplotlib figures the code under test closes after saving them."""
    import matplotlib.pyplot as plt

    closed: list = []  # type: ignore[type-arg]
    monkeypatch.setattr(plt, "close", closed.append)
    return closed


def test_demo_panel_says_features_are_z_scored(tmp_path: Path, figures: list) -> None:  # type: ignore[type-arg]
    from pase.demo import plot_features

    wavs, feats = [], []
    for i in range(2):
        sf.write(tmp_path / f"a{i}.wav", synth_speechlike(0.5, seed=i), 16000)
        np.save(tmp_path / f"a{i}.npy", np.random.default_rng(i).standard_normal((50, 8)).astype(np.float32))
        wavs.append(tmp_path / f"a{i}.wav")
        feats.append(tmp_path / f"a{i}.npy")
    plot_features(wavs, feats, tmp_path / "f.png", "t")
    labels = [ax.get_ylabel() for ax in figures[0].axes]
    assert labels.count("z-score (per dimension, this file)") == 2  # one colour bar per column
    assert labels.count("log mel energy") == 2
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_on_any_folder_of_audio(tmp_path: Path) -> None:
    from pase.demo import pick_files

    (tmp_path / "mine" / "sub").mkdir(parents=True)
    for name in ("b.wav", "a.flac", "sub/c.wav", "notes.txt"):
        (tmp_path / "mine" / name).write_bytes(b"x")
    assert [p.name for p in pick_files(tmp_path / "mine")] == ["a.flac", "b.wav", "c.wav"]


def test_plot_marks_chance_on_binary_workers_only(tmp_path: Path, figures: list) -> None:  # type: ignore[type-arg]
    from pase.plots import plot_run

    rows = ["step,loss,mfcc,lim,gim,lr,xrt"] + [f"{s},3.0,1.0,0.69,0.6,0.001,1.0" for s in range(1, 4)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    plot_run(tmp_path)
    chance = {
        ax.get_title(): [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_label() == "chance (ln 2)"]
        for ax in figures[0].axes
    }
    assert chance["lim"] == [pytest.approx(math.log(2))] and chance["gim"] == [pytest.approx(math.log(2))]
    assert chance["loss"] == [] and chance["mfcc"] == []


def test_show_distortions_titles_state_the_drawn_parameters() -> None:
    from pase.distortions import (
        Distorter,
        DistortionConfig,
        apply_distortion,
        drawn_rir,
        reverberate,
    )
    from pase.rirs import NoiseBank, RirBank
    from pase.show_distortions import _panels

    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    rirs = [rng.standard_normal(4000) * np.exp(-t / tau) for tau in (0.02, 0.05, 0.1, 0.2)]
    bank = RirBank.from_arrays(rirs, [f"sim:{i}" for i in range(4)])
    cfg = DistortionConfig()
    distorter = Distorter(cfg, rir_bank=bank, noise_bank=NoiseBank.synthetic(2.0))
    titles = {name: (spec, title) for name, spec, title in _panels(cfg, distorter, seed=3)}
    pick = drawn_rir(distorter, 3)
    assert titles["reverb"] == ("reverb", f"reverb: RT60 {bank.rt60[pick]:.2f} s (simulated room)")
    snr = float(titles["noise"][0].removeprefix("noise:").removesuffix("dB"))
    assert snr in cfg.noise_snrs and titles["noise"][1] == f"noise: SNR {snr:g} dB"
    level = float(titles["clip"][0].removeprefix("clip:"))
    assert level in cfg.clip_levels and titles["clip"][1] == f"clip at {100 * level:g} % of the peaks"
    assert titles["bandrop"][1] == "band-drop: one band in 0-1, 1-2, 2-4, 4-8 kHz"
    # The titled room is the one applied: the same draws in the same order.
    clean = torch.from_numpy(synth_speechlike(0.5))[None]
    applied = apply_distortion("reverb", clean, distorter, torch.Generator().manual_seed(3))
    expected = reverberate(clean, distorter.rirs[pick][None], distorter.rir_peaks[pick][None])
    torch.testing.assert_close(applied, expected)


def test_confusion_matrix_shows_counts(tmp_path: Path, figures: list) -> None:  # type: ignore[type-arg]
    from pase.eval.report import plot_confusion

    cm = np.array([[5, 1, 0], [0, 7, 2], [0, 0, 9]])
    plot_confusion(cm, ["a", "b", "c"], "t", tmp_path / "c.png")
    texts = sorted(int(t.get_text()) for t in figures[0].axes[0].texts)
    assert texts == [1, 2, 5, 7, 9]


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from pase.plots import pyplot, save_figure

    fig, _ = pyplot().subplots()
    save_figure(fig, tmp_path / "sub" / "f.png", dpi=50)
    assert (tmp_path / "sub" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.png"]  # no temporary left
    assert not plt.fignum_exists(fig.number)
    broken, _ = pyplot().subplots()
    with pytest.raises(ValueError):
        save_figure(broken, tmp_path / "g.png", format="no-such-format")
    assert not plt.fignum_exists(broken.number) and not (tmp_path / "g.png").exists()
