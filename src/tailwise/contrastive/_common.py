"""Shared machinery of the contrastive family.

* input checks (features, labels, the unit-norm policy),
* the core every SupCon-style loss shares, re-exported from the kernels layer:
  :func:`contrastive_rows` (row logsumexp over the contrast set and positive statistics, op
  ``contrastive_rows`` of :mod:`tailwise.kernels.contrastive_lse`: a row-chunked torch path and a
  flash-style Triton kernel, neither materialises the ``(M, L)`` similarity matrix),
  :func:`chunked_lse` and :func:`positive_stats` (its torch reference),
* :func:`gather`, the distributed all-gather with gradients,
* :func:`host_selection`, which tells data-dependent (host-synchronising) selection from its
  masked, fixed-shape form (see below), and the value checks that never synchronise on CUDA.

Host synchronisation policy (docs/conventions.md): metadata checks always run; value checks
(unit norm, label range, queue consistency) raise the exact ``ValueError`` for eager CPU tensors
(and in ``tailwise.validation("full")``), and become device-side asserts on CUDA and while
``torch.compile`` traces. Data-dependent selection (``torch.unique``, ``nonzero``, boolean-mask
indexing) is only used for eager CPU tensors, where it is fastest and costs no synchronisation;
on accelerators and while tracing the same quantities are computed with masks over fixed shapes.

Unit-norm policy (every loss of the family): features must be L2-normalised along the last
dimension, as every reference implementation assumes (the model normalises its projection
head). With ``normalize=False`` (default) rows whose norm differs from 1 by more than
``NORM_TOL`` raise ``ValueError``; ``normalize=True`` applies ``F.normalize`` inside the loss.
Normalising silently would change the gradient of already-normalised inputs (the projection onto
the tangent space), so it is opt-in.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (assert_values, check_class_counts, check_class_indices, check_floating, check_tensor,
                           host_value_checks)
from ..distributed import all_gather_no_grad, all_gather_with_grad, is_dist_initialized
from ..kernels import contrastive_lse as _core
from ..kernels.contrastive_lse import (CHUNK_ELEMENTS, KEEP_ELEMENTS, chunked_lse, contrastive_rows,  # noqa: F401
                                       keeps_feature_dtype, positive_stats)

NORM_TOL = 1e-2


_MASKED = {"force": False}


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


try:  # the library-wide predicate (and its testing switch) where _validation provides one
    from .._validation import host_selection as _shared_host_selection
except ImportError:  # pragma: no cover - older _validation
    _shared_host_selection = None


def host_selection(*tensors) -> bool:
    """True where data-dependent selection (``unique``, ``nonzero``, boolean masks) may be used.

    That is eager mode with every tensor on the CPU: there it is the fastest form and costs no
    device synchronisation. On accelerators and while ``torch.compile`` traces, the callers use
    their masked, fixed-shape form instead (no host sync, capturable by CUDA graphs).
    """
    if _MASKED["force"]:
        return False
    if _shared_host_selection is not None:
        return _shared_host_selection(*tensors)
    if _compiling():
        return False
    return not any(isinstance(t, Tensor) and t.device.type != "cpu" for t in tensors)


# the kernels layer's torch reference (positive_stats) chooses its form with this predicate too
_core.set_host_selection(host_selection)


@contextlib.contextmanager
def masked_paths() -> Iterator[None]:
    """Testing aid: use the masked (accelerator / compile) form of every selection on CPU too."""
    old = _MASKED["force"]
    _MASKED["force"] = True
    try:
        yield
    finally:
        _MASKED["force"] = old


def check_label_range(labels: Tensor, num_classes: int, name: str = "labels") -> Tensor:
    """Integer labels in ``[0, num_classes)``: exact ``ValueError`` on eager CPU, device assert elsewhere."""
    if host_value_checks(labels):
        return check_class_indices(labels, num_classes, name)
    check_tensor(labels, name)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (int64), got dtype {labels.dtype}")
    if labels.numel():
        assert_values(((labels >= 0) & (labels < num_classes)).all(),
                      f"{name} must be class indices in [0, {num_classes - 1}]")
    return labels


_COUNTS_CACHE: Dict[tuple, Tensor] = {}
_COUNTS_CACHE_SIZE = 64


def class_counts_on(class_counts, num_classes: Optional[int], device) -> Tensor:
    """Validated float64 ``class_counts`` on ``device``, without a per-call host->device copy.

    A tensor is validated where it lives (exact errors on eager CPU, device asserts on CUDA);
    a list / tuple / array is validated once on the host and its device copy is cached.
    """
    device = torch.device(device)
    if isinstance(class_counts, Tensor):
        if host_value_checks(class_counts):
            return check_class_counts(class_counts, num_classes, device=device)
        counts = class_counts.detach()
        if counts.dtype == torch.bool or counts.is_complex():
            raise TypeError(f"class_counts must hold real numbers, got dtype {counts.dtype}")
        if counts.dim() != 1 or counts.numel() == 0:
            raise ValueError("class_counts must be a non-empty 1-D sequence of per-class counts, "
                             f"got shape {tuple(counts.shape)}")
        if num_classes is not None and counts.numel() != num_classes:
            raise ValueError(f"class_counts must have one entry per class ({num_classes}), got {counts.numel()}")
        counts = counts.to(dtype=torch.float64, device=device)
        assert_values((torch.isfinite(counts) & (counts > 0)).all(), "class_counts must be finite and positive")
        return counts
    if _compiling():
        # a python sequence is a constant of the traced graph: validate it in python
        vals = [float(c) for c in class_counts]
        if num_classes is not None and len(vals) != num_classes:
            raise ValueError(f"class_counts must have one entry per class ({num_classes}), got {len(vals)}")
        if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
            raise ValueError("class_counts must be a non-empty sequence of finite, positive counts")
        return torch.tensor(vals, dtype=torch.float64, device=device)
    try:
        key = (tuple(float(c) for c in class_counts), num_classes, str(device))
    except (TypeError, ValueError):
        return check_class_counts(class_counts, num_classes, device=device)  # raises the exact error
    hit = _COUNTS_CACHE.get(key)
    if hit is None:
        hit = check_class_counts(class_counts, num_classes).to(device)
        if len(_COUNTS_CACHE) >= _COUNTS_CACHE_SIZE:
            _COUNTS_CACHE.pop(next(iter(_COUNTS_CACHE)))
        _COUNTS_CACHE[key] = hit
    return hit


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
        if not host_value_checks(features):
            # the largest deviation in one reduction (sub, inf-norm, le: 5 launches with the row
            # norms and the assert instead of 6); the negated form also fails on NaN norms, which
            # the inf-norm propagates
            assert_values(torch.linalg.vector_norm(norms - 1, ord=float("inf")) <= NORM_TOL,
                          f"{name} must be L2-normalised along the last dimension (|norm - 1| <= {NORM_TOL}); "
                          f"normalise them (torch.nn.functional.normalize(x, dim=-1)) or pass normalize=True")
        elif bool(((norms - 1).abs() > NORM_TOL).any()) or not bool(torch.isfinite(norms).all()):
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
    # the denominator 1 on masked rows keeps the division's gradient finite there (where() would
    # multiply a NaN by 0); lse needs no such guard: sub's gradient does not depend on its value,
    # so a -inf lse on a masked row (empty contrast set) gets gradient 0 from the outer where()
    mean_pos = scale * pos_dot / torch.where(has, pos_cnt, 1.0)
    return torch.where(has, lse - mean_pos, 0.0)


def any_label_differs(*labels: Tensor):
    """Device-side ``bool`` tensor: do the label sets hold two different labels between them?

    With every set non-empty, this is "is there a negative pair": the only way every (anchor,
    contrast) pair shares a label is one label throughout. ``False`` (a Python bool) when a set is
    empty (no pair at all). Linear in the sizes, no ``(N, M)`` comparison, no host read.
    """
    if any(lab.numel() == 0 for lab in labels):
        return False
    allv = torch.cat([lab.reshape(-1) for lab in labels])
    return (allv != allv[0]).any()


def zero_unless(loss: Tensor, cond) -> Tensor:
    """``loss`` where ``cond`` holds, else ``0 * loss`` (0 with a graph and a zero gradient).

    ``cond`` is a Python bool or a device-side bool tensor: ``torch.where`` on the device, never
    ``if bool(cond)``, so no host synchronisation. ``0 * loss`` rather than a constant keeps a
    non-finite loss non-finite (a finite loss never hides NaN inputs).
    """
    if isinstance(cond, bool):
        return loss if cond else loss * 0
    return torch.where(cond, loss, loss * 0)
