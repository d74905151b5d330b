"""Axis-aligned 3-D boxes ``(x1, y1, z1, x2, y2, z2)``: pairwise IoU/GIoU and the aligned
IoU/GIoU losses (as MONAI supports 3-D boxes for detection in volumes)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from .._reduction import reduce_loss
from .._validation import check_floating, check_reduction, check_same_shape, check_tensor
from ..registry import register_loss
from ._geometry import DEFAULT_EPS
from ._module import check_eps

__all__ = ["box_iou_3d", "generalized_box_iou_3d", "iou_3d_loss", "giou_3d_loss", "IoU3DLoss", "GIoU3DLoss"]


class _Terms3D(NamedTuple):
    inter: Tensor
    union: Tensor
    hull: Tensor


def _as_float_boxes(boxes, name: str) -> Tensor:
    check_tensor(boxes, name, last_dim=6)
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise TypeError(f"{name} must hold real box coordinates, got dtype {boxes.dtype}")
    # integer boxes (voxel indices) are computed in float, as torchvision does for 2-D
    return boxes if boxes.is_floating_point() else boxes.float()


def _check_order(boxes: Tensor, name: str, validate: bool) -> None:
    if not validate or boxes.numel() == 0:
        return
    from .._validation import assert_values, host_value_checks
    lo, hi = boxes[..., :3], boxes[..., 3:]
    # a +inf corner passes the order test and gives IoU 0, a finite loss that would hide it
    ok = (hi >= lo) & torch.isfinite(lo) & torch.isfinite(hi)
    if host_value_checks(boxes):
        if not bool(ok.all()):
            i = int((~ok).reshape(-1, 3).any(-1).nonzero()[0, 0])
            raise ValueError(f"{name} has an inverted box (x2 < x1, y2 < y1 or z2 < z1) or a non-finite "
                             f"coordinate at box index {i}: {boxes.reshape(-1, 6)[i].tolist()}; pass "
                             f"validate=False to skip this check")
    else:
        assert_values(ok, f"{name} has an inverted box (x2 < x1, y2 < y1 or z2 < z1) or a non-finite coordinate")


def _volume(extent: Tensor) -> Tensor:
    # not ``prod(-1)``: its backward counts the zeros on the host (a sync on CUDA every step)
    return extent[..., 0] * extent[..., 1] * extent[..., 2]


def _terms(a: Tensor, b: Tensor, eps: float) -> _Terms3D:
    lo = torch.maximum(a[..., :3], b[..., :3])
    hi = torch.minimum(a[..., 3:], b[..., 3:])
    inter = _volume((hi - lo).clamp_min(0))
    vol_a = _volume(a[..., 3:] - a[..., :3])
    vol_b = _volume(b[..., 3:] - b[..., :3])
    union = vol_a + vol_b - inter + eps
    hull = _volume(torch.maximum(a[..., 3:], b[..., 3:]) - torch.minimum(a[..., :3], b[..., :3])) + eps
    return _Terms3D(inter, union, hull)


def _pairwise(boxes1, boxes2, eps, validate) -> _Terms3D:
    eps = check_eps(eps)
    b1, b2 = _as_float_boxes(boxes1, "boxes1"), _as_float_boxes(boxes2, "boxes2")
    for b, name in ((b1, "boxes1"), (b2, "boxes2")):
        if b.dim() != 2:
            raise ValueError(f"{name} must be a 2-D (N, 6) tensor of boxes, got shape {tuple(b.shape)}")
        _check_order(b, name, validate)
    dtype = torch.promote_types(b1.dtype, b2.dtype)
    return _terms(b1.to(dtype)[:, None, :], b2.to(dtype)[None, :, :], eps)


@float32_compute
def box_iou_3d(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, validate: bool = True) -> Tensor:
    """Pairwise IoU of 3-D boxes ``(N, 6)`` x ``(M, 6)`` -> ``(N, M)``; integer boxes are accepted.

    Example:
        >>> import torch
        >>> box_iou_3d(torch.tensor([[0, 0, 0, 2, 2, 2]]), torch.tensor([[1, 0, 0, 3, 2, 2]]))
        tensor([[0.3333]])
    """
    t = _pairwise(boxes1, boxes2, eps, validate)
    return t.inter / t.union


@float32_compute
def generalized_box_iou_3d(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS,
                           validate: bool = True) -> Tensor:
    """Pairwise GIoU of 3-D boxes, ``IoU - |C minus (A u B)| / |C|`` with ``C`` the enclosing box.

    Example:
        >>> import torch
        >>> generalized_box_iou_3d(torch.tensor([[0., 0, 0, 1, 1, 1]]), torch.tensor([[2., 0, 0, 3, 1, 1]]))
        tensor([[-0.3333]])
    """
    t = _pairwise(boxes1, boxes2, eps, validate)
    return t.inter / t.union - (t.hull - t.union) / t.hull


def _aligned(input, target, eps, validate):
    eps = check_eps(eps)
    check_floating(input, "input", last_dim=6)
    check_floating(target, "target", last_dim=6)
    check_same_shape(input, target, "input", "target")
    _check_order(input.detach(), "input", validate)
    _check_order(target.detach(), "target", validate)
    return _terms(input, target.to(input.dtype), eps)


@float32_compute
def iou_3d_loss(input: Tensor, target: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean",
                sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""``1 - IoU`` between aligned 3-D boxes ``(..., 6)`` in ``(x1, y1, z1, x2, y2, z2)`` format.

    ``eps`` (1e-7) is added to the union, as in the 2-D family, so two zero-volume boxes give a
    loss of 1 instead of NaN.

    Example:
        >>> import torch
        >>> iou_3d_loss(torch.tensor([[0., 0, 0, 2, 2, 2]]), torch.tensor([[1., 0, 0, 3, 2, 2]]))
        tensor(0.6667)
    """
    check_reduction(reduction)
    t = _aligned(input, target, eps, validate)
    return reduce_loss(1.0 - t.inter / t.union, reduction, sample_weight)


@float32_compute
def giou_3d_loss(input: Tensor, target: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean",
                 sample_weight: Optional[Tensor] = None, validate: bool = True) -> Tensor:
    r"""Generalized IoU loss :math:`1 - \mathrm{IoU} + |C \setminus (A \cup B)| / |C|` for aligned
    3-D boxes (Rezatofighi et al., CVPR 2019, extended to volumes as MONAI's ``giou`` loss).

    Example:
        >>> import torch
        >>> giou_3d_loss(torch.tensor([[0., 0, 0, 1, 1, 1]]), torch.tensor([[2., 0, 0, 3, 1, 1]]))
        tensor(1.3333)
    """
    check_reduction(reduction)
    t = _aligned(input, target, eps, validate)
    return reduce_loss(1.0 - t.inter / t.union + (t.hull - t.union) / t.hull, reduction, sample_weight)


class _Box3DLoss(Loss):
    _fn = None

    def __init__(self, eps: float = DEFAULT_EPS, reduction: str = "mean", validate: bool = True) -> None:
        super().__init__(reduction)
        self.eps = check_eps(eps)
        self.validate = bool(validate)

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return type(self)._fn(input, target, eps=self.eps, reduction=self.reduction, sample_weight=sample_weight,
                              validate=self.validate)


@register_loss("iou_3d")
class IoU3DLoss(_Box3DLoss):
    """``1 - IoU`` for 3-D boxes; see :func:`tailwise.functional.iou_3d_loss`."""

    _fn = staticmethod(iou_3d_loss)


@register_loss("giou_3d")
class GIoU3DLoss(_Box3DLoss):
    """Generalized IoU loss for 3-D boxes; see :func:`tailwise.functional.giou_3d_loss`."""

    _fn = staticmethod(giou_3d_loss)
