"""Supervised contrastive loss (SupCon), fused and row-chunked."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_choice, check_positive, check_tensor
from ..registry import register_loss
from ..distributed import all_gather_no_grad, all_reduce_sum, is_dist_initialized
from ._common import (any_label_differs, as_views, check_features, check_labels, contrastive_rows, flatten_views,
                      gather, host_selection, keeps_feature_dtype, supcon_from_parts, zero_unless)

__all__ = ["supcon_loss", "SupConLoss"]


def _anchor_layout(local: Tensor, n_all: int, offset: int, contrast_mode: str):
    """Anchors (view-major) and the index of each anchor in the gathered, view-major contrast set."""
    n, v, _ = local.shape
    if contrast_mode == "all" and n_all == n:
        # unsharded: anchor r is contrast row r (one arange instead of an arange per view and a cat)
        return flatten_views(local), torch.arange(v * n, device=local.device), v
    base = torch.arange(n, device=local.device) + offset
    if contrast_mode == "one":
        return local[:, 0], base, 1
    anchors = flatten_views(local)
    self_idx = torch.cat([base + k * n_all for k in range(v)])
    return anchors, self_idx, v


@keeps_feature_dtype
@float32_compute
def supcon_loss(features: Tensor, labels: Optional[Tensor] = None, mask: Optional[Tensor] = None, *,
                temperature: float = 0.07, base_temperature: float = 0.07, contrast_mode: str = "all",
                normalize: bool = False, gather_distributed: bool = False, sample_weight: Optional[Tensor] = None,
                reduction: str = "mean", chunk_size: Optional[int] = None, ref_features: Optional[Tensor] = None,
                ref_labels: Optional[Tensor] = None, zero_if_no_negatives: bool = False) -> Tensor:
    r"""Supervised contrastive loss, Khosla et al. NeurIPS 2020 (arXiv 2004.11362).

    For every anchor :math:`i` (all ``V * N`` views with ``contrast_mode="all"``, view 0 with
    ``"one"``) against the contrast set of all ``V * N`` views :math:`A(i)` minus itself:

    .. math::
        \ell_i = -\frac{\tau}{\tau_b}\,\frac{1}{|P(i)|}\sum_{p \in P(i)}
        \log\frac{\exp(z_i \cdot z_p/\tau)}{\sum_{a \in A(i)} \exp(z_i \cdot z_a/\tau)}

    with :math:`P(i)` the other views of samples of the same label (or ``mask[i, j] > 0``
    weighted by ``mask[i, j]``). Same semantics as ``SupConLoss`` in github HobbitLong/SupContrast
    ``losses.py``: ``labels=None, mask=None`` is SimCLR's NT-Xent (positives are the other views of
    the same sample), the factor :math:`\tau / \tau_b` (``temperature / base_temperature``),
    an anchor without positives contributes 0 (their "edge case" fix) and still counts in the mean,
    and ``V = 1`` is allowed (positives are the other same-label samples).

    Computed as :math:`\ell_i = \mathrm{LSE}_{a}(z_i\cdot z_a/\tau) - \frac{1}{|P(i)|}
    z_i \cdot \sum_p z_p/\tau` with per-class feature sums for the positive term and a row-chunked
    logsumexp whose backward recomputes each block: no dense ``(VN, VN)`` float masks or
    probability matrices (see ``benchmarks/contrastive.py``).

    Args:
        features: L2-normalised ``(N, V, D)`` (or ``(N, D)`` for one view).
        labels: ``(N,)`` integer labels (exclusive with ``mask``).
        mask: ``(N, N)`` (``(N, N_total)`` when gathered) float/bool positive weights, may be
            asymmetric, as SupContrast's ``mask``.
        temperature: :math:`\tau` (0.07 as the reference). base_temperature: :math:`\tau_b` (0.07).
        contrast_mode: ``"all"`` or ``"one"``.
        normalize: L2-normalise ``features`` inside; otherwise non-unit rows raise ``ValueError``.
        gather_distributed: all-gather features (with gradient) and labels from every rank so the
            contrast set is the global batch; each rank's anchors are its own rows.
        sample_weight: optional per-sample weights ``(N,)``.
        reduction: ``"mean"`` (reference), ``"sum"`` or ``"none"`` (``(N,)``: each sample's loss
            averaged over its anchor views, so ``mean`` equals the reference's mean over anchors).
        chunk_size: rows per block of the fused logsumexp (default: about 4M elements per block).
        ref_features: optional ``(M, D)`` labelled reference set (pytorch-metric-learning's
            ``ref_emb``). The anchors are still ``features`` (every view, or view 0 with
            ``contrast_mode="one"``), but the contrast set :math:`A(i)` is the reference set and
            :math:`P(i)` its rows with the anchor's label. Nothing is excluded from :math:`A(i)`
            unless ``ref_labels is labels`` (the same tensor object): then, as pytorch-metric-learning
            (``get_matches_and_diffs``: ``if ref_labels is labels``), reference row ``i`` is left
            out for the anchors of sample ``i`` (``M`` then equals ``N``). Needs ``labels``; not
            combinable with ``mask`` (``ValueError``). With ``gather_distributed=True`` the
            reference set is all-gathered (with gradient) like ``features`` in PML's
            ``DistributedLossWrapper``: local anchors against the global reference set.
        ref_labels: ``(M,)`` integer labels of ``ref_features`` (given together with it).
        zero_if_no_negatives: return 0 (with a graph, gradient 0) when the batch has no negative
            pair at all, i.e. every contrast row shares the anchor's label, as
            pytorch-metric-learning's ``SupConLoss`` does; by default (SupContrast) such a batch
            still gives :math:`\ell_i = \mathrm{LSE}_{p}(z_i\cdot z_p/\tau) - \mathrm{mean}_p(z_i\cdot
            z_p/\tau) \ge 0`. "The batch" is the global one under ``gather_distributed`` (labels
            are gathered anyway; an explicit ``mask`` costs one all-reduce of a flag). A contrast
            column is a negative when it is not the anchor itself and its positive weight (label
            match or ``mask`` entry) is 0. Decided on the device (``torch.where``), no host sync.

    pytorch-metric-learning's ``SupConLoss(temperature=t)`` is ``supcon_loss(features, labels,
    temperature=t, base_temperature=t, normalize=True, zero_if_no_negatives=True,
    reduction="none")`` averaged over its non-zero entries (its ``AvgNonZeroReducer``);
    tailwise's ``"mean"`` averages over every anchor, as SupContrast does.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from tailwise.functional import supcon_loss
        >>> z = F.normalize(torch.randn(8, 2, 16), dim=-1).requires_grad_()
        >>> loss = supcon_loss(z, torch.tensor([0, 1, 0, 1, 2, 2, 3, 3]))
        >>> loss.backward()
    """
    t = check_positive(temperature, "temperature")
    tb = check_positive(base_temperature, "base_temperature")
    check_choice(contrast_mode, "contrast_mode", ("all", "one"))
    # pytorch-metric-learning's self-exclusion test is object identity of the label tensors:
    # decide it before any conversion can make a copy
    ref_is_batch = ref_labels is not None and ref_labels is labels
    feats = as_views(check_features(features, normalize=normalize))
    n, v, _ = feats.shape
    if labels is not None and mask is not None:
        raise ValueError("pass labels or mask, not both")
    if labels is not None:
        labels = check_labels(labels, n)
    if ref_features is not None or ref_labels is not None:
        per_anchor, n_anchor_views, has_neg = _supcon_ref(
            feats, labels, mask, ref_features, ref_labels, ref_is_batch, t, contrast_mode, normalize,
            gather_distributed, chunk_size, zero_if_no_negatives)
        per_sample = per_anchor.view(n_anchor_views, n).mean(0)
        if t != tb:
            per_sample = per_sample * (t / tb)
        if zero_if_no_negatives:
            per_sample = zero_unless(per_sample, has_neg)
        return reduce_loss(per_sample, reduction, sample_weight)
    feats_all, labels_all, offset = gather(feats, labels, gather_distributed)
    n_all = feats_all.shape[0]
    # unsharded "all": the anchors are the contrast rows (the Triton backward then takes one pass)
    sym = contrast_mode == "all" and n_all == n
    # Off eager CPU, an unsharded "all" batch with labels takes its rows sample-major (row i * V + k):
    # a view of contiguous features, where the view-major layout of SupContrast costs a copy of the
    # features forward, of their gradient backward, and a second copy for the anchors. The loss
    # is the same sum over the same pairs (rounding aside). Eager CPU keeps the view-major rows:
    # its gradients accumulate in an order that depends on the layout, and CPU results stay
    # bitwise what they were.
    sample_major = sym and mask is None and not host_selection(feats)
    if sample_major:
        contrast = feats.reshape(n * v, feats.shape[-1])
        anchors, self_idx, n_anchor_views = contrast, torch.arange(n * v, device=feats.device), v
    else:
        contrast = flatten_views(feats_all)
        anchors, self_idx, n_anchor_views = _anchor_layout(feats, n_all, offset, contrast_mode)
    has_neg = False
    if mask is not None:
        check_tensor(mask, "mask", ndim=2)
        if tuple(mask.shape) != (n, n_all):
            raise ValueError(f"mask must have shape ({n}, {n_all}) (local rows x all rows), "
                             f"got {tuple(mask.shape)}")
        # the dense mask is (N, N_all) already: positives come from it, the kernel gives the lse
        lse, _, _ = contrastive_rows(anchors, contrast, 1.0 / t, self_idx=self_idx, symmetric=sym,
                                     chunk_size=chunk_size)
        m = mask.to(contrast.dtype)
        pos_vec = m @ feats_all.sum(1)                              # (N, D) over all views
        diag = m[torch.arange(n, device=m.device), torch.arange(n, device=m.device) + offset]
        pos_vec = pos_vec.repeat(n_anchor_views, 1) - anchors * diag.repeat(n_anchor_views)[:, None]
        dot = (anchors * pos_vec).sum(-1)
        cnt = (v * m.sum(1) - diag).repeat(n_anchor_views)
        if zero_if_no_negatives:
            # negatives of sample i's anchors: the V views of every zero-weight column, but never the anchor
            neg = v * (m == 0).sum(1) - (diag == 0).to(torch.long)
            has_neg = (neg > 0).any()
            if gather_distributed and is_dist_initialized():
                has_neg = all_reduce_sum(has_neg.to(torch.float32)) > 0
    else:
        if labels is None:
            # SimCLR: every sample is its own class
            labels_all = torch.arange(n_all, device=feats.device)
            labels = labels_all[offset:offset + n]
        c_lab = labels_all.repeat_interleave(v) if sample_major else labels_all.repeat(v)
        # symmetric: the anchor labels are the contrast labels (the same tensor, one repeat)
        a_lab = c_lab if sym else labels.repeat(n_anchor_views)
        lse, dot, cnt = contrastive_rows(anchors, contrast, 1.0 / t, self_idx=self_idx, a_lab=a_lab, c_lab=c_lab,
                                         positives=True, symmetric=sym, chunk_size=chunk_size)
        if zero_if_no_negatives:
            # every sample's views are anchors and contrast rows: a negative pair is two labels
            has_neg = any_label_differs(labels_all)
    per_anchor = supcon_from_parts(lse, dot, cnt, 1.0 / t)
    if t != tb:  # x * 1.0 is x, value and gradient: skip the two launches in the default t == tb
        per_anchor = per_anchor * (t / tb)
    if sample_major:
        if reduction == "mean" and sample_weight is None and not zero_if_no_negatives and per_anchor.numel():
            # the mean over samples of the mean over their V views is the mean over all anchors:
            # one reduction, one backward division
            return per_anchor.mean()
        per_sample = per_anchor.view(n, v).mean(1)
    else:
        per_sample = per_anchor.view(n_anchor_views, n).mean(0)
    if zero_if_no_negatives:
        per_sample = zero_unless(per_sample, has_neg)
    return reduce_loss(per_sample, reduction, sample_weight)


def _supcon_ref(feats: Tensor, labels: Optional[Tensor], mask: Optional[Tensor], ref_features, ref_labels,
                ref_is_batch: bool, t: float, contrast_mode: str, normalize: bool, gather_distributed: bool,
                chunk_size: Optional[int], zero_if_no_negatives: bool):
    """Anchors of ``feats`` against a labelled reference set: (per-anchor loss, anchor views, has_neg)."""
    n, v, d = feats.shape
    if ref_features is None or ref_labels is None:
        raise ValueError("ref_features and ref_labels must be given together")
    if mask is not None:
        raise ValueError("mask cannot be combined with ref_features/ref_labels: the positives against a "
                         "reference set come from labels and ref_labels")
    if labels is None:
        raise ValueError("labels are required with ref_features/ref_labels (the positives are the "
                         "reference rows with the anchor's label)")
    ref = check_features(ref_features, "ref_features", ndim=2, normalize=normalize)
    if ref.shape[1] != d:
        raise ValueError(f"ref_features must have shape (M, {d}) (the feature size of features), "
                         f"got shape {tuple(ref.shape)}")
    ref_lab = check_labels(ref_labels, ref.shape[0], "ref_labels", "ref_features")
    ref_all, ref_lab_all, ref_offset = gather(ref.to(feats.dtype), ref_lab, gather_distributed)
    if contrast_mode == "one":
        anchors, n_anchor_views = feats[:, 0], 1
    else:
        anchors, n_anchor_views = flatten_views(feats), v
    self_idx = None
    if ref_is_batch:
        # ref_labels is labels, so M == N here: reference row i is sample i's own row
        self_idx = (torch.arange(n, device=feats.device) + ref_offset).repeat(n_anchor_views)
    lse, dot, cnt = contrastive_rows(anchors, ref_all, 1.0 / t, self_idx=self_idx,
                                     a_lab=labels.repeat(n_anchor_views), c_lab=ref_lab_all, positives=True,
                                     chunk_size=chunk_size)
    has_neg = False
    if zero_if_no_negatives:
        labels_all = labels
        if gather_distributed and is_dist_initialized():
            labels_all = all_gather_no_grad(labels)
        # the excluded self column shares the anchor's label, so it never was a negative
        has_neg = any_label_differs(labels_all, ref_lab_all)
    return supcon_from_parts(lse, dot, cnt, 1.0 / t), n_anchor_views, has_neg


@register_loss("supcon")
class SupConLoss(Loss):
    r"""Supervised contrastive loss (SupCon); see :func:`tailwise.functional.supcon_loss`.

    ``forward(features, labels=None, mask=None, sample_weight=None, ref_features=None,
    ref_labels=None)`` with features ``(N, V, D)`` and an optional labelled reference set
    ``(M, D)`` / ``(M,)`` as the contrast set (pytorch-metric-learning's ``ref_emb``/``ref_labels``).

    Example:
        >>> import torch, torch.nn.functional as F, tailwise
        >>> crit = tailwise.SupConLoss(temperature=0.1)
        >>> z = F.normalize(torch.randn(6, 2, 8), dim=-1)
        >>> loss = crit(z, torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> bank = F.normalize(torch.randn(10, 8), dim=-1)
        >>> loss = crit(z, torch.tensor([0, 0, 1, 1, 2, 2]), ref_features=bank, ref_labels=torch.arange(10) % 3)
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07, contrast_mode: str = "all",
                 normalize: bool = False, gather_distributed: bool = False, reduction: str = "mean",
                 chunk_size: Optional[int] = None, zero_if_no_negatives: bool = False) -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")
        self.base_temperature = check_positive(base_temperature, "base_temperature")
        check_choice(contrast_mode, "contrast_mode", ("all", "one"))
        self.contrast_mode = contrast_mode
        self.normalize = normalize
        self.gather_distributed = gather_distributed
        self.chunk_size = chunk_size
        self.zero_if_no_negatives = bool(zero_if_no_negatives)

    def forward(self, features: Tensor, labels: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                sample_weight: Optional[Tensor] = None, ref_features: Optional[Tensor] = None,
                ref_labels: Optional[Tensor] = None) -> Tensor:
        return supcon_loss(features, labels, mask, temperature=self.temperature,
                           base_temperature=self.base_temperature, contrast_mode=self.contrast_mode,
                           normalize=self.normalize, gather_distributed=self.gather_distributed,
                           sample_weight=sample_weight, reduction=self.reduction, chunk_size=self.chunk_size,
                           ref_features=ref_features, ref_labels=ref_labels,
                           zero_if_no_negatives=self.zero_if_no_negatives)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
                f"contrast_mode={self.contrast_mode!r}, reduction={self.reduction!r}"
                + (", zero_if_no_negatives=True" if self.zero_if_no_negatives else ""))
