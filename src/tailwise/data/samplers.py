"""Class-aware samplers for long-tailed training (Kang et al., ICLR 2020), DDP-ready.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", write every
sampling strategy as a class-level distribution ``p_j = n_j^q / sum_i n_i^q`` (pick a class, then
a uniformly random sample of it):

* ``q = 1``: instance-balanced (plain shuffling),
* ``q = 0``: :class:`ClassBalancedSampler`,
* ``q = 1/2``: :class:`SquareRootSampler`,
* :class:`ProgressivelyBalancedSampler`: ``p_j(t) = (1 - t/T) p_j^IB + (t/T) p_j^CB``, moving
  from instance- to class-balanced over ``T`` epochs (call :meth:`set_epoch`).

:class:`MinorityWeightedSampler` is the foreground sampler of CMO (Park et al., CVPR 2022,
github naver-ai/cmo): per-sample weights ``1 / n_c^k``, i.e. class mass ``p_j ~ n_j^(1 - k)``.

All draw *with replacement* (as the official samplers do). A sampler never shards itself unless
asked: by default it yields the whole epoch, so a wrapper that shards (Lightning's
``DistributedSamplerWrapper``, Accelerate, ``DistributedSampler`` over a sampler) gives each rank
its share of a full epoch. Ask for sharding with explicit ``num_replicas`` / ``rank`` or with
``distributed=True`` (both read from the initialised ``torch.distributed`` group, as
``torch.utils.data.DistributedSampler`` does); then every rank draws the same global sequence of
``total_size`` indices from ``seed + epoch`` and keeps positions ``rank, rank + W, ...``, so the
``W`` shards are disjoint, equally long slices of one draw.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .. import distributed as _dist
from ._checks import as_label_tensor, check_int, check_real

__all__ = [
    "ClassBalancedSampler",
    "SquareRootSampler",
    "ProgressivelyBalancedSampler",
    "MinorityWeightedSampler",
]


class _ClassAwareSampler(Sampler[int]):
    """Shared machinery: class draw from :meth:`class_probabilities`, then a uniform member."""

    def __init__(self, labels, *, num_samples: Optional[int] = None, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0, distributed: bool = False) -> None:
        labels = as_label_tensor(labels, "labels", allow_empty=False).cpu()
        self.class_counts = torch.bincount(labels)
        # Members of each class are contiguous in `_by_class`, starting at `_offsets[c]`.
        self._by_class = torch.argsort(labels, stable=True)
        self._offsets = torch.cumsum(self.class_counts, 0) - self.class_counts
        if not isinstance(distributed, bool):
            raise TypeError(f"distributed must be a bool, got {type(distributed).__name__}")
        self.distributed = distributed or num_replicas is not None or rank is not None
        if not self.distributed:
            # No silent sharding: a wrapper (Lightning, Accelerate) may shard this sampler again.
            num_replicas, rank = 1, 0
        elif num_replicas is None or rank is None:
            if not _dist.is_dist_initialized():
                raise RuntimeError("distributed sharding needs an initialised torch.distributed process group "
                                   "to read num_replicas/rank from; pass both explicitly or call "
                                   "torch.distributed.init_process_group first")
            num_replicas = _dist.get_world_size() if num_replicas is None else num_replicas
            rank = _dist.get_rank() if rank is None else rank
        self.num_replicas = check_int(num_replicas, "num_replicas", minimum=1)
        self.rank = check_int(rank, "rank", minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas - 1}] (num_replicas="
                             f"{self.num_replicas}), got {self.rank}")
        total = labels.numel() if num_samples is None else check_int(num_samples, "num_samples", minimum=1)
        # Round up so that every rank gets the same number of draws (DistributedSampler pads too).
        self.num_samples_per_replica = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples_per_replica * self.num_replicas
        self.seed = check_int(seed, "seed")
        self.epoch = 0

    def class_probabilities(self) -> Tensor:
        """Probability of drawing each class in the current epoch (float64, sums to 1)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Use a different (deterministic) draw for each epoch, as ``DistributedSampler.set_epoch``."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def global_indices(self) -> Tensor:
        """The whole epoch's draw over all ranks (``total_size`` indices); rank ``r`` iterates
        positions ``r::num_replicas`` of it."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        probs = self.class_probabilities()
        cls = torch.multinomial(probs, self.total_size, replacement=True, generator=g)
        n = self.class_counts[cls]
        u = torch.rand(self.total_size, generator=g, dtype=torch.float64)
        within = torch.minimum((u * n).long(), n - 1)
        return self._by_class[self._offsets[cls] + within]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples_per_replica

    def _power_probabilities(self, q: float) -> Tensor:
        counts = self.class_counts.to(torch.float64)
        present = counts > 0
        mass = torch.zeros_like(counts)
        mass[present] = counts[present] ** q
        return mass / mass.sum()


_SHARED_ARGS = """
    Args:
        labels: 1-D integer class labels of the dataset (tensor, array or sequence).
        num_samples: draws per epoch over all ranks together (default ``len(labels)``), rounded
            up to a multiple of ``num_replicas``; ``len(sampler)`` is the per-rank share.
        num_replicas, rank: shard like ``DistributedSampler``. Giving either one turns sharding
            on; the other is then read from ``torch.distributed``.
        seed: base seed; epoch ``e`` draws from ``seed + e`` (same on every rank).
        distributed: shard over the initialised ``torch.distributed`` group (default False:
            the sampler yields the whole epoch and leaves sharding to a wrapper such as
            Lightning's, which would otherwise shard twice and lose half of every epoch).
"""


class ClassBalancedSampler(_ClassAwareSampler):
    __doc__ = """Every class equally likely: ``p_j = 1 / C`` over the classes that have samples
    (Kang et al. 2020, ``q = 0``), then a uniform sample of that class.
""" + _SHARED_ARGS + """
    Example:
        >>> labels = torch.tensor([0] * 90 + [1] * 10)
        >>> sampler = ClassBalancedSampler(labels, num_samples=4, seed=0)
        >>> len(sampler), sampler.class_probabilities().tolist()
        (4, [0.5, 0.5])
"""

    def class_probabilities(self) -> Tensor:
        return self._power_probabilities(0.0)


class SquareRootSampler(_ClassAwareSampler):
    __doc__ = """Square-root sampling: ``p_j = sqrt(n_j) / sum_i sqrt(n_i)`` (Kang et al. 2020,
    ``q = 1/2``; Mahajan et al. 2018).
""" + _SHARED_ARGS

    def class_probabilities(self) -> Tensor:
        return self._power_probabilities(0.5)


class ProgressivelyBalancedSampler(_ClassAwareSampler):
    __doc__ = """Progressively-balanced sampling (Kang et al. 2020):
    ``p_j(t) = (1 - t/T) n_j / N + (t/T) / C`` at epoch ``t = min(epoch, T)``: instance-balanced
    at epoch 0, class-balanced from epoch ``T`` on. Call :meth:`set_epoch` every epoch.
""" + _SHARED_ARGS + """        num_epochs: ``T``, the epoch at which sampling becomes fully class-balanced (>= 1).
"""

    def __init__(self, labels, num_epochs: int, *, num_samples: Optional[int] = None,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 distributed: bool = False) -> None:
        super().__init__(labels, num_samples=num_samples, num_replicas=num_replicas, rank=rank, seed=seed,
                         distributed=distributed)
        self.num_epochs = check_int(num_epochs, "num_epochs", minimum=1)

    def class_probabilities(self) -> Tensor:
        t = min(self.epoch, self.num_epochs) / self.num_epochs
        return (1.0 - t) * self._power_probabilities(1.0) + t * self._power_probabilities(0.0)


class MinorityWeightedSampler(_ClassAwareSampler):
    __doc__ = """Minority-favouring sampler of CMO (Park et al. CVPR 2022): each sample has weight
    ``1 / n_c^power`` (official ``weighted_alpha``, default 1), so class ``j`` is drawn with
    probability ``n_j^(1 - power) / sum_i n_i^(1 - power)``. ``power=1`` is class-balanced at
    the class level; ``power > 1`` favours the tail further. The official code uses
    ``WeightedRandomSampler(weights, len(dataset), replacement=True)``; the two-stage draw here
    has the same distribution.
""" + _SHARED_ARGS + """        power: the exponent ``k`` of the per-sample weight ``n_c^-k`` (>= 0).
"""

    def __init__(self, labels, power: float = 1.0, *, num_samples: Optional[int] = None,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 distributed: bool = False) -> None:
        super().__init__(labels, num_samples=num_samples, num_replicas=num_replicas, rank=rank, seed=seed,
                         distributed=distributed)
        self.power = check_real(power, "power")
        if self.power < 0:
            raise ValueError(f"power must be >= 0, got {self.power}")

    def class_probabilities(self) -> Tensor:
        return self._power_probabilities(1.0 - self.power)
