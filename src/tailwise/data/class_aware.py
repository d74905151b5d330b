"""The class-aware sampler of Kang et al. (ICLR 2020) and BALLAD: classes take turns, each
contributing ``k`` consecutive samples from its own reshuffled cycle."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler

from .. import distributed as _dist
from ._checks import as_label_tensor, check_int

__all__ = ["ClassAwareSampler"]


def _cycles(items: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` draws from ``items`` as consecutive reshuffled passes (each pass a permutation)."""
    passes = math.ceil(length / len(items)) if length else 0
    if passes == 0:
        return items[:0]
    return np.concatenate([rng.permutation(items) for _ in range(passes)])[:length]


class ClassAwareSampler(Sampler[int]):
    """Class-aware sampling: a reshuffled cycle over the classes picks the next class, which
    yields ``samples_per_class`` consecutive samples from its own reshuffled cycle.

    Each class is visited equally often and, within a class, every sample is used once per
    pass before any repeats. The epoch length is ``C * max_c n_c`` (the official default),
    so on average every sample of the largest class is seen once. This is the sampler of
    facebookresearch/classifier-balancing (``ClassAwareSampler``, ``num_samples_cls=4`` in the
    cRT/LWS configs) and of BALLAD's adapter stage; tailwise uses ``samples_per_class=4``.

    Differences from the official iterator: each epoch restarts the cycles from a fresh shuffle
    seeded by ``seed + epoch`` (the official ``RandomCycleIter`` objects carry their position
    from one epoch to the next), which makes the draw reproducible and identical on every
    rank; classes without samples are skipped.

    Sharding follows ``torch.utils.data.DistributedSampler`` and only happens when asked:
    pass ``num_replicas``/``rank``, or ``distributed=True`` to read them from the initialised
    ``torch.distributed`` group. Every rank draws the same global sequence and keeps positions
    ``rank, rank + W, ...`` (the epoch is padded to a multiple of ``W``). Under PyTorch
    Lightning leave both unset: Lightning's own wrapper shards it.

    Args:
        labels: 1-D integer class labels of the dataset.
        samples_per_class: consecutive samples each class contributes per turn (``k``).
        num_samples: draws per epoch over all ranks (default ``C * max n_c``).
        num_replicas, rank, distributed: sharding, see above.
        seed: base seed; epoch ``e`` draws from ``seed + e``.

    Example:
        >>> import torch
        >>> from tailwise.data import ClassAwareSampler
        >>> s = ClassAwareSampler(torch.tensor([0, 0, 0, 0, 0, 0, 1, 2]), samples_per_class=2)
        >>> len(s)  # 3 classes x 6 samples in the largest
        18
    """

    def __init__(self, labels, samples_per_class: int = 4, *, num_samples: Optional[int] = None,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, distributed: bool = False,
                 seed: int = 0) -> None:
        labels_t = as_label_tensor(labels, "labels", allow_empty=False).cpu()
        self.labels = labels_t.numpy()
        self.samples_per_class = check_int(samples_per_class, "samples_per_class", minimum=1)
        counts = np.bincount(self.labels)
        self.classes = np.flatnonzero(counts)
        self._members = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}
        if distributed:
            if num_replicas is not None or rank is not None:
                raise ValueError("pass either distributed=True or num_replicas/rank, not both")
            num_replicas, rank = _dist.get_world_size(), _dist.get_rank()
        self.num_replicas = check_int(1 if num_replicas is None else num_replicas, "num_replicas", minimum=1)
        self.rank = check_int(0 if rank is None else rank, "rank", minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas - 1}], got {self.rank}")
        total = len(self.classes) * int(counts.max()) if num_samples is None else \
            check_int(num_samples, "num_samples", minimum=1)
        self.num_samples_per_replica = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples_per_replica * self.num_replicas
        self.seed = check_int(seed, "seed")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def global_indices(self) -> torch.Tensor:
        """The whole epoch's draw over all ranks (``total_size`` indices)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        k = self.samples_per_class
        turns = math.ceil(self.total_size / k)
        order = _cycles(self.classes, turns, rng)
        out = np.empty(turns * k, dtype=np.int64)
        slots = (np.arange(turns) * k)[:, None] + np.arange(k)[None, :]
        for c in self.classes:
            mine = order == c
            n_turns = int(mine.sum())
            stream = _cycles(self._members[int(c)], n_turns * k, rng)
            out[slots[mine].reshape(-1)] = stream
        return torch.from_numpy(out[:self.total_size])

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples_per_replica
