"""``MemoryQueue``: a FIFO ring buffer of detached keys with optional integer labels (MoCo-style).

Generic on purpose: rows are any ``(D,)`` vectors (features, or ``(score,)`` rows for ranking
losses). ``balanced=True`` keeps ``size`` slots per class, as ResCom's class-balanced queue
(github dvlab-research/Imbalanced-Learning, ``ResCom/rescom/builder.py``): each class has its own
ring, so every class holds the same number of keys once filled.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import check_floating
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
    def enqueue(self, keys: Tensor, labels: Optional[Tensor] = None) -> None:
        """Add ``keys`` ``(B, dim)`` (and ``labels`` ``(B,)``), overwriting the oldest entries."""
        check_floating(keys, "keys", ndim=2)
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        if labels is not None:
            labels = check_labels(labels, keys.shape[0], what="keys")
        elif self.balanced:
            raise ValueError("a balanced MemoryQueue needs labels (B,) with every enqueue")
        keys = keys.detach()
        if self.gather_distributed and is_dist_initialized():
            keys = all_gather_no_grad(keys)
            labels = None if labels is None else all_gather_no_grad(labels)
        keys = keys.to(self.queue.dtype)
        if self.balanced:
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"labels must be in [0, {self.num_classes - 1}] for a balanced queue")
            for c in torch.unique(labels).tolist():
                rows = keys[labels == c][-self.size:]
                pos = c * self.size + (self.ptr[c] + torch.arange(rows.shape[0], device=keys.device)) % self.size
                self.queue[pos] = rows
                self.filled[pos] = True
                self.ptr[c] = (self.ptr[c] + rows.shape[0]) % self.size
            return
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` keys survive
            keys = keys[-self.capacity:]
            labels = None if labels is None else labels[-self.capacity:]
            n = self.capacity
        pos = (self.ptr + torch.arange(n, device=keys.device)) % self.capacity
        self.queue[pos] = keys
        self.queue_labels[pos] = -1 if labels is None else labels
        self.filled[pos] = True
        self.ptr.fill_((int(self.ptr) + n) % self.capacity)

    def extra_repr(self) -> str:
        return (f"size={self.size}, dim={self.dim}, balanced={self.balanced}, num_classes={self.num_classes}, "
                f"filled={len(self)}/{self.capacity}")
