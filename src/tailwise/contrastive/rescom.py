"""ResCom pieces: class-balanced SupCon weights and supervised hard positive / negative mining."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import assert_values, check_class_counts, check_floating, check_positive, host_value_checks
from ..registry import register_loss
from ..classification.class_balanced import class_balanced_weights
from ._common import (as_views, check_features, check_labels, contrastive_rows, flatten_views, gather, host_selection,
                      keeps_feature_dtype)

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
                     num_negatives: Optional[int] = None, valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """ResCom's supervised hard mining on an ``(M, K)`` similarity matrix.

    Per row keeps the ``num_positives`` *least* similar positives and the ``num_negatives`` *most*
    similar negatives (``None``: all). Returns ``(pos, neg)`` of shapes ``(M, kp)`` and ``(M, kn)``;
    slots beyond a row's available pairs are ``nan``-free ``-inf`` placeholders marked by
    ``torch.isfinite``. ``valid`` ``(K,)`` bool (optional) leaves the other columns out of both
    sets (unfilled queue slots).
    """
    check_floating(sim, "sim", ndim=2)
    if positive.shape != sim.shape or positive.dtype != torch.bool:
        raise ValueError(f"positive must be a bool tensor of shape {tuple(sim.shape)}, got "
                         f"{tuple(positive.shape)} {positive.dtype}")
    k = sim.shape[1]
    kp = k if num_positives is None else min(int(num_positives), k)
    kn = k if num_negatives is None else min(int(num_negatives), k)
    inf = sim.new_full((), float("inf"))  # a device fill, not a host->device copy
    negative = ~positive
    if valid is not None:
        positive = positive & valid
        negative = negative & valid
    pos = -torch.topk(torch.where(positive, -sim, -inf), kp, dim=1).values
    pos = torch.where(torch.isfinite(pos), pos, -inf)
    neg = torch.topk(torch.where(negative, sim, -inf), kn, dim=1).values
    return pos, neg


@keeps_feature_dtype
@float32_compute
def rescom_loss(features: Tensor, labels: Tensor, queue: Optional[Tensor] = None,
                queue_labels: Optional[Tensor] = None, *, class_counts=None, effective_num_beta: float = 0.999,
                num_positives: Optional[int] = None, num_negatives: Optional[int] = None,
                temperature: float = 0.1, normalize: bool = False, gather_distributed: bool = False,
                sample_weight: Optional[Tensor] = None, reduction: str = "mean", chunk_size: Optional[int] = None,
                queue_mask: Optional[Tensor] = None) -> Tensor:
    r"""ResCom contrastive term (Zhong et al., arXiv 2203.11506; github dvlab-research/Imbalanced-Learning ``ResCom``).

    Every view is an anchor; its contrast set is the other views of the batch plus, from the
    (class-balanced) queue, only the ``num_positives`` hardest (least similar) same-class keys and the
    ``num_negatives`` hardest (most similar) other-class keys. Loss per anchor is the SupCon
    mean of :math:`-\log` softmax over positives (no temperature factor), weighted by the
    class-balanced weight of its class (:func:`rescom_class_weights` from ``class_counts``,
    ``effective_num_beta`` 0.999 as ``SiamBS_SPM``), averaged. Temperature 0.1 (config default).
    Not included: the Siamese Balanced Softmax classification term (``balsfx_n``) and the
    classifier CE; add a balanced-softmax loss on the logits yourself.

    ``queue_mask`` ``(K,)`` bool (optional) marks the queue rows to use (:meth:`MemoryQueue.masked`).
    """
    class_weights = None if class_counts is None else _class_weights_on(class_counts, effective_num_beta,
                                                                        features.device)
    return _rescom(features, labels, queue, queue_labels, queue_mask, class_weights, num_positives, num_negatives,
                   temperature, normalize, gather_distributed, sample_weight, reduction, chunk_size)


_WEIGHTS_CACHE: dict = {}


def _class_weights_on(class_counts, beta: float, device) -> Tensor:
    """:func:`rescom_class_weights` on ``device``; computed once per (counts, beta, device) for sequences."""
    if isinstance(class_counts, Tensor):
        return rescom_class_weights(class_counts, beta).to(device)
    if torch.compiler.is_compiling():
        # a python sequence is a constant of the traced graph: the same formula in python
        n = [float(c) for c in class_counts]
        if not n or not all(math.isfinite(c) and c > 0 for c in n) or not 0 <= beta < 1:
            raise ValueError("class_counts must be finite and positive and effective_num_beta in [0, 1)")
        u = [(1.0 - beta) / -math.expm1(c * math.log1p(beta - 1.0)) if beta > 0 else 1.0 for c in n]
        u = [x / sum(u) * len(u) for x in u]
        scale = sum(1.0 / x for x in u) / len(u)
        return torch.tensor([x * scale for x in u], dtype=torch.float64, device=device)
    try:
        key = (tuple(float(c) for c in class_counts), float(beta), str(torch.device(device)))
    except (TypeError, ValueError):
        return rescom_class_weights(class_counts, beta)  # raises the exact error
    hit = _WEIGHTS_CACHE.get(key)
    if hit is None:
        hit = rescom_class_weights(class_counts, beta).to(device)
        if len(_WEIGHTS_CACHE) >= 64:
            _WEIGHTS_CACHE.pop(next(iter(_WEIGHTS_CACHE)))
        _WEIGHTS_CACHE[key] = hit
    return hit


@float32_compute
def _rescom(features, labels, queue, queue_labels, queue_mask, class_weights, num_positives, num_negatives,
            temperature, normalize, gather_distributed, sample_weight, reduction, chunk_size):
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
    lse, dot, cnt = contrastive_rows(anchors, contrast, 1.0 / t, self_idx=self_idx, a_lab=a_lab,
                                     c_lab=labels_all.repeat(v), positives=True, symmetric=n_all == n,
                                     chunk_size=chunk_size)
    pos_sum = dot / t
    if queue is not None:
        check_floating(queue, "queue", ndim=2)
        if queue.shape[1] != d:
            raise ValueError(f"queue must have shape (K, {d}), got {tuple(queue.shape)}")
        ql = check_labels(queue_labels, queue.shape[0], "queue_labels", "queue")
        if queue_mask is not None and (queue_mask.dtype != torch.bool or tuple(queue_mask.shape) != (queue.shape[0],)):
            raise ValueError(f"queue_mask must be a bool tensor of shape ({queue.shape[0]},), got "
                             f"{tuple(queue_mask.shape)} {queue_mask.dtype}")
        sim = anchors @ queue.detach().to(anchors.dtype).t() / t
        hp, hn = hard_pair_mining(sim, a_lab[:, None] == ql[None, :].to(a_lab.device), num_positives, num_negatives,
                                  valid=None if queue_mask is None else queue_mask.to(sim.device))
        sel = torch.cat([hp, hn], 1)
        if queue_mask is None:
            lse = torch.logaddexp(lse, torch.logsumexp(sel, 1))
        else:
            # one logsumexp with the in-batch term as a column: a row whose queue columns are all
            # masked (-inf) then has a finite gradient (logsumexp of all -inf has a NaN one)
            lse = torch.logsumexp(torch.cat([lse.unsqueeze(1), sel], 1), 1)
        ok = torch.isfinite(hp)
        pos_sum = pos_sum + torch.where(ok, hp, torch.zeros_like(hp)).sum(1)
        cnt = cnt + ok.sum(1).to(cnt.dtype)
    has = cnt > 0
    safe_lse = torch.where(has, lse, torch.zeros_like(lse))
    per_anchor = torch.where(has, safe_lse - pos_sum / torch.where(has, cnt, torch.ones_like(cnt)),
                             torch.zeros_like(lse))
    if class_weights is not None:
        w = class_weights.to(per_anchor)
        msg = f"labels must be in [0, {w.shape[0] - 1}] (one class_counts entry per class)"
        if host_value_checks(labels):
            if labels.numel() and (int(labels.max()) >= w.shape[0] or int(labels.min()) < 0):
                raise ValueError(msg)
        elif labels.numel():
            assert_values(((labels >= 0) & (labels < w.shape[0])).all(), msg)
        per_anchor = per_anchor * w[a_lab.clamp(0, w.shape[0] - 1)]
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
        # a buffer (not saved: derived from class_counts) so that it follows .to(device)
        self.register_buffer("class_weights", None if class_counts is None else
                             rescom_class_weights(self.class_counts, effective_num_beta), persistent=False)
        self.kw = dict(effective_num_beta=effective_num_beta, num_positives=num_positives,
                       num_negatives=num_negatives, temperature=temperature, normalize=normalize,
                       gather_distributed=gather_distributed)

    def forward(self, features: Tensor, labels: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        kw = dict(self.kw)
        kw.pop("effective_num_beta")
        if host_selection(features, self.queue.queue):
            qk = self.queue.keys if len(self.queue) else None
            ql, qm = (self.queue.labels if qk is not None else None), None
        else:
            qk, ql, qm = self.queue.masked()
        loss = _rescom(features, labels, qk, ql, qm, self.class_weights, kw["num_positives"], kw["num_negatives"],
                       kw["temperature"], kw["normalize"], kw["gather_distributed"], sample_weight, self.reduction, None)
        if self.training:
            feats = as_views(features.detach())
            f0 = feats[:, 0]
            if self.kw["normalize"]:
                f0 = torch.nn.functional.normalize(f0, dim=-1)
            self.queue.enqueue(f0, labels)
        return loss
