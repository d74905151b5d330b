"""Shared plumbing of the ranking losses: target normalisation, distributed pooling, queue rows,
per-class weighted means and the one-time warnings.

Every ranking loss here is one-vs-rest over the columns of a score matrix ``(N, C)``: column
``c`` ranks all pooled rows by ``scores[:, c]`` and its positives are the rows whose label is
``c`` (or whose multi-hot entry ``c`` is 1). The binary case is ``C = 1``.

Two forms of the same computation (see :func:`tailwise.contrastive._common.host_selection`):
eager CPU tensors drop ignored rows and select positives with boolean masks (fastest there);
on accelerators and while ``torch.compile`` traces, every pooled row stays in place with a
validity mask ``v (M,)`` (ignored rows, unfilled queue slots) and the losses mask instead of
select, so there is no host synchronisation and every shape is fixed.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import (assert_values, check_finite, check_floating, check_reduction, check_tensor,
                           host_value_checks)
from ..contrastive._common import host_selection
from ..distributed import all_gather_no_grad, all_gather_with_grad, get_world_size

__all__: list = []

_WARNED: set = set()


def warn_once(key, message: str, owner=None) -> None:
    """``warnings.warn`` once per ``owner`` instance (or once per process when ``owner`` is None)."""
    if owner is not None:
        seen = owner.__dict__.setdefault("_warned_keys", set())
    else:
        seen = _WARNED
    if key in seen:
        return
    seen.add(key)
    warnings.warn(message, UserWarning, stacklevel=3)


def prepare(input: Tensor, target: Tensor, ignore_index: int, sample_weight: Optional[Tensor]):
    """Validate and normalise to ``scores (N, C)``, ``pos (N, C) bool``, ``keep (N,) bool``,
    ``sample_weight (N,)`` (ones when not given).

    Accepted forms:

    * ``input (N,)`` or ``(N, 1)`` with ``target (N,)`` / ``(N, 1)`` of 0/1 (ints, bools or
      floats): binary, ``C = 1``;
    * ``input (N, C)`` with ``target (N,)`` integer class indices: one-vs-rest;
    * ``input (N, C)`` with ``target (N, C)`` multi-hot 0/1.

    Rows whose target equals ``ignore_index`` (any entry, for multi-hot) are dropped.
    """
    check_floating(input, "input", ndim=(1, 2))
    check_tensor(target, "target", ndim=(1, 2))
    host = host_value_checks(input, target)
    if host:
        check_finite(input, "input")
    else:
        assert_values(torch.isfinite(input.detach()).all(), "input must be finite")
    scores = input.unsqueeze(1) if input.dim() == 1 else input
    n, c = scores.shape
    if target.shape[0] != n:
        raise ValueError(f"target must have {n} rows like input {tuple(input.shape)}, got shape "
                         f"{tuple(target.shape)}")
    if target.dim() == 2 and target.shape[1] == 1 and c == 1:
        target = target[:, 0]
    if target.dim() == 2:
        if target.shape != scores.shape:
            raise ValueError(f"a 2-D (multi-hot) target must have input's shape {tuple(scores.shape)}, "
                             f"got {tuple(target.shape)}")
        keep = ~(target == ignore_index).any(1)
        msg = "a 2-D (multi-hot) target must hold 0/1 values (or ignore_index), got other values"
        if host:
            vals = target[keep]
            if vals.numel() and not bool(((vals == 0) | (vals == 1)).all()):
                raise ValueError(msg)
        elif target.numel():
            assert_values(((target == 0) | (target == 1) | ~keep.unsqueeze(1)).all(), msg)
        pos = (target == 1) & keep.unsqueeze(1)
    elif c == 1:
        keep = target != ignore_index
        if host:
            vals = target[keep]
            if vals.numel() and not bool(((vals == 0) | (vals == 1)).all()):
                raise ValueError("binary target (input (N,) or (N, 1)) must hold 0/1 values (or ignore_index), "
                                 f"got values in [{vals.min().item()}, {vals.max().item()}]")
        elif target.numel():
            assert_values(((target == 0) | (target == 1) | ~keep).all(),
                          "binary target (input (N,) or (N, 1)) must hold 0/1 values (or ignore_index)")
        pos = ((target == 1) & keep).unsqueeze(1)
    else:
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"target (N,) for input (N, C) must hold integer class indices, got dtype {target.dtype}")
        keep = target != ignore_index
        if host:
            vals = target[keep]
            if vals.numel() and (int(vals.min()) < 0 or int(vals.max()) >= c):
                raise ValueError(f"target class indices must be in [0, {c - 1}] or ignore_index={ignore_index}, "
                                 f"got values in [{int(vals.min())}, {int(vals.max())}]")
        elif target.numel():
            assert_values((((target >= 0) & (target < c)) | ~keep).all(),
                          f"target class indices must be in [0, {c - 1}] or ignore_index={ignore_index}")
        # one-hot by comparison (no nonzero(): fixed shapes, no host sync)
        cls = torch.arange(c, device=scores.device)
        pos = (target.long().unsqueeze(1) == cls) & keep.unsqueeze(1)
    if sample_weight is None:
        w = torch.ones(n, dtype=scores.dtype, device=scores.device)
    else:
        check_floating(sample_weight, "sample_weight", ndim=1)
        if sample_weight.shape[0] != n:
            raise ValueError(f"sample_weight must have shape ({n},) (one per row of input), got {tuple(sample_weight.shape)}")
        if host_value_checks(sample_weight):
            check_finite(sample_weight, "sample_weight")
            if bool((sample_weight < 0).any()):
                raise ValueError("sample_weight must be >= 0")
        else:
            assert_values((torch.isfinite(sample_weight) & (sample_weight >= 0)).all(), "sample_weight must be finite and >= 0")
        w = sample_weight.detach().to(scores.dtype)
    return scores, pos, keep, w


def gather(scores: Tensor, pos: Tensor, keep: Tensor, w: Tensor, enabled: bool):
    """All-gather the live rows across ranks (unequal sizes allowed); scores keep their gradient."""
    if not enabled or get_world_size() == 1:
        return scores, pos, keep, w
    scores = all_gather_with_grad(scores)
    pos = all_gather_no_grad(pos.to(torch.uint8)).bool()
    keep = all_gather_no_grad(keep.to(torch.uint8)).bool()
    w = all_gather_no_grad(w)
    return scores, pos, keep, w


def pack_rows(scores: Tensor, pos: Tensor, w: Tensor) -> Tensor:
    """Queue rows ``[scores (C) | positives (C) | sample_weight (1)]`` (detached)."""
    return torch.cat([scores.detach(), pos.to(scores.dtype), w.unsqueeze(1).to(scores.dtype)], 1)


def unpack_rows(rows: Tensor, c: int, dtype) -> Tuple[Tensor, Tensor, Tensor]:
    rows = rows.to(dtype)
    return rows[:, :c], rows[:, c:2 * c] > 0.5, rows[:, 2 * c]


def check_queue(queue_scores, queue_labels, queue_weight, c: int, dtype, device):
    """Functional-form queue: ``queue_scores (K, C)`` + ``queue_labels (K, C)`` 0/1 (or ``(K,)``)."""
    if queue_scores is None and queue_labels is None:
        return None
    if queue_scores is None or queue_labels is None:
        raise ValueError("queue_scores and queue_labels must be given together")
    check_floating(queue_scores, "queue_scores", ndim=(1, 2))
    qs = queue_scores.unsqueeze(1) if queue_scores.dim() == 1 else queue_scores
    if qs.shape[1] != c:
        raise ValueError(f"queue_scores must have shape (K, {c}), got {tuple(queue_scores.shape)}")
    if host_value_checks(qs):
        check_finite(qs, "queue_scores")
    qs_, qp, qkeep, qw = prepare(qs.detach(), queue_labels, -100, queue_weight)
    if host_selection(qs_, qp):
        return (qs_[qkeep].detach().to(dtype=dtype, device=device), qp[qkeep].to(device),
                qw[qkeep].to(dtype=dtype, device=device), None)
    return (qs_.detach().to(dtype=dtype, device=device), qp.to(device), qw.to(dtype=dtype, device=device),
            qkeep.to(device))


def pool(scores: Tensor, pos: Tensor, keep: Tensor, w: Tensor, extra, masked: bool = False):
    """Append the (detached) queue rows ``extra = (scores, positives, sample_weight, valid or None)``.

    Selection form (``masked=False``): drop ignored live rows (and invalid queue rows), return
    ``(s, p, w, None)``. Masked form: keep every row, return ``(s, p, w, v)`` with ``p`` and ``w``
    zeroed on the invalid rows and ``v (M,)`` the row validity.
    """
    if not masked:
        s, p, ww = scores[keep], pos[keep], w[keep]
        if extra is not None and extra[0].shape[0]:
            es, ep, ew, ev = extra
            if ev is not None:
                es, ep, ew = es[ev], ep[ev], ew[ev]
            s = torch.cat([s, es.to(s.dtype)], 0)
            p = torch.cat([p, ep], 0)
            ww = torch.cat([ww, ew.to(s.dtype)], 0)
        return s, p, ww, None
    s, v = scores, keep
    p = pos & keep.unsqueeze(1)
    ww = torch.where(keep, w, torch.zeros_like(w))
    if extra is not None and extra[0].shape[0]:
        es, ep, ew, ev = extra
        ev = torch.ones(es.shape[0], dtype=torch.bool, device=es.device) if ev is None else ev
        s = torch.cat([s, es.to(s.dtype)], 0)
        p = torch.cat([p, ep & ev.unsqueeze(1)], 0)
        ww = torch.cat([ww, torch.where(ev, ew.to(s.dtype), torch.zeros_like(ew, dtype=s.dtype))], 0)
        v = torch.cat([v, ev], 0)
    return s, p, ww, v


def per_class_mean(values: Tensor, cols: Tensor, wk: Tensor, c: int) -> Tuple[Tensor, Tensor]:
    """Weighted mean of per-positive ``values`` within each class ``cols``; (mean (C,), mass (C,))."""
    num = values.new_zeros(c).index_add(0, cols, values * wk)
    den = values.new_zeros(c).index_add(0, cols, wk.to(values.dtype))
    return num / den.clamp_min(torch.finfo(values.dtype).tiny), den


def reduce_classes(loss_c: Tensor, valid: Tensor, reduction: str, anchor: Tensor) -> Tensor:
    """mean / sum over valid classes; ``none`` -> ``(C,)`` with 0 for skipped classes.

    ``anchor`` (the input) keeps a graph when every class is skipped, so ``backward`` works and
    gives zero gradients instead of failing.
    """
    check_reduction(reduction)
    # (x * 0).sum(), not x.sum() * 0: the sum of finite scores near 1e38 overflows to inf, and
    # inf * 0 would turn a bounded loss into NaN; non-finite scores still propagate
    zero = (anchor * 0.0).sum()
    loss_c = torch.where(valid, loss_c, torch.zeros_like(loss_c)) + zero
    if reduction == "none":
        return loss_c
    total = loss_c.sum()
    if reduction == "sum":
        return total
    # a tensor count (no int(): no host sync); same value as dividing by the python int
    return total / valid.sum().clamp_min(1)
