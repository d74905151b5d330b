"""Dice + cross-entropy, the combination most segmentation models are trained with."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative
from ..registry import register_loss
from ..kernels.overlap import index_ce_sums
from ._overlap import check_class_weight_shape, overlap_stats
from .dice import dice_from_stats, dice_loss

__all__ = ["dice_ce_loss", "DiceCELoss"]


def _ce_per_image(input: Tensor, target: Tensor, mode: str, class_weight: Optional[Tensor],
                  ignore_index: Optional[int]) -> tuple:
    """Per-image (weighted) CE/BCE sums and normaliser, so ``mean`` can pool pixels over the batch."""
    n, c = input.shape[:2]
    length = math.prod(input.shape[2:])
    x = input.reshape(n, c, length)
    if target.shape == input.shape:  # one-hot / soft / multi-hot labels
        y = target.reshape(n, c, length).to(x.dtype)
        keep = torch.ones_like(y) if ignore_index is None else (y != ignore_index).to(x.dtype)
        y = y * keep
        if mode == "multiclass":
            w = 1.0 if class_weight is None else class_weight.to(x.dtype).view(1, c, 1)
            per_el = -(w * y * torch.log_softmax(x, 1)).sum(1)  # (N, L)
            keep_px = keep.amin(1)  # a pixel counts when no channel is ignored
            norm_el = (w * y).sum(1) if class_weight is not None else torch.ones_like(per_el)
            return (per_el * keep_px).sum(-1), (norm_el * keep_px).sum(-1)
        per_el = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        if class_weight is not None:
            per_el = per_el * class_weight.to(x.dtype).view(1, c, 1)
        return (per_el * keep).sum((1, 2)), keep.sum((1, 2))
    return index_ce_sums(x, target.reshape(n, length), mode, class_weight, ignore_index)


@float32_compute
def dice_ce_loss(input: Tensor, target: Tensor, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                 mode: str = "multiclass", smooth: float = 1e-5, squared_pred: bool = False,
                 class_weight: Optional[Tensor] = None, ignore_index: Optional[int] = -100,
                 include_background: bool = True, batch: bool = False, sample_weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> Tensor:
    r"""``lambda_dice * dice + lambda_ce * CE``, from logits.

    The Dice term is :func:`dice_loss` (same arguments). The CE term is softmax cross-entropy in
    ``multiclass`` mode and per-channel binary cross-entropy (with logits) in ``multilabel`` /
    ``binary`` mode, averaged over non-ignored pixels; ``class_weight`` weights it like
    ``torch.nn.functional.cross_entropy(weight=...)`` (the ``mean`` divides by the summed
    weights of the target pixels). With ``reduction="mean"`` the CE pools all valid pixels of
    the batch (as ``F.cross_entropy`` does); ``"none"`` returns per-image losses ``(N,)``.
    A batch whose pixels are all ignored gives a CE of 0, not NaN. Defaults
    (``lambda_dice = lambda_ce = 1``) follow MONAI's ``DiceCELoss``.

    Example:
        >>> import torch
        >>> from tailwise.functional import dice_ce_loss
        >>> loss = dice_ce_loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)), lambda_dice=0.5)
    """
    lambda_dice = check_nonnegative(lambda_dice, "lambda_dice")
    lambda_ce = check_nonnegative(lambda_ce, "lambda_ce")
    if (isinstance(input, Tensor) and isinstance(target, Tensor) and input.dim() >= 2
            and target.shape != input.shape and mode != "multilabel"):
        # class indices: Dice statistics and CE sums from one pass over the logits
        smooth = check_nonnegative(smooth, "smooth")
        check_class_weight_shape(class_weight, input.shape[1])  # the CE term gathers it in the same pass
        st, ce_sum, ce_norm = overlap_stats(input, target, mode=mode, from_logits=True, ignore_index=ignore_index,
                                            squared_pred=squared_pred, with_ce=True, ce_weight=class_weight)
        dice = dice_from_stats(st, smooth, squared_pred, class_weight, include_background, batch)
    else:
        dice = dice_loss(input, target, mode=mode, from_logits=True, smooth=smooth, squared_pred=squared_pred,
                         class_weight=class_weight, ignore_index=ignore_index,
                         include_background=include_background, batch=batch, reduction="none")
        ce_sum, ce_norm = _ce_per_image(input, target, mode, class_weight, ignore_index)
    if batch or (reduction == "mean" and sample_weight is None):
        # pool pixels over the batch like F.cross_entropy; a fully ignored batch gives 0
        ce = ce_sum.sum() / ce_norm.sum().clamp_min(1e-12)
        return lambda_dice * (dice if batch else reduce_loss(dice, "mean")) + lambda_ce * ce
    ce = ce_sum / ce_norm.clamp_min(1e-12)
    return reduce_loss(lambda_dice * dice + lambda_ce * ce, reduction, sample_weight)


@register_loss("dice_ce")
class DiceCELoss(Loss):
    """Dice + cross-entropy module; see :func:`tailwise.functional.dice_ce_loss`.

    Example:
        >>> import torch, tailwise
        >>> loss = tailwise.DiceCELoss(lambda_ce=0.5)(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0, mode: str = "multiclass",
                 smooth: float = 1e-5, squared_pred: bool = False, class_weight: Optional[Tensor] = None,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.lambda_dice = check_nonnegative(lambda_dice, "lambda_dice")
        self.lambda_ce = check_nonnegative(lambda_ce, "lambda_ce")
        self.mode, self.smooth, self.squared_pred = mode, check_nonnegative(smooth, "smooth"), squared_pred
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dice_ce_loss(input, target, lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
                            mode=self.mode, smooth=self.smooth, squared_pred=self.squared_pred,
                            class_weight=self.class_weight, ignore_index=self.ignore_index,
                            include_background=self.include_background, batch=self.batch, sample_weight=sample_weight,
                            reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"lambda_dice={self.lambda_dice}, lambda_ce={self.lambda_ce}, mode={self.mode!r}, " + super().extra_repr()
