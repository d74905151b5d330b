"""Shared machinery of the contrastive family.

* input checks (features, labels, the unit-norm policy),
* :class:`_ChunkedLSE`, the fused row-chunked ``logsumexp`` over a contrast set that all
  SupCon-style losses share (it never materialises the ``(M, L)`` similarity matrix; backward
  recomputes each chunk),
* :func:`positive_stats`, the sum and count of positive similarities computed from per-class
  feature sums (``O((M + L) D)`` instead of a dense ``(M, L)`` mask),
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
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._validation import (assert_values, check_class_counts, check_class_indices, check_floating, check_tensor,
                           host_value_checks)
from ..distributed import all_gather_no_grad, all_gather_with_grad, is_dist_initialized

NORM_TOL = 1e-2
# about 16 MiB of float32 per chunk of the (rows x contrast) similarity block
CHUNK_ELEMENTS = 1 << 22
# up to this many (anchor x contrast) entries the softmax is kept for backward instead of recomputed
KEEP_ELEMENTS = 1 << 25


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
            # the negated form also fails on NaN norms
            assert_values(((norms - 1).abs() <= NORM_TOL).all(),
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


def _chunk_rows(m: int, l: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    if m * l <= KEEP_ELEMENTS:
        return m
    return max(1, min(m, CHUNK_ELEMENTS // max(l, 1)))


def _block(a: Tensor, c: Tensor, col_bias: Optional[Tensor], self_idx: Optional[Tensor],
           a_lab: Optional[Tensor], c_lab: Optional[Tensor], same_bias: Optional[Tensor]) -> Tensor:
    """Logits of one row block; ``a`` is already multiplied by the scale (saves a full pass)."""
    logits = torch.mm(a, c.t())
    if col_bias is not None:
        logits.add_(col_bias)
    if same_bias is not None:
        same = a_lab[:, None] == c_lab[None, :]
        logits = torch.where(same, logits + same_bias, logits)
    if self_idx is not None:
        idx = self_idx if self_idx.dim() == 2 else self_idx[:, None]
        # adding -inf (0 where idx < 0 means "no self column") masks without a data-dependent
        # nonzero(); repeated indices are harmless since -inf + -inf = -inf
        src = torch.zeros(idx.shape, dtype=logits.dtype, device=logits.device).masked_fill_(idx >= 0, float("-inf"))
        logits.scatter_add_(1, idx.clamp_min(0), src)
    return logits


def _softmax_(blk: Tensor) -> Tuple[Tensor, Tensor]:
    """In place: ``blk <- exp(blk - max)``; returns (row sums, row lse). Empty rows give lse -inf."""
    mx = blk.amax(1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    blk.sub_(mx).exp_()
    ssum = blk.sum(1)
    return ssum, mx.squeeze(1) + torch.log(ssum)


class _ChunkedLSE(torch.autograd.Function):
    """``lse_i = log sum_j exp(scale * a_i . c_j + b_j (+ s_j if same class))`` over j != self(i).

    Small problems (one block of at most ``KEEP_ELEMENTS``) keep the softmax from forward for
    backward (3 matmuls, ~6 elementwise passes in total, no autograd graph of intermediates).
    Larger ones are processed ``chunk`` rows at a time and backward recomputes each block, so peak
    memory is one ``(chunk, L)`` block instead of the full similarity matrix and its copies.
    """

    @staticmethod
    def forward(ctx, anchors, contrast, scale, col_bias, self_idx, a_lab, c_lab, same_bias, chunk):
        m = anchors.shape[0]
        out = anchors.new_empty(m)
        a_s = anchors * scale
        keep = chunk >= m and m * contrast.shape[0] <= KEEP_ELEMENTS
        with torch.no_grad():
            for s in range(0, m, chunk):
                e = min(m, s + chunk)
                blk = _block(a_s[s:e], contrast, col_bias, None if self_idx is None else self_idx[s:e],
                             None if a_lab is None else a_lab[s:e], c_lab, same_bias)
                ssum, out[s:e] = _softmax_(blk)
                if keep:
                    ctx.prob = blk.div_(ssum.clamp_min(1.0)[:, None])
        ctx.keep = keep
        ctx.save_for_backward(anchors, contrast, col_bias, self_idx, a_lab, c_lab, same_bias)
        ctx.scale = scale
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        anchors, contrast, col_bias, self_idx, a_lab, c_lab, same_bias = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ga = torch.empty_like(anchors) if need_a else None
        gc = torch.zeros_like(contrast) if need_c else None
        m = anchors.shape[0]
        a_s = anchors * scale
        for s in range(0, m, chunk):
            e = min(m, s + chunk)
            if ctx.keep:
                w = ctx.prob * grad_out[:, None]
            else:
                w = _block(a_s[s:e], contrast, col_bias, None if self_idx is None else self_idx[s:e],
                           None if a_lab is None else a_lab[s:e], c_lab, same_bias)
                ssum, _ = _softmax_(w)
                # d lse / d logits = softmax; ssum >= 1 unless the row is empty (then w = 0)
                w.mul_((grad_out[s:e] / ssum.clamp_min(1.0))[:, None])
            if need_a:
                ga[s:e] = (w @ contrast).mul_(scale)
            if need_c:
                gc.addmm_(w.t(), a_s[s:e])
        return ga, gc, None, None, None, None, None, None, None


def chunked_lse(anchors: Tensor, contrast: Tensor, scale: float, *, col_bias: Optional[Tensor] = None,
                self_idx: Optional[Tensor] = None, a_lab: Optional[Tensor] = None,
                c_lab: Optional[Tensor] = None, same_bias: Optional[Tensor] = None,
                chunk_size: Optional[int] = None) -> Tensor:
    """Row-wise logsumexp over the contrast set (see :class:`_ChunkedLSE`). Empty set -> ``-inf``."""
    m, l = anchors.shape[0], contrast.shape[0]
    if m == 0:
        return anchors.sum(-1)
    if l == 0:
        return anchors.sum(-1) * 0 + contrast.sum() * 0 + float("-inf")
    chunk = _chunk_rows(m, l, chunk_size)
    contrast = contrast.to(anchors.dtype)
    return _ChunkedLSE.apply(anchors, contrast, float(scale), col_bias, self_idx, a_lab, c_lab, same_bias, chunk)


def _group_ids(labels: Tensor) -> Tensor:
    """Dense ids of equal labels in ``[0, len(labels))`` with a fixed-size output (no ``unique``)."""
    srt, perm = torch.sort(labels)
    new = torch.ones_like(srt, dtype=torch.bool)
    new[1:] = srt[1:] != srt[:-1]
    gid = torch.cumsum(new.long(), 0) - 1
    return torch.empty_like(gid).scatter_(0, perm, gid)


def positive_stats(anchors: Tensor, a_lab: Tensor, contrast: Tensor, c_lab: Tensor, *,
                   self_idx: Optional[Tensor] = None, pos_weight: Optional[Tensor] = None
                   ) -> Tuple[Tensor, Tensor]:
    """Weighted sum of ``a_i . c_p`` over positives ``p`` (same label, ``p != self(i)``) and their weight.

    Uses per-class sums ``S_c = sum_{j: y_j = c} w_j c_j`` so that
    ``sum_p w_p a_i . c_p = a_i . (S_{y_i} - w_self c_self)``: linear in N, no dense mask.
    Returns ``(dot_sum (M,), weight_sum (M,))``.
    """
    w = contrast.new_ones(contrast.shape[0]) if pos_weight is None else pos_weight.to(contrast.dtype)
    both = torch.cat([a_lab, c_lab])
    if host_selection(anchors, contrast):
        uniq, inv = torch.unique(both, return_inverse=True)
        k = uniq.shape[0]
    else:
        inv, k = _group_ids(both), both.shape[0]
    a_cls, c_cls = inv[:a_lab.shape[0]], inv[a_lab.shape[0]:]
    sums = contrast.new_zeros(k, contrast.shape[1]).index_add(0, c_cls, contrast * w[:, None])
    counts = w.new_zeros(k).index_add(0, c_cls, w)
    pos_vec = sums[a_cls]
    cnt = counts[a_cls]
    if self_idx is not None:
        valid = self_idx >= 0
        idx = self_idx.clamp_min(0)
        w_self = torch.where(valid, w[idx], torch.zeros_like(cnt))
        pos_vec = pos_vec - contrast[idx] * w_self[:, None]
        cnt = cnt - w_self
    dot = (anchors * pos_vec).sum(-1)
    return dot, cnt


def supcon_from_parts(lse: Tensor, pos_dot: Tensor, pos_cnt: Tensor, scale: float) -> Tensor:
    """``lse - scale * pos_dot / pos_cnt`` with anchors without positives set to 0 (no NaN)."""
    has = pos_cnt > 1e-12
    mean_pos = scale * pos_dot / torch.where(has, pos_cnt, torch.ones_like(pos_cnt))
    # where() keeps gradient 0 (not NaN) on the masked rows: both branches are finite there
    safe_lse = torch.where(has, lse, torch.zeros_like(lse))
    return torch.where(has, safe_lse - mean_pos, torch.zeros_like(lse))
