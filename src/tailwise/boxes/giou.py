"""Generalized IoU loss (Rezatofighi et al., CVPR 2019, arXiv 1902.09630)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_reduction
from ..registry import register_loss
from ._fused import checked_fused_box_loss
from ._geometry import DEFAULT_EPS
from ._module import BoxLoss, check_eps

__all__ = ["giou_loss", "GIoULoss"]


@float32_compute
def giou_loss(input: Tensor, target: Tensor, *, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
              reduction: str = "mean", sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""Generalized IoU loss between aligned boxes.

    .. math::
        L = 1 - \mathrm{IoU} + \frac{|C| - |A \cup B|}{|C|}, \qquad L \in [0, 2]

    with :math:`C` the smallest box enclosing both, :math:`|A \cup B|` including ``eps`` and
    :math:`|C| = c_w c_h + \epsilon` (torchvision's ``generalized_box_iou_loss`` and the GIoU
    authors' code place eps the same way). Unlike IoU it has a gradient when boxes do not overlap.

    Runs through the fused kernel (hand-derived backward, compiled for large batches; see
    :func:`tailwise.boxes.set_box_backend`).

    Args:
        input, target: ``(..., 4)`` boxes in ``box_format`` (``"xyxy"`` default).
        eps: default ``1e-7``. reduction / sample_weight / validate: as every tailwise box loss.

    Example:
        >>> import torch
        >>> giou_loss(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]]))
        tensor(1.3333)
    """
    check_reduction(reduction)
    eps = check_eps(eps)
    return reduce_loss(checked_fused_box_loss(input, target, box_format, eps, validate, "giou"),
                       reduction, sample_weight)


@register_loss("giou")
class GIoULoss(BoxLoss):
    """Generalized IoU loss ``1 - IoU + |C \\ (A u B)| / |C|``; see :func:`giou_loss`."""

    _fn = staticmethod(giou_loss)
