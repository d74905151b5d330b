"""Shared machinery of the overlap losses (Dice, Tversky, Focal Tversky).

All three are functions of four per-image, per-class statistics::

    tp = sum_l m_l p_l y_l        (soft true positives)
    sp = sum_l m_l p_l            (predicted mass;  fp = sp - tp)
    sy = sum_l m_l y_l            (target mass;     fn = sy - tp)
    sq = sum_l m_l p_l^2          (only for the V-Net squared denominator)

where ``m`` masks out ``ignore_index`` pixels. :func:`overlap_stats` returns them as ``(N, C)``
tensors; the losses are then cheap closed forms on those small tensors.

Speed: for integer targets (``multiclass`` and ``binary``) the statistics come from the kernels
layer's op ``"overlap_index"`` (:mod:`tailwise.kernels.overlap`), which never materialises a
one-hot tensor: on CPU a custom autograd Function with a hand-derived backward through the
softmax, on CUDA one fused Triton pass for the forward (softmax, statistics and, for ``dice_ce``,
the cross-entropy sums) and one for the backward.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._probabilities import check_probabilities
from .._validation import (assert_values, check_choice, check_class_indices, check_floating, check_tensor,
                           host_selection, host_value_checks)
from ..kernels import dispatch
from ..kernels.overlap import _IndexStats  # noqa: F401 - its old home; re-exported

MODES = ("multiclass", "multilabel", "binary")


class OverlapStats(NamedTuple):
    tp: Tensor  # (N, C)
    sp: Tensor  # (N, C)
    sy: Tensor  # (N, C)
    sq: Optional[Tensor]  # (N, C) or None
    sy2: Optional[Tensor]  # sum of y^2 (= sy for hard targets) or None


def _flatten(x: Tensor) -> Tensor:
    # explicit length: reshape(..., -1) is ambiguous for an empty batch
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def check_seg_input(input, name: str = "input") -> Tensor:
    check_floating(input, name)
    if input.dim() < 2:
        raise ValueError(f"{name} must be (N, C, *spatial) scores, got shape {tuple(input.shape)}")
    return input


def overlap_stats(input: Tensor, target: Tensor, *, mode: str = "multiclass", from_logits: bool = True,
                  ignore_index: Optional[int] = -100, squared_pred: bool = False, with_ce: bool = False,
                  ce_weight: Optional[Tensor] = None):
    """Validate ``input``/``target`` and return the per-image, per-class overlap statistics.

    * ``multiclass``: ``input`` (N, C, *S) logits (softmax over C) or probabilities; ``target``
      integer indices (N, *S) in [0, C) or ``ignore_index``, or one-hot / soft labels (N, C, *S).
    * ``multilabel``: ``input`` (N, C, *S), sigmoid per channel; ``target`` (N, C, *S) in [0, 1].
    * ``binary``: ``input`` (N, 1, *S), sigmoid; ``target`` indices (N, *S) in {0, 1} or (N, 1, *S).

    For dense targets, elements equal to ``ignore_index`` are masked out (per channel).

    ``with_ce`` (class-index targets only, logits) also returns ``dice_ce``'s per-image
    cross-entropy sum and normaliser from the same pass: ``(stats, ce_sum, ce_norm)``.
    """
    check_choice(mode, "mode", MODES)
    check_seg_input(input)
    if not from_logits:
        # log-probabilities or logits passed as probabilities made Dice ~1e12 silently
        check_probabilities(input, "input", allow_nan=True,
                            hint=" with from_logits=False (pass logits with from_logits=True)")
    check_tensor(target, "target")
    n, c = input.shape[:2]
    spatial = tuple(input.shape[2:])
    if mode == "binary" and c != 1:
        raise ValueError(f"input must be (N, 1, *spatial) in binary mode, got shape {tuple(input.shape)}")

    dense = target.shape == input.shape
    if not dense:
        if target.shape != (n,) + spatial:
            raise ValueError(
                f"target must be class indices of shape {(n,) + spatial} or one-hot of shape "
                f"{tuple(input.shape)} (same as input), got {tuple(target.shape)}")
        if mode == "multilabel":
            raise ValueError(f"target must have the input's shape {tuple(input.shape)} in multilabel mode "
                             f"(one multi-hot channel per class), got {tuple(target.shape)}")
        check_class_indices(target, 2 if mode == "binary" else c, "target", ignore_index=ignore_index)
    elif not target.is_floating_point():
        if target.dtype == torch.bool:
            target = target.to(input.dtype)
        else:
            raise TypeError(f"target of shape {tuple(target.shape)} (one-hot, same as input) must be a "
                            f"floating or bool tensor, got dtype {target.dtype}; pass integer class "
                            f"indices as (N, *spatial)")

    x = _flatten(input)
    if not dense:
        # class indices (multiclass or binary): the fused op, no one-hot
        t = target.reshape(n, math.prod(spatial))
        tp, sp, sy, sq, sy2, ce_sum, ce_norm = dispatch("overlap_index", x, t, ignore_index, mode, from_logits,
                                                        squared_pred, with_ce, ce_weight)
        stats = OverlapStats(tp, sp, sy, sq, sy2)
        return (stats, ce_sum, ce_norm) if with_ce else stats
    else:
        if with_ce:
            raise ValueError("with_ce needs class-index targets")
        y = _flatten(target).to(x.dtype)
        m = None
        if ignore_index is not None:
            keep = y != ignore_index
            if not host_selection(y) or not bool(keep.all()):
                m = keep.to(x.dtype)
                y = y * m
        bad = (y < 0) | (y > 1)
        if not host_value_checks(y):
            assert_values(~bad.any(), f"target (one-hot / soft labels) must be in [0, 1] or equal "
                                      f"ignore_index={ignore_index}")
        elif bool(bad.any()):
            raise ValueError(f"target (one-hot / soft labels) must be in [0, 1] or equal ignore_index="
                             f"{ignore_index}, got {y[bad][0].item()}")

    if from_logits:
        p = torch.softmax(x, 1) if mode == "multiclass" else torch.sigmoid(x)
    else:
        p = x
    pm = p if m is None else p * m
    tp = (pm * y).sum(-1)
    sp = pm.sum(-1)
    sy = (y if m is None else y * m).sum(-1)
    sq = sy2 = None
    if squared_pred:
        sq = (pm * p).sum(-1)
        sy2 = (y * y if m is None else y * y * m).sum(-1)
    return OverlapStats(tp, sp, sy, sq, sy2)


def check_class_weight_shape(class_weight: Optional[Tensor], c: int) -> None:
    """The metadata part of :func:`reduce_classes`' ``class_weight`` check, for callers that use
    the weights before reducing (``dice_ce``'s fused CE term)."""
    if class_weight is not None:
        check_floating(class_weight, "class_weight", ndim=1)
        if class_weight.numel() != c:
            raise ValueError(f"class_weight must have one entry per class ({c}), got shape "
                             f"{tuple(class_weight.shape)}")


def reduce_classes(per_class: Tensor, class_weight: Optional[Tensor], include_background: bool,
                   batch: bool) -> Tensor:
    """Per-class losses (N, C) (or (C,) when ``batch``) -> per-image losses (N,) (or a 0-d tensor).

    The class average is weighted: ``sum_c w_c l_c / sum_c w_c``.
    """
    c = per_class.shape[-1]
    if class_weight is not None:
        check_floating(class_weight, "class_weight", ndim=1)
        if class_weight.numel() != c:
            raise ValueError(f"class_weight must have one entry per class ({c}), got shape "
                             f"{tuple(class_weight.shape)}")
        if not host_value_checks(class_weight):
            assert_values((class_weight >= 0).all() & (class_weight.sum() > 0),
                          "class_weight must be non-negative with a positive sum")
        elif bool((class_weight < 0).any()) or not bool(class_weight.sum() > 0):
            raise ValueError("class_weight must be non-negative with a positive sum")
        w = class_weight.to(per_class.dtype)
    else:
        w = None
    if not include_background:
        if c < 2:
            raise ValueError("include_background=False needs at least 2 classes (channel 0 is dropped)")
        per_class = per_class[..., 1:]
        w = None if w is None else w[1:]
    if w is None:
        return per_class.mean(-1)
    return (per_class * w).sum(-1) / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def maybe_batch(stats: OverlapStats, batch: bool) -> OverlapStats:
    if not batch:
        return stats
    return OverlapStats(*(None if s is None else s.sum(0) for s in stats))
