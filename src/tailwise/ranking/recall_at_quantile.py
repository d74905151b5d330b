"""Smooth recall of the positives above the q-th quantile of the pooled scores."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._precision import float32_compute
from .._validation import check_choice, check_positive, check_probability
from ..registry import register_loss
from ..contrastive._common import host_selection
from ._common import check_queue, gather, per_class_mean, pool, prepare, reduce_classes
from ._module import QueuedRankingLoss

__all__ = ["recall_at_quantile_loss", "RecallAtQuantileLoss"]

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _recall(s: Tensor, p: Tensor, w: Tensor, quantile: float, temperature: float, interpolation: str,
            detach_threshold: bool, v: Optional[Tensor] = None):
    if v is not None:
        return _recall_masked(s, p, w, v, quantile, temperature, interpolation, detach_threshold)
    m, c = s.shape
    rows, cols = p.nonzero(as_tuple=True)
    npos = torch.zeros(c, dtype=torch.long, device=s.device).index_add_(0, cols, torch.ones_like(cols))
    valid = npos > 0
    if rows.numel() == 0:
        return s.new_zeros(c), valid
    t = torch.quantile(s.detach() if detach_threshold else s, quantile, dim=0, interpolation=interpolation)
    soft = torch.sigmoid((s[rows, cols] - t[cols]) / temperature)
    recall, _ = per_class_mean(soft, cols, w[rows], c)
    return recall, valid


def _masked_quantile(x: Tensor, v: Tensor, q: float, interpolation: str) -> Tensor:
    """``torch.quantile(x[v], q, dim=0)`` per column without selecting rows (fixed shapes).

    Invalid rows sort last (+inf); the ranks follow ``torch.quantile``'s rule with ``n = v.sum()``.
    Columns of an empty pool give 0 (their classes are skipped anyway).
    """
    n = v.sum()
    srt = torch.sort(x.masked_fill(~v.unsqueeze(1), float("inf")), dim=0).values
    ranks = torch.full((1, x.shape[1]), q, dtype=x.dtype, device=x.device) * (n - 1).clamp_min(0).to(x.dtype)
    if interpolation == "lower":
        ranks = ranks.floor()
    elif interpolation == "higher":
        ranks = ranks.ceil()
    elif interpolation == "nearest":
        ranks = ranks.round()
    below = ranks.long()
    out = srt.gather(0, below)
    if interpolation in ("linear", "midpoint"):
        weights = torch.full_like(ranks, 0.5) if interpolation == "midpoint" else ranks - below
        out = torch.lerp(out, srt.gather(0, ranks.ceil().long()), weights)
    return torch.where(n > 0, out, torch.zeros_like(out)).squeeze(0)


def _recall_masked(s, p, w, v, quantile, temperature, interpolation, detach_threshold):
    pf = p & v.unsqueeze(1)
    valid = pf.sum(0) > 0
    t = _masked_quantile(s.detach() if detach_threshold else s, v, quantile, interpolation)
    soft = torch.sigmoid((s - t) / temperature)
    wk = pf.to(s.dtype) * w.unsqueeze(1)
    recall = (soft * wk).sum(0) / wk.sum(0).clamp_min(torch.finfo(s.dtype).tiny)
    return recall, valid


def _check(quantile, temperature, interpolation):
    quantile = check_probability(quantile, "quantile", open_low=True, open_high=True)
    temperature = check_positive(temperature, "temperature")
    check_choice(interpolation, "interpolation", _INTERPOLATIONS)
    return quantile, temperature


@float32_compute
def recall_at_quantile_loss(input: Tensor, target: Tensor, *, quantile: float = 0.995, temperature: float = 0.05,
                            interpolation: str = "linear", detach_threshold: bool = True,
                            ignore_index: int = -100, sample_weight: Optional[Tensor] = None,
                            queue_scores: Optional[Tensor] = None, queue_labels: Optional[Tensor] = None,
                            queue_weight: Optional[Tensor] = None, gather_distributed: bool = False,
                            reduction: str = "mean", return_valid: bool = False):
    r"""``1 - `` smooth recall of the positives above the ``quantile``-th quantile of all pooled scores.

    Per class column ``s`` over the pooled rows (live batch + optional queue):

    .. math::
        t_q = \operatorname{quantile}_q(\{s_j\}), \qquad
        \widetilde{R} = \frac{\sum_{k \in P} w_k \, \sigma((s_k - t_q)/\tau)}{\sum_{k \in P} w_k}, \qquad
        \text{loss} = 1 - \widetilde{R}

    ``quantile=0.995`` is "recall in the top 0.5% of scores" (an alert budget). The quantile is
    taken over positives and negatives together (``torch.quantile``, ``interpolation`` linear
    by default, so ``t_q`` falls between two scores and ties with a positive are rare). With
    ``detach_threshold=True`` (default) ``t_q`` is a stop-gradient constant and only positives
    move; ``False`` lets gradient also push down the one or two (live) rows that define
    ``t_q``. As ``tau -> 0`` the surrogate tends to the exact recall
    ``|{k in P: s_k > t_q}| / |P|``. A design of this library (not from a paper); the peer
    ``imbalanced-losses`` uses the same form with ``quantile`` meaning the *top fraction*
    (0.005 there is 0.995 here) and "higher" interpolation.

    The quantile is only meaningful when the pool is large enough: at ``q = 0.995`` fewer than
    200 pooled rows put ``t_q`` at the maximum score; use a queue.

    Args:
        input, target, ignore_index, sample_weight, queue_*, gather_distributed, reduction, return_valid:
            as :func:`tailwise.functional.smooth_ap_loss`. Classes with no positive are skipped.
        quantile: ``q`` in ``(0, 1)``.
        temperature: ``tau`` (> 0) in score units (0.05 suits logits).
        interpolation: ``torch.quantile`` interpolation.
        detach_threshold: stop the gradient through ``t_q``.

    Example:
        >>> import torch, tailwise.functional as TF
        >>> s = torch.arange(10.0)               # t_0.75 = 6.75: rows 7, 8, 9 are above it
        >>> y = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 1, 0])
        >>> round(TF.recall_at_quantile_loss(s, y, quantile=0.75, temperature=1e-3).item(), 4)
        0.5
    """
    quantile, temperature = _check(quantile, temperature, interpolation)
    scores, pos, keep, w = prepare(input, target, ignore_index, sample_weight)
    extra = check_queue(queue_scores, queue_labels, queue_weight, scores.shape[1], scores.dtype, scores.device)
    scores, pos, keep, w = gather(scores, pos, keep, w, gather_distributed)
    s, p, ww, v = pool(scores, pos, keep, w, extra, masked=not host_selection(scores))
    if s.shape[0] == 0:
        valid = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
        out = reduce_classes(scores.new_zeros(scores.shape[1]), valid, reduction, input)
        return (out, valid) if return_valid else out
    recall, valid = _recall(s, p, ww, quantile, temperature, interpolation, detach_threshold, v)
    out = reduce_classes(1.0 - recall, valid, reduction, input)
    return (out, valid) if return_valid else out


@register_loss("recall_at_quantile")
class RecallAtQuantileLoss(QueuedRankingLoss):
    r"""Smooth recall above a score quantile (see :func:`tailwise.functional.recall_at_quantile_loss`).

    A queue (``queue_size`` rows, :class:`tailwise.MemoryQueue`) makes the tail quantile stable:
    at ``q = 0.995`` the pool should hold well over ``1 / (1 - q) = 200`` rows.

    Example:
        >>> import torch, tailwise
        >>> loss_fn = tailwise.RecallAtQuantileLoss(quantile=0.99, num_classes=1, queue_size=1024)
        >>> loss = loss_fn(torch.randn(256, requires_grad=True), (torch.rand(256) < 0.02).long())
    """

    def __init__(self, quantile: float = 0.995, temperature: float = 0.05, *, interpolation: str = "linear",
                 detach_threshold: bool = True, num_classes: Optional[int] = None, queue_size: int = 0,
                 ignore_index: int = -100, gather_distributed: Optional[bool] = None,
                 update_queue_in_eval: bool = False, reduction: str = "mean") -> None:
        super().__init__(num_classes=num_classes, queue_size=queue_size, ignore_index=ignore_index,
                         gather_distributed=gather_distributed, update_queue_in_eval=update_queue_in_eval,
                         reduction=reduction)
        self.quantile, self.temperature = _check(quantile, temperature, interpolation)
        self.interpolation = interpolation
        self.detach_threshold = bool(detach_threshold)

    def _compute(self, s, p, w, v=None):
        if s.shape[0] == 0:
            return s.new_zeros(s.shape[1]), torch.zeros(s.shape[1], dtype=torch.bool, device=s.device)
        recall, valid = _recall(s, p, w, self.quantile, self.temperature, self.interpolation,
                                self.detach_threshold, v)
        return 1.0 - recall, valid
