"""Module base of the ranking losses: distributed pooling and the optional memory queue."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._base import Loss
from .._precision import float32_compute
from ..contrastive._common import host_selection
from ..contrastive.queue import MemoryQueue
from ..distributed import is_dist_initialized
from ._common import gather, pack_rows, pool, prepare, reduce_classes, unpack_rows

__all__: list = []


class QueuedRankingLoss(Loss):
    """Shared forward: validate -> all-gather (unequal sizes OK) -> pool with queue -> per-class
    loss -> enqueue the live (global) rows -> reduce over valid classes.

    Queue rows are ``[scores (C) | positives (C) | sample_weight]`` in one :class:`tailwise.MemoryQueue`
    (the contrastive family's ring buffer), so scores, multi-hot labels and weights stay aligned
    and all of them are in ``state_dict``.
    """

    def __init__(self, *, num_classes: Optional[int], queue_size: int, ignore_index: int,
                 gather_distributed: Optional[bool], update_queue_in_eval: bool, reduction: str) -> None:
        super().__init__(reduction)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f"queue_size must be an int >= 0, got {queue_size!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int (1 for binary), got {num_classes!r}")
        if queue_size and num_classes is None:
            raise ValueError("queue_size > 0 needs num_classes (the C of input (N, C); 1 for binary)")
        self.num_classes = num_classes
        self.queue_size = queue_size
        self.ignore_index = int(ignore_index)
        self.gather_distributed = gather_distributed
        self.update_queue_in_eval = bool(update_queue_in_eval)
        # gathering is done here (once, with gradients); the queue must not gather again
        self.queue = (MemoryQueue(queue_size, 2 * num_classes + 1, gather_distributed=False)
                      if queue_size else None)

    def _should_gather(self) -> bool:
        return is_dist_initialized() if self.gather_distributed is None else bool(self.gather_distributed)

    @torch.no_grad()
    def reset_queue(self) -> None:
        """Empty the queue (e.g. at an epoch boundary or after a temperature change)."""
        if self.queue is not None:
            self.queue.reset()

    def _compute(self, s: Tensor, p: Tensor, w: Tensor, v=None):  # pragma: no cover - abstract
        raise NotImplementedError

    @float32_compute
    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None,
                return_valid: bool = False):
        scores, pos, keep, w = prepare(input, target, self.ignore_index, sample_weight)
        c = scores.shape[1]
        if self.num_classes is not None and c != self.num_classes:
            raise ValueError(f"input must have {self.num_classes} column(s) (num_classes), got shape "
                             f"{tuple(input.shape)}")
        scores, pos, keep, w = gather(scores, pos, keep, w, self._should_gather())
        update = self.queue is not None and (self.training or self.update_queue_in_eval)
        if host_selection(scores, None if self.queue is None else self.queue.queue):
            extra = None
            if self.queue is not None and len(self.queue):
                extra = unpack_rows(self.queue.keys, c, scores.dtype) + (None,)
            s, p, ww, _ = pool(scores, pos, keep, w, extra)
            loss_c, valid = self._compute(s, p, ww)
            if update:
                self.queue.enqueue(pack_rows(scores[keep], pos[keep], w[keep]).float())
        else:
            # masked form: the whole queue with its fill mask, ignored rows kept in place
            extra = None
            if self.queue is not None:
                rows, _, filled = self.queue.masked()
                extra = unpack_rows(rows, c, scores.dtype) + (filled,)
            s, p, ww, v = pool(scores, pos, keep, w, extra, masked=True)
            loss_c, valid = self._compute(s, p, ww, v)
            if update:
                self.queue.enqueue(pack_rows(scores, pos, w).float(), mask=keep)
        out = reduce_classes(loss_c, valid, self.reduction, input)
        return (out, valid) if return_valid else out

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, queue_size={self.queue_size}, "
                f"ignore_index={self.ignore_index}, reduction={self.reduction!r}")
