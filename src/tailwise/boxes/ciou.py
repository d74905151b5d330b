"""Complete-IoU loss (Zheng et al., AAAI 2020, arXiv 1911.08287)."""

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

__all__ = ["ciou_loss", "CIoULoss"]


@float32_compute
def ciou_loss(input: Tensor, target: Tensor, *, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
              reduction: str = "mean", sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""Complete-IoU loss between aligned boxes.

    .. math::
        L = 1 - \mathrm{IoU} + \frac{\rho^2}{c^2} + \alpha v, \quad
        v = \frac{4}{\pi^2}\Big(\arctan\frac{w^{gt}}{h^{gt}} - \arctan\frac{w}{h}\Big)^2, \quad
        \alpha = \frac{v}{(1 - \mathrm{IoU}) + v + \epsilon}

    :math:`\alpha` carries no gradient, as in the official code (github.com/Zzh-tju/DIoU,
    computed under ``torch.no_grad()``). ``arctan(w/h)`` is evaluated as ``atan2(w, h)`` so a
    zero-height box is finite. Differences from the official PyTorch code, on purpose:

    * the official code replaces :math:`v`'s gradient by one with the factor
      :math:`1/(w^2+h^2)` dropped (paper, remark after Eq. 12) and its returned value is then
      not the CIoU formula; tailwise returns the formula's value and its exact gradient
      (as torchvision and mmdetection do);
    * eps (default ``1e-7``) is also added to :math:`\alpha`'s denominator so identical boxes
      (``v = 0``, ``IoU = 1``) give :math:`\alpha = 0` rather than ``0/0``.

    Fused kernel as :func:`giou_loss`.

    Example:
        >>> import torch
        >>> round(ciou_loss(torch.tensor([[0., 0., 2., 1.]]), torch.tensor([[0., 0., 1., 1.]])).item(), 4)
        0.5532
    """
    check_reduction(reduction)
    eps = check_eps(eps)
    return reduce_loss(checked_fused_box_loss(input, target, box_format, eps, validate, "ciou"),
                       reduction, sample_weight)


@register_loss("ciou")
class CIoULoss(BoxLoss):
    """Complete-IoU loss ``1 - IoU + rho^2 / c^2 + alpha v`` (alpha without gradient); see :func:`ciou_loss`."""

    _fn = staticmethod(ciou_loss)
