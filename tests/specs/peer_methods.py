"""Specs of the methods added to match the peers: ldam, seesaw, generalized_dice, wiou, 3-D boxes."""

from __future__ import annotations

import torch

import tailwise.functional as TF

from ._spec import LossSpec

_COUNTS = [40, 20, 9, 4, 2]


def _logits_target(n, device, dtype, g, c=5):
    x = torch.randn(n, c, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g).to(device)
    return x, y


def _ldam(n, device, dtype, g):
    x, y = _logits_target(n, device, dtype, g)
    return (x, y), {}


def _seesaw(n, device, dtype, g):
    x, y = _logits_target(n, device, dtype, g)
    return (x, y), {}


def _seg(n, device, dtype, g):
    x = torch.randn(n, 3, 5, 4, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    y = torch.randint(0, 3, (n, 5, 4), generator=g).to(device)
    return (x, y), {}


def _boxes(n, device, dtype, g):
    xy = torch.rand(n, 2, generator=g) * 10
    wh = torch.rand(n, 2, generator=g) * 4 + 0.5
    p = torch.cat([xy, xy + wh], -1).to(device=device, dtype=dtype).requires_grad_(True)
    xy2 = xy + torch.rand(n, 2, generator=g)
    t = torch.cat([xy2, xy2 + wh], -1).to(device=device, dtype=dtype)
    return (p, t), {}


def _boxes3d(n, device, dtype, g):
    lo = torch.rand(n, 3, generator=g) * 10
    size = torch.rand(n, 3, generator=g) * 4 + 0.5
    p = torch.cat([lo, lo + size], -1).to(device=device, dtype=dtype).requires_grad_(True)
    lo2 = lo + torch.rand(n, 3, generator=g)
    t = torch.cat([lo2, lo2 + size], -1).to(device=device, dtype=dtype)
    return (p, t), {}


def _ntxent(n, device, dtype, g):
    z = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    z = z.to(device=device, dtype=dtype).requires_grad_(True)
    return (z, torch.randint(0, 3, (n,), generator=g).to(device)), {}


SPECS = {
    "ldam": LossSpec(make=_ldam, functional=TF.ldam_loss, module_kwargs={"class_counts": _COUNTS},
                     functional_kwargs={"class_counts": _COUNTS}, needs_class_counts=True),
    # the functional is pure (cumulative counts are an argument); the module counts the batch
    # first, so functional == module holds with the counts the module reached
    "seesaw": LossSpec(make=_seesaw, functional=None, module_kwargs={"num_classes": 5}, stateful=True),
    "generalized_dice": LossSpec(make=_seg, functional=TF.generalized_dice_loss),
    "wiou": LossSpec(make=_boxes, functional=None, module_kwargs={"version": "v3"}, stateful=True),
    "iou_3d": LossSpec(make=_boxes3d, functional=TF.iou_3d_loss),
    "giou_3d": LossSpec(make=_boxes3d, functional=TF.giou_3d_loss),
    "ntxent": LossSpec(make=_ntxent, functional=TF.ntxent_loss, pairwise=True, reductions=("mean",)),
}
