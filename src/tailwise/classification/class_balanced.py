"""Class-balanced loss based on the effective number of samples (Cui et al., CVPR 2019)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import upcast
from .._validation import check_choice, check_class_counts, check_nonnegative, check_probability
from ..kernels import sigmoid_family as _sig
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.softmax_ce import kernel_checks_targets, softmax_cross_entropy, uses_kernel
from ..registry import register_loss
from ._common import Like, check_index_target, check_logits, from_counts, masked_reduce

__all__ = ["class_balanced_weights", "class_balanced_loss", "ClassBalancedLoss"]

_LOSS_TYPES = ("softmax", "focal", "sigmoid")


def class_balanced_weights(class_counts, beta: float = 0.9999) -> Tensor:
    r"""Per-class weights :math:`w_c \propto (1 - \beta) / (1 - \beta^{n_c})`, normalised so that
    :math:`\sum_c w_c = C` (as in richardaecn/class-balanced-loss).

    :math:`(1 - \beta^{n})/(1 - \beta)` is the effective number of samples of a class with ``n``
    samples. ``beta = 0`` gives uniform weights; ``beta -> 1`` approaches inverse-frequency
    weighting. Returned as float64 ``(C,)``.

    Example:
        >>> import tailwise
        >>> tailwise.class_balanced_weights([100, 10, 1], beta=0.9).round(decimals=4)
        tensor([0.2393, 0.3674, 2.3932], dtype=torch.float64)
    """
    counts = check_class_counts(class_counts)
    beta = check_probability(beta, "beta", open_high=True)
    # 1 - beta^n via expm1/log1p: exact for beta close to 1 where 1 - beta**n would cancel
    effective = -torch.expm1(counts * math.log1p(beta - 1.0)) if beta > 0 else torch.ones_like(counts)
    w = (1.0 - beta) / effective
    return w / w.sum() * counts.numel()


@float32_compute_unless_kernel("softmax_ce")
def class_balanced_loss(input: Tensor, target: Tensor, class_counts, *, beta: float = 0.9999,
                        loss_type: str = "softmax", gamma: float = 2.0, ignore_index: int = -100,
                        reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Class-balanced loss: each sample's loss times :math:`w_{y}` from
    :func:`class_balanced_weights`.

    ``loss_type``:

    * ``"softmax"``: :math:`w_y\,\mathrm{CE}(z, y)`; accepts ``(N, C, d1, ...)`` and ``ignore_index``.
    * ``"sigmoid"``: :math:`w_y \sum_c \mathrm{BCE}(z_c, \mathbb{1}[c = y])` (one-hot sigmoid).
    * ``"focal"``: :math:`w_y \sum_c (1 - p_{t,c})^{\gamma} \mathrm{BCE}(z_c, \mathbb{1}[c=y])`, the
      official sigmoid focal form (no ``alpha_t`` term: the class-balanced weight replaces it).

    ``"mean"`` divides by the number of (non-ignored) samples, not by the sum of weights, as the
    official code does (its softmax form uses per-sample weights in
    ``tf.losses.softmax_cross_entropy``; its focal form divides by ``sum(labels) = N``). The
    official *sigmoid* form averages over ``N * C`` elements; here the classes are summed like
    the focal form, i.e. ``C`` times the official value, so the three types share one scale.
    Defaults follow the official code: ``beta=0.9999``; ``gamma=2`` (the paper tunes
    ``gamma`` in {0.5, 1, 2}).

    Args:
        input: logits ``(N, C)`` (``(N, C, d1, ...)`` for ``"softmax"``).
        target: int64 class indices ``(N,)`` (``(N, d1, ...)``).
        class_counts: per-class training counts ``(C,)``.

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 3); y = torch.randint(0, 3, (8,))
        >>> loss = tailwise.functional.class_balanced_loss(z, y, [500, 50, 5], loss_type="focal")
    """
    check_choice(loss_type, "loss_type", _LOSS_TYPES)
    check_logits(input, exact_2d=loss_type != "softmax")
    gamma = check_nonnegative(gamma, "gamma")
    C = input.shape[1]
    op = {"softmax": "softmax_ce", "sigmoid": "bal_bce", "focal": "sigmoid_focal"}[loss_type]
    kernel = uses_kernel(input) if op == "softmax_ce" else _sig.uses_kernel(op, input)
    if not kernel:
        input = upcast(input)  # 16-bit logits stay 16-bit only for a kernel that reads them
    cdt = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    beta = check_probability(beta, "beta", open_high=True)
    # host class_counts: weights computed once per device (cached), no host->device copy per call
    cb = from_counts(class_counts, C, Like(input.device, cdt), ("class_balanced", beta),
                     lambda n: class_balanced_weights(n, beta))
    if loss_type == "softmax":
        in_kernel = kernel_checks_targets(input, target)
        check_index_target(input, target, ignore_index=ignore_index, values=not in_kernel)
        target = target.long()
        valid = target != ignore_index
        if kernel:
            # the kernel weighs each row by its class weight (CE's w_y: the same products, so the
            # same bits as multiplying afterwards) and skips the gather
            loss = softmax_cross_entropy(input, target, class_weight=cb, ignore_index=ignore_index,
                                         validate=in_kernel)
            return masked_reduce(loss, reduction, sample_weight, valid)
        y = torch.where(valid, target, torch.zeros_like(target))
        loss = softmax_cross_entropy(input, target, ignore_index=ignore_index, validate=in_kernel) * cb[y]
        return masked_reduce(loss, reduction, sample_weight, valid)
    # the kernel checks the index range as it reads the targets where values stay on the device
    in_kernel = _sig.kernel_checks_targets(op, input, target)
    check_index_target(input, target, values=not in_kernel)
    # class indices go to the kernels as they are: no (N, C) one-hot on the Triton path
    if loss_type == "sigmoid":
        per_row = _sig.run("bal_bce", input, target.long(), validate=in_kernel)
    else:
        per_row = _sig.run("sigmoid_focal", input, target.long(), -1.0, gamma, row_sum=True, validate=in_kernel)
    loss = per_row * cb[target.long()]
    return masked_reduce(loss, reduction, sample_weight, None)


@register_loss("class_balanced")
class ClassBalancedLoss(Loss):
    """Class-balanced CE / focal / sigmoid loss; see :func:`tailwise.functional.class_balanced_loss`.

    The weights are a buffer ``class_weight`` (in ``state_dict``).

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.ClassBalancedLoss([500, 50, 5], beta=0.999, loss_type="softmax")
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, class_counts, beta: float = 0.9999, loss_type: str = "softmax", gamma: float = 2.0,
                 ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        check_choice(loss_type, "loss_type", _LOSS_TYPES)
        self.beta = check_probability(beta, "beta", open_high=True)
        self.loss_type = loss_type
        self.gamma = check_nonnegative(gamma, "gamma")
        self.ignore_index = int(ignore_index)
        counts = check_class_counts(class_counts)
        self.register_buffer("class_counts", counts.float())
        self.register_buffer("class_weight", class_balanced_weights(counts, beta).float())

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return class_balanced_loss(input, target, self.class_counts, beta=self.beta, loss_type=self.loss_type,
                                   gamma=self.gamma, ignore_index=self.ignore_index, reduction=self.reduction,
                                   sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, loss_type={self.loss_type!r}, gamma={self.gamma}, {super().extra_repr()}"
