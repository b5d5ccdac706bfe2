"""ASR probe pieces on hand-made examples: alphabet, normalisation, CTC decoding, WER and CER
(through jiwer), the probe presets, word n-gram decoding and the ARPA writer."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pase.audio import load_audio
from pase.eval import asr, text
from pase.eval.__main__ import main
from pase.eval.cli import _available
from pase.eval.features import make_feature_set
from pase.eval.tasks import BUILTIN_TASKS, Task, builtin_task, librispeech_asr


def test_alphabet_is_blank_space_apostrophe_and_letters() -> None:
    assert text.VOCAB_SIZE == 29 and text.BLANK == 0
    assert text.CHARS[:2] == " '" and text.CHARS[2:] == "abcdefghijklmnopqrstuvwxyz"
    assert text.encode("a b'") == [3, 1, 4, 2]
    assert text.decode(text.encode("don't stop")) == "don't stop"
    with pytest.raises(ValueError, match="normalise"):
        text.encode("A")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("HE HOPED THERE WOULD BE STEW", "he hoped there would be stew"),
        ("THE BROTHELS' DOOR DON'T", "the brothels' door don't"),
        ("  Hello,  world!\n2 times ", "hello world times"),
        ("", ""),
    ],
)
def test_normalise_maps_librispeech_text_onto_the_alphabet(raw: str, clean: str) -> None:
    assert text.normalise(raw) == clean
    text.encode(clean)  # everything left is in the alphabet


def _one_hot(ids: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(ids), text.VOCAB_SIZE).float()


def test_greedy_decoding_merges_repeats_then_drops_blanks() -> None:
    a, b = text.encode("ab")
    # a a _ a b b _ -> "aab": the blank separates the two a's, the b's merge
    assert text.decode(asr.greedy_decode(_one_hot([a, a, 0, a, b, b, 0]))) == "aab"
    assert asr.greedy_decode(_one_hot([0, 0, 0])) == []
    assert asr.greedy_decode(torch.tensor([a, b, b, a])) == [a, b, a]  # ids work as well as logits
    # frames past the length (padding) are ignored
    assert asr.greedy_decode(_one_hot([a, 0, b, b]), length=2) == [a]


def test_edit_distance_on_known_pairs() -> None:
    assert asr.edit_distance("kitten", "sitting") == 3
    assert asr.edit_distance("", "abc") == 3 and asr.edit_distance("abc", "") == 3
    assert asr.edit_distance("abc", "abc") == 0
    assert asr.edit_distance("ab", "ba") == 2
    assert asr.edit_distance("abcdef", "azced") == 3  # b->z, drop d, f->d
    assert asr.edit_distance("a b c".split(), "a c".split()) == 1


def test_wer_and_cer_are_corpus_level_fractions() -> None:
    assert asr.wer(["a b c"], ["a c"]) == pytest.approx(1 / 3)
    assert asr.wer(["a b c", "d"], ["a c", "e f"]) == pytest.approx(3 / 4)  # (1 + 2) / (3 + 1)
    assert asr.cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert asr.cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space counts
    # a blank output deletes everything: both rates are exactly 1
    assert asr.wer(["the cat", "sat"], ["", ""]) == 1.0 and asr.cer(["the cat", "sat"], ["", ""]) == 1.0
    assert asr.wer(["a"], ["b c d"]) == 3.0  # insertions can take it above 1
    with pytest.raises(ValueError, match="hypotheses"):
        asr.wer(["a"], [])


def test_length_batches_bound_the_padded_frames() -> None:
    lengths = np.array([50, 10, 300, 20, 40, 500])
    batches = asr.length_batches(lengths, batch_frames=100, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[b]) * len(b) <= 100
        assert len(b) <= 3


# --------------------------------------------------------------------------- synthetic LibriSpeech
#: Each letter is a tone of its own frequency; a space is a short silence.
_TONES = {ch: 400.0 + 350.0 * i for i, ch in enumerate("abcdefghijkl")}
_LETTER_S, _SPACE_S = 0.06, 0.08


def _utterance(text: str, pitch: float, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for ch in text:
        n = int((_SPACE_S if ch == " " else _LETTER_S) * 16000)
        t = np.arange(n) / 16000
        tone = 0.0 if ch == " " else 0.3 * np.sin(2 * np.pi * _TONES[ch] * pitch * t)
        parts.append(tone + 0.003 * rng.standard_normal(n))
    pad = 0.003 * rng.standard_normal(1600)
    return np.concatenate([pad, *parts, pad]).astype(np.float32)


def _write_part(root: Path, speakers: list[str], per_speaker: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for s, spk in enumerate(speakers):
        chapter = root / spk / "100"
        chapter.mkdir(parents=True)
        lines = []
        for u in range(per_speaker):
            words = [
                "".join(rng.choice(list(_TONES), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 6))
            ]
            utt = f"{spk}-100-{u:04d}"
            sf.write(chapter / f"{utt}.flac", _utterance(" ".join(words), 1 + 0.02 * s, rng), 16000)
            lines.append(f"{utt} {' '.join(words).upper()}")
        (chapter / f"{spk}-100.trans.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LibriSpeech-layout folder: train-clean-5 (4 speakers x 24), test-clean (3 x 6)."""
    root = tmp_path_factory.mktemp("LibriSpeech")
    _write_part(root / "train-clean-5", ["11", "12", "13", "14"], 24, seed=0)
    _write_part(root / "test-clean", ["21", "22", "23"], 6, seed=1)
    return root


#: A probe small enough for the synthetic task to train in seconds.
TINY = dataclasses.replace(
    asr.CtcConfig.small(),
    hidden=48,
    rnn_hidden=32,
    rnn_layers=1,
    dropout=0.0,
    lr=3e-3,
    max_steps=400,
    eval_every=50,
    patience=4,
    batch_frames=1200,
)


def _data(task: Task, part: str, texts: list[str] | None = None) -> asr.AsrData:
    feats = make_feature_set("fbank")
    items = task.split(part)
    arrays = [feats.extract(load_audio(it.path)) for it in items]
    return asr.in_memory(arrays, texts or [it.label for it in items])


def test_librispeech_asr_task_reads_the_layout(librispeech: Path) -> None:
    task = builtin_task("librispeech-asr", librispeech)
    assert task.sequence_level and task.speaker_disjoint
    valid = task.split("valid")
    assert {it.speaker for it in valid} == {"11"} and len(task.split("train")) == 72 and len(valid) == 24
    assert len(task.split("test")) == 15 and {it.speaker for it in task.split("test")} == {"21", "22", "23"}
    first = task.split("train")[0]
    assert first.path.name == "12-100-0000.flac" and first.label == first.label.lower() and first.label


def test_probe_learns_the_synthetic_transcripts_and_shuffled_ones_learn_nothing(librispeech: Path) -> None:
    task = builtin_task("librispeech-asr", librispeech)
    train, valid, test = (_data(task, p) for p in ("train", "valid", "test"))
    fit = asr.train_ctc_probe(train, valid, test, seed=0, config=TINY)
    real_cer = asr.cer(fit.references, fit.hypotheses)
    assert real_cer < 0.3, fit.hypotheses[:3]

    # only the training transcripts are shuffled: dev and test stay true, as in a real control run
    rng = np.random.default_rng(0)
    shuffled = _data(task, "train", list(rng.permutation([it.label for it in task.split("train")])))
    fit_shuffled = asr.train_ctc_probe(shuffled, valid, test, seed=0, config=TINY)
    shuffled_cer = asr.cer(fit_shuffled.references, fit_shuffled.hypotheses)
    blank_cer = asr.cer(fit.references, [""] * len(fit.references))
    assert blank_cer == 1.0
    assert shuffled_cer >= 0.98 * blank_cer, fit_shuffled.hypotheses  # a stray character at most


def test_cli_runs_librispeech_asr_and_writes_wer_and_cer(
    librispeech: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(asr.PRESETS, "base", lambda: TINY)
    out = tmp_path / "out"
    args = ["--task", "librispeech-asr", "--features", "fbank", "--data", str(librispeech), "--seeds", "0"]
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "librispeech-asr" and result["probe"] == "ctc-bigru"
    assert 0 <= result["cer"] < 0.3 and 0 <= result["wer"] and result["wer"] >= result["cer"]
    assert result["n_test"] == 15 and result["test_speakers"] == 3 and len(result["per_seed"]) == 1
    assert (
        result["examples"][0]["reference"]
        == builtin_task("librispeech-asr", librispeech).split("test")[0].label
    )
    md = (out / "results.md").read_text()
    assert f"{result['wer']:.4f}" in md and f"{result['cer']:.4f}" in md

    # noisy test audio: the same command with --distort scores worse and caches apart
    noisy = tmp_path / "noisy"
    assert (
        main([*args, "--out", str(noisy), "--cache-dir", str(tmp_path / "cache"), "--distort", "noise:0dB"])
        == 0
    )
    noisy_result = json.loads((noisy / "results.json").read_text())
    assert noisy_result["distort"] == "noise:0dB" and noisy_result["cer"] > result["cer"]
    # the probe trains on clean audio either way: the noisy run reused the clean run's probe
    assert not result["per_seed"][0]["probe_reused"] and noisy_result["per_seed"][0]["probe_reused"]
    assert noisy_result["per_seed"][0]["best_step"] == result["per_seed"][0]["best_step"]

    # a clean rerun reads the same probe back and scores exactly what the first run scored
    again = tmp_path / "again"
    assert main([*args, "--out", str(again), "--cache-dir", str(tmp_path / "cache")]) == 0
    again_result = json.loads((again / "results.json").read_text())
    assert again_result["per_seed"][0]["probe_reused"] and again_result["cer"] == result["cer"]


def test_probe_cache_keys_apart_what_changes_the_probe_and_rejects_damage(tmp_path: Path) -> None:
    cache = asr.ProbeCache(tmp_path)
    key = cache.key("feat", ["a", "b"], TINY, 0)
    assert key != cache.key("feat", ["a", "b"], TINY, 1)
    assert key != cache.key("feat", ["a", "c"], TINY, 0)
    assert key != cache.key("other", ["a", "b"], TINY, 0)
    assert key != cache.key("feat", ["a", "b"], dataclasses.replace(TINY, max_steps=TINY.max_steps + 1), 0)
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    cache.save(key, state, {"best_step": 7})
    loaded = cache.load(key)
    assert loaded is not None and loaded[1] == {"best_step": 7}
    torch.testing.assert_close(loaded[0]["w"], state["w"])
    cache.path(key).write_bytes(b"not a safetensors file")
    assert cache.load(key) is None


def test_task_all_skips_librispeech_tasks_without_data_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PASE_LIBRISPEECH", raising=False)
    kept = _available(list(BUILTIN_TASKS), tmp_path)
    assert "librispeech-asr" not in kept and "fsdd-digit" in kept
    err = capsys.readouterr().err
    assert "skipped librispeech-asr" in err and "LibriSpeech not found" in err
    # named explicitly, the task fails with the same reason instead of being skipped
    assert main(["--task", "librispeech-asr", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "LibriSpeech not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_librispeech_split_covers_all_test_speakers() -> None:
    root = Path(os.environ.get("PASE_LIBRISPEECH", Path.home() / ".cache/pase/speech_extra/LibriSpeech"))
    if not (root / "test-clean").is_dir() or not (root / "train-clean-5").is_dir():
        pytest.skip(f"LibriSpeech test-clean + train-clean-5 not found at {root}")
    task = builtin_task("librispeech-asr", root)
    test, valid, train = task.split("test"), task.split("valid"), task.split("train")
    assert len({it.speaker for it in test}) == 40 and len(test) == 200
    assert len(train) + len(valid) == 1519 and len({it.speaker for it in valid}) == 3
    assert all(it.label == text.normalise(it.label) and it.label for it in task.items)
    full = librispeech_asr(root, full_test=True)
    assert len(full.split("test")) == 2620


def test_speaker40_split_is_fixed_and_covers_every_speaker(librispeech: Path) -> None:
    task = builtin_task("librispeech-speaker40", librispeech)
    assert task.classes == ["21", "22", "23"] and not task.sequence_level
    # 6 utterances per synthetic speaker: positions 2 valid, 4 test, the others train
    assert [it.split for it in task.items[:6]] == ["train", "train", "valid", "train", "test", "train"]
    again = builtin_task("librispeech-speaker40", librispeech)
    assert [(it.path, it.split) for it in again.items] == [(it.path, it.split) for it in task.items]


def test_speaker40_runs_like_the_other_utterance_tasks(librispeech: Path, tmp_path: Path) -> None:
    args = [
        "--task",
        "librispeech-speaker40",
        "--features",
        "mfcc",
        "--data",
        str(librispeech),
        "--seeds",
        "0",
    ]
    assert main([*args, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert result["n_classes"] == 3 and result["n_test"] == 3 and 0 <= result["accuracy"] <= 1


@pytest.mark.realdata
def test_real_speaker40_split_sizes() -> None:
    root = Path(os.environ.get("PASE_LIBRISPEECH", Path.home() / ".cache/pase/speech_extra/LibriSpeech"))
    if not (root / "test-clean").is_dir():
        pytest.skip(f"LibriSpeech test-clean not found at {root}")
    task = builtin_task("librispeech-speaker40", root)
    sizes = {p: len(task.split(p)) for p in ("train", "valid", "test")}
    assert sizes == {"train": 560, "valid": 80, "test": 160} and len(task.classes) == 40
    for part in ("train", "valid", "test"):
        assert {it.label for it in task.split(part)} == set(task.classes)
    assert len({it.path for it in task.items}) == 800


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_birnn_valid_frames_do_not_see_the_padding(cell: tp.Literal["gru", "lstm"]) -> None:
    rnn = asr.BiRNN(5, 4, num_layers=2, dropout=0.0, cell=cell).eval()
    a, b = torch.randn(1, 7, 5), torch.randn(1, 4, 5)
    batch = torch.zeros(2, 7, 5)
    batch[0], batch[1, :4] = a[0], b[0]
    batch[1, 4:] = 100.0  # loud padding would leak into the backward direction if it were read
    out = rnn(batch, torch.tensor([7, 4]))
    torch.testing.assert_close(out[0], rnn(a, torch.tensor([7]))[0])
    torch.testing.assert_close(out[1, :4], rnn(b, torch.tensor([4]))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ctc_probe_trains_on_cuda(librispeech: Path) -> None:
    task = builtin_task("librispeech-asr", librispeech)
    train, valid, test = (_data(task, p) for p in ("train", "valid", "test"))
    fit = asr.train_ctc_probe(train, valid, test, seed=0, config=TINY, device="cuda")
    assert asr.cer(fit.references, fit.hypotheses) < 0.3


def test_asr_summary_says_when_its_seconds_exclude_probe_training(tmp_path: Path) -> None:
    """A noisy or reverberant ASR cell decodes with the clean cell's cached probes: its seconds are
    the decoding alone, and the summary table must not read as if that feature set trained in them."""
    from pase.eval.benchmark import _write_asr_summary
    from pase.eval.results import TaskResult

    def result(features: str, reused: list[bool], seconds: float) -> TaskResult:
        per_seed: list[dict[str, tp.Any]] = [{"seed": i, "probe_reused": r} for i, r in enumerate(reused)]
        scores = {"wer": 0.9, "wer_std": 0.01, "cer": 0.5, "cer_std": 0.02}
        return TaskResult(kind="asr", task="librispeech-asr", features=features, probe="ctc-bigru",
                          layers="final", distort="reverb", scores=scores, per_seed=per_seed,
                          seeds=list(range(len(reused))), seconds=seconds)  # fmt: skip

    cells = [result("mfcc", [True, True, True], 21.6), result("fbank", [False, True, False], 900.0)]
    _write_asr_summary(cells, tmp_path)
    rows = (tmp_path / "summary_asr.md").read_text().splitlines()
    assert rows[2] == "| task | features | distort | WER | CER | seconds (this run) |"
    assert rows[4].endswith("| 21.6 (3 of 3 probes reused) |")
    assert rows[5].endswith("| 900.0 (1 of 3 probes reused) |")
    assert json.loads((tmp_path / "summary_asr.json").read_text())[0]["seconds"] == 21.6


# --------------------------------------------------------------------------- presets and the probe
def test_small_preset_is_the_first_probe_and_base_the_default() -> None:
    small = asr.CtcConfig.small()
    assert (small.rnn, small.hidden, small.rnn_hidden, small.rnn_layers) == ("gru", 256, 128, 2)
    assert (small.stack, small.stride, small.max_steps, small.epochs) == (2, 2, 800, None)
    assert small.time_masks == small.channel_masks == small.warmup_steps == 0 and small.decay == "none"
    assert asr.CtcConfig.preset("base") == asr.CtcConfig() == asr.CtcConfig.base()
    base = asr.CtcConfig()
    assert (base.rnn, base.rnn_layers, base.stack, base.stride) == ("lstm", 3, 3, 3)
    with pytest.raises(ValueError, match="choose from"):
        asr.CtcConfig.preset("huge")
    with pytest.raises(ValueError, match="stack >= stride"):
        asr.CtcConfig(stack=1, stride=2)
    # the budget: the smaller of the epochs and the steps set
    assert asr.CtcConfig(epochs=2.5, max_steps=None).budget(10) == 25
    assert asr.CtcConfig(epochs=2.5, max_steps=7).budget(10) == 7
    assert small.budget(10) == 800


def test_probe_spec_replaces_fields_of_a_preset_and_rejects_what_it_cannot_read() -> None:
    cfg = asr.CtcConfig.from_spec("base: stride=2, stack=4,rnn=gru,epochs=20,lr=2e-3")
    assert cfg == dataclasses.replace(asr.CtcConfig(), stride=2, stack=4, rnn="gru", epochs=20.0, lr=2e-3)
    assert asr.CtcConfig.from_spec("small") == asr.CtcConfig.small()
    # the small preset has no epochs: setting them, and unsetting max_steps, gives an epoch budget
    assert asr.CtcConfig.from_spec("small:epochs=3,max_steps=none").budget(10) == 30
    with pytest.raises(ValueError, match="'hiden=3' is not field=value with a field of CtcConfig"):
        asr.CtcConfig.from_spec("base:hiden=3")
    with pytest.raises(ValueError, match="stride='two' is not a int"):
        asr.CtcConfig.from_spec("base:stride=two")
    with pytest.raises(ValueError, match="need rnn gru or lstm"):
        asr.CtcConfig.from_spec("base:rnn=transformer")
    with pytest.raises(ValueError, match="choose from"):
        asr.CtcConfig.from_spec("huge:stride=3")


def test_learning_rate_warms_up_then_decays_along_a_cosine() -> None:
    cfg = asr.CtcConfig(warmup_steps=10, decay="cosine", final_lr_ratio=0.1)
    assert asr.lr_factor(0, cfg, 110) == pytest.approx(0.1) and asr.lr_factor(9, cfg, 110) == 1.0
    assert asr.lr_factor(60, cfg, 110) == pytest.approx(0.55)  # half way down the cosine
    assert asr.lr_factor(110, cfg, 110) == pytest.approx(0.1) and asr.lr_factor(
        500, cfg, 110
    ) == pytest.approx(0.1)
    assert all(asr.lr_factor(s, asr.CtcConfig.small(), 800) == 1.0 for s in (0, 400, 799))


def test_stacked_windows_with_a_stride_ignore_the_padding() -> None:
    cfg = dataclasses.replace(asr.CtcConfig.small(), rnn="lstm", stack=3, stride=2, dropout=0.0)
    model = asr.CtcProbe(1, 6, cfg).eval()
    a = torch.randn(1, 9, 1, 6)
    batch = torch.zeros(2, 13, 1, 6)
    batch[0], batch[1, :9] = torch.randn(13, 1, 6), a[0]
    out, lengths = model(batch, torch.tensor([13, 9]))
    assert out.shape == (2, 7, text.VOCAB_SIZE) and lengths.tolist() == [7, 5]
    alone, _ = model(a, torch.tensor([9]))
    torch.testing.assert_close(out[1, :5], alone[0])
    # stack == stride reads the frames exactly as the first probe did: a reshape of [F, D]
    flat = asr.CtcProbe(1, 6, asr.CtcConfig.small()).eval()
    x = torch.randn(1, 8, 1, 6)
    h = flat.rnn(flat.proj(x[:, :, 0].reshape(1, 4, 12)), torch.tensor([4]))
    torch.testing.assert_close(flat(x, torch.tensor([8]))[0], torch.log_softmax(flat.out(h), dim=-1))


def test_spec_augment_masks_only_valid_frames_and_is_seeded() -> None:
    cfg = asr.CtcConfig(time_masks=2, time_mask_frames=5, channel_masks=1, channel_mask_fraction=0.25)
    x = torch.ones(3, 20, 2, 8)
    lengths = torch.tensor([20, 12, 3])
    masked = asr.spec_augment(x.clone(), lengths, cfg, torch.Generator().manual_seed(0))
    again = asr.spec_augment(x.clone(), lengths, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(masked, again)
    assert (masked == 0).any() and (masked[1, 12:] == 1).all() and (masked[2, 3:] == 1).all()
    # a time mask spans every dimension of every layer; at most 2 x 5 frames of 20 go
    fully = (masked[0] == 0).all(dim=-1).all(dim=-1)
    assert int(fully.sum()) <= 10
    # a channel band is at most a quarter of the 8 dimensions
    band = (masked[0] == 0).all(dim=0).all(dim=0)
    assert int(band.sum()) <= 2
    assert torch.equal(masked[:, :, 0] == 0, masked[:, :, 1] == 0)  # layers alike


def test_base_probe_trains_with_masks_and_schedule(librispeech: Path) -> None:
    """The base recipe (LSTM, overlapping windows, masks, warm-up and decay) at a tiny size."""
    task = builtin_task("librispeech-asr", librispeech)
    train, valid, test = (_data(task, p) for p in ("train", "valid", "test"))
    cfg = asr.CtcConfig(
        hidden=48, rnn_hidden=48, rnn_layers=1, dropout=0.0, lr=6e-3, warmup_steps=20, time_masks=1,
        time_mask_frames=4, channel_masks=1, channel_mask_fraction=0.1, epochs=None, max_steps=500,
        eval_every=50, patience=4, batch_frames=1200,
    )  # fmt: skip
    fit = asr.train_ctc_probe(train, valid, test, seed=0, config=cfg)
    assert asr.cer(fit.references, fit.hypotheses) < 0.3, fit.hypotheses[:3]
    assert [s for s, _ in fit.curve] == list(range(50, fit.steps + 1, 50))[: len(fit.curve)]
    assert fit.valid_error == min(e for _, e in fit.curve)


# --------------------------------------------------------------------------- n-gram LM
_TOY = ["the cat sat", "the cat ran", "a dog sat"]


def test_witten_bell_probabilities_by_hand_and_they_sum_to_one() -> None:
    from pase.eval import ngram

    probs, backoff = ngram.witten_bell(ngram.count_ngrams(_TOY, 2))
    # unigrams: 12 predicted tokens (9 words, 3 </s>), 7 types; uniform over 7 + <unk> = 8
    assert probs[0][("the",)] == pytest.approx((2 + 7 / 8) / (12 + 7))
    assert probs[0][("<unk>",)] == pytest.approx((7 / 8) / 19)
    # "cat" was followed twice, by 2 distinct words: P(sat | cat) = (1 + 2 P(sat)) / (2 + 2)
    assert probs[1][("cat", "sat")] == pytest.approx((1 + 2 * probs[0][("sat",)]) / 4)
    assert backoff[("cat",)] == pytest.approx(2 / 4)
    vocab = [w for (w,) in probs[0]]
    for ctx in [(), ("cat",), ("the",), ("<s>",), ("dog",)]:
        total = sum(ngram.probability(probs, backoff, (*ctx, w)) for w in vocab)
        assert total == pytest.approx(1.0)


def test_arpa_file_loads_in_kenlm_with_the_same_probabilities(tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    from pase.eval import ngram

    path = tmp_path / "toy.arpa"
    ngram.build_arpa([s.upper() + "!" for s in _TOY], 3, path)  # normalised on the way in
    probs, backoff = ngram.witten_bell(ngram.count_ngrams(_TOY, 3))
    model = kenlm.Model(str(path))
    assert model.order == 3
    for sentence in ["the cat sat", "a cat ran", "the dog flew"]:
        words = ["<s>", *sentence.split(), "</s>"]
        expected = 0.0
        for i in range(1, len(words)):
            gram = tuple(
                w if w in {g for (g,) in probs[0]} | {"<s>"} else "<unk>"
                for w in words[max(0, i - 2) : i + 1]
            )
            expected += math.log10(ngram.probability(probs, backoff, gram))
        assert model.score(sentence) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="no text"):
        ngram.build_arpa(["", "!!"], 3, tmp_path / "empty.arpa")
    # the command line writes the same file
    (tmp_path / "toy.txt").write_text("\n".join(_TOY) + "\n")
    assert ngram.main([str(tmp_path / "toy.txt"), "--order", "3", "--out", str(tmp_path / "cli.arpa")]) == 0
    assert (tmp_path / "cli.arpa").read_text() == path.read_text()


def _frames(spec: list[dict[str, float]]) -> np.ndarray:
    """Log-probabilities ``[F, V]``: each frame's listed characters ("" is the blank) get their
    probability, the rest share what is left."""
    index = {"": 0, **{c: i + 1 for i, c in enumerate(text.CHARS)}}
    out = np.full((len(spec), text.VOCAB_SIZE), 1e-4, dtype=np.float32)
    for t, probs in enumerate(spec):
        for ch, p in probs.items():
            out[t, index[ch]] = p
    return np.log(out / out.sum(axis=1, keepdims=True))


def test_lm_decoding_fixes_a_word_that_greedy_gets_wrong(tmp_path: Path) -> None:
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from pase.eval import ngram

    lm_path = tmp_path / "lm.arpa"
    ngram.build_arpa(["the cat sat", "the cat ran", "a cat sat on the mat"] * 3, 3, lm_path)
    # "the cat": the vowel of "cat" sounds a little more like an e
    spec = [{c: 0.95} if c != "_" else {"": 0.95} for c in "t_h_e_ _c_"]
    spec += [{"e": 0.5, "a": 0.45}, {"": 0.95}, {"t": 0.95}, {"": 0.95}]
    log_probs = _frames(spec)
    greedy = asr.greedy_transcripts([log_probs])[0]
    assert greedy == "the cet"
    decoded = asr.LmDecoder(asr.LmConfig(lm_path))(log_probs)
    assert decoded == "the cat"
    assert asr.wer(["the cat"], [decoded]) < asr.wer(["the cat"], [greedy])
    with pytest.raises(FileNotFoundError):
        asr.LmDecoder(asr.LmConfig(tmp_path / "absent.arpa"))


def test_cli_lm_reports_wer_with_and_without_it(
    librispeech: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from pase.eval import ngram

    monkeypatch.setitem(asr.PRESETS, "small", lambda: TINY)
    train = builtin_task("librispeech-asr", librispeech).split("train")
    lm_path = tmp_path / "lm.arpa"
    ngram.build_arpa([it.label for it in train], 2, lm_path)
    out = tmp_path / "out"
    args = ["--task", "librispeech-asr", "--features", "fbank", "--data", str(librispeech), "--seeds", "0",
            "--asr-probe", "small", "--lm", str(lm_path), "--beam-width", "16"]  # fmt: skip
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "results.json").read_text())
    assert {"wer", "cer", "wer_lm", "cer_lm"} <= set(result) and result["lm"]["path"] == str(lm_path)
    assert 0 <= result["wer_lm"] and "hypothesis_lm" in result["examples"][0]
    md = (out / "results.md").read_text()
    assert f"{result['wer_lm']:.4f}" in md and "hyp (LM)" in md
    assert main([*args[:-4], "--lm", str(tmp_path / "absent.arpa"), "--out", str(out)]) == 2
