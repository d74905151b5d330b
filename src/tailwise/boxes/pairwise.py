"""Pairwise ``(N, M)`` IoU / GIoU / DIoU / CIoU matrices for matching (torchvision.ops names).

Integer boxes (``uint8``, ``int8``, ``int16``, ``int32``, ``int64``: pixel coordinates) are
accepted as torchvision accepts them and computed in float32 (float64 when the other set is
float64); the result is a float matrix. torchvision forms intersections and areas in integer
arithmetic before dividing; float32 holds every integer coordinate below ``2**24`` exactly, so
the two agree to float32 rounding of the areas. (torchvision subtracts ``uint8`` corners before
widening them, which wraps around for disjoint boxes; converting first does not.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._precision import float32_compute
from ._geometry import DEFAULT_EPS, _check_format, check_boxes, pair_terms
from ._module import check_eps

__all__ = ["box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]


def _float_boxes(boxes, name: str, other) -> object:
    """Integer boxes as floating boxes (the other set's float dtype, else float32)."""
    if not isinstance(boxes, Tensor) or boxes.is_floating_point() or boxes.is_complex():
        return boxes  # floating boxes, or a non-tensor that check_boxes rejects with its TypeError
    if boxes.dtype == torch.bool:
        raise TypeError(f"{name} must be a floating-point or integer tensor of boxes, got dtype {boxes.dtype}")
    like = other.dtype if isinstance(other, Tensor) and other.is_floating_point() else torch.float32
    return boxes.to(like if like == torch.float64 else torch.float32)


def _pairs(boxes1, boxes2, box_format, eps, validate):
    _check_format(box_format)
    eps = check_eps(eps)
    for b, name in ((boxes1, "boxes1"), (boxes2, "boxes2")):
        if hasattr(b, "dim") and b.dim() != 2:
            raise ValueError(f"{name} must be a 2-D (N, 4) tensor of boxes, got shape {tuple(b.shape)}")
    boxes1, boxes2 = _float_boxes(boxes1, "boxes1", boxes2), _float_boxes(boxes2, "boxes2", boxes1)
    p = check_boxes(boxes1, "boxes1", box_format, validate)
    t = check_boxes(boxes2, "boxes2", box_format, validate)
    a1, b1, a2, b2 = (c[:, None] for c in p.unbind(-1))
    A1, B1, A2, B2 = (c[None, :] for c in t.to(p.dtype).unbind(-1))
    return pair_terms(a1, b1, a2, b2, A1, B1, A2, B2, eps), eps


@float32_compute
def box_iou(boxes1: Tensor, boxes2: Tensor, *, box_format: str = "xyxy", eps: float = DEFAULT_EPS,
            validate: bool = True) -> Tensor:
    """IoU of every box in ``boxes1`` ``(N, 4)`` with every box in ``boxes2`` ``(M, 4)``: ``(N, M)``.

    ``eps`` (default ``1e-7``) is added to the union so zero-area pairs give 0, not NaN (torchvision
    adds none). Float or integer boxes (integers computed in float32).

    Example:
        >>> import torch
        >>> box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.], [0., 0., 2., 2.]]))
        tensor([[0.3333, 1.0000]])
    """
    return _pairs(boxes1, boxes2, box_format, eps, validate)[0].iou


@float32_compute
def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, *, box_format: str = "xyxy",
                        eps: float = DEFAULT_EPS, validate: bool = True) -> Tensor:
    """Pairwise GIoU ``IoU - |C \\ (A u B)| / |C|`` in ``[-1, 1]``, shape ``(N, M)``.

    Float or integer boxes (integers computed in float32).

    Example:
        >>> import torch
        >>> generalized_box_iou(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]]))
        tensor([[-0.3333]])
    """
    g, eps = _pairs(boxes1, boxes2, box_format, eps, validate)
    area_c = g.cw * g.ch + eps
    return g.iou - (area_c - g.union) / area_c


@float32_compute
def distance_box_iou(boxes1: Tensor, boxes2: Tensor, *, box_format: str = "xyxy",
                     eps: float = DEFAULT_EPS, validate: bool = True) -> Tensor:
    """Pairwise DIoU ``IoU - rho^2 / c^2`` in ``[-1, 1]``, shape ``(N, M)``.

    Float or integer boxes (integers computed in float32).

    Example:
        >>> import torch
        >>> distance_box_iou(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]]))
        tensor([[-0.4000]])
    """
    g, _ = _pairs(boxes1, boxes2, box_format, eps, validate)
    return g.iou - g.rho2 / g.c2


@float32_compute
def complete_box_iou(boxes1: Tensor, boxes2: Tensor, *, box_format: str = "xyxy",
                     eps: float = DEFAULT_EPS, validate: bool = True) -> Tensor:
    r"""Pairwise Complete-IoU (Zheng et al., AAAI 2020, arXiv 1911.08287), shape ``(N, M)``.

    .. math::
        \mathrm{CIoU} = \mathrm{IoU} - \frac{\rho^2}{c^2} - \alpha v, \quad
        v = \frac{4}{\pi^2}\Big(\arctan\frac{w_2}{h_2} - \arctan\frac{w_1}{h_1}\Big)^2, \quad
        \alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}

    for box ``i`` of ``boxes1`` (width ``w_1``, height ``h_1``) and box ``j`` of ``boxes2``;
    ``1 - complete_box_iou(a, b).diagonal()`` is :func:`ciou_loss` of the aligned pairs.
    Semantics of ``torchvision.ops.complete_box_iou``: ``eps`` (default ``1e-7``) in ``c^2`` and
    in :math:`\alpha`'s denominator, :math:`\alpha` without gradient. Differences: ``eps`` is
    also added to the union (zero-area pairs give IoU 0, not NaN) and ``arctan(w/h)`` is
    ``atan2(w, h)`` (finite for zero-height boxes; equal otherwise). Float or integer boxes
    (integers computed in float32).

    Example:
        >>> import torch
        >>> a = torch.tensor([[0., 0., 2., 1.]]); b = torch.tensor([[0., 0., 1., 1.], [0., 0., 2., 1.]])
        >>> complete_box_iou(a, b)
        tensor([[0.4468, 1.0000]])
    """
    g, eps = _pairs(boxes1, boxes2, box_format, eps, validate)
    v = (4.0 / math.pi ** 2) * (torch.atan2(g.w2, g.h2) - torch.atan2(g.w1, g.h1)).square()
    # alpha is a weight, not a term to optimise (official code and torchvision: no_grad)
    alpha = (v / (1.0 - g.iou + v + eps)).detach()
    return g.iou - g.rho2 / g.c2 - alpha * v
