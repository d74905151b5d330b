r"""Ops of the sigmoid (one-vs-all) family: ``sigmoid_focal``, ``bal_bce``, ``eqlv2``, ``equalized_focal``.

All four are one elementwise formula (see ``_sigmoid_triton`` for the derivation):
:math:`\ell = W\, m^{\gamma_c}\, \mathrm{ce}`, with :math:`z = x + b_c`,
:math:`\mathrm{ce} = t\,\mathrm{softplus}(-z) + (1-t)\,\mathrm{softplus}(z)`,
:math:`m = 1 - p_t` and :math:`W = \alpha_t (t P_c + (1-t) Q_c)`, and share one Triton kernel
that reads class-index targets directly (no one-hot tensor), computes in float32 from 16-bit
logits, and recomputes the element in the backward instead of storing anything ``(N, C)``.

Each op's ``torch`` implementation is the reference and the CPU path: the same torch calls the
losses made before the kernels layer existed (``F.binary_cross_entropy_with_logits``, the
hand-written :class:`SigmoidFocalFunction` and :class:`EQLv2Function`, the EFL terms), with one
deliberate change: the sigmoid focal cross-entropy is now ``t softplus(-x) + (1-t) softplus(x)``,
which keeps float32 precision for confident positives (``softplus(x) - t x`` returned 0 instead
of 1.1254e-7 at ``x = 16, t = 1``).

EQL gradient statistics are *not* accumulated inside the kernel: float atomics (and any
reduction order other than torch's own) would not give the bits the torch path gives, so both
paths compute them with the same torch ops (:func:`eqlv2_stats_torch`, EFL's increments) on the
same float32 logits; the statistics are bit-for-bit identical whichever backend computes the loss.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._validation import check_class_indices, host_value_checks
from ._dispatch import dispatch, register_op, select

__all__ = ["SigmoidFocalFunction", "EQLv2Function", "efl_terms", "eqlv2_stats_torch", "sigmoid_focal_torch",
           "bal_bce_torch", "eqlv2_torch", "equalized_focal_torch", "uses_kernel", "kernel_checks_targets"]

_HALF = (torch.float16, torch.bfloat16)


def uses_kernel(op: str, input: Tensor) -> bool:
    """True when op ``op`` would run its Triton kernel on ``input`` (never for float64)."""
    return input.dtype != torch.float64 and select(op, input) == "triton"


def kernel_checks_targets(op: str, input: Tensor, target: Tensor) -> bool:
    """True when op ``op`` should be given class indices with ``validate=True`` instead of a separate
    range check: its Triton kernel runs, values may not be read on the host, and nothing is being
    compiled (a traced check fuses into the graph; the custom op has no flag output)."""
    return (isinstance(input, Tensor) and input.is_floating_point() and not host_value_checks(input, target)
            and not torch.compiler.is_compiling() and uses_kernel(op, input))


def _check_range(x: Tensor, target: Tensor, validate: bool) -> None:
    # a kernel chosen with validate=True that fell back to torch: the check it would have done
    if validate and not target.is_floating_point():
        check_class_indices(target, x.shape[1], "target")


def _f32(x: Tensor) -> Tensor:
    # 16-bit logits reach a torch path only when a chosen kernel fell back: compute in float32
    return x.float() if x.dtype in _HALF else x


def _dense(x: Tensor, target: Tensor, on: float = 1.0, off: float = 0.0) -> Tensor:
    """The ``(N, C)`` target matrix: a float target as given, class indices one-hot (on/off)."""
    if target.is_floating_point():
        return target.to(x.dtype)
    if on == 1.0 and off == 0.0:
        return F.one_hot(target.long(), x.shape[1]).to(x.dtype)
    return torch.full_like(x, off).scatter_(1, target.long().unsqueeze(1), on)


# --- sigmoid focal --------------------------------------------------------------------------

class SigmoidFocalFunction(torch.autograd.Function):
    """torchvision's ``sigmoid_focal_loss`` elementwise, saving only ``(x, t)`` for backward.

    ``ce = t softplus(-x) + (1 - t) softplus(x)`` (the stable form; equal to ``softplus(x) - t x``
    in exact arithmetic), ``m = 1 - p_t = p + t - 2 p t``: ``loss = alpha_t ce m^gamma`` and
    ``dloss/dx = alpha_t [(p - t) m^gamma + gamma ce m^(gamma-1) p (1-p) (1-2t)]``.
    No gradient flows to the target.
    """

    @staticmethod
    def _ce(x: Tensor, t: Tensor) -> Tensor:
        # t softplus(-x) + (1-t) softplus(x) = softplus(-|x|) + relu(x) - t x: every term >= 0
        # for t in [0, 1], so nothing cancels (softplus(x) - t x lost all digits at x=16, t=1)
        b = x.abs().neg_()
        ce = F.softplus(b)
        # relu(x) - t x first (exact 0 for t = 1, x > 0), then the small softplus term
        return ce.add_(torch.clamp_min(x, 0.0, out=b).addcmul_(t, x, value=-1.0))

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, alpha: float, gamma: float):
        ctx.alpha, ctx.gamma = alpha, gamma
        ctx.save_for_backward(x, t)
        ce = SigmoidFocalFunction._ce(x, t)
        if gamma != 0:
            p = torch.sigmoid(x)
            m = p * t
            m.mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            ce.mul_(m.square_() if gamma == 2 else m.pow_(gamma))
        if alpha >= 0:
            ce.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return ce

    @staticmethod
    @once_differentiable
    def backward(ctx, go: Tensor):
        x, t = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        p = torch.sigmoid(x)
        if gamma == 0:
            grad = p.sub_(t)
        else:
            m = p * t
            m.mul_(-2.0).add_(p).add_(t)  # 1 - p_t
            # d m / dx = p (1 - p) (1 - 2t)
            dm = (1.0 - p).mul_(p).mul_(t * -2.0 + 1.0)
            ce = SigmoidFocalFunction._ce(x, t)
            if gamma == 2:
                dm.mul_(ce).mul_(m).mul_(2.0)
                grad = m.square_().mul_(p.sub_(t)).add_(dm)
            else:
                low = torch.where(m > 0, m, torch.ones_like(m)).pow_(gamma - 1.0)
                low = torch.where(m > 0, low, torch.zeros_like(m))  # m = 0 only where p(1-p) = 0
                dm.mul_(ce).mul_(low).mul_(gamma)
                grad = m.pow_(gamma).mul_(p.sub_(t)).add_(dm)
        if alpha >= 0:
            grad.mul_(t * (2.0 * alpha - 1.0) + (1.0 - alpha))
        return grad.mul_(go), None, None, None


def sigmoid_focal_torch(x: Tensor, target: Tensor, alpha: float, gamma: float, row_sum: bool = False,
                        validate: bool = False) -> Tensor:
    """Reference of op ``sigmoid_focal``: elementwise loss (``row_sum``: summed over dim 1).

    ``validate``: check the class indices' range (see :func:`kernel_checks_targets`)."""
    _check_range(x, target, validate)
    x = _f32(x)
    t = target.to(x.dtype) if target.is_floating_point() else _dense(x, target)
    loss = SigmoidFocalFunction.apply(x, t, float(alpha), float(gamma))
    return loss.sum(dim=1) if row_sum else loss


def _sigmoid_focal_triton(x: Tensor, target: Tensor, alpha: float, gamma: float, row_sum: bool = False,
                          validate: bool = False) -> Tensor:
    from ._sigmoid_triton import sigmoid_family_triton
    if target.is_floating_point():
        # any shape: rows of the last dimension
        c = x.shape[-1] if x.dim() > 0 else 1
        # the target keeps float32 (soft targets would lose digits in a 16-bit copy)
        x2, t2 = x.reshape(-1, c), target.to(torch.float32).reshape(-1, c)
        out = sigmoid_family_triton(x2, t2, alpha=alpha, gamma=gamma, row_sum=row_sum)
        return out.reshape(x.shape[:-1]) if row_sum else out.reshape(x.shape)
    return sigmoid_family_triton(x, target, alpha=alpha, gamma=gamma, row_sum=row_sum, validate=validate)


# --- balanced BCE / plain one-hot BCE ---------------------------------------------------------

def bal_bce_torch(x: Tensor, target: Tensor, bias: Optional[Tensor] = None, on: float = 1.0,
                  off: float = 0.0, validate: bool = False) -> Tensor:
    """Reference of op ``bal_bce``: ``sum_c BCE(x + b, t)`` per row (``bias=None``: plain one-hot BCE).

    ``validate``: check the class indices' range (see :func:`kernel_checks_targets`)."""
    _check_range(x, target, validate)
    x = _f32(x)
    t = _dense(x, target, on, off)
    z = x + bias if bias is not None else x
    return F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(dim=1)


def _bal_bce_triton(x: Tensor, target: Tensor, bias: Optional[Tensor] = None, on: float = 1.0,
                    off: float = 0.0, validate: bool = False) -> Tensor:
    from ._sigmoid_triton import sigmoid_family_triton
    return sigmoid_family_triton(x, target, bias=bias, on=on, off=off, row_sum=True, validate=validate)


# --- EQLv2 --------------------------------------------------------------------------------------

@torch.no_grad()
def eqlv2_stats_torch(logits: Tensor, target: Tensor, pos_w: Tensor, neg_w: Tensor,
                      num_stat_columns: int) -> Tuple[Tensor, Tensor]:
    """EQLv2's per-class increments: ``|dBCE/dz|`` summed over samples, times the weights used."""
    c = logits.shape[1]
    z_t = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    s_t = torch.sigmoid(z_t)
    col = torch.sigmoid(logits).sum(0)
    # |d BCE / dz| is 1 - s at the target, s elsewhere; weighted by the weights used
    pos_raw = torch.zeros(c, dtype=logits.dtype, device=logits.device).index_add_(0, target, 1.0 - s_t)
    tgt_s = torch.zeros(c, dtype=logits.dtype, device=logits.device).index_add_(0, target, s_t)
    pos_inc = (pos_raw * pos_w)[:num_stat_columns]
    neg_inc = ((col - tgt_s).clamp_min(0.0) * neg_w)[:num_stat_columns]
    return pos_inc, neg_inc


class EQLv2Function(torch.autograd.Function):
    """Weighted one-hot BCE with a hand-written backward.

    Forward: one ``softplus`` pass over the (N, C) logits and one matrix-vector product for the
    negative terms, O(N) work for the target column; when the statistics are wanted,
    :func:`eqlv2_stats_torch`. Only the logits are saved for backward (like
    ``F.binary_cross_entropy_with_logits``). Backward: ``sigmoid(z)`` then one in-place scale by
    ``neg_w * grad_out``, plus an O(N) scatter for the target column.
    """

    @staticmethod
    def forward(ctx, logits, target, pos_w, neg_w, scale, want_stats, num_stat_columns):
        t = target.unsqueeze(1)
        z_t = logits.gather(1, t).squeeze(1)
        sp = F.softplus(logits)
        # zero the target entries so the negative part has no large term to cancel later
        sp.scatter_(1, t, 0.0)
        per = torch.mv(sp, neg_w) + pos_w[target] * F.softplus(-z_t)  # BCE(z, 1) = softplus(-z)
        # a +inf target logit has BCE 0 (softplus(-inf)); + 0 * z_t (NaN there, O(N)) keeps it from
        # hiding, as F.binary_cross_entropy_with_logits returns NaN for it
        per.add_(z_t, alpha=0)
        del sp
        out = per if scale is None else per.sum() * scale
        ctx.save_for_backward(logits, target, pos_w, neg_w)
        ctx.scale = scale
        if not want_stats:
            return out, None, None
        pos_inc, neg_inc = eqlv2_stats_torch(logits, target, pos_w, neg_w, num_stat_columns)
        ctx.mark_non_differentiable(pos_inc, neg_inc)
        return out, pos_inc, neg_inc

    @staticmethod
    def backward(ctx, grad_out, _g1=None, _g2=None):
        logits, target, pos_w, neg_w = ctx.saved_tensors
        grad = torch.sigmoid(logits)
        if ctx.scale is None:
            grad.mul_(neg_w).mul_(grad_out.unsqueeze(1))
            g_t = grad_out
        else:
            g_t = grad_out * ctx.scale
            grad.mul_(neg_w * g_t)
        t = target.unsqueeze(1)
        s_t = torch.sigmoid(logits.gather(1, t).squeeze(1))
        grad.scatter_(1, t, ((s_t - 1.0) * pos_w[target] * g_t).unsqueeze(1))
        return grad, None, None, None, None, None, None


def eqlv2_torch(logits: Tensor, target: Tensor, pos_w: Tensor, neg_w: Tensor, scale: Optional[float],
                want_stats: bool, num_stat_columns: int, validate: bool = False):
    """Reference of op ``eqlv2``: ``(loss, pos_inc, neg_inc)``; loss per row, or ``scale * sum``.

    ``validate``: check the class indices' range (see :func:`kernel_checks_targets`)."""
    _check_range(logits, target, validate)
    logits = _f32(logits)
    return EQLv2Function.apply(logits, target, pos_w, neg_w, scale, want_stats, num_stat_columns)


def _eqlv2_triton(logits: Tensor, target: Tensor, pos_w: Tensor, neg_w: Tensor, scale: Optional[float],
                  want_stats: bool, num_stat_columns: int, validate: bool = False):
    from ._sigmoid_triton import sigmoid_family_triton
    # the forward kernel's range check (and its assert) comes before the statistics' gather
    per = sigmoid_family_triton(logits, target, pos_w=pos_w, neg_w=neg_w, row_sum=True, validate=validate)
    out = per if scale is None else per.sum() * scale
    if not want_stats:
        return out, None, None
    # the torch path's own ops on the same float32 logits: bit-identical statistics
    x = logits.detach()
    x = x.float() if x.dtype in _HALF else x
    pos_inc, neg_inc = eqlv2_stats_torch(x, target, pos_w.to(x.dtype), neg_w.to(x.dtype), num_stat_columns)
    return out, pos_inc, neg_inc


# --- Equalized Focal Loss -------------------------------------------------------------------

def efl_terms(input: Tensor, y: Tensor, gamma: Tensor, wf: Tensor, alpha: float):
    """EFL per element: ``(loss, coef, (1-p_t)^gamma, log p_t, log(1-p_t))`` for a 0/1 matrix ``y``."""
    # z_t = z for positives, -z for negatives: p_t = sigmoid(z_t), 1 - p_t = sigmoid(-z_t)
    z_t = torch.where(y > 0, input, -input)
    log_pt = F.logsigmoid(z_t)
    # clamp: beyond |z| = 1e4, (1 - p_t)^gamma is already exactly 0 or 1, and its backward at logits
    # ~1e38 multiplies an overflowed upstream (gamma * coef * |log p_t| = inf) by sigmoid' = 0 (NaN);
    # the clamp's backward zeroes that, and NaN logits still propagate through it
    log_1m = F.logsigmoid(-z_t.clamp(-1e4, 1e4))
    mod = torch.exp(gamma * log_1m)  # (1 - p_t)^gamma, finite for any logit
    coef = wf if alpha < 0 else wf * (alpha * y + (1.0 - alpha) * (1.0 - y))
    # + 0 * z: a +inf logit of a positive has log p_t = 0 and (1 - p_t)^gamma = 0, a finite 0 that
    # would hide it (BCE-with-logits gives NaN there); 0 * inf = NaN propagates it
    loss = (-coef * mod * log_pt).add(z_t, alpha=0)
    return loss, coef, mod, log_pt, log_1m


def equalized_focal_torch(x: Tensor, target: Tensor, gamma: Tensor, wf: Tensor, alpha: float,
                          validate: bool = False) -> Tensor:
    """Reference of op ``equalized_focal``: the per-row EFL (``target``: indices or a 0/1 matrix).

    ``validate``: check the class indices' range (see :func:`kernel_checks_targets`)."""
    _check_range(x, target, validate)
    x = _f32(x)
    return efl_terms(x, _dense(x, target), gamma, wf, float(alpha))[0].sum(1)


def _equalized_focal_triton(x: Tensor, target: Tensor, gamma: Tensor, wf: Tensor, alpha: float,
                            validate: bool = False) -> Tensor:
    from ._sigmoid_triton import sigmoid_family_triton
    return sigmoid_family_triton(x, target, pos_w=wf, neg_w=wf, gamma_vec=gamma, alpha=float(alpha), row_sum=True,
                                 validate=validate)


def run(op: str, *args, **kwargs):
    """Dispatch ``op`` (float64 always takes the torch path: the kernel accumulates in float32)."""
    x = args[0]
    if x.dtype == torch.float64:
        return _TORCH[op](*args, **kwargs)
    return dispatch(op, *args, **kwargs)


_TORCH = {"sigmoid_focal": sigmoid_focal_torch, "bal_bce": bal_bce_torch, "eqlv2": eqlv2_torch,
          "equalized_focal": equalized_focal_torch}

_M = "tailwise.kernels.sigmoid_family"
register_op("sigmoid_focal", torch=sigmoid_focal_torch, triton=f"{_M}:_sigmoid_focal_triton",
            losses=("sigmoid_focal", "class_balanced"))
register_op("bal_bce", torch=bal_bce_torch, triton=f"{_M}:_bal_bce_triton", losses=("bal_bce", "class_balanced"))
register_op("eqlv2", torch=eqlv2_torch, triton=f"{_M}:_eqlv2_triton", losses=("eqlv2",))
register_op("equalized_focal", torch=equalized_focal_torch, triton=f"{_M}:_equalized_focal_triton",
            losses=("equalized_focal",))
