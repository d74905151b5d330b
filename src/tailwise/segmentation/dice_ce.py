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
from .._validation import check_choice, check_nonnegative
from ..registry import register_loss
from ..kernels.overlap import index_ce_sums
from ._overlap import ACTIVATIONS, check_class_weight_shape, check_overlap_options, overlap_stats, resolve_smooth
from .dice import dice_from_stats

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
                 mode: str = "multiclass", dice_activation: Optional[str] = None, smooth: float = 1e-5,
                 smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None, squared_pred: bool = False,
                 soft_label: bool = False, average: str = "macro", class_weight: Optional[Tensor] = None,
                 normalize_class_weight: bool = True, ignore_index: Optional[int] = -100,
                 include_background: bool = True, batch: bool = False, sample_weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> Tensor:
    r"""``lambda_dice * dice + lambda_ce * CE``, from logits.

    The Dice term is :func:`dice_loss` (same arguments) on ``dice_activation(input)``. The CE
    term is softmax cross-entropy in ``multiclass`` mode and per-channel binary cross-entropy
    (with logits) in ``multilabel`` / ``binary`` mode, averaged over non-ignored pixels;
    ``class_weight`` weights it like ``torch.nn.functional.cross_entropy(weight=...)`` (the
    ``mean`` divides by the summed weights of the target pixels), whatever
    ``normalize_class_weight`` says (that option is the Dice term's). With ``reduction="mean"``
    the CE pools all valid pixels of the batch (as ``F.cross_entropy`` does); ``"none"`` returns
    per-image losses ``(N,)``. A batch whose pixels are all ignored gives a CE of 0, not NaN.
    Defaults (``lambda_dice = lambda_ce = 1``) follow MONAI's ``DiceCELoss``.

    ``dice_activation`` is what the Dice term sees: ``None`` (default) the mode's activation
    (softmax over C in ``multiclass``, sigmoid otherwise), ``"softmax"``, ``"sigmoid"`` (per
    channel against the one-hot target), or ``"none"``: the raw logits, unchecked, which is
    MONAI's ``DiceCELoss()`` default (no ``softmax``/``sigmoid``/``other_act``). Raw scores make
    the Dice term unbounded (its denominator can be 0 or negative, as in MONAI); with
    ``lambda_ce=0`` this computes MONAI's ``DiceLoss`` on any ``other_act`` output. A MONAI
    ``DiceCELoss(to_onehot_y=True, softmax=True, weight=w, smooth_nr=a, smooth_dr=b)`` on a
    ``(N, 1, *S)`` label map is ``dice_ce_loss(x, y[:, 0].long(), dice_activation="softmax",
    class_weight=w, normalize_class_weight=False, smooth_nr=a, smooth_dr=b)``;
    ``to_onehot_y=False`` means a one-hot target (any of float, ``uint8``, ``bool``); MONAI's
    ``sigmoid=True`` is ``dice_activation="sigmoid"``, and a one-channel input is
    ``mode="binary"`` (MONAI's BCE then takes ``weight`` as ``pos_weight``, which tailwise does
    not express).

    Example:
        >>> import torch
        >>> from tailwise.functional import dice_ce_loss
        >>> loss = dice_ce_loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)), lambda_dice=0.5)
        >>> x = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
        >>> y = torch.tensor([[0, 0, 1], [0, 1, 0]])
        >>> round(dice_ce_loss(x, y, dice_activation="none").item(), 4)  # MONAI's test: log(1 + e) - 1
        0.3133
    """
    lambda_dice = check_nonnegative(lambda_dice, "lambda_dice")
    lambda_ce = check_nonnegative(lambda_ce, "lambda_ce")
    s_nr, s_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
    check_overlap_options(soft_label, average, normalize_class_weight)
    act = dice_activation
    if act is not None:
        check_choice(act, "dice_activation", ACTIVATIONS)
        if act == ("softmax" if mode == "multiclass" else "sigmoid"):
            act = None  # the mode's own activation: the fused path
    soft = soft_label and not squared_pred
    if (act is None and isinstance(input, Tensor) and isinstance(target, Tensor) and input.dim() >= 2
            and target.shape != input.shape and mode != "multilabel"):
        # class indices: Dice statistics and CE sums from one pass over the logits
        check_class_weight_shape(class_weight, input.shape[1])  # the CE term gathers it in the same pass
        st, ce_sum, ce_norm = overlap_stats(input, target, mode=mode, from_logits=True, ignore_index=ignore_index,
                                            squared_pred=squared_pred, with_ce=True, ce_weight=class_weight,
                                            soft_label=soft)
    else:
        st = overlap_stats(input, target, mode=mode, from_logits=True, ignore_index=ignore_index,
                           squared_pred=squared_pred, soft_label=soft, activation=act)
        check_class_weight_shape(class_weight, input.shape[1])
        ce_sum, ce_norm = _ce_per_image(input, target, mode, class_weight, ignore_index)
    dice = dice_from_stats(st, s_nr, s_dr, squared_pred, class_weight, include_background, batch,
                           average=average, normalize_class_weight=normalize_class_weight, raw=act == "none")
    if batch or (reduction == "mean" and sample_weight is None):
        # pool pixels over the batch like F.cross_entropy; a fully ignored batch gives 0
        ce = ce_sum.sum() / ce_norm.sum().clamp_min(1e-12)
        return _scaled(lambda_dice, dice if batch else reduce_loss(dice, "mean")) + _scaled(lambda_ce, ce)
    ce = ce_sum / ce_norm.clamp_min(1e-12)
    return reduce_loss(_scaled(lambda_dice, dice) + _scaled(lambda_ce, ce), reduction, sample_weight)


def _scaled(lam: float, x: Tensor) -> Tensor:
    # x * 1.0 is x bit for bit (value and gradient): skip the two ops (forward, backward) that
    # the default weights would cost every eager call
    return x if lam == 1.0 else lam * x


@register_loss("dice_ce")
class DiceCELoss(Loss):
    """Dice + cross-entropy module; see :func:`tailwise.functional.dice_ce_loss`.

    Example:
        >>> import torch, tailwise
        >>> loss = tailwise.DiceCELoss(lambda_ce=0.5)(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0, mode: str = "multiclass",
                 dice_activation: Optional[str] = None, smooth: float = 1e-5, smooth_nr: Optional[float] = None,
                 smooth_dr: Optional[float] = None, squared_pred: bool = False, soft_label: bool = False,
                 average: str = "macro", class_weight: Optional[Tensor] = None, normalize_class_weight: bool = True,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.lambda_dice = check_nonnegative(lambda_dice, "lambda_dice")
        self.lambda_ce = check_nonnegative(lambda_ce, "lambda_ce")
        if dice_activation is not None:
            check_choice(dice_activation, "dice_activation", ACTIVATIONS)
        self.mode, self.dice_activation = mode, dice_activation
        self.smooth, self.squared_pred = check_nonnegative(smooth, "smooth"), squared_pred
        self.smooth_nr, self.smooth_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
        check_overlap_options(soft_label, average, normalize_class_weight)
        self.soft_label, self.average, self.normalize_class_weight = soft_label, average, normalize_class_weight
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dice_ce_loss(input, target, lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
                            mode=self.mode, dice_activation=self.dice_activation, smooth_nr=self.smooth_nr,
                            smooth_dr=self.smooth_dr, squared_pred=self.squared_pred, soft_label=self.soft_label,
                            average=self.average, class_weight=self.class_weight,
                            normalize_class_weight=self.normalize_class_weight, ignore_index=self.ignore_index,
                            include_background=self.include_background, batch=self.batch, sample_weight=sample_weight,
                            reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"lambda_dice={self.lambda_dice}, lambda_ce={self.lambda_ce}, mode={self.mode!r}, "
                f"dice_activation={self.dice_activation!r}, " + super().extra_repr())
