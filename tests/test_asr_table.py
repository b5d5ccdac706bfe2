"""``recipes/asr_probe/table.py``: issue 32's robust-ASR table from a model-card grid folder."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

PROBE = {"rnn": "lstm", "rnn_layers": 3, "rnn_hidden": 320, "stack": 3, "stride": 2, "epochs": 16.0}


def _seq(features: str, distort: str | None, task: str, value: float, trained: bool) -> dict[str, object]:
    metric = {"librispeech-asr": ("wer", "cer"), "librispeech-phone": ("per",)}[task]
    row: dict[str, object] = {"task": task, "features": features, "probe": "ctc-bilstm", "layers": "final",
                              "distort": distort, "seeds": [0, 1], "seconds": 600.0 if trained else 60.0,
                              "probe_config": PROBE}  # fmt: skip
    for i, m in enumerate(metric):
        row[m], row[f"{m}_std"] = value / (i + 1), 0.01
    row["per_seed"] = [
        {"seed": s, "train_seconds": 240.0 + 60 * s, "probe_reused": not trained} for s in (0, 1)
    ]
    return row


def _grid(root: Path) -> Path:
    for sub, task in (("asr", "librispeech-asr"), ("phone", "librispeech-phone")):
        for cond, distort in (("clean", None), ("noise_5dB", "noise:5dB")):
            folder = root / "base" / sub / cond
            folder.mkdir(parents=True)
            rows = [_seq(f, distort, task, v + (0.2 if distort else 0), distort is None)
                    for f, v in (("mfcc", 0.6), ("fbank", 0.5), ("pase+", 0.55))]  # fmt: skip
            (folder / f"summary_{sub}.json").write_text(json.dumps(rows))
    new = root / "new" / "asr" / "clean"
    new.mkdir(parents=True)
    (new / "results.json").write_text(json.dumps(_seq("/runs/v3_final", None, "librispeech-asr", 0.45, True)))
    return root


def test_rows_put_asr_and_phone_side_by_side_with_times(tmp_path: Path) -> None:
    table = load_script("recipes/asr_probe/table.py")
    rows = table.rows_of(_grid(tmp_path / "grid"), "v3")
    by = {(r["features"], r["condition"]): r for r in rows}
    assert set(by) == {
        (f, c) for f in ("MFCC", "FBANK", "pase+ (packaged)") for c in ("clean", "noise:5dB")
    } | {("v3", "clean")}
    fbank = by["FBANK", "clean"]
    assert (fbank["wer"], fbank["cer"], fbank["per"]) == (0.5, 0.25, 0.5)
    assert fbank["asr_probe_seconds"] == 270.0 and fbank["asr_cell_seconds"] == 600.0
    assert by["FBANK", "noise:5dB"]["asr_probe_seconds"] is None  # the probes were reused: no training
    assert "per" not in by["v3", "clean"]
    assert fbank["asr_probe"] == "3 x 320 BiLSTM, 30 ms windows every 20 ms, 16 epochs"


def test_main_writes_the_table_with_a_finetuned_row_and_refuses_bad_folders(tmp_path: Path, capsys) -> None:
    table = load_script("recipes/asr_probe/table.py")
    grid = _grid(tmp_path / "grid")
    tuned_dir = tmp_path / "ft"
    tuned_dir.mkdir()
    frozen = _seq("pase+", None, "librispeech-asr", 0.55, True)
    tuned = {**_seq("pase+", None, "librispeech-asr", 0.40, True), "finetune_config": {"encoder_lr": 5e-5}}
    tuned["per_seed"] = [{"seed": 0, "best_step": 400, "steps": 600}]
    (tuned_dir / "results.json").write_text(json.dumps({**frozen, "finetuned": tuned}))
    out = tmp_path / "out"
    assert table.main([str(grid), "--finetune", str(tuned_dir), "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert "| FBANK | clean | 0.500 ± 0.010 | 0.250 ± 0.010 |  |  | 0.500 ± 0.010 | 4 | 10 | 4 | 10 |" in md
    assert "| pase+ (fine-tuned) | clean | 0.400 ± 0.010 | 0.200 ± 0.010 |" in md
    lines = [line for line in md.splitlines() if line.startswith("| ") and "clean" in line]
    assert [line.split(" | ")[0] for line in lines] == [
        "| MFCC", "| FBANK", "| pase+ (packaged)", "| v3", "| pase+ (fine-tuned)"
    ]  # fmt: skip
    assert (out / "table.png").stat().st_size > 0
    assert table.main([str(grid), "--finetune", str(grid), "--out", str(out)]) == 2
    assert "no results.json" in capsys.readouterr().err
