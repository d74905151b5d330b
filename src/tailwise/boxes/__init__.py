"""Bounding-box regression losses: IoU, GIoU, DIoU, CIoU, EIoU, Focal-EIoU, CDIoU.

All share one geometry kernel (:mod:`._geometry`), accept ``xyxy`` (default), ``xywh`` and
``cxcywh`` boxes, validate inputs, and compute in float32 under half-precision autocast.
IoU, GIoU, DIoU, CIoU, EIoU, Focal-EIoU and CDIoU go through one op of the kernels layer
(:mod:`tailwise.kernels.box`):
a fused hand-derived backward for GIoU/DIoU/CIoU on CPU, Triton kernels for every loss on CUDA.
See docs/boxes.md.
"""

from . import functional  # noqa: F401
from ._fused import get_box_backend, set_box_backend
from ._geometry import box_convert
from .cdiou import CDIoULoss
from .ciou import CIoULoss
from .diou import DIoULoss
from .eiou import EIoULoss, FocalEIoULoss
from .giou import GIoULoss
from .iou import IoULoss
from .pairwise import box_iou, complete_box_iou, distance_box_iou, generalized_box_iou
from .box3d import GIoU3DLoss, IoU3DLoss, box_iou_3d, generalized_box_iou_3d
from .wiou import WIOU_PRESETS, WIoULoss, wiou_momentum

__all__ = ["IoULoss", "GIoULoss", "DIoULoss", "CIoULoss", "EIoULoss", "FocalEIoULoss", "CDIoULoss",
           "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou", "box_convert", "set_box_backend",
           "get_box_backend", "WIoULoss", "WIOU_PRESETS", "wiou_momentum",
           "IoU3DLoss", "GIoU3DLoss", "box_iou_3d", "generalized_box_iou_3d"]
