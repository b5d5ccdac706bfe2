"""``pase eval``: the downstream benchmark from the command line.

Examples::

    pase eval --task fsdd-digit --features mfcc --out results/
    pase eval --task all --features mfcc,fbank,random:pase+ --out grid/
    pase eval --manifest tasks.csv --features runs/x/encoder --probe linear --out mine/
    pase eval --task emodb-emotion --features mfcc,pase+ --distort noise:5dB --out noisy/
    pase eval --task librispeech-asr --features fbank --lm lm.arpa --out asr/
"""

from __future__ import annotations

import argparse
import sys
import typing as tp
from pathlib import Path


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from pase.cli_args import device_arg
    from pase.eval.ctc import PRESETS
    from pase.eval.tasks import BUILTIN_TASKS
    from pase.loading import encoder_spec_help

    p = subparsers.add_parser(
        "eval",
        help="benchmark feature sets (MFCC, FBANK, PASE encoders) on downstream tasks",
        description="Train small probes on frozen features and report accuracy and macro-F1 "
        "over several seeds. Features are cached, so reruns only retrain the probes.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--task",
        help=f"a built-in task, a comma-separated list, or 'all' ({', '.join(BUILTIN_TASKS)})",
    )
    what.add_argument("--manifest", type=Path, help="CSV with columns path,label,split (train/valid/test)")
    p.add_argument(
        "--features",
        default="mfcc",
        help=f"comma-separated feature sets: mfcc, fbank, or an encoder: {encoder_spec_help()} "
        "(default: mfcc)",
    )
    p.add_argument("--probe", choices=("mlp", "linear"), default="mlp", help="probe (default: mlp)")
    p.add_argument(
        "--layers",
        choices=("final", "all"),
        default="final",
        help="encoder output, or a learned weighted sum of all hidden states (default: final)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="speech bundle (default: $PASE_SPEECH_DIR or ../shared/speech); the LibriSpeech tasks "
        "take the LibriSpeech folder here, else $PASE_LIBRISPEECH or ~/.cache/pase/speech_extra/LibriSpeech",
    )
    p.add_argument("--out", type=Path, default=Path("pase-eval"), help="output folder (default: ./pase-eval)")
    p.add_argument("--seeds", default="0,1,2", help="probe seeds, comma-separated (default: 0,1,2)")
    p.add_argument(
        "--device",
        default="cpu",
        type=device_arg,
        help="device for feature extraction, the ASR probe and fine-tuning (default: cpu)",
    )
    p.add_argument("--distort", default=None, help="distort TEST audio, e.g. noise:5dB, reverb, clip")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="features and trained ASR probes (default: ~/.cache/pase/eval)",
    )
    p.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="CPU threads for extraction and probes (default: torch's, one per core); 1 is faster "
        "for tasks of short files on a machine that other jobs share",
    )
    p.add_argument(
        "--full-test",
        action="store_true",
        help="librispeech-asr: test on all of test-clean (2620 utterances) instead of the "
        "default 200 (5 per speaker)",
    )
    speech = p.add_argument_group("speech recognition (librispeech-asr, librispeech-phone; see docs/asr.md)")
    speech.add_argument(
        "--asr-probe",
        default="base",
        metavar="PRESET[:FIELD=VALUE,...]",
        help=f"CTC probe preset ({', '.join(sorted(PRESETS))}; default: base; small is the first, weaker "
        "probe), optionally with fields of CtcConfig replaced, e.g. base:stride=2",
    )
    speech.add_argument(
        "--lm",
        type=Path,
        default=None,
        help="librispeech-asr: also decode with this word n-gram (ARPA or KenLM binary; build one "
        "with python -m pase.eval.ngram) and report WER/CER with and without it",
    )
    speech.add_argument("--lm-alpha", type=float, default=0.5, help="LM weight (default: 0.5)")
    speech.add_argument("--lm-beta", type=float, default=1.0, help="word insertion bonus (default: 1.0)")
    speech.add_argument("--beam-width", type=int, default=64, help="LM beam width (default: 64)")
    tune = p.add_argument_group("fine-tuning (encoders only; see pase.eval.finetune)")
    tune.add_argument(
        "--finetune",
        action="store_true",
        help="after the frozen run, train the encoder with the probe and report both side by side",
    )
    tune.add_argument("--encoder-lr", type=float, default=5e-5, help="encoder learning rate (default: 5e-5)")
    tune.add_argument("--probe-lr", type=float, default=1e-3, help="probe learning rate (default: 1e-3)")
    tune.add_argument("--finetune-steps", type=int, default=600, help="step budget per seed (default: 600)")
    tune.add_argument(
        "--finetune-head",
        choices=["frozen", "fresh"],
        default="frozen",
        help="frozen (default): the probe starts from the frozen run's trained probe (linear "
        "probing, then fine-tuning); fresh: a new probe trained with the encoder from step 0",
    )
    tune.add_argument(
        "--save-encoder",
        type=Path,
        default=None,
        help="write the fine-tuned encoder (first seed) here in save_pretrained format",
    )
    p.set_defaults(func=_main)


def _finetune_config(args: argparse.Namespace) -> tp.Any:
    """The :class:`~pase.eval.finetune.FinetuneConfig` of the options, or None without --finetune."""
    if not args.finetune:
        return None
    from pase.eval.finetune import FinetuneConfig

    if args.encoder_lr <= 0 or args.probe_lr <= 0 or args.finetune_steps <= 0:
        raise ValueError("--encoder-lr, --probe-lr and --finetune-steps must be positive")
    return FinetuneConfig(
        encoder_lr=args.encoder_lr,
        probe_lr=args.probe_lr,
        max_steps=args.finetune_steps,
        head_init=args.finetune_head,
    )


def _asr_options(args: argparse.Namespace) -> dict[str, tp.Any]:
    """The probe preset and LM decoding of the options, as :func:`pase.eval.asr.evaluate_asr` takes them."""
    from pase.eval.ctc import CtcConfig
    from pase.eval.lm_decoding import LmConfig

    if args.finetune and args.asr_probe != "base":
        raise ValueError("--finetune trains the default (base) ASR probe: drop --asr-probe")
    lm = None
    if args.lm is not None:
        if not args.lm.is_file():
            raise ValueError(f"--lm {args.lm}: file not found")
        if args.beam_width < 1:
            raise ValueError("--beam-width must be >= 1")
        lm = LmConfig(args.lm, alpha=args.lm_alpha, beta=args.lm_beta, beam_width=args.beam_width)
    return {"config": CtcConfig.from_spec(args.asr_probe), "lm": lm}


def _available(names: list[str], data: Path) -> list[str]:
    """``names`` (from ``--task all``) without the LibriSpeech tasks whose data is missing; each
    one left out is announced on stderr with the reason (named explicitly, they fail instead)."""
    from pase.eval.tasks import OPTIONAL_TASKS, TaskError, builtin_task

    kept = []
    for name in names:
        if name in OPTIONAL_TASKS:
            try:
                builtin_task(name, data)
            except TaskError as exc:
                print(f"pase eval: skipped {name}: {exc}", file=sys.stderr)
                continue
        kept.append(name)
    return kept


def _distortion_dir(data: Path) -> Path:
    """Where the noise and RIR banks are: ``data`` when it has them, else the speech bundle
    (``--data`` may name a LibriSpeech folder, which has neither)."""
    from pase.eval.tasks import default_data_dir

    if (data / "noise").is_dir() or (data / "rir").is_dir():
        return data
    return default_data_dir()


def _split_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _main(args: argparse.Namespace) -> int:
    from pase.eval.benchmark import run_grid
    from pase.eval.features import (
        EvalCondition,
        FeatureCache,
        FeatureError,
        FeatureSet,
        default_cache_dir,
        make_feature_set,
    )
    from pase.eval.tasks import BUILTIN_TASKS, Task, TaskError, builtin_task, default_data_dir, load_manifest

    def fail(msg: str) -> int:
        print(f"pase eval: {msg}", file=sys.stderr)
        return 2

    if args.num_threads is not None:
        if args.num_threads < 1:
            return fail(f"--num-threads must be >= 1, got {args.num_threads}")
        import torch

        torch.set_num_threads(args.num_threads)

    try:
        seeds = [int(s) for s in _split_list(args.seeds)]
    except ValueError:
        return fail(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        return fail("--seeds is empty")
    feature_names = _split_list(args.features)
    if not feature_names:
        return fail("--features is empty")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return fail(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from pase.audio import os_problem

        return fail(f"--out {out}: cannot create the folder ({os_problem(exc)})")
    data = Path(args.data) if args.data else default_data_dir()

    tasks: list[tuple[str, tp.Callable[[], Task]]]
    if args.manifest is not None:
        try:
            manifest_task = load_manifest(args.manifest)
        except TaskError as exc:
            return fail(str(exc))
        tasks = [(manifest_task.name, lambda: manifest_task)]
    else:
        names = list(BUILTIN_TASKS) if args.task == "all" else _split_list(args.task)
        unknown = [n for n in names if n not in BUILTIN_TASKS]
        if unknown or not names:
            choices = ", ".join(BUILTIN_TASKS)
            return fail(f"unknown task {', '.join(unknown) or '(none)'}; choose from all, {choices}")
        if args.task == "all":
            names = _available(names, data)
        tasks = [(n, lambda n=n: builtin_task(n, data)) for n in names]  # type: ignore[misc]
        if args.full_test:
            from pase.eval.tasks import librispeech_asr

            tasks = [
                (n, lambda: librispeech_asr(data, full_test=True)) if n == "librispeech-asr" else (n, make)
                for n, make in tasks
            ]

    def feature_factory(name: str) -> tp.Callable[[], FeatureSet]:
        return lambda: make_feature_set(name, args.layers, args.device)

    if args.layers == "all":
        for name in feature_names:
            if name in ("mfcc", "fbank"):
                print(
                    f"pase eval: {name} has a single layer: --layers all applies to the encoders only",
                    file=sys.stderr,
                )
    try:
        distortion = EvalCondition(args.distort, _distortion_dir(data)) if args.distort else None
        finetune = _finetune_config(args)
        asr_options = _asr_options(args)
        if args.save_encoder is not None and finetune is None:
            raise ValueError("--save-encoder needs --finetune")
    except (FeatureError, ValueError, ImportError) as exc:
        return fail(str(exc))

    cache = FeatureCache(args.cache_dir or default_cache_dir())
    results, errors = run_grid(
        tasks,
        [(name, feature_factory(name)) for name in feature_names],
        out,
        cache,
        probe=args.probe,
        seeds=seeds,
        distortion=distortion,
        device=args.device,
        finetune=finetune,
        save_encoder=args.save_encoder,
        asr_options=asr_options,
    )
    skipped = {path for r in results for path in r.skipped_files}
    if skipped:
        print(f"pase eval: {len(skipped)} unreadable file(s) skipped; see above", file=sys.stderr)
    if errors:
        print(f"pase eval: {len(errors)} run(s) failed; see above", file=sys.stderr)
    print(f"pase eval: {len(results)} result(s) in {args.out}", file=sys.stderr)
    return 1 if errors or not results else 0
