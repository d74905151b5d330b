"""Spec of the fused linear + cross-entropy loss (``linear_cross_entropy``)."""

from __future__ import annotations

import torch

import tailwise.functional as TF

from ._spec import LossSpec

_H, _C = 6, 5
_COUNTS = [50, 20, 10, 5, 1]


def _make(n, device, dtype, generator):
    x = torch.randn(n, _H, generator=generator).to(device=device, dtype=dtype).requires_grad_()
    w = torch.randn(_C, _H, generator=generator).to(device=device, dtype=dtype).requires_grad_()
    y = torch.randint(0, _C, (n,), generator=generator).to(device)
    return (x, w, y), {}


SPECS = {
    "linear_cross_entropy": LossSpec(
        make=_make,
        functional=TF.linear_cross_entropy_loss,
        module_kwargs={"class_counts": _COUNTS},
        functional_kwargs={"class_counts": _COUNTS},
        needs_class_counts=True,
    ),
}
