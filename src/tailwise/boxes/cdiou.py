"""Control-Distance IoU loss (Chen & Miao, arXiv 2103.11696)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative, check_reduction
from ..registry import register_loss
from ._fused import box_loss
from ._geometry import DEFAULT_EPS
from ._module import BoxLoss, check_eps

__all__ = ["cdiou_loss", "CDIoULoss"]


@float32_compute
def cdiou_loss(input: Tensor, target: Tensor, *, lambda_: float = 1.0, box_format: str = "xyxy",
               eps: float = DEFAULT_EPS, reduction: str = "mean", sample_weight: Optional[Tensor] = None,
               validate: bool = True) -> Tensor:
    r"""Control-Distance IoU loss between aligned boxes.

    .. math::
        \mathrm{diou}_v = \frac{\sum_{k=1}^{4} \lVert v_k - v_k^{gt} \rVert_2}{4\, c}, \qquad
        L = 1 - \mathrm{IoU} + \lambda\, \mathrm{diou}_v

    :math:`v_k` the four corners (top-left, top-right, bottom-right, bottom-left) of the
    prediction and :math:`v_k^{gt}` the matching corners of the target, :math:`c` the diagonal of
    their minimum bounding rectangle (:math:`\sqrt{c_w^2 + c_h^2 + \epsilon}`). Read from the
    paper (Eqs. for CDIoU and CDIoU loss); the authors' repository (Alan-D-Chen/CDIoU-CDIoUloss)
    ships no loss code, so ``lambda_ = 1.0`` is our default, not a published constant.
    A corner distance of exactly 0 has a zero (not NaN) gradient.

    Example:
        >>> import torch
        >>> cdiou_loss(torch.tensor([[0., 0., 2., 1.]]), torch.tensor([[0., 0., 1., 1.]]))
        tensor(0.7236)
    """
    check_reduction(reduction)
    lambda_ = check_nonnegative(lambda_, "lambda_")
    eps = check_eps(eps)
    loss = box_loss(input, target, box_format, eps, validate, "cdiou", lambda_=lambda_)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("cdiou")
class CDIoULoss(BoxLoss):
    """Control-Distance IoU loss ``1 - IoU + lambda * mean corner distance / MBR diagonal``; see :func:`cdiou_loss`."""

    _fn = staticmethod(cdiou_loss)

    def __init__(self, lambda_: float = 1.0, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
                 reduction: str = "mean", validate: bool = True) -> None:
        super().__init__(box_format, eps, reduction, validate)
        self.lambda_ = check_nonnegative(lambda_, "lambda_")

    def _kwargs(self) -> dict:
        return {"lambda_": self.lambda_}
