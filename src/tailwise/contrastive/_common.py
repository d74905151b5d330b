"""Shared machinery of the contrastive family.

* input checks (features, labels, the unit-norm policy),
* the core every SupCon-style loss shares, re-exported from the kernels layer:
  :func:`contrastive_rows` (row logsumexp over the contrast set and positive statistics, op
  ``contrastive_rows`` of :mod:`tailwise.kernels.contrastive_lse`: a row-chunked torch path and a
  flash-style Triton kernel, neither materialises the ``(M, L)`` similarity matrix),
  :func:`chunked_lse` and :func:`positive_stats` (its torch reference),
* :func:`gather`, the distributed all-gather with gradients.

Unit-norm policy (every loss of the family): features must be L2-normalised along the last
dimension, as every reference implementation assumes (the model normalises its projection
head). With ``normalize=False`` (default) rows whose norm differs from 1 by more than
``NORM_TOL`` raise ``ValueError``; ``normalize=True`` applies ``F.normalize`` inside the loss.
Normalising silently would change the gradient of already-normalised inputs (the projection onto
the tangent space), so it is opt-in.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_floating, check_tensor
from ..distributed import all_gather_no_grad, all_gather_with_grad, is_dist_initialized
from ..kernels.contrastive_lse import (CHUNK_ELEMENTS, KEEP_ELEMENTS, chunked_lse, contrastive_rows,  # noqa: F401
                                       keeps_feature_dtype, positive_stats)

NORM_TOL = 1e-2


def check_features(features: Tensor, name: str = "features", *, ndim=(2, 3),
                   normalize: bool = False) -> Tensor:
    """Validate a floating feature tensor and apply the unit-norm policy."""
    check_floating(features, name, ndim=ndim)
    if features.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty feature dimension D, got shape {tuple(features.shape)}")
    if normalize:
        return F.normalize(features, dim=-1)
    if features.numel():
        norms = features.detach().norm(dim=-1)
        bad = (norms - 1).abs() > NORM_TOL
        if bool(bad.any()) or not bool(torch.isfinite(norms).all()):
            raise ValueError(
                f"{name} must be L2-normalised along the last dimension (|norm - 1| <= {NORM_TOL}), got "
                f"norms in [{norms.min().item():.4g}, {norms.max().item():.4g}]; normalise them "
                f"(torch.nn.functional.normalize(x, dim=-1)) or pass normalize=True")
    return features


def check_labels(labels, n: int, name: str = "labels", what: str = "features") -> Tensor:
    """Integer labels of shape ``(n,)``."""
    check_tensor(labels, name)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels (int64), got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per row of {what}), "
                         f"got shape {tuple(labels.shape)}")
    return labels.long()


def as_views(features: Tensor, name: str = "features") -> Tensor:
    """``(N, D)`` -> ``(N, 1, D)``; ``(N, V, D)`` unchanged."""
    return features.unsqueeze(1) if features.dim() == 2 else features


def gather(x: Tensor, labels: Optional[Tensor], enabled: bool):
    """All-gather features (with gradients) and labels; return (x_all, labels_all, offset)."""
    if not enabled or not is_dist_initialized():
        return x, labels, 0
    x_all, offset = all_gather_with_grad(x, return_offset=True)
    labels_all = None if labels is None else all_gather_no_grad(labels)
    return x_all, labels_all, offset


def flatten_views(x: Tensor) -> Tensor:
    """``(N, V, D)`` -> ``(V * N, D)`` view-major, as ``torch.cat(torch.unbind(x, 1))`` in SupContrast."""
    return x.transpose(0, 1).reshape(-1, x.shape[-1])


def supcon_from_parts(lse: Tensor, pos_dot: Tensor, pos_cnt: Tensor, scale: float) -> Tensor:
    """``lse - scale * pos_dot / pos_cnt`` with anchors without positives set to 0 (no NaN)."""
    has = pos_cnt > 1e-12
    mean_pos = scale * pos_dot / torch.where(has, pos_cnt, torch.ones_like(pos_cnt))
    # where() keeps gradient 0 (not NaN) on the masked rows: both branches are finite there
    safe_lse = torch.where(has, lse, torch.zeros_like(lse))
    return torch.where(has, safe_lse - mean_pos, torch.zeros_like(lse))
