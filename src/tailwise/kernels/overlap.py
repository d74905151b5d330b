"""Op ``"overlap_index"``: the overlap statistics of Dice / Tversky / Focal Tversky (and the CE
term of Dice+CE) from logits and class-index targets, behind the kernels dispatch point.

Signature, for every backend::

    overlap_index(x, t, ignore_index, mode, from_logits, squared, want_ce=False, ce_weight=None)
        -> (tp, sp, sy, sq, sy2, ce_sum, ce_norm)

``x`` is ``(N, C, L)`` (any spatial rank flattened into ``L``), ``t`` the raw integer target
``(N, L)`` (``ignore_index`` pixels included). ``mode`` is ``"multiclass"`` (softmax over C when
``from_logits``) or ``"binary"`` (``C = 1``, sigmoid, target in {0, 1}). With ``m`` the mask of
non-ignored pixels, ``p`` the probabilities and ``y`` the one-hot target (never materialised)::

    tp = sum_l m p y    sp = sum_l m p    sy = sum_l m y    sq = sum_l m p^2 (squared only)

each ``(N, C)``; ``sy2`` is ``sum m y^2`` (= ``sy`` for hard targets) when ``squared``. With
``validate=True`` (keyword) makes the op check the target range that the caller checked only
for its type (``check_class_indices(..., values=False)``): the Triton kernel does it while it
reads the targets (one device-side assert instead of a separate ~9-op check). With
``want_ce`` the op also returns the per-image cross-entropy sums of ``dice_ce``:
``ce_sum[n] = -sum_l w_l log p_{y_l}`` (softmax CE; binary: BCE with logits) and
``ce_norm[n] = sum_l w_l`` with ``w_l = m_l ce_weight[y_l]`` (softmax) or ``m_l`` (binary).
Unused outputs are ``None``.

Backends:

* ``torch`` (reference, CPU): :class:`_IndexStats`, a custom autograd Function that never
  materialises a one-hot tensor (``tp`` is a gather of the target-class probability scattered
  into ``(N, C)``) and whose backward is derived by hand through the softmax, so only the
  softmax output is kept for backward and one ``(N, C, L)`` buffer is written during it. The CE
  sums are ``log_softmax`` + gather with autograd.
* ``triton`` (:mod:`._overlap_triton`): one forward pass over the logits computes the softmax
  or sigmoid, the statistics and the CE sums (split-S grid, deterministic partial sums), and one
  backward pass recomputes the softmax and writes the input gradient.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._validation import check_class_indices, host_value_checks
from ._dispatch import register_op

__all__ = ["overlap_index_torch", "index_ce_sums", "MODES"]

MODES = ("multiclass", "binary")


class _IndexStats(torch.autograd.Function):
    """(tp, sp[, sq]) for integer targets, optionally through a softmax over dim 1.

    Forward: ``p = softmax(x, 1)`` (or ``x`` itself), ``tp[n, c] = sum_{l: y=c} m p[n, c, l]``,
    ``sp = sum_l m p``, ``sq = sum_l m p^2``.

    Backward: with ``G[n,c,l] = m_l (g_sp[n,c] + 2 p g_sq[n,c] + [y_l = c] g_tp[n,c])`` the
    gradient w.r.t. ``p`` is ``G``, and through the softmax ``p * (G - sum_c p G)``. Both are
    computed in place in one buffer.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, mask: Optional[Tensor], softmax: bool, squared: bool):
        p = torch.softmax(x, 1) if softmax else x
        n, c, _ = p.shape
        pt = p.gather(1, y.unsqueeze(1)).squeeze(1)  # (N, L) prob. of the target class
        if mask is not None:
            pt = pt * mask
        tp = p.new_zeros(n, c).scatter_add_(1, y, pt)
        if mask is None:
            sp = p.sum(-1)
            sq = (p * p).sum(-1) if squared else None
        else:
            mcol = mask.unsqueeze(-1)  # (N, L, 1): a batched mat-vec avoids a masked copy of p
            sp = torch.bmm(p, mcol).squeeze(-1)
            sq = torch.bmm(p * p, mcol).squeeze(-1) if squared else None
        ctx.softmax, ctx.squared = softmax, squared
        ctx.save_for_backward(p, y, mask)
        ctx.mark_non_differentiable(y)
        return (tp, sp, sq) if squared else (tp, sp)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_tp, g_sp, g_sq=None):
        p, y, mask = ctx.saved_tensors
        g = torch.empty_like(p)
        g.copy_(g_sp.unsqueeze(-1).expand_as(p))
        if ctx.squared and g_sq is not None:
            g.addcmul_(p, 2.0 * g_sq.unsqueeze(-1))
        g.scatter_add_(1, y.unsqueeze(1), g_tp.gather(1, y).unsqueeze(1))
        if mask is not None:
            g.mul_(mask.unsqueeze(1))
        if ctx.softmax:
            g.mul_(p)
            g.addcmul_(p, g.sum(1, keepdim=True), value=-1.0)
        return g, None, None, None, None


def index_ce_sums(x: Tensor, t: Tensor, mode: str, class_weight: Optional[Tensor],
                  ignore_index: Optional[int]):
    """Per-image (weighted) CE/BCE sums and normaliser of class-index targets (``dice_ce``'s CE)."""
    keep = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    t_safe = torch.where(keep, t, torch.zeros_like(t)).long()
    kf = keep.to(x.dtype)
    if mode == "binary":
        per_el = torch.nn.functional.binary_cross_entropy_with_logits(x[:, 0], t_safe.to(x.dtype), reduction="none")
        return (per_el * kf).sum(-1), kf.sum(-1)
    logp_t = torch.log_softmax(x, 1).gather(1, t_safe.unsqueeze(1)).squeeze(1)
    w = kf if class_weight is None else kf * class_weight.to(x.dtype)[t_safe]
    return -(w * logp_t).sum(-1), w.sum(-1)


def overlap_index_torch(x: Tensor, t: Tensor, ignore_index: Optional[int], mode: str, from_logits: bool,
                        squared: bool, want_ce: bool = False, ce_weight: Optional[Tensor] = None,
                        validate: bool = False):
    """The reference implementation of op ``"overlap_index"`` (see the module docstring).

    ``validate``: check the target range here (``check_class_indices``), for a caller that
    left it to the op (the Triton kernel checks it while reading the targets)."""
    n, c, _ = x.shape
    if validate:
        check_class_indices(t, 2 if mode == "binary" else c, "target", ignore_index=ignore_index)
    t_raw = t
    mask = None
    if ignore_index is not None:
        keep = t != ignore_index
        # skipping the mask when nothing is ignored is a host read: only where it is free
        if not (host_value_checks(x) and bool(keep.all())):
            mask = keep.to(x.dtype)
            t = torch.where(keep, t, torch.zeros_like(t))
    t = t.long()
    ce_sum = ce_norm = None
    if want_ce:
        ce_sum, ce_norm = index_ce_sums(x, t_raw, mode, ce_weight, ignore_index)
    if mode == "multiclass":
        out = _IndexStats.apply(x, t, mask, from_logits, squared)
        tp, sp = out[0], out[1]
        sq = out[2] if squared else None
        ones = mask if mask is not None else x.new_ones(t.shape)
        sy = x.new_zeros(n, c).scatter_add_(1, t, ones)
        return tp, sp, sy, sq, (sy if squared else None), ce_sum, ce_norm
    # binary: a single channel, y = t
    y = t.to(x.dtype).unsqueeze(1)
    m = None if mask is None else mask.unsqueeze(1)
    p = torch.sigmoid(x) if from_logits else x
    pm = p if m is None else p * m
    tp = (pm * y).sum(-1)
    sp = pm.sum(-1)
    sy = (y if m is None else y * m).sum(-1)
    sq = sy2 = None
    if squared:
        sq = (pm * p).sum(-1)
        sy2 = (y * y if m is None else y * y * m).sum(-1)
    return tp, sp, sy, sq, sy2, ce_sum, ce_norm


register_op("overlap_index", torch=overlap_index_torch,
            triton="tailwise.kernels._overlap_triton:overlap_index_triton",
            losses=("dice", "tversky", "focal_tversky", "dice_ce", "generalized_dice"))
