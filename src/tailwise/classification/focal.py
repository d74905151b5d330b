"""Focal loss (Lin et al., ICCV 2017, arXiv 1708.02002): softmax multi-class and sigmoid forms.

Both forms run through a custom ``autograd.Function`` with a hand-derived backward, so the
focal term costs about as much as a plain cross-entropy instead of the 5-10 elementwise
autograd nodes (each saving an ``(N, C)`` tensor) of the textbook formulation.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import _check_number, check_nonnegative, check_same_shape
from ..registry import register_loss
from ._common import check_index_target, check_logits, check_per_class, masked_reduce

__all__ = ["focal_loss", "sigmoid_focal_loss", "FocalLoss", "SigmoidFocalLoss"]


class _SoftmaxFocal(torch.autograd.Function):
    """Per-element ``-alpha_y (1 - p_y)^gamma log p_y`` with ``p = softmax(z, dim=1)``.

    Forward: one ``log_softmax`` pass over ``(N, C, ...)`` (saved for backward, as
    ``F.cross_entropy`` does) and O(N) work on the target column. Backward, with
    ``f(l) = -(1 - e^l)^gamma l`` and ``l = log p_y``:
    ``dL/dz_j = go * alpha_y * f'(l) * (delta_{jy} - p_j)``, ``f'(l) = gamma p_y (1-p_y)^gamma
    l / (1 - p_y) - (1 - p_y)^gamma``; ``l / (1 - p_y) -> -1`` as ``p_y -> 1``, which keeps
    ``gamma < 1`` finite. One ``exp`` pass and one in-place scale over ``(N, C, ...)``.
    """

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, alpha_y: Optional[Tensor], valid: Optional[Tensor], gamma: float):
        logp = F.log_softmax(z, dim=1)
        lp = logp.gather(1, y.unsqueeze(1)).squeeze(1)
        q = -torch.expm1(lp)  # 1 - p_y without cancellation
        qg = q.pow(gamma) if gamma != 0 else torch.ones_like(q)
        loss = -qg * lp
        if alpha_y is not None:
            loss = loss * alpha_y
        if valid is not None:
            loss = torch.where(valid, loss, torch.zeros_like(loss))
        ctx.gamma = gamma
        ctx.save_for_backward(logp, y, lp, q, qg, alpha_y, valid)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, go: Tensor):
        logp, y, lp, q, qg, alpha_y, valid = ctx.saved_tensors
        gamma = ctx.gamma
        if gamma != 0:
            ratio = torch.where(q > 0, lp / torch.where(q > 0, q, torch.ones_like(q)), -torch.ones_like(q))
            dloss_dlp = gamma * (1 - q) * qg * ratio - qg
        else:
            dloss_dlp = -qg
        coef = go * dloss_dlp
        if alpha_y is not None:
            coef = coef * alpha_y
        if valid is not None:
            coef = torch.where(valid, coef, torch.zeros_like(coef))
        coef = coef.unsqueeze(1)
        grad = logp.exp().mul_(-coef)  # -coef * p_j for every class
        grad.scatter_add_(1, y.unsqueeze(1), coef)  # + coef at the target
        return grad, None, None, None, None


def _alpha_vector(alpha, num_classes: int, like: Tensor) -> Optional[Tensor]:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        raise TypeError(f"alpha must be None or a per-class sequence / 1-D tensor of length {num_classes} "
                        f"(for the scalar alpha of the sigmoid form use sigmoid_focal_loss, or pass "
                        f"[{alpha}] * {num_classes}), got the scalar {alpha!r}")
    return check_per_class(alpha, num_classes, "alpha", like=like)


@float32_compute
def focal_loss(input: Tensor, target: Tensor, *, alpha: Optional[Union[Tensor, Sequence[float]]] = None,
               gamma: float = 2.0, ignore_index: int = -100, reduction: str = "mean",
               sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Softmax (multi-class) focal loss :math:`-\alpha_{y} (1 - p_{y})^{\gamma} \log p_{y}`,
    ``p = softmax(input, dim=1)``.

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017 (arXiv 1708.02002), section 3
    and its softmax extension (appendix). ``gamma=2`` as in the paper. ``gamma=0`` and
    ``alpha=None`` is exactly cross-entropy.

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ...)`` (like ``F.cross_entropy``).
        target: int64 class indices ``(N, d1, ...)``.
        alpha: ``None`` or per-class weights ``(C,)`` (e.g. inverse frequency); ``alpha_y`` is
            looked up by the target class.
        gamma: focusing parameter ``>= 0``.
        ignore_index: target value that contributes no loss and no gradient.
        reduction: ``"mean"`` over the non-ignored elements (alpha does not enter the
            denominator), ``"sum"``, or ``"none"`` (shape ``(N, d1, ...)``).
        sample_weight: optional per-element weights broadcastable to ``(N, d1, ...)``.

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 5, requires_grad=True); y = torch.randint(0, 5, (8,))
        >>> tailwise.functional.focal_loss(z, y, alpha=[1, 1, 2, 2, 4], gamma=2).backward()
    """
    check_logits(input)
    gamma = check_nonnegative(gamma, "gamma")
    check_index_target(input, target, ignore_index=ignore_index)
    C = input.shape[1]
    target = target.long()
    valid = target != ignore_index
    has_ignored = not bool(valid.all())
    y = torch.where(valid, target, torch.zeros_like(target)) if has_ignored else target
    a = _alpha_vector(alpha, C, input)
    alpha_y = a[y] if a is not None else None
    loss = _SoftmaxFocal.apply(input, y, alpha_y, valid if has_ignored else None, gamma)
    return masked_reduce(loss, reduction, sample_weight, valid if has_ignored else None)


class _SigmoidFocal(torch.autograd.Function):
    """torchvision's ``sigmoid_focal_loss`` elementwise, saving only ``(x, t)`` for backward.

    With ``m = 1 - p_t = p + t - 2 p t``, ``ce = softplus(x) - t x``:
    ``loss = alpha_t ce m^gamma`` and
    ``dloss/dx = alpha_t [(p - t) m^gamma + gamma ce m^(gamma-1) p (1-p) (1-2t)]``.
    No gradient flows to the target.
    """

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, alpha: float, gamma: float):
        ctx.alpha, ctx.gamma = alpha, gamma
        ctx.save_for_backward(x, t)
        ce = F.softplus(x).addcmul_(t, x, value=-1.0)
        if gamma != 0:
            p = torch.sigmoid(x)
            m = p * t
            m.mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            ce.mul_(m.square_() if gamma == 2 else m.pow_(gamma))
        if alpha >= 0:
            ce.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return ce

    @staticmethod
    @once_differentiable
    def backward(ctx, go: Tensor):
        x, t = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        p = torch.sigmoid(x)
        if gamma == 0:
            grad = p.sub_(t)
        else:
            m = p * t
            m.mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            # d m / dx = p (1 - p) (1 - 2t)
            dm = (1.0 - p).mul_(p).mul_(t * -2.0 + 1.0)
            ce = F.softplus(x).addcmul_(t, x, value=-1.0)
            if gamma == 2:
                dm.mul_(ce).mul_(m).mul_(2.0)
                grad = m.square_().mul_(p.sub_(t)).add_(dm)
            else:
                low = torch.where(m > 0, m, torch.ones_like(m)).pow_(gamma - 1.0)
                low = torch.where(m > 0, low, torch.zeros_like(m))  # m = 0 only where p(1-p) = 0
                dm.mul_(ce).mul_(low).mul_(gamma)
                grad = m.pow_(gamma).mul_(p.sub_(t)).add_(dm)
        if alpha >= 0:
            grad.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return grad.mul_(go), None, None, None


@float32_compute
def sigmoid_focal_loss(input: Tensor, target: Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Sigmoid focal loss for multi-label classification and dense detection.

    :math:`\ell = \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(x, t)`, ``p = sigmoid(x)``,
    ``p_t = p t + (1-p)(1-t)``, ``alpha_t = alpha t + (1-alpha)(1-t)``; semantics of
    ``torchvision.ops.sigmoid_focal_loss`` (RetinaNet defaults ``alpha=0.25``, ``gamma=2``;
    ``alpha < 0`` disables the weighting; soft targets in ``[0, 1]`` allowed; ``"mean"`` is over
    every element). Detectors usually want ``reduction="sum"`` divided by the number of
    foreground anchors. The target receives no gradient.

    Args:
        input: logits of any shape.
        target: float targets of the same shape (0/1 labels or probabilities).

    Example:
        >>> import torch, tailwise
        >>> x = torch.randn(4, 3); t = (torch.rand(4, 3) > 0.5).float()
        >>> loss = tailwise.functional.sigmoid_focal_loss(x, t)
    """
    if not isinstance(input, Tensor) or not input.is_floating_point():
        raise TypeError(f"input must be a floating tensor of logits, got "
                        f"{input.dtype if isinstance(input, Tensor) else type(input).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a tensor with the input's shape {tuple(input.shape)}, got {type(target).__name__}")
    check_same_shape(input, target, "input", "target")
    alpha = _check_number(alpha, "alpha")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable), got {alpha}")
    gamma = check_nonnegative(gamma, "gamma")
    t = target.to(input.dtype)
    loss = _SigmoidFocal.apply(input, t, alpha, gamma)
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("focal")
class FocalLoss(Loss):
    """Softmax focal loss with per-class ``alpha`` and ``ignore_index``; see :func:`tailwise.functional.focal_loss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.FocalLoss(gamma=2.0)
        >>> loss = crit(torch.randn(8, 5, 4, 4), torch.randint(0, 5, (8, 4, 4)))
    """

    def __init__(self, alpha=None, gamma: float = 2.0, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.gamma = check_nonnegative(gamma, "gamma")
        self.ignore_index = int(ignore_index)
        if alpha is not None:
            if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
                _alpha_vector(alpha, -1, torch.empty(0))  # raises the explanatory TypeError
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
            if alpha.dim() != 1:
                raise ValueError(f"alpha must be 1-D (C,), got shape {tuple(alpha.shape)}")
        self.register_buffer("alpha", alpha)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return focal_loss(input, target, alpha=self.alpha, gamma=self.gamma, ignore_index=self.ignore_index,
                          reduction=self.reduction, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}, {super().extra_repr()}"


@register_loss("sigmoid_focal")
class SigmoidFocalLoss(Loss):
    """Sigmoid focal loss (multi-label / detection); see :func:`tailwise.functional.sigmoid_focal_loss`.

    ``target`` may also be int64 class indices ``(N,)`` for ``(N, C)`` logits: they are one-hot
    encoded (single-label data through the multi-label loss).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.alpha = _check_number(alpha, "alpha")
        self.gamma = check_nonnegative(gamma, "gamma")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        if (isinstance(target, Tensor) and not target.is_floating_point() and isinstance(input, Tensor)
                and input.dim() == 2 and target.shape == input.shape[:1]):
            check_index_target(input, target)
            target = F.one_hot(target.long(), input.shape[1]).to(input.dtype)
        return sigmoid_focal_loss(input, target, alpha=self.alpha, gamma=self.gamma, reduction=self.reduction,
                                  sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, {super().extra_repr()}"
