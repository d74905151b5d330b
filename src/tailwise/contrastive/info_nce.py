"""InfoNCE / NT-Xent (SimCLR) and the MoCo queue form."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_positive
from ..registry import register_loss
from ._common import check_features, contrastive_rows, host_selection, keeps_feature_dtype
from .supcon import supcon_loss

__all__ = ["info_nce_loss", "InfoNCELoss"]


@keeps_feature_dtype
@float32_compute
def info_nce_loss(features: Tensor, queue: Optional[Tensor] = None, *, temperature: float = 0.07,
                  normalize: bool = False, gather_distributed: bool = False, sample_weight: Optional[Tensor] = None,
                  reduction: str = "mean", chunk_size: Optional[int] = None,
                  queue_mask: Optional[Tensor] = None) -> Tensor:
    r"""InfoNCE over two views.

    * ``queue=None``: NT-Xent of SimCLR (Chen et al. 2020): every one of the ``2N`` views is an
      anchor whose positive is the other view of the same sample and whose negatives are the other
      ``2N - 2`` views, :math:`\ell_i = -\log\frac{e^{z_i\cdot z_{i^+}/\tau}}{\sum_{a\ne i} e^{z_i\cdot z_a/\tau}}`.
      Identical to :func:`supcon_loss` without labels and with ``base_temperature = temperature``.
      With ``gather_distributed`` the negatives are the global batch's views.
    * ``queue`` ``(K, D)`` given: MoCo (He et al. 2020, arXiv 1911.05722): view 0 is the query
      :math:`q`, view 1 its key :math:`k`, the queue holds negatives (detached):
      :math:`\ell = -\log\frac{e^{q\cdot k/\tau}}{e^{q\cdot k/\tau} + \sum_j e^{q\cdot n_j/\tau}}`.
      No in-batch negatives, as the official MoCo; gradients reach the key only if it has them.

    ``queue_mask`` ``(K,)`` bool marks the queue rows to use (e.g. :meth:`MemoryQueue.masked`'s
    filled rows); the others are left out of the denominator without a data-dependent selection.

    ``temperature`` defaults to 0.07 (MoCo v1's ``--moco-t``; SimCLR uses 0.1 to 0.5).
    ``reduction="none"`` gives ``(N,)`` (mean over the two anchor views for NT-Xent).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from tailwise.functional import info_nce_loss
        >>> z = F.normalize(torch.randn(4, 2, 8), dim=-1)
        >>> loss = info_nce_loss(z, temperature=0.5)
    """
    t = check_positive(temperature, "temperature")
    check_floating(features, "features", ndim=3)
    if features.shape[1] != 2:
        raise ValueError(f"features must have shape (N, 2, D) (two views), got {tuple(features.shape)}")
    if queue is None:
        return supcon_loss(features, temperature=t, base_temperature=t, normalize=normalize,
                           gather_distributed=gather_distributed, sample_weight=sample_weight, reduction=reduction,
                           chunk_size=chunk_size)
    feats = check_features(features, normalize=normalize)
    check_floating(queue, "queue", ndim=2)
    if queue.shape[1] != feats.shape[2]:
        raise ValueError(f"queue must have shape (K, {feats.shape[2]}), got {tuple(queue.shape)}")
    col_bias = None
    if queue_mask is not None:
        if queue_mask.dtype != torch.bool or tuple(queue_mask.shape) != (queue.shape[0],):
            raise ValueError(f"queue_mask must be a bool tensor of shape ({queue.shape[0]},), got "
                             f"{tuple(queue_mask.shape)} {queue_mask.dtype}")
        col_bias = torch.zeros(queue.shape[0], dtype=feats.dtype, device=feats.device).masked_fill_(
            ~queue_mask.to(feats.device), float("-inf"))
    q, k = feats[:, 0], feats[:, 1]
    pos = (q * k).sum(-1) / t
    neg, _, _ = contrastive_rows(q, queue.detach().to(q.dtype), 1.0 / t, col_bias=col_bias, chunk_size=chunk_size)
    loss = torch.logaddexp(pos, neg) - pos
    return reduce_loss(loss, reduction, sample_weight)


@register_loss("info_nce")
class InfoNCELoss(Loss):
    """InfoNCE / NT-Xent, optionally with a :class:`MemoryQueue` of negatives.

    ``forward(features, queue=None, sample_weight=None)``; ``queue`` may be a tensor or a
    :class:`MemoryQueue` (its filled keys are used). See :func:`tailwise.functional.info_nce_loss`.
    """

    def __init__(self, temperature: float = 0.07, normalize: bool = False, gather_distributed: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.normalize = normalize
        self.gather_distributed = gather_distributed

    def forward(self, features: Tensor, queue=None, sample_weight: Optional[Tensor] = None) -> Tensor:
        mask = None
        if queue is not None and not isinstance(queue, Tensor):
            if not hasattr(queue, "masked"):  # a list used to raise AttributeError
                raise TypeError(f"queue must be a (K, D) tensor of keys or a MemoryQueue, got {type(queue).__name__}")
            if host_selection(features, queue.queue):
                queue = queue.keys
            else:
                queue, _, mask = queue.masked()
        return info_nce_loss(features, queue, temperature=self.temperature, normalize=self.normalize,
                             gather_distributed=self.gather_distributed, sample_weight=sample_weight, reduction=self.reduction,
                             queue_mask=mask)
