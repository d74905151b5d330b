"""Soft Dice loss (V-Net) for multi-class, multi-label and binary segmentation."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative
from ..registry import register_loss
from ._overlap import maybe_batch, overlap_stats, reduce_classes

__all__ = ["dice_loss", "DiceLoss", "dice_from_stats"]


@float32_compute
def dice_loss(input: Tensor, target: Tensor, *, mode: str = "multiclass", from_logits: bool = True,
              smooth: float = 1e-5, squared_pred: bool = False, class_weight: Optional[Tensor] = None,
              ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
              sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Soft Dice loss.

    For every image ``n`` (or the whole batch when ``batch=True``) and class ``c``:

    .. math::
        \ell_{n,c} = 1 - \frac{2 \sum_l p_{ncl} y_{ncl} + s}{\sum_l p_{ncl} + \sum_l y_{ncl} + s}

    (with ``squared_pred=True`` the denominator is :math:`\sum p^2 + \sum y^2`, as in V-Net). The
    smoothing ``s`` sits in the numerator *and* the denominator, so a class that is absent from
    the target and not predicted scores a loss of 0, not 1. Pixels whose target is
    ``ignore_index`` are left out of every sum. The per-image loss is the (``class_weight``
    weighted) mean over classes: :math:`\sum_c w_c \ell_{n,c} / \sum_c w_c`.

    Args:
        input: scores ``(N, C, *spatial)`` (2-D, 3-D or any number of spatial dims); logits when
            ``from_logits`` (softmax over C in ``multiclass``, sigmoid otherwise), else probabilities.
        target: class indices ``(N, *spatial)`` (``multiclass``/``binary``) or one-hot / soft
            labels with the input's shape (``multilabel`` requires this form).
        mode: ``"multiclass"`` (default), ``"multilabel"`` or ``"binary"`` (``C = 1``).
        smooth: ``s`` above (default ``1e-5``, MONAI's ``smooth_nr = smooth_dr``).
        squared_pred: V-Net denominator :math:`\sum p^2 + \sum y^2`.
        class_weight: optional ``(C,)`` non-negative per-class weights for the class average.
        ignore_index: target value whose pixels are excluded (``None`` disables).
        include_background: ``False`` drops channel 0 from the class average.
        batch: ``True`` pools the sums over the batch ("batch Dice", as nnU-Net); the loss is then
            one number and ``reduction``/``sample_weight`` do not apply per image.
        sample_weight: optional per-image weights ``(N,)`` (per-image mode only).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-image losses ``(N,)``).

    Reference: Milletari et al., "V-Net", 3DV 2016 (arXiv 1606.04797). Defaults follow MONAI's
    ``DiceLoss`` (``smooth = 1e-5``, per-image, background included); see docs/segmentation.md.

    Example:
        >>> import torch
        >>> from tailwise.functional import dice_loss
        >>> logits = torch.randn(2, 3, 8, 8)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> loss = dice_loss(logits, target)
    """
    smooth = check_nonnegative(smooth, "smooth")
    st = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                       squared_pred=squared_pred)
    per_image = dice_from_stats(st, smooth, squared_pred, class_weight, include_background, batch)
    return reduce_loss(per_image, reduction, sample_weight)


def dice_from_stats(st, smooth: float, squared_pred: bool, class_weight: Optional[Tensor],
                    include_background: bool, batch: bool) -> Tensor:
    """Per-image Dice losses ``(N,)`` (a 0-d tensor when ``batch``) from the overlap statistics."""
    st = maybe_batch(st, batch)
    denom = (st.sq + st.sy2) if squared_pred else (st.sp + st.sy)
    per_class = 1.0 - (2.0 * st.tp + smooth) / (denom + smooth).clamp_min(1e-12)
    return reduce_classes(per_class, class_weight, include_background, batch)


@register_loss("dice")
class DiceLoss(Loss):
    """Soft Dice loss module; see :func:`tailwise.functional.dice_loss` for the arguments.

    ``class_weight`` is stored as a buffer so it moves with ``.to(device)`` and is saved in
    ``state_dict``.

    Example:
        >>> import torch, tailwise
        >>> loss_fn = tailwise.DiceLoss(ignore_index=255)
        >>> loss = loss_fn(torch.randn(2, 4, 16, 16), torch.randint(0, 4, (2, 16, 16)))
    """

    def __init__(self, *, mode: str = "multiclass", from_logits: bool = True, smooth: float = 1e-5,
                 squared_pred: bool = False, class_weight: Optional[Tensor] = None,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.mode, self.from_logits, self.squared_pred = mode, from_logits, squared_pred
        self.smooth = check_nonnegative(smooth, "smooth")
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dice_loss(input, target, mode=self.mode, from_logits=self.from_logits, smooth=self.smooth,
                         squared_pred=self.squared_pred, class_weight=self.class_weight,
                         ignore_index=self.ignore_index, include_background=self.include_background,
                         batch=self.batch, sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, smooth={self.smooth}, squared_pred={self.squared_pred}, "
                f"batch={self.batch}, {super().extra_repr()}")
