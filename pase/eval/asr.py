"""Speech recognition on frozen features: the ``librispeech-asr`` and ``librispeech-phone`` runs.

:func:`evaluate_asr` trains one CTC probe per seed on a sequence task's features and scores the
test part: WER and CER for characters, PER for phones (:func:`scores`), decoded greedily and, with
a word n-gram, by beam search as well. :class:`ProbeCache` keeps trained probes on disk, so the
noisy and reverberant test conditions reuse the clean run's probe. :func:`score_line`,
:func:`results_markdown`, :func:`write_results` and :func:`write_phone_summary` report a run
(markdown tables through :mod:`pase.eval.report`).

The parts live in modules of their own; every public name of theirs is importable from here too
(:data:`__all__`):

- :mod:`pase.eval.ctc`: what a probe writes (:class:`Units`: characters or phones), the probe
  (:class:`CtcProbe`, :class:`CtcConfig` and its presets), its loss, greedy decoding;
- :mod:`pase.eval.ctc_training`: the probe's data (:class:`AsrData`), standardisation, batching,
  :func:`train_ctc_probe`, and running a trained probe (:func:`posteriors`, :func:`transcribe`);
- :mod:`pase.eval.lm_decoding`: beam search with a word n-gram (:class:`LmDecoder`);
- :mod:`pase.eval.asr_scoring`: :func:`wer`, :func:`cer` and :func:`edit_distance`, through jiwer;
- :mod:`pase.eval.text` and :mod:`pase.eval.phones`: the alphabet and transcript normalisation,
  the phone set.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.eval.asr_scoring import cer, edit_distance, error_counts, wer
from pase.eval.ctc import (
    CHARACTERS,
    PHONE_UNITS,
    PRESETS,
    BiRNN,
    CtcConfig,
    CtcProbe,
    Units,
    ctc_loss,
    greedy_decode,
    greedy_transcripts,
    units_for,
)
from pase.eval.ctc_training import (
    AsrData,
    CtcResult,
    feature_stats,
    from_files,
    in_memory,
    length_batches,
    lr_factor,
    posteriors,
    spec_augment,
    train_ctc_probe,
    transcribe,
)
from pase.eval.lm_decoding import LmConfig, LmDecoder
from pase.eval.results import METRICS as RESULT_METRICS
from pase.eval.results import Kind, TaskResult, summary_json

if tp.TYPE_CHECKING:
    from pase.eval.features import EvalCondition, FeatureCache, FeatureSet
    from pase.eval.probes import TrainedProbes
    from pase.eval.tasks import Item, Task

#: The public names, those defined in the modules :mod:`pase.eval.asr` was split into included,
#: so that ``from pase.eval.asr import wer`` and ``asr.CtcProbe`` keep working.
__all__ = [
    # scoring (pase.eval.asr_scoring)
    "cer", "edit_distance", "error_counts", "wer",
    # units, greedy decoding, the probe (pase.eval.ctc)
    "CHARACTERS", "PHONE_UNITS", "Units", "units_for", "greedy_decode", "greedy_transcripts",
    "CtcConfig", "PRESETS", "BiRNN", "CtcProbe", "ctc_loss",
    # word n-gram decoding (pase.eval.lm_decoding)
    "LmConfig", "LmDecoder",
    # data and training (pase.eval.ctc_training)
    "AsrData", "in_memory", "from_files", "feature_stats", "length_batches",
    "spec_augment", "lr_factor", "CtcResult", "posteriors", "transcribe", "train_ctc_probe",
    # the evaluation and its reports (here)
    "TaskResult", "ProbeCache", "EXAMPLES", "scores", "evaluate_asr", "METRICS", "score_line",
    "results_markdown", "write_results", "write_phone_summary",
]  # fmt: skip


# --------------------------------------------------------------------------- probe cache
class ProbeCache:
    """Trained CTC probes on disk (safetensors: no code runs on load), one per training setup.

    The probe trains on clean audio whatever ``--distort`` says, so the noisy and reverberant
    test conditions of a feature set reuse the clean run's probe (same features, training and
    dev files, probe config and seed) and only extract and decode the test audio: a robust-ASR
    table of three conditions costs one probe training per feature set, not three.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "ctc-probes"

    @staticmethod
    def key(fingerprint: str, train_keys: tp.Sequence[str], config: CtcConfig, seed: int) -> str:
        import json

        from pase.eval.features import _sha

        settings = json.dumps(dataclasses.asdict(config), sort_keys=True)
        return _sha(fingerprint, settings, str(seed), *train_keys)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key[2:34]}.safetensors"

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, tp.Any]] | None:
        """The probe's weights and its training record, or None (absent or damaged)."""
        import json

        from safetensors import SafetensorError, safe_open

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["record"])
                state = {name: fh.get_tensor(name) for name in fh.keys()}
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            return None  # a damaged entry is retrained, never trusted
        return state, meta

    def save(self, key: str, state: dict[str, torch.Tensor], record: dict[str, tp.Any]) -> None:
        import json

        from safetensors.torch import save_file

        from pase.audio import write_atomic

        tensors = {k: v.contiguous() for k, v in state.items()}
        write_atomic(
            self.path(key), lambda tmp: save_file(tensors, tmp, metadata={"record": json.dumps(record)})
        )


def probe_train_keys(parts: tp.Mapping[str, tp.Sequence[Item]]) -> list[str]:
    """What a probe was trained on, for :meth:`ProbeCache.key`: the train and dev files."""
    from pase.eval.features import file_key

    return [file_key(it.path) for part in ("train", "valid") for it in parts[part]]


# --------------------------------------------------------------------------- evaluation
#: Test utterances whose reference and hypothesis (first seed) are kept in the report.
EXAMPLES = 5


def _cached_data(
    features: FeatureSet,
    items: tp.Sequence[Item],
    cache: FeatureCache,
    distortion: EvalCondition | None,
    desc: str,
) -> AsrData:
    """Extract (or find cached) features of ``items`` and read them back lazily from the cache."""
    from pase.eval.features import cache_features, file_key

    paths = [it.path for it in items]
    shapes = cache_features(
        features, paths, cache, distortion, desc=desc, transform=lambda f: np.array(f.shape)
    )
    # the same key cache_features stored each file under
    suffix = f"|distort={distortion.spec}" if distortion else ""
    fingerprint = features.fingerprint()
    cached = [cache.path(fingerprint, file_key(p) + suffix) for p in paths]
    missing = [str(p) for p, c in zip(paths, cached, strict=True) if not c.exists()]
    if missing:
        raise FileNotFoundError(f"feature cache {cache.root} lost the features of {missing[0]}")
    return from_files(cached, [int(s[1]) for s in shapes], [it.label for it in items])


def scores(
    units: Units, refs: tp.Sequence[str], hyps: tp.Sequence[str], suffix: str = ""
) -> dict[str, float]:
    """The headline error rates of one decoding: ``wer`` and ``cer`` for characters, ``per`` for phones."""
    if units.sep:
        return {f"per{suffix}": wer(refs, hyps)}
    return {f"wer{suffix}": wer(refs, hyps), f"cer{suffix}": cer(refs, hyps)}


def evaluate_asr(
    task: Task,
    features: FeatureSet,
    cache: FeatureCache,
    *,
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: EvalCondition | None = None,
    device: str = "cpu",
    config: CtcConfig | None = None,
    lm: LmConfig | None = None,
    log: tp.Callable[[str], None] | None = None,
    reuse_probes: bool = True,
    trained_out: TrainedProbes | None = None,
) -> TaskResult:
    """Train one CTC probe per seed on ``task`` and score the test part: the result record.

    Character tasks report ``wer`` and ``cer``, phone tasks ``per``: means over seeds
    (fractions; a blank output scores 1.0), with ``*_std``. ``lm``: the test part is decoded a
    second time with the word n-gram, reported as ``wer_lm`` and ``cer_lm`` beside the greedy
    scores (character tasks only: a phone task ignores it and says so). ``distortion`` applies
    to the test audio only. The probe trains on ``device``. With ``reuse_probes`` a probe
    trained before on the same features, files, config and seed is read back from ``cache``
    (:class:`ProbeCache`) instead of trained again; ``per_seed`` says which. ``trained_out``:
    filled with the standardisation and every seed's probe (for fine-tuning).
    """
    start = time.time()
    units = units_for(task)
    if lm is not None and units is not CHARACTERS:
        if log is not None:
            log(f"{task.name}: the word n-gram applies to character tasks; decoding greedily")
        lm = None
    decoder = LmDecoder(lm) if lm is not None else None
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    features.calibrate_on([it.path for it in parts["train"]])
    data = {
        name: _cached_data(
            features,
            items,
            cache,
            distortion if name == "test" else None,
            f"{task.name} {features.name} {name}",
        )
        for name, items in parts.items()
    }
    cfg = config or CtcConfig()
    stats = feature_stats(data["train"])
    if trained_out is not None:
        trained_out.mean, trained_out.std = stats
    probes = ProbeCache(cache.root) if reuse_probes else None
    train_keys = probe_train_keys(parts)
    fingerprint = features.fingerprint()  # a random encoder's digests its calibration files: once
    num_layers, dim = stats[0].shape
    refs = list(data["test"].texts)
    per_seed: list[dict[str, tp.Any]] = []
    examples: list[dict[str, str]] = []
    for seed in seeds:
        key = ProbeCache.key(fingerprint, train_keys, cfg, seed)
        found = probes.load(key) if probes is not None else None
        if found is not None:
            state, record = found
            if log is not None:
                log(f"seed {seed}: probe trained before on the same features and files, reused")
        else:
            t0 = time.time()
            fit = train_ctc_probe(
                data["train"], data["valid"], data["test"], seed, cfg, device, stats, log, units
            )
            record = {
                f"valid_{units.metric}": fit.valid_error,
                "steps": fit.steps,
                "best_step": fit.best_step,
                "layer_weights": fit.layer_weights,
                "train_seconds": round(time.time() - t0, 1),
                "curve": fit.curve,
            }
            if probes is not None:
                probes.save(key, fit.state, record)
            state = fit.state
        if trained_out is not None:
            trained_out.states[seed] = state
        model = CtcProbe(num_layers, dim, cfg, units.size).to(device)
        model.load_state_dict(state)
        log_probs = posteriors(model, data["test"], *stats, device)
        hyps = greedy_transcripts(log_probs, units)
        seed_scores = scores(units, refs, hyps)
        lm_hyps: list[str] = []
        if decoder is not None:
            lm_hyps = [decoder(lp) for lp in log_probs]
            seed_scores |= scores(units, refs, lm_hyps, "_lm")
        per_seed.append({"seed": seed, **seed_scores, **record, "probe_reused": found is not None})
        if not examples:
            examples = [
                {"file": it.path.name, "reference": r, "hypothesis": h}
                | ({"hypothesis_lm": lm_hyps[i]} if lm_hyps else {})
                for i, (it, r, h) in enumerate(zip(parts["test"], refs, hyps, strict=True))
            ][:EXAMPLES]

    def mean_std(key: str) -> dict[str, float]:
        values = [float(s[key]) for s in per_seed]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return {key: statistics.fmean(values), f"{key}_std": spread}

    headline = {k: v for name in per_seed[0] if name in METRICS for k, v in mean_std(name).items()}
    kind: Kind = "phone" if units is PHONE_UNITS else "asr"
    details: dict[str, tp.Any] = {
        "lm": {"path": str(lm.path), "alpha": lm.alpha, "beta": lm.beta, "beam_width": lm.beam_width}
        if lm is not None
        else None,
        "probe_config": dataclasses.asdict(cfg),
        "n_train": len(parts["train"]),
        "n_valid": len(parts["valid"]),
        "n_test": len(parts["test"]),
        "unit": "utterances",
    }
    size = sum(len(r.split()) for r in refs)  # words, or phones (space-separated too)
    if kind == "phone":
        details["n_test_phones"] = size
    else:
        details.update(n_test_words=size, n_test_chars=sum(len(r) for r in refs))
    details.update(test_speakers=len({it.speaker for it in parts["test"]}), examples=examples)
    if task.excluded:
        details["excluded"] = dict(task.excluded)
    return TaskResult(
        kind=kind,
        task=task.name,
        features=features.name,
        probe=f"ctc-bi{cfg.rnn}",
        layers=features.layers,
        distort=distortion.spec if distortion else None,
        scores=headline,
        per_seed=per_seed,
        seeds=list(seeds),
        details=details,
        seconds=round(time.time() - start, 1),
    )


#: Headline error rates a sequence result may carry, in the order tables print them.
METRICS = (*RESULT_METRICS["asr"], *RESULT_METRICS["phone"])  # wer, cer, wer_lm, cer_lm, per


def score_line(result: TaskResult) -> str:
    """The headline of a sequence result on one line: ``WER 0.5000 ± 0.0100  CER ...``."""
    s = result.scores
    return "  ".join(
        f"{m.upper().replace('_LM', ' (LM)')} {s[m]:.4f} ± {s[m + '_std']:.4f}" for m in result.metrics
    )


def results_markdown(result: TaskResult) -> str:
    """One ASR or phone run as markdown: the headline row, one row per seed, a few transcripts."""
    from pase.eval.report import _table

    metrics = result.metrics
    row, details = result.to_dict(), result.details
    cols = ["task", "features", "probe", "layers", "distort",
            *(c for m in metrics for c in (m, f"{m}_std")),
            "n_train", "n_valid", "n_test", "test_speakers"]  # fmt: skip
    head = _table(cols, [[row[c] for c in cols]])
    valid = next(k for k in result.per_seed[0] if k.startswith("valid_"))
    seed_cols = ["seed", *metrics, valid, "steps", "best_step"]
    seeds = _table(seed_cols, [[s[c] for c in seed_cols] for s in result.per_seed])
    examples = "".join(
        f"- `{e['file']}`\n  - ref: {e['reference']}\n  - hyp: {e['hypothesis']}\n"
        + (f"  - hyp (LM): {e['hypothesis_lm']}\n" if "hypothesis_lm" in e else "")
        for e in details["examples"]
    )
    if result.kind == "phone":
        size = f"the {details['n_test_phones']} phones"
    else:
        size = f"the {details['n_test_words']} words and {details['n_test_chars']} characters"
    lm = details.get("lm")
    lm_note = (
        f" `(LM)`: beam search ({lm['beam_width']} beams) with the word n-gram `{lm['path']}`, "
        f"alpha {lm['alpha']}, beta {lm['beta']}; the others are greedy."
        if lm
        else ""
    )
    excluded = details.get("excluded")
    excluded_note = (
        " Utterances left out of the task (a word outside the lexicon): "
        + ", ".join(f"{part} {n}" for part, n in excluded.items())
        + "."
        if excluded
        else ""
    )
    return (
        f"# {result.task} / {result.features}\n\n{head}\n"
        f"Error rates are fractions over {size} of the test part (a blank output scores 1.0); "
        f"spread is the sample standard deviation over seeds.{lm_note}{excluded_note} "
        f"Wall time {result.seconds:.1f} s.\n\n## Per seed\n\n{seeds}\n"
        f"## Transcripts (first seed)\n\n{examples}"
    )


def write_results(result: TaskResult, out_dir: Path) -> None:
    """``results.json`` and ``results.md`` in ``out_dir``, each written atomically."""
    from pase.eval.report import _write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "results.json", result.to_json())
    _write_text(out_dir / "results.md", results_markdown(result))


def write_phone_summary(results: tp.Sequence[TaskResult], out_dir: Path) -> None:
    """``summary_phone.json`` and ``summary_phone.md``: PER per (task, feature set, test condition)."""
    from pase.eval.report import _table, _write_text

    rows = [[r.task, r.features, r.distort, r.scores["per"], r.scores["per_std"]] for r in results]
    md = "# Phone recognition: PER (fraction) ± std over seeds\n\n" + _table(
        ("task", "features", "distort", "PER", "PER std"), rows
    )
    _write_text(out_dir / "summary_phone.json", summary_json(results))
    _write_text(out_dir / "summary_phone.md", md)
