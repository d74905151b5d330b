"""Op ``"box_loss"``: the per-pair loss of the IoU family, behind the kernels dispatch point.

One op serves ``iou`` (linear), ``iou_log`` (UnitBox), ``giou``, ``diou``, ``ciou``, ``eiou``
(also the EIoU term of Focal-EIoU, with ``want_iou``) and ``cdiou``. Its signature, for every
backend::

    box_loss(input, target, kind, box_format, eps, validate, lambda_, want_iou)
        -> (loss (...), iou (...) or None, ok: bool, one-element tensor or None)

``input``/``target`` are ``(..., 4)`` boxes in ``box_format`` (converted inside the op), ``ok``
is ``None`` when ``validate`` is false, else true when every box is finite and not inverted: a
Python bool where values may be read on the host
(:func:`tailwise._validation.host_value_checks`: eager CPU, or the full validation mode), else a
one-element device tensor, nonzero when valid (a bool from the torch path, the kernel's int32
flag from the Triton path), that the caller must not read (it becomes a device-side assert). The caller decides what to do with it (exact ``ValueError`` on the host
for eager CPU tensors, a device-side assert on CUDA; see :mod:`tailwise.boxes._fused`), so no
backend reads a value on the host.

Backends:

* ``torch`` (the reference and the CPU path): GIoU/DIoU/CIoU run through
  :class:`_FusedBoxLoss`, a ``torch.autograd.Function`` with a hand-derived backward that keeps
  only the two ``(N, 4)`` coordinate blocks for backward (the textbook formulation keeps ~30
  ``(N,)`` intermediates and is memory-bound on CPU); the other kinds are the formula written
  with tensor ops and autograd.
* ``compile``: the torch path with :class:`_FusedBoxLoss`'s two elementwise functions handed to
  ``torch.compile`` (Inductor fuses each into one loop) from ``compile_min_boxes`` pairs on, per
  device type: 131,072 on CPU (tuned on 2 cores); never elsewhere (on CUDA ``auto`` runs the
  Triton kernel, and a forced torch path stays eager: no first-call compile).
  :func:`tailwise.boxes.set_box_backend` adjusts the rule.
* ``triton`` (:mod:`._box_triton`): one elementwise forward kernel and one backward kernel for
  every kind and box format, the validity check folded into the forward.

Ties (``x2 == X2`` etc.) split the gradient of ``min``/``max`` in halves, as autograd does for
``torch.minimum``/``torch.maximum``; ``clamp_min(0)`` passes gradient at exactly 0, as autograd
does. So every backend's gradient equals autograd's of the same formula, also on identical boxes.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional

import torch
from torch import Tensor

from .._validation import host_value_checks
from ._dispatch import register_op

__all__ = ["KINDS", "FUSED_KINDS", "box_loss_torch", "box_loss_compile", "fused_box_loss_torch",
           "set_compile_rule", "get_compile_rule"]

KINDS = ("iou", "iou_log", "giou", "diou", "ciou", "eiou", "cdiou")
FUSED_KINDS = ("giou", "diou", "ciou")
_CIOU_K = 4.0 / (math.pi ** 2)

# the torch path's compile rule; "compile_min_boxes" is the CPU threshold (public through
# tailwise.boxes.get_box_backend), other device types never compile unless backend="compile"
_STATE = {"backend": "auto", "compile_min_boxes": 131072, "compile_failed": False}
_OTHER_DEVICES_MIN_BOXES: Dict[str, Optional[int]] = {}
_COMPILED: Dict[str, object] = {}


def set_compile_rule(backend: str = "auto", compile_min_boxes: Optional[int] = None) -> None:
    """``"auto"`` (size rule), ``"eager"`` (never compile) or ``"compile"`` (always), and the CPU threshold."""
    if backend not in ("auto", "eager", "compile"):
        raise ValueError(f"backend must be one of ('auto', 'eager', 'compile'), got {backend!r}")
    if compile_min_boxes is not None:
        if isinstance(compile_min_boxes, bool) or not isinstance(compile_min_boxes, int) or compile_min_boxes < 0:
            raise ValueError(f"compile_min_boxes must be a non-negative int, got {compile_min_boxes!r}")
        _STATE["compile_min_boxes"] = compile_min_boxes
    _STATE["backend"] = backend


def get_compile_rule() -> dict:
    """The torch path's compile settings (a copy)."""
    return dict(_STATE)


# ----------------------------------------------------------------------------- geometry (torch)
_GEOMETRY = {}


def _geometry():
    # the family's one geometry kernel lives with the boxes; imported on first use (no import cycle)
    if not _GEOMETRY:
        from ..boxes import _geometry as geometry
        _GEOMETRY["pair_terms"], _GEOMETRY["to_xyxy"] = geometry.pair_terms, geometry.to_xyxy
    return _GEOMETRY


def _pair_terms(*cols, eps):
    return _geometry()["pair_terms"](*cols, eps)


def _to_xyxy(boxes: Tensor, box_format: str) -> Tensor:
    return _geometry()["to_xyxy"](boxes, box_format)


# ----------------------------------------------------------------------------- fused GIoU/DIoU/CIoU
def _forward(p: Tensor, t: Tensor, eps: float, kind: str):
    """Per-box loss of ``(N, 4)`` xyxy blocks, plus a 2-vector for validation.

    The validation vector is ``[min(w, h over both sets), sum of all coordinates]``: a negative
    first entry means an inverted box, a non-finite second a NaN/inf. Computing it inside the
    kernel makes ``validate=True`` nearly free on the compiled path (the reductions share the loop).
    """
    g = _pair_terms(p[:, 0], p[:, 1], p[:, 2], p[:, 3], t[:, 0], t[:, 1], t[:, 2], t[:, 3], eps=eps)
    if kind == "giou":
        area_c = g.cw * g.ch + eps
        loss = 1.0 - g.iou + (area_c - g.union) / area_c
    else:
        loss = 1.0 - g.iou + g.rho2 / g.c2
        if kind == "ciou":
            diff = torch.atan2(g.w2, g.h2) - torch.atan2(g.w1, g.h1)
            v = _CIOU_K * diff * diff
            alpha = v / (1.0 - g.iou + v + eps)
            loss = loss + alpha * v
    smallest = torch.minimum(torch.minimum(g.w1, g.h1), torch.minimum(g.w2, g.h2)).amin()
    check = torch.stack((smallest, p.sum() + t.sum()))
    return loss, check


def _half_step(x: Tensor) -> Tensor:
    """1 where x > 0, 1/2 where x == 0, 0 where x < 0 (autograd's tie rule for min/max)."""
    return 0.5 * (1.0 + torch.sign(x))


def _backward(p: Tensor, t: Tensor, grad: Tensor, eps: float, kind: str):
    """Gradients ``(N, 4)`` w.r.t. both blocks, given the upstream per-box gradient ``grad``."""
    a1, b1, a2, b2 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    A1, B1, A2, B2 = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    g = _pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps=eps)
    iw_raw = torch.minimum(a2, A2) - torch.maximum(a1, A1)
    ih_raw = torch.minimum(b2, B2) - torch.maximum(b1, B1)
    iw = iw_raw.clamp_min(0)
    ih = ih_raw.clamp_min(0)

    g_iou = -grad
    zero = torch.zeros_like(grad)
    g_w = g_h = g_W = g_H = zero
    if kind == "giou":
        area_c = g.cw * g.ch + eps
        g_union = -grad / area_c                       # d(-U/C)/dU
        g_area_c = grad * g.union / (area_c * area_c)  # d(-U/C)/dC
        g_cw = g_area_c * g.ch
        g_ch = g_area_c * g.cw
        g_rho2 = None
    else:
        g_union = zero
        g_rho2 = grad / g.c2
        g_c2 = -g_rho2 * g.rho2 / g.c2
        g_cw = 2.0 * g.cw * g_c2
        g_ch = 2.0 * g.ch * g_c2
        if kind == "ciou":
            tp = torch.atan2(g.w1, g.h1)
            diff = torch.atan2(g.w2, g.h2) - tp
            v = _CIOU_K * diff * diff
            alpha = v / (1.0 - g.iou + v + eps)  # a constant for autograd, as in the official code
            # d atan2(w, h) = (h dw - w dh) / (w^2 + h^2); 0/0 on a point box is a zero gradient
            coef = grad * alpha * 2.0 * _CIOU_K * diff
            rp = coef / (g.w1 * g.w1 + g.h1 * g.h1).clamp_min(1e-30)
            rt = coef / (g.w2 * g.w2 + g.h2 * g.h2).clamp_min(1e-30)
            g_w = -rp * g.h1
            g_h = rp * g.w1
            g_W = rt * g.h2
            g_H = -rt * g.w2

    # iou = I / U
    g_union = g_union - g_iou * g.iou / g.union
    g_inter = g_iou / g.union - g_union
    # U = w h + W H - I + eps
    g_w = g_w + g_union * g.h1
    g_h = g_h + g_union * g.w1
    g_W = g_W + g_union * g.h2
    g_H = g_H + g_union * g.w2
    # I = clamp(iw_raw) * clamp(ih_raw)
    g_iw = g_inter * ih * (iw_raw >= 0)
    g_ih = g_inter * iw * (ih_raw >= 0)

    s_x2 = _half_step(A2 - a2)  # share of min(a2, A2) going to a2
    s_y2 = _half_step(B2 - b2)
    r_x1 = _half_step(a1 - A1)  # share of max(a1, A1) going to a1
    r_y1 = _half_step(b1 - B1)
    if g_rho2 is not None:
        g_dx = g_rho2 * 0.5 * ((a1 + a2) - (A1 + A2))
        g_dy = g_rho2 * 0.5 * ((b1 + b2) - (B1 + B2))
    else:
        g_dx = g_dy = zero

    ga1 = -g_iw * r_x1 - g_cw * (1.0 - r_x1) - g_w + g_dx
    ga2 = g_iw * s_x2 + g_cw * (1.0 - s_x2) + g_w + g_dx
    gb1 = -g_ih * r_y1 - g_ch * (1.0 - r_y1) - g_h + g_dy
    gb2 = g_ih * s_y2 + g_ch * (1.0 - s_y2) + g_h + g_dy
    gA1 = -g_iw * (1.0 - r_x1) - g_cw * r_x1 - g_W - g_dx
    gA2 = g_iw * (1.0 - s_x2) + g_cw * s_x2 + g_W - g_dx
    gB1 = -g_ih * (1.0 - r_y1) - g_ch * r_y1 - g_H - g_dy
    gB2 = g_ih * (1.0 - s_y2) + g_ch * s_y2 + g_H - g_dy
    return (torch.stack((ga1, gb1, ga2, gb2), dim=1),
            torch.stack((gA1, gB1, gA2, gB2), dim=1))


def _compiled(name: str, fn):
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


def _use_compile(n: int, device_type: str) -> bool:
    backend = _STATE["backend"]
    if backend == "eager" or _STATE["compile_failed"] or torch.compiler.is_compiling():
        return False
    if backend == "compile":
        return True
    threshold = _STATE["compile_min_boxes"] if device_type == "cpu" else _OTHER_DEVICES_MIN_BOXES.get(device_type)
    return threshold is not None and n >= threshold


def _run(name: str, fn, allow_compile: bool, p: Tensor, *args):
    if allow_compile and _use_compile(p.shape[0], p.device.type):
        try:
            return _compiled(name, fn)(p, *args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
            _STATE["compile_failed"] = True
            warnings.warn(f"tailwise: torch.compile of the fused box kernels failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager kernels",
                          RuntimeWarning, stacklevel=3)
    return fn(p, *args)


class _FusedBoxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, eps: float, kind: str, allow_compile: bool):
        # the inputs themselves are saved (no intermediates): backward recomputes the geometry
        ctx.save_for_backward(pred, target)
        ctx.eps, ctx.kind, ctx.allow_compile = eps, kind, allow_compile
        loss, check = _run("fwd", _forward, allow_compile, pred, target, eps, kind)
        ctx.mark_non_differentiable(check)
        return loss, check

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_check=None):
        p, t = ctx.saved_tensors
        gp, gt = _run("bwd", _backward, ctx.allow_compile, p, t, grad.contiguous(), ctx.eps, ctx.kind)
        return (gp if ctx.needs_input_grad[0] else None,
                gt if ctx.needs_input_grad[1] else None, None, None, None)


def fused_box_loss_torch(p: Tensor, t: Tensor, eps: float, kind: str, allow_compile: bool = True):
    """GIoU/DIoU/CIoU of ``(N, 4)`` xyxy blocks (N > 0): ``(loss (N,), check (2,))``."""
    return _FusedBoxLoss.apply(p, t, float(eps), kind, allow_compile)


# ----------------------------------------------------------------------------- the other kinds
def _safe_norm(dx: Tensor, dy: Tensor) -> Tensor:
    """sqrt(dx^2 + dy^2) with a zero (not NaN) gradient at the origin (double-where trick)."""
    d2 = dx * dx + dy * dy
    pos = d2 > 0
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def _autograd_kind(p: Tensor, t: Tensor, kind: str, eps: float, lambda_: float):
    """(loss, iou) of the kinds that run on autograd, from xyxy boxes (any leading shape)."""
    a1, b1, a2, b2 = p.unbind(-1)
    A1, B1, A2, B2 = t.unbind(-1)
    g = _pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps=eps)
    if kind == "iou":
        return 1.0 - g.iou, g.iou
    if kind == "iou_log":
        return -g.iou.clamp_min(eps).log(), g.iou
    if kind == "eiou":
        dw = g.w1 - g.w2
        dh = g.h1 - g.h2
        loss = (1.0 - g.iou + g.rho2 / g.c2 + dw * dw / (g.cw * g.cw + eps) + dh * dh / (g.ch * g.ch + eps))
        return loss, g.iou
    # cdiou
    dx1, dx2, dy1, dy2 = a1 - A1, a2 - A2, b1 - B1, b2 - B2
    corners = _safe_norm(dx1, dy1) + _safe_norm(dx2, dy1) + _safe_norm(dx2, dy2) + _safe_norm(dx1, dy2)
    return 1.0 - g.iou + lambda_ * corners / (4.0 * g.c2.sqrt()), g.iou


def _promote(p: Tensor, t: Tensor):
    if t.dtype != p.dtype:
        dtype = torch.promote_types(p.dtype, t.dtype)
        p, t = p.to(dtype), t.to(dtype)
    return p, t


def _valid_torch(input: Tensor, target: Tensor, p: Tensor, t: Tensor):
    """True when every box is finite and not inverted (the value check of check_boxes).

    A Python bool where values may be read on the host (eager CPU: short-circuits like the
    exact check), else a 0-d device tensor (no synchronisation).
    """
    checks = (lambda: torch.isfinite(input).all(), lambda: torch.isfinite(target).all(),
              lambda: (p[..., 2:] >= p[..., :2]).all(), lambda: (t[..., 2:] >= t[..., :2]).all())
    if host_value_checks(input, target):
        return all(bool(c()) for c in checks)
    ok = checks[0]()
    for c in checks[1:]:
        ok = ok & c()
    return ok


def _box_loss(input: Tensor, target: Tensor, kind: str, box_format: str, eps: float, validate: bool,
              lambda_: float, want_iou: bool, allow_compile: bool):
    p, t = _promote(_to_xyxy(input, box_format), _to_xyxy(target, box_format))
    if kind not in FUSED_KINDS:
        ok = _valid_torch(input, target, p, t) if validate and input.numel() else None
        loss, iou = _autograd_kind(p, t, kind, eps, lambda_)
        return loss, (iou if want_iou else None), ok
    batch = p.shape[:-1]
    pf = p.reshape(-1, 4)
    tf = t.reshape(-1, 4)
    if pf.shape[0] == 0:
        return (pf.sum(-1) + tf.sum(-1)).reshape(batch), None, None
    loss, check = fused_box_loss_torch(pf, tf, eps, kind, allow_compile)
    ok = None
    if validate:
        if host_value_checks(pf, tf):
            smallest, total = check.tolist()
            ok = smallest >= 0 and math.isfinite(total)
        else:
            ok = (check[0] >= 0) & torch.isfinite(check[1])
    return loss.reshape(batch), None, ok


def box_loss_torch(input, target, kind, box_format, eps, validate, lambda_=1.0, want_iou=False):
    """The reference implementation: eager hand-derived GIoU/DIoU/CIoU, autograd for the rest."""
    return _box_loss(input, target, kind, box_format, eps, validate, lambda_, want_iou, False)


def box_loss_compile(input, target, kind, box_format, eps, validate, lambda_=1.0, want_iou=False):
    """:func:`box_loss_torch` with the fused kinds compiled from the device's size threshold on."""
    return _box_loss(input, target, kind, box_format, eps, validate, lambda_, want_iou, True)


register_op("box_loss", torch=box_loss_torch, compile=box_loss_compile,
            triton="tailwise.kernels._box_triton:box_loss_triton",
            losses=("iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "cdiou"))
