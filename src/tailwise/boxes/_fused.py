"""Fused GIoU / DIoU / CIoU: one ``torch.autograd.Function`` with a hand-derived backward.

Why: the textbook formulation (one tensor op per formula term, torchvision.ops style) makes
autograd record ~40 nodes and keep ~30 ``(N,)`` intermediates alive until backward; on CPU that
is memory-bound. Here the forward keeps only the two ``(4, N)`` coordinate blocks, and the
backward recomputes the geometry (through the shared :func:`~._geometry.pair_terms` kernel) and
applies the chain rule written out by hand (derivation in ``docs/boxes.md``). Both directions are
pure elementwise functions of the eight coordinate columns, so for large batches they are handed
to ``torch.compile`` (Inductor fuses each into one C++ loop). Small batches never compile.

Backends (:func:`set_box_backend`):

* ``"auto"`` (default): eager hand-derived kernels below ``compile_min_boxes`` (131,072 boxes) or
  when compilation is unavailable; compiled kernels above. The first large call of each loss
  pays a one-off compile (about 20-60 s of CPU on a small machine; later calls and later
  sizes reuse it because the kernels are compiled with ``dynamic=True``). A failure to compile
  (no C++ compiler, unsupported platform) falls back to eager with one warning.
* ``"eager"``: never compile.
* ``"compile"``: compile whatever the size (useful to warm up at start-up).

Ties (``x2 == X2`` etc.) split the gradient of ``min``/``max`` in halves, as autograd does for
``torch.minimum``/``torch.maximum``; ``clamp_min(0)`` passes gradient at exactly 0, as autograd
does. So the fused gradient equals autograd's of the same formula, also on identical boxes.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .._validation import host_value_checks
from ._geometry import check_pair, pair_terms

__all__ = ["fused_box_loss", "set_box_backend", "get_box_backend"]

_KINDS = ("giou", "diou", "ciou")
_CIOU_K = 4.0 / (math.pi ** 2)

_STATE = {"backend": "auto", "compile_min_boxes": 131072, "compile_failed": False}
_COMPILED: Dict[str, object] = {}


def set_box_backend(backend: str = "auto", compile_min_boxes: Optional[int] = None) -> None:
    """Choose how GIoU/DIoU/CIoU run: ``"auto"`` (default), ``"eager"`` or ``"compile"``.

    ``compile_min_boxes`` is the batch size from which ``"auto"`` uses compiled kernels.
    """
    if backend not in ("auto", "eager", "compile"):
        raise ValueError(f"backend must be one of ('auto', 'eager', 'compile'), got {backend!r}")
    _STATE["backend"] = backend
    if compile_min_boxes is not None:
        if isinstance(compile_min_boxes, bool) or not isinstance(compile_min_boxes, int) or compile_min_boxes < 0:
            raise ValueError(f"compile_min_boxes must be a non-negative int, got {compile_min_boxes!r}")
        _STATE["compile_min_boxes"] = compile_min_boxes


def get_box_backend() -> dict:
    """The current backend settings (a copy)."""
    return dict(_STATE)


# ----------------------------------------------------------------------------- kernels
def _forward(p: Tensor, t: Tensor, eps: float, kind: str):
    """Per-box loss of ``(N, 4)`` xyxy blocks, plus a 2-vector for validation.

    The validation vector is ``[min(w, h over both sets), sum of all coordinates]``: a negative
    first entry means an inverted box, a non-finite second a NaN/inf. Computing it inside the
    kernel makes ``validate=True`` nearly free on the compiled path (the reductions share the loop).
    """
    g = pair_terms(p[:, 0], p[:, 1], p[:, 2], p[:, 3], t[:, 0], t[:, 1], t[:, 2], t[:, 3], eps)
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
    g = pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps)
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


def _use_compile(n: int) -> bool:
    backend = _STATE["backend"]
    if backend == "eager" or _STATE["compile_failed"]:
        return False
    if backend == "compile":
        return True
    return n >= _STATE["compile_min_boxes"]


def _run(name: str, fn, n: int, *args):
    if _use_compile(n):
        try:
            return _compiled(name, fn)(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
            _STATE["compile_failed"] = True
            warnings.warn(f"tailwise: torch.compile of the fused box kernels failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager kernels",
                          RuntimeWarning, stacklevel=3)
    return fn(*args)


class _FusedBoxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, eps: float, kind: str):
        # the inputs themselves are saved (no intermediates): backward recomputes the geometry
        ctx.save_for_backward(pred, target)
        ctx.eps = eps
        ctx.kind = kind
        loss, check = _run("fwd", _forward, pred.shape[0], pred, target, eps, kind)
        ctx.mark_non_differentiable(check)
        return loss, check

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_check=None):
        p, t = ctx.saved_tensors
        gp, gt = _run("bwd", _backward, p.shape[0], p, t, grad.contiguous(), ctx.eps, ctx.kind)
        return (gp if ctx.needs_input_grad[0] else None,
                gt if ctx.needs_input_grad[1] else None, None, None)


def fused_box_loss(pred: Tensor, target: Tensor, eps: float, kind: str,
                   on_invalid: Optional[Callable[[], None]] = None) -> Tensor:
    """Per-box GIoU/DIoU/CIoU loss of ``(..., 4)`` xyxy boxes, shape ``(...)``.

    ``on_invalid`` is called (it should raise with the exact bad index) when the in-kernel check
    sees an inverted or non-finite box; ``None`` skips the check.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    batch = pred.shape[:-1]
    p = pred.reshape(-1, 4)
    t = target.reshape(-1, 4)
    if p.shape[0] == 0:
        return (p.sum(-1) + t.sum(-1)).reshape(batch)
    out, check = _FusedBoxLoss.apply(p, t, float(eps), kind)
    if on_invalid is not None:
        smallest, total = check.tolist()
        if not (smallest >= 0 and math.isfinite(total)):
            on_invalid()
    return out.reshape(batch)


def checked_fused_box_loss(input: Tensor, target: Tensor, box_format: str, eps: float, validate: bool,
                           kind: str) -> Tensor:
    """Shape/dtype checks up front; box validity checked inside the kernel (see :func:`_forward`)."""
    if validate and not host_value_checks(input, target):
        # accelerators / tracing: device-side asserts up front, no host read of the kernel's check
        p, t = check_pair(input, target, box_format, validate=True)
        return fused_box_loss(p, t, eps, kind, on_invalid=None)
    p, t = check_pair(input, target, box_format, validate=False)

    def raise_exact() -> None:
        check_pair(input, target, box_format, validate=True)

    return fused_box_loss(p, t, eps, kind, on_invalid=raise_exact if validate else None)
