"""Tversky loss (Salehi et al. 2017) and Focal Tversky loss (Abraham & Khan 2019)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative, check_positive
from ..registry import register_loss
from ._overlap import maybe_batch, overlap_stats, reduce_classes

__all__ = ["tversky_loss", "focal_tversky_loss", "TverskyLoss", "FocalTverskyLoss"]


def _tversky_index(input, target, *, mode, from_logits, alpha, beta, smooth, ignore_index, batch):
    st = maybe_batch(overlap_stats(input, target, mode=mode, from_logits=from_logits,
                                   ignore_index=ignore_index), batch)
    fp = st.sp - st.tp
    fn = st.sy - st.tp
    denom = st.tp + alpha * fp + beta * fn + smooth
    return (st.tp + smooth) / denom.clamp_min(1e-12)


def _check_ab(alpha, beta):
    alpha = check_nonnegative(alpha, "alpha")
    beta = check_nonnegative(beta, "beta")
    return alpha, beta


@float32_compute
def tversky_loss(input: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 mode: str = "multiclass", from_logits: bool = True, smooth: float = 1.0,
                 class_weight: Optional[Tensor] = None, ignore_index: Optional[int] = -100,
                 include_background: bool = True, batch: bool = False, sample_weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> Tensor:
    r"""Tversky loss: ``1 - TI`` per class, averaged over classes.

    .. math::
        TI_{n,c} = \frac{TP + s}{TP + \alpha FP + \beta FN + s},\quad
        TP = \sum_l p y,\ FP = \sum_l p (1 - y),\ FN = \sum_l (1 - p) y

    ``alpha`` weighs false positives and ``beta`` false negatives (Salehi et al.'s convention);
    ``beta > alpha`` favours recall, which helps small structures. ``alpha = beta = 0.5`` is the
    Dice loss with smoothing ``2 s``; ``alpha = beta = 1`` is the soft Jaccard (IoU) loss.

    Defaults: ``alpha = 0.3, beta = 0.7`` (Salehi et al.'s best setting, also the constants in
    Abraham & Khan's official code, where ``alpha = 0.7`` multiplies FN) and ``smooth = 1`` as in
    that code. Arguments shared with :func:`dice_loss` (``mode``, ``from_logits``,
    ``class_weight``, ``ignore_index``, ``include_background``, ``batch``, ``sample_weight``,
    ``reduction``) mean the same there.

    Reference: Salehi et al., "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", MLMI 2017 (arXiv 1706.05721).

    Example:
        >>> import torch
        >>> from tailwise.functional import tversky_loss
        >>> loss = tversky_loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """
    alpha, beta = _check_ab(alpha, beta)
    smooth = check_nonnegative(smooth, "smooth")
    ti = _tversky_index(input, target, mode=mode, from_logits=from_logits, alpha=alpha, beta=beta,
                        smooth=smooth, ignore_index=ignore_index, batch=batch)
    per_image = reduce_classes(1.0 - ti, class_weight, include_background, batch)
    return reduce_loss(per_image, reduction, sample_weight)


@float32_compute
def focal_tversky_loss(input: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 0.75, mode: str = "multiclass", from_logits: bool = True,
                       smooth: float = 1.0, class_weight: Optional[Tensor] = None,
                       ignore_index: Optional[int] = -100, include_background: bool = True,
                       batch: bool = False, sample_weight: Optional[Tensor] = None, reduction: str = "mean",
                       eps: float = 1e-7) -> Tensor:
    r"""Focal Tversky loss: ``(1 - TI)^gamma`` per class, averaged over classes.

    ``TI`` is the Tversky index of :func:`tversky_loss`. The exponent is ``gamma`` itself,
    default ``0.75``: Abraham & Khan's paper writes :math:`(1 - TI)^{1/\gamma}` with
    :math:`\gamma = 4/3`, and their official code (github nabsabraham/focal-tversky-unet,
    ``losses.py``) implements it as ``K.pow(1 - TI, 0.75)``; both are the same exponent 0.75.
    With an exponent below 1 the per-class gradient factor ``gamma (1 - TI)^(gamma - 1)`` grows as
    ``TI -> 1``, so classes that are nearly right keep a strong signal,
    while an exponent above 1 would damp them; use ``gamma > 1`` for the opposite emphasis.

    Because ``d/dx x^0.75`` is infinite at 0, ``1 - TI`` is clamped below at ``eps`` (default
    ``1e-7``), so a perfectly segmented class contributes ``eps^gamma`` and zero gradient
    instead of NaN. The official code has no clamp.

    Defaults follow the official code: ``alpha = 0.3`` (FP), ``beta = 0.7`` (FN), ``smooth = 1``.
    The official code pools the whole batch into one index (``batch=True`` here); tailwise's
    default is per image, like the other overlap losses.

    Reference: Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net
    for Lesion Segmentation", ISBI 2019 (arXiv 1810.07842).

    Example:
        >>> import torch
        >>> from tailwise.functional import focal_tversky_loss
        >>> loss = focal_tversky_loss(torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8)), mode="binary")
    """
    alpha, beta = _check_ab(alpha, beta)
    gamma = check_positive(gamma, "gamma")
    smooth = check_nonnegative(smooth, "smooth")
    eps = check_positive(eps, "eps")
    ti = _tversky_index(input, target, mode=mode, from_logits=from_logits, alpha=alpha, beta=beta,
                        smooth=smooth, ignore_index=ignore_index, batch=batch)
    per_class = torch.pow((1.0 - ti).clamp_min(eps), gamma)
    per_image = reduce_classes(per_class, class_weight, include_background, batch)
    return reduce_loss(per_image, reduction, sample_weight)


class _TverskyBase(Loss):
    def __init__(self, *, alpha, beta, mode, from_logits, smooth, class_weight, ignore_index,
                 include_background, batch, reduction):
        super().__init__(reduction)
        self.alpha, self.beta = _check_ab(alpha, beta)
        self.smooth = check_nonnegative(smooth, "smooth")
        self.mode, self.from_logits = mode, from_logits
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def _kwargs(self):
        return dict(alpha=self.alpha, beta=self.beta, mode=self.mode, from_logits=self.from_logits,
                    smooth=self.smooth, class_weight=self.class_weight, ignore_index=self.ignore_index,
                    include_background=self.include_background, batch=self.batch, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, mode={self.mode!r}, batch={self.batch}, " + super().extra_repr()


@register_loss("tversky")
class TverskyLoss(_TverskyBase):
    """Tversky loss module; see :func:`tailwise.functional.tversky_loss`.

    Example:
        >>> import torch, tailwise
        >>> loss = tailwise.TverskyLoss(alpha=0.3, beta=0.7)(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, mode: str = "multiclass",
                 from_logits: bool = True, smooth: float = 1.0, class_weight: Optional[Tensor] = None,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(alpha=alpha, beta=beta, mode=mode, from_logits=from_logits, smooth=smooth,
                         class_weight=class_weight, ignore_index=ignore_index,
                         include_background=include_background, batch=batch, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return tversky_loss(input, target, sample_weight=sample_weight, **self._kwargs())


@register_loss("focal_tversky")
class FocalTverskyLoss(_TverskyBase):
    """Focal Tversky loss module; see :func:`tailwise.functional.focal_tversky_loss`.

    Example:
        >>> import torch, tailwise
        >>> loss = tailwise.FocalTverskyLoss()(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75,
                 mode: str = "multiclass", from_logits: bool = True, smooth: float = 1.0,
                 class_weight: Optional[Tensor] = None, ignore_index: Optional[int] = -100,
                 include_background: bool = True, batch: bool = False, reduction: str = "mean",
                 eps: float = 1e-7) -> None:
        super().__init__(alpha=alpha, beta=beta, mode=mode, from_logits=from_logits, smooth=smooth,
                         class_weight=class_weight, ignore_index=ignore_index,
                         include_background=include_background, batch=batch, reduction=reduction)
        self.gamma = check_positive(gamma, "gamma")
        self.eps = check_positive(eps, "eps")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return focal_tversky_loss(input, target, gamma=self.gamma, eps=self.eps, sample_weight=sample_weight, **self._kwargs())

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()
