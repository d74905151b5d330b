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
from ._overlap import (check_overlap_options, maybe_batch, overlap_stats, pool_classes, reduce_classes,
                       resolve_smooth)

__all__ = ["tversky_loss", "focal_tversky_loss", "TverskyLoss", "FocalTverskyLoss"]


def _tversky_index(input, target, *, mode, from_logits, alpha, beta, smooth_nr, smooth_dr, ignore_index, batch,
                   soft_label, average, class_weight, include_background):
    """Tversky indices (N, C) (or (C,) when ``batch``; one pooled class with ``average="micro"``),
    and the ``class_weight`` / ``include_background`` left for the class average."""
    st = maybe_batch(overlap_stats(input, target, mode=mode, from_logits=from_logits,
                                   ignore_index=ignore_index, soft_label=soft_label), batch)
    if average == "micro":
        st = pool_classes(st, class_weight, include_background)
        class_weight, include_background = None, True
    fp = st.sp - st.tp
    fn = st.sy - st.tp
    denom = st.tp + alpha * fp + beta * fn + smooth_dr
    return (st.tp + smooth_nr) / denom.clamp_min(1e-12), class_weight, include_background


def _check_ab(alpha, beta):
    alpha = check_nonnegative(alpha, "alpha")
    beta = check_nonnegative(beta, "beta")
    return alpha, beta


@float32_compute
def tversky_loss(input: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 mode: str = "multiclass", from_logits: bool = True, smooth: float = 1.0,
                 smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None, soft_label: bool = False,
                 average: str = "macro", class_weight: Optional[Tensor] = None, normalize_class_weight: bool = True,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Tversky loss: ``1 - TI`` per class, averaged over classes.

    .. math::
        TI_{n,c} = \frac{TP + s_{nr}}{TP + \alpha FP + \beta FN + s_{dr}},\quad
        TP = \sum_l p y,\ FP = \sum_l p (1 - y),\ FN = \sum_l (1 - p) y

    ``smooth`` sets both :math:`s_{nr}` and :math:`s_{dr}`; ``smooth_nr`` / ``smooth_dr`` set
    one each (``None`` takes ``smooth``). ``soft_label=True`` uses MONAI's semimetric form
    :math:`TP = \sum_l (p + y - |p - y|)/2`, :math:`FP = \sum_l p - TP`,
    :math:`FN = \sum_l y - TP` (the same as above for hard labels). ``average="micro"`` pools
    the classes' (class-weighted) statistics into one index, as :func:`dice_loss` does;
    ``normalize_class_weight=False`` is MONAI's plain mean of ``w_c (1 - TI_c)``.

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
        >>> probs = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (1, 2, 3), exact one-hot
        >>> loss = tversky_loss(probs, torch.tensor([[0, 0, 1]]), from_logits=False, include_background=False,
        ...                     smooth_nr=0.0, smooth_dr=1e-3)  # 1 - 1 / (1 + 1e-3)
        >>> round(loss.item(), 6)
        0.000999
    """
    alpha, beta = _check_ab(alpha, beta)
    s_nr, s_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
    check_overlap_options(soft_label, average, normalize_class_weight)
    ti, class_weight, include_background = _tversky_index(
        input, target, mode=mode, from_logits=from_logits, alpha=alpha, beta=beta, smooth_nr=s_nr, smooth_dr=s_dr,
        ignore_index=ignore_index, batch=batch, soft_label=soft_label, average=average, class_weight=class_weight,
        include_background=include_background)
    per_image = reduce_classes(1.0 - ti, class_weight, include_background, batch, normalize_class_weight)
    return reduce_loss(per_image, reduction, sample_weight)


@float32_compute
def focal_tversky_loss(input: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 0.75, mode: str = "multiclass", from_logits: bool = True,
                       smooth: float = 1.0, smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None,
                       soft_label: bool = False, average: str = "macro", class_weight: Optional[Tensor] = None,
                       normalize_class_weight: bool = True, ignore_index: Optional[int] = -100,
                       include_background: bool = True, batch: bool = False, sample_weight: Optional[Tensor] = None,
                       reduction: str = "mean", eps: float = 1e-7) -> Tensor:
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
    default is per image, like the other overlap losses. ``smooth_nr``/``smooth_dr``,
    ``soft_label``, ``average`` and ``normalize_class_weight`` act on ``TI`` and the class
    average exactly as in :func:`tversky_loss` (the weight multiplies :math:`(1 - TI)^\gamma`).

    Reference: Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net
    for Lesion Segmentation", ISBI 2019 (arXiv 1810.07842).

    Example:
        >>> import torch
        >>> from tailwise.functional import focal_tversky_loss
        >>> loss = focal_tversky_loss(torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8)), mode="binary")
    """
    alpha, beta = _check_ab(alpha, beta)
    gamma = check_positive(gamma, "gamma")
    s_nr, s_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
    eps = check_positive(eps, "eps")
    check_overlap_options(soft_label, average, normalize_class_weight)
    ti, class_weight, include_background = _tversky_index(
        input, target, mode=mode, from_logits=from_logits, alpha=alpha, beta=beta, smooth_nr=s_nr, smooth_dr=s_dr,
        ignore_index=ignore_index, batch=batch, soft_label=soft_label, average=average, class_weight=class_weight,
        include_background=include_background)
    per_class = torch.pow((1.0 - ti).clamp_min(eps), gamma)
    per_image = reduce_classes(per_class, class_weight, include_background, batch, normalize_class_weight)
    return reduce_loss(per_image, reduction, sample_weight)


class _TverskyBase(Loss):
    def __init__(self, *, alpha, beta, mode, from_logits, smooth, smooth_nr, smooth_dr, soft_label, average,
                 class_weight, normalize_class_weight, ignore_index, include_background, batch, reduction):
        super().__init__(reduction)
        self.alpha, self.beta = _check_ab(alpha, beta)
        self.smooth = check_nonnegative(smooth, "smooth")
        self.smooth_nr, self.smooth_dr = resolve_smooth(smooth, smooth_nr, smooth_dr)
        check_overlap_options(soft_label, average, normalize_class_weight)
        self.soft_label, self.average, self.normalize_class_weight = soft_label, average, normalize_class_weight
        self.mode, self.from_logits = mode, from_logits
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach().clone())

    def _kwargs(self):
        return dict(alpha=self.alpha, beta=self.beta, mode=self.mode, from_logits=self.from_logits,
                    smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr, soft_label=self.soft_label,
                    average=self.average, class_weight=self.class_weight,
                    normalize_class_weight=self.normalize_class_weight, ignore_index=self.ignore_index,
                    include_background=self.include_background, batch=self.batch, reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, mode={self.mode!r}, smooth_nr={self.smooth_nr}, "
                f"smooth_dr={self.smooth_dr}, soft_label={self.soft_label}, average={self.average!r}, "
                f"batch={self.batch}, " + super().extra_repr())


@register_loss("tversky")
class TverskyLoss(_TverskyBase):
    """Tversky loss module; see :func:`tailwise.functional.tversky_loss`.

    Example:
        >>> import torch, tailwise
        >>> loss = tailwise.TverskyLoss(alpha=0.3, beta=0.7)(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, mode: str = "multiclass",
                 from_logits: bool = True, smooth: float = 1.0, smooth_nr: Optional[float] = None,
                 smooth_dr: Optional[float] = None, soft_label: bool = False, average: str = "macro",
                 class_weight: Optional[Tensor] = None, normalize_class_weight: bool = True,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(alpha=alpha, beta=beta, mode=mode, from_logits=from_logits, smooth=smooth,
                         smooth_nr=smooth_nr, smooth_dr=smooth_dr, soft_label=soft_label, average=average,
                         class_weight=class_weight, normalize_class_weight=normalize_class_weight,
                         ignore_index=ignore_index, include_background=include_background, batch=batch,
                         reduction=reduction)

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
                 smooth_nr: Optional[float] = None, smooth_dr: Optional[float] = None, soft_label: bool = False,
                 average: str = "macro", class_weight: Optional[Tensor] = None, normalize_class_weight: bool = True,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean", eps: float = 1e-7) -> None:
        super().__init__(alpha=alpha, beta=beta, mode=mode, from_logits=from_logits, smooth=smooth,
                         smooth_nr=smooth_nr, smooth_dr=smooth_dr, soft_label=soft_label, average=average,
                         class_weight=class_weight, normalize_class_weight=normalize_class_weight,
                         ignore_index=ignore_index, include_background=include_background, batch=batch,
                         reduction=reduction)
        self.gamma = check_positive(gamma, "gamma")
        self.eps = check_positive(eps, "eps")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return focal_tversky_loss(input, target, gamma=self.gamma, eps=self.eps, sample_weight=sample_weight, **self._kwargs())

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()
