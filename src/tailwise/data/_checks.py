"""Input checks shared by :mod:`tailwise.data` and :mod:`tailwise.metrics` (private)."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_label_tensor", "check_int", "check_num_classes"]


def as_label_tensor(labels, name: str = "labels", *, allow_empty: bool = True) -> Tensor:
    """Return ``labels`` as a 1-D int64 tensor of non-negative class indices (on its device).

    Accepts a tensor, a numpy array or a sequence of ints. Floats and bools are rejected rather
    than silently truncated, because a float label usually means the wrong tensor was passed.
    """
    if isinstance(labels, Tensor):
        t = labels.detach()
    else:
        try:
            arr = np.asarray(labels)
            if arr.size == 0 and arr.dtype == np.float64:
                arr = arr.astype(np.int64)  # np.asarray([]) is float64; an empty list is no label error
            t = torch.as_tensor(arr)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a 1-D tensor or sequence of integer class labels, "
                            f"got {type(labels).__name__}") from exc
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integer class labels (int64), got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class labels (N,), got shape {tuple(t.shape)}")
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    t = t.to(torch.int64)
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} must be non-negative class indices, got {int(t.min())}")
    return t


def check_int(value, name: str, *, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_num_classes(num_classes, labels: Tensor, name: str = "labels") -> int:
    """``num_classes`` if given (checked against the largest label), else ``max(labels) + 1``."""
    seen = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes is None:
        if seen == 0:
            raise ValueError(f"num_classes is required when {name} is empty")
        return seen
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    if seen > num_classes:
        raise ValueError(f"{name} must be class indices in [0, {num_classes - 1}] "
                         f"(num_classes={num_classes}), got {seen - 1}")
    return num_classes


def check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value
