"""Temporary sample-input declarations for every registry loss, used by tests/test_fuzz.py only
for names that :func:`tests.specs.all_specs` does not (yet) provide.

The leading underscore keeps :func:`all_specs` from merging this module: once the per-family
spec modules (regression, boxes, classification, segmentation, contrastive, ranking) declare a
name, theirs wins and the entry here is dead. Same :class:`LossSpec` shape, so an entry can be
moved into its family module unchanged.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from tailwise import simplex_etf

from ._spec import LossSpec

C = 4                      # classes
D = 8                      # feature width
COUNTS = [40, 20, 5, 1]    # long-tailed class counts, one per class
S = (3, 3)                 # spatial size of segmentation samples


def _randn(shape, device, dtype, g, *, grad=False):
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def _labels(n, g, device, c=C):
    return torch.randint(0, c, (n,), generator=g).to(device)


def _unit(shape, device, dtype, g):
    x = F.normalize(torch.randn(shape, generator=g, dtype=torch.float64), dim=-1)
    return x.to(device=device, dtype=dtype).requires_grad_()


def _boxes(n, device, dtype, g, *, grad):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 5 + 0.1
    return torch.cat([xy, xy + wh], 1).to(device=device, dtype=dtype).requires_grad_(grad)


def _logits_labels(n, device, dtype, g):
    return (_randn((n, C), device, dtype, g, grad=True), _labels(n, g, device)), {}


def _classification() -> Dict[str, LossSpec]:
    counts = {"class_counts": COUNTS}
    nc = {"num_classes": C}
    out = {name: LossSpec(_logits_labels) for name in ("cross_entropy", "focal")}
    for name in ("balanced_softmax", "logit_adjusted", "class_balanced", "iif", "bal_bce"):
        out[name] = LossSpec(_logits_labels, module_kwargs=dict(counts), needs_class_counts=True)
    for name in ("eqlv2", "equalized_focal", "difficulty", "softmax_eql"):
        out[name] = LossSpec(_logits_labels, module_kwargs=dict(nc), stateful=name != "softmax_eql")

    def kl(n, device, dtype, g):
        p = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64), 1).to(device=device, dtype=dtype)
        return (_randn((n, C), device, dtype, g, grad=True), p), {}

    def entropy(n, device, dtype, g):
        return (_randn((n, C), device, dtype, g, grad=True),), {}

    def sigmoid_focal(n, device, dtype, g):
        t = (torch.rand(n, C, generator=g) < 0.3).to(device=device, dtype=dtype)
        return (_randn((n, C), device, dtype, g, grad=True), t), {}

    def tade(n, device, dtype, g):
        experts = [_randn((n, C), device, dtype, g, grad=True) for _ in range(3)]
        return (experts, _labels(n, g, device)), {}

    out["kl_div"] = LossSpec(kl)
    out["entropy"] = LossSpec(entropy)
    out["sigmoid_focal"] = LossSpec(sigmoid_focal)
    out["tade"] = LossSpec(tade, module_kwargs=dict(counts), needs_class_counts=True)
    out["warmup_blend"] = LossSpec(_logits_labels, module_kwargs={"first": "cross_entropy", "second": "focal"},
                                   stateful=True)
    return out


def _regression() -> Dict[str, LossSpec]:
    def pair(n, device, dtype, g):
        return (_randn((n,), device, dtype, g, grad=True), _randn((n,), device, dtype, g)), {}

    def rows(n, device, dtype, g):
        return (_randn((n, 1), device, dtype, g, grad=True), _randn((n, 1), device, dtype, g)), {}

    out = {name: LossSpec(pair) for name in ("l1", "mse", "smooth_l1")}
    out["bmc"] = LossSpec(rows, pairwise=True, min_batch=2)
    out["balanced_l1"] = LossSpec(rows, pairwise=True, min_batch=2)
    out["bni"] = LossSpec(pair, module_kwargs={"bin_centers": torch.linspace(-2, 2, 8),
                                               "bin_weights": torch.full((8,), 1 / 8)})
    out["gai"] = LossSpec(rows, module_kwargs={"means": torch.tensor([-1.0, 1.0]),
                                               "variances": torch.tensor([0.5, 1.0]),
                                               "weights": torch.tensor([0.3, 0.7])})
    return out


def _boxes_specs() -> Dict[str, LossSpec]:
    def boxes(n, device, dtype, g):
        return (_boxes(n, device, dtype, g, grad=True), _boxes(n, device, dtype, g, grad=False)), {}

    return {name: LossSpec(boxes) for name in ("iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "cdiou")}


def _segmentation() -> Dict[str, LossSpec]:
    def seg(n, device, dtype, g):
        return (_randn((n, C) + S, device, dtype, g, grad=True),
                torch.randint(0, C, (n,) + S, generator=g).to(device)), {}

    def collapse(n, device, dtype, g):
        return (_randn((n, D) + S, device, dtype, g, grad=True),
                torch.randint(0, C, (n,) + S, generator=g).to(device)), {}

    out = {name: LossSpec(seg) for name in ("dice", "dice_ce", "tversky", "focal_tversky")}
    out["neural_collapse"] = LossSpec(collapse, module_kwargs={"num_classes": C, "feat_dim": D}, pairwise=True)
    return out


def _contrastive() -> Dict[str, LossSpec]:
    def views(n, device, dtype, g):
        return (_unit((n, 2, D), device, dtype, g),), {}

    def views_labels(n, device, dtype, g):
        return (_unit((n, 2, D), device, dtype, g), _labels(n, g, device)), {}

    def byol(n, device, dtype, g):
        return (_randn((n, D), device, dtype, g, grad=True), _randn((n, D), device, dtype, g)), {}

    def bcl(n, device, dtype, g):
        return (_unit((n, 2, D), device, dtype, g), _labels(n, g, device), _unit((C, D), device, dtype, g)), {}

    out = {name: LossSpec(views, pairwise=True) for name in ("info_nce", "dcl", "dclw")}
    out["supcon"] = LossSpec(views_labels, pairwise=True)
    out["byol"] = LossSpec(byol)
    out["bcl"] = LossSpec(bcl, pairwise=True)
    out["paco"] = LossSpec(views_labels, module_kwargs={"num_classes": C, "in_features": D, "class_counts": COUNTS},
                           pairwise=True)
    out["rescom"] = LossSpec(views_labels, module_kwargs={"num_classes": C, "dim": D, "class_counts": COUNTS},
                             pairwise=True, stateful=True)
    # fixed targets: generating them (tsc_targets, 10k optimisation steps) takes seconds per module
    out["tsc"] = LossSpec(views_labels, module_kwargs={"num_classes": C, "dim": D, "targets": simplex_etf(C, D)},
                          pairwise=True, stateful=True)
    return out


def _ranking() -> Dict[str, LossSpec]:
    return {name: LossSpec(_logits_labels, module_kwargs={"num_classes": C}, pairwise=True)
            for name in ("smooth_ap", "recall_at_quantile", "pauc_at_budget")}


SPECS: Dict[str, LossSpec] = {**_classification(), **_regression(), **_boxes_specs(), **_segmentation(),
                              **_contrastive(), **_ranking()}
for _name, _spec in SPECS.items():
    _spec.name = _name
