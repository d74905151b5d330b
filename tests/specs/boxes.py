"""Specs of the box-regression family (see tests/specs/_spec.py)."""

from __future__ import annotations

import torch

import tailwise.functional as TF

from ._spec import LossSpec


def _boxes(n, gen, device, dtype, grad):
    xy = torch.rand((n, 2), generator=gen) * 8
    wh = torch.rand((n, 2), generator=gen) * 4 + 0.5
    b = torch.cat([xy, xy + wh], 1).to(device=device, dtype=dtype)
    return b.requires_grad_(grad)


def _make(n, device, dtype, gen):
    return (_boxes(n, gen, device, dtype, True), _boxes(n, gen, device, dtype, False)), {}


SPECS = {
    "iou": LossSpec(make=_make, functional=TF.iou_loss),
    "giou": LossSpec(make=_make, functional=TF.giou_loss),
    "diou": LossSpec(make=_make, functional=TF.diou_loss),
    "ciou": LossSpec(make=_make, functional=TF.ciou_loss),
    "eiou": LossSpec(make=_make, functional=TF.eiou_loss),
    "focal_eiou": LossSpec(make=_make, functional=TF.focal_eiou_loss, pairwise=True),
    "cdiou": LossSpec(make=_make, functional=TF.cdiou_loss),
}
