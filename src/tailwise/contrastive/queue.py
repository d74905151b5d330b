"""``MemoryQueue``: a FIFO ring buffer of detached keys with optional integer labels (MoCo-style).

Generic on purpose: rows are any ``(D,)`` vectors (features, or ``(score,)`` rows for ranking
losses). ``balanced=True`` keeps ``size`` slots per class, as ResCom's class-balanced queue
(github dvlab-research/Imbalanced-Learning, ``ResCom/rescom/builder.py``): each class has its own
ring, so every class holds the same number of keys once filled.

No host synchronisation: the write pointers are tensor buffers and every enqueue is a fixed-shape
scatter, so ``enqueue`` runs on CUDA without waiting for the device and inside ``torch.compile``
/ CUDA graphs. :attr:`keys` / :attr:`labels` return the filled part, whose size depends on the
data (a host read on CUDA); losses use :meth:`masked` (the whole buffer and its validity mask).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import assert_values, check_floating, host_value_checks
from ..distributed import all_gather_no_grad, is_dist_initialized
from ._common import check_labels

__all__ = ["MemoryQueue"]


class MemoryQueue(nn.Module):
    """FIFO queue of ``(size, dim)`` keys (``(num_classes * size, dim)`` when ``balanced``).

    ``enqueue(keys, labels=None)`` stores detached copies (all-gathered from every rank first when
    ``torch.distributed`` is initialised and ``gather_distributed``, so all ranks hold the same
    queue), overwriting the oldest entries. :attr:`keys` / :attr:`labels` are the filled part
    (unlabelled rows have label ``-1``). Keys, labels, pointers and fill state are buffers, so
    they are saved in ``state_dict``.

    Example:
        >>> import torch
        >>> from tailwise import MemoryQueue
        >>> q = MemoryQueue(4, 2)
        >>> q.enqueue(torch.ones(3, 2), torch.tensor([0, 1, 2]))
        >>> q.keys.shape, q.labels.tolist()
        (torch.Size([3, 2]), [0, 1, 2])
    """

    def __init__(self, size: int, dim: int, *, num_classes: Optional[int] = None, balanced: bool = False,
                 dtype: torch.dtype = torch.float32, gather_distributed: bool = True) -> None:
        super().__init__()
        for name, v in (("size", size), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if balanced and (not isinstance(num_classes, int) or num_classes <= 0):
            raise ValueError(f"balanced=True needs num_classes (a positive int), got {num_classes!r}")
        self.size, self.dim, self.num_classes = size, dim, num_classes
        self.balanced, self.gather_distributed = balanced, gather_distributed
        total = size * num_classes if balanced else size
        self.register_buffer("queue", torch.zeros(total, dim, dtype=dtype))
        if balanced:
            lab = torch.arange(num_classes).repeat_interleave(size)
            self.register_buffer("queue_labels", lab)
            self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        else:
            self.register_buffer("queue_labels", torch.full((total,), -1, dtype=torch.long))
            self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros(total, dtype=torch.bool))

    @property
    def capacity(self) -> int:
        return self.queue.shape[0]

    def masked(self):
        """``(keys (capacity, dim), labels (capacity,), valid (capacity,) bool)``: copies of the whole
        buffer and which rows are filled. Fixed shapes, no host synchronisation (for losses)."""
        return self.queue.clone(), self.queue_labels.clone(), self.filled.clone()

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the queue (keys stay in memory but are marked unfilled)."""
        self.filled.zero_()
        self.ptr.zero_()

    def __len__(self) -> int:
        return int(self.filled.sum())

    @property
    def keys(self) -> Tensor:
        """A copy of the stored keys ``(n_filled, dim)``.

        A copy (as MoCo's ``queue.clone().detach()``), so a loss that saved the keys for backward is
        not corrupted by an ``enqueue`` before ``backward()``.
        """
        return self.queue.clone() if bool(self.filled.all()) else self.queue[self.filled]

    @property
    def labels(self) -> Tensor:
        """Labels of :attr:`keys` (``-1`` where none were given), a copy."""
        return self.queue_labels.clone() if bool(self.filled.all()) else self.queue_labels[self.filled]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> None:
        """Add ``keys`` ``(B, dim)`` (and ``labels`` ``(B,)``), overwriting the oldest entries.

        ``mask`` ``(B,)`` bool (optional) enqueues only the rows where it is true, in order, with
        no host synchronisation (the count stays on the device).
        """
        check_floating(keys, "keys", ndim=2)
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        if labels is not None:
            labels = check_labels(labels, keys.shape[0], what="keys")
        elif self.balanced:
            raise ValueError("a balanced MemoryQueue needs labels (B,) with every enqueue")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (keys.shape[0],)):
            raise ValueError(f"mask must be a bool tensor of shape ({keys.shape[0]},), got "
                             f"{tuple(mask.shape)} {mask.dtype}")
        keys = keys.detach()
        if self.gather_distributed and is_dist_initialized():
            keys = all_gather_no_grad(keys)
            labels = None if labels is None else all_gather_no_grad(labels)
            mask = None if mask is None else all_gather_no_grad(mask.to(torch.uint8)).bool()
        keys = keys.to(device=self.queue.device, dtype=self.queue.dtype)
        if labels is not None:
            labels = labels.to(self.queue.device)
        if mask is not None:
            mask = mask.to(self.queue.device)
        n = keys.shape[0]
        if n == 0:
            return
        if self.balanced:
            self._enqueue_balanced(keys, labels, mask)
            return
        if mask is not None:
            # rank of each selected row among the selected ones; only the newest `capacity` survive
            rank = torch.cumsum(mask.long(), 0) - 1
            total = rank[-1] + 1
            drop = (total - self.capacity).clamp_min(0)
            keep = mask & (rank >= drop)
            self._write(keys, labels, (self.ptr + rank - drop) % self.capacity, keep)
            self.ptr.copy_((self.ptr + total - drop) % self.capacity)
            return
        if n > self.capacity:  # only the newest `capacity` keys survive
            keys = keys[-self.capacity:]
            labels = None if labels is None else labels[-self.capacity:]
            n = self.capacity
        pos = (self.ptr + torch.arange(n, device=keys.device)) % self.capacity
        # index_copy_ / index_fill_: distinct positions, no host synchronisation
        self.queue.index_copy_(0, pos, keys)
        if labels is None:
            self.queue_labels.index_fill_(0, pos, -1)
        else:
            self.queue_labels.index_copy_(0, pos, labels)
        self.filled.index_fill_(0, pos, True)
        self.ptr.copy_((self.ptr + n) % self.capacity)

    def _enqueue_balanced(self, keys: Tensor, labels: Tensor, mask: Optional[Tensor]) -> None:
        c, size = self.num_classes, self.size
        if host_value_checks(labels):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c):
                raise ValueError(f"labels must be in [0, {c - 1}] for a balanced queue")
        else:
            assert_values(((labels >= 0) & (labels < c)).all(), f"labels must be in [0, {c - 1}] for a balanced queue")
        n = keys.shape[0]
        sel = torch.ones(n, dtype=torch.bool, device=keys.device) if mask is None else mask
        lab = torch.where(sel, labels, torch.full_like(labels, c)).clamp(0, c)  # c: rows not enqueued
        # rank of each row among the earlier rows of its class (stable sort by class)
        srt, perm = torch.sort(lab, stable=True)
        start = torch.searchsorted(srt, srt)
        rank = torch.empty_like(perm).scatter_(0, perm, torch.arange(n, device=keys.device) - start)
        count = torch.zeros(c + 1, dtype=torch.long, device=keys.device).index_add_(0, lab, torch.ones_like(lab))[:c]
        drop = (count - size).clamp_min(0)                    # per class: older rows that do not survive
        lc = lab.clamp_max(c - 1)
        keep = sel & (rank >= drop[lc])
        slot = lc * size + (self.ptr[lc] + rank - drop[lc]) % size
        self._write(keys, labels, slot, keep)
        self.ptr.copy_((self.ptr + count - drop) % size)

    def _write(self, keys: Tensor, labels: Optional[Tensor], slot: Tensor, keep: Tensor) -> None:
        """Row ``i`` of ``keys`` goes to ``slot[i]`` where ``keep[i]``; kept slots are distinct."""
        n = keys.shape[0]
        rows = torch.arange(n, device=keys.device)
        src = torch.full((self.capacity,), -1, dtype=torch.long, device=keys.device)
        # "amax" lets the dropped rows (-1) point anywhere without clobbering a kept one
        src.scatter_reduce_(0, torch.where(keep, slot, torch.zeros_like(slot)), torch.where(keep, rows, -1), "amax")
        hit = src >= 0
        g = src.clamp_min(0)
        self.queue.copy_(torch.where(hit[:, None], keys[g], self.queue))
        new_labels = torch.full_like(self.queue_labels, -1) if labels is None else labels[g]
        self.queue_labels.copy_(torch.where(hit, new_labels, self.queue_labels))
        self.filled.logical_or_(hit)

    def extra_repr(self) -> str:
        return (f"size={self.size}, dim={self.dim}, balanced={self.balanced}, num_classes={self.num_classes}, "
                f"filled={len(self)}/{self.capacity}")
