"""CeCo-style neural-collapse regulariser for imbalanced semantic segmentation."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._validation import (check_class_counts, check_class_indices, check_floating, check_positive,
                           check_probability, check_reduction, check_tensor, host_selection)
from ..distributed import all_gather_with_grad, all_reduce_sum, is_dist_initialized
from ..kernels._dispatch import _constant_under_compile
from ..registry import register_loss

__all__ = ["simplex_etf", "neural_collapse_loss", "NeuralCollapseLoss"]


def simplex_etf(num_classes: int, dim: int, seed: int = 0, *, dtype: torch.dtype = torch.float32,
                device=None) -> Tensor:
    r"""A fixed simplex equiangular tight frame: ``num_classes`` unit vectors in ``R^dim``.

    Rows ``m_k`` of the returned ``(num_classes, dim)`` matrix satisfy ``|m_k| = 1`` and
    ``m_j . m_k = -1 / (K - 1)`` for ``j != k`` (maximal equal separation). Built as in CeCo's
    official head: :math:`M = \sqrt{K/(K-1)}\, P (I_K - \tfrac1K 1 1^\top)` with ``P`` a random
    ``dim x K`` matrix with orthonormal columns, here from a seeded QR decomposition (float64) so
    the frame is reproducible across processes and ranks. Requires ``dim >= num_classes``.

    Example:
        >>> from tailwise import simplex_etf
        >>> m = simplex_etf(4, 8)
        >>> (m @ m.T).diagonal()
        tensor([1., 1., 1., 1.])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < num_classes:
        raise ValueError(f"dim must be an int >= num_classes ({num_classes}) for a simplex ETF built from "
                         f"orthonormal columns, got {dim!r}")
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(dim, num_classes, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))  # unique QR
    k = num_classes
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    m = math.sqrt(k / (k - 1)) * (q @ centering)
    m = m / m.norm(dim=0, keepdim=True)  # exact unit norm (already 1 up to rounding)
    return m.t().contiguous().to(dtype=dtype, device=device)


def _class_sums(features: Tensor, target: Tensor, num_classes: int, ignore_index: Optional[int]):
    """Per-class feature sums ``(K, D)`` and pixel counts ``(K,)``; ignored pixels are masked (not
    removed: no data-dependent shapes, so no host sync and a traceable graph). Eager CPU skips
    the masking when nothing is ignored."""
    n, d = features.shape[:2]
    f = features.reshape(n, d, math.prod(features.shape[2:])).transpose(1, 2).reshape(-1, d)  # (N*L, D)
    t = target.reshape(-1).long()
    ones = f.new_ones(t.shape)
    if ignore_index is not None and (not host_selection(t) or not bool((t != ignore_index).all())):
        keep = t != ignore_index
        t = torch.where(keep, t, torch.zeros_like(t))
        f = torch.where(keep.unsqueeze(1), f, torch.zeros_like(f))  # where, not *: a NaN there stays out
        ones = keep.to(f.dtype)
    if host_selection(t):
        sums = f.new_zeros(num_classes, d).index_add(0, t, f)
        # index_add, not bincount: bincount reads the maximum label on the host (a sync on CUDA)
        counts = f.new_zeros(num_classes).index_add(0, t, ones)
        return sums, counts
    # on accelerators index_add accumulates with atomics, so two identical calls can differ in the
    # last bit; the one-hot product is deterministic (and uses TF32 only if the user enabled it)
    onehot_t = F.one_hot(t, num_classes).to(f.dtype).transpose(0, 1)  # (K, N*L)
    return onehot_t @ f, onehot_t @ ones


_ETF_CACHE: dict = {}


def _etf_host(num_classes: int, dim: int, seed: int) -> Tensor:
    """The float64 CPU frame of :func:`simplex_etf`, built once per (K, D, seed)."""
    key = (num_classes, dim, int(seed))
    if key not in _ETF_CACHE:
        if len(_ETF_CACHE) >= 16:
            _ETF_CACHE.pop(next(iter(_ETF_CACHE)))
        _ETF_CACHE[key] = simplex_etf(num_classes, dim, seed, dtype=torch.float64)
    return _ETF_CACHE[key]


# while torch.compile traces, the seeded frame is a constant of the graph (its CPU generator
# cannot be traced); it is computed at trace time. The marker is torch.compiler's
# assume_constant_result, set without importing torch._dynamo when tailwise is imported.
_etf_traced = _constant_under_compile(_etf_host)


def _default_etf(num_classes: int, dim: int, seed: int, like: Tensor) -> Tensor:
    if torch.compiler.is_compiling():
        return _etf_traced(num_classes, dim, seed).to(dtype=like.dtype, device=like.device)
    key = (num_classes, dim, int(seed), like.dtype, str(like.device))
    if key not in _ETF_CACHE:  # converted once per device and dtype: no host->device copy per call
        _ETF_CACHE[key] = _etf_host(num_classes, dim, seed).to(dtype=like.dtype, device=like.device)
    return _ETF_CACHE[key]


@float32_compute
def neural_collapse_loss(features: Tensor, target: Tensor, num_classes: int, *, etf: Optional[Tensor] = None,
                         seed: int = 0, scale: float = 5.0, class_counts=None, label_smoothing: float = 0.0,
                         normalize: bool = True, ignore_index: Optional[int] = -100,
                         gather_distributed: bool = True, reduction: str = "mean") -> Tensor:
    r"""CeCo's center-collapse regulariser: classify batch class centres with a fixed simplex ETF.

    For every class ``c`` present in the batch (all ranks together), its feature centre
    :math:`\mu_c = \frac{1}{n_c} \sum_{l: y_l = c} f_l` (mean over the batch's pixels of class
    ``c``, ignored pixels excluded) is ``L2``-normalised (``normalize=True``) and classified by
    the fixed ETF ``M`` (rows unit norm, zero bias):

    .. math::
        z_c = s\, \hat\mu_c M^\top + \log \pi,\qquad \ell_c = \mathrm{CE}(z_c, c)

    with scale ``s`` (default 5, CeCo's configs) and, when ``class_counts`` is given, the logit
    adjustment :math:`\log \pi` with :math:`\pi` the normalised counts (CeCo uses per-class
    *image* counts from its ``frequency_file``). ``label_smoothing`` ``eps`` follows CeCo's form:
    target ``1 - eps`` and ``eps / (K - 1)`` on every other class (CeCo's ``smooth = 1 - eps``;
    default no smoothing). The loss is the mean of ``ell_c`` over present classes; classes absent
    from the batch are skipped. Multiply it by a weight yourself (CeCo: 0.8 for Swin-T, 0.2 for
    Swin-B on ADE20K) and add it to the segmentation loss.

    Distributed: per-class sums and counts are summed over ranks (sums with an autograd-aware
    all-gather), so every rank computes the centres of the global batch; after DDP averages the
    parameter gradients over ranks they equal the single-process full-batch gradient. CeCo's
    code computes centres per GPU (``gather_distributed=False`` reproduces that).

    Args:
        features: pixel/voxel features ``(N, D, *spatial)``; the official head first projects the
            decoder output with a frozen 1x1 conv + BN (D=128) and applies a frozen Linear(128,
            512) + ReLU to the centres; here the features are taken as given.
        target: class indices ``(N, *spatial)`` (resize them to the features' size).
        num_classes: number of classes ``K`` (``D >= K`` when ``etf`` is not given).
        etf: optional fixed ``(K, D)`` classifier; default :func:`simplex_etf` ``(K, D, seed)``.
        reduction: ``"mean"`` over present classes, ``"sum"``, or ``"none"``: a ``(K,)`` vector
            with 0 for absent classes.

    Reference: Zhong et al., "Understanding Imbalanced Semantic Segmentation Through Neural
    Collapse", CVPR 2023 (arXiv 2301.01100); official head ``UPerHead_ceco`` in
    github dvlab-research/Parametric-Contrastive-Learning (GPaCo/Seg).

    Example:
        >>> import torch
        >>> from tailwise.functional import neural_collapse_loss
        >>> feats = torch.randn(2, 16, 8, 8, requires_grad=True)
        >>> loss = neural_collapse_loss(feats, torch.randint(0, 4, (2, 8, 8)), 4)
    """
    check_reduction(reduction)
    check_floating(features, "features")
    if features.dim() < 2:
        raise ValueError(f"features must be (N, D, *spatial), got shape {tuple(features.shape)}")
    n, d = features.shape[:2]
    expected = (n,) + tuple(features.shape[2:])
    check_tensor(target, "target")  # a list: TypeError naming target, as the other losses
    if tuple(target.shape) != expected:
        raise ValueError(f"target must be class indices of shape {expected} (features without the D axis), "
                         f"got {tuple(target.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    check_class_indices(target, num_classes, "target", ignore_index=ignore_index)
    scale = check_positive(scale, "scale")
    eps = check_probability(label_smoothing, "label_smoothing", open_high=True)
    if etf is None:
        etf = _default_etf(num_classes, d, seed, features)
    else:
        check_floating(etf, "etf")
        if tuple(etf.shape) != (num_classes, d):
            raise ValueError(f"etf must have shape (num_classes, D) = {(num_classes, d)}, got {tuple(etf.shape)}")
        etf = etf.to(device=features.device, dtype=features.dtype)

    sums, counts = _class_sums(features, target, num_classes, ignore_index)
    if gather_distributed and is_dist_initialized():
        # gather every rank's (C, D) sums with gradient: backward sums the gradient over ranks, so
        # each rank's local features get sum_q dL_q/df = W dL/df, and DDP's 1/W average restores it
        sums = all_gather_with_grad(sums.unsqueeze(0)).sum(0)
        counts = all_reduce_sum(counts)
    # every class gets a row; classes absent from the batch are masked out of the loss below
    # (selecting the present ones would need their number on the host)
    present = counts > 0
    centres = sums / counts.clamp_min(1.0).unsqueeze(1)
    if normalize:
        centres = F.normalize(centres, dim=1, eps=1e-12)
    logits = scale * centres @ etf.t()
    if class_counts is not None:
        prior = check_class_counts(class_counts, num_classes, device=logits.device)
        logits = logits + torch.log(prior / prior.sum()).to(dtype=logits.dtype)
    logp = torch.log_softmax(logits, 1)
    if eps > 0:
        eye = torch.eye(num_classes, dtype=logp.dtype, device=logp.device)
        q = eye * (1.0 - eps) + (1.0 - eye) * (eps / (num_classes - 1))
        per_class = -(q * logp).sum(1)
    else:
        per_class = -logp.diagonal()
    per_class = torch.where(present, per_class, torch.zeros_like(per_class))
    if reduction == "none":
        return per_class
    total = per_class.sum()  # an all-ignored batch: 0 that still has a grad_fn
    if reduction == "sum":
        return total
    return total / present.sum().clamp_min(1).to(total.dtype)


@register_loss("neural_collapse")
class NeuralCollapseLoss(Loss):
    """CeCo neural-collapse regulariser; see :func:`tailwise.functional.neural_collapse_loss`.

    The fixed ETF classifier (``(num_classes, feat_dim)``) and the optional log-prior live in
    buffers, so they are saved in ``state_dict`` and move with ``.to(device)``.

    Example:
        >>> import torch, tailwise
        >>> reg = tailwise.NeuralCollapseLoss(num_classes=4, feat_dim=16)
        >>> loss = reg(torch.randn(2, 16, 8, 8), torch.randint(0, 4, (2, 8, 8)))
    """

    def __init__(self, num_classes: int, feat_dim: int, *, scale: float = 5.0, class_counts=None,
                 label_smoothing: float = 0.0, normalize: bool = True, ignore_index: Optional[int] = -100,
                 seed: int = 0, gather_distributed: bool = True, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.scale = check_positive(scale, "scale")
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing", open_high=True)
        self.normalize, self.ignore_index, self.gather_distributed = normalize, ignore_index, gather_distributed
        self.register_buffer("etf", simplex_etf(num_classes, feat_dim, seed))
        counts = None if class_counts is None else check_class_counts(class_counts, num_classes).float()
        self.register_buffer("class_counts", counts)

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        return neural_collapse_loss(features, target, self.num_classes, etf=self.etf, scale=self.scale,
                                    class_counts=self.class_counts, label_smoothing=self.label_smoothing,
                                    normalize=self.normalize, ignore_index=self.ignore_index,
                                    gather_distributed=self.gather_distributed, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, scale={self.scale}, " + super().extra_repr()
