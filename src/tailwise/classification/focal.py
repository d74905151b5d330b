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
from torch.autograd.function import once_differentiable

from .._base import Loss
from .._precision import upcast
from .._probabilities import check_probabilities
from .._reduction import reduce_loss
from .._validation import (_check_number, assert_values, cached_on_device, check_nonnegative, check_same_shape,
                           host_selection, host_value_checks)
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
        # a number weighs every class alike (kornia before 0.7); see the docstring for kornia >= 0.7
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
            looked up by the target class), or one number used for every class (it scales the
            loss; it is *not* the positive/negative balance of the sigmoid form, which has no
            softmax analogue). kornia before 0.7 read a number this way; kornia >= 0.7 and MONAI
            weigh class 0 by ``1 - a`` and every other class by ``a``: pass
            ``[1 - a] + [a] * (C - 1)`` for that.
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
                       reduction: str = "mean", sample_weight: Optional[Tensor] = None,
                       pos_weight: Optional[Tensor] = None) -> Tensor:
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

    ``pos_weight`` follows ``torch.nn.BCEWithLogitsLoss``: it multiplies the positive term of the
    cross-entropy before the focal modulation and ``alpha_t``,

    .. math::
        \ell = \alpha_t (1 - p_t)^\gamma \big[w_{pos}\, t\, \mathrm{softplus}(-x)
        + (1 - t)\, \mathrm{softplus}(x)\big],

    so ``gamma=0, alpha<0`` is exactly ``BCEWithLogitsLoss(pos_weight=...)``. For 0/1 targets
    this is also kornia's ``binary_focal_loss_with_logits(..., pos_weight=...)`` (its positive
    term times ``pos_weight``); the definitions differ only for soft targets, where kornia
    modulates the positive and negative terms separately and tailwise keeps torchvision's
    ``(1 - p_t)^gamma`` of the whole cross-entropy. With ``pos_weight`` the loss takes a torch
    ``autograd.Function`` (hand-derived backward, ``(x, t, pos_weight)`` saved) on every device:
    the fused Triton kernel has no ``pos_weight``. A target or ``pos_weight`` that requires grad
    gets its exact gradient through plain autograd ops.

    Args:
        input: logits of any shape; ``(N,)`` or ``(N, 1)`` is the binary case.
        target: float targets of the same shape (0/1 labels or probabilities).
        alpha: weight of the positives in ``[0, 1]`` (``1 - alpha`` for the negatives);
            negative disables it.
        gamma: focusing parameter ``>= 0``.
        reduction: ``"mean"`` over every element, ``"sum"`` or ``"none"``.
        sample_weight: optional weights broadcastable to the elementwise loss.
        pos_weight: optional non-negative weights of the positive term, broadcast against
            ``input`` from the last dimension as in ``BCEWithLogitsLoss``: ``(C,)`` for
            ``(N, C)`` logits, ``(C, 1, 1)`` for ``(N, C, H, W)``, a 0-d tensor for all.
            ``num_neg / num_pos`` per class is the usual choice. A tensor on ``input``'s device
            is used as is; host data (a list, a CPU tensor for a CUDA input) is validated and
            copied once per device (cached).

    Example:
        >>> import torch, tailwise
        >>> x = torch.randn(4, 3); t = (torch.rand(4, 3) > 0.5).float()
        >>> loss = tailwise.functional.sigmoid_focal_loss(x, t)
        >>> x = torch.tensor([[2.0], [-1.0]]); t = torch.tensor([[1.0], [0.0]])
        >>> tailwise.functional.sigmoid_focal_loss(x, t, alpha=-1, gamma=0, pos_weight=torch.tensor([3.0]))
        tensor(0.3470)
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
    if pos_weight is not None:
        # the Triton op (kernels/sigmoid_family) has no pos_weight: a torch Function on every
        # device, or plain autograd when the target or pos_weight asks for a gradient
        x = upcast(input)
        pw = _check_pos_weight(pos_weight, x)
        t = upcast(target).to(x.dtype)
        if torch.is_grad_enabled() and (t.requires_grad or pw.requires_grad):
            loss = _sigmoid_focal_pos_weight(x, t, pw, alpha, gamma)
        else:
            loss = _PosWeightFocalFunction.apply(x, t, pw, float(alpha), float(gamma))
        return reduce_loss(loss, reduction, sample_weight)
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


def _pos_weight_tensor(pos_weight) -> Tensor:
    """``pos_weight`` as a real tensor (numbers and sequences converted), else ``TypeError``."""
    if isinstance(pos_weight, bool) or (isinstance(pos_weight, Tensor) and pos_weight.dtype == torch.bool):
        raise TypeError("pos_weight must be a tensor of non-negative weights, got a bool")
    if isinstance(pos_weight, Tensor):
        if pos_weight.is_complex():
            raise TypeError(f"pos_weight must be a real tensor, got dtype {pos_weight.dtype}")
        return pos_weight
    try:
        return torch.as_tensor(pos_weight, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"pos_weight must be a tensor of non-negative weights (e.g. shape (C,)), "
                        f"got {type(pos_weight).__name__}") from exc


def _check_pos_weight_values(pw: Tensor) -> None:
    if pw.numel() == 0:
        return
    if not pw.is_floating_point():
        pw = pw.double()
    if host_value_checks(pw):
        if not bool((torch.isfinite(pw) & (pw >= 0)).all()):
            raise ValueError(f"pos_weight must be finite and non-negative, got {pw.tolist()}")
    else:
        d = pw.detach()
        assert_values(torch.isfinite(d) & (d >= 0), "pos_weight must be finite and non-negative")


def _check_pos_weight(pos_weight, x: Tensor) -> Tensor:
    """``pos_weight`` of ``x``'s dtype and device, broadcastable to ``x``, finite and >= 0.

    A tensor on ``x``'s device (a module's buffer) or one that requires grad is used as is and
    checked where it lives; host data (a sequence, a tensor on another device) is validated on
    the host and converted once per device and dtype (cached), so a functional call with the
    same CPU ``pos_weight`` every step makes no host->device copy after the first.
    """
    if (isinstance(pos_weight, Tensor) and pos_weight.requires_grad) or torch.compiler.is_compiling():
        pw = _pos_weight_tensor(pos_weight)
        _check_pos_weight_shape(pw, x)
        pw = pw.to(device=x.device, dtype=x.dtype)
        _check_pos_weight_values(pw)
        return pw
    if isinstance(pos_weight, Tensor) and pos_weight.device == x.device:
        # a tensor already on the device (a module's buffer): checked where it lives and cast once
        # per (tensor, version, dtype), like the softmax family's per-class vectors; an in-place
        # update is a new version and is checked again
        def build_here(v):
            pw = _pos_weight_tensor(v)
            _check_pos_weight_shape(pw, x)
            pw = pw.detach().to(dtype=x.dtype)
            _check_pos_weight_values(pw)
            return pw

        pw = cached_on_device(pos_weight, x.device, ("pos_weight_here", x.dtype), build_here)
        _check_pos_weight_shape(pw, x)
        return pw

    def build(v):
        pw = _pos_weight_tensor(v).detach().to(device="cpu", dtype=x.dtype)
        _check_pos_weight_values(pw)
        return pw

    pw = cached_on_device(pos_weight, x.device, ("pos_weight", x.dtype), build)
    _check_pos_weight_shape(pw, x)
    return pw


def _check_pos_weight_shape(pw: Tensor, x: Tensor) -> None:
    try:
        shape = torch.broadcast_shapes(pw.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"pos_weight must broadcast to the input's shape {tuple(x.shape)} from the last "
                         f"dimension (as in BCEWithLogitsLoss: (C,) for (N, C), (C, 1, 1) for (N, C, H, W)), "
                         f"got shape {tuple(pw.shape)}")


class _PosWeightFocalFunction(torch.autograd.Function):
    """``alpha_t (1 - p_t)^gamma [w t softplus(-x) + (1 - t) softplus(x)]`` saving only ``(x, t, w)``.

    With ``ce`` the bracket and ``m = 1 - p_t = p + t - 2 p t``:
    ``dloss/dx = alpha_t [(p (1 - t) - w t (1 - p)) m^gamma + gamma ce m^(gamma-1) p (1-p) (1-2t)]``
    (``w = 1`` gives the fused op's ``p - t``). No gradient to ``t`` or ``w``: callers whose
    target or weight requires grad take :func:`_sigmoid_focal_pos_weight`.
    """

    @staticmethod
    def _ce(x: Tensor, t: Tensor, w: Tensor) -> Tensor:
        # both terms >= 0 and softplus is accurate on its own: no cancellation for confident
        # logits (BCEWithLogits' (1-t)x + lw log(1+e^-x) loses them)
        return F.softplus(-x).mul_(t * w).add_(F.softplus(x).mul_(1.0 - t))

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, w: Tensor, alpha: float, gamma: float):
        ctx.alpha, ctx.gamma = alpha, gamma
        ctx.save_for_backward(x, t, w)
        loss = _PosWeightFocalFunction._ce(x, t, w)
        if gamma != 0:
            p = torch.sigmoid(x)
            m = (p * t).mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            loss.mul_(m.square_() if gamma == 2 else m.pow_(gamma))
        if alpha >= 0:
            loss.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, go: Tensor):
        x, t, w = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        p = torch.sigmoid(x)
        # d ce / dx = p (1 - t) - w t (1 - p)
        grad = (1.0 - p).mul_(t * w).neg_().add_(p * (1.0 - t))
        if gamma != 0:
            m = (p * t).mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            dm = (1.0 - p).mul_(p).mul_(t * -2.0 + 1.0)  # d m / dx
            ce = _PosWeightFocalFunction._ce(x, t, w)
            if gamma == 2:
                grad.mul_(m.square()).add_(dm.mul_(ce).mul_(m).mul_(2.0))
            else:
                pos = m > 0  # m = 0 only where p (1 - p) = 0: no (0 * inf) for gamma < 1
                low = torch.where(pos, torch.where(pos, m, torch.ones_like(m)).pow(gamma - 1.0), torch.zeros_like(m))
                grad.mul_(m.pow(gamma)).add_(dm.mul_(ce).mul_(low).mul_(gamma))
        if alpha >= 0:
            grad.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return grad.mul_(go), None, None, None, None


def _sigmoid_focal_pos_weight(x: Tensor, t: Tensor, pw: Tensor, alpha: float, gamma: float) -> Tensor:
    """``alpha_t (1 - p_t)^gamma [pw t softplus(-x) + (1 - t) softplus(x)]`` in autograd ops."""
    # softplus(-x) = -log p and softplus(x) = -log(1 - p) separately: both terms >= 0 and no
    # cancellation for confident logits (BCEWithLogits' (1-t)x + lw log(1+e^-x) loses them)
    return _focal_modulate(t * pw * F.softplus(-x) + (1.0 - t) * F.softplus(x), x, t, alpha, gamma)


def _sigmoid_focal_autograd(x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """The same elementwise loss as the fused op in plain autograd ops (gradient to ``t`` too)."""
    return _focal_modulate(F.binary_cross_entropy_with_logits(x, t, reduction="none"), x, t, alpha, gamma)


def _focal_modulate(loss: Tensor, x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """``alpha_t (1 - p_t)^gamma`` times the elementwise cross-entropy ``loss``."""
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
    encoded (single-label data through the multi-label loss). ``pos_weight`` (``BCEWithLogitsLoss``
    semantics, e.g. ``(C,)``) is kept as a buffer, so it follows ``.to(device)`` and ``state_dict``.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.SigmoidFocalLoss(pos_weight=torch.tensor([1.0, 4.0, 2.0]))
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean",
                 pos_weight: Optional[Tensor] = None) -> None:
        super().__init__(reduction)
        self.alpha = _check_number(alpha, "alpha")
        self.gamma = check_nonnegative(gamma, "gamma")
        if pos_weight is not None:
            # values checked now, the shape against each input (as BCEWithLogitsLoss)
            pos_weight = _pos_weight_tensor(pos_weight).detach().clone()
            if not pos_weight.is_floating_point():
                pos_weight = pos_weight.float()
            _check_pos_weight_values(pos_weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        if (isinstance(target, Tensor) and not target.is_floating_point() and isinstance(input, Tensor)
                and input.dim() == 2 and target.shape == input.shape[:1]):
            check_index_target(input, target)
            if (sample_weight is None and self.pos_weight is None and self.reduction != "none"
                    and _sig.uses_kernel("sigmoid_focal", input)):
                # the kernel reads the class indices: no (N, C) one-hot target
                total = _sig.run("sigmoid_focal", input, target.long(), self.alpha, self.gamma, row_sum=True).sum()
                return total / max(input.numel(), 1) if self.reduction == "mean" else total
            target = F.one_hot(target.long(), input.shape[1]).to(input.dtype)
        return sigmoid_focal_loss(input, target, alpha=self.alpha, gamma=self.gamma, reduction=self.reduction,
                                  sample_weight=sample_weight, pos_weight=self.pos_weight)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, {super().extra_repr()}"
