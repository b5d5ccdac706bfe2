"""The shell scripts of issue 12's long jobs (``recipes/pase_plus_v2/pretrain_v2.sh``,
``model_card_eval.sh``): which ``pase`` commands they issue in each situation, run against a
stand-in ``pase`` that records its arguments (``$PASE`` points the scripts at it), so no training
or evaluation runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pase.cli import build_parser
from pase.train import TrainConfig, config_from_args

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
BUILTIN_TASKS = "fsdd-digit,ravdess-speaker,ravdess-emotion,emodb-emotion,emodb-phone,librispeech-speaker"

FAKE_PASE = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_PASE_LOG"], "a") as log:
    env = {{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    log.write(json.dumps({{"args": args, "env": env}}) + "\\n")
if "--out" in args:
    Path(args[args.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
sys.exit(int(os.environ.get("FAKE_PASE_RC", "0")))
"""


@pytest.fixture
def fake_pase(tmp_path: Path) -> tuple[Path, Path]:
    exe = tmp_path / "fake_pase"
    exe.write_text(FAKE_PASE.format(python=sys.executable))
    exe.chmod(0o755)
    return exe, tmp_path / "calls.jsonl"


def _run(script: str, args: list[str], fake: tuple[Path, Path], **env: str) -> tuple[int, str, list[dict]]:
    exe, log = fake
    full_env = {**os.environ, "PASE": str(exe), "FAKE_PASE_LOG": str(log), **env}
    for name in (*("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"), "SETS", "PARTS", "LM"):
        if name not in env:
            full_env.pop(name, None)
    proc = subprocess.run(
        ["bash", str(RECIPES / script), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return proc.returncode, proc.stderr, calls


def _opt(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_card_eval_baselines_run_before_the_new_encoder_exists_and_resume(tmp_path, fake_pase):
    out = tmp_path / "card"
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", ["-", str(out), "1"], fake_pase, SETS="base", PARTS="builtin"
    )
    assert rc == 0, err
    assert len(calls) == 6  # 2 probes x 3 test conditions, the 6 tasks in one call each
    cells = {}
    for call in calls:
        args = call["args"]
        assert args[0] == "eval" and _opt(args, "--features") == "mfcc,fbank,random:pase+,pase+"
        assert _opt(args, "--num-threads") == "1"
        assert len(_opt(args, "--task").split(",")) == 6
        cells[Path(_opt(args, "--out")).relative_to(out).as_posix()] = (
            _opt(args, "--probe"),
            _opt(args, "--distort"),
        )
        assert call["env"]["MALLOC_MMAP_MAX_"] == "0"
    assert cells == {
        f"base/builtin/{p}/{c.replace(':', '_')}": (p, None if c == "clean" else c)
        for p in ("mlp", "linear")
        for c in ("clean", "noise:5dB", "reverb")
    }
    assert all((out / cell / "done").is_file() for cell in cells)
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", ["-", str(out), "1"], fake_pase, SETS="base", PARTS="builtin"
    )
    assert rc == 0 and calls == []  # every cell done before: nothing reruns


def test_card_eval_new_set_needs_an_encoder_folder(tmp_path, fake_pase):
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", ["-", str(tmp_path / "card")], fake_pase, SETS="new"
    )
    assert rc == 2 and "- is not an encoder folder" in err and calls == []
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", ["-", str(tmp_path / "card")], fake_pase, SETS="bogus"
    )
    assert rc == 2 and "unknown set 'bogus'" in err


def test_card_eval_new_encoder_gets_the_librispeech_tasks(tmp_path, fake_pase):
    encoder = tmp_path / "enc"
    encoder.mkdir()
    (encoder / "config.json").write_text("{}")
    ls = tmp_path / "LibriSpeech"
    out = tmp_path / "card"
    env = {"SETS": "new", "PARTS": "speaker40 asr", "PASE_LIBRISPEECH": str(ls)}
    rc, err, calls = _run("pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env)
    assert rc == 0 and calls == [] and "test-clean not found" in err  # no data: said, not failed
    (ls / "test-clean").mkdir(parents=True)
    rc, err, calls = _run("pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env)
    assert rc == 0, err
    tasks = [_opt(c["args"], "--task") for c in calls]
    assert tasks == ["librispeech-speaker40"] * 6 + ["librispeech-asr"] * 3
    assert {_opt(c["args"], "--features") for c in calls} == {str(encoder)}
    assert {_opt(c["args"], "--data") for c in calls} == {str(ls)}
    assert [_opt(c["args"], "--seeds") for c in calls[6:]] == ["0,1,2"] * 3  # the 3 seeds
    assert [_opt(c["args"], "--distort") for c in calls[6:]] == [None, "noise:5dB", "reverb"]
    assert [_opt(c["args"], "--asr-probe") for c in calls[6:]] == ["base"] * 3  # the default probe
    assert all("--lm" not in c["args"] for c in calls)
    # An ASR cell done with other seeds is redone (its probes are cached); with the same, skipped.
    env["PARTS"] = "asr"
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env, ASR_SEEDS="0"
    )
    assert rc == 0 and [_opt(c["args"], "--seeds") for c in calls] == ["0"] * 3
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env, ASR_SEEDS="0"
    )
    assert rc == 0 and calls == []
    env["PARTS"] = "speaker40 asr"
    rc, err, calls = _run("pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env)
    assert rc == 0 and [_opt(c["args"], "--task") for c in calls] == ["librispeech-asr"] * 3
    # another probe or a word LM redoes the ASR cells; the phone part runs the same probe, no LM
    env["PARTS"] = "asr phone"
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env, LM="/lm/tc5.arpa"
    )
    assert rc == 0, err
    assert [_opt(c["args"], "--task") for c in calls] == ["librispeech-asr"] * 3 + ["librispeech-phone"] * 3
    assert [_opt(c["args"], "--lm") for c in calls] == ["/lm/tc5.arpa"] * 3 + [None] * 3
    assert (out / "new/phone/reverb/done").read_text().endswith(" seeds 0,1,2; probe base;\n")
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env, LM="/lm/tc5.arpa"
    )
    assert rc == 0 and calls == []
    rc, err, calls = _run(
        "pase_plus_v2/model_card_eval.sh", [str(encoder), str(out)], fake_pase, **env, ASR_PROBE="small"
    )
    assert rc == 0 and {_opt(c["args"], "--asr-probe") for c in calls} == {"small"} and len(calls) == 6


def test_card_eval_stops_on_a_failed_cell_without_marking_it_done(tmp_path, fake_pase):
    out = tmp_path / "card"
    rc, _, calls = _run(
        "pase_plus_v2/model_card_eval.sh",
        ["-", str(out)],
        fake_pase,
        SETS="base",
        PARTS="builtin",
        FAKE_PASE_RC="3",
    )
    assert rc == 3 and len(calls) == 1
    assert not (out / "base/builtin/mlp/clean/done").exists()


def _legs(run: Path) -> list[str]:
    return (run / "legs.txt").read_text().splitlines()


def test_pretrain_v2_resumes_an_existing_run(tmp_path, fake_pase):
    run = tmp_path / "v2"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    rc, err, calls = _run("pase_plus_v2/pretrain_v2.sh", [str(run), "1"], fake_pase)
    assert rc == 0, err
    assert calls[0]["args"] == ["train", "--out", str(run), "--resume", "--num-threads", "1"]
    assert calls[0]["env"] == {
        "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824",
    }  # fmt: skip
    assert len(_legs(run)) == 1 and _legs(run)[0].endswith("--resume --num-threads 1")


def test_pretrain_v2_lost_run_continues_from_the_committed_encoder(tmp_path, fake_pase):
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "config.json").write_text("{}")
    (warm / "step.txt").write_text("4008\n")
    run = tmp_path / "v2"
    rc, err, calls = _run(
        "pase_plus_v2/pretrain_v2.sh", [str(run)], fake_pase, WARM=str(warm), HORIZON="10000"
    )
    assert rc == 0, err
    args = calls[0]["args"]
    assert _opt(args, "--init") == str(warm) and _opt(args, "--start-step") == "4008"
    assert _opt(args, "--max-steps") == "10000" and _opt(args, "--split-seed") == "0"
    assert _opt(args, "--freeze-encoder-steps") == "150" and _opt(args, "--seed") == "1"
    assert _opt(args, "--num-threads") == "2"
    assert "--init" in _legs(run)[0]


def test_pretrain_v2_fresh_start_checks_its_data(tmp_path, fake_pase):
    run = tmp_path / "v2"
    env = {"WARM": str(tmp_path / "none"), "PASE_EXTRA_SPEECH": str(tmp_path / "extra")}
    env["PASE_SPEECH_DIR"] = str(tmp_path / "speech")
    rc, err, calls = _run("pase_plus_v2/pretrain_v2.sh", [str(run)], fake_pase, **env)
    assert rc == 2 and "pretrain.csv not found" in err and calls == []
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "pretrain.csv").write_text("path\n")
    (tmp_path / "speech" / "librispeech" / "train-clean-100").mkdir(parents=True)
    rc, err, calls = _run("pase_plus_v2/pretrain_v2.sh", [str(run)], fake_pase, **env)
    assert rc == 0, err
    args = calls[0]["args"]
    assert args[:3] == ["train", "--preset", "pase+cpu"] and "--init" not in args
    assert _opt(args, "--seed") == "0" and _opt(args, "--max-steps") == "10000"


def _train_config(args: list[str]) -> TrainConfig:
    """The TrainConfig that ``pase train ARGS`` would run with."""
    assert args[0] == "train"
    return config_from_args(build_parser().parse_args(args))


def _data(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment pointing the scripts at a stand-in pretraining set, and its two sources."""
    extra, speech = tmp_path / "extra", tmp_path / "speech"
    extra.mkdir()
    (extra / "pretrain.csv").write_text("path\n")
    (speech / "librispeech" / "train-clean-100").mkdir(parents=True)
    env = {"PASE_EXTRA_SPEECH": str(extra), "PASE_SPEECH_DIR": str(speech)}
    return env, [str(extra / "pretrain.csv"), str(speech / "librispeech" / "train-clean-100")]


def test_v2_yaml_is_the_config_pretrain_v2_starts(tmp_path, fake_pase):
    env, data = _data(tmp_path)
    run = tmp_path / "v2"
    rc, err, calls = _run("pase_plus_v2/pretrain_v2.sh", [str(run), "2"], fake_pase, **env)
    assert rc == 0, err
    yaml_args = ["train", "--config", str(RECIPES / "pase_plus_v2" / "train.yaml"), "--data", *data]
    yaml_args += ["--out", str(run), "--num-threads", "2"]
    assert _train_config(yaml_args) == _train_config(calls[0]["args"])


@pytest.mark.parametrize(
    ("yaml", "worker_options"),
    [
        ("disc1900.yaml", None),
        ("disc1900_gim.yaml", '{"lim": {"head": "bilinear", "negatives": "batch", "pool": 20}, '
         '"gim": {"head": "bilinear", "negatives": "batch"}}'),
    ],
)  # fmt: skip
def test_disc1900_yaml_is_the_config_of_the_budget_run(tmp_path, fake_pase, yaml, worker_options):
    env, data = _data(tmp_path)
    if worker_options:
        env["WORKER_OPTIONS"] = worker_options
    run = tmp_path / "disc1900"
    rc, err, calls = _run(
        "cpu_recipe_ablation/discriminators_budget_run.sh", [str(run), "2"], fake_pase, **env
    )
    assert rc == 0, err
    yaml_args = ["train", "--config", str(RECIPES / "cpu_recipe_ablation" / yaml), "--data", *data]
    yaml_args += ["--out", str(run), "--num-threads", "2"]
    config = _train_config(yaml_args)
    assert config == _train_config(calls[0]["args"])
    if worker_options:  # the second run's forms are the preset's
        preset = _train_config(["train", "--preset", "pase+cpu-bilinear", "--out", str(run)])
        assert config.worker_options == preset.worker_options


def test_continued_pretraining_yaml_is_the_config_it_trains(tmp_path, fake_pase):
    ls = tmp_path / "LibriSpeech"
    (ls / "train-clean-5").mkdir(parents=True)
    run = tmp_path / "init_ls"
    script = "continued_pretraining/continued_pretraining.sh"
    rc, err, calls = _run(script, [str(run), "1"], fake_pase, PASE_LIBRISPEECH=str(ls))
    assert rc == 0, err
    assert [c["args"][0] for c in calls] == ["train", "eval"]
    yaml_args = ["train", "--config", str(RECIPES / "continued_pretraining" / "train.yaml")]
    yaml_args += ["--data", str(ls / "train-clean-5"), "--out", str(run), "--num-threads", "1"]
    assert _train_config(yaml_args) == _train_config(calls[0]["args"])


def test_v3_train_starts_from_v2_with_its_preset_and_data_then_resumes(tmp_path, fake_pase):
    env, sources = _data(tmp_path)
    (tmp_path / "extra" / "pretrain_more.csv").write_text("path\n")
    env["WARM"] = str(tmp_path / "no_warm_start")
    run = tmp_path / "v3"
    rc, err, calls = _run("pase_plus_v3/train.sh", [str(run)], fake_pase, **env)
    assert rc == 0, err
    args = calls[0]["args"]
    config = _train_config(args)
    assert config == TrainConfig.pase_plus_v3().updated(
        {"data": [sources[0], str(tmp_path / "extra" / "pretrain_more.csv"), sources[1]], "init": "pase+",
         "freeze_encoder_steps": 100, "seed": 0, "max_steps": 10000, "num_threads": 2, "ckpt_every": 50,
         "valid_every": 250, "valid_batches": 64}
    )  # fmt: skip
    (run / "checkpoint.pt").write_bytes(b"")
    rc, err, calls = _run("pase_plus_v3/train.sh", [str(run), "1"], fake_pase, **env)
    assert rc == 0, err
    assert calls[0]["args"] == ["train", "--out", str(run), "--resume", "--num-threads", "1"]
    assert len(_legs(run)) == 2


def test_v3_train_lost_run_continues_from_the_warm_start(tmp_path, fake_pase):
    env, _ = _data(tmp_path)
    (tmp_path / "extra" / "pretrain_more.csv").write_text("path\n")
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "config.json").write_text("{}")
    (warm / "step.txt").write_text("2500\n")
    run = tmp_path / "v3"
    rc, err, calls = _run("pase_plus_v3/train.sh", [str(run)], fake_pase, WARM=str(warm), **env)
    assert rc == 0, err
    args = calls[0]["args"]
    assert args[:3] == ["train", "--preset", "pase+v3"]
    assert _opt(args, "--init") == str(warm) and _opt(args, "--start-step") == "2500"
    assert _opt(args, "--max-steps") == "10000" and _opt(args, "--split-seed") == "0"


def test_v3_finish_runs_the_card_grid_and_the_asr_grid_in_order_then_resumes(tmp_path, fake_pase):
    run, card = tmp_path / "v3", tmp_path / "card"
    (run / "encoder").mkdir(parents=True)
    (run / "encoder" / "config.json").write_text("{}")
    final = tmp_path / "v3_final"  # exported before: not exported again
    final.mkdir()
    (final / "config.json").write_text("{}")
    ls, lm = tmp_path / "LibriSpeech", tmp_path / "tc5.arpa"
    (ls / "test-clean").mkdir(parents=True)
    env = {"PYTHON": str(fake_pase[0]), "PASE_LIBRISPEECH": str(ls), "LM": str(lm)}
    rc, err, calls = _run("pase_plus_v3/finish.sh", [str(run), str(card)], fake_pase, **env)
    assert rc == 2 and "tc5.arpa not found" in err and calls == []
    lm.write_text("\\data\\\n")
    rc, err, calls = _run("pase_plus_v3/finish.sh", [str(run), str(card)], fake_pase, **env)
    assert rc == 0, err
    scripts = [Path(c["args"][0]).name for c in calls if c["args"][0].endswith(".py")]
    assert scripts == ["curve.py", "card.py", "table.py"]
    evals = [c["args"] for c in calls if c["args"][0] == "eval"]
    tasks = [_opt(a, "--task") for a in evals]
    assert tasks[:6] == [BUILTIN_TASKS] * 6  # 2 probes x 3 conditions
    assert tasks[6:12] == ["librispeech-speaker40"] * 6
    # the baselines' ASR and phone cells, then v3's; two seeds, the LM on the ASR cells only
    assert tasks[12:] == (["librispeech-asr"] * 3 + ["librispeech-phone"] * 3) * 2
    assert [_opt(a, "--features") for a in evals[12:]] == ["mfcc,fbank,random:pase+,pase+"] * 6 + [
        str(final)
    ] * 6
    assert {_opt(a, "--seeds") for a in evals[12:]} == {"0,1"}
    assert [_opt(a, "--lm") for a in evals[12:18]] == [str(lm)] * 3 + [None] * 3
    rc, err, calls = _run("pase_plus_v3/finish.sh", [str(run), str(card)], fake_pase, **env)
    assert rc == 0 and [c["args"][0] for c in calls if c["args"][0] == "eval"] == []
