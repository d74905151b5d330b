"""Balanced binary cross-entropy of LiVT (Xu et al., CVPR 2023)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import upcast
from .._reduction import reduce_loss
from .._validation import _check_number, check_class_counts, check_probability, check_same_shape
from ..kernels import sigmoid_family as _sig
from ..kernels._halfio import float32_compute_unless_kernel
from ..registry import register_loss
from ._common import check_index_target, check_logits, is_soft_target, from_counts

__all__ = ["bal_bce_loss", "BalBCELoss"]


def _sigmoid_prior_bias(class_counts, num_classes: int, like: Tensor) -> Tensor:
    if num_classes < 2:
        check_class_counts(class_counts, num_classes)  # the length error first, if that is the problem
        raise ValueError("bal_bce needs at least 2 classes (log(1 - pi) is -inf for a single class)")

    def bias(counts: Tensor) -> Tensor:
        pi = counts / counts.sum()
        return torch.log(pi) - torch.log1p(-pi)

    return from_counts(class_counts, num_classes, like, "bal_bce", bias)


@float32_compute_unless_kernel("bal_bce")
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
    if not _sig.uses_kernel("bal_bce", input):
        input = upcast(input)  # 16-bit logits stay 16-bit only for the kernel, which reads them
    bias = _sigmoid_prior_bias(class_counts, C, input if input.dtype not in (torch.float16, torch.bfloat16)
                               else input.new_empty(0, dtype=torch.float32))
    thr = None if target_threshold is None else _check_number(target_threshold, "target_threshold")
    if is_soft_target(input, target):
        t = target.to(torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype)
        if thr is not None:
            t = (t > thr).to(t.dtype)
        loss = _sig.run("bal_bce", input, t, bias)
    else:
        if isinstance(target, Tensor) and target.is_floating_point():
            check_same_shape(input, target, "input", "target")
        # the kernel checks the index range as it reads the targets where values stay on the device
        in_kernel = _sig.kernel_checks_targets("bal_bce", input, target)
        check_index_target(input, target, values=not in_kernel)
        # smoothed one-hot values, read from the class index by the kernel (no (N, C) target)
        off = s / C
        on = 1.0 - s + off
        if thr is not None:
            on, off = float(on > thr), float(off > thr)
        loss = _sig.run("bal_bce", input, target.long(), bias, on, off, validate=in_kernel)
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
