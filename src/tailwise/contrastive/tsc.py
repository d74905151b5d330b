"""Targeted supervised contrastive learning (TSC): uniform targets on the hypersphere, assigned to classes."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_nonnegative, check_positive
from ..distributed import all_gather_no_grad, is_dist_initialized
from ..registry import register_loss
from ._common import (as_views, check_features, check_label_range, check_labels, contrastive_rows, flatten_views,
                      gather, keeps_feature_dtype)

__all__ = ["tsc_loss", "TSCLoss", "tsc_targets", "assign_targets", "linear_sum_assignment"]


def tsc_targets(num_targets: int, dim: int, *, steps: int = 10000, lr: float = 1e-3, temperature: float = 0.07,
                seed: int = 0) -> Tensor:
    r"""Well-spread unit vectors: minimise :math:`\frac1T\sum_i\log\sum_j e^{t_i\cdot t_j/\tau}`.

    As ``target_generation.py`` of github LTH14/targeted-supcon: ``x ~ N(0, I)`` optimised with Adam
    (lr 1e-3, 10000 steps, tau 0.07) through ``F.normalize``; the best iterate is returned
    ``(num_targets, dim)``, float32, unit rows. Deterministic for a given ``seed``.
    """
    if num_targets < 1 or dim < 1:
        raise ValueError(f"num_targets and dim must be >= 1, got {num_targets}, {dim}")
    check_positive(temperature, "temperature")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_targets, dim, generator=g).requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    best, best_loss = F.normalize(x.detach(), dim=1), float("inf")
    with torch.enable_grad():
        for _ in range(int(steps)):
            xn = F.normalize(x, dim=1)
            loss = torch.logsumexp(xn @ xn.t() / temperature, dim=1).mean()
            if loss.item() < best_loss:
                best_loss, best = loss.item(), xn.detach().clone()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return best


def linear_sum_assignment(cost) -> np.ndarray:
    """Minimum-cost assignment of each row to a distinct column (rows <= columns), Hungarian method.

    Pure numpy (O(n^2 m), inner loop vectorised), so the core needs no scipy. Returns the column of
    every row. Used by :func:`assign_targets`; equals ``scipy.optimize.linear_sum_assignment``'s
    optimum.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] > c.shape[1]:
        raise ValueError(f"cost must be 2-D with rows <= columns, got shape {c.shape}")
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)    # p[j]: row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    out = np.empty(n, dtype=np.int64)
    for j in range(1, m + 1):
        if p[j]:
            out[p[j] - 1] = j - 1
    return out


def assign_targets(class_centers: Tensor, targets: Tensor) -> Tensor:
    """Class -> target row maximising the total cosine similarity (Hungarian), as TSC's ``KCL`` builder.

    ``class_centers`` ``(C, D)``, ``targets`` ``(T, D)`` with ``T >= C``; returns ``(C,)`` int64.
    Uses scipy when installed (faster for large C), else :func:`linear_sum_assignment`.
    """
    check_floating(class_centers, "class_centers", ndim=2)
    check_floating(targets, "targets", ndim=2)
    if targets.shape[0] < class_centers.shape[0] or targets.shape[1] != class_centers.shape[1]:
        raise ValueError(f"targets must have shape (T >= {class_centers.shape[0]}, {class_centers.shape[1]}), "
                         f"got {tuple(targets.shape)}")
    sim = (F.normalize(class_centers.detach().double(), dim=1) @ F.normalize(targets.detach().double(), dim=1).t())
    cost = -sim.cpu().numpy()
    try:
        from scipy.optimize import linear_sum_assignment as scipy_lsa
        _, cols = scipy_lsa(cost)
    except ImportError:
        cols = linear_sum_assignment(cost)
    return torch.as_tensor(np.asarray(cols), dtype=torch.long, device=class_centers.device)


@keeps_feature_dtype
@float32_compute
def tsc_loss(features: Tensor, labels: Tensor, targets: Tensor, assignment: Tensor, *, temperature: float = 0.07,
             base_temperature: Optional[float] = None, target_weight: float = 1.0, normalize: bool = False,
             gather_distributed: bool = False, sample_weight: Optional[Tensor] = None, reduction: str = "mean",
             chunk_size: Optional[int] = None) -> Tensor:
    r"""Targeted supervised contrastive loss, Li et al. CVPR 2022 (github LTH14/targeted-supcon).

    SupCon whose contrast set also holds the fixed targets ``(T, D)``; class ``c``'s assigned
    target ``targets[assignment[c]]`` is an extra positive for its samples (weight
    ``target_weight``, ``tw`` in the official code), every other target is a negative:

    .. math::
        \ell_i = -\frac{\tau}{\tau_b}\,\frac{1}{|P(i)| + 1}\Big[\sum_{p\in P(i)}\log q_{ip}
        + w_t \log q_{i,t(y_i)}\Big],\quad q_{ij} = \frac{e^{z_i\cdot z_j/\tau}}{\sum_{a\ne i} e^{z_i\cdot z_a/\tau}}

    (the official normalises by the number of positives with the target counted once, whatever
    ``tw``). The official ``KCL`` also subsamples ``k`` positives per anchor from a MoCo queue; here
    all in-batch positives are used (k-positive sampling is not implemented).
    ``base_temperature=None`` means ``temperature`` (factor 1, as the official losses).

    Args:
        features: ``(N, V, D)`` L2-normalised. labels: ``(N,)`` in ``[0, C)``.
        targets: ``(T, D)`` unit vectors (:func:`tsc_targets`). assignment: ``(C,)`` target row per
            class (:func:`assign_targets`).
    """
    t = check_positive(temperature, "temperature")
    tb = t if base_temperature is None else check_positive(base_temperature, "base_temperature")
    tw = check_nonnegative(target_weight, "target_weight")
    feats = as_views(check_features(features, normalize=normalize))
    n, v, d = feats.shape
    targets = check_features(targets, "targets", ndim=2, normalize=normalize).detach()
    if targets.shape[1] != d:
        raise ValueError(f"targets must have shape (T, {d}), got {tuple(targets.shape)}")
    if not isinstance(assignment, Tensor) or assignment.dim() != 1:
        raise ValueError("assignment must be a 1-D tensor (target index per class)")
    num_classes = assignment.shape[0]
    check_label_range(assignment, targets.shape[0], "assignment")
    check_label_range(labels, num_classes, "labels")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    labels = labels.long()
    target_class = torch.full((targets.shape[0],), -1, dtype=torch.long, device=feats.device)
    target_class[assignment.to(feats.device)] = torch.arange(num_classes, device=feats.device)
    feats_all, labels_all, offset = gather(feats, labels, gather_distributed)
    n_all = feats_all.shape[0]
    contrast = torch.cat([flatten_views(feats_all), targets.to(feats.dtype)])
    c_lab = torch.cat([labels_all.repeat(v), target_class])
    pos_w = torch.cat([feats.new_ones(v * n_all), feats.new_full((targets.shape[0],), tw)])
    anchors = flatten_views(feats)
    a_lab = labels.repeat(v)
    base = torch.arange(n, device=feats.device) + offset
    self_idx = torch.cat([base + k * n_all for k in range(v)])
    # dot weights the target by tw; cnt counts it once
    lse, dot, cnt = contrastive_rows(anchors, contrast, 1.0 / t, self_idx=self_idx, a_lab=a_lab, c_lab=c_lab,
                                     pos_weight=pos_w, positives=True, chunk_size=chunk_size)
    # -(1/|P|) [sum_p s_ip + tw s_it - (|P| - 1 + tw) lse]; |P| counts the target once and is >= 1
    w_total = cnt - 1 + tw
    per_anchor = (t / tb) * (w_total * lse - dot / t) / cnt
    return reduce_loss(per_anchor.view(v, n).mean(0), reduction, sample_weight)


@register_loss("tsc")
class TSCLoss(Loss):
    """TSC loss with its target bookkeeping.

    Holds ``targets`` ``(T, D)`` (given, or generated with :func:`tsc_targets` for ``T =
    num_classes``), running class centroids (EMA 0.9 of the batch's normalised class means, as the
    official builder) and the current Hungarian ``assignment``, all buffers in ``state_dict``.
    ``forward(features, labels)`` updates the centroids from every rank's (detached) features,
    re-assigns targets to classes, then returns :func:`tailwise.functional.tsc_loss`.

    The centroid update has no host synchronisation. The assignment is a Hungarian matching, a
    host algorithm: with ``reassign=True`` (default, as the official builder, every training
    step) it reads the ``(C, C)`` centroid similarities on the host once per step (one sync on
    CUDA, and not traceable by ``torch.compile``). ``reassign=False`` only updates the centroids
    in ``forward``; call :meth:`reassign_targets` yourself (e.g. every few steps, outside the
    compiled region) to refresh the assignment.
    """

    def __init__(self, num_classes: int, dim: int, targets: Optional[Tensor] = None, temperature: float = 0.07,
                 base_temperature: Optional[float] = None, target_weight: float = 1.0, momentum: float = 0.9,
                 target_steps: int = 10000, normalize: bool = False, gather_distributed: bool = False,
                 reduction: str = "mean", seed: int = 0, reassign: bool = True) -> None:
        super().__init__(reduction)
        if targets is None:
            targets = tsc_targets(num_classes, dim, steps=target_steps, seed=seed)
        targets = F.normalize(check_floating(targets, "targets", ndim=2).detach().float(), dim=1)
        if targets.shape[0] < num_classes or targets.shape[1] != dim:
            raise ValueError(f"targets must have shape (T >= {num_classes}, {dim}), got {tuple(targets.shape)}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("targets", targets)
        self.register_buffer("class_centroid", F.normalize(torch.randn(num_classes, dim, generator=g), dim=1))
        self.register_buffer("assignment", torch.arange(num_classes))
        self.momentum = momentum
        self.reassign = bool(reassign)
        self.kw = dict(temperature=temperature, base_temperature=base_temperature, target_weight=target_weight,
                       normalize=normalize, gather_distributed=gather_distributed)

    @torch.no_grad()
    def update_centroids(self, features: Tensor, labels: Tensor) -> None:
        """EMA of the batch's normalised class means (classes absent from the batch keep theirs)."""
        # metadata checks before touching the state: a list or a wrong shape raised AttributeError /
        # IndexError here instead of an error naming the argument
        check_floating(features, "features", ndim=(2, 3))
        check_labels(labels, features.shape[0])
        feats = as_views(features.detach().float())
        feats = F.normalize(feats, dim=-1).mean(1)
        if self.kw["gather_distributed"] and is_dist_initialized():
            feats, labels = all_gather_no_grad(feats), all_gather_no_grad(labels)
        c, d = self.class_centroid.shape
        labels = check_label_range(labels.to(feats.device), c, "labels").long()
        # per-class sums over fixed shapes (no unique / boolean masks: no host sync)
        sums = feats.new_zeros(c, d).index_add_(0, labels, feats)
        count = feats.new_zeros(c).index_add_(0, labels, feats.new_ones(labels.shape[0]))
        mean = F.normalize(sums / count.clamp_min(1)[:, None], dim=1)
        cen = self.class_centroid
        new = F.normalize(self.momentum * cen + (1 - self.momentum) * mean.to(cen.dtype), dim=1)
        # a class whose batch mean is not finite (NaN/inf features) keeps its centroid: the state
        # stays usable and the NaN propagates to the loss (or raises there) instead
        ok = (count > 0) & torch.isfinite(new).all(1)
        cen.copy_(torch.where(ok[:, None], new, cen))

    @torch.no_grad()
    def reassign_targets(self) -> None:
        """Hungarian assignment of targets to the current centroids (host algorithm)."""
        self.assignment.copy_(assign_targets(self.class_centroid, self.targets))

    @torch.no_grad()
    def update_assignment(self, features: Tensor, labels: Tensor) -> None:
        self.update_centroids(features, labels)
        self.reassign_targets()

    def forward(self, features: Tensor, labels: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        if self.training:
            self.update_centroids(features, labels)
            if self.reassign:
                self.reassign_targets()
        return tsc_loss(features, labels, self.targets, self.assignment, sample_weight=sample_weight, reduction=self.reduction,
                        **self.kw)
