"""Focal loss (Lin et al., ICCV 2017, arXiv 1708.02002): softmax multi-class and sigmoid forms.

Both forms run through the kernels layer (ops ``softmax_ce`` and ``sigmoid_focal``): a custom
``autograd.Function`` with a hand-derived backward on the torch path, so the focal term costs
about as much as a plain cross-entropy instead of the 5-10 elementwise autograd nodes (each
saving an ``(N, C)`` tensor) of the textbook formulation; a fused Triton kernel on CUDA.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import upcast
from .._probabilities import check_probabilities
from .._reduction import reduce_loss
from .._validation import _check_number, cached_on_device, check_nonnegative, check_same_shape, host_selection
from ..kernels import sigmoid_family as _sig
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.softmax_ce import kernel_checks_targets, softmax_cross_entropy
from ..registry import register_loss
from ._common import Like, check_index_target, check_logits, check_per_class, masked_reduce

__all__ = ["focal_loss", "sigmoid_focal_loss", "FocalLoss", "SigmoidFocalLoss"]


def _alpha_vector(alpha, num_classes: int, like: Tensor) -> Optional[Tensor]:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        # a number weighs every class alike, as kornia's focal_loss does
        alpha = [float(alpha)] * num_classes
    elif isinstance(alpha, Tensor) and alpha.dim() == 0:
        if torch.compiler.is_compiling():
            return check_per_class(alpha.reshape(1).expand(num_classes), num_classes, "alpha", like=like)
        # cached on the 0-d tensor itself (a module's buffer): the expanded view is new every call
        return cached_on_device(alpha, like.device, ("alpha0", num_classes, like.dtype),
                                lambda a: check_per_class(a.reshape(1).expand(num_classes), num_classes, "alpha",
                                                          like=like))
    return check_per_class(alpha, num_classes, "alpha", like=like)


@float32_compute_unless_kernel("softmax_ce")
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
        alpha: ``None``, per-class weights ``(C,)`` (e.g. inverse frequency; ``alpha_y`` is
            looked up by the target class), or one number used for every class (as kornia's
            ``focal_loss``: it scales the loss; it is *not* the positive/negative balance of the
            sigmoid form, which has no softmax analogue).
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
    in_kernel = kernel_checks_targets(input, target)
    check_index_target(input, target, ignore_index=ignore_index, values=not in_kernel)
    C = input.shape[1]
    target = target.long()
    valid = target != ignore_index
    # reading valid.all() on the host would synchronise on CUDA; there the mask is always passed
    has_ignored = not bool(valid.all()) if host_selection(target) else True
    a = _alpha_vector(alpha, C, Like(input.device, torch.float32 if input.dtype in (torch.float16, torch.bfloat16)
                                     else input.dtype))
    loss = softmax_cross_entropy(input, target, None, None, a, gamma, 0.0, ignore_index, focal=True,
                                 validate=in_kernel)
    return masked_reduce(loss, reduction, sample_weight, valid if has_ignored else None)


@float32_compute_unless_kernel("sigmoid_focal")
def sigmoid_focal_loss(input: Tensor, target: Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Sigmoid focal loss for multi-label classification and dense detection.

    :math:`\ell = \alpha_t (1 - p_t)^\gamma \mathrm{BCE}(x, t)`, ``p = sigmoid(x)``,
    ``p_t = p t + (1-p)(1-t)``, ``alpha_t = alpha t + (1-alpha)(1-t)``; semantics of
    ``torchvision.ops.sigmoid_focal_loss`` (RetinaNet defaults ``alpha=0.25``, ``gamma=2``;
    ``alpha < 0`` disables the weighting; soft targets in ``[0, 1]`` allowed; ``"mean"`` is over
    every element). Detectors usually want ``reduction="sum"`` divided by the number of
    foreground anchors. A target that requires grad receives its exact gradient (through a plain
    autograd path; the fused path is used when it does not). Target values must lie in ``[0, 1]``
    (a NaN or out-of-range value raises ``ValueError``; a device-side assert on CUDA, see
    docs/conventions.md). The cross-entropy is computed as
    ``t softplus(-x) + (1 - t) softplus(x)``, which keeps float32 precision for confident
    predictions (``softplus(x) - t x`` gave 0 instead of 1.1254e-7 at ``x = 16, t = 1``).

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
    check_probabilities(target if target.is_floating_point() else target.to(input.dtype), "target")
    if isinstance(target, Tensor) and target.requires_grad and torch.is_grad_enabled():
        # the fused paths give the target no gradient; a target that asks for one (e.g. a learned
        # soft label) takes the autograd formulation, exact for both arguments
        return reduce_loss(_sigmoid_focal_autograd(upcast(input), upcast(target).to(upcast(input).dtype),
                                                   alpha, gamma), reduction, sample_weight)
    if sample_weight is None and reduction != "none" and _sig.uses_kernel("sigmoid_focal", input):
        # per-row sums from the kernel: the (N, C) loss is never written
        # a 0/1 integer or bool target is a dense float target here, never class indices
        t = target if target.dtype in (torch.float32, torch.float64) else target.to(torch.float32)
        total = _sig.run("sigmoid_focal", input, t, alpha, gamma, row_sum=True).sum()
        return total / max(input.numel(), 1) if reduction == "mean" else total
    input = upcast(input)  # 16-bit logits reach here only when bound for the kernel
    t = target.to(input.dtype)
    loss = _sig.run("sigmoid_focal", input, t, alpha, gamma)
    return reduce_loss(loss, reduction, sample_weight)


def _sigmoid_focal_autograd(x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """The same elementwise loss as the fused op in plain autograd ops (gradient to ``t`` too)."""
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if gamma != 0:
        p = torch.sigmoid(x)
        m = p + t - 2.0 * p * t  # 1 - p_t
        pos = m > 0
        # (m)^gamma with a zero (not inf * 0) gradient at m = 0 for gamma < 1
        loss = loss * torch.where(pos, torch.where(pos, m, torch.ones_like(m)).pow(gamma), torch.zeros_like(m))
    if alpha >= 0:
        loss = loss * (t * (2.0 * alpha - 1.0) + (1.0 - alpha))
    return loss


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
            alpha = torch.as_tensor(alpha, dtype=torch.float32)  # a number stays 0-d: every class
            if alpha.dim() > 1:
                raise ValueError(f"alpha must be a number or 1-D (C,), got shape {tuple(alpha.shape)}")
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
            if sample_weight is None and self.reduction != "none" and _sig.uses_kernel("sigmoid_focal", input):
                # the kernel reads the class indices: no (N, C) one-hot target
                total = _sig.run("sigmoid_focal", input, target.long(), self.alpha, self.gamma, row_sum=True).sum()
                return total / max(input.numel(), 1) if self.reduction == "mean" else total
            target = F.one_hot(target.long(), input.shape[1]).to(input.dtype)
        return sigmoid_focal_loss(input, target, alpha=self.alpha, gamma=self.gamma, reduction=self.reduction,
                                  sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, {super().extra_repr()}"
