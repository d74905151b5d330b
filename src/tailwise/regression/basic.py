"""Plain element-wise regression losses (L1, MSE, smooth L1) with tailwise's reduction/weight rules."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_positive, check_reduction
from ..registry import register_loss
from ._checks import check_pair

__all__ = ["l1_loss", "mse_loss", "smooth_l1_loss", "L1Loss", "MSELoss", "SmoothL1Loss"]


@float32_compute
def l1_loss(input: Tensor, target: Tensor, *, sample_weight: Optional[Tensor] = None,
            reduction: str = "mean") -> Tensor:
    r"""Absolute error :math:`\ell = |\hat y - y|`, element-wise.

    Args:
        input: predictions of any shape.
        target: labels, same shape, finite.
        sample_weight: optional weights broadcastable to ``input`` (e.g. per-sample ``(N, 1)``).
        reduction: ``"mean"`` (over elements; an empty batch gives 0 with a grad_fn), ``"sum"``
            or ``"none"`` (same shape as ``input``).

    Example:
        >>> import torch
        >>> from tailwise.functional import l1_loss
        >>> l1_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
        tensor(1.)
    """
    check_pair(input, target, pred_name="input")
    if sample_weight is None and reduction != "none" and input.numel():
        return F.l1_loss(input, target, reduction=check_reduction(reduction))  # one fused kernel
    return reduce_loss(F.l1_loss(input, target, reduction="none"), reduction, sample_weight)


@float32_compute
def mse_loss(input: Tensor, target: Tensor, *, sample_weight: Optional[Tensor] = None,
             reduction: str = "mean") -> Tensor:
    r"""Squared error :math:`\ell = (\hat y - y)^2`, element-wise (``torch.nn.functional.mse_loss``
    plus ``sample_weight`` and tailwise's empty-batch rule).

    Example:
        >>> import torch
        >>> from tailwise.functional import mse_loss
        >>> mse_loss(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 2.0]))
        tensor(2.5000)
    """
    check_pair(input, target, pred_name="input")
    if sample_weight is None and reduction != "none" and input.numel():
        return F.mse_loss(input, target, reduction=check_reduction(reduction))  # one fused kernel
    return reduce_loss(F.mse_loss(input, target, reduction="none"), reduction, sample_weight)


@float32_compute
def smooth_l1_loss(input: Tensor, target: Tensor, *, beta: float = 1.0, sample_weight: Optional[Tensor] = None,
                   reduction: str = "mean") -> Tensor:
    r"""Smooth L1 (Huber-like) loss, element-wise, as ``torch.nn.functional.smooth_l1_loss``:

    .. math::
        \ell = \begin{cases} 0.5\, d^2 / \beta & |d| < \beta \\ |d| - 0.5\,\beta & \text{otherwise}
        \end{cases}, \quad d = \hat y - y.

    ``beta`` must be > 0 (use :func:`l1_loss` for the ``beta = 0`` limit). Default ``beta=1.0``
    (Fast R-CNN / torch).

    Example:
        >>> import torch
        >>> from tailwise.functional import smooth_l1_loss
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(1.3125)
    """
    check_pair(input, target, pred_name="input")
    beta = check_positive(beta, "beta")
    # torch's fused kernel (one pass forward and backward) for the element-wise part
    if sample_weight is None and reduction != "none" and input.numel():
        return F.smooth_l1_loss(input, target, beta=beta, reduction=check_reduction(reduction))
    return reduce_loss(F.smooth_l1_loss(input, target, beta=beta, reduction="none"), reduction, sample_weight)


@register_loss("l1")
class L1Loss(Loss):
    """Mean absolute error; see :func:`tailwise.functional.l1_loss`."""

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return l1_loss(input, target, sample_weight=sample_weight, reduction=self.reduction)


@register_loss("mse")
class MSELoss(Loss):
    """Mean squared error; see :func:`tailwise.functional.mse_loss`."""

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return mse_loss(input, target, sample_weight=sample_weight, reduction=self.reduction)


@register_loss("smooth_l1")
class SmoothL1Loss(Loss):
    """Smooth L1 (Huber-like) loss; see :func:`tailwise.functional.smooth_l1_loss`."""

    def __init__(self, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.beta = check_positive(beta, "beta")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return smooth_l1_loss(input, target, beta=self.beta, sample_weight=sample_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"
