"""Triton kernels of op ``"box_loss"`` (see :mod:`tailwise.kernels.box` for the contract).

Two elementwise kernels, one program per ``BLOCK`` box pairs:

* forward: load the eight coordinates (any of the three formats, converted in registers),
  write the per-pair loss, optionally the IoU (Focal-EIoU's weight) and, when validating, one
  count of bad boxes (inverted or non-finite) per program;
* backward: recompute the geometry and write both ``(N, 4)`` gradients in the input's format.

The chain rule is the one of :func:`tailwise.kernels.box._backward` (derivation in
``docs/boxes.md``), extended to IoU/log-IoU, EIoU and CDIoU; ties split min/max gradients in
halves and ``clamp_min(0)`` passes gradient at 0, as autograd does. ``atan2`` is evaluated with a
Cephes-style polynomial (about 1e-7 absolute), the same code on the GPU and in the interpreter
(libdevice is not available there).

Traffic for N pairs in float32: forward reads 32 N bytes and writes 4 N (+4 N for the IoU);
backward reads 36 N and writes 32 N: about 104 MB for a million pairs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._validation import host_value_checks
from ._host import cdiv

__all__ = ["box_loss_triton"]

_KIND_IDS = {"iou": 0, "iou_log": 1, "giou": 2, "diou": 3, "ciou": 4, "eiou": 5, "cdiou": 6}
_FMT_IDS = {"xyxy": 0, "xywh": 1, "cxcywh": 2}
_BLOCK = 1024
_WARPS = 8  # 4 pairs per thread: at most ~95 registers, no spills (sm_90, every kind)


@triton.jit
def _atan_unit(r):
    # atan on [0, 1]: reduce r > tan(pi/8) by atan(r) = pi/4 + atan((r - 1)/(r + 1)), then Cephes atanf
    big = r > 0.41421356237309503
    x = tl.where(big, (r - 1.0) / (r + 1.0), r)
    z = x * x
    y = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * x + x
    return tl.where(big, y + 0.7853981633974483, y)


@triton.jit
def _atan2(y, x):
    ax = tl.abs(x)
    ay = tl.abs(y)
    hi = tl.maximum(ax, ay)
    lo = tl.minimum(ax, ay)
    r = tl.where(hi > 0, lo / tl.where(hi > 0, hi, 1.0), 0.0)
    a = _atan_unit(r)
    a = tl.where(ay > ax, 1.5707963267948966 - a, a)
    a = tl.where(x < 0, 3.141592653589793 - a, a)
    return tl.where(y < 0, -a, a)


@triton.jit
def _half_step(x):
    # autograd's share of min/max on a tie: 1 where x > 0, 1/2 at 0, 0 where x < 0
    return tl.where(x > 0, 1.0, tl.where(x < 0, 0.0, 0.5))


@triton.jit
def _load_xyxy(ptr, offs, mask, FMT: tl.constexpr):
    a = tl.load(ptr + offs * 4, mask=mask, other=0.0)
    b = tl.load(ptr + offs * 4 + 1, mask=mask, other=0.0)
    c = tl.load(ptr + offs * 4 + 2, mask=mask, other=0.0)
    d = tl.load(ptr + offs * 4 + 3, mask=mask, other=0.0)
    if FMT == 1:  # xywh
        c = a + c
        d = b + d
    elif FMT == 2:  # cxcywh
        a0 = a
        b0 = b
        a = a0 - 0.5 * c
        b = b0 - 0.5 * d
        c = a0 + 0.5 * c
        d = b0 + 0.5 * d
    return a, b, c, d


@triton.jit
def _store_fmt(ptr, offs, mask, g1, g2, g3, g4, FMT: tl.constexpr):
    # gradients w.r.t. (x1, y1, x2, y2) -> gradients w.r.t. the input's own four numbers
    if FMT == 1:  # (x, y, w, h): x1 = x, x2 = x + w
        g1 = g1 + g3
        g2 = g2 + g4
    elif FMT == 2:  # (cx, cy, w, h): x1 = cx - w/2, x2 = cx + w/2
        s1 = g1 + g3
        s2 = g2 + g4
        g3 = 0.5 * (g3 - g1)
        g4 = 0.5 * (g4 - g2)
        g1 = s1
        g2 = s2
    tl.store(ptr + offs * 4, g1, mask=mask)
    tl.store(ptr + offs * 4 + 1, g2, mask=mask)
    tl.store(ptr + offs * 4 + 2, g3, mask=mask)
    tl.store(ptr + offs * 4 + 3, g4, mask=mask)


@triton.jit
def _safe_norm(dx, dy):
    d2 = dx * dx + dy * dy
    return tl.where(d2 > 0, tl.sqrt(tl.where(d2 > 0, d2, 1.0)), 0.0)


@triton.jit
def _box_fwd_kernel(p_ptr, t_ptr, loss_ptr, iou_ptr, flag_ptr, N, eps, lam,
                    KIND: tl.constexpr, FMT: tl.constexpr, WANT_IOU: tl.constexpr,
                    VALIDATE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    a1, b1, a2, b2 = _load_xyxy(p_ptr, offs, m, FMT)
    A1, B1, A2, B2 = _load_xyxy(t_ptr, offs, m, FMT)
    w1 = a2 - a1
    h1 = b2 - b1
    w2 = A2 - A1
    h2 = B2 - B1
    iw = tl.maximum(tl.minimum(a2, A2) - tl.maximum(a1, A1), 0.0)
    ih = tl.maximum(tl.minimum(b2, B2) - tl.maximum(b1, B1), 0.0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if KIND == 0:
        loss = 1.0 - iou
    elif KIND == 1:
        loss = -tl.log(tl.maximum(iou, eps))
    else:
        cw = tl.maximum(a2, A2) - tl.minimum(a1, A1)
        ch = tl.maximum(b2, B2) - tl.minimum(b1, B1)
        if KIND == 2:
            area_c = cw * ch + eps
            loss = 1.0 - iou + (area_c - union) / area_c
        else:
            c2 = cw * cw + ch * ch + eps
            if KIND == 6:
                dx1 = a1 - A1
                dx2 = a2 - A2
                dy1 = b1 - B1
                dy2 = b2 - B2
                corners = _safe_norm(dx1, dy1) + _safe_norm(dx2, dy1) + _safe_norm(dx2, dy2) + _safe_norm(dx1, dy2)
                loss = 1.0 - iou + lam * corners / (4.0 * tl.sqrt(c2))
            else:
                dx = (a1 + a2) - (A1 + A2)
                dy = (b1 + b2) - (B1 + B2)
                rho2 = (dx * dx + dy * dy) * 0.25
                loss = 1.0 - iou + rho2 / c2
                if KIND == 4:
                    diff = _atan2(w2, h2) - _atan2(w1, h1)
                    v = 0.40528473456935109 * diff * diff  # 4 / pi^2
                    alpha = v / (1.0 - iou + v + eps)
                    loss = loss + alpha * v
                elif KIND == 5:
                    dw = w1 - w2
                    dh = h1 - h2
                    loss = loss + dw * dw / (cw * cw + eps) + dh * dh / (ch * ch + eps)
    tl.store(loss_ptr + offs, loss, mask=m)
    if WANT_IOU:
        tl.store(iou_ptr + offs, iou, mask=m)
    if VALIDATE:
        # x - x != 0 exactly for NaN and +-inf; a non-finite input coordinate reaches one of these
        nonfinite = ((a1 - a1) != 0) | ((b1 - b1) != 0) | ((a2 - a2) != 0) | ((b2 - b2) != 0)
        nonfinite = nonfinite | ((A1 - A1) != 0) | ((B1 - B1) != 0) | ((A2 - A2) != 0) | ((B2 - B2) != 0)
        bad = nonfinite | (w1 < 0) | (h1 < 0) | (w2 < 0) | (h2 < 0)
        # the one flag starts at 1 (valid); any program that sees a bad pair clears it (the
        # same value from every writer: no atomics), so the caller asserts on it directly
        nbad = tl.sum(tl.where(m & bad, 1, 0), axis=0)
        tl.store(flag_ptr, 0, mask=nbad > 0)


@triton.jit
def _box_bwd_kernel(p_ptr, t_ptr, g_ptr, gp_ptr, gt_ptr, N, eps, lam,
                    KIND: tl.constexpr, FMT: tl.constexpr, NEED_P: tl.constexpr, NEED_T: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    a1, b1, a2, b2 = _load_xyxy(p_ptr, offs, m, FMT)
    A1, B1, A2, B2 = _load_xyxy(t_ptr, offs, m, FMT)
    grad = tl.load(g_ptr + offs, mask=m, other=0.0)
    w1 = a2 - a1
    h1 = b2 - b1
    w2 = A2 - A1
    h2 = B2 - B1
    iw_raw = tl.minimum(a2, A2) - tl.maximum(a1, A1)
    ih_raw = tl.minimum(b2, B2) - tl.maximum(b1, B1)
    iw = tl.maximum(iw_raw, 0.0)
    ih = tl.maximum(ih_raw, 0.0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = tl.maximum(a2, A2) - tl.minimum(a1, A1)
    ch = tl.maximum(b2, B2) - tl.minimum(b1, B1)

    zero = tl.zeros_like(grad)
    g_iou = -grad
    g_union = zero
    g_cw = zero
    g_ch = zero
    g_w1 = zero
    g_h1 = zero
    g_w2 = zero
    g_h2 = zero
    g_dx = zero
    g_dy = zero
    g_dx1 = zero  # CDIoU's corner offsets
    g_dx2 = zero
    g_dy1 = zero
    g_dy2 = zero
    if KIND == 1:
        # d(-log max(iou, eps)) / d iou, clamp passing gradient at equality as autograd does
        g_iou = tl.where(iou >= eps, -grad / tl.where(iou >= eps, iou, 1.0), 0.0)
    elif KIND == 2:
        area_c = cw * ch + eps
        g_union = -grad / area_c
        g_area_c = grad * union / (area_c * area_c)
        g_cw = g_area_c * ch
        g_ch = g_area_c * cw
    elif KIND >= 3:
        c2 = cw * cw + ch * ch + eps
        if KIND == 6:
            dx1 = a1 - A1
            dx2 = a2 - A2
            dy1 = b1 - B1
            dy2 = b2 - B2
            n1 = _safe_norm(dx1, dy1)
            n2 = _safe_norm(dx2, dy1)
            n3 = _safe_norm(dx2, dy2)
            n4 = _safe_norm(dx1, dy2)
            r = tl.sqrt(c2)
            g_corners = grad * lam / (4.0 * r)
            g_c2 = -grad * lam * (n1 + n2 + n3 + n4) / (8.0 * c2 * r)
            i1 = tl.where(n1 > 0, 1.0 / tl.where(n1 > 0, n1, 1.0), 0.0)
            i2 = tl.where(n2 > 0, 1.0 / tl.where(n2 > 0, n2, 1.0), 0.0)
            i3 = tl.where(n3 > 0, 1.0 / tl.where(n3 > 0, n3, 1.0), 0.0)
            i4 = tl.where(n4 > 0, 1.0 / tl.where(n4 > 0, n4, 1.0), 0.0)
            g_dx1 = g_corners * dx1 * (i1 + i4)
            g_dx2 = g_corners * dx2 * (i2 + i3)
            g_dy1 = g_corners * dy1 * (i1 + i2)
            g_dy2 = g_corners * dy2 * (i3 + i4)
            g_cw = 2.0 * cw * g_c2
            g_ch = 2.0 * ch * g_c2
        else:
            dx = (a1 + a2) - (A1 + A2)
            dy = (b1 + b2) - (B1 + B2)
            rho2 = (dx * dx + dy * dy) * 0.25
            g_rho2 = grad / c2
            g_c2 = -g_rho2 * rho2 / c2
            g_cw = 2.0 * cw * g_c2
            g_ch = 2.0 * ch * g_c2
            g_dx = g_rho2 * 0.5 * dx
            g_dy = g_rho2 * 0.5 * dy
            if KIND == 4:
                t1 = _atan2(w1, h1)
                diff = _atan2(w2, h2) - t1
                v = 0.40528473456935109 * diff * diff
                alpha = v / (1.0 - iou + v + eps)  # a constant for autograd, as in the official code
                coef = grad * alpha * 2.0 * 0.40528473456935109 * diff
                rp = coef / tl.maximum(w1 * w1 + h1 * h1, 1e-30)
                rt = coef / tl.maximum(w2 * w2 + h2 * h2, 1e-30)
                g_w1 = -rp * h1
                g_h1 = rp * w1
                g_w2 = rt * h2
                g_h2 = -rt * w2
            elif KIND == 5:
                dw = w1 - w2
                dh = h1 - h2
                kw = cw * cw + eps
                kh = ch * ch + eps
                g_dw = grad * 2.0 * dw / kw
                g_dh = grad * 2.0 * dh / kh
                g_w1 = g_dw
                g_w2 = -g_dw
                g_h1 = g_dh
                g_h2 = -g_dh
                g_cw = g_cw - grad * dw * dw * 2.0 * cw / (kw * kw)
                g_ch = g_ch - grad * dh * dh * 2.0 * ch / (kh * kh)

    # iou = I / U ; U = w1 h1 + w2 h2 - I + eps ; I = clamp(iw_raw) clamp(ih_raw)
    g_union = g_union - g_iou * iou / union
    g_inter = g_iou / union - g_union
    g_w1 = g_w1 + g_union * h1
    g_h1 = g_h1 + g_union * w1
    g_w2 = g_w2 + g_union * h2
    g_h2 = g_h2 + g_union * w2
    g_iw = tl.where(iw_raw >= 0, g_inter * ih, 0.0)
    g_ih = tl.where(ih_raw >= 0, g_inter * iw, 0.0)

    s_x2 = _half_step(A2 - a2)  # share of min(a2, A2) going to a2
    s_y2 = _half_step(B2 - b2)
    r_x1 = _half_step(a1 - A1)  # share of max(a1, A1) going to a1
    r_y1 = _half_step(b1 - B1)
    if NEED_P:
        ga1 = -g_iw * r_x1 - g_cw * (1.0 - r_x1) - g_w1 + g_dx + g_dx1
        ga2 = g_iw * s_x2 + g_cw * (1.0 - s_x2) + g_w1 + g_dx + g_dx2
        gb1 = -g_ih * r_y1 - g_ch * (1.0 - r_y1) - g_h1 + g_dy + g_dy1
        gb2 = g_ih * s_y2 + g_ch * (1.0 - s_y2) + g_h1 + g_dy + g_dy2
        _store_fmt(gp_ptr, offs, m, ga1, gb1, ga2, gb2, FMT)
    if NEED_T:
        gA1 = -g_iw * (1.0 - r_x1) - g_cw * r_x1 - g_w2 - g_dx - g_dx1
        gA2 = g_iw * (1.0 - s_x2) + g_cw * s_x2 + g_w2 - g_dx - g_dx2
        gB1 = -g_ih * (1.0 - r_y1) - g_ch * r_y1 - g_h2 - g_dy - g_dy1
        gB2 = g_ih * (1.0 - s_y2) + g_ch * s_y2 + g_h2 - g_dy - g_dy2
        _store_fmt(gt_ptr, offs, m, gA1, gB1, gA2, gB2, FMT)


# ----------------------------------------------------------------------------- launchers
def _fwd(p: torch.Tensor, t: torch.Tensor, kind: int, fmt: int, eps: float, lam: float,
         want_iou: bool, validate: bool):
    """``(loss, iou or None, flag or None)``: ``flag`` is an int32 ``(1,)`` that stays 1 when
    every box is finite and not inverted (only allocated when ``validate``)."""
    n = p.shape[0]
    loss = torch.empty(n, device=p.device, dtype=p.dtype)
    iou = torch.empty(n, device=p.device, dtype=p.dtype) if want_iou else None
    flag = torch.ones(1, device=p.device, dtype=torch.int32) if validate else None
    if n:
        _box_fwd_kernel[(cdiv(n, _BLOCK),)](p, t, loss, iou if want_iou else loss,
                                                   flag if validate else loss, n,
                                                   eps, lam, KIND=kind, FMT=fmt, WANT_IOU=want_iou,
                                                   VALIDATE=validate, BLOCK=_BLOCK, num_warps=_WARPS)
    return loss, iou, flag


def _bwd(p: torch.Tensor, t: torch.Tensor, grad: torch.Tensor, kind: int, fmt: int, eps: float,
         lam: float, need_p: bool, need_t: bool):
    """``(grad of p or None, grad of t or None)``."""
    n = p.shape[0]
    gp = torch.empty_like(p) if need_p else None
    gt = torch.empty_like(t) if need_t else None
    if n and (need_p or need_t):
        _box_bwd_kernel[(cdiv(n, _BLOCK),)](p, t, grad.contiguous(), gp if need_p else p,
                                                   gt if need_t else t, n, eps, lam, KIND=kind, FMT=fmt,
                                                   NEED_P=need_p, NEED_T=need_t, BLOCK=_BLOCK,
                                                   num_warps=_WARPS)
    return gp, gt


class _BoxLossTriton(torch.autograd.Function):
    """Eager autograd of the launchers (no custom-op dispatch; see ``_softmax_ce_triton._EagerCE``)."""

    @staticmethod
    def forward(ctx, p, t, kind: int, fmt: int, eps: float, lam: float, want_iou: bool, validate: bool):
        loss, iou, flag = _fwd(p, t, kind, fmt, eps, lam, want_iou, validate)
        ctx.save_for_backward(p, t)
        ctx.args = (kind, fmt, eps, lam)
        ctx.mark_non_differentiable(*(o for o in (iou, flag) if o is not None))
        # no zero tensors are made for the (absent) gradients of iou and flag
        ctx.set_materialize_grads(False)
        return loss, iou, flag

    @staticmethod
    def backward(ctx, grad, _g_iou=None, _g_flags=None):
        if grad is None:
            return (None,) * 8
        p, t = ctx.saved_tensors
        need_p, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gp, gt = _bwd(p, t, grad, *ctx.args, need_p, need_t)
        return (gp, gt) + (None,) * 6


# torch.compile cannot trace into a Triton launch written this way: under compilation the same
# launchers run as opaque custom ops, with the same backward.
@torch.library.custom_op("tailwise::box_loss_fwd", mutates_args=())
def _box_loss_fwd_op(p: torch.Tensor, t: torch.Tensor, kind: int, fmt: int, eps: float, lam: float,
                     want_iou: bool, validate: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, iou, flag = _fwd(p, t, kind, fmt, eps, lam, want_iou, validate)
    # a custom op returns tensors: an empty one stands for "not asked for"
    return (loss, iou if iou is not None else p.new_empty(0),
            flag if flag is not None else p.new_empty(0, dtype=torch.int32))


@_box_loss_fwd_op.register_fake
def _(p, t, kind, fmt, eps, lam, want_iou, validate):
    n = p.shape[0]
    return (p.new_empty(n), p.new_empty(n if want_iou else 0),
            p.new_empty(1 if validate else 0, dtype=torch.int32))


@torch.library.custom_op("tailwise::box_loss_bwd", mutates_args=())
def _box_loss_bwd_op(p: torch.Tensor, t: torch.Tensor, grad: torch.Tensor, kind: int, fmt: int, eps: float,
                     lam: float, need_p: bool, need_t: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gp, gt = _bwd(p, t, grad, kind, fmt, eps, lam, need_p, need_t)
    return (gp if gp is not None else p.new_empty(0)), (gt if gt is not None else t.new_empty(0))


@_box_loss_bwd_op.register_fake
def _(p, t, grad, kind, fmt, eps, lam, need_p, need_t):
    return (torch.empty_like(p) if need_p else p.new_empty(0),
            torch.empty_like(t) if need_t else t.new_empty(0))


def _setup(ctx, inputs, output):
    p, t, kind, fmt, eps, lam, _want_iou, _validate = inputs
    ctx.save_for_backward(p, t)
    ctx.args = (kind, fmt, eps, lam)
    ctx.set_materialize_grads(True)


def _op_backward(ctx, grad, _g_iou, _g_flags):
    p, t = ctx.saved_tensors
    need_p, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gp, gt = _box_loss_bwd_op(p, t, grad, *ctx.args, need_p, need_t)
    return (gp if need_p else None, gt if need_t else None) + (None,) * 6


_box_loss_fwd_op.register_autograd(_op_backward, setup_context=_setup)


def box_loss_triton(input, target, kind, box_format, eps, validate, lambda_=1.0, want_iou=False):
    """Triton implementation of op ``"box_loss"``: same contract as ``box_loss_torch``."""
    if input.dtype != target.dtype:
        dtype = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(dtype), target.to(dtype)
    batch = input.shape[:-1]
    p = input.reshape(-1, 4).contiguous()
    t = target.reshape(-1, 4).contiguous()
    if p.shape[0] == 0:
        loss = p.sum(-1) + t.sum(-1)
        return loss.reshape(batch), (loss.detach().reshape(batch) if want_iou else None), None
    args = (_KIND_IDS[kind], _FMT_IDS[box_format], float(eps), float(lambda_), bool(want_iou), bool(validate))
    if torch.compiler.is_compiling():
        loss, iou, flag = _box_loss_fwd_op(p, t, *args)
    else:
        loss, iou, flag = _BoxLossTriton.apply(p, t, *args)
    ok = None
    if validate:
        # the flag itself is the assert's operand (nonzero = valid): no reduction op
        ok = bool(flag) if host_value_checks(input, target) else flag
    return loss.reshape(batch), (iou.reshape(batch) if want_iou else None), ok
