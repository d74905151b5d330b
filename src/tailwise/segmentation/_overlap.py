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
the cross-entropy sums) and one for the backward. The op also checks the target range
(``validate=True``): on accelerators the forward kernel does it while it reads the targets (one
device-side assert), on eager CPU it raises the exact ``ValueError`` of ``check_class_indices``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._probabilities import check_probabilities
from .._validation import (assert_values, check_choice, check_class_indices, check_floating, check_nonnegative,
                           check_tensor, host_selection, host_value_checks)
from ..kernels import dispatch
from ..kernels.overlap import _IndexStats  # noqa: F401 - its old home; re-exported

MODES = ("multiclass", "multilabel", "binary")
ACTIVATIONS = ("softmax", "sigmoid", "none")
AVERAGES = ("macro", "micro")


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


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def resolve_smooth(smooth, smooth_nr, smooth_dr) -> tuple:
    """``(s_nr, s_dr)``: each of ``smooth_nr`` / ``smooth_dr`` that is ``None`` takes ``smooth``."""
    smooth = check_nonnegative(smooth, "smooth")
    nr = smooth if smooth_nr is None else check_nonnegative(smooth_nr, "smooth_nr")
    dr = smooth if smooth_dr is None else check_nonnegative(smooth_dr, "smooth_dr")
    return nr, dr


def check_overlap_options(soft_label, average, normalize_class_weight) -> None:
    """Metadata checks of the peer options shared by the Dice family (they cost nothing)."""
    _check_bool(soft_label, "soft_label")
    check_choice(average, "average", AVERAGES)
    _check_bool(normalize_class_weight, "normalize_class_weight")
    if average == "micro" and not normalize_class_weight:
        raise ValueError("normalize_class_weight=False has no meaning with average=\"micro\" (the classes "
                         "are pooled into one index, there is no average over classes to weight)")


def overlap_stats(input: Tensor, target: Tensor, *, mode: str = "multiclass", from_logits: bool = True,
                  ignore_index: Optional[int] = -100, squared_pred: bool = False, with_ce: bool = False,
                  ce_weight: Optional[Tensor] = None, soft_label: bool = False,
                  activation: Optional[str] = None):
    """Validate ``input``/``target`` and return the per-image, per-class overlap statistics.

    * ``multiclass``: ``input`` (N, C, *S) logits (softmax over C) or probabilities; ``target``
      integer indices (N, *S) in [0, C) or ``ignore_index``, or one-hot / soft labels (N, C, *S).
    * ``multilabel``: ``input`` (N, C, *S), sigmoid per channel; ``target`` (N, C, *S) in [0, 1].
    * ``binary``: ``input`` (N, 1, *S), sigmoid; ``target`` indices (N, *S) in {0, 1} or (N, 1, *S).

    Dense targets may be floating, ``uint8`` or ``bool``. For dense targets, elements equal to
    ``ignore_index`` are masked out (per channel).

    ``soft_label`` computes the intersection in MONAI's semimetric form
    ``tp = sum m (|p| + y - |p - y|) / 2`` (and ``sp = sum m |p|``). For targets in {0, 1} and
    ``p`` in [0, 1] this equals ``sum m p y``, so class-index targets keep the fused op, except
    with raw scores (``activation="none"``), where the one-hot target is built.

    ``activation`` (``dice_ce``'s ``dice_activation``; ``from_logits`` must be True) overrides the
    mode's activation: ``"softmax"`` over C, ``"sigmoid"`` per channel or ``"none"`` (the raw
    scores, not checked to be probabilities).

    ``with_ce`` (class-index targets only, logits, the mode's own activation) also returns
    ``dice_ce``'s per-image cross-entropy sum and normaliser from the same pass:
    ``(stats, ce_sum, ce_norm)``.
    """
    check_choice(mode, "mode", MODES)
    check_seg_input(input)
    if activation is None:
        act = ("softmax" if mode == "multiclass" else "sigmoid") if from_logits else "none"
        raw = False
    else:
        check_choice(activation, "dice_activation", ACTIVATIONS)
        if activation == "softmax" and input.shape[1] == 1:
            raise ValueError(f"dice_activation=\"softmax\" needs at least 2 channels (a softmax over one "
                             f"channel is constant 1), got input of shape {tuple(input.shape)}")
        act, raw = activation, activation == "none"
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
        # the fused op checks the range itself (validate=True below): its Triton kernel while it
        # reads the targets (one device-side assert instead of ~9 ops), its torch form exactly
        # as here; the one-hot route (raw scores with soft_label) checks it here
        check_class_indices(target, 2 if mode == "binary" else c, "target", ignore_index=ignore_index,
                            values=soft_label and raw)
    elif not target.is_floating_point():
        if target.dtype in (torch.bool, torch.uint8):
            target = target.to(input.dtype)
        else:
            raise TypeError(f"target of shape {tuple(target.shape)} (one-hot, same as input) must be a "
                            f"floating, uint8 or bool tensor, got dtype {target.dtype}; pass integer class "
                            f"indices as (N, *spatial)")

    x = _flatten(input)
    if not dense and not (soft_label and raw):
        # class indices (multiclass or binary): the fused op, no one-hot
        t = target.reshape(n, math.prod(spatial))
        if act == "sigmoid" and mode == "multiclass":
            # per-channel sigmoid against the one-hot target: the op's probability form
            x_op, op_logits = torch.sigmoid(x), False
        else:
            x_op, op_logits = x, act != "none"
        if with_ce and (x_op is not x or not op_logits):
            raise ValueError("with_ce needs the mode's own activation on logits")
        tp, sp, sy, sq, sy2, ce_sum, ce_norm = dispatch("overlap_index", x_op, t, ignore_index, mode, op_logits,
                                                        squared_pred, with_ce, ce_weight, validate=True)
        stats = OverlapStats(tp, sp, sy, sq, sy2)
        return (stats, ce_sum, ce_norm) if with_ce else stats
    if with_ce:
        raise ValueError("with_ce needs class-index targets")
    m = None
    if not dense:
        # raw scores with soft_label: |p| and |p - y| need the one-hot target
        t = target.reshape(n, math.prod(spatial))
        keep = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
        t_safe = torch.where(keep, t, torch.zeros_like(t)).long()
        if mode == "binary":
            y = t_safe.to(x.dtype).unsqueeze(1)
        else:
            y = torch.zeros_like(x).scatter_(1, t_safe.unsqueeze(1), 1.0)
        if ignore_index is not None:
            m = keep.to(x.dtype).unsqueeze(1).expand_as(x)
            y = y * m
    else:
        y = _flatten(target).to(x.dtype)
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

    if act == "softmax":
        p = torch.softmax(x, 1)
    elif act == "sigmoid":
        p = torch.sigmoid(x)
    else:
        p = x
    pm = p if m is None else p * m
    if soft_label:
        # MONAI's semimetric form (Wang et al., MICCAI 2023); y >= 0, and p >= 0 unless raw
        pa = pm.abs() if raw else pm
        tp = (pa + y - (pm - y).abs()).sum(-1) * 0.5
        sp = pa.sum(-1)
    else:
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


def _class_weight(class_weight: Optional[Tensor], c: int, dtype, positive_sum: bool) -> Optional[Tensor]:
    if class_weight is None:
        return None
    check_class_weight_shape(class_weight, c)
    if positive_sum:
        if not host_value_checks(class_weight):
            assert_values((class_weight >= 0).all() & (class_weight.sum() > 0),
                          "class_weight must be non-negative with a positive sum")
        elif bool((class_weight < 0).any()) or not bool(class_weight.sum() > 0):
            raise ValueError("class_weight must be non-negative with a positive sum")
    else:
        if not host_value_checks(class_weight):
            assert_values((class_weight >= 0).all(), "class_weight must be non-negative")
        elif bool((class_weight < 0).any()):
            raise ValueError(f"class_weight must be non-negative, got {class_weight.min().item()}")
    return class_weight.to(dtype)


def _drop_background(c: int) -> None:
    if c < 2:
        raise ValueError("include_background=False needs at least 2 classes (channel 0 is dropped)")


def reduce_classes(per_class: Tensor, class_weight: Optional[Tensor], include_background: bool,
                   batch: bool, normalize: bool = True) -> Tensor:
    """Per-class losses (N, C) (or (C,) when ``batch``) -> per-image losses (N,) (or a 0-d tensor).

    ``normalize=True``: the weighted average ``sum_c w_c l_c / sum_c w_c``. ``normalize=False``
    (MONAI's ``weight``): ``mean_c w_c l_c``, the plain mean of the weighted class losses.
    """
    c = per_class.shape[-1]
    w = _class_weight(class_weight, c, per_class.dtype, positive_sum=normalize)
    if not include_background:
        _drop_background(c)
        per_class = per_class[..., 1:]
        w = None if w is None else w[1:]
    if w is None:
        return per_class.mean(-1)
    if not normalize:
        return (per_class * w).mean(-1)
    return (per_class * w).sum(-1) / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def pool_classes(stats: OverlapStats, class_weight: Optional[Tensor], include_background: bool) -> OverlapStats:
    """``average="micro"``: the statistics of all classes summed into one, shape (N, 1) (or (1,)).

    With ``class_weight`` each class's statistics count ``w_c`` times (``sum_c w_c tp_c``,
    ``sum_c w_c sp_c``, ...): kornia 0.9's weighted micro Dice
    ``2 sum w p y / sum w (p + y)``.
    """
    c = stats.tp.shape[-1]
    w = _class_weight(class_weight, c, stats.tp.dtype, positive_sum=False)
    if not include_background:
        _drop_background(c)
        stats = OverlapStats(*(None if s is None else s[..., 1:] for s in stats))
        w = None if w is None else w[1:]
    if w is None:
        return OverlapStats(*(None if s is None else s.sum(-1, keepdim=True) for s in stats))
    return OverlapStats(*(None if s is None else (s * w).sum(-1, keepdim=True) for s in stats))


def maybe_batch(stats: OverlapStats, batch: bool) -> OverlapStats:
    if not batch:
        return stats
    return OverlapStats(*(None if s is None else s.sum(0) for s in stats))
