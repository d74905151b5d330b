"""Streaming metrics as :class:`torchmetrics.Metric` subclasses (``update`` / ``compute`` / ``reset``).

Each metric keeps only sums (confusion-matrix counts, per-class or per-bin totals), declared with
``add_state(..., dist_reduce_fx="sum", persistent=True)``. So torchmetrics does the rest:

* under DDP ``compute()`` syncs the sums over ranks (every rank gets the metric of the union of
  all shards, whatever their sizes; the local state is restored afterwards), so call it on every
  rank, as any torchmetrics metric;
* ``.to(device)`` moves the state, and the state is in ``state_dict()``, hence in Lightning
  checkpoints;
* ``self.log("val/bacc", metric)`` works in Lightning for the scalar metrics, and
  ``self.log_dict(metric.compute())`` for the dict-valued ones (a flat dict of 0-d tensors).

``compute()`` returns tensors (float64 for rates, int64 for counts) on the state's device; the
functional metrics in :mod:`tailwise.metrics` return Python floats and never import torchmetrics.
This module is imported lazily (``import tailwise`` does not load torchmetrics).
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

try:
    import torchmetrics
except ImportError as exc:  # pragma: no cover - exercised only without torchmetrics
    raise ImportError("tailwise's stateful metrics (ShotAccuracy, BalancedAccuracy, ...) are torchmetrics.Metric "
                      "subclasses: pip install torchmetrics (or 'tailwise[metrics]'). The functional metrics "
                      "(tailwise.metrics.shot_accuracy, ...) need only torch.") from exc

from .._validation import check_class_counts
from ..data._checks import check_int
from .classification import (_check_thresholds, _confusion, _pred_target, balanced_accuracy_from_confusion,
                             macro_f1_from_confusion, recall_from_confusion, shot_accuracy_from_counts)
from .regression import (_STATS, _as_values, bin_statistics, errors_from_statistics, regression_bin_edges,
                         train_bin_counts)

__all__ = ["Metric", "ConfusionMatrix", "BalancedAccuracy", "MacroF1", "PerClassRecall", "ShotAccuracy",
           "ShotRegressionErrors"]

#: the base class of every stateful tailwise metric
Metric = torchmetrics.Metric


def _scalar(value: float, like: Tensor) -> Tensor:
    return torch.tensor(value, dtype=torch.float64, device=like.device)


class ConfusionMatrix(Metric):
    """Accumulates the ``(C, C)`` confusion matrix ``M[true, pred]``; ``compute`` returns it (int64).

    ``update(pred, target)``: ``pred`` logits/scores ``(N, C)`` (arg-maxed) or labels ``(N,)``,
    ``target`` labels ``(N,)``. Extra keyword arguments go to :class:`torchmetrics.Metric`.

    Example:
        >>> m = ConfusionMatrix(3)
        >>> m.update(torch.tensor([0, 2]), torch.tensor([0, 1]))
        >>> m.compute().tolist()
        [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    confusion: Tensor

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.add_state("confusion", default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64),
                       dist_reduce_fx="sum", persistent=True)

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels, target, _ = _pred_target(pred, target, self.num_classes)
        self.confusion += _confusion(labels, target, self.num_classes).to(self.confusion.device)

    def compute(self) -> Tensor:
        return self.confusion.clone()


class BalancedAccuracy(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.balanced_accuracy` (a 0-d float64 tensor; NaN before any
    sample), equal to ``sklearn.metrics.balanced_accuracy_score``.

    It averages recall over the classes **present in the targets seen so far**. torchmetrics'
    ``MulticlassRecall(average="macro")`` differs when a class is predicted but never a target:
    it counts that class with recall 0 (it skips only classes with no true positive, false
    positive or false negative), so its value is lower.

    Example:
        >>> m = BalancedAccuracy(3)
        >>> m.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
        >>> round(m.compute().item(), 4)
        0.6667
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        return _scalar(balanced_accuracy_from_confusion(self.confusion), self.confusion)


class MacroF1(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.macro_f1` (0-d float64 tensor), equal to
    ``sklearn.metrics.f1_score(average="macro", zero_division=0)``: classes absent from both
    targets and predictions are left out (torchmetrics' ``MulticlassF1Score(average="macro")``
    leaves them out too)."""

    higher_is_better = True

    def compute(self) -> Tensor:
        return _scalar(macro_f1_from_confusion(self.confusion), self.confusion)


class PerClassRecall(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.per_class_recall` (float64 ``(C,)`` tensor, NaN for classes
    without targets, where torchmetrics' ``average=None`` recall reports 0)."""

    higher_is_better = True

    def compute(self) -> Tensor:
        return recall_from_confusion(self.confusion)


class ShotAccuracy(Metric):
    """Streaming :func:`~tailwise.metrics.shot_accuracy`: keeps per-class correct / total counts.

    ``compute()`` returns ``{"many", "medium", "few", "overall"}`` as 0-d float64 tensors (NaN for
    a group without test samples), ready for ``self.log_dict`` in Lightning.

    Example:
        >>> m = ShotAccuracy(class_counts=[500, 50, 5])
        >>> m.update(torch.tensor([0, 1]), torch.tensor([0, 1])); m.update(torch.tensor([1, 2]), torch.tensor([2, 2]))
        >>> {k: v.item() for k, v in m.compute().items()}
        {'many': 1.0, 'medium': 1.0, 'few': 0.5, 'overall': 0.75}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, class_counts, many: float = 100, few: float = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_thresholds(many, few)
        self.class_counts = check_class_counts(class_counts, allow_zero=True)
        self.many, self.few = many, few
        self.num_classes = self.class_counts.numel()
        for name in ("correct", "total"):
            self.add_state(name, default=torch.zeros(self.num_classes, dtype=torch.int64), dist_reduce_fx="sum",
                           persistent=True)

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels, target, _ = _pred_target(pred, target, self.num_classes)
        dev = self.total.device
        self.total += torch.bincount(target, minlength=self.num_classes).to(dev)
        self.correct += torch.bincount(target[labels == target], minlength=self.num_classes).to(dev)

    def compute(self) -> Dict[str, Tensor]:
        out = shot_accuracy_from_counts(self.correct, self.total, self.class_counts, self.many, self.few)
        return {k: _scalar(v, self.total) for k, v in out.items()}


class ShotRegressionErrors(Metric):
    """Streaming :func:`~tailwise.metrics.shot_regression_errors`.

    The bins and their shot groups are fixed at construction from ``train_labels`` and ``bins``;
    the state is five per-bin sums (count, squared error, absolute error, log absolute error,
    exact zeros), so ranks combine exactly. ``compute()`` returns a **flat** dict of 0-d tensors
    (loggable with ``self.log_dict``): ``"<group>/<stat>"`` for group in many, medium, few,
    overall and stat in mse, mae, gmean, count, plus ``"balanced_mse"`` and ``"balanced_mae"``;
    :meth:`nested` turns it back into the functional's nested form.

    Example:
        >>> train = torch.tensor([0.0] * 150 + [1.0] * 50 + [2.0] * 5)
        >>> m = ShotRegressionErrors(train)
        >>> m.update(torch.tensor([0.5, 1.0, 4.0]), torch.tensor([0.0, 1.0, 2.0]))
        >>> r = m.compute()
        >>> r["many/mse"].item(), r["few/mae"].item(), r["balanced_mse"].item()
        (0.25, 2.0, 1.4166666666666667)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, train_labels, bins=None, many: float = 100, few: float = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_thresholds(many, few)
        self.many, self.few = many, few
        self._close_last = isinstance(bins, int) and not isinstance(bins, bool)
        self.edges = regression_bin_edges(train_labels, bins)
        self.train_counts = train_bin_counts(train_labels, self.edges, self._close_last)
        for name in _STATS:
            self.add_state(name, default=torch.zeros(self.edges.numel() + 1, dtype=torch.float64),
                           dist_reduce_fx="sum", persistent=True)

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _as_values(pred, "pred")
        target = _as_values(target, "target").to(pred.device)
        if pred.numel() != target.numel():
            raise ValueError(f"pred and target must have the same length N, got {pred.numel()} and {target.numel()}")
        stats = bin_statistics(pred, target, self.edges, self._close_last)
        for k, v in stats.items():
            state = getattr(self, k)
            setattr(self, k, state + v.to(state.device))

    def compute(self) -> Dict[str, Tensor]:
        like = getattr(self, _STATS[0])
        res = errors_from_statistics({k: getattr(self, k) for k in _STATS}, self.train_counts, self.many, self.few)
        flat: Dict[str, Tensor] = {}
        for group, value in res.items():
            if isinstance(value, dict):
                for stat, v in value.items():
                    flat[f"{group}/{stat}"] = _scalar(v, like) if stat != "count" else torch.tensor(
                        v, dtype=torch.int64, device=like.device)
            else:
                flat[group] = _scalar(value, like)
        return flat

    @staticmethod
    def nested(flat: Dict[str, Tensor]) -> Dict[str, Any]:
        """``compute()``'s flat dict as the nested dict of Python numbers that
        :func:`~tailwise.metrics.shot_regression_errors` returns."""
        out: Dict[str, Any] = {}
        for key, v in flat.items():
            value = int(v) if v.dtype == torch.int64 else float(v)
            if "/" in key:
                group, stat = key.split("/", 1)
                out.setdefault(group, {})[stat] = value
            else:
                out[key] = value
        return out
