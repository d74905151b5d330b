"""Balanced Softmax (Ren et al., NeurIPS 2020) and logit adjustment (Menon et al., ICLR 2021)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import upcast
from .._validation import _check_number, check_class_counts, check_probability
from ..kernels._halfio import float32_compute_unless_kernel
from ..kernels.softmax_ce import uses_kernel
from ..registry import register_loss
from ._common import check_logits, class_view, is_soft_target, log_prior
from .cross_entropy import compute_like, cross_entropy_loss, index_cross_entropy

__all__ = ["balanced_softmax_loss", "logit_adjusted_loss", "adjust_logits", "BalancedSoftmaxLoss",
           "LogitAdjustedLoss"]


@float32_compute_unless_kernel("softmax_ce")
def logit_adjusted_loss(input: Tensor, target: Tensor, class_counts, *, tau: float = 1.0,
                        ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
                        sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Logit-adjusted cross-entropy :math:`\mathrm{CE}(z + \tau \log \pi, y)`, :math:`\pi_c = n_c / \sum n`.

    Menon et al., "Long-tail learning via logit adjustment", ICLR 2021 (arXiv 2007.07314),
    eq. 10; ``tau=1`` as in google-research/logit_adjustment. Train with this loss and predict
    with the **raw** logits ``z`` (the adjustment is only inside the loss). ``tau=0`` is plain
    cross-entropy. Accepts ``(N, C, d1, ...)``, ``ignore_index``, soft targets and label
    smoothing like :func:`cross_entropy_loss`.

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 3); y = torch.randint(0, 3, (8,))
        >>> loss = tailwise.functional.logit_adjusted_loss(z, y, class_counts=[500, 50, 5], tau=1.0)
    """
    check_logits(input)
    tau = _check_number(tau, "tau")
    if not is_soft_target(input, target) and uses_kernel(input):
        # the kernel adds the per-class offset on the fly: no shifted (N, C) copy
        offset = log_prior(class_counts, input.shape[1], like=compute_like(input), tau=tau)
        return index_cross_entropy(input, target, None, ignore_index, label_smoothing, reduction, sample_weight,
                                   offset=offset)
    input = upcast(input)  # 16-bit logits reach here only when bound for the kernel
    shift = class_view(log_prior(class_counts, input.shape[1], like=input, tau=tau), input)
    return cross_entropy_loss(input + shift, target, ignore_index=ignore_index, label_smoothing=label_smoothing,
                              reduction=reduction, sample_weight=sample_weight)


@float32_compute_unless_kernel("softmax_ce")
def balanced_softmax_loss(input: Tensor, target: Tensor, class_counts, *, ignore_index: int = -100,
                          label_smoothing: float = 0.0, reduction: str = "mean",
                          sample_weight: Optional[Tensor] = None) -> Tensor:
    r"""Balanced Softmax cross-entropy :math:`\mathrm{CE}(z + \log \pi, y)`.

    Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020; the
    official code (jiawei-ren/BalancedSoftmax) adds ``log n_c``, which differs from ``log pi_c``
    by a per-row constant and gives the same loss. Identical to :func:`logit_adjusted_loss` with
    ``tau=1``; uniform ``class_counts`` give plain cross-entropy. Predict with the raw logits.

    Example:
        >>> import torch, tailwise
        >>> z = torch.randn(8, 3); y = torch.randint(0, 3, (8,))
        >>> loss = tailwise.functional.balanced_softmax_loss(z, y, [500, 50, 5])
    """
    return logit_adjusted_loss(input, target, class_counts, tau=1.0, ignore_index=ignore_index,
                               label_smoothing=label_smoothing, reduction=reduction, sample_weight=sample_weight)


def adjust_logits(logits: Tensor, class_counts, tau: float = 1.0) -> Tensor:
    r"""Post-hoc logit adjustment for inference: :math:`z - \tau \log \pi` (Menon et al., eq. 9).

    For a model trained with plain cross-entropy; ``argmax`` of the result estimates the
    balanced-error-optimal class. Works on ``(N, C)`` or ``(N, C, d1, ...)``; differentiable;
    keeps the logits' dtype.

    Example:
        >>> import torch, tailwise
        >>> tailwise.adjust_logits(torch.zeros(1, 2), [3, 1], tau=1.0)
        tensor([[0.2877, 1.3863]])
    """
    check_logits(logits, "logits")
    tau = _check_number(tau, "tau")
    counts = check_class_counts(class_counts, logits.shape[1])
    lp = torch.log(counts / counts.sum()) * tau
    return logits - class_view(lp.to(dtype=logits.dtype, device=logits.device), logits)


class _PriorLoss(Loss):
    def __init__(self, class_counts, ignore_index: int, label_smoothing: float, reduction: str) -> None:
        super().__init__(reduction)
        counts = check_class_counts(class_counts)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        # float64 keeps large counts exact; the prior is recomputed in float64 in the functional
        self.register_buffer("class_counts", counts)


@register_loss("logit_adjusted")
class LogitAdjustedLoss(_PriorLoss):
    """Logit-adjusted cross-entropy ``CE(z + tau log pi, y)``; see :func:`tailwise.functional.logit_adjusted_loss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.LogitAdjustedLoss([500, 50, 5], tau=1.0)
        >>> loss = crit(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, class_counts, tau: float = 1.0, ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(class_counts, ignore_index, label_smoothing, reduction)
        self.tau = _check_number(tau, "tau")

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return logit_adjusted_loss(input, target, self.class_counts, tau=self.tau, ignore_index=self.ignore_index,
                                   label_smoothing=self.label_smoothing, reduction=self.reduction, sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, {super().extra_repr()}"


@register_loss("balanced_softmax")
class BalancedSoftmaxLoss(_PriorLoss):
    """Balanced Softmax ``CE(z + log pi, y)``; see :func:`tailwise.functional.balanced_softmax_loss`."""

    def __init__(self, class_counts, ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(class_counts, ignore_index, label_smoothing, reduction)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return balanced_softmax_loss(input, target, self.class_counts, ignore_index=self.ignore_index,
                                     label_smoothing=self.label_smoothing, reduction=self.reduction, sample_weight=sample_weight)
