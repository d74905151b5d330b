"""``soft_rank``: sigmoid-relaxed ranks of anchors among scores (Smooth-AP's inner loop, and the
band sum of the sigmoid pAUC surrogate in its masked form).

Two forms, one op (``dispatch("soft_rank", x, anchors, tau[, weight])``):

* ``x (M,)``, ``anchors (P,)``, no ``weight``: ``rank_k = 1/2 + sum_j sigmoid((x_j - a_k) / tau)``,
  :class:`_SoftRank`. Keeps the ``(P, M)`` sigmoid matrix for backward; the eager CPU path of
  :func:`tailwise.functional.smooth_ap_loss`, which selects the positive anchors first.
* ``x (B, M)``, ``anchors (B, P)``, ``weight (B, M, R)``: ``rank[b, k, r] = 1/2 + sum_j
  weight[b, j, r] sigmoid((x[b, j] - a[b, k]) / tau)``, :class:`_WeightedSoftRank`. Fixed shapes
  (rows are masked by zero weights instead of being selected), row-chunked, and backward
  recomputes each block, so memory is one ``(B, chunk, M)`` block: the form used on accelerators
  and under ``torch.compile`` (no host synchronisation, capturable by CUDA graphs). The block
  product is a ``bmm``, so it follows ``torch.backends.cuda.matmul.allow_tf32`` on CUDA.

When anchor ``k`` is itself one of the ``x`` with weight 1, its own term is exactly 1/2, so the
rank is ``1 + sum_{j != k}`` as in the Smooth-AP paper, and its gradient cancels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._dispatch import register_op

__all__ = ["soft_rank"]

# elements of one (B, chunk, M) sigmoid block: 16 MiB of float32 on the CPU (tuned on 2 cores,
# like the contrastive chunks), 256 MiB on accelerators where fewer, larger launches win
_BLOCK_ELEMENTS = {"cpu": 1 << 22}
_BLOCK_ELEMENTS_DEFAULT = 1 << 26


class _SoftRank(torch.autograd.Function):
    """``rank_k = 1/2 + sum_j sigmoid((x_j - a_k) / tau)`` for anchors ``a (P,)`` against ``x (M,)``.

    Hand-written backward: only the ``(P, M)`` sigmoid matrix is kept, and the gradient is two
    mat-vecs with ``sigma`` and ``sigma^2`` (``sigma' = sigma - sigma^2``) instead of autograd's
    chain of ``(P, M)`` temporaries.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, tau: float) -> Tensor:
        sig = torch.sub(x.unsqueeze(0), a.unsqueeze(1)).mul_(1.0 / tau).sigmoid_()
        rowsum = sig.sum(1)
        ctx.save_for_backward(sig, rowsum)
        ctx.tau = tau
        return rowsum + 0.5

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        sig, rowsum = ctx.saved_tensors
        sq = sig * sig
        inv = 1.0 / ctx.tau
        grad_x = grad_a = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ sig - g @ sq) * inv
        if ctx.needs_input_grad[1]:
            grad_a = -g * (rowsum - sq.sum(1)) * inv
        return grad_x, grad_a, None


def _chunk(x: Tensor, b: int, m: int) -> int:
    budget = _BLOCK_ELEMENTS.get(x.device.type, _BLOCK_ELEMENTS_DEFAULT)
    return max(1, budget // max(b * m, 1))


def _sigmoid_block(x: Tensor, a: Tensor, inv_tau: float) -> Tensor:
    """``(B, P', M)`` block ``sigmoid((x_j - a_k) / tau)``."""
    return torch.sub(x.unsqueeze(1), a.unsqueeze(2)).mul_(inv_tau).sigmoid_()


class _WeightedSoftRank(torch.autograd.Function):
    """``rank[b, k, r] = 1/2 + sum_j weight[b, j, r] sigmoid((x[b, j] - a[b, k]) / tau)``, chunked.

    Saves only the inputs; backward recomputes each ``(B, chunk, M)`` block:
    ``G = g @ weight^T``, ``H = G * sigma (1 - sigma) / tau``, ``dx = sum_k H``, ``da = -sum_j H``.
    ``weight`` gets no gradient (it holds masks). ``a=None`` ranks ``x`` against itself (one
    input, so ``torch.compile`` sees no duplicated argument; both gradients go to ``x``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Optional[Tensor], weight: Tensor, tau: float) -> Tensor:
        ctx.self_rank = a is None
        a = x if a is None else a
        b, p = a.shape
        m = x.shape[1]
        w = weight.to(x.dtype)
        out = x.new_empty(b, p, w.shape[2])
        chunk = _chunk(x, b, m)
        inv = 1.0 / tau
        with torch.no_grad():
            for s in range(0, p, chunk):
                e = min(p, s + chunk)
                out[:, s:e] = torch.bmm(_sigmoid_block(x, a[:, s:e], inv), w).add_(0.5)
        ctx.save_for_backward(x, None if ctx.self_rank else a, w)
        ctx.tau = tau
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, a, w = ctx.saved_tensors
        inv = 1.0 / ctx.tau
        if ctx.self_rank:
            a = x
        p = a.shape[1]
        need_x = ctx.needs_input_grad[0]
        need_a = ctx.needs_input_grad[0] if ctx.self_rank else ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_a = torch.empty_like(a) if need_a else None
        wt = w.transpose(1, 2)
        for s in range(0, p, ctx.chunk):
            e = min(p, s + ctx.chunk)
            sig = _sigmoid_block(x, a[:, s:e], inv)
            # sigma' = sigma - sigma^2, in place
            h = torch.bmm(g[:, s:e], wt).mul_(sig.sub_(sig * sig)).mul_(inv)
            if need_x:
                grad_x.add_(h.sum(1))
            if need_a:
                grad_a[:, s:e] = -h.sum(2)
        if ctx.self_rank:
            return (grad_x + grad_a if need_x else None), None, None, None
        return grad_x, grad_a, None, None


def soft_rank_torch(x: Tensor, anchors: Optional[Tensor], tau: float, weight: Optional[Tensor] = None) -> Tensor:
    """Reference torch implementation of the ``soft_rank`` op (see the module docstring).

    With ``weight``, ``anchors=None`` means the anchors are ``x`` itself.
    """
    if weight is None:
        return _SoftRank.apply(x, anchors, float(tau))
    if anchors is None:
        anchors_shape = x.shape
    else:
        anchors_shape = anchors.shape
    if x.dim() != 2 or len(anchors_shape) != 2 or weight.dim() != 3 or weight.shape[:2] != x.shape \
            or anchors_shape[0] != x.shape[0]:
        raise ValueError(f"soft_rank with weight needs x (B, M), anchors (B, P), weight (B, M, R); got "
                         f"{tuple(x.shape)}, {tuple(anchors_shape)}, {tuple(weight.shape)}")
    return _WeightedSoftRank.apply(x, anchors, weight, float(tau))


def soft_rank(x: Tensor, anchors: Optional[Tensor], tau: float, weight: Optional[Tensor] = None) -> Tensor:
    """Soft ranks through the kernels dispatch point (see the module docstring)."""
    from ._dispatch import dispatch
    return dispatch("soft_rank", x, anchors, tau, weight)


register_op("soft_rank", torch=soft_rank_torch, losses=("smooth_ap", "pauc_at_budget"))
