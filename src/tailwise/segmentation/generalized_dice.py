"""Generalized Dice loss (Sudre et al., DLMIA 2017) with MONAI's weighting and smoothing."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_choice, check_nonnegative
from ..registry import register_loss
from ._overlap import _check_bool, maybe_batch, overlap_stats

__all__ = ["generalized_dice_loss", "GeneralizedDiceLoss"]

W_TYPES = ("square", "simple", "uniform")


def _class_weights(sy: Tensor, w_type: str, batch: bool) -> Tensor:
    """w = 1/|g|^2, 1/|g| or 1 per (image, class); an empty class's infinite weight becomes the
    largest finite weight of its image (of the whole batch when ``batch``), as MONAI does."""
    sy = sy.detach()
    if w_type == "uniform":
        return torch.ones_like(sy)
    w = 1.0 / (sy * sy if w_type == "square" else sy)
    inf = torch.isinf(w)
    finite = w.masked_fill(inf, 0.0)  # (one op, not zeros_like + where: the same values)
    top = finite.amax() if batch else finite.amax(dim=-1, keepdim=True)
    return torch.where(inf, top.expand_as(w) if not batch else top, finite)


@float32_compute
def generalized_dice_loss(input: Tensor, target: Tensor, *, mode: str = "multiclass", from_logits: bool = True,
                          w_type: str = "square", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                          soft_label: bool = False, ignore_index: Optional[int] = -100,
                          include_background: bool = True, batch: bool = False,
                          sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Generalized Dice loss: one Dice ratio over classes with per-class weights from the target.

    For each image :math:`b` (or the pooled batch when ``batch=True``):

    .. math::
        L_b = 1 - \frac{2 \sum_c w_{bc} \sum_s p_{bcs} g_{bcs} + s_{nr}}
                       {\sum_c w_{bc} \sum_s (p_{bcs} + g_{bcs}) + s_{dr}},
        \qquad w_{bc} = 1 / \big(\textstyle\sum_s g_{bcs}\big)^2 \ (\text{"square"})

    (``"simple"``: :math:`1/\sum_s g`; ``"uniform"``: 1). A class absent from an image would
    get an infinite weight; it gets the largest finite weight of that image instead (of the
    batch with ``batch=True``), as MONAI's ``GeneralizedDiceLoss``. Weights come from the
    target and carry no gradient. ``soft_label=True`` takes MONAI's semimetric intersection
    :math:`\sum_s (p + g - |p - g|)/2` in place of :math:`\sum_s p g` (equal for hard labels; see
    :func:`dice_loss`).

    Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly
    unbalanced segmentations", DLMIA 2017 (arXiv 1707.03237). Defaults follow MONAI
    (``w_type="square"``, ``smooth_nr = smooth_dr = 1e-5``, background included, per image),
    except that tailwise takes logits by default (``from_logits=True``: softmax over C, or
    sigmoid in ``multilabel``/``binary``), where MONAI's default takes probabilities: pass
    ``from_logits=False`` for MONAI's default. Inputs and targets as :func:`dice_loss`
    (class indices or one-hot, ``ignore_index``, any spatial rank).

    Args:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-image losses ``(N,)``; with
            ``batch=True`` the loss is one number).
        sample_weight: optional per-image weights ``(N,)`` (per-image mode only).

    Example:
        >>> import torch
        >>> from tailwise.functional import generalized_dice_loss
        >>> probs = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 1.0]]]).permute(1, 0, 2)  # (1, 2, 3)
        >>> target = torch.tensor([[0, 1, 1]])
        >>> generalized_dice_loss(probs, target, from_logits=False)  # perfect prediction
        tensor(0.)
    """
    check_choice(w_type, "w_type", W_TYPES)
    smooth_nr = check_nonnegative(smooth_nr, "smooth_nr")
    smooth_dr = check_nonnegative(smooth_dr, "smooth_dr")
    _check_bool(soft_label, "soft_label")
    st = maybe_batch(overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                                   soft_label=soft_label), batch)
    tp, sp, sy = st.tp, st.sp, st.sy
    if not include_background:
        if tp.shape[-1] < 2:
            raise ValueError("include_background=False needs at least 2 classes (channel 0 is dropped)")
        tp, sp, sy = tp[..., 1:], sp[..., 1:], sy[..., 1:]
    w = _class_weights(sy, w_type, batch)
    numer = 2.0 * (w * tp).sum(-1) + smooth_nr
    denom = (w * (sp + sy)).sum(-1) + smooth_dr
    loss = 1.0 - numer / denom.clamp_min(1e-30)
    if batch:
        return loss if reduction != "none" else loss.reshape(1)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("generalized_dice")
class GeneralizedDiceLoss(Loss):
    """Generalized Dice loss module; see :func:`tailwise.functional.generalized_dice_loss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.GeneralizedDiceLoss(w_type="simple")
        >>> loss = crit(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    """

    def __init__(self, *, mode: str = "multiclass", from_logits: bool = True, w_type: str = "square",
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, soft_label: bool = False,
                 ignore_index: Optional[int] = -100, include_background: bool = True, batch: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        check_choice(w_type, "w_type", W_TYPES)
        self.mode, self.from_logits, self.w_type = mode, from_logits, w_type
        self.smooth_nr = check_nonnegative(smooth_nr, "smooth_nr")
        self.smooth_dr = check_nonnegative(smooth_dr, "smooth_dr")
        _check_bool(soft_label, "soft_label")
        self.soft_label = soft_label
        self.ignore_index, self.include_background, self.batch = ignore_index, include_background, batch

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return generalized_dice_loss(input, target, mode=self.mode, from_logits=self.from_logits,
                                     w_type=self.w_type, smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                                     soft_label=self.soft_label,
                                     ignore_index=self.ignore_index, include_background=self.include_background,
                                     batch=self.batch, sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"w_type={self.w_type!r}, batch={self.batch}, {super().extra_repr()}"
