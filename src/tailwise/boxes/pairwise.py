"""Pairwise ``(N, M)`` IoU / GIoU / DIoU matrices for matching (torchvision.ops names)."""

from __future__ import annotations

from torch import Tensor

from .._precision import float32_compute
from ._geometry import DEFAULT_EPS, _check_format, check_boxes, pair_terms
from ._module import check_eps

__all__ = ["box_iou", "generalized_box_iou", "distance_box_iou"]


def _pairs(boxes1, boxes2, box_format, eps, validate):
    _check_format(box_format)
    eps = check_eps(eps)
    for b, name in ((boxes1, "boxes1"), (boxes2, "boxes2")):
        if hasattr(b, "dim") and b.dim() != 2:
            raise ValueError(f"{name} must be a 2-D (N, 4) tensor of boxes, got shape {tuple(b.shape)}")
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
    adds none).

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

    Example:
        >>> import torch
        >>> distance_box_iou(torch.tensor([[0., 0., 1., 1.]]), torch.tensor([[2., 0., 3., 1.]]))
        tensor([[-0.4000]])
    """
    g, _ = _pairs(boxes1, boxes2, box_format, eps, validate)
    return g.iou - g.rho2 / g.c2
