"""``recipes/pase_plus_v2/card_tables.py``: the model card's tables and the issue's acceptance counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

TASKS = [
    "fsdd-digit",
    "ravdess-speaker",
    "ravdess-emotion",
    "emodb-emotion",
    "emodb-phone",
    "librispeech-speaker",
]


def _row(
    task: str, features: str, accuracy: float, distort: str | None, probe: str = "mlp"
) -> dict[str, object]:
    return {"task": task, "features": features, "probe": probe, "distort": distort,
            "accuracy": accuracy, "accuracy_std": 0.01}  # fmt: skip


def _grid(root: Path, new: str = "/runs/v2/encoder") -> Path:
    # clean: new beats old on 5 tasks (loses emodb-phone), beats mfcc on 3; noise: beats mfcc on all 6
    clean = []
    for i, task in enumerate(TASKS):
        clean += [_row(task, "mfcc", 0.60 if i < 3 else 0.90, None), _row(task, "pase+", 0.50, None)]
        clean += [_row(task, new, 0.40 if task == "emodb-phone" else 0.70, None)]
    noise = [_row(t, f, 0.30 if f == "mfcc" else 0.50, "noise:5dB") for t in TASKS for f in ("mfcc", new)]
    for sub, rows in (("builtin/mlp/clean", clean), ("builtin/mlp/noise_5dB", noise)):
        (root / sub).mkdir(parents=True)
        (root / sub / "summary.json").write_text(json.dumps({"results": rows, "errors": {}}))
    (root / "asr" / "clean").mkdir(parents=True)
    asr = [
        {"task": "librispeech-asr", "features": f, "probe": "ctc-bigru", "distort": None,
         "wer": w, "wer_std": 0.02, "cer": w / 3, "cer_std": 0.01}
        for f, w in (("mfcc", 0.9), (new, 0.8))
    ]  # fmt: skip
    (root / "asr" / "clean" / "summary_asr.json").write_text(json.dumps(asr))
    return root


def test_acceptance_counts_and_tables(tmp_path: Path) -> None:
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    rows = card.collect(_grid(tmp_path / "eval"))
    checks = {(c["than"], c["condition"]): c for c in card.acceptance(rows)}
    assert checks["old", "clean"]["won"] == 5 and checks["old", "clean"]["met"]
    assert checks["old", "clean"]["deltas"]["emodb-phone"] == pytest.approx(-0.10)
    assert checks["mfcc", "clean"]["won"] == 3 and not checks["mfcc", "clean"]["met"]
    assert checks["mfcc", "noise:5dB"]["won"] == 6 and checks["mfcc", "noise:5dB"]["met"]
    assert card.main([str(tmp_path / "eval"), "--out", str(tmp_path / "card")]) == 0
    md = (tmp_path / "card" / "card.md").read_text()
    assert "new beats mfcc (clean, MLP) on 3 of 6 built-in tasks (needed 4 of 6: NOT met)" in md
    assert "| fsdd-digit | 0.6000 ± 0.0100 | 0.5000 ± 0.0100 | **0.7000 ± 0.0100** |" in md
    assert "| new | 0.8000 ± 0.0200 | 0.2667 ± 0.0100 |" in md
    saved = json.loads((tmp_path / "card" / "card.json").read_text())
    assert {r["label"] for r in saved["rows"]} == {"mfcc", "old", "new"}
    assert (tmp_path / "card" / "card.png").stat().st_size > 0


def test_a_missing_task_is_not_counted_as_met(tmp_path: Path) -> None:
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    root = _grid(tmp_path / "eval")
    summary = root / "builtin/mlp/noise_5dB/summary.json"
    data = json.loads(summary.read_text())
    data["results"] = [r for r in data["results"] if r["task"] != "fsdd-digit"]
    summary.write_text(json.dumps(data))
    check = card.acceptance(card.collect(root))[2]  # new vs mfcc under noise: needs 4 of 6
    assert (check["won"], check["of"], check["met"]) == (5, 5, False)


def test_bad_grids_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    (tmp_path / "empty").mkdir()
    assert card.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no summary.json" in capsys.readouterr().err
    root = _grid(tmp_path / "two")
    extra = root / "builtin/linear/clean"
    extra.mkdir(parents=True)
    extra.joinpath("summary.json").write_text(
        json.dumps({"results": [_row("fsdd-digit", "/other/enc", 0.5, None)]})
    )
    with pytest.raises(ValueError, match="more than one new encoder"):
        card.collect(root)


def test_baselines_and_new_encoder_from_separate_trees_mlp_tables_first(tmp_path: Path) -> None:
    # model_card_eval.sh writes the baselines under base/ and the new encoder under new/
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    root = tmp_path / "eval"
    base = ("mfcc", "pase+")
    cells = {
        "base/builtin/linear/clean": [_row(t, f, 0.5, None, "linear") for t in TASKS for f in base],
        "base/builtin/mlp/clean": [_row(t, f, 0.5, None) for t in TASKS for f in base],
        "new/builtin/mlp/clean": [_row(t, "/runs/v2/encoder", 0.6, None) for t in TASKS],
    }
    for sub, rows in cells.items():
        (root / sub).mkdir(parents=True)
        (root / sub / "summary.json").write_text(json.dumps({"results": rows, "errors": {}}))
    rows = card.collect(root)
    assert card.acceptance(rows)[0]["won"] == 6  # new (new/ tree) vs old (base/ tree)
    md = card.markdown(rows)
    assert md.index("## mlp probe, test audio clean") < md.index("## linear probe, test audio clean")


def test_single_run_cells_are_read_from_their_results_json(tmp_path: Path) -> None:
    # `pase eval` with one task and one feature set writes results.json where a summary would be (the
    # new encoder's LibriSpeech cells); inside a summarised cell, results.json is one of its rows
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    root = _grid(tmp_path / "eval")
    single = root / "new" / "speaker40" / "mlp" / "clean"
    single.mkdir(parents=True)
    new = "/runs/v2/encoder"
    (single / "results.json").write_text(json.dumps(_row("librispeech-speaker40", new, 0.95, None)))
    inner = root / "builtin" / "mlp" / "clean" / "fsdd-digit" / "encoder"
    inner.mkdir(parents=True)
    (inner / "results.json").write_text(json.dumps(_row("fsdd-digit", new, 0.11, None)))  # not read
    asr = root / "new" / "asr" / "noise_5dB"
    asr.mkdir(parents=True)
    (asr / "results.json").write_text(json.dumps(
        {"task": "librispeech-asr", "features": new, "probe": "ctc-bigru", "distort": "noise:5dB",
         "wer": 0.9, "wer_std": 0.01, "cer": 0.6, "cer_std": 0.02}
    ))  # fmt: skip
    rows = card.collect(root)
    cells = {(r["task"], r["label"], r["condition"]): r for r in rows}
    assert cells["librispeech-speaker40", "new", "clean"]["accuracy"] == 0.95
    assert cells["librispeech-asr", "new", "noise:5dB"]["cer"] == 0.6
    assert cells["fsdd-digit", "new", "clean"]["accuracy"] == 0.70  # the summary's row


def test_a_grid_of_asr_results_only_gives_the_asr_table_and_no_picture(tmp_path: Path) -> None:
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    root = _grid(tmp_path / "eval")
    for sub in ("builtin/mlp/clean", "builtin/mlp/noise_5dB"):
        (root / sub / "summary.json").unlink()
    assert card.main([str(root), "--out", str(tmp_path / "card")]) == 0
    md = (tmp_path / "card" / "card.md").read_text()
    assert "| new | 0.8000 ± 0.0200 | 0.2667 ± 0.0100 |" in md
    assert "on 0 of 0 built-in tasks" in md and "NOT met" in md
    assert not (tmp_path / "card" / "card.png").exists()


def test_phone_rows_stay_out_of_the_accuracy_tables(tmp_path: Path) -> None:
    card = load_script("recipes/pase_plus_v2/card_tables.py")
    root = _grid(tmp_path / "eval")
    (root / "phone" / "clean").mkdir(parents=True)
    phone = [
        {"task": "librispeech-phone", "features": f, "probe": "ctc-bilstm", "distort": None,
         "per": p, "per_std": 0.01}
        for f, p in (("mfcc", 0.5), ("/runs/v2/encoder", 0.4))
    ]  # fmt: skip
    (root / "phone" / "clean" / "summary_phone.json").write_text(json.dumps(phone))
    rows = card.collect(root)
    assert sum(r["task"] == "librispeech-phone" for r in rows) == 2
    assert card.main([str(root), "--out", str(tmp_path / "card")]) == 0
    md = (tmp_path / "card" / "card.md").read_text()
    assert "librispeech-phone" not in md and "ctc-bilstm" not in md  # no accuracy table of PER rows
    assert "| fsdd-digit |" in md
