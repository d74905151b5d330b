"""BYOL regression loss ``2 - 2 cos(p, z)``."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_same_shape
from ..registry import register_loss

__all__ = ["byol_loss", "BYOLLoss"]


@float32_compute
def byol_loss(prediction: Tensor, target: Tensor, *, sample_weight: Optional[Tensor] = None,
              reduction: str = "mean", eps: float = 1e-12) -> Tensor:
    r"""BYOL loss :math:`\|\bar p - \bar z\|^2 = 2 - 2\cos(p, z)` (Grill et al. NeurIPS 2020).

    Both inputs are L2-normalised inside (``F.normalize`` with ``eps``), as ``regression_loss`` in
    the official BYOL code, so unnormalised inputs are fine here. The stop-gradient on the target
    branch is the caller's job (pass ``target.detach()`` / the target network's output); the
    symmetric BYOL objective is ``byol_loss(p1, z2) + byol_loss(p2, z1)``.

    Args:
        prediction: online predictions ``(N, D)``. target: target projections ``(N, D)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Example:
        >>> import torch
        >>> from tailwise.functional import byol_loss
        >>> byol_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item()
        2.0
    """
    check_floating(prediction, "prediction", ndim=2)
    check_floating(target, "target", ndim=2)
    check_same_shape(prediction, target, "prediction", "target")
    p = F.normalize(prediction, dim=-1, eps=eps)
    z = F.normalize(target.to(p.dtype), dim=-1, eps=eps)
    loss = 2.0 - 2.0 * (p * z).sum(-1)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("byol")
class BYOLLoss(Loss):
    """BYOL ``2 - 2 cos(p, z)``; see :func:`tailwise.functional.byol_loss`."""

    def forward(self, prediction: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return byol_loss(prediction, target, sample_weight=sample_weight, reduction=self.reduction)
