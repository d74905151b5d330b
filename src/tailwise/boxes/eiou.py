"""EIoU and Focal-EIoU losses (Zhang et al., Neurocomputing 2022, arXiv 2101.08158)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative, check_reduction, check_weight
from ..registry import register_loss
from ._fused import box_loss
from ._geometry import DEFAULT_EPS
from ._module import BoxLoss, check_eps

__all__ = ["eiou_loss", "focal_eiou_loss", "EIoULoss", "FocalEIoULoss"]


@float32_compute
def eiou_loss(input: Tensor, target: Tensor, *, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
              reduction: str = "mean", sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""Efficient-IoU loss between aligned boxes.

    .. math::
        L = 1 - \mathrm{IoU} + \frac{\rho^2(b, b^{gt})}{c^2} + \frac{(w - w^{gt})^2}{c_w^2 + \epsilon}
            + \frac{(h - h^{gt})^2}{c_h^2 + \epsilon}

    DIoU plus separate width and height penalties normalised by the enclosing box's width and
    height (arXiv 2101.08158, Eq. 8); eps default ``1e-7``, in the union, :math:`c^2`,
    :math:`c_w^2` and :math:`c_h^2`.

    Example:
        >>> import torch
        >>> eiou_loss(torch.tensor([[0., 0., 2., 1.]]), torch.tensor([[0., 0., 1., 1.]]))
        tensor(0.8000)
    """
    check_reduction(reduction)
    eps = check_eps(eps)
    return reduce_loss(box_loss(input, target, box_format, eps, validate, "eiou"), reduction, sample_weight)


@float32_compute
def focal_eiou_loss(input: Tensor, target: Tensor, *, gamma: float = 0.5, box_format: str = "xyxy",
                    eps: float = DEFAULT_EPS, reduction: str = "mean", sample_weight: Optional[Tensor] = None,
                    validate: bool = True) -> Tensor:
    r"""Focal-EIoU loss: EIoU re-weighted by :math:`\mathrm{IoU}^\gamma`.

    .. math::
        L_i = \mathrm{IoU}_i^{\gamma} \, L_{\mathrm{EIoU}, i}, \qquad
        \text{mean} = \frac{\sum_i w_i \mathrm{IoU}_i^{\gamma} L_{\mathrm{EIoU}, i}}
                           {\sum_i w_i \mathrm{IoU}_i^{\gamma}}

    ``gamma = 0.5`` (the paper's choice). The weight :math:`\mathrm{IoU}^\gamma` is detached: it
    re-weights samples (high-IoU, "high quality" boxes count more) without adding its own
    gradient, and ``reduction="mean"`` normalises by the sum of the weights in the batch (the
    paper's batch normalisation, Sec. 3.3), so the loss scale does not shrink with low IoU.
    ``"sum"`` / ``"none"`` return the weighted sum / the weighted per-box values.

    Note: the mean is batch-coupled (the normaliser is a batch statistic); under DDP each rank
    normalises by its own shard.

    Example:
        >>> import torch
        >>> focal_eiou_loss(torch.tensor([[0., 0., 2., 1.]]), torch.tensor([[0., 0., 1., 1.]]))
        tensor(0.8000)
    """
    check_reduction(reduction)
    gamma = check_nonnegative(gamma, "gamma")
    eps = check_eps(eps)
    loss, iou = box_loss(input, target, box_format, eps, validate, "eiou", want_iou=True)
    focal = iou.detach().clamp_min(0).pow(gamma)
    if reduction != "mean":
        return reduce_loss(focal * loss, reduction, sample_weight)
    sample_weight = check_weight(sample_weight, loss.shape, "sample_weight")
    w = focal if sample_weight is None else focal * sample_weight.to(focal.dtype)
    total = (w * loss).sum()
    if loss.numel() == 0:
        return total
    return total / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


@register_loss("eiou")
class EIoULoss(BoxLoss):
    """Efficient-IoU loss: DIoU plus width and height penalties; see :func:`eiou_loss`."""

    _fn = staticmethod(eiou_loss)


@register_loss("focal_eiou")
class FocalEIoULoss(BoxLoss):
    """Focal-EIoU loss ``IoU^gamma * L_EIoU`` normalised by the sum of weights; see :func:`focal_eiou_loss`."""

    _fn = staticmethod(focal_eiou_loss)

    def __init__(self, gamma: float = 0.5, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
                 reduction: str = "mean", validate: bool = True) -> None:
        super().__init__(box_format, eps, reduction, validate)
        self.gamma = check_nonnegative(gamma, "gamma")

    def _kwargs(self) -> dict:
        return {"gamma": self.gamma}
