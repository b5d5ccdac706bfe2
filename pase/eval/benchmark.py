"""Run one (task, feature set) evaluation, or a grid of them, and write the reports.

Flow of :func:`evaluate`: extract (or load cached) features for every file, test files
optionally distorted; pool (utterance tasks) or label frames (frame tasks); standardise with
training statistics; train one probe per seed with early stopping on the validation part;
score accuracy and macro-F1 on the test part.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np

from pase.eval import probes
from pase.eval.features import BadFiles, EvalCondition, FeatureCache, FeatureSet, cache_features, folder_names
from pase.eval.report import write_results, write_summary
from pase.eval.results import MAIN_METRIC, TaskResult, summary_json
from pase.eval.tasks import Item, Task, TaskError, frame_labels, with_valid_split

if tp.TYPE_CHECKING:
    from pase.eval.finetune import FinetuneConfig

#: Frame tasks have ~100x more examples than files: larger batches, fewer epochs.
FRAME_PROBE = probes.ProbeConfig(batch_size=256, max_epochs=30, patience=4)


def _probe_data(
    task: Task, items: list[Item], feats: list[np.ndarray], classes: dict[str, int]
) -> probes.ProbeData:
    if task.frame_level:
        labels = [frame_labels(it, f.shape[1], classes) for it, f in zip(items, feats, strict=True)]
        return probes.frame_data(feats, labels, probes.FRAME_CONTEXT)
    return probes.utterance_data(feats, [classes[it.label] for it in items])


def evaluate(
    task: Task,
    features: FeatureSet,
    cache: FeatureCache,
    *,
    probe: probes.ProbeKind = "mlp",
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: EvalCondition | None = None,
    bad_files: BadFiles | None = None,
    trained_out: probes.TrainedProbes | None = None,
) -> tuple[TaskResult, np.ndarray]:
    """Evaluate ``features`` on ``task``: the result record and the summed confusion matrix.

    ``trained_out``: filled with the standardisation and every seed's trained probe (what
    fine-tuning starts from).

    Files that cannot be read are reported once and left out (``bad_files``, shared across the
    feature sets of a grid so every feature set sees the same files; default: a fresh one that
    reports to stderr).
    """
    start = time.time()
    bad = bad_files if bad_files is not None else BadFiles(lambda msg: print(msg, file=sys.stderr))
    task = with_valid_split(task)
    classes = task.class_index()
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    features.calibrate_on(bad.keep(it.path for it in parts["train"]))
    pool = None if task.frame_level else probes.pool_utterance
    feats_of: dict[str, list[np.ndarray]] = {}
    for name, items in parts.items():
        feats_of[name] = cache_features(
            features,
            [it.path for it in items],
            cache,
            distortion if name == "test" else None,
            desc=f"{task.name} {features.name} {name}",
            transform=pool,
            bad_files=bad,
        )
    data = {}
    for name, items in parts.items():
        kept = set(bad.keep(it.path for it in items))
        items = [it for it in items if it.path in kept]
        if not items:
            raise TaskError(f"task {task.name}: no readable {name} files left")
        data[name] = _probe_data(task, items, feats_of[name], classes)
    mean, std = probes.standardise(data["train"], data["valid"], data["test"])
    if trained_out is not None:
        trained_out.mean, trained_out.std = mean, std

    config = dataclasses.replace(FRAME_PROBE if task.frame_level else probes.ProbeConfig(), kind=probe)
    cm_total = np.zeros((len(classes), len(classes)), dtype=np.int64)
    per_seed: list[dict[str, tp.Any]] = []
    for seed in seeds:
        fit = probes.train_probe(data["train"], data["valid"], data["test"], len(classes), seed, config)
        cm = probes.confusion_matrix(fit.labels, fit.predictions, len(classes))
        cm_total += cm
        if trained_out is not None:
            trained_out.states[seed] = fit.state
        per_seed.append({
            "seed": seed,
            "accuracy": probes.accuracy(cm),
            "macro_f1": probes.macro_f1(cm),
            "valid_accuracy": fit.valid_accuracy,
            "epochs": fit.epochs,
            "best_epoch": fit.best_epoch,
            "layer_weights": fit.layer_weights,
        })  # fmt: skip

    def mean_std(key: str) -> tuple[float, float]:
        values = [float(s[key]) for s in per_seed]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    task_paths = {it.path for it in task.items}
    acc, acc_std = mean_std("accuracy")
    # The learned mix of hidden states (--layers all), averaged over seeds; [1.0] for one layer.
    layer_weights = np.mean([s["layer_weights"] for s in per_seed], axis=0).round(4).tolist()
    f1, f1_std = mean_std("macro_f1")
    result = TaskResult(
        kind="classification",
        task=task.name,
        features=features.name,
        probe=probe,
        layers=features.layers,
        distort=distortion.spec if distortion else None,
        scores={"accuracy": acc, "accuracy_std": acc_std, "macro_f1": f1, "macro_f1_std": f1_std},
        per_seed=per_seed,
        seeds=list(seeds),
        details={
            "layer_weights": layer_weights,
            "n_train": len(data["train"]),
            "n_valid": len(data["valid"]),
            "n_test": len(data["test"]),
            "unit": "frames" if task.frame_level else "files",
            "n_files": {name: len(bad.keep(it.path for it in items)) for name, items in parts.items()},
            "skipped_files": {str(p): problem for p, problem in bad.problems.items() if p in task_paths},
            "n_classes": len(classes),
            "classes": task.classes,
        },
        seconds=round(time.time() - start, 1),
    )
    return result, cm_total


def run_grid(
    tasks: tp.Sequence[tuple[str, tp.Callable[[], Task]]],
    feature_sets: tp.Sequence[tuple[str, tp.Callable[[], FeatureSet]]],
    out_dir: Path,
    cache: FeatureCache,
    *,
    probe: probes.ProbeKind = "mlp",
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: EvalCondition | None = None,
    log: tp.Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    device: str = "cpu",
    finetune: FinetuneConfig | None = None,
    save_encoder: Path | None = None,
    asr_options: tp.Mapping[str, tp.Any] | None = None,
) -> tuple[list[TaskResult], dict[str, str]]:
    """Every (task, feature set) pair; one folder each, plus ``summary.*`` when there are several.

    ``tasks`` and ``feature_sets`` are ``(name, factory)`` pairs, built lazily so that a failing
    one (missing data, missing weights) is reported in ``errors`` and skipped. A single pair
    writes straight into ``out_dir``; a grid into ``out_dir/<task>/<features>/``.

    ASR tasks (``task.sequence_level``) are scored by WER and CER (:mod:`pase.eval.asr`, probe
    trained on ``device``); their rows go to ``summary_asr.*`` rather than ``summary.*``.

    ``finetune``: after each frozen run on an encoder, fine-tune it with the probe
    (:mod:`pase.eval.finetune`); the result gains a ``finetuned`` record, ``results.md`` a
    frozen vs fine-tuned table, a grid ``summary_finetune.md``. ``save_encoder``: where the
    fine-tuned encoder is written (``<dir>/<task>/<features>/`` for a grid). ``asr_options``:
    keyword arguments of :func:`pase.eval.asr.evaluate_asr` (probe preset, LM decoding).
    """
    from pase.audio import AudioError
    from pase.eval.features import FeatureError

    single = len(tasks) == 1 and len(feature_sets) == 1
    results: list[TaskResult] = []
    errors: dict[str, str] = {}
    bad = BadFiles(log)
    folders = folder_names([name for name, _ in feature_sets])
    for task_name, make_task in tasks:
        try:
            task = make_task()
        except (TaskError, AudioError) as exc:
            errors.update({f"{task_name}/{feat_name}": str(exc) for feat_name, _ in feature_sets})
            log(f"pase eval: {exc}")
            continue
        for feat_name, make_features in feature_sets:
            run_dir = out_dir if single else out_dir / task_name / folders[feat_name]
            save = (
                save_encoder
                if single or save_encoder is None
                else save_encoder / task_name / folders[feat_name]
            )
            # fine-tuning (when asked) follows the frozen run of the same task and features
            fine_tune = functools.partial(
                _add_finetuned,
                task,
                cache=cache,
                run_dir=run_dir,
                errors=errors,
                log=log,
                seeds=seeds,
                distortion=distortion,
                probe=probe,
                device=device,
                config=finetune,
                save_encoder=save,
            )
            # the frozen run's probes, which fine-tuning starts from
            trained = probes.TrainedProbes() if finetune is not None else None
            if task.sequence_level:
                asr_run = _run_asr(
                    task, make_features, cache, seeds, distortion, device, run_dir, log, trained, asr_options
                )
                if isinstance(asr_run, str):
                    errors[f"{task_name}/{feat_name}"] = asr_run
                    continue
                results.append(asr_run[0])
                if finetune is not None:
                    fine_tune(features=asr_run[1], result=asr_run[0], init=trained)
                continue
            try:
                # a fresh feature set per task: random encoders re-estimate on each task's audio
                features = make_features()
                result, cm = evaluate(
                    task,
                    features,
                    cache,
                    probe=probe,
                    seeds=seeds,
                    distortion=distortion,
                    bad_files=bad,
                    trained_out=trained,
                )
            except (TaskError, FeatureError, AudioError, ImportError) as exc:
                errors[f"{task_name}/{feat_name}"] = str(exc)
                log(f"pase eval: {task_name} / {feat_name}: {exc}")
                continue
            write_results(result, cm, run_dir)
            results.append(result)
            scores = result.scores
            log(
                f"{task_name:20s} {feat_name:14s} acc {scores['accuracy']:.4f} ± "
                f"{scores['accuracy_std']:.4f}  F1 {scores['macro_f1']:.4f}  ({result.seconds:.0f} s)"
            )
            if finetune is not None:
                fine_tune(features=features, result=result, init=trained)
    if not single:
        asr_results = [r for r in results if r.kind == "asr"]
        phone_results = [r for r in results if r.kind == "phone"]
        write_summary([r for r in results if r.kind == "classification"], errors, out_dir)
        if asr_results:
            _write_asr_summary(asr_results, out_dir)
        if phone_results:
            from pase.eval.asr import write_phone_summary

            write_phone_summary(phone_results, out_dir)
        if any(r.finetuned is not None for r in results):
            _write_finetune_summary(results, out_dir)
    return results, errors


def _run_asr(
    task: Task,
    make_features: tp.Callable[[], FeatureSet],
    cache: FeatureCache,
    seeds: tp.Sequence[int],
    distortion: EvalCondition | None,
    device: str,
    run_dir: Path,
    log: tp.Callable[[str], None],
    trained_out: probes.TrainedProbes | None = None,
    asr_options: tp.Mapping[str, tp.Any] | None = None,
) -> tuple[TaskResult, FeatureSet] | str:
    """One ASR run written to ``run_dir``: the result and feature set, or the error message."""
    from pase.audio import AudioError
    from pase.eval import asr
    from pase.eval.features import FeatureError
    from pase.eval.tasks import TaskError

    try:
        features = make_features()
        result = asr.evaluate_asr(
            task,
            features,
            cache,
            seeds=seeds,
            distortion=distortion,
            device=device,
            log=log,
            trained_out=trained_out,
            **(asr_options or {}),
        )
    except (TaskError, FeatureError, AudioError, ImportError, FileNotFoundError) as exc:
        log(f"pase eval: {task.name}: {exc}")
        return str(exc)
    asr.write_results(result, run_dir)
    log(f"{task.name:20s} {features.name:14s} {asr.score_line(result)}  ({result.seconds:.0f} s)")
    return result, features


def _add_finetuned(
    task: Task,
    features: FeatureSet,
    cache: FeatureCache,
    result: TaskResult,
    run_dir: Path,
    errors: dict[str, str],
    log: tp.Callable[[str], None],
    **kwargs: tp.Any,
) -> None:
    """Fine-tune ``features``' encoder on ``task``, attach the record to ``result`` and rewrite
    ``results.json``; ``results.md`` gains the frozen vs fine-tuned table."""
    from pase.audio import AudioError
    from pase.eval.features import EncoderFeatures
    from pase.eval.finetune import comparison_markdown
    from pase.eval.finetune import finetune as run_finetune
    from pase.eval.report import _write_text

    key = f"{task.name}/{features.name}/finetune"
    if not isinstance(features, EncoderFeatures):
        errors[key] = f"{features.name} is not an encoder: nothing to fine-tune"
        log(f"pase eval: --finetune: {errors[key]}")
        return
    try:
        tuned = run_finetune(task, features, cache, **kwargs)
    except (AudioError, ValueError, RuntimeError) as exc:
        errors[key] = str(exc)
        log(f"pase eval: {key}: {exc}")
        return
    result.finetuned = tuned
    _write_text(run_dir / "results.json", result.to_json())
    md = (run_dir / "results.md").read_text(encoding="utf-8")
    _write_text(run_dir / "results.md", md + comparison_markdown(result, tuned))
    metric = MAIN_METRIC[tuned.kind]
    log(
        f"{task.name:20s} {features.name:14s} fine-tuned {metric} {tuned.scores[metric]:.4f} "
        f"(frozen {result.scores[metric]:.4f}, {tuned.seconds:.0f} s)"
    )


def _write_finetune_summary(results: tp.Sequence[TaskResult], out_dir: Path) -> None:
    """``summary_finetune.md``: frozen vs fine-tuned main metric per (task, feature set)."""
    from pase.eval.report import _write_text

    def cell(r: TaskResult, metric: str) -> str:
        return f"{r.scores[metric]:.4f} ± {r.scores[metric + '_std']:.4f}"

    rows = []
    for r in results:
        if r.finetuned is not None:
            metric = MAIN_METRIC[r.kind]
            rows.append(
                f"| {r.task} | {r.features} | {metric} | {cell(r, metric)} | {cell(r.finetuned, metric)} |"
            )
    head = "| task | features | metric | frozen | fine-tuned |\n|---|---|---|---|---|\n"
    _write_text(out_dir / "summary_finetune.md", "# Frozen vs fine-tuned\n\n" + head + "\n".join(rows) + "\n")


def _write_asr_summary(results: tp.Sequence[TaskResult], out_dir: Path) -> None:
    """``summary_asr.json`` and ``summary_asr.md``: WER and CER per (task, feature set)."""
    from pase.eval.report import _write_text

    def seconds(r: TaskResult) -> str:  # a probe read back from the cache costs this run nothing: say so
        reused = sum(bool(s.get("probe_reused")) for s in r.per_seed)
        note = f" ({reused} of {len(r.per_seed)} probes reused)" if reused else ""
        return f"{r.seconds:.1f}{note}"

    def row(r: TaskResult) -> str:
        s = r.scores
        return (
            f"| {r.task} | {r.features} | {r.distort or 'none'} | {s['wer']:.4f} ± {s['wer_std']:.4f} "
            f"| {s['cer']:.4f} ± {s['cer_std']:.4f} | {seconds(r)} |"
        )

    rows = [row(r) for r in results]
    head = "| task | features | distort | WER | CER | seconds (this run) |\n|---|---|---|---|---|---|\n"
    md = "# ASR: WER and CER (fractions) ± std over seeds\n\n" + head + "\n".join(rows) + "\n"
    _write_text(out_dir / "summary_asr.json", summary_json(results))
    _write_text(out_dir / "summary_asr.md", md)
