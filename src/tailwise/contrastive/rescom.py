"""ResCom pieces: class-balanced SupCon weights and supervised hard positive / negative mining."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_class_counts, check_floating, check_positive
from ..registry import register_loss
from ..classification.class_balanced import class_balanced_weights
from ._common import as_views, check_features, check_labels, chunked_lse, flatten_views, gather, positive_stats

__all__ = ["rescom_loss", "ResComLoss", "rescom_class_weights", "hard_pair_mining"]


def rescom_class_weights(class_counts, beta: float = 0.999) -> Tensor:
    r"""ResCom's per-class weights :math:`w_c = \bar E / E_c` with :math:`E_c = (1-\beta^{n_c})/(1-\beta)`
    the effective number of samples (``SiamBS_SPM._cal_prior_weight_for_classes`` in
    dvlab-research/Imbalanced-Learning). float64 ``(C,)``; ``beta = 0`` gives all ones.

    The same effective-number weights as :func:`tailwise.class_balanced_weights` (which normalises
    them to sum to C), rescaled: with :math:`u_c \propto 1/E_c`, :math:`\bar E / E_c = u_c\,\overline{1/u}`.
    """
    u = class_balanced_weights(class_counts, beta)
    return u * (1.0 / u).mean()


def hard_pair_mining(sim: Tensor, positive: Tensor, num_positives: Optional[int] = None,
                     num_negatives: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """ResCom's supervised hard mining on an ``(M, K)`` similarity matrix.

    Per row keeps the ``num_positives`` *least* similar positives and the ``num_negatives`` *most*
    similar negatives (``None``: all). Returns ``(pos, neg)`` of shapes ``(M, kp)`` and ``(M, kn)``;
    slots beyond a row's available pairs are ``nan``-free ``-inf`` placeholders marked by
    ``torch.isfinite``.
    """
    check_floating(sim, "sim", ndim=2)
    if positive.shape != sim.shape or positive.dtype != torch.bool:
        raise ValueError(f"positive must be a bool tensor of shape {tuple(sim.shape)}, got "
                         f"{tuple(positive.shape)} {positive.dtype}")
    k = sim.shape[1]
    kp = k if num_positives is None else min(int(num_positives), k)
    kn = k if num_negatives is None else min(int(num_negatives), k)
    inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
    pos = -torch.topk(torch.where(positive, -sim, -inf), kp, dim=1).values
    pos = torch.where(torch.isfinite(pos), pos, -inf)
    neg = torch.topk(torch.where(positive, -inf, sim), kn, dim=1).values
    return pos, neg


@float32_compute
def rescom_loss(features: Tensor, labels: Tensor, queue: Optional[Tensor] = None,
                queue_labels: Optional[Tensor] = None, *, class_counts=None, effective_num_beta: float = 0.999,
                num_positives: Optional[int] = None, num_negatives: Optional[int] = None,
                temperature: float = 0.1, normalize: bool = False, gather_distributed: bool = False,
                sample_weight: Optional[Tensor] = None, reduction: str = "mean", chunk_size: Optional[int] = None) -> Tensor:
    r"""ResCom contrastive term (Zhong et al., arXiv 2203.11506; github dvlab-research/Imbalanced-Learning ``ResCom``).

    Every view is an anchor; its contrast set is the other views of the batch plus, from the
    (class-balanced) queue, only the ``num_positives`` hardest (least similar) same-class keys and the
    ``num_negatives`` hardest (most similar) other-class keys. Loss per anchor is the SupCon
    mean of :math:`-\log` softmax over positives (no temperature factor), weighted by the
    class-balanced weight of its class (:func:`rescom_class_weights` from ``class_counts``,
    ``effective_num_beta`` 0.999 as ``SiamBS_SPM``), averaged. Temperature 0.1 (config default).
    Not included: the Siamese Balanced Softmax classification term (``balsfx_n``) and the
    classifier CE; add a balanced-softmax loss on the logits yourself.
    """
    t = check_positive(temperature, "temperature")
    feats = as_views(check_features(features, normalize=normalize))
    n, v, d = feats.shape
    labels = check_labels(labels, n)
    feats_all, labels_all, offset = gather(feats, labels, gather_distributed)
    n_all = feats_all.shape[0]
    contrast = flatten_views(feats_all)
    anchors = flatten_views(feats)
    a_lab = labels.repeat(v)
    base = torch.arange(n, device=feats.device) + offset
    self_idx = torch.cat([base + k * n_all for k in range(v)])
    lse = chunked_lse(anchors, contrast, 1.0 / t, self_idx=self_idx, chunk_size=chunk_size)
    dot, cnt = positive_stats(anchors, a_lab, contrast, labels_all.repeat(v), self_idx=self_idx)
    pos_sum = dot / t
    if queue is not None:
        check_floating(queue, "queue", ndim=2)
        if queue.shape[1] != d:
            raise ValueError(f"queue must have shape (K, {d}), got {tuple(queue.shape)}")
        ql = check_labels(queue_labels, queue.shape[0], "queue_labels", "queue")
        sim = anchors @ queue.detach().to(anchors.dtype).t() / t
        hp, hn = hard_pair_mining(sim, a_lab[:, None] == ql[None, :], num_positives, num_negatives)
        sel = torch.cat([hp, hn], 1)
        lse = torch.logaddexp(lse, torch.logsumexp(sel, 1))
        ok = torch.isfinite(hp)
        pos_sum = pos_sum + torch.where(ok, hp, torch.zeros_like(hp)).sum(1)
        cnt = cnt + ok.sum(1).to(cnt.dtype)
    has = cnt > 0
    safe_lse = torch.where(has, lse, torch.zeros_like(lse))
    per_anchor = torch.where(has, safe_lse - pos_sum / torch.where(has, cnt, torch.ones_like(cnt)),
                             torch.zeros_like(lse))
    if class_counts is not None:
        w = rescom_class_weights(class_counts, effective_num_beta).to(per_anchor)
        if labels.numel() and (int(labels.max()) >= w.shape[0] or int(labels.min()) < 0):
            raise ValueError(f"labels must be in [0, {w.shape[0] - 1}] (one class_counts entry per class)")
        per_anchor = per_anchor * w[a_lab]
    return reduce_loss(per_anchor.view(v, n).mean(0), reduction, sample_weight)


@register_loss("rescom")
class ResComLoss(Loss):
    """ResCom contrastive loss with its class-balanced queue.

    Owns a balanced :class:`MemoryQueue` (``queue_size_per_class`` keys per class). ``forward(features,
    labels)`` computes :func:`tailwise.functional.rescom_loss` against the queue's current keys, then
    enqueues the first view's features (detached, all ranks), as ResCom's builder.
    """

    def __init__(self, num_classes: int, dim: int, queue_size_per_class: int = 8, class_counts=None,
                 effective_num_beta: float = 0.999, num_positives: Optional[int] = None,
                 num_negatives: Optional[int] = None, temperature: float = 0.1, normalize: bool = False,
                 gather_distributed: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        from .queue import MemoryQueue
        self.queue = MemoryQueue(queue_size_per_class, dim, num_classes=num_classes, balanced=True)
        self.class_counts = None if class_counts is None else check_class_counts(class_counts, num_classes)
        self.kw = dict(effective_num_beta=effective_num_beta, num_positives=num_positives,
                       num_negatives=num_negatives, temperature=temperature, normalize=normalize,
                       gather_distributed=gather_distributed)

    def forward(self, features: Tensor, labels: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        qk = self.queue.keys if len(self.queue) else None
        loss = rescom_loss(features, labels, qk, self.queue.labels if qk is not None else None,
                           class_counts=self.class_counts, sample_weight=sample_weight, reduction=self.reduction, **self.kw)
        if self.training:
            feats = as_views(features.detach())
            f0 = feats[:, 0]
            if self.kw["normalize"]:
                f0 = torch.nn.functional.normalize(f0, dim=-1)
            self.queue.enqueue(f0, labels)
        return loss
