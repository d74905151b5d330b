"""Specs of the contrastive family (see tests/specs/_spec.py).

Features are L2-normalised in float32 on the CPU generator, then moved and cast (every device and
dtype sees the same unit rows; bf16 rounding stays well inside the unit-norm tolerance).
Module-held tensors that a functional takes as arguments (PaCo's centres, TSC's targets) are
rebuilt once per device by the functional wrappers, so a call never copies host data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF

from ._spec import LossSpec

D, C = 8, 3
COUNTS = [20.0, 6.0, 2.0]


def randint(high, shape, gen, device):
    return torch.randint(0, high, shape, generator=gen).to(device)


def _unit(shape, gen, device, dtype, *, grad: bool = False):
    x = F.normalize(torch.randn(shape, generator=gen, dtype=torch.float32), dim=-1).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def _views(labels: bool = True, views: int = 2):
    def make(n, device, dtype, gen):
        feats = _unit((n, views, D), gen, device, dtype, grad=True)
        return ((feats, randint(C, (n,), gen, device)) if labels else (feats,)), {}
    return make


def _info_nce(n, device, dtype, gen):
    feats = _unit((n, 2, D), gen, device, dtype, grad=True)
    queue = _unit((5, D), gen, device, dtype)  # MoCo negatives (detached keys)
    return (feats, queue), {}


def _byol(n, device, dtype, gen):
    p = (torch.randn((n, D), generator=gen)).to(device=device, dtype=dtype).requires_grad_()
    z = (torch.randn((n, D), generator=gen)).to(device=device, dtype=dtype)
    return (p, z), {}


def _bcl(n, device, dtype, gen):
    feats = _unit((n, 2, D), gen, device, dtype, grad=True)
    centers = _unit((C, D), gen, device, dtype, grad=True)
    return (feats, randint(C, (n,), gen, device), centers), {}


class _PerDevice:
    """``fn(device)`` computed once per device (the first call is the warm-up one)."""

    def __init__(self, fn):
        self.fn, self.cache = fn, {}

    def __call__(self, device):
        key = str(device)
        if key not in self.cache:
            self.cache[key] = self.fn(device)
        return self.cache[key]


_PACO_KW = dict(num_classes=C, in_features=D, class_counts=COUNTS, seed=0)
_PACO_CENTRES = _PerDevice(lambda dev: tuple(t.detach().to(dev) for t in
                                             (lambda m: (m.centers, m.bias))(tailwise.PaCoLoss(**_PACO_KW))))


def _paco(features, labels, **kw):
    """PaCoLoss's forward through the functional: centre logits from the same seeded centres."""
    w, b = _PACO_CENTRES(features.device)
    return TF.paco_loss(features, labels, features @ w.t().to(features.dtype) + b.to(features.dtype), **kw)


_TSC_TARGETS = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0, 0, 0],
                             [-1.0, -1.0, 0, 0, 0, 0, 0, 0]])
_TSC_DEV = _PerDevice(lambda dev: (F.normalize(_TSC_TARGETS.float(), dim=1).to(dev), torch.arange(C, device=dev)))


def _tsc(features, labels, **kw):
    """TSCLoss with reassign=False keeps the identity assignment: the functional with its targets."""
    targets, assignment = _TSC_DEV(features.device)
    return TF.tsc_loss(features, labels, targets, assignment, **kw)


_RESCOM = dict(num_positives=2, num_negatives=3)

SPECS = {
    "supcon": LossSpec(make=_views(), functional=TF.supcon_loss, pairwise=True),
    "info_nce": LossSpec(make=_info_nce, functional=TF.info_nce_loss, pairwise=True),
    "dcl": LossSpec(make=_views(labels=False), functional=TF.dcl_loss, pairwise=True),
    "dclw": LossSpec(make=_views(labels=False), functional=TF.dclw_loss, pairwise=True),
    "byol": LossSpec(make=_byol, functional=TF.byol_loss),
    "bcl": LossSpec(make=_bcl, functional=TF.bcl_loss, pairwise=True),
    "paco": LossSpec(make=_views(), functional=_paco, module_kwargs=dict(_PACO_KW),
                     functional_kwargs=dict(class_counts=COUNTS), needs_class_counts=True, pairwise=True),
    "rescom": LossSpec(make=_views(), functional=TF.rescom_loss,
                       module_kwargs=dict(num_classes=C, dim=D, queue_size_per_class=4, class_counts=COUNTS,
                                          **_RESCOM),
                       functional_kwargs=dict(class_counts=COUNTS, **_RESCOM), stateful=True,
                       needs_class_counts=True, pairwise=True),
    "tsc": LossSpec(make=_views(), functional=_tsc,
                    module_kwargs=dict(num_classes=C, dim=D, targets=_TSC_TARGETS, reassign=False),
                    stateful=True, pairwise=True),
}
