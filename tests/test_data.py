"""Training data: sources, caching, bad files skipped, hold-out, deterministic resumable batches."""

from __future__ import annotations

import dataclasses
import os
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

from pase import data
from pase.audio import AudioError

CHUNK = 1600


def _write_indexed(path: Path, file_id: int, num_samples: int) -> None:
    """A float WAV whose sample k is ``file_id * 100000 + k``: a window shows file and offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = (file_id * 100000 + np.arange(num_samples)).astype(np.float32)
    sf.write(path, wav, 16000, subtype="FLOAT")


def _where(window: torch.Tensor) -> tuple[int, int]:
    first = int(window[0].item())
    return first // 100000, first % 100000


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for i in range(6):
        _write_indexed(root / f"spk{i % 3}" / f"{i % 3}-10-{i}.wav", i, 4000 + 1000 * i)
    return root


def _corpus(root: Path, cache: Path | None = None, **kw: tp.Any) -> list[data.Utterance]:
    return data.load_corpus([root], cache_dir=cache, min_seconds=0.05, report=None, **kw)


def test_sources_folder_list_csv_and_scp(corpus_dir: Path, tmp_path: Path) -> None:
    folder = data.read_source(corpus_dir)
    assert len(folder) == 6 and {e.speaker for e in folder} == {"0", "1", "2"}
    files = sorted(corpus_dir.rglob("*.wav"))
    assert data.read_source(files[0]) == [data.AudioEntry(files[0], files[0].name.split("-")[0])]  # one file

    listing = tmp_path / "train.lst"
    listing.write_text("# comment\n\n" + "\n".join(str(p.relative_to(tmp_path)) for p in files))
    assert [e.path.resolve() for e in data.read_source(listing)] == files

    manifest = tmp_path / "train.csv"
    manifest.write_text("path,speaker\n" + "".join(f"{p},S{i % 2}\n" for i, p in enumerate(files)))
    assert {e.speaker for e in data.read_source(manifest)} == {"S0", "S1"}
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file\nx.wav\n")
    with pytest.raises(AudioError, match="bad.csv.*'path' column"):
        data.read_source(bad_csv)

    scp = tmp_path / "kaldi" / "wav.scp"
    scp.parent.mkdir()
    scp.write_text(f"u1 {files[0]}\nu2 {files[1]}\nu3 flac -d -c x.flac |\nu4 sox y.wav -t wav - |\n")
    (scp.parent / "utt2spk").write_text("u1 alice\nu2 bob\n")
    lines: list[str] = []
    entries = data.read_source(scp, report=lines.append)
    assert [(e.path, e.speaker) for e in entries] == [(files[0], "alice"), (files[1], "bob")]
    assert len(lines) == 1 and "2 piped" in lines[0] and "wav.scp" in lines[0]


def test_resampled_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stereo_8k = np.stack([synth_speechlike(1.0, 8000), synth_speechlike(1.0, 8000, seed=1)], 1)
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.flac", stereo_8k, 8000)
    sf.write(tmp_path / "a" / "y.wav", synth_speechlike(0.5), 16000)
    cache = tmp_path / "cache"
    first = _corpus(tmp_path / "a", cache)
    assert [u.num_samples for u in first] == [16000, 8000]
    assert len(list(cache.rglob("*.npy"))) == 2

    def no_decoding(*args: tp.Any, **kw: tp.Any) -> np.ndarray:
        raise AssertionError("a cached file was decoded again")

    monkeypatch.setattr(data, "load_audio", no_decoding)
    # A folder provisioned afresh (copied, checked out) has new mtimes: the cache still holds.
    os.utime(tmp_path / "a" / "x.flac", ns=(1, 1))
    second = _corpus(tmp_path / "a", cache)
    np.testing.assert_array_equal(second[0].samples(), first[0].samples())
    assert isinstance(second[0].stored(), np.memmap)
    monkeypatch.undo()
    # New content of the same size is a new file: decoded again, not served from the cache.
    sf.write(tmp_path / "a" / "y.wav", synth_speechlike(0.5, seed=7), 16000)
    third = _corpus(tmp_path / "a", cache)
    assert len(list(cache.rglob("*.npy"))) == 3
    assert not np.array_equal(third[1].samples(), first[1].samples())


def test_cache_is_int16_and_reads_back_float32(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    quiet, loud = 0.05 * synth_speechlike(1.0, seed=4), 3.0 * synth_speechlike(1.0, seed=5)
    sf.write(tmp_path / "a" / "quiet.wav", quiet, 16000, subtype="FLOAT")
    sf.write(tmp_path / "a" / "zloud.wav", loud, 16000, subtype="FLOAT")  # float file past full scale
    cached = _corpus(tmp_path / "a", tmp_path / "cache", num_workers=0)
    in_ram = _corpus(tmp_path / "a", num_workers=0)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert [np.load(f, mmap_mode="r").dtype for f in files] == [np.int16, np.int16]
    assert all(f.stat().st_size < 2 * 16000 + 200 for f in files)  # half of float32's 64 kB
    window = cached[0].window(100, CHUNK)
    assert window.dtype == np.float32
    np.testing.assert_allclose(window, in_ram[0].window(100, CHUNK), atol=0.5 / 32768, rtol=0)
    # The loud file keeps its shape at peak just under full scale instead of being clipped.
    loud_back = cached[1].samples()
    assert loud_back.dtype == np.float32 and 0.999 < np.abs(loud_back).max() < 1.0
    np.testing.assert_allclose(loud_back, loud / np.abs(loud).max(), atol=2 / 32768, rtol=0)


def test_float32_cache_of_older_versions_still_reads(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    wav = synth_speechlike(0.5, seed=6)
    sf.write(tmp_path / "a" / "x.wav", wav, 16000, subtype="FLOAT")
    cache = tmp_path / "cache"
    _corpus(tmp_path / "a", cache, num_workers=0)
    (npy,) = cache.rglob("*.npy")
    np.save(npy, wav)  # what the float32 cache held for this key
    (utt,) = _corpus(tmp_path / "a", cache, num_workers=0)
    np.testing.assert_array_equal(utt.window(0, CHUNK), wav[:CHUNK])


def test_parallel_preparation_equals_serial(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    for i in range(6):
        sf.write(
            root / f"f{i}.flac",
            synth_speechlike(0.5 + 0.1 * i, 8000 + 4000 * (i % 2), seed=i),
            8000 + 4000 * (i % 2),
        )
    sf.write(root / "short.wav", synth_speechlike(0.1), 16000)
    (root / "broken.flac").write_bytes(b"not audio at all")
    runs = {}
    for workers in (0, 2):
        lines: list[str] = []
        cache = tmp_path / f"cache{workers}"
        corpus = data.load_corpus([root], cache, min_seconds=0.3, report=lines.append, num_workers=workers)
        runs[workers] = (corpus, sorted(lines))
    (serial, serial_lines), (parallel, parallel_lines) = runs[0], runs[2]
    assert [u.path for u in parallel] == [u.path for u in serial] and len(serial) == 6  # sources' order
    for a, b in zip(serial, parallel, strict=True):
        assert a.num_samples == b.num_samples
        np.testing.assert_array_equal(a.samples(), b.samples())
    assert parallel_lines == serial_lines and len(serial_lines) == 2  # each bad file once
    assert any("broken.flac" in line for line in parallel_lines)


def test_short_and_unreadable_files_reported_once_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "good.wav", synth_speechlike(1.0), 16000)
    sf.write(root / "short.wav", synth_speechlike(0.1), 16000)
    (root / "broken.flac").write_bytes(b"not audio at all")
    lines: list[str] = []
    corpus = data.load_corpus([root], cache_dir=tmp_path / "cache", min_seconds=0.5, report=lines.append)
    assert [u.path.name for u in corpus] == ["good.wav"]
    assert len(lines) == 2
    assert any("broken.flac" in line and "decode" in line for line in lines)
    assert any("short.wav" in line and "too short" in line for line in lines)
    with pytest.raises(AudioError, match="no usable audio"):
        data.load_corpus([root], min_seconds=5.0, report=None)


def test_speaker_holdout_is_disjoint_and_file_holdout_splits_files(corpus_dir: Path) -> None:
    corpus = _corpus(corpus_dir)
    train, valid = data.split_holdout(corpus, 0.34, by="speaker", seed=3)
    assert {u.speaker for u in train}.isdisjoint({u.speaker for u in valid})
    assert len(train) + len(valid) == len(corpus) and len(valid) == 2
    assert data.split_holdout(corpus, 0.34, by="speaker", seed=3) == (train, valid)
    train_f, valid_f = data.split_holdout(corpus, 0.5, by="file")
    assert len(valid_f) == 3 and not {u.path for u in train_f} & {u.path for u in valid_f}


def test_windows_chunk_ctxt_rand(corpus_dir: Path) -> None:
    corpus = _corpus(corpus_dir)
    batches = data.ChunkBatches(corpus, 4, CHUNK, seed=0, amplitude_scaling=False)
    for position in range(batches.steps_per_epoch):
        b = batches.batch(0, position)
        assert b.chunk.shape == b.ctxt.shape == b.rand.shape == (4, CHUNK)
        for chunk, ctxt, rand in zip(b.chunk, b.ctxt, b.rand, strict=True):
            (fc, oc), (fx, ox), (fr, _) = _where(chunk), _where(ctxt), _where(rand)
            assert fx == fc and fr != fc  # ctxt from the same file, rand from another
            assert abs(ox - oc) >= CHUNK  # every test file allows disjoint windows
            assert torch.equal(chunk, fc * 100000 + oc + torch.arange(CHUNK, dtype=torch.float32))


def test_rand_comes_from_another_speaker_and_covers_all_of_them(tmp_path: Path) -> None:
    speakers = ["a", "a", "a", "a", "b", "c", "c"]  # file k holds the constant k + 1
    corpus = [
        data.Utterance(tmp_path / f"{k}.wav", spk, 2 * CHUNK, wav=np.full(2 * CHUNK, k + 1.0, np.float32))
        for k, spk in enumerate(speakers)
    ]

    def pairs(batches: data.ChunkBatches) -> list[tuple[int, int]]:
        out = []
        for epoch in range(40):
            for position in range(batches.steps_per_epoch):
                b = batches.batch(epoch, position)
                out += [(int(c[0]) - 1, int(r[0]) - 1) for c, r in zip(b.chunk, b.rand, strict=True)]
        return out

    drawn = pairs(data.ChunkBatches(corpus, 2, CHUNK, seed=0, amplitude_scaling=False))
    assert all(speakers[i] != speakers[j] for i, j in drawn)
    for i in range(len(speakers)):  # every other speaker's file is drawn for every anchor
        others = {j for j in range(len(speakers)) if speakers[j] != speakers[i]}
        assert {j for a, j in drawn if a == i} == others
    # the original's draw (any other file) gives the anchor's own speaker here: 3/6 of "a"'s
    anyfile = pairs(data.ChunkBatches(corpus, 2, CHUNK, 0, amplitude_scaling=False, rand_other_speaker=False))
    assert any(speakers[i] == speakers[j] and i != j for i, j in anyfile)
    assert all(i != j for i, j in anyfile)
    # one speaker only: any other file, as before
    alone = [dataclasses.replace(u, speaker="s") for u in corpus]
    assert all(i != j for i, j in pairs(data.ChunkBatches(alone, 2, CHUNK, seed=0, amplitude_scaling=False)))


def test_short_file_reflection_padded_and_amplitude_scaled(tmp_path: Path) -> None:
    wav = synth_speechlike(0.06)
    utt = data.Utterance(tmp_path / "x.wav", "x", wav.shape[0], wav=wav)
    np.testing.assert_array_equal(utt.window(0, CHUNK), np.pad(wav, (0, CHUNK - 960), "reflect"))
    other = data.Utterance(tmp_path / "y.wav", "y", 16000, wav=synth_speechlike(1.0, seed=2))
    batches = data.ChunkBatches([utt, other], 8, CHUNK, seed=0, amplitude_scaling=True)
    peaks = batches.batch(0, 0).chunk.abs().amax(dim=1)
    assert torch.all(peaks <= 1.0) and peaks.std() > 0.05  # peak-normalised, times U(0, 1)


def test_batches_deterministic_reshuffled_and_resumable(corpus_dir: Path) -> None:
    corpus = _corpus(corpus_dir)
    a = data.ChunkBatches(corpus, 2, CHUNK, seed=7, amplitude_scaling=False)
    b = data.ChunkBatches(corpus, 2, CHUNK, seed=7, amplitude_scaling=False)
    assert torch.equal(a.batch(1, 2).chunk, b.batch(1, 2).chunk)
    assert not torch.equal(a.batch(0, 0).chunk, data.ChunkBatches(corpus, 2, CHUNK, seed=8).batch(0, 0).chunk)
    epoch0 = [_where(a.batch(0, p).chunk[k])[0] for p in range(a.steps_per_epoch) for k in range(2)]
    epoch1 = [_where(a.batch(1, p).chunk[k])[0] for p in range(a.steps_per_epoch) for k in range(2)]
    assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1)  # same visits, new order

    n = a.steps_per_epoch + 3  # cross an epoch boundary
    straight = [batch for batch, _ in zip(a, range(n), strict=False)]
    assert a.state_dict() == {"epoch": 0, "position": 0}  # reading ahead never moves the cursor
    state = b.state_after(straight[n // 2])
    resumed = data.ChunkBatches(corpus, 2, CHUNK, seed=7, amplitude_scaling=False)
    resumed.load_state_dict(state)
    rest = [batch for batch, _ in zip(resumed, range(n - n // 2 - 1), strict=False)]
    for x, y in zip(straight[n // 2 + 1 :], rest, strict=True):
        assert (x.epoch, x.position) == (y.epoch, y.position)
        assert torch.equal(x.chunk, y.chunk) and torch.equal(x.rand, y.rand)


def test_ddp_shards_are_disjoint_slices_of_the_global_batch(corpus_dir: Path) -> None:
    corpus = _corpus(corpus_dir)
    whole = data.ChunkBatches(corpus, 4, CHUNK, seed=1)
    ranks = [data.ChunkBatches(corpus, 2, CHUNK, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == whole.steps_per_epoch
    for position in range(whole.steps_per_epoch):
        shards = [r.batch(0, position).rand for r in ranks]
        assert torch.equal(torch.cat(shards), whole.batch(0, position).rand)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        data.ChunkBatches(corpus, 64, CHUNK, world_size=2)


def test_ctxt_of_a_short_file_from_the_same_speaker(tmp_path: Path) -> None:
    # file k holds the constant k + 1; files 0-2 are shorter than two chunks, file 3 is long
    speakers = ["a", "a", "b", "b", "c"]
    sizes = [CHUNK + 400, CHUNK + 200, CHUNK + 100, 3 * CHUNK, CHUNK + 300]
    corpus = [
        data.Utterance(tmp_path / f"{k}.wav", spk, n, wav=np.full(n, k + 1.0, np.float32))
        for k, (spk, n) in enumerate(zip(speakers, sizes, strict=True))
    ]

    def ctxt_files(source: str) -> list[tuple[int, int]]:
        batches = data.ChunkBatches(corpus, 1, CHUNK, seed=0, amplitude_scaling=False, ctxt_source=source)
        out = []
        for epoch in range(30):
            for position in range(batches.steps_per_epoch):
                b = batches.batch(epoch, position)
                out.append((int(b.chunk[0, 0]) - 1, int(b.ctxt[0, 0]) - 1))
        return out

    assert all(a == c for a, c in ctxt_files("file"))  # the reference: always the same file
    drawn = ctxt_files("speaker")
    for a, c in drawn:
        if a in (0, 1):
            assert c == 1 - a  # short, and its speaker has another file
        elif a == 2:
            assert c == 3  # short: the speaker's long file
        else:
            assert c == a  # long enough for a disjoint window (3), or no other file of its speaker (4)
    assert {a for a, _ in drawn} == set(range(5))
    with pytest.raises(ValueError, match="ctxt_source"):
        data.ChunkBatches(corpus, 1, CHUNK, ctxt_source="other")  # type: ignore[arg-type]


def test_cache_dir_is_a_subfolder_of_pase_cache_dir_old_layout_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pase.data import default_cache_dir

    monkeypatch.setenv("PASE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "audio"  # beside eval/ and rirs/
    (tmp_path / "3f").mkdir()
    np.save(tmp_path / "3f" / "3f00.npy", np.zeros(4, np.int16))  # a cache of an older version
    assert default_cache_dir() == tmp_path
    (tmp_path / "audio").mkdir()  # once the new folder exists, it wins
    assert default_cache_dir() == tmp_path / "audio"
