"""Balanced binary cross-entropy of LiVT (Xu et al., CVPR 2023)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import _check_number, check_class_counts, check_probability, check_same_shape
from ..registry import register_loss
from ._common import check_index_target, check_logits, is_soft_target

__all__ = ["bal_bce_loss", "BalBCELoss"]


def _sigmoid_prior_bias(class_counts, num_classes: int, like: Tensor) -> Tensor:
    counts = check_class_counts(class_counts, num_classes)
    if num_classes < 2:
        raise ValueError("bal_bce needs at least 2 classes (log(1 - pi) is -inf for a single class)")
    pi = counts / counts.sum()
    return (torch.log(pi) - torch.log1p(-pi)).to(dtype=like.dtype, device=like.device)


@float32_compute
def bal_bce_loss(input: Tensor, target: Tensor, class_counts, *, label_smoothing: float = 0.0,
                 target_threshold: Optional[float] = None, reduction: str = "mean",
                 sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Balanced BCE: sigmoid BCE on :math:`z_c + \log \pi_c - \log(1 - \pi_c)`, summed over classes.

    Xu et al., "Learning Imbalanced Data with Vision Transformers" (LiVT), CVPR 2023;
    follows ``BCE_loss(type='Bal')`` in XuZhengzhuo/LiVT ``util/loss.py``:

    * bias ``log pi - log(1 - pi)`` (the logit of the prior; METHODS.md's ``log pi`` is the
      softmax analogue) with factor 1 (the official ``K = 1``);
    * index targets become one-hot vectors with timm-style label smoothing
      ``off = s / C``, ``on = 1 - s + s / C`` (official default ``s = 0``); a float target
      of the input's shape (mixup / cutmix) is used as given;
    * optional ``target_threshold``: targets ``> threshold`` become 1, others 0;
    * the official ``C * mean(BCE)`` equals the per-sample sum over classes averaged over
      samples, which is this function's ``"mean"``. ``"none"`` returns ``(N,)``.

    Predict with the raw logits (the bias is only inside the loss).

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 3); y = torch.randint(0, 3, (8,))
        >>> loss = tailwise.functional.bal_bce_loss(z, y, [500, 50, 5])
    """
    check_logits(input, exact_2d=True)
    C = input.shape[1]
    s = check_probability(label_smoothing, "label_smoothing")
    bias = _sigmoid_prior_bias(class_counts, C, input)
    if is_soft_target(input, target):
        t = target.to(input.dtype)
    else:
        if isinstance(target, Tensor) and target.is_floating_point():
            check_same_shape(input, target, "input", "target")
        check_index_target(input, target)
        off = s / C
        t = torch.full_like(input, off).scatter_(1, target.long().unsqueeze(1), 1.0 - s + off)
    if target_threshold is not None:
        thr = _check_number(target_threshold, "target_threshold")
        t = (t > thr).to(input.dtype)
    loss = F.binary_cross_entropy_with_logits(input + bias, t, reduction="none").sum(dim=1)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("bal_bce")
class BalBCELoss(Loss):
    """LiVT's balanced BCE; see :func:`tailwise.functional.bal_bce_loss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.BalBCELoss([500, 50, 5])
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, class_counts, label_smoothing: float = 0.0, target_threshold: Optional[float] = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("class_counts", check_class_counts(class_counts))
        if self.class_counts.numel() < 2:
            raise ValueError("bal_bce needs at least 2 classes (log(1 - pi) is -inf for a single class)")
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.target_threshold = None if target_threshold is None else _check_number(target_threshold,
                                                                                    "target_threshold")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return bal_bce_loss(input, target, self.class_counts, label_smoothing=self.label_smoothing,
                            target_threshold=self.target_threshold, reduction=self.reduction, sample_weight=sample_weight)
