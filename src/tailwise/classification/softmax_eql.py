"""Softmax Equalization Loss (Softmax-EQL), "The Equalization Losses", Tan et al., TPAMI 2023."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_choice, check_nonnegative, check_positive, check_reduction
from ..kernels.softmax_ce import softmax_cross_entropy, uses_kernel
from ..registry import register_loss
from ._grad_stats import GradStatsLoss, check_logits_target, drop_ignored, restore_rows

__all__ = ["softmax_eql_loss", "softmax_eql_grad_stats", "SoftmaxEQLLoss"]

_INDICATORS = ("pos", "neg")


def _check_indicator(indicator, c):
    if indicator is None:
        return
    from .._validation import check_floating
    check_floating(indicator, "indicator")
    if indicator.dim() != 1 or indicator.shape[0] != c:
        raise ValueError(f"indicator must be a 1-D tensor of per-class statistics ({c},), got shape "
                         f"{tuple(indicator.shape)}")


def _offset(indicator: Optional[Tensor], tau: float, eps: float, like: Tensor) -> Optional[Tensor]:
    if indicator is None or tau == 0:
        return None
    return tau * indicator.to(like.dtype).clamp_min(eps).log()


def _adjusted(input: Tensor, indicator: Optional[Tensor], tau: float, eps: float) -> Tensor:
    if indicator is None or tau == 0:
        return input
    return input + tau * indicator.to(input.dtype).clamp_min(eps).log()


@float32_compute
def softmax_eql_loss(input: Tensor, target: Tensor, indicator: Optional[Tensor] = None,
                     tau: float = 1.0, eps: float = 1e-4, *, ignore_index: Optional[int] = -100,
                     sample_weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Softmax Equalization Loss (pure: the statistic is an argument).

    Cross-entropy on logits re-weighted by the accumulated gradient statistic
    :math:`G_j` (positive gradients by default, see :class:`SoftmaxEQLLoss`):

    .. math::
        p_{ij} = \frac{\max(G_j, \epsilon)^{\tau} e^{z_{ij}}}{\sum_k \max(G_k, \epsilon)^{\tau} e^{z_{ik}}},
        \qquad \ell_i = -\log p_{i y_i}.

    This is the official ``SoftmaxEQLLoss`` of ModelTC/United-Perception
    (``up/tasks/cls/models/losses``), which adds :math:`\tau \log(G_j / G_{y_i})` to every
    negative logit of sample ``i``; the :math:`-\tau\log G_{y_i}` shift is the same for the
    whole row and cancels in the softmax, so both forms are equal. ``indicator=None`` (or all
    statistics below ``eps``, the fresh state) is plain cross-entropy. Defaults ``tau=1``,
    ``eps=1e-4`` are the official ones.

    Args:
        input: logits ``(N, C)``; target: class indices ``(N,)``.
        indicator: the per-class statistic :math:`G` ``(C,)``.
        tau: exponent :math:`\tau \ge 0` (METHODS.md's :math:`\pi`).
        eps: floor of :math:`G` (classes never seen keep :math:`\epsilon^\tau`).
        ignore_index: rows with this label are skipped, as in ``F.cross_entropy`` (``None``: off).

    Example:
        >>> import torch
        >>> from tailwise.classification.softmax_eql import softmax_eql_loss
        >>> z, y = torch.zeros(1, 2), torch.tensor([0])
        >>> round(softmax_eql_loss(z, y, torch.tensor([1.0, 3.0])).item(), 4)   # -log(1/4)
        1.3863
    """
    check_reduction(reduction)
    check_nonnegative(tau, "tau")
    check_positive(eps, "eps")
    input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, ignore_index)
    n, c = check_logits_target(input, target)
    _check_indicator(indicator, c)
    if uses_kernel(input):
        # the kernel adds tau * log max(G, eps) on the fly: no adjusted (N, C) copy
        loss = softmax_cross_entropy(input, target.long(), _offset(indicator, float(tau), float(eps), input))
    else:
        logits = _adjusted(input, indicator, float(tau), float(eps))
        loss = F.cross_entropy(logits, target.long(), reduction="none")
    return restore_rows(reduce_loss(loss, reduction, sample_weight), keep, reduction)


@float32_compute
@torch.no_grad()
def softmax_eql_grad_stats(input: Tensor, target: Tensor, indicator: Optional[Tensor] = None,
                           tau: float = 1.0, eps: float = 1e-4, *,
                           ignore_index: Optional[int] = -100) -> Tuple[Tensor, Tensor]:
    r"""This batch's increments ``(pos_inc, neg_inc)`` of the Softmax-EQL statistics.

    The gradient of the per-sample loss w.r.t. logit ``j`` is :math:`p_{ij} - y_{ij}` (with the
    adjusted softmax above): :math:`\Delta G^{pos}_j = \sum_{i: y_i = j} (1 - p_{ij})`,
    :math:`\Delta G^{neg}_j = \sum_{i: y_i \ne j} p_{ij}`. Sum units (the official code collects
    the logits' gradient of the batch-mean loss, i.e. these values divided by N).
    """
    input, target, _, _ = drop_ignored(input, target, None, ignore_index)
    n, c = check_logits_target(input, target)
    _check_indicator(indicator, c)
    return _increments(_adjusted(input, indicator, float(tau), float(eps)), target.long())


def _increments(adjusted: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    p = torch.softmax(adjusted, dim=1)
    p_t = p.gather(1, target.unsqueeze(1)).squeeze(1)
    c = p.shape[1]
    pos = torch.zeros(c, dtype=p.dtype, device=p.device).index_add_(0, target, 1.0 - p_t)
    tgt = torch.zeros(c, dtype=p.dtype, device=p.device).index_add_(0, target, p_t)
    return pos, (p.sum(0) - tgt).clamp_min(0.0)


@register_loss("softmax_eql")
class SoftmaxEQLLoss(GradStatsLoss):
    r"""Softmax-EQL with its gradient statistics as buffers.

    ``indicator="pos"`` (official default) re-weights by the accumulated positive gradients
    ``pos_grad``; ``"neg"`` by ``neg_grad``. (The official code's third option
    ``"pos_and_neg"`` adds the ratio to the negative gradient and is not provided.) The
    statistics start at zero, so the first step is plain cross-entropy; each forward in
    training mode adds :func:`softmax_eql_grad_stats` of the batch (summed over ranks); eval
    mode freezes them. See :func:`softmax_eql_loss`.

    Example:
        >>> import torch
        >>> from tailwise.classification.softmax_eql import SoftmaxEQLLoss
        >>> crit = SoftmaxEQLLoss(num_classes=4)
        >>> loss = crit(torch.randn(8, 4), torch.randint(0, 4, (8,)))
    """

    def __init__(self, num_classes: int, tau: float = 1.0, eps: float = 1e-4, indicator: str = "pos",
                 ignore_index: Optional[int] = -100, reduction: str = "mean") -> None:
        super().__init__(num_classes, reduction, ignore_index)
        check_nonnegative(tau, "tau")
        check_positive(eps, "eps")
        check_choice(indicator, "indicator", _INDICATORS)
        self.tau, self.eps, self.indicator = float(tau), float(eps), indicator

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        input, target, sample_weight, keep = drop_ignored(input, target, sample_weight, self.ignore_index)
        check_logits_target(input, target, num_columns=self.num_classes)
        stat = self.pos_grad if self.indicator == "pos" else self.neg_grad
        return restore_rows(_forward(self, input, target, stat.clone(), sample_weight), keep, self.reduction)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, tau={self.tau}, eps={self.eps}, "
                f"indicator={self.indicator!r}, reduction={self.reduction!r}")


@float32_compute
def _forward(mod: SoftmaxEQLLoss, input, target, stat, sample_weight):
    target = target.long()
    if uses_kernel(input):
        loss = reduce_loss(softmax_cross_entropy(input, target, _offset(stat, mod.tau, mod.eps, input)),
                           mod.reduction, sample_weight)
        logits = _adjusted(input, stat, mod.tau, mod.eps) if mod.training else None
    else:
        logits = _adjusted(input, stat, mod.tau, mod.eps)
        loss = reduce_loss(F.cross_entropy(logits, target, reduction="none"), mod.reduction, sample_weight)
    if mod.training:
        with torch.no_grad():
            pos_inc, neg_inc = _increments(logits.detach(), target)
        mod._accumulate(pos_inc, neg_inc)
    return loss
