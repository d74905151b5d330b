r"""Op ``contrastive_rows``: the shared core of the SupCon-style losses.

For anchors :math:`a_i` ``(M, D)`` against a contrast set :math:`c_j` ``(L, D)`` with
:math:`s_{ij} = a_i \cdot c_j`, one call returns per anchor row

* ``lse_i = log sum_{j not in self(i)} exp(scale * s_ij + b_j + [y_i = y_j] e_j)`` (``-inf`` for an
  empty set),
* ``pos_dot_i = sum_{j in P(i)} w_j s_ij`` and ``pos_cnt_i = |P(i)|`` with
  :math:`P(i) = \{j \notin self(i) : y_j = y_i\}` (only with ``positives=True``),

where ``self(i)`` are the ``self_idx`` columns excluded from row ``i`` (the anchor itself, DCL's
positive), ``b`` is ``col_bias``, ``e`` is ``same_bias`` (BCL's class averaging) and ``w`` is
``pos_weight`` (TSC's target weight). ``lse`` and ``pos_dot`` are differentiable in the anchors
and the contrast rows; ``pos_cnt`` is a count.

Backends (selected by :func:`tailwise.kernels.dispatch`):

* ``torch`` (the reference, and the CPU path): :class:`_ChunkedLSE` (rows in blocks of about 4M
  similarities, backward recomputes each block; up to 2^25 similarities the softmax is kept) and
  :func:`positive_stats` (per-class feature sums, ``O((M + L) D)``, no dense mask).
* ``triton`` (``tailwise.kernels._contrastive_triton``): one fused flash-style kernel that tiles the
  similarity in on-chip memory with an online logsumexp and the positive statistics, and a
  backward that recomputes the tiles; the ``(M, L)`` matrix never exists.

Neither backend synchronises the host or selects data-dependently, so both trace with
``torch.compile(fullgraph=True)`` and capture in CUDA graphs.
"""

from __future__ import annotations

import functools
import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._dispatch import dispatch, register_op

__all__ = ["contrastive_rows", "chunked_lse", "positive_stats", "keeps_feature_dtype", "feature_dtype", "set_host_selection",
           "dot_precision", "CHUNK_ELEMENTS", "KEEP_ELEMENTS"]

# about 16 MiB of float32 per chunk of the (rows x contrast) similarity block
CHUNK_ELEMENTS = 1 << 22
# up to this many (anchor x contrast) entries the softmax is kept for backward instead of recomputed
KEEP_ELEMENTS = 1 << 25

_HALF = (torch.float16, torch.bfloat16)
# predicate "data-dependent selection is fine here" (eager CPU); contrastive._common installs its
# own (with its masked_paths() testing switch) through set_host_selection
_SELECTION = {"fn": None}


def set_host_selection(fn) -> None:
    """Install the predicate that picks the selection (eager CPU) or fixed-shape form of the torch path."""
    _SELECTION["fn"] = fn


def _host_selection(*tensors) -> bool:
    fn = _SELECTION["fn"]
    if fn is not None:
        return bool(fn(*tensors))
    return not torch.compiler.is_compiling() and all(t.device.type == "cpu" for t in tensors)
# dtype of the features the user passed to the contrastive functional being evaluated (innermost last)
_FEATURE_DTYPE: List[Optional[torch.dtype]] = []


def keeps_feature_dtype(fn):
    """Decorator (outside ``float32_compute``): remember the caller's half-precision feature dtype.

    ``float32_compute`` upcasts bfloat16/float16 features so the torch path computes in float32 as
    always; the Triton kernel reads :func:`feature_dtype` and runs such features on tensor cores in
    their own dtype (float32 accumulation) instead. A nested call with float32 features (e.g.
    ``info_nce_loss`` calling ``supcon_loss`` on its upcast features) inherits the outer dtype.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        feats = args[0] if args else kwargs.get("features")
        dt = getattr(feats, "dtype", None)
        if dt not in _HALF:
            dt = _FEATURE_DTYPE[-1] if _FEATURE_DTYPE else None
        _FEATURE_DTYPE.append(dt)
        try:
            return fn(*args, **kwargs)
        finally:
            _FEATURE_DTYPE.pop()

    return wrapper


def feature_dtype() -> Optional[torch.dtype]:
    """The half-precision dtype of the features of the contrastive loss being computed, else None."""
    return _FEATURE_DTYPE[-1] if _FEATURE_DTYPE else None


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the Triton kernel's ``tl.dot`` for features of ``dtype``.

    * bfloat16 / float16: tensor cores in that dtype, float32 accumulation (the argument is unused).
    * float32 with TF32 allowed by PyTorch (``torch.backends.cuda.matmul.fp32_precision == "tf32"``,
      i.e. ``allow_tf32 = True`` or ``set_float32_matmul_precision("high"/"medium")``): ``"tf32"``.
    * float32 otherwise (PyTorch's default, ``"highest"``): ``"tf32x3"``, float32 emulated on tensor
      cores by splitting each operand into two TF32 parts (three products; the dropped low x low
      term is about 2^-22 relative, a few float32 ulps), never plain TF32. Triton's exact FMA path
      (``"ieee"``) keeps a whole operand row per thread in registers and spills at D = 128, so
      it is an opt-in: ``TAILWISE_CONTRASTIVE_FP32=ieee`` (or ``tf32`` / ``tf32x3``) overrides the
      float32 choice.
    """
    if dtype != torch.float32:
        return "tf32"
    forced = os.environ.get("TAILWISE_CONTRASTIVE_FP32", "").strip().lower()
    if forced in ("ieee", "tf32", "tf32x3"):
        return forced
    mm = torch.backends.cuda.matmul
    prec = getattr(mm, "fp32_precision", None)
    if prec is not None:
        allowed = prec == "tf32"
    else:  # torch < 2.9
        allowed = bool(mm.allow_tf32) or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if allowed else "tf32x3"


# ----------------------------------------------------------------------------- torch reference


def chunk_rows(m: int, l: int, chunk_size: Optional[int]) -> int:
    """Rows per block of the torch path (all rows when the block stays below ``KEEP_ELEMENTS``)."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    if m * l <= KEEP_ELEMENTS:
        return m
    return max(1, min(m, CHUNK_ELEMENTS // max(l, 1)))


def _mask_self_(logits: Tensor, self_idx: Tensor) -> Tensor:
    """In place: ``logits[i, self_idx[i, k]] = -inf`` for every ``self_idx[i, k] >= 0``.

    Adds ``-inf`` with a fixed-shape ``scatter_add_`` (``0`` where ``idx < 0``, "no excluded
    column"), so no ``nonzero`` and no host sync; repeated indices are harmless (-inf + -inf).
    """
    idx = self_idx if self_idx.dim() == 2 else self_idx[:, None]
    src = torch.zeros(idx.shape, dtype=logits.dtype, device=logits.device).masked_fill_(idx >= 0, float("-inf"))
    return logits.scatter_add_(1, idx.clamp_min(0), src)


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
        _mask_self_(logits, self_idx)
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
        prob = None
        with torch.no_grad():
            for s in range(0, m, chunk):
                e = min(m, s + chunk)
                blk = _block(a_s[s:e], contrast, col_bias, None if self_idx is None else self_idx[s:e],
                             None if a_lab is None else a_lab[s:e], c_lab, same_bias)
                ssum, out[s:e] = _softmax_(blk)
                if keep:
                    prob = blk.div_(ssum.clamp_min(1.0)[:, None])
        ctx.keep = keep
        ctx.save_for_backward(anchors, contrast, col_bias, self_idx, a_lab, c_lab, same_bias, prob)
        ctx.scale = scale
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        anchors, contrast, col_bias, self_idx, a_lab, c_lab, same_bias, prob = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ga = torch.empty_like(anchors) if need_a else None
        gc = torch.zeros_like(contrast) if need_c else None
        m = anchors.shape[0]
        a_s = anchors * scale
        for s in range(0, m, chunk):
            e = min(m, s + chunk)
            if ctx.keep:
                w = prob * grad_out[:, None]
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
    """Row-wise logsumexp over the contrast set (see :class:`_ChunkedLSE`). Empty set -> ``-inf``.

    Always the torch implementation; losses call :func:`contrastive_rows`, which dispatches.
    """
    m, l = anchors.shape[0], contrast.shape[0]
    if m == 0:
        return anchors.sum(-1)
    if l == 0:
        return anchors.sum(-1) * 0 + contrast.sum() * 0 + float("-inf")
    chunk = chunk_rows(m, l, chunk_size)
    contrast = contrast.to(anchors.dtype)
    # dynamo cannot trace an autograd.Function given one tensor twice: pass a view instead
    if contrast is anchors:
        contrast = contrast.view_as(contrast)
    if c_lab is not None and c_lab is a_lab:
        c_lab = c_lab.view_as(c_lab)
    return _ChunkedLSE.apply(anchors, contrast, float(scale), col_bias, self_idx, a_lab, c_lab, same_bias, chunk)


def _class_ids(a_lab: Tensor, c_lab: Tensor) -> Tuple[Tensor, Tensor, int]:
    """Compact class ids of the contrast labels in ``[0, L)``; anchors whose label no contrast row has get ``L``.

    On accelerators and while tracing: fixed shapes (a sort and a ``searchsorted`` instead of
    ``torch.unique``), so no host sync. Eager CPU keeps ``torch.unique``: the backward of the
    class-sum gather accumulates in an order that depends on the number of classes, and CPU
    gradients stay bitwise what they were.
    """
    if _host_selection(a_lab, c_lab):
        uniq, inv = torch.unique(torch.cat([a_lab, c_lab]), return_inverse=True)
        return inv[:a_lab.shape[0]], inv[a_lab.shape[0]:], uniq.shape[0]
    l = c_lab.shape[0]
    c_cls, srt, gid_sorted = _contrast_ids(c_lab, full=True)
    if l == 0:
        return a_lab.new_zeros(a_lab.shape), c_cls, 1
    pos = torch.searchsorted(srt, a_lab).clamp_max(l - 1)
    a_cls = torch.where(srt[pos] == a_lab, gid_sorted[pos], torch.full_like(pos, l))
    return a_cls, c_cls, l + 1


def _contrast_ids(c_lab: Tensor, full: bool = False):
    """Compact ids of ``c_lab`` (equal labels, equal ids; fixed shapes, no host sync): a sort, a
    run-start cumsum and a scatter back. ``full`` also returns the sorted labels and their ids."""
    srt, order = torch.sort(c_lab)
    new = torch.ones_like(srt, dtype=torch.bool)
    new[1:] = srt[1:] != srt[:-1]
    gid_sorted = torch.cumsum(new, 0) - 1
    c_cls = torch.empty_like(gid_sorted).scatter_(0, order, gid_sorted)
    return (c_cls, srt, gid_sorted) if full else c_cls


def positive_stats(anchors: Tensor, a_lab: Tensor, contrast: Tensor, c_lab: Tensor, *,
                   self_idx: Optional[Tensor] = None, pos_weight: Optional[Tensor] = None
                   ) -> Tuple[Tensor, Tensor]:
    """Weighted sum of ``a_i . c_p`` over positives ``p`` (same label, ``p not in self(i)``) and their weight.

    Uses per-class sums ``S_c = sum_{j: y_j = c} w_j c_j`` so that
    ``sum_p w_p a_i . c_p = a_i . (S_{y_i} - w_self c_self)``: linear in N, no dense mask.
    Returns ``(dot_sum (M,), weight_sum (M,))``.
    """
    w = contrast.new_ones(contrast.shape[0]) if pos_weight is None else pos_weight.to(contrast.dtype)
    a_cls, c_cls, k = _class_ids(a_lab, c_lab)
    sums = contrast.new_zeros(k, contrast.shape[1]).index_add(0, c_cls, contrast * w[:, None])
    counts = w.new_zeros(k).index_add(0, c_cls, w)
    pos_vec = sums[a_cls]
    cnt = counts[a_cls]
    if self_idx is not None:
        # an excluded column is a positive to take out only if it has the anchor's label
        idx = self_idx.clamp_min(0)
        same = c_lab[idx] == (a_lab if self_idx.dim() == 1 else a_lab[:, None])
        w_self = torch.where((self_idx >= 0) & same, w[idx], torch.zeros_like(w[idx]))
        if self_idx.dim() == 1:
            pos_vec = pos_vec - contrast[idx] * w_self[:, None]
            cnt = cnt - w_self
        else:  # (M, K) distinct excluded columns
            pos_vec = pos_vec - (contrast[idx] * w_self[..., None]).sum(1)
            cnt = cnt - w_self.sum(1)
    dot = (anchors * pos_vec).sum(-1)
    return dot, cnt


def _rows_torch(anchors: Tensor, contrast: Tensor, scale: float, self_idx: Optional[Tensor] = None,
                a_lab: Optional[Tensor] = None, c_lab: Optional[Tensor] = None,
                col_bias: Optional[Tensor] = None, same_bias: Optional[Tensor] = None,
                pos_weight: Optional[Tensor] = None, positives: bool = False, symmetric: bool = False,
                chunk_size: Optional[int] = None):
    """The reference: :func:`chunked_lse` plus :func:`positive_stats` (``symmetric`` is only a hint)."""
    lse = chunked_lse(anchors, contrast, scale, col_bias=col_bias, self_idx=self_idx, a_lab=a_lab, c_lab=c_lab,
                      same_bias=same_bias, chunk_size=chunk_size)
    if not positives:
        return lse, None, None
    dot, cnt = positive_stats(anchors, a_lab, contrast, c_lab, self_idx=self_idx, pos_weight=pos_weight)
    if pos_weight is not None:
        _, cnt = positive_stats(anchors, a_lab, contrast, c_lab, self_idx=self_idx)
    return lse, dot, cnt


register_op("contrastive_rows", torch=_rows_torch, triton="tailwise.kernels._contrastive_triton:contrastive_rows",
            losses=("supcon", "info_nce", "dcl", "dclw", "paco", "bcl", "tsc", "rescom"))


def contrastive_rows(anchors: Tensor, contrast: Tensor, scale: float, *, self_idx: Optional[Tensor] = None,
                     a_lab: Optional[Tensor] = None, c_lab: Optional[Tensor] = None,
                     col_bias: Optional[Tensor] = None, same_bias: Optional[Tensor] = None,
                     pos_weight: Optional[Tensor] = None, positives: bool = False, symmetric: bool = False,
                     chunk_size: Optional[int] = None) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """``(lse, pos_dot, pos_cnt)`` per anchor row (module docstring); ``pos_*`` are None unless ``positives``.

    Args:
        anchors: ``(M, D)``. contrast: ``(L, D)``. scale: ``1 / temperature``.
        self_idx: ``(M,)`` or ``(M, K)`` contrast columns excluded from each row (``-1``: none).
        a_lab, c_lab: integer labels ``(M,)``, ``(L,)`` (needed by ``positives`` and ``same_bias``).
        col_bias, same_bias, pos_weight: ``(L,)`` (not differentiated).
        positives: also return the positive statistics.
        symmetric: promise that ``anchors`` holds the same rows as ``contrast`` (an unsharded
            ``contrast_mode="all"`` batch); the Triton backward then needs one pass instead of two
            and gives the whole gradient to ``contrast``.
        chunk_size: rows per block of the torch path.
    """
    return dispatch("contrastive_rows", anchors, contrast, scale, self_idx, a_lab, c_lab, col_bias, same_bias,
                    pos_weight, positives, symmetric, chunk_size)
