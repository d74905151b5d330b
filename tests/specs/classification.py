"""Specs of the classification family (see tests/specs/_spec.py)."""

from __future__ import annotations

import torch

import tailwise.functional as TF
from tailwise.classification.eqlv2 import eqlv2_loss
from tailwise.classification.equalized_focal import equalized_focal_loss
from tailwise.classification.softmax_eql import softmax_eql_loss
from tailwise.classification.tade import tade_loss

from ._make import randint, randn
from ._spec import LossSpec

C = 5
COUNTS = [100, 40, 20, 6, 2]


def _logits(n, device, dtype, gen):
    return (randn((n, C), gen, device, dtype, grad=True, scale=2.0), randint(C, (n,), gen, device)), {}


def _logits_only(n, device, dtype, gen):
    return (randn((n, C), gen, device, dtype, grad=True, scale=2.0),), {}


def _soft(n, device, dtype, gen):
    z = randn((n, C), gen, device, dtype, grad=True, scale=2.0)
    p = torch.softmax(torch.randn((n, C), generator=gen), 1).to(device=device, dtype=dtype)
    return (z, p), {}


def _multilabel(n, device, dtype, gen):
    z = randn((n, C), gen, device, dtype, grad=True, scale=2.0)
    t = (torch.rand((n, C), generator=gen) > 0.6).to(device=device, dtype=dtype)
    return (z, t), {}


def _experts(n, device, dtype, gen):
    return (randn((3, n, C), gen, device, dtype, grad=True), randint(C, (n,), gen, device)), {}


def _prior(functional, **extra):
    return LossSpec(make=_logits, functional=functional, module_kwargs=dict(class_counts=COUNTS, **extra),
                    functional_kwargs=dict(class_counts=COUNTS, **extra), needs_class_counts=True)


SPECS = {
    "cross_entropy": LossSpec(make=_logits, functional=TF.cross_entropy_loss,
                              module_kwargs=dict(label_smoothing=0.1), functional_kwargs=dict(label_smoothing=0.1)),
    "entropy": LossSpec(make=_logits_only, functional=TF.entropy_loss),
    "kl_div": LossSpec(make=_soft, functional=TF.kl_div_loss),
    "focal": LossSpec(make=_logits, functional=TF.focal_loss, module_kwargs=dict(alpha=[0.5, 1, 1, 2, 2]),
                      functional_kwargs=dict(alpha=[0.5, 1, 1, 2, 2])),
    "sigmoid_focal": LossSpec(make=_multilabel, functional=TF.sigmoid_focal_loss),
    "balanced_softmax": _prior(TF.balanced_softmax_loss),
    "logit_adjusted": _prior(TF.logit_adjusted_loss, tau=1.5),
    "bal_bce": _prior(TF.bal_bce_loss),
    "class_balanced": _prior(TF.class_balanced_loss, beta=0.99),
    "iif": _prior(TF.iif_loss),
    "tade": LossSpec(make=_experts, functional=tade_loss, module_kwargs=dict(class_counts=COUNTS),
                     functional_kwargs=dict(class_counts=COUNTS), needs_class_counts=True),
    "difficulty": LossSpec(make=_logits, functional=TF.difficulty_loss, module_kwargs=dict(num_classes=C),
                           functional_kwargs=dict(per_class_acc=[0.0] * C)),
    # stateful: a fresh module (statistics zero) equals the functional with fresh statistics
    "eqlv2": LossSpec(make=_logits, functional=eqlv2_loss, module_kwargs=dict(num_classes=C), stateful=True),
    "softmax_eql": LossSpec(make=_logits, functional=softmax_eql_loss, module_kwargs=dict(num_classes=C),
                            stateful=True),
    "equalized_focal": LossSpec(make=_logits, functional=equalized_focal_loss, module_kwargs=dict(num_classes=C),
                                stateful=True),
}
