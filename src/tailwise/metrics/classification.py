"""Classification metrics for long-tailed evaluation.

* :func:`shot_accuracy`: many / medium / few-shot accuracy (Liu et al., OLTR, CVPR 2019;
  the ``shot_acc`` helper of github zhmiao/OpenLongTailRecognition-OLTR and kaidic/LDAM-DRW):
  a class is *many-shot* if it has ``> many`` (100) training samples, *few-shot* if ``< few`` (20),
  *medium-shot* otherwise; a group's accuracy is the mean of its classes' test accuracies.
* :func:`per_class_recall`, :func:`balanced_accuracy` (mean per-class recall, as
  ``sklearn.metrics.balanced_accuracy_score``) and :func:`macro_f1` (as
  ``sklearn.metrics.f1_score(average="macro")``), all from one confusion matrix.

``pred`` may be logits / scores ``(N, C)`` (arg-maxed) or predicted labels ``(N,)``.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from .._validation import check_class_counts, check_tensor
from ..data._checks import as_label_tensor, check_int, check_num_classes

__all__ = ["confusion_matrix", "per_class_recall", "balanced_accuracy", "macro_f1", "shot_accuracy"]


def _pred_target(pred, target, num_classes: Optional[int]):
    """Validate and return ``(pred_labels, target, num_classes)`` as int64 tensors on one device."""
    check_tensor(pred, "pred", ndim=(1, 2))
    target = as_label_tensor(target, "target")
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"pred and target must have the same length N, got pred {tuple(pred.shape)} "
                         f"and target {tuple(target.shape)}")
    if pred.dim() == 2:
        if num_classes is not None and check_int(num_classes, "num_classes", minimum=1) != pred.shape[1]:
            raise ValueError(f"pred scores must have num_classes={num_classes} columns, got shape "
                             f"{tuple(pred.shape)}")
        num_classes = pred.shape[1]
        labels = pred.detach().argmax(1) if pred.shape[0] else pred.new_zeros(0, dtype=torch.int64)
    else:
        labels = as_label_tensor(pred, "pred")
    target = target.to(labels.device)
    num_classes = check_num_classes(num_classes, torch.cat([labels, target]), "pred and target")
    return labels, target, num_classes


def _confusion(labels: Tensor, target: Tensor, num_classes: int) -> Tensor:
    flat = target * num_classes + labels
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_matrix(pred, target, num_classes: Optional[int] = None) -> Tensor:
    """Counts ``M[i, j]`` of samples of true class ``i`` predicted as ``j`` (int64, sklearn's layout).

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
        tensor([[1, 1],
                [0, 1]])
    """
    labels, target, num_classes = _pred_target(pred, target, num_classes)
    return _confusion(labels, target, num_classes)


def recall_from_confusion(cm: Tensor) -> Tensor:
    """Per-class recall ``M[c, c] / sum_j M[c, j]``; NaN for classes with no true samples."""
    cm = cm.to(torch.float64)
    support = cm.sum(1)
    return torch.where(support > 0, cm.diagonal() / support.clamp_min(1), torch.full_like(support, math.nan))


def balanced_accuracy_from_confusion(cm: Tensor) -> float:
    recall = recall_from_confusion(cm)
    present = ~torch.isnan(recall)
    return float(recall[present].mean()) if bool(present.any()) else math.nan


def macro_f1_from_confusion(cm: Tensor) -> float:
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted  # = 2TP + FP + FN
    # sklearn's default label set: classes that occur in target or prediction; F1 = 0 when TP = 0.
    used = denom > 0
    if not bool(used.any()):
        return math.nan
    return float((2 * tp[used] / denom[used]).mean())


def per_class_recall(pred, target, num_classes: Optional[int] = None) -> Tensor:
    """Recall (= accuracy) of each class, a float64 tensor of length ``C``.

    Classes without test samples get NaN (their recall is undefined), so callers can tell them
    from classes with zero recall. ``num_classes`` defaults to ``pred.shape[1]`` for scores and
    to ``max(pred, target) + 1`` for labels.

    Example:
        >>> per_class_recall(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), num_classes=3)
        tensor([0.5000, 0.5000,    nan], dtype=torch.float64)
    """
    return recall_from_confusion(confusion_matrix(pred, target, num_classes)).cpu()


def balanced_accuracy(pred, target, num_classes: Optional[int] = None) -> float:
    """Mean per-class recall over the classes present in ``target`` (a Python float).

    Equals ``sklearn.metrics.balanced_accuracy_score`` (``adjusted=False``). NaN for an empty batch.

    Example:
        >>> balanced_accuracy(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
        0.75
    """
    return balanced_accuracy_from_confusion(confusion_matrix(pred, target, num_classes))


def macro_f1(pred, target, num_classes: Optional[int] = None) -> float:
    """Unweighted mean of per-class F1 ``2 TP / (2 TP + FP + FN)`` (a Python float).

    Averages over the classes that occur in ``target`` or in the predictions, with F1 = 0 for a
    class that is predicted or present but never correctly, which is
    ``sklearn.metrics.f1_score(target, pred, average="macro", zero_division=0)``. Classes absent
    from both are left out (their F1 is 0/0). NaN for an empty batch.

    Example:
        >>> macro_f1(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
        0.7333333333333334
    """
    return macro_f1_from_confusion(confusion_matrix(pred, target, num_classes))


def _check_thresholds(many, few):
    for value, name in ((many, "many"), (few, "few")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{name} must be a finite number of training samples, got {value!r}")
    if few > many:
        raise ValueError(f"few must be <= many, got few={few} and many={many}")


def shot_groups(class_counts, many: float = 100, few: float = 20) -> Dict[str, Tensor]:
    """Boolean masks of many (``count > many``), medium and few (``count < few``) classes."""
    _check_thresholds(many, few)
    counts = check_class_counts(class_counts, allow_zero=True)
    is_many, is_few = counts > many, counts < few
    return {"many": is_many, "medium": ~is_many & ~is_few, "few": is_few}


def shot_accuracy_from_counts(correct: Tensor, total: Tensor, class_counts, many: float = 100,
                              few: float = 20) -> Dict[str, float]:
    """:func:`shot_accuracy` from per-class numbers of correct and of test samples."""
    groups = shot_groups(class_counts, many, few)
    correct, total = correct.to(torch.float64).cpu(), total.to(torch.float64).cpu()
    if correct.numel() != groups["many"].numel():
        raise ValueError(f"class_counts must have one entry per class ({correct.numel()}), "
                         f"got {groups['many'].numel()}")
    present = total > 0
    acc = correct / total.clamp_min(1)
    out = {}
    for name, mask in groups.items():
        sel = mask & present
        out[name] = float(acc[sel].mean()) if bool(sel.any()) else math.nan
    n = float(total.sum())
    out["overall"] = float(correct.sum()) / n if n > 0 else math.nan
    return out


def shot_accuracy(pred, target, class_counts, many: float = 100, few: float = 20) -> Dict[str, float]:
    """Many / medium / few-shot and overall top-1 accuracy (OLTR protocol).

    Args:
        pred: logits ``(N, C)`` or predicted labels ``(N,)``.
        target: true labels ``(N,)``.
        class_counts: training-set count of each class (length ``C``; zeros allowed: such a
            class is few-shot).
        many: a class with ``count > many`` is many-shot (default 100).
        few: a class with ``count < few`` is few-shot (default 20); the rest are medium-shot.

    Returns:
        ``{"many", "medium", "few", "overall"}`` as Python floats in [0, 1]. A group's accuracy is
        the mean, over its classes that have test samples, of the per-class accuracy (as the
        official ``shot_acc``); classes absent from ``target`` are left out. A group with no such
        class is ``float("nan")`` (JSON-serialisable by Python's ``json``; test with
        ``math.isnan``). ``overall`` is the plain sample accuracy; it equals the mean per-class
        accuracy on a balanced test set.

    Example:
        >>> counts = torch.tensor([500, 50, 5])
        >>> shot_accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), counts)
        {'many': 1.0, 'medium': 1.0, 'few': 0.5, 'overall': 0.75}
    """
    check_tensor(pred, "pred", ndim=(1, 2))
    counts = check_class_counts(class_counts, allow_zero=True)
    num_classes = counts.numel()
    if pred.dim() == 2 and pred.shape[1] != num_classes:
        raise ValueError(f"class_counts must have one entry per class ({pred.shape[1]} columns of pred), "
                         f"got {num_classes}")
    labels, target, num_classes = _pred_target(pred, target, num_classes)
    total = torch.bincount(target, minlength=num_classes)
    correct = torch.bincount(target[labels == target], minlength=num_classes)
    return shot_accuracy_from_counts(correct, total, counts, many, few)
