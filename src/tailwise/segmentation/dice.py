"""Soft Dice loss (V-Net) for multi-class, multi-label and binary segmentation."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative
from ..registry import register_loss
from ._overlap import (check_overlap_options, maybe_batch, overlap_stats, pool_classes, reduce_classes,
                       resolve_smooth)

__all__ = ["dice_loss", "DiceLoss", "dice_from_stats"]


@float32_compute
def dice_loss(input: Tensor, target: Tensor, *, mode: str = "multiclass", from_logits: bool = True,
              smooth: float = 1e-5, smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None,
              squared_pred: bool = False, soft_label: bool = False, average: str = "macro",
              class_weight: Optional[Tensor] = None, normalize_class_weight: bool = True,
              ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
              sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Soft Dice loss.

    For every image ``n`` (or the whole batch when ``batch=True``) and class ``c``:

    .. math::
        \ell_{n,c} = 1 - \frac{2\,TP_{nc} + s_{nr}}{\sum_l p_{ncl} + \sum_l y_{ncl} + s_{dr}},
        \qquad TP_{nc} = \sum_l p_{ncl} y_{ncl}

    (with ``squared_pred=True`` the denominator is :math:`\sum p^2 + \sum y^2`, as in V-Net). The
    smoothing sits in the numerator *and* the denominator (``smooth`` sets both), so a class that
    is absent from the target and not predicted scores a loss of 0, not 1. Pixels whose target
    is ``ignore_index`` are left out of every sum. The per-image loss is the (``class_weight``
    weighted) mean over classes: :math:`\sum_c w_c \ell_{n,c} / \sum_c w_c`, or MONAI's
    :math:`\frac1C \sum_c w_c \ell_{n,c}` with ``normalize_class_weight=False``.

    ``soft_label=True`` uses the semimetric intersection of Wang et al. (MONAI's
    ``soft_label``): :math:`TP = \sum_l (|p| + |y| - |p - y|) / 2`, and ``|p|`` in the
    predicted mass. It equals :math:`\sum p y` for hard labels and gives loss 0 when a soft
    target equals the prediction (the product form does not). With ``squared_pred`` the
    intersection stays :math:`\sum p y`, which is MONAI's order-2 semimetric.

    ``average="micro"`` (kornia's default) pools all classes into one index per image:
    :math:`1 - (2 \sum_c w_c TP_c + s_{nr}) / (\sum_c w_c (\sum p_c + \sum y_c) + s_{dr})`,
    kornia 0.9's weighted micro Dice (kornia up to 0.8 weighted the intersection by
    :math:`w_c^2`). kornia's ``eps`` is ``smooth_nr=0, smooth_dr=eps``.

    Args:
        input: scores ``(N, C, *spatial)`` (2-D, 3-D or any number of spatial dims); logits when
            ``from_logits`` (softmax over C in ``multiclass``, sigmoid otherwise), else probabilities.
        target: class indices ``(N, *spatial)`` (``multiclass``/``binary``) or one-hot / soft
            labels with the input's shape (floating, ``uint8`` or ``bool``; ``multilabel``
            requires this form).
        mode: ``"multiclass"`` (default), ``"multilabel"`` or ``"binary"`` (``C = 1``).
        smooth: shorthand for ``smooth_nr = smooth_dr`` (default ``1e-5``, MONAI's default).
        smooth_nr: the numerator's smoothing :math:`s_{nr}`; ``None`` takes ``smooth``.
        smooth_dr: the denominator's smoothing :math:`s_{dr}`; ``None`` takes ``smooth``.
        squared_pred: V-Net denominator :math:`\sum p^2 + \sum y^2`.
        soft_label: the semimetric intersection above (for soft targets).
        average: ``"macro"`` (default: one Dice per class, then the class average) or
            ``"micro"`` (all classes pooled into one Dice).
        class_weight: optional ``(C,)`` non-negative per-class weights (all ``C`` classes, also
            with ``include_background=False``, which drops entry 0).
        normalize_class_weight: ``True`` (default) divides by :math:`\sum_c w_c`; ``False``
            multiplies each class loss by its weight and takes the plain mean over classes (MONAI).
        ignore_index: target value whose pixels are excluded (``None`` disables).
        include_background: ``False`` drops channel 0 from the class average.
        batch: ``True`` pools the sums over the batch ("batch Dice", as nnU-Net); the loss is then
            one number and ``reduction``/``sample_weight`` do not apply per image.
        sample_weight: optional per-image weights ``(N,)`` (per-image mode only).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-image losses ``(N,)``).

    Reference: Milletari et al., "V-Net", 3DV 2016 (arXiv 1606.04797); Wang et al., "Dice
    Semimetric Losses: Optimizing the Dice Score with Soft Labels", MICCAI 2023. Defaults follow
    MONAI's ``DiceLoss`` (``smooth = 1e-5``, per-image, background included); see
    docs/segmentation.md.

    Example:
        >>> import torch
        >>> from tailwise.functional import dice_loss
        >>> logits = torch.randn(2, 3, 8, 8)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> loss = dice_loss(logits, target)
        >>> soft = torch.tensor([[[0.3, 0.4], [0.7, 0.9]]]).unsqueeze(0)  # (1, 1, 2, 2)
        >>> dice_loss(soft, soft, mode="multilabel", from_logits=False, soft_label=True)
        tensor(0.)
        >>> round(dice_loss(soft, soft, mode="multilabel", from_logits=False).item(), 4)  # product form
        0.3261
    """
    s_nr, s_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
    check_overlap_options(soft_label, average, normalize_class_weight)
    st = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                       squared_pred=squared_pred, soft_label=soft_label and not squared_pred)
    per_image = dice_from_stats(st, s_nr, s_dr, squared_pred, class_weight, include_background, batch,
                                average=average, normalize_class_weight=normalize_class_weight)
    return reduce_loss(per_image, reduction, sample_weight)


def dice_from_stats(st, smooth_nr: float, smooth_dr: float, squared_pred: bool, class_weight: Optional[Tensor],
                    include_background: bool, batch: bool, *, average: str = "macro",
                    normalize_class_weight: bool = True, raw: bool = False) -> Tensor:
    """Per-image Dice losses ``(N,)`` (a 0-d tensor when ``batch``) from the overlap statistics.

    ``raw``: the statistics come from unbounded scores (``dice_ce``'s ``dice_activation="none"``),
    whose denominator may be negative, so it is not clamped (MONAI's arithmetic).
    """
    st = maybe_batch(st, batch)
    if average == "micro":
        st = pool_classes(st, class_weight, include_background)
        class_weight, include_background = None, True
    denom = (st.sq + st.sy2) if squared_pred else (st.sp + st.sy)
    denom = denom + smooth_dr
    per_class = 1.0 - (2.0 * st.tp + smooth_nr) / (denom if raw else denom.clamp_min(1e-12))
    return reduce_classes(per_class, class_weight, include_background, batch, normalize_class_weight)


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
                 smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None, squared_pred: bool = False,
                 soft_label: bool = False, average: str = "macro", class_weight: Optional[Tensor] = None,
                 normalize_class_weight: bool = True, ignore_index: Optional[int] = -100,
                 include_background: bool = True, batch: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.mode, self.from_logits, self.squared_pred = mode, from_logits, squared_pred
        self.smooth = check_nonnegative(smooth, "smooth")
        self.smooth_nr, self.smooth_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
        check_overlap_options(soft_label, average, normalize_class_weight)
        self.soft_label, self.average, self.normalize_class_weight = soft_label, average, normalize_class_weight
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dice_loss(input, target, mode=self.mode, from_logits=self.from_logits, smooth_nr=self.smooth_nr,
                         smooth_dr=self.smooth_dr, squared_pred=self.squared_pred, soft_label=self.soft_label,
                         average=self.average, class_weight=self.class_weight,
                         normalize_class_weight=self.normalize_class_weight, ignore_index=self.ignore_index,
                         include_background=self.include_background, batch=self.batch,
                         sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, smooth_nr={self.smooth_nr}, smooth_dr={self.smooth_dr}, "
                f"squared_pred={self.squared_pred}, soft_label={self.soft_label}, average={self.average!r}, "
                f"batch={self.batch}, {super().extra_repr()}")
