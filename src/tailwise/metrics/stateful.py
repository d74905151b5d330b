"""Stateful, distributed-aware metric objects (``update`` / ``compute`` / ``reset``).

Each metric keeps only sums (confusion-matrix counts, per-class or per-bin totals). ``compute``
all-reduces a copy of the state over ``torch.distributed`` ranks with
:func:`tailwise.distributed.all_reduce_sum` (a no-op outside distributed), so every rank gets the
metric of the union of all shards, whatever their sizes; the local state is left untouched, so
``update`` can continue afterwards. ``compute`` is a collective: call it on every rank.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .. import distributed as _dist
from .._validation import check_class_counts
from ..data._checks import check_int
from .classification import (_check_thresholds, _confusion, _pred_target, balanced_accuracy_from_confusion,
                             macro_f1_from_confusion, recall_from_confusion, shot_accuracy_from_counts)
from .regression import (_as_values, bin_statistics, errors_from_statistics, regression_bin_edges,
                         train_bin_counts)

__all__ = ["Metric", "ConfusionMatrix", "BalancedAccuracy", "MacroF1", "PerClassRecall", "ShotAccuracy",
           "ShotRegressionErrors"]


class Metric:
    """Base class: subclasses register sum states with :meth:`_add_state` and implement
    :meth:`update` and :meth:`_compute` (which receives the rank-summed states)."""

    def __init__(self) -> None:
        self._defaults: Dict[str, Tensor] = {}
        self._state: Dict[str, Tensor] = {}

    def _add_state(self, name: str, default: Tensor) -> None:
        self._defaults[name] = default.clone()
        self._state[name] = default.clone()

    def reset(self) -> None:
        """Forget every update (device is kept)."""
        for name, default in self._defaults.items():
            self._state[name] = default.to(self._state[name].device).clone()

    def to(self, device) -> "Metric":
        self._state = {k: v.to(device) for k, v in self._state.items()}
        return self

    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        missing = set(self._state) ^ set(state)
        if missing:
            raise KeyError(f"state must have keys {sorted(self._state)}, got {sorted(state)}")
        for k, v in state.items():
            if v.shape != self._state[k].shape:
                raise ValueError(f"state[{k!r}] must have shape {tuple(self._state[k].shape)}, got {tuple(v.shape)}")
            self._state[k] = v.to(self._state[k].device, self._state[k].dtype).clone()

    def synced_state(self) -> Dict[str, Tensor]:
        """The state summed over ranks (a copy). Collective when distributed."""
        return {k: _dist.all_reduce_sum(v) for k, v in self._state.items()}

    def compute(self):
        return self._compute(self.synced_state())

    def update(self, *args, **kwargs) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute(self, state):  # pragma: no cover - abstract
        raise NotImplementedError


class ConfusionMatrix(Metric):
    """Accumulates the ``(C, C)`` confusion matrix ``M[true, pred]``; ``compute`` returns it (int64).

    Example:
        >>> m = ConfusionMatrix(3)
        >>> m.update(torch.tensor([0, 2]), torch.tensor([0, 1]))
        >>> m.compute().tolist()
        [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self._add_state("confusion", torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64))

    def update(self, pred, target) -> None:
        """Add a batch: ``pred`` logits ``(N, C)`` or labels ``(N,)``, ``target`` labels ``(N,)``."""
        labels, target, _ = _pred_target(pred, target, self.num_classes)
        cm = self._state["confusion"]
        self._state["confusion"] = cm + _confusion(labels, target, self.num_classes).to(cm.device)

    def _compute(self, state):
        return state["confusion"]


class BalancedAccuracy(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.balanced_accuracy` (a Python float)."""

    def _compute(self, state):
        return balanced_accuracy_from_confusion(state["confusion"])


class MacroF1(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.macro_f1` (a Python float)."""

    def _compute(self, state):
        return macro_f1_from_confusion(state["confusion"])


class PerClassRecall(ConfusionMatrix):
    """Streaming :func:`~tailwise.metrics.per_class_recall` (float64 tensor, NaN for absent classes)."""

    def _compute(self, state):
        return recall_from_confusion(state["confusion"]).cpu()


class ShotAccuracy(Metric):
    """Streaming :func:`~tailwise.metrics.shot_accuracy`: keeps per-class correct / total counts.

    Example:
        >>> m = ShotAccuracy(class_counts=[500, 50, 5])
        >>> m.update(torch.tensor([0, 1]), torch.tensor([0, 1])); m.update(torch.tensor([1, 2]), torch.tensor([2, 2]))
        >>> m.compute()
        {'many': 1.0, 'medium': 1.0, 'few': 0.5, 'overall': 0.75}
    """

    def __init__(self, class_counts, many: float = 100, few: float = 20) -> None:
        super().__init__()
        _check_thresholds(many, few)
        self.class_counts = check_class_counts(class_counts, allow_zero=True)
        self.many, self.few = many, few
        self.num_classes = self.class_counts.numel()
        self._add_state("correct", torch.zeros(self.num_classes, dtype=torch.int64))
        self._add_state("total", torch.zeros(self.num_classes, dtype=torch.int64))

    def update(self, pred, target) -> None:
        labels, target, _ = _pred_target(pred, target, self.num_classes)
        dev = self._state["total"].device
        self._state["total"] = self._state["total"] + torch.bincount(target, minlength=self.num_classes).to(dev)
        hit = target[labels == target]
        self._state["correct"] = self._state["correct"] + torch.bincount(hit, minlength=self.num_classes).to(dev)

    def _compute(self, state):
        return shot_accuracy_from_counts(state["correct"], state["total"], self.class_counts, self.many, self.few)


class ShotRegressionErrors(Metric):
    """Streaming :func:`~tailwise.metrics.shot_regression_errors`.

    The bins and their shot groups are fixed at construction from ``train_labels`` and ``bins``;
    the state is five per-bin sums (count, squared error, absolute error, log absolute error,
    exact zeros), so ranks combine exactly.
    """

    def __init__(self, train_labels, bins=None, many: float = 100, few: float = 20) -> None:
        super().__init__()
        _check_thresholds(many, few)
        self.many, self.few = many, few
        self._close_last = isinstance(bins, int) and not isinstance(bins, bool)
        self.edges = regression_bin_edges(train_labels, bins)
        self.train_counts = train_bin_counts(train_labels, self.edges, self._close_last)
        for name in ("count", "sq", "abs", "log_abs", "zeros"):
            self._add_state(name, torch.zeros(self.edges.numel() + 1, dtype=torch.float64))

    def update(self, pred, target) -> None:
        pred = _as_values(pred, "pred")
        target = _as_values(target, "target").to(pred.device)
        if pred.numel() != target.numel():
            raise ValueError(f"pred and target must have the same length N, got {pred.numel()} and {target.numel()}")
        stats = bin_statistics(pred, target, self.edges, self._close_last)
        for k, v in stats.items():
            self._state[k] = self._state[k] + v.to(self._state[k].device)

    def _compute(self, state):
        return errors_from_statistics(state, self.train_counts, self.many, self.few)
