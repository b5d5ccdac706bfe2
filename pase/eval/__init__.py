"""Downstream benchmark: frozen features (MFCC, FBANK, PASE encoders) + small probes.

``pase eval`` runs it from the command line (:mod:`pase.eval.cli`). From Python::

    from pase.eval import builtin_task, make_feature_set, FeatureCache, evaluate
    task = builtin_task("fsdd-digit", Path("../shared/speech"))
    result, confusion = evaluate(task, make_feature_set("mfcc"), FeatureCache("/tmp/cache"))
    result.scores["accuracy"], result.to_dict()  # a TaskResult; the dict is what results.json holds
"""

from pase.eval.benchmark import evaluate, run_grid
from pase.eval.features import FeatureCache, FeatureSet, make_feature_set
from pase.eval.results import TaskResult
from pase.eval.tasks import BUILTIN_TASKS, Task, builtin_task, load_manifest

__all__ = [
    "BUILTIN_TASKS",
    "FeatureCache",
    "FeatureSet",
    "Task",
    "TaskResult",
    "builtin_task",
    "evaluate",
    "load_manifest",
    "make_feature_set",
    "run_grid",
]
