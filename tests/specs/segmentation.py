"""Specs of the segmentation family (see tests/specs/_spec.py)."""

from __future__ import annotations

import tailwise.functional as TF

from ._make import randint, randn
from ._spec import LossSpec

C, S = 3, 5


def _seg(n, device, dtype, gen):
    return (randn((n, C, S, S), gen, device, dtype, grad=True), randint(C, (n, S, S), gen, device)), {}


def _features(n, device, dtype, gen):
    return (randn((n, 8, 4, 4), gen, device, dtype, grad=True), randint(4, (n, 4, 4), gen, device)), {}


SPECS = {
    "dice": LossSpec(make=_seg, functional=TF.dice_loss),
    "dice_ce": LossSpec(make=_seg, functional=TF.dice_ce_loss),
    "tversky": LossSpec(make=_seg, functional=TF.tversky_loss),
    "focal_tversky": LossSpec(make=_seg, functional=TF.focal_tversky_loss),
    "neural_collapse": LossSpec(make=_features, functional=TF.neural_collapse_loss,
                                module_kwargs=dict(num_classes=4, feat_dim=8),
                                functional_kwargs=dict(num_classes=4), pairwise=True),
}
