"""Long-tail evaluation metrics.

Functions (torch only, Python floats): :func:`shot_accuracy`, :func:`balanced_accuracy`,
:func:`per_class_recall`, :func:`macro_f1`, :func:`confusion_matrix`, :func:`shot_regression_errors`.

Stateful ``torchmetrics.Metric`` subclasses (DDP sync, ``.to(device)``, checkpointed state,
loggable in Lightning): :class:`ConfusionMatrix`, :class:`BalancedAccuracy`, :class:`MacroF1`,
:class:`PerClassRecall`, :class:`ShotAccuracy`, :class:`ShotRegressionErrors`. They are loaded on
first access, so ``import tailwise`` does not import torchmetrics (``pip install torchmetrics``,
or the ``tailwise[metrics]`` extra, to use them).
"""

from typing import Any, List

from .classification import balanced_accuracy, confusion_matrix, macro_f1, per_class_recall, shot_accuracy
from .regression import shot_regression_errors

_STATEFUL = ("Metric", "ConfusionMatrix", "BalancedAccuracy", "MacroF1", "PerClassRecall", "ShotAccuracy",
             "ShotRegressionErrors")

__all__ = [
    "shot_accuracy",
    "balanced_accuracy",
    "per_class_recall",
    "macro_f1",
    "confusion_matrix",
    "shot_regression_errors",
    *_STATEFUL,
]


def __getattr__(name: str) -> Any:
    if name in _STATEFUL:
        from . import stateful  # imports torchmetrics

        return getattr(stateful, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_STATEFUL))
