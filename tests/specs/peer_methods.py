"""Specs of the methods added to match the peers: ldam, seesaw, generalized_dice, wiou."""

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


SPECS = {
    "ldam": LossSpec(make=_ldam, functional=TF.ldam_loss, module_kwargs={"class_counts": _COUNTS},
                     functional_kwargs={"class_counts": _COUNTS}, needs_class_counts=True),
    # the functional is pure (cumulative counts are an argument); the module counts the batch
    # first, so functional == module holds with the counts the module reached
    "seesaw": LossSpec(make=_seesaw, functional=None, module_kwargs={"num_classes": 5}, stateful=True),
    "generalized_dice": LossSpec(make=_seg, functional=TF.generalized_dice_loss),
    "wiou": LossSpec(make=_boxes, functional=None, module_kwargs={"version": "v3"}, stateful=True),
}
