"""Functional forms of the box-regression losses and the pairwise IoU matrices."""

from .cdiou import cdiou_loss
from .ciou import ciou_loss
from .diou import diou_loss
from .eiou import eiou_loss, focal_eiou_loss
from .giou import giou_loss
from .iou import iou_loss
from .pairwise import box_iou, complete_box_iou, distance_box_iou, generalized_box_iou

__all__ = ["iou_loss", "giou_loss", "diou_loss", "ciou_loss", "eiou_loss", "focal_eiou_loss",
           "cdiou_loss", "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]

from .wiou import wiou_loss, wiou_momentum  # noqa: E402

__all__ += ["wiou_loss", "wiou_momentum"]

from .box3d import box_iou_3d, generalized_box_iou_3d, giou_3d_loss, iou_3d_loss  # noqa: E402

__all__ += ["iou_3d_loss", "giou_3d_loss", "box_iou_3d", "generalized_box_iou_3d"]
