"""Long-tailed subsets of a balanced labelled dataset (the CIFAR-LT recipe).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS
2019 (github kaidic/LDAM-DRW, ``imbalance_cifar.py``) build CIFAR-10/100-LT by keeping, for the
class of rank ``r`` (0 = head),

* ``exp``:  ``n_r = int(n_max * (1 / IF) ** (r / (C - 1)))``
* ``step``: ``n_r = n_max`` for the first ``C // 2`` ranks, ``int(n_max / IF)`` for the rest,

where ``IF = n_max / n_min`` is the imbalance factor, and drawing each class's kept samples at
random with ``numpy.random.seed(seed)`` followed by one ``shuffle`` per class in ascending label
order. :func:`long_tailed_indices` uses the same arithmetic and the same numpy random stream,
so with the default ``class_order`` it selects exactly the subset the official code selects
for the same labels and seed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import as_label_tensor, check_int, check_num_classes, check_real

__all__ = ["class_counts", "long_tailed_counts", "long_tailed_indices"]

_PROFILES = ("exp", "step")


def class_counts(labels, num_classes: Optional[int] = None) -> Tensor:
    """Number of samples of each class, an int64 tensor of length ``num_classes``.

    Args:
        labels: 1-D integer class labels (tensor, numpy array or sequence).
        num_classes: length of the result; defaults to ``max(labels) + 1``. Classes without
            samples get 0.

    Example:
        >>> class_counts(torch.tensor([0, 2, 2, 2]), num_classes=4)
        tensor([1, 0, 3, 0])
    """
    labels = as_label_tensor(labels, "labels")
    num_classes = check_num_classes(num_classes, labels)
    return torch.bincount(labels, minlength=num_classes)


def long_tailed_counts(num_classes: int, max_per_class: int, imbalance_factor: float,
                       profile: str = "exp") -> list:
    """Per-rank sample counts of a long-tailed profile (rank 0 = head), as a list of ints.

    ``exp``: ``int(n_max * (1 / IF) ** (r / (C - 1)))`` (one class gets ``n_max``).
    ``step``: the first ``C // 2`` ranks keep ``n_max``, the other ``C - C // 2`` keep
    ``int(n_max / IF)``. (The official code appends ``C // 2`` tail entries, which drops the last
    class when ``C`` is odd; here every class gets a count, and a single class is the head.)

    Example:
        >>> long_tailed_counts(10, 5000, 100)  # CIFAR-10-LT, IF = 100
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    n_max = check_int(max_per_class, "max_per_class", minimum=1)
    factor = check_real(imbalance_factor, "imbalance_factor")
    if factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {factor}")
    if profile not in _PROFILES:
        raise ValueError(f"profile must be one of {_PROFILES}, got {profile!r}")
    # Same float arithmetic as the official code, which is parameterised by 1 / IF ("imb_factor").
    ratio = 1.0 / factor
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        return [int(n_max * (ratio ** (r / (num_classes - 1.0)))) for r in range(num_classes)]
    head = max(1, num_classes // 2)
    return [n_max] * head + [int(n_max * ratio)] * (num_classes - head)


def long_tailed_indices(labels, imbalance_factor: float, profile: str = "exp", seed: int = 0,
                        class_order: Optional[Sequence[int]] = None,
                        num_classes: Optional[int] = None, *,
                        max_per_class: Optional[int] = None) -> Tensor:
    """Indices of a long-tailed subset of a labelled dataset (CIFAR-LT recipe, Cao et al. 2019).

    The class of rank ``r`` keeps ``n_r`` samples (see :func:`long_tailed_counts`):
    ``n_r = int(n_max * IF ** (-r / (C - 1)))`` for ``profile="exp"``; ``n_max`` for the first
    half of the ranks and ``int(n_max / IF)`` for the second half for ``profile="step"``.

    Args:
        labels: 1-D integer labels of the full (usually balanced) dataset.
        imbalance_factor: ``IF = n_max / n_min >= 1`` (CIFAR-LT uses 10, 50, 100, 200). ``1`` keeps
            ``n_max`` of every class.
        profile: ``"exp"`` or ``"step"``.
        seed: which samples of each class are kept; the same seed gives the same subset (the
            numpy ``RandomState(seed)`` stream the official code uses).
        class_order: a permutation of ``range(C)``; ``class_order[r]`` is the class given rank
            ``r``. Default: class ``r`` has rank ``r`` (class 0 is the head, as in CIFAR-LT).
        num_classes: ``C``; defaults to ``max(labels) + 1``. Every class must have samples.
        max_per_class: ``n_max``. Default: the smallest class's available count, so that every
            rank's target is available (on CIFAR this is 5000 / 500, the official value).
            A larger value raises if some class has fewer samples than its target.

    Returns:
        Sorted int64 tensor of indices into ``labels`` (on the CPU).

    Example:
        >>> labels = torch.arange(10).repeat_interleave(100)
        >>> idx = long_tailed_indices(labels, imbalance_factor=10)
        >>> class_counts(labels[idx]).tolist()
        [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    """
    labels = as_label_tensor(labels, "labels", allow_empty=False).cpu()
    num_classes = check_num_classes(num_classes, labels)
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"labels must contain every class in [0, {num_classes - 1}]; "
                         f"class(es) {empty[:10]} have no samples")
    seed = check_int(seed, "seed", minimum=0)
    if class_order is None:
        order = list(range(num_classes))
    else:
        order = [check_int(c, "class_order entries") for c in class_order]
        if sorted(order) != list(range(num_classes)):
            raise ValueError(f"class_order must be a permutation of range({num_classes}), "
                             f"got {list(class_order)[:20]}")
    n_max = int(counts.min()) if max_per_class is None else max_per_class
    per_rank = long_tailed_counts(num_classes, n_max, imbalance_factor, profile)
    target = [0] * num_classes
    for rank, cls in enumerate(order):
        target[cls] = per_rank[rank]
        if per_rank[rank] > int(counts[cls]):
            raise ValueError(f"class {cls} has {int(counts[cls])} samples but its long-tailed target "
                             f"(rank {rank}, max_per_class={n_max}) is {per_rank[rank]}; "
                             f"lower max_per_class")
    # One global numpy stream, one shuffle per class in ascending label order: the official
    # recipe, so identical labels and seed give an identical subset.
    rng = np.random.RandomState(seed)
    y = labels.numpy()
    kept = []
    for cls in range(num_classes):
        idx = np.where(y == cls)[0]
        rng.shuffle(idx)
        kept.append(idx[:target[cls]])
    out = np.sort(np.concatenate(kept)).astype(np.int64)
    return torch.from_numpy(out)
