"""Entropy, cross-entropy and KL divergence on logits."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._base import Loss
from .._precision import float32_compute, upcast
from .._probabilities import check_probabilities
from .._reduction import reduce_loss
from .._validation import check_probability, check_same_shape
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.softmax_ce import kernel_checks_targets, softmax_cross_entropy, uses_kernel
from ..registry import register_loss
from ._common import Like, check_index_target, check_logits, check_per_class, is_soft_target, masked_reduce

__all__ = ["entropy_loss", "cross_entropy_loss", "kl_div_loss", "EntropyLoss", "CrossEntropyLoss", "KLDivLoss"]


@float32_compute
def entropy_loss(input: Tensor, *, reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Shannon entropy of the predicted distribution, :math:`H(p) = -\sum_c p_c \log p_c`,
    ``p = softmax(input, dim=1)``.

    Used as a regulariser (minimise to sharpen predictions, e.g. entropy minimisation on unlabeled
    data; maximise, i.e. add ``-entropy``, as a confidence penalty). Natural log (nats).

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ...)``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (shape ``(N, d1, ...)``).
        sample_weight: optional per-element weights broadcastable to ``(N, d1, ...)``.

    Example:
        >>> import torch, tailwise
        >>> tailwise.functional.entropy_loss(torch.zeros(2, 4))  # uniform: log 4
        tensor(1.3863)
    """
    check_logits(input)
    return reduce_loss(_Entropy.apply(input), reduction, sample_weight)


class _Entropy(torch.autograd.Function):
    """``H = -sum_c p_c log p_c`` over dim 1 with the closed-form backward
    ``dH/dz_k = -p_k (log p_k + H)``: two saved tensors and three passes, no autograd chain.

    ``log p`` is clamped to the float range: a logit gap beyond it (logits ~1e38) makes
    ``log p = -inf`` where ``p = 0``, and ``p log p`` must be 0 there, not ``0 * -inf = NaN``.
    A NaN logit still propagates.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        logp = F.log_softmax(z, dim=1).clamp_min_(torch.finfo(z.dtype).min)
        p = logp.exp()
        h = (p * logp).sum(dim=1).neg_()
        ctx.save_for_backward(p, logp, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        p, logp, h = ctx.saved_tensors
        return (logp + h.unsqueeze(1)).mul_(p).mul_(g.unsqueeze(1)).neg_()


def _check_class_weight(class_weight, input: Tensor) -> Optional[Tensor]:
    if class_weight is None:
        return None
    return check_per_class(class_weight, input.shape[1], "class_weight", like=compute_like(input))


def compute_like(input: Tensor) -> Like:
    """The device and dtype per-class vectors should have: float32 for 16-bit logits (which
    reach the loss body only on the Triton path, where they are read directly), else the input's."""
    if input.dtype in (torch.float16, torch.bfloat16):
        return Like(input.device, torch.float32)
    return Like(input.device, input.dtype)


@float32_compute_unless_kernel("softmax_ce")
def cross_entropy_loss(input: Tensor, target: Tensor, *, class_weight: Optional[Union[Tensor, Sequence[float]]] = None,
                       ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
                       sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Cross-entropy between logits and class indices or class probabilities.

    :math:`\ell_i = -\sum_c w_c\, q_{ic} \log \mathrm{softmax}(z_i)_c` with ``q`` the (smoothed)
    one-hot target or the given probabilities. Same semantics as
    :func:`torch.nn.functional.cross_entropy` (``class_weight`` is its ``weight``,
    ``label_smoothing`` mixes the target with the uniform distribution:
    ``q = (1 - eps) onehot + eps / C``), plus a per-element ``sample_weight`` and validated inputs.

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ...)``.
        target: int64 class indices ``(N, d1, ...)``, or a float tensor of probabilities with the
            input's shape (soft targets, e.g. mixup; not renormalised).
        class_weight: optional per-class weights ``(C,)``.
        ignore_index: index target value that contributes no loss and no gradient (indices only).
        label_smoothing: in ``[0, 1]``.
        reduction: ``"mean"`` divides by the number of non-ignored elements, or by the sum of
            their class weights when ``class_weight`` is given (like ``F.cross_entropy``); an
            all-ignored batch gives 0 instead of NaN. ``"sum"`` | ``"none"`` (shape ``(N, d1, ...)``).
        sample_weight: optional per-element weights broadcastable to ``(N, d1, ...)``; they multiply the
            loss and do not enter the ``mean`` denominator.

    Example:
        >>> import torch, tailwise
        >>> z = torch.tensor([[2.0, 0.0, 0.0]]); y = torch.tensor([0])
        >>> tailwise.functional.cross_entropy_loss(z, y)
        tensor(0.2395)
    """
    check_logits(input)
    label_smoothing = check_probability(label_smoothing, "label_smoothing")
    cw = _check_class_weight(class_weight, input)
    if is_soft_target(input, target):
        check_probabilities(target, "target")
        input = upcast(input)
        loss = F.cross_entropy(input, target, weight=cw, label_smoothing=label_smoothing, reduction="none")
        # soft targets: F.cross_entropy's mean divides by N (class weights are inside the sum)
        return reduce_loss(loss, reduction, sample_weight)
    if isinstance(target, Tensor) and target.is_floating_point():
        raise ValueError(f"target must be int64 class indices of shape {(input.shape[0],) + tuple(input.shape[2:])} "
                         f"or probabilities of the input's shape {tuple(input.shape)}, "
                         f"got a float tensor of shape {tuple(target.shape)}")
    return index_cross_entropy(input, target, cw, ignore_index, label_smoothing, reduction, sample_weight)


def index_cross_entropy(input: Tensor, target: Tensor, cw: Optional[Tensor], ignore_index: int,
                        label_smoothing: float, reduction: str, sample_weight: Optional[Tensor], *,
                        offset: Optional[Tensor] = None, scale: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy of ``input * scale + offset`` (per-class vectors) against class indices,
    through the ``softmax_ce`` kernel op; reduced like ``F.cross_entropy``."""
    in_kernel = kernel_checks_targets(input, target)
    check_index_target(input, target, ignore_index=ignore_index, values=not in_kernel)
    target = target.long()
    if cw is not None and reduction == "mean" and uses_kernel(input):
        # the kernel hands back each row's class weight (0 if ignored): the denominator without
        # a gather (the same numbers as below, so the same sum)
        loss, den = softmax_cross_entropy(input, target, offset, scale, cw, 0.0, label_smoothing, ignore_index,
                                          validate=in_kernel, want_den=True)
        return masked_reduce(loss, reduction, sample_weight, None, den)
    loss = softmax_cross_entropy(input, target, offset, scale, cw, 0.0, label_smoothing, ignore_index,
                                 validate=in_kernel)
    valid = target != ignore_index
    denom_w = None
    if cw is not None:
        denom_w = cw[target.clamp_min(0).clamp_max(input.shape[1] - 1)]
    return masked_reduce(loss, reduction, sample_weight, valid, denom_w)


@float32_compute
def kl_div_loss(input: Tensor, target: Tensor, *, log_target: bool = False, reduction: str = "mean",
                sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""KL divergence :math:`\mathrm{KL}(p \,\|\, q) = \sum_c p_c (\log p_c - \log q_c)` with
    ``q = softmax(input, dim=1)`` the model and ``p = target`` the reference distribution.

    Argument order follows :func:`torch.nn.functional.kl_div`: the **first** argument is the
    model being fitted (here as logits; log-probabilities also work because ``log_softmax``
    leaves them unchanged), the **second** the reference ``p``. So ``kl_div_loss(student,
    teacher_probs)`` is the forward KL of distillation. Terms with ``p_c = 0`` contribute 0.
    Unlike ``F.kl_div``, the class dimension is summed, so ``"mean"`` averages per-sample
    divergences (``F.kl_div``'s ``reduction="batchmean"`` for ``(N, C)`` inputs).

    Args:
        input: logits of ``q``, ``(N, C)`` or ``(N, C, d1, ...)``.
        target: probabilities ``p`` of the same shape (or log-probabilities with ``log_target=True``),
            in ``[0, 1]`` (``[-inf, 0]``); a NaN or out-of-range value raises ``ValueError`` (on CUDA
            a device-side assert, see docs/conventions.md).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (shape ``(N, d1, ...)``).
        sample_weight: optional per-element weights broadcastable to ``(N, d1, ...)``.

    Example:
        >>> import torch, tailwise
        >>> p = torch.tensor([[0.5, 0.5]])
        >>> tailwise.functional.kl_div_loss(torch.zeros(1, 2), p)
        tensor(0.)
    """
    check_logits(input)
    if not isinstance(target, Tensor) or not target.is_floating_point():
        raise TypeError(f"target must be a floating tensor of probabilities with shape {tuple(input.shape)}, "
                        f"got {type(target).__name__ if not isinstance(target, Tensor) else target.dtype}")
    check_same_shape(input, target, "input", "target")
    # a NaN, negative or > 1 probability (log_target: > 0 or NaN) used to be dropped by the p > 0
    # mask, giving a finite wrong loss: raise instead (docs/conventions.md, probability-valued inputs)
    check_probabilities(target, "target", log=log_target)
    logq = F.log_softmax(input, dim=1)
    if log_target:
        p = target.exp()
        # where p == 0 (target = -inf) the term is 0, not 0 * inf
        kl = torch.where(p > 0, p * (torch.where(p > 0, target, logq) - logq), torch.zeros_like(logq))
    else:
        safe_log = torch.log(torch.where(target > 0, target, torch.ones_like(target)))
        kl = torch.where(target > 0, target * (safe_log - logq), torch.zeros_like(logq))
    return reduce_loss(kl.sum(dim=1), reduction, sample_weight)


@register_loss("entropy")
class EntropyLoss(Loss):
    """Entropy of ``softmax(input)`` (a regulariser; see :func:`tailwise.functional.entropy_loss`).

    ``forward(input, target=None)``: ``target`` is accepted and ignored so the module can stand
    where a ``(logits, labels)`` criterion is expected.
    """

    def forward(self, input: Tensor, target: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> Tensor:
        return entropy_loss(input, reduction=self.reduction, sample_weight=sample_weight)


@register_loss("cross_entropy")
class CrossEntropyLoss(Loss):
    """Cross-entropy with label smoothing, soft targets, ``ignore_index`` and class weights.

    See :func:`tailwise.functional.cross_entropy_loss`. ``class_weight`` is stored as a buffer.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.CrossEntropyLoss(label_smoothing=0.1)
        >>> loss = crit(torch.randn(8, 5), torch.randint(0, 5, (8,)))
    """

    def __init__(self, class_weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32)
            if class_weight.dim() != 1:
                raise ValueError(f"class_weight must be 1-D (C,), got shape {tuple(class_weight.shape)}")
        self.register_buffer("class_weight", class_weight)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return cross_entropy_loss(input, target, class_weight=self.class_weight, ignore_index=self.ignore_index,
                                  label_smoothing=self.label_smoothing, reduction=self.reduction, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, {super().extra_repr()}"


@register_loss("kl_div")
class KLDivLoss(Loss):
    """``KL(target || softmax(input))`` summed over classes; see :func:`tailwise.functional.kl_div_loss`."""

    def __init__(self, log_target: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.log_target = bool(log_target)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return kl_div_loss(input, target, log_target=self.log_target, reduction=self.reduction, sample_weight=sample_weight)
