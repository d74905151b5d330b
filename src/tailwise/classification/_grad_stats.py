"""Shared machinery of the gradient-driven Equalization Losses (EQLv2, Softmax-EQL, EFL).

Each of these losses keeps, per class ``j``, the accumulated magnitude of the gradient that the
loss sent to logit ``j`` from positive samples (``pos_grad``) and from negative samples
(``neg_grad``). The statistics are module buffers (so they live in ``state_dict``), updated once
per forward in training mode only, and summed over ranks with a single ``all_reduce`` so every
rank holds the statistics of the global batch.

Statistics are kept in *sum units*: the increment of a step is the gradient magnitude of the
per-element loss (summed over samples, not divided by the batch size). The official EQLv2 code
does the same; the official Softmax-EQL / EFL code reads the logits' gradient in a backward hook,
i.e. divided by the loss normaliser (the batch size for classification). Ratios such as
``pos_grad / neg_grad`` do not depend on that constant, and sum units make the statistics
independent of the batch size and of the number of ranks.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._base import Loss
from .._validation import check_class_indices, check_floating, host_selection
from ..distributed import all_reduce_sum

__all__: list = []  # private helpers of the equalization losses


def check_logits_target(input: Tensor, target: Tensor, *, num_columns: Optional[int] = None,
                        max_label: Optional[int] = None, values: bool = True) -> Tuple[int, int]:
    """Validate ``(N, C)`` logits and ``(N,)`` integer labels; return ``(N, C)``.

    ``max_label`` is the largest admissible label (``C - 1`` unless a background label exists).
    ``values=False``: the labels' range is left to a kernel that checks it as it reads them (see
    :func:`tailwise.kernels.sigmoid_family.kernel_checks_targets`).
    """
    check_floating(input, "input")
    if input.dim() != 2:
        raise ValueError(f"input must be 2-D logits of shape (N, C), got shape {tuple(input.shape)}")
    n, c = input.shape
    if num_columns is not None and c != num_columns:
        raise ValueError(f"input must have {num_columns} columns (N, {num_columns}), got shape "
                         f"{tuple(input.shape)}")
    if c == 0:
        raise ValueError("input must have at least one class column, got shape (N, 0)")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices (N,), got {type(target).__name__}")
    if target.dim() != 1 or target.shape[0] != n:
        raise ValueError(f"target must be class indices of shape ({n},) matching input (N, C) = "
                         f"{tuple(input.shape)}, got shape {tuple(target.shape)}")
    check_class_indices(target, (c if max_label is None else max_label + 1), "target", values=values)
    return n, c


# logit magnitude that makes an ignored row contribute exactly nothing (see drop_ignored)
_NEUTRAL_LOGIT = 1e4


_NEUTRAL_ROWS: dict = {}


def _neutral_row(input: Tensor) -> Tensor:
    """``(C,)``: ``+B`` at column 0, ``-B`` elsewhere, in ``input``'s dtype and device (cached;
    built afresh while ``torch.compile`` traces, where it is a constant of the graph)."""
    key = (input.shape[1], input.dtype, input.device)
    row = None if torch.compiler.is_compiling() else _NEUTRAL_ROWS.get(key)
    if row is None:
        row = torch.full((input.shape[1],), -_NEUTRAL_LOGIT, dtype=input.dtype, device=input.device)
        row[0] = _NEUTRAL_LOGIT
        if not torch.compiler.is_compiling():
            if len(_NEUTRAL_ROWS) >= 32:
                _NEUTRAL_ROWS.pop(next(iter(_NEUTRAL_ROWS)))
            _NEUTRAL_ROWS[key] = row
    return row


class MaskedRows:
    """The rows kept by :func:`drop_ignored` when they are masked in place instead of removed."""

    __slots__ = ("keep",)

    def __init__(self, keep: Tensor) -> None:
        self.keep = keep


def drop_ignored(input: Tensor, target: Tensor, sample_weight: Optional[Tensor], ignore_index: Optional[int]):
    """Take the rows whose label is ``ignore_index`` out of the loss (as ``F.cross_entropy`` skips them).

    Returns ``(input, target, sample_weight, keep)``; pass ``keep`` to :func:`restore_rows` with the loss.

    * Eager CPU (and ``"full"`` validation): the rows are removed; ``keep`` is the boolean row
      mask, or ``None`` when nothing was removed (no copy then).
    * CUDA and while compiling: removing rows needs their number on the host (a synchronisation,
      and a data-dependent shape that ``torch.compile(fullgraph=True)`` cannot trace), so they
      are neutralised in place instead: an ignored row's logits become ``+B`` at a valid label
      and ``-B`` elsewhere (``B = 1e4``), for which softmax cross-entropy, sigmoid BCE and the
      focal terms are exactly 0, as are their gradients and the EQL gradient statistics;
      ``torch.where`` keeps the gradient of the original logits at 0. ``keep`` is then a
      :class:`MaskedRows` and :func:`restore_rows` fixes the mean's denominator.

    Only integer ``(N,)`` targets carry ignored labels; anything else is returned untouched for
    the usual validation to judge.
    """
    if (ignore_index is None or not isinstance(target, Tensor) or not isinstance(input, Tensor)
            or target.dim() != 1 or target.is_floating_point() or target.dtype == torch.bool
            or input.dim() != 2 or input.shape[0] != target.shape[0]):
        return input, target, sample_weight, None
    keep = target != ignore_index
    if not host_selection(target, input):
        # an ignored row gets label 0 (target * False = 0: one op, the kept labels unchanged)
        safe = target * keep
        if input.shape[1] > 0:
            # ... so its neutral logits are one constant row (+B at column 0, -B elsewhere):
            # one broadcast `where`, no (N, C) one-hot nor neutral matrix per call
            input = torch.where(keep.unsqueeze(1), input, _neutral_row(input))
        return input, safe, sample_weight, MaskedRows(keep)
    if bool(keep.all()):
        return input, target, sample_weight, None
    if isinstance(sample_weight, Tensor) and sample_weight.dim() >= 1 and sample_weight.shape[0] == target.shape[0]:
        sample_weight = sample_weight[keep]
    return input[keep], target[keep], sample_weight, keep


def restore_rows(loss: Tensor, keep, reduction: str) -> Tensor:
    """Undo :func:`drop_ignored` on the reduced loss.

    Removed rows: for ``reduction="none"`` put the kept rows' losses back at their places (0 for
    ignored rows). Masked rows: ``"none"`` zeroes the ignored rows, ``"mean"`` (computed over all
    ``N`` rows, the ignored ones contributing 0) is rescaled to the mean over the kept rows.
    """
    if isinstance(keep, MaskedRows):
        k = keep.keep
        if reduction == "none":
            return torch.where(k, loss, torch.zeros_like(loss))
        if reduction == "mean":
            return loss * (k.shape[0] / k.sum().clamp_min(1).to(loss.dtype))
        return loss
    if keep is None or reduction != "none":
        return loss
    return loss.new_zeros(keep.shape[0]).masked_scatter(keep, loss)


def check_stats(pos_grad: Optional[Tensor], neg_grad: Optional[Tensor], num_classes: int) -> None:
    """``pos_grad`` / ``neg_grad`` are both None (fresh) or both 1-D floating tensors of length C."""
    if (pos_grad is None) != (neg_grad is None):
        raise ValueError("pos_grad and neg_grad must be given together (or both None for fresh statistics)")
    if pos_grad is None:
        return
    for name, t in (("pos_grad", pos_grad), ("neg_grad", neg_grad)):
        check_floating(t, name)
        if t.dim() != 1 or t.shape[0] != num_classes:
            raise ValueError(f"{name} must be a 1-D tensor of per-class statistics ({num_classes},), "
                             f"got shape {tuple(t.shape)}")


class GradStatsLoss(Loss):
    """Base of the modules holding ``pos_grad`` / ``neg_grad`` buffers (``num_classes`` entries)."""

    def __init__(self, num_classes: int, reduction: str = "mean", ignore_index: Optional[int] = -100) -> None:
        super().__init__(reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.num_classes = num_classes
        # rows labelled ignore_index add no loss, gradient or statistics (F.cross_entropy's rule)
        self.ignore_index = ignore_index
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))
        # number of statistic updates so far (0 = fresh: the official EQLv2 uses weights 1 then)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _accumulate(self, pos_inc: Tensor, neg_inc: Tensor) -> None:
        """Add this step's increments, summed over ranks with one collective."""
        inc = all_reduce_sum(torch.stack([pos_inc, neg_inc]).to(self.pos_grad.dtype))
        self.pos_grad.add_(inc[0])
        self.neg_grad.add_(inc[1])
        self.num_updates.add_(1)

    @torch.no_grad()
    def reset_statistics(self) -> None:
        """Forget the accumulated gradients (back to the fresh state)."""
        self.pos_grad.zero_()
        self.neg_grad.zero_()
        self.num_updates.zero_()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}"
