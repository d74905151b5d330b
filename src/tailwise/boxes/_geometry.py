"""The one geometry kernel of the box family: formats, validation and pair terms.

Every loss and every pairwise matrix in :mod:`tailwise.boxes` goes through :func:`pair_terms`
(intersection, union, IoU, enclosing box, centre distance, widths and heights), so eps placement
and degenerate-box handling are decided once, here.

Conventions (shared by every loss of the family):

* ``union = area_a + area_b - inter + eps``, so two zero-area boxes give ``IoU = 0 / eps = 0``
  instead of ``0 / 0``; with ``eps = 1e-7`` (torchvision's and the official DIoU code's value)
  the bias on real boxes is below float32 resolution for areas above ~1.
* ``c2 = cw^2 + ch^2 + eps`` (squared enclosing-box diagonal), ``C = cw * ch + eps`` (enclosing
  area), as in the official DIoU/CIoU code and torchvision.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from torch import Tensor

from .._validation import assert_values, check_floating, check_same_shape, host_value_checks

__all__ = ["BOX_FORMATS", "box_convert", "to_xyxy", "check_boxes", "check_pair", "pair_terms",
           "PairTerms", "DEFAULT_EPS"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
DEFAULT_EPS = 1e-7


def _check_format(fmt, name: str = "box_format") -> str:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    return fmt


def to_xyxy(boxes: Tensor, box_format: str = "xyxy") -> Tensor:
    """Convert ``(..., 4)`` boxes from ``box_format`` to ``(x1, y1, x2, y2)`` (differentiable)."""
    if box_format == "xyxy":
        return boxes
    a, b, c, d = boxes.unbind(-1)
    if box_format == "xywh":
        return torch.stack((a, b, a + c, b + d), dim=-1)
    # cxcywh
    return torch.stack((a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d), dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``(..., 4)`` boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (like torchvision).

    Example:
        >>> import torch
        >>> box_convert(torch.tensor([[1., 2., 3., 4.]]), "xyxy", "cxcywh")
        tensor([[2., 3., 2., 2.]])
    """
    check_floating(boxes, "boxes", last_dim=4)
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    if in_fmt == out_fmt:
        return boxes.clone()
    xyxy = to_xyxy(boxes, in_fmt)
    if out_fmt == "xyxy":
        return xyxy
    x1, y1, x2, y2 = xyxy.unbind(-1)
    if out_fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def _index(flat_idx: int, shape) -> object:
    """Turn a flat box index into the index a user would type (int for 1-D batches)."""
    if len(shape) <= 1:
        return flat_idx
    idx = []
    for size in reversed(shape):
        idx.append(flat_idx % size)
        flat_idx //= size
    return tuple(reversed(idx))


def check_boxes(boxes, name: str, box_format: str, validate: bool = True, *, finite: bool = True) -> Tensor:
    """Validate ``(..., 4)`` boxes and return them in ``xyxy``.

    The common (valid) case costs two fused reductions; the exact first bad index is only searched
    for when something is wrong. On accelerators and while compiling (see
    :func:`tailwise._validation.host_value_checks`) the check is a device-side assert instead:
    inverted boxes fail it, a NaN does not (it propagates to a NaN loss, like a NaN logit);
    ``finite`` also asserts finiteness (set for targets: labels are data, never NaN).
    """
    check_floating(boxes, name, last_dim=4)
    xyxy = to_xyxy(boxes, box_format)
    if not validate or boxes.numel() == 0:
        return xyxy
    if not host_value_checks(boxes):
        x = xyxy.detach()
        ok = (~(x[..., 2:] < x[..., :2])).all()
        if finite:
            ok = ok & torch.isfinite(x).all()
        assert_values(ok, f"{name} must hold finite boxes with x2 >= x1 and y2 >= y1 ({box_format!r} format); "
                          f"pass validate=False to skip this check")
        return xyxy
    b = boxes.detach()
    if not bool(torch.isfinite(b).all()):
        flat = (~torch.isfinite(b)).reshape(-1, 4).any(-1).nonzero()[0, 0].item()
        i = _index(int(flat), b.shape[:-1])
        raise ValueError(f"{name} must hold finite ({box_format}) boxes, got {b.reshape(-1, 4)[flat].tolist()} "
                         f"at box index {i}")
    x = xyxy.detach()
    ok = (x[..., 2:] >= x[..., :2]).all()
    if not bool(ok):
        flat = (x[..., 2:] < x[..., :2]).reshape(-1, 2).any(-1).nonzero()[0, 0].item()
        i = _index(int(flat), b.shape[:-1])
        raise ValueError(f"{name} has an inverted box (x2 < x1 or y2 < y1, i.e. negative width or height) "
                         f"at box index {i}: {b.reshape(-1, 4)[flat].tolist()} in {box_format!r} format; "
                         f"pass validate=False to skip this check")
    return xyxy


def check_pair(input, target, box_format: str, validate: bool) -> Tuple[Tensor, Tensor]:
    """Validate a prediction/target pair of ``(..., 4)`` boxes; both returned in ``xyxy``."""
    _check_format(box_format)
    check_floating(input, "input", last_dim=4)
    check_floating(target, "target", last_dim=4)
    check_same_shape(input, target, "input", "target")
    p = check_boxes(input, "input", box_format, validate, finite=False)
    t = check_boxes(target, "target", box_format, validate)
    if t.dtype != p.dtype:
        dtype = torch.promote_types(p.dtype, t.dtype)
        p, t = p.to(dtype), t.to(dtype)
    return p, t


class PairTerms(NamedTuple):
    w1: Tensor
    h1: Tensor
    w2: Tensor
    h2: Tensor
    inter: Tensor
    union: Tensor  # eps included
    iou: Tensor
    cw: Tensor  # enclosing box width / height
    ch: Tensor
    rho2: Tensor  # squared centre distance
    c2: Tensor  # squared enclosing diagonal, eps included


def pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps: float) -> PairTerms:
    """Geometry of box pairs given as coordinate columns (broadcastable tensors).

    ``(a1, b1, a2, b2)`` are ``x1, y1, x2, y2`` of the first boxes, capitals of the second.
    Works for aligned pairs (``(N,)`` columns) and, by broadcasting ``(N, 1)`` with ``(1, M)``,
    for pairwise matrices.
    """
    w1 = a2 - a1
    h1 = b2 - b1
    w2 = A2 - A1
    h2 = B2 - B1
    iw = (torch.minimum(a2, A2) - torch.maximum(a1, A1)).clamp_min(0)
    ih = (torch.minimum(b2, B2) - torch.maximum(b1, B1)).clamp_min(0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(a2, A2) - torch.minimum(a1, A1)
    ch = torch.maximum(b2, B2) - torch.minimum(b1, B1)
    dx = (a1 + a2) - (A1 + A2)
    dy = (b1 + b2) - (B1 + B2)
    rho2 = (dx * dx + dy * dy) * 0.25
    c2 = cw * cw + ch * ch + eps
    return PairTerms(w1, h1, w2, h2, inter, union, iou, cw, ch, rho2, c2)


def columns(xyxy: Tensor):
    """The four coordinate columns of ``(..., 4)`` boxes."""
    return xyxy.unbind(-1)
