"""Control-Distance IoU loss (Chen & Miao, arXiv 2103.11696)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_nonnegative, check_reduction
from ..registry import register_loss
from ._geometry import DEFAULT_EPS, check_pair, columns, pair_terms
from ._module import BoxLoss, check_eps

__all__ = ["cdiou_loss", "CDIoULoss"]


def _safe_norm(dx: Tensor, dy: Tensor) -> Tensor:
    """sqrt(dx^2 + dy^2) with a zero (not NaN) gradient at the origin (double-where trick)."""
    d2 = dx * dx + dy * dy
    pos = d2 > 0
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


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
    p, t = check_pair(input, target, box_format, validate)
    a1, b1, a2, b2 = columns(p)
    A1, B1, A2, B2 = columns(t)
    g = pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps)
    dx1, dx2, dy1, dy2 = a1 - A1, a2 - A2, b1 - B1, b2 - B2
    corners = _safe_norm(dx1, dy1) + _safe_norm(dx2, dy1) + _safe_norm(dx2, dy2) + _safe_norm(dx1, dy2)
    loss = 1.0 - g.iou + lambda_ * corners / (4.0 * g.c2.sqrt())
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
