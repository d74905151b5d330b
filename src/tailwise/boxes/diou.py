"""Distance-IoU loss (Zheng et al., AAAI 2020, arXiv 1911.08287)."""

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

__all__ = ["diou_loss", "DIoULoss"]


@float32_compute
def diou_loss(input: Tensor, target: Tensor, *, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
              reduction: str = "mean", sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""Distance-IoU loss between aligned boxes.

    .. math::
        L = 1 - \mathrm{IoU} + \frac{\rho^2(b, b^{gt})}{c^2}

    :math:`\rho` the distance between box centres, :math:`c^2 = c_w^2 + c_h^2 + \epsilon` the
    squared diagonal of the smallest enclosing box. eps (default ``1e-7``) is added to the union
    and to :math:`c^2` as in the official code (github.com/Zzh-tju/DIoU, ``1e-7`` in both places).
    Fused kernel as :func:`giou_loss`.

    Example:
        >>> import torch
        >>> diou_loss(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]]))
        tensor(1.4000)
    """
    check_reduction(reduction)
    eps = check_eps(eps)
    return reduce_loss(checked_fused_box_loss(input, target, box_format, eps, validate, "diou"),
                       reduction, sample_weight)


@register_loss("diou")
class DIoULoss(BoxLoss):
    """Distance-IoU loss ``1 - IoU + rho^2 / c^2``; see :func:`diou_loss`."""

    _fn = staticmethod(diou_loss)
