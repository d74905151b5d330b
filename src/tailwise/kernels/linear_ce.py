r"""Op ``linear_ce``: a linear layer followed by the softmax cross-entropy family, chunked over rows
so that the ``(N, C)`` logits never exist.

For ``input`` ``(N, H)``, ``weight`` ``(C, H)`` (the ``nn.Linear`` layout) and optional ``bias``
``(C,)``, each chunk of rows computes ``z = input_chunk @ weight.T + bias + offset`` (``offset``
is ``tau * log prior`` for logit adjustment / Balanced Softmax), then the loss and the gradient
with respect to ``z`` of that chunk (the ``softmax_ce`` math: class weights, focal ``gamma``,
label smoothing, ``ignore_index``), and immediately folds that gradient into the gradients of
``input`` (``dz @ weight``), ``weight`` (``dz.T @ input_chunk``, accumulated) and ``bias``. Peak
extra memory is one chunk of logits plus the three gradients, the design of Liger-Kernel's
fused linear cross-entropy.

* ``"mean"`` / ``"sum"``: the gradients are computed in the forward (one matmul for the logits,
  two for the gradients per chunk) and the backward only scales them by ``grad_output`` (and
  ``1 / denominator`` for ``"mean"``: the number of non-ignored rows, or the sum of their class
  weights, as ``F.cross_entropy``).
* ``"none"``: the per-row ``grad_output`` is unknown in the forward, so the forward keeps only
  the per-row losses and the backward recomputes each chunk's logits (one more matmul).

The per-chunk loss/gradient is the torch implementation (:func:`chunk_rows_torch`, the
reference and the CPU path, also float64 for ``gradcheck``) or the Triton ``softmax_ce`` kernel,
which writes the gradient into the chunk's logits buffer (``_linear_ce_triton``); matmuls are
torch (cuBLAS) on both.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dispatch import dispatch, register_op

__all__ = ["LinearCrossEntropyFunction", "chunk_rows_torch", "linear_ce_torch", "linear_cross_entropy",
           "default_chunk_size"]


def default_chunk_size(n: int, c: int, h: int) -> int:
    """Rows per chunk: about as many logits per chunk as the input has elements (Liger's rule),
    a power of two, at least 1."""
    inc = max(1, -(-c // max(h, 1)))
    rows = max(1, -(-n // inc))
    return 1 << (rows - 1).bit_length()


def chunk_rows_torch(z: Tensor, y: Tensor, class_weight: Optional[Tensor], gamma: float, eps: float,
                     ignore_index: int, want_grad: bool):
    """Loss per row and ``dloss/dz`` (or ``None``) for logits ``z`` ``(n, C)`` (offset included)."""
    c = z.shape[1]
    valid = y != ignore_index
    ys = torch.where(valid, y, torch.zeros_like(y))
    logp = F.log_softmax(z, dim=1)
    lp = logp.gather(1, ys.unsqueeze(1)).squeeze(1)
    a = class_weight[ys] if class_weight is not None else torch.ones_like(lp)
    if gamma > 0:
        q = -torch.expm1(lp)
        pos = q > 0
        qg = torch.where(pos, torch.where(pos, q, torch.ones_like(q)).pow(gamma), torch.zeros_like(q))
        loss = -qg * lp * a
        ratio = torch.where(pos, lp / torch.where(pos, q, torch.ones_like(q)), -torch.ones_like(q))
        k = -(gamma * (1 - q) * qg * ratio - qg) * a
    else:
        loss = -(1.0 - eps) * a * lp
        k = (1.0 - eps) * a
    wvec = class_weight if class_weight is not None else torch.ones(c, dtype=z.dtype, device=z.device)
    if eps > 0:
        loss = loss - eps / c * (logp * wvec).sum(1)
    zero = torch.zeros_like(loss)
    loss = torch.where(valid, loss, zero)
    if not want_grad:
        return loss, None
    k = torch.where(valid, k, zero)
    grad = logp.exp()
    g = grad * k.unsqueeze(1)
    g.scatter_add_(1, ys.unsqueeze(1), -k.unsqueeze(1))
    if eps > 0:
        e = torch.where(valid, torch.full_like(loss, eps / c), zero).unsqueeze(1)
        g += e * (wvec.sum() * grad - wvec)
    return loss, g


def _torch_chunk(logits: Tensor, y: Tensor, offset, class_weight, gamma, eps, ignore_index, want_grad):
    z = logits if logits.dtype == torch.float64 else logits.float()
    if offset is not None:
        z = z + offset.to(z.dtype)
    cw = class_weight.to(z.dtype) if class_weight is not None else None
    loss, g = chunk_rows_torch(z, y, cw, gamma, eps, ignore_index, want_grad)
    return loss, (g.to(logits.dtype) if g is not None else None)


def _denominator(target: Tensor, class_weight: Optional[Tensor], ignore_index: int, dtype) -> Tensor:
    valid = target != ignore_index
    if class_weight is None:
        return valid.sum().to(dtype)
    ys = torch.where(valid, target, torch.zeros_like(target))
    return (class_weight.to(dtype)[ys] * valid.to(dtype)).sum()


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Chunked linear + softmax cross-entropy; ``chunk_fn(logits, y, ...) -> (loss, dlogits)``."""

    @staticmethod
    def forward(ctx, input, weight, bias, target, offset, class_weight, gamma, eps, ignore_index, reduction,
                chunk_size, chunk_fn: Callable):
        n, c = input.shape[0], weight.shape[0]
        step = chunk_size or default_chunk_size(n, c, input.shape[1])
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        eager = reduction != "none" and any(need)
        losses = torch.empty(n, dtype=torch.float64 if input.dtype == torch.float64 else torch.float32,
                             device=input.device)
        gx = torch.zeros_like(input) if eager and need[0] else None
        gw = torch.zeros_like(weight) if eager and need[1] else None
        gb = torch.zeros(c, dtype=torch.float32 if bias is None or bias.dtype != torch.float64 else bias.dtype,
                         device=input.device) if eager and need[2] else None
        for s in range(0, n, step):
            xs = input[s:s + step]
            logits = F.linear(xs, weight, bias)
            loss, g = chunk_fn(logits, target[s:s + step], offset, class_weight, gamma, eps, ignore_index, eager)
            losses[s:s + step] = loss
            if eager:
                if gx is not None:
                    torch.mm(g, weight, out=gx[s:s + step])
                if gw is not None:
                    gw.addmm_(g.t(), xs)
                if gb is not None:
                    gb += g.sum(0, dtype=gb.dtype)
            del logits, g
        ctx.reduction, ctx.eager, ctx.step, ctx.chunk_fn = reduction, eager, step, chunk_fn
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.args = (gamma, eps, ignore_index)
        if reduction == "none":
            ctx.save_for_backward(input, weight, bias, target, offset, class_weight)
            return losses
        total = losses.sum()
        if reduction == "mean":
            denom = _denominator(target, class_weight, ignore_index, total.dtype)
            # an all-ignored batch gives 0 (the masked_reduce rule), not F.cross_entropy's 0/0
            scale = torch.where(denom > 0, 1.0 / denom.clamp_min(1e-12), torch.zeros_like(denom))
            total = total * scale
        else:
            scale = torch.ones((), dtype=total.dtype, device=total.device)
        ctx.save_for_backward(gx, gw, gb, scale)
        return total

    @staticmethod
    def backward(ctx, go):
        if ctx.reduction != "none":
            gx, gw, gb, scale = ctx.saved_tensors
            f = go * scale
            if ctx.chunk_fn is _torch_chunk:
                out_gx = gx * f.to(gx.dtype) if gx is not None else None
                out_gw = gw * f.to(gw.dtype) if gw is not None else None
                out_gb = gb * f.to(gb.dtype) if gb is not None else None
            else:
                # kernel path (the memory-bound case): scaled in place, so no second copy of the
                # (N, H) and (C, H) gradients exists at the peak; hence only one backward
                if getattr(ctx, "scaled", False):
                    raise RuntimeError("linear_cross_entropy_loss: its gradients were computed in the forward and "
                                       "already handed out; a second backward (retain_graph=True) is not supported "
                                       "on the Triton path")
                ctx.scaled = True
                out_gx = gx.mul_(f.to(gx.dtype)) if gx is not None else None
                out_gw = gw.mul_(f.to(gw.dtype)) if gw is not None else None
                out_gb = gb.mul_(f.to(gb.dtype)) if gb is not None else None
        else:
            input, weight, bias, target, offset, class_weight = ctx.saved_tensors
            gamma, eps, ignore_index = ctx.args
            need = ctx.needs_input_grad
            out_gx = torch.zeros_like(input) if need[0] else None
            out_gw = torch.zeros_like(weight) if need[1] else None
            out_gb = torch.zeros(weight.shape[0], dtype=torch.float32 if bias.dtype != torch.float64 else bias.dtype,
                                 device=input.device) if bias is not None and need[2] else None
            step = ctx.step
            for s in range(0, input.shape[0], step):
                xs = input[s:s + step]
                logits = F.linear(xs, weight, bias)
                _, g = ctx.chunk_fn(logits, target[s:s + step], offset, class_weight, gamma, eps, ignore_index, True)
                g = g * go[s:s + step].unsqueeze(1).to(g.dtype)
                if out_gx is not None:
                    torch.mm(g, weight, out=out_gx[s:s + step])
                if out_gw is not None:
                    out_gw.addmm_(g.t(), xs)
                if out_gb is not None:
                    out_gb += g.sum(0, dtype=out_gb.dtype)
        if out_gb is not None:
            out_gb = out_gb.to(ctx.bias_dtype)
        return out_gx, out_gw, out_gb, None, None, None, None, None, None, None, None, None


def _apply(chunk_fn, input, weight, bias, target, offset, class_weight, gamma, eps, ignore_index, reduction,
           chunk_size):
    out = LinearCrossEntropyFunction.apply(input, weight, bias, target, offset, class_weight, float(gamma),
                                           float(eps), int(ignore_index), reduction, chunk_size, chunk_fn)
    return out


def linear_ce_torch(input: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None,
                    offset: Optional[Tensor] = None, class_weight: Optional[Tensor] = None, gamma: float = 0.0,
                    label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean",
                    chunk_size: Optional[int] = None) -> Tensor:
    """Reference (and CPU) implementation of op ``linear_ce``: chunked, torch per-chunk math."""
    return _apply(_torch_chunk, input, weight, bias, target, offset, class_weight, gamma, label_smoothing,
                  ignore_index, reduction, chunk_size)


def linear_cross_entropy(input: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None,
                         offset: Optional[Tensor] = None, class_weight: Optional[Tensor] = None,
                         gamma: float = 0.0, label_smoothing: float = 0.0, ignore_index: int = -100,
                         reduction: str = "mean", chunk_size: Optional[int] = None) -> Tensor:
    """Run op ``linear_ce`` with the selected backend (float64 always takes the torch path)."""
    if input.dtype == torch.float64:
        return linear_ce_torch(input, weight, target, bias, offset, class_weight, gamma, label_smoothing,
                               ignore_index, reduction, chunk_size)
    return dispatch("linear_ce", input, weight, target, bias, offset, class_weight, gamma, label_smoothing,
                    ignore_index, reduction, chunk_size)


register_op("linear_ce", torch=linear_ce_torch, triton="tailwise.kernels._linear_ce_triton:linear_ce_triton",
            losses=("linear_cross_entropy",))
