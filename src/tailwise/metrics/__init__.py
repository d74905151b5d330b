"""Long-tail evaluation metrics (torch + numpy only).

Functions: :func:`shot_accuracy`, :func:`balanced_accuracy`, :func:`per_class_recall`,
:func:`macro_f1`, :func:`confusion_matrix`, :func:`shot_regression_errors`.
Stateful, DDP-aware objects: :class:`ConfusionMatrix`, :class:`BalancedAccuracy`, :class:`MacroF1`,
:class:`PerClassRecall`, :class:`ShotAccuracy`, :class:`ShotRegressionErrors`.
"""

from .classification import balanced_accuracy, confusion_matrix, macro_f1, per_class_recall, shot_accuracy
from .regression import shot_regression_errors
from .stateful import (BalancedAccuracy, ConfusionMatrix, MacroF1, Metric, PerClassRecall, ShotAccuracy,
                       ShotRegressionErrors)

__all__ = [
    "shot_accuracy",
    "balanced_accuracy",
    "per_class_recall",
    "macro_f1",
    "confusion_matrix",
    "shot_regression_errors",
    "Metric",
    "ConfusionMatrix",
    "BalancedAccuracy",
    "MacroF1",
    "PerClassRecall",
    "ShotAccuracy",
    "ShotRegressionErrors",
]
