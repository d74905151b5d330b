"""Decoupled contrastive learning (DCL) and its weighted form (DCLW)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_positive
from ..registry import register_loss
from ._common import check_features, contrastive_rows, flatten_views, gather, keeps_feature_dtype

__all__ = ["dcl_loss", "dclw_loss", "DCLLoss", "DCLWLoss"]


def _dcl(features, temperature, sigma, normalize, gather_distributed, sample_weight, reduction, chunk_size):
    t = check_positive(temperature, "temperature")
    check_floating(features, "features", ndim=3)
    if features.shape[1] != 2:
        raise ValueError(f"features must have shape (N, 2, D) (two views), got {tuple(features.shape)}")
    feats = check_features(features, normalize=normalize)
    n = feats.shape[0]
    feats_all, _, offset = gather(feats, None, gather_distributed)
    n_all = feats_all.shape[0]
    if n_all < 2:
        # no negative exists (a batch of 1 over all ranks): the log-sum over the empty negative set
        # is -inf; the official mask constant log(1e-45) only gives an arbitrary finite number.
        # Nothing to contrast against: 0 per sample, with a grad_fn and zero gradient.
        return reduce_loss((feats * 0.0).sum((1, 2)), reduction, sample_weight)
    contrast = flatten_views(feats_all)                      # [z1 of all; z2 of all]
    anchors = flatten_views(feats)                           # [z1 local; z2 local]
    base = torch.arange(n, device=feats.device) + offset
    own = torch.cat([base, base + n_all])
    other = torch.cat([base + n_all, base])
    # decoupling: both the anchor itself and its positive leave the denominator
    neg, _, _ = contrastive_rows(anchors, contrast, 1.0 / t, self_idx=torch.stack([own, other], 1),
                                 symmetric=n_all == n, chunk_size=chunk_size)
    pos = (feats[:, 0] * feats[:, 1]).sum(-1) / t            # (N,), same for both directions
    if sigma is not None:
        # w_i = 2 - exp(z1.z2/sigma) / mean_j exp(z1_j.z2_j/sigma) over the (global) batch
        pos_all = (feats_all[:, 0] * feats_all[:, 1]).sum(-1) / sigma
        w_all = 2.0 - n_all * torch.softmax(pos_all, 0)
        pos = pos * w_all[offset:offset + n]
    loss = (neg.view(2, n) - pos).sum(0)                     # official: loss(z1, z2) + loss(z2, z1)
    return reduce_loss(loss, reduction, sample_weight)


@keeps_feature_dtype
@float32_compute
def dcl_loss(features: Tensor, *, temperature: float = 0.1, normalize: bool = False,
             gather_distributed: bool = False, sample_weight: Optional[Tensor] = None, reduction: str = "mean",
             chunk_size: Optional[int] = None) -> Tensor:
    r"""Decoupled contrastive loss, Yeh et al. ECCV 2022 (arXiv 2110.06848).

    NT-Xent with the positive removed from the denominator, summed over both directions:

    .. math::
        \ell_i = \sum_{(u,v)\in\{(1,2),(2,1)\}} \Big[-z^{u}_i\cdot z^{v}_i/\tau
        + \log\sum_{j\ne i}\big(e^{z^u_i\cdot z^u_j/\tau} + e^{z^u_i\cdot z^v_j/\tau}\big)\Big].

    Follows ``loss/dcl.py`` of github raminnakhli/Decoupled-Contrastive-Learning (the code the
    paper links): temperature 0.1, the two one-way losses are summed. ``reduction="none"`` gives
    ``(N,)``. Features ``(N, 2, D)`` L2-normalised.

    A batch of 1 (over all ranks) has no negative: the sum over :math:`j \ne i` is empty and the
    formula gives :math:`-\infty` (the official code's ``log(1e-45)`` mask turns that into an
    arbitrary finite value). tailwise returns 0 for it (zero gradient), as an anchor with nothing
    to contrast against carries no signal. Same for :func:`dclw_loss`.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from tailwise.functional import dcl_loss
        >>> loss = dcl_loss(F.normalize(torch.randn(8, 2, 16), dim=-1))
    """
    return _dcl(features, temperature, None, normalize, gather_distributed, sample_weight, reduction, chunk_size)


@keeps_feature_dtype
@float32_compute
def dclw_loss(features: Tensor, *, temperature: float = 0.1, sigma: float = 0.5, normalize: bool = False,
              gather_distributed: bool = False, sample_weight: Optional[Tensor] = None, reduction: str = "mean",
              chunk_size: Optional[int] = None) -> Tensor:
    r"""Weighted DCL (DCLW): the positive term is scaled by a von Mises-Fisher weight

    .. math:: w_i = 2 - \frac{\exp(z^1_i\cdot z^2_i/\sigma)}{\frac1N\sum_j \exp(z^1_j\cdot z^2_j/\sigma)},
        \qquad \sigma = 0.5,

    as in the paper (mean weight 1). **Difference from raminnakhli's code**: it uses
    ``2 - softmax(...)`` without the factor ``N`` (weights ~2 for any batch), which contradicts the
    paper's expectation in the denominator; tailwise follows the paper. The weight is not detached
    (as that code).
    """
    s = check_positive(sigma, "sigma")
    return _dcl(features, temperature, s, normalize, gather_distributed, sample_weight, reduction, chunk_size)


@register_loss("dcl")
class DCLLoss(Loss):
    """Decoupled contrastive loss; see :func:`tailwise.functional.dcl_loss`."""

    def __init__(self, temperature: float = 0.1, normalize: bool = False, gather_distributed: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.normalize, self.gather_distributed = normalize, gather_distributed

    def forward(self, features: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dcl_loss(features, temperature=self.temperature, normalize=self.normalize,
                        gather_distributed=self.gather_distributed, sample_weight=sample_weight, reduction=self.reduction)


@register_loss("dclw")
class DCLWLoss(Loss):
    """Weighted decoupled contrastive loss (sigma=0.5); see :func:`tailwise.functional.dclw_loss`."""

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, normalize: bool = False,
                 gather_distributed: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.sigma = check_positive(sigma, "sigma")
        self.normalize, self.gather_distributed = normalize, gather_distributed

    def forward(self, features: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return dclw_loss(features, temperature=self.temperature, sigma=self.sigma, normalize=self.normalize,
                         gather_distributed=self.gather_distributed, sample_weight=sample_weight, reduction=self.reduction)
