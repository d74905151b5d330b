"""Specs of the ranking family (see tests/specs/_spec.py).

Scores ``(N, C)`` with class-index targets; the modules keep a queue (stateful), so the contract
suite also runs the masked queue path (fill mask, sync-free enqueue) on every device.
"""

from __future__ import annotations

import torch

import tailwise.functional as TF

from ._spec import LossSpec

C = 3


def _scores(n, device, dtype, gen):
    # CPU generator, then moved: every device sees the same numbers
    scores = torch.randn((n, C), generator=gen).to(device=device, dtype=dtype).requires_grad_()
    return (scores, torch.randint(0, C, (n,), generator=gen).to(device)), {}


def _queue(**kw):
    return dict(num_classes=C, queue_size=16, **kw)


SPECS = {
    "smooth_ap": LossSpec(make=_scores, functional=TF.smooth_ap_loss, module_kwargs=_queue(temperature=0.1),
                          functional_kwargs=dict(temperature=0.1), stateful=True, pairwise=True),
    "recall_at_quantile": LossSpec(make=_scores, functional=TF.recall_at_quantile_loss,
                                   module_kwargs=_queue(quantile=0.8), functional_kwargs=dict(quantile=0.8),
                                   stateful=True, pairwise=True),
    "pauc_at_budget": LossSpec(make=_scores, functional=TF.pauc_at_budget_loss, module_kwargs=_queue(beta=0.3),
                               functional_kwargs=dict(beta=0.3), stateful=True, pairwise=True),
    # first loss only until warmup_steps: equal to smooth_ap_loss; no reduction argument of its own
    "warmup_blend": LossSpec(make=_scores, functional=TF.smooth_ap_loss,
                             module_kwargs=dict(first="smooth_ap", second="pauc_at_budget", warmup_steps=2,
                                                blend_steps=2),
                             reductions=(), pairwise=True),
}
