"""Smooth-AP (Brown et al., ECCV 2020): average precision with sigmoid-relaxed ranks."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._precision import float32_compute
from .._validation import check_positive
from ..registry import register_loss
from ..contrastive._common import host_selection
from ..kernels import dispatch
from ..kernels import soft_rank as _soft_rank  # noqa: F401 - registers the "soft_rank" op
from ._common import check_queue, gather, pool, prepare, reduce_classes
from ._module import QueuedRankingLoss

__all__ = ["smooth_ap_loss", "SmoothAPLoss"]


def _smooth_ap(s: Tensor, p: Tensor, w: Tensor, temperature: float, v: Optional[Tensor] = None):
    """Per-class smooth AP ``(C,)`` and validity over pooled scores ``s (M, C)``.

    ``v is None``: every row is valid and only the positive anchors are ranked, ``(P, M)`` per
    class. Otherwise (masked form, no host sync) every row is an anchor of a ``(C, M, M)``
    chunked soft rank whose columns are weighted by validity and positiveness.
    """
    m, c = s.shape
    if v is not None:
        return _smooth_ap_masked(s, p, w, temperature, v)
    npos = p.sum(0)
    valid = (npos > 0) & (npos < m)
    ap = []
    for k in range(c):
        if not bool(npos[k]):
            ap.append(s.new_zeros(()))
            continue
        # only positive anchors need a rank: (P, M) instead of (M, M) -- 100x less at 1% positives
        col = s[:, k]
        idx = p[:, k].nonzero().squeeze(1)
        a = col[idx]
        rank_all = dispatch("soft_rank", col, a, temperature)
        rank_pos = dispatch("soft_rank", a, a, temperature)
        wk = w[idx]
        ap.append((wk * (rank_pos / rank_all)).sum() / wk.sum().clamp_min(torch.finfo(s.dtype).tiny))
    return torch.stack(ap), valid


def _smooth_ap_masked(s: Tensor, p: Tensor, w: Tensor, temperature: float, v: Tensor):
    m, c = s.shape
    pf = p & v.unsqueeze(1)
    npos = pf.sum(0)
    valid = (npos > 0) & (npos < v.sum())
    x = s.t()                                                   # (C, M)
    # column weights: [valid rows, positive rows] -> ranks among all / among the positives
    cw = torch.stack([v.unsqueeze(0).expand(c, m), pf.t()], 2).to(s.dtype)
    r = dispatch("soft_rank", x, None, temperature, cw)         # (C, M, 2), anchors = x
    wk = pf.t().to(s.dtype) * w.unsqueeze(0)                    # 0 on non-positive anchors
    ap = (wk * (r[..., 1] / r[..., 0])).sum(1) / wk.sum(1).clamp_min(torch.finfo(s.dtype).tiny)
    return ap, valid


@float32_compute
def smooth_ap_loss(input: Tensor, target: Tensor, *, temperature: float = 0.01, ignore_index: int = -100,
                   sample_weight: Optional[Tensor] = None, queue_scores: Optional[Tensor] = None,
                   queue_labels: Optional[Tensor] = None, queue_weight: Optional[Tensor] = None,
                   gather_distributed: bool = False, reduction: str = "mean", return_valid: bool = False):
    r"""Smooth-AP loss, ``1 - AP~`` per class (one-vs-rest), averaged over classes with positives.

    For a class column ``s`` with positive set ``P`` over the pooled rows (live batch, plus the
    optional queue rows, which carry no gradient)

    .. math::
        R(k) = 1 + \sum_{j \ne k} \sigma\!\left(\frac{s_j - s_k}{\tau}\right), \quad
        R^+(k) = 1 + \sum_{j \in P, j \ne k} \sigma\!\left(\frac{s_j - s_k}{\tau}\right), \quad
        \widetilde{AP} = \frac{1}{|P|}\sum_{k \in P} \frac{R^+(k)}{R(k)}

    and the loss is ``1 - AP~``. As ``tau -> 0`` ``AP~`` tends to the exact (tie-free) average
    precision. ``tau = 0.01`` is the official default (Brown et al., "Smooth-AP: Smoothing the
    Path Towards Large-Scale Image Retrieval", ECCV 2020, github Andrew-Brown1/Smooth_AP,
    ``src/losses.py``). The official code clamps the sigmoid's exponent to ``[-50, 50]`` (zero
    gradient beyond); here ``torch.sigmoid`` is used unclamped (same values to 1e-22, gradients
    that vanish smoothly instead). The official code ranks a retrieval batch against each
    query's embedding similarity; here the "query" is the class and the scores are its logits.
    Only positive rows need a rank, so the cost is ``O(|P| * M)``, not ``O(M^2)``.

    Args:
        input: scores ``(N,)`` / ``(N, 1)`` (binary) or ``(N, C)`` (one-vs-rest per column).
        target: 0/1 ``(N,)`` for binary input, class indices ``(N,)`` or multi-hot ``(N, C)``.
        temperature: sigmoid temperature ``tau`` (> 0).
        ignore_index: rows whose target equals it are dropped from the ranking.
        sample_weight: optional per-row weights ``(N,)`` (>= 0, no gradient): a positive's precision
            counts with its sample_weight; ranks are unweighted.
        queue_scores, queue_labels, queue_weight: optional detached extra ranking context
            ``(K, C)`` scores with 0/1 ``(K, C)`` (or ``(K,)``) labels; see :class:`SmoothAPLoss`
            for a module that keeps the queue.
        gather_distributed: all-gather rows from every rank first (unequal batch sizes are fine).
        reduction: ``"mean"`` over classes with at least one positive and one negative in the
            pool, ``"sum"``, or ``"none"`` (``(C,)``; 0 for skipped classes).
        return_valid: also return the ``(C,)`` bool mask of classes that were used.

    Example:
        >>> import torch, tailwise.functional as TF
        >>> s = torch.tensor([3.0, 2.0, 1.0, 0.0], requires_grad=True)
        >>> y = torch.tensor([1, 0, 1, 0])
        >>> loss = TF.smooth_ap_loss(s, y, temperature=1e-3)  # exact AP = (1 + 2/3) / 2
        >>> round(loss.item(), 4)
        0.1667
    """
    temperature = check_positive(temperature, "temperature")
    scores, pos, keep, w = prepare(input, target, ignore_index, sample_weight)
    extra = check_queue(queue_scores, queue_labels, queue_weight, scores.shape[1], scores.dtype, scores.device)
    scores, pos, keep, w = gather(scores, pos, keep, w, gather_distributed)
    s, p, ww, v = pool(scores, pos, keep, w, extra, masked=not host_selection(scores))
    ap, valid = _smooth_ap(s, p, ww, temperature, v)
    out = reduce_classes(1.0 - ap, valid, reduction, input)
    return (out, valid) if return_valid else out


@register_loss("smooth_ap")
class SmoothAPLoss(QueuedRankingLoss):
    r"""Smooth-AP loss (see :func:`tailwise.functional.smooth_ap_loss`) with an optional memory queue.

    Args:
        temperature: sigmoid temperature (official default 0.01).
        queue_size: rows of past ``(scores, labels)`` kept as extra, gradient-free ranking context
            (0 = no queue). Uses :class:`tailwise.MemoryQueue`. Rows are enqueued after the loss
            is computed (so a batch never ranks against itself) and only in training mode unless
            ``update_queue_in_eval``.
        num_classes: columns ``C`` of the input (needed to size the queue; 1 for binary).
        ignore_index, reduction: as the functional.
        gather_distributed: ``None`` (default) all-gathers across ranks when
            ``torch.distributed`` is initialised; every rank then enqueues the same global rows.

    Example:
        >>> import torch, tailwise
        >>> loss_fn = tailwise.SmoothAPLoss(num_classes=3, queue_size=64)
        >>> logits = torch.randn(16, 3, requires_grad=True)
        >>> loss = loss_fn(logits, torch.randint(0, 3, (16,)))
        >>> loss.backward()
    """

    def __init__(self, temperature: float = 0.01, *, num_classes: Optional[int] = None, queue_size: int = 0,
                 ignore_index: int = -100, gather_distributed: Optional[bool] = None,
                 update_queue_in_eval: bool = False, reduction: str = "mean") -> None:
        super().__init__(num_classes=num_classes, queue_size=queue_size, ignore_index=ignore_index,
                         gather_distributed=gather_distributed, update_queue_in_eval=update_queue_in_eval,
                         reduction=reduction)
        self.temperature = check_positive(temperature, "temperature")

    def _compute(self, s, p, w, v=None):
        ap, valid = _smooth_ap(s, p, w, self.temperature, v)
        return 1.0 - ap, valid
