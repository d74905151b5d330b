"""NT-Xent with several positives per anchor, each positive pair scored against the anchor's
negatives only (pytorch-metric-learning's ``NTXentLoss`` semantics), optionally against a
separate labelled reference set."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._validation import check_positive
from ..registry import register_loss
from ._common import any_label_differs, check_features, check_labels, zero_unless

__all__ = ["ntxent_loss", "NTXentLoss"]


@float32_compute
def ntxent_loss(features: Tensor, labels: Tensor, *, ref_features: Optional[Tensor] = None,
                ref_labels: Optional[Tensor] = None, temperature: float = 0.07, normalize: bool = False,
                zero_if_no_negatives: bool = False) -> Tensor:
    r"""NT-Xent over every positive pair, in pytorch-metric-learning's form.

    For each anchor ``a`` and each positive ``p`` (same label, ``p != a``), with cosine
    similarities :math:`s` and the anchor's negatives :math:`N(a)` (different labels):

    .. math::
        \ell_{ap} = -\log \frac{e^{s_{ap}/\tau}}{e^{s_{ap}/\tau} + \sum_{n \in N(a)} e^{s_{an}/\tau}}

    and the loss is the mean over all positive pairs. Unlike :func:`supcon_loss`, the other
    positives of the anchor are **not** in the denominator. An anchor without negatives gives
    :math:`\ell = 0` for its pairs, and a batch without positive pairs gives 0 (with a graph), as
    pytorch-metric-learning's ``NTXentLoss`` (default ``temperature=0.07``, ``MeanReducer`` over
    positive pairs; it adds the smallest float inside the log, tailwise computes the exact
    log-sum-exp).

    With ``ref_features``/``ref_labels`` (PML's ``ref_emb``/``ref_labels``) anchors are scored
    against that reference set instead of the batch itself. No pair is excluded unless
    ``ref_labels is labels`` (the same tensor object), in which case reference row ``i`` is not a
    positive of anchor ``i``, exactly as PML (``get_matches_and_diffs``: ``if ref_labels is
    labels``); it is never a negative either, having the anchor's label.

    Args:
        features: ``(N, D)`` embeddings; unit-norm unless ``normalize=True`` (pytorch-metric-learning
            normalises inside its cosine similarity: pass ``normalize=True`` for its behaviour).
        labels: ``(N,)`` integer labels.
        ref_features, ref_labels: optional ``(M, D)`` / ``(M,)`` reference set.
        temperature: :math:`\tau`.
        zero_if_no_negatives: return ``0 * loss`` where the batch has no negative pair, as PML's
            early return. The value is the same without it, since with no negatives every pair
            scores :math:`-\log 1 = 0` exactly; the option exists so one flag means the same for
            :func:`supcon_loss` and here. Decided on the device, no host sync.

    Example:
        >>> import torch, tailwise
        >>> z = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
        >>> loss = tailwise.functional.ntxent_loss(z, torch.tensor([0, 0, 1, 1, 2, 2]))
    """
    feats = check_features(features, "features", ndim=2, normalize=normalize)
    labels = check_labels(labels, feats.shape[0])
    tau = check_positive(temperature, "temperature")
    if (ref_features is None) != (ref_labels is None):
        raise ValueError("ref_features and ref_labels must be given together")
    if ref_features is None:
        ref, ref_lab = feats, labels
    else:
        ref = check_features(ref_features, "ref_features", ndim=2, normalize=normalize)
        if ref.shape[1] != feats.shape[1]:
            raise ValueError(f"ref_features must have {feats.shape[1]} columns (as features), got shape "
                             f"{tuple(ref.shape)}")
        ref_lab = check_labels(ref_labels, ref.shape[0], "ref_labels", "ref_features")
    logits = feats @ ref.to(feats.dtype).t() / tau
    same = labels[:, None] == ref_lab[None, :]
    pos = same
    if ref_features is None or ref_labels is labels:  # PML's identity test (then M == N)
        eye = torch.eye(feats.shape[0], dtype=torch.bool, device=feats.device)
        pos = same & ~eye
    neg_inf = torch.full_like(logits, float("-inf"))
    neg_lse = torch.logsumexp(torch.where(same, neg_inf, logits), dim=1, keepdim=True)
    pair = torch.logaddexp(logits, neg_lse) - logits           # -log(e^s / (e^s + sum_neg e^s_n))
    pair = torch.where(pos, pair, torch.zeros_like(pair))
    loss = pair.sum() / pos.sum().clamp_min(1).to(pair.dtype)
    if zero_if_no_negatives:
        loss = zero_unless(loss, any_label_differs(labels, ref_lab))
    return loss


@register_loss("ntxent")
class NTXentLoss(Loss):
    """pytorch-metric-learning-style NT-Xent; see :func:`tailwise.functional.ntxent_loss`.

    Example:
        >>> import torch, tailwise
        >>> crit = tailwise.NTXentLoss(temperature=0.1, normalize=True)
        >>> loss = crit(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]))
    """

    def __init__(self, temperature: float = 0.07, normalize: bool = False, reduction: str = "mean",
                 zero_if_no_negatives: bool = False) -> None:
        if reduction != "mean":  # a mean over positive pairs; accepted for build_loss(..., reduction=)
            raise ValueError(f"NTXentLoss supports reduction='mean' only, got {reduction!r}")
        super().__init__("mean")
        self.temperature = check_positive(temperature, "temperature")
        self.normalize = bool(normalize)
        self.zero_if_no_negatives = bool(zero_if_no_negatives)

    def forward(self, features: Tensor, labels: Tensor, ref_features: Optional[Tensor] = None,
                ref_labels: Optional[Tensor] = None) -> Tensor:
        return ntxent_loss(features, labels, ref_features=ref_features, ref_labels=ref_labels,
                           temperature=self.temperature, normalize=self.normalize,
                           zero_if_no_negatives=self.zero_if_no_negatives)
