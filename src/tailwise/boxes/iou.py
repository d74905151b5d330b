"""IoU loss: linear ``1 - IoU`` or UnitBox's ``-ln IoU``."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_choice, check_reduction
from ..registry import register_loss
from ._fused import box_loss
from ._geometry import DEFAULT_EPS
from ._module import BoxLoss, check_eps

__all__ = ["iou_loss", "IoULoss"]

_MODES = ("linear", "log")


@float32_compute
def iou_loss(input: Tensor, target: Tensor, *, mode: str = "linear", box_format: str = "xyxy",
             eps: float = DEFAULT_EPS, reduction: str = "mean", sample_weight: Optional[Tensor] = None,
             validate: bool = True) -> Tensor:
    r"""IoU loss between aligned boxes.

    .. math::
        \mathrm{IoU} = \frac{|A \cap B|}{|A \cup B| + \epsilon}, \qquad
        L = 1 - \mathrm{IoU} \;(\text{mode="linear"}) \quad\text{or}\quad
        L = -\ln \max(\mathrm{IoU}, \epsilon) \;(\text{mode="log"})

    ``mode="log"`` is UnitBox (Yu et al., ACM MM 2016, arXiv 1608.01471); the clamp at ``eps``
    follows mmdetection's ``iou_loss`` and keeps non-overlapping pairs finite (their gradient is 0:
    plain IoU gives no signal without overlap, which is why GIoU/DIoU exist).

    Args:
        input, target: ``(..., 4)`` boxes in ``box_format`` (``"xyxy"`` default, ``"xywh"``,
            ``"cxcywh"``).
        mode: ``"linear"`` (default) or ``"log"``.
        eps: added to the union (default ``1e-7``, torchvision's value).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``; ``sample_weight`` per-box weights.
        validate: raise ``ValueError`` on non-finite or inverted boxes (default True).

    Example:
        >>> import torch
        >>> iou_loss(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]))
        tensor(0.6667)
    """
    check_choice(mode, "mode", _MODES)
    check_reduction(reduction)
    eps = check_eps(eps)
    loss = box_loss(input, target, box_format, eps, validate, "iou" if mode == "linear" else "iou_log")
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("iou")
class IoULoss(BoxLoss):
    """IoU loss (linear ``1 - IoU`` or UnitBox ``-ln IoU``); see :func:`iou_loss`."""

    _fn = staticmethod(iou_loss)

    def __init__(self, mode: str = "linear", box_format: str = "xyxy", eps: float = DEFAULT_EPS,
                 reduction: str = "mean", validate: bool = True) -> None:
        super().__init__(box_format, eps, reduction, validate)
        check_choice(mode, "mode", _MODES)
        self.mode = mode

    def _kwargs(self) -> dict:
        return {"mode": self.mode}
