"""Balanced contrastive learning (BCL): class-averaged denominator and class-complement prototypes."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_positive
from ..registry import register_loss
from ._common import (as_views, check_features, check_label_range, contrastive_rows, flatten_views, gather,
                      keeps_feature_dtype)

__all__ = ["bcl_loss", "BCLLoss"]


@keeps_feature_dtype
@float32_compute
def bcl_loss(features: Tensor, labels: Tensor, centers: Tensor, *, temperature: float = 0.07,
             normalize: bool = False, gather_distributed: bool = False, sample_weight: Optional[Tensor] = None,
             reduction: str = "mean", chunk_size: Optional[int] = None) -> Tensor:
    r"""Balanced supervised contrastive loss, Zhu et al. CVPR 2022 (github FlamieZhu/Balanced-Contrastive-Learning,
    ``loss/contrastive.py`` ``BalSCL``).

    The contrast set is every view plus one prototype per class (``centers``, class-complement:
    every class appears in every batch). Each term of the denominator is divided by how many
    members its class has in that set (class-averaging), the anchor excluded from its own class:

    .. math::
        \ell_i = -\frac{1}{|P(i)|}\sum_{p\in P(i)} \log\frac{e^{z_i\cdot z_p/\tau}}
        {\sum_{c}\frac{1}{|B_c| - [c = y_i]}\sum_{a\in B_c\setminus\{i\}} e^{z_i\cdot z_a/\tau}}

    :math:`P(i)` holds the other same-class views and the own-class prototype (never empty, so no
    NaN). Temperature 0.07 as BCL's ``main.py``. Generalised to ``V`` views (official: 2); no
    ``base_temperature`` factor (as the official). With ``gather_distributed`` the class counts
    and the contrast set are the global batch's.

    Args:
        features: L2-normalised ``(N, V, D)``. labels: ``(N,)`` in ``[0, C)``.
        centers: L2-normalised prototypes ``(C, D)`` (BCL: the classifier weights through a head).
        reduction: ``"none"`` gives ``(N,)`` (mean over the sample's views).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from tailwise.functional import bcl_loss
        >>> z = F.normalize(torch.randn(6, 2, 8), dim=-1)
        >>> loss = bcl_loss(z, torch.tensor([0, 1, 2, 0, 1, 1]), F.normalize(torch.randn(3, 8), dim=-1))
    """
    t = check_positive(temperature, "temperature")
    feats = as_views(check_features(features, normalize=normalize))
    n, v, d = feats.shape
    centers = check_features(centers, "centers", ndim=2, normalize=normalize)
    if centers.shape[1] != d:
        raise ValueError(f"centers must have shape (C, {d}), got {tuple(centers.shape)}")
    num_classes = centers.shape[0]
    check_label_range(labels, num_classes, "labels")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    labels = labels.long()
    feats_all, labels_all, offset = gather(feats, labels, gather_distributed)
    n_all = feats_all.shape[0]
    class_ids = torch.arange(num_classes, device=feats.device)
    contrast = torch.cat([flatten_views(feats_all), centers.to(feats.dtype)])
    c_lab = torch.cat([labels_all.repeat(v), class_ids])
    anchors = flatten_views(feats)
    a_lab = labels.repeat(v)
    base = torch.arange(n, device=feats.device) + offset
    self_idx = torch.cat([base + k * n_all for k in range(v)])
    # index_add, not bincount: bincount's output size depends on max(c_lab) (a host read on CUDA)
    counts = torch.zeros(num_classes, dtype=feats.dtype, device=feats.device).index_add_(
        0, c_lab, torch.ones(c_lab.shape, dtype=feats.dtype, device=feats.device))
    col_bias = -torch.log(counts)[c_lab]
    same = torch.where(counts > 1, torch.log(counts / (counts - 1).clamp_min(1)), torch.zeros_like(counts))[c_lab]
    lse, dot, cnt = contrastive_rows(anchors, contrast, 1.0 / t, col_bias=col_bias, self_idx=self_idx, a_lab=a_lab,
                                     c_lab=c_lab, same_bias=same, positives=True, chunk_size=chunk_size)
    per_anchor = lse - dot / (t * cnt)
    return reduce_loss(per_anchor.view(v, n).mean(0), reduction, sample_weight)


@register_loss("bcl")
class BCLLoss(Loss):
    """Balanced contrastive loss; ``forward(features, labels, centers, sample_weight=None)``.

    See :func:`tailwise.functional.bcl_loss`. BCL's total objective adds a logit-adjusted
    cross-entropy on the classifier, weighted against this loss as in the official ``main.py``.
    """

    def __init__(self, temperature: float = 0.07, normalize: bool = False, gather_distributed: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.normalize, self.gather_distributed = normalize, gather_distributed

    def forward(self, features: Tensor, labels: Tensor, centers: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return bcl_loss(features, labels, centers, temperature=self.temperature, normalize=self.normalize,
                        gather_distributed=self.gather_distributed, sample_weight=sample_weight, reduction=self.reduction)
