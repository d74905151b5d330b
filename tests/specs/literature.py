"""Specs of the literature methods of issue 17: propos, boosted_cl, cp2, difficulty_net."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tailwise.functional as TF

from ._spec import LossSpec


def _propos(n, device, dtype, g):
    q = torch.randn(n, 8, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    p = torch.randn(n, 8, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    k = torch.randn(n, 8, generator=g).to(device=device, dtype=dtype)
    labels = torch.randint(0, 3, (n,), generator=g).to(device)
    return (q, p, k, labels), {}


def _boosted(n, device, dtype, g):
    z = F.normalize(torch.randn(n, 2, 8, generator=g), dim=-1).to(device=device, dtype=dtype).requires_grad_(True)
    return (z, torch.arange(n).to(device)), {}


def _cp2(n, device, dtype, g):
    q = torch.randn(n, 8, 4, 4, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    k = torch.randn(n, 8, 4, 4, generator=g).to(device=device, dtype=dtype)
    m = (torch.rand(n, 4, 4, generator=g) > 0.3).to(device=device, dtype=dtype)
    return (q, k, m, m), {}


def _dnet(n, device, dtype, g):
    x = torch.randn(n, 4, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    return (x, torch.randint(0, 4, (n,), generator=g).to(device)), {}


SPECS = {
    "propos": LossSpec(make=_propos, functional=TF.propos_loss, module_kwargs={"num_clusters": 3},
                       functional_kwargs={"num_clusters": 3}, pairwise=True, reductions=("mean",)),
    # the module records per-sample losses in its tracker; the functional takes no indices
    "boosted_cl": LossSpec(make=_boosted, functional=None, module_kwargs={"num_samples": 64}, stateful=True,
                           pairwise=True, min_batch=2),
    "cp2": LossSpec(make=_cp2, functional=None, module_kwargs={"queue_size": 16, "dim": 8}, stateful=True,
                    pairwise=True, reductions=("mean",)),
    "difficulty_net": LossSpec(make=_dnet, functional=None, module_kwargs={"num_classes": 4, "hidden": 8}),
}
