"""Long-tailed data toolkit: LT subsets, class-aware samplers and CMO.

* :func:`long_tailed_indices`, :func:`long_tailed_counts`, :func:`class_counts` (CIFAR-LT recipe),
* :class:`ClassBalancedSampler`, :class:`SquareRootSampler`, :class:`ProgressivelyBalancedSampler`,
  :class:`MinorityWeightedSampler` (shard like ``DistributedSampler`` only when asked),
* :func:`cmo_mix` (context-rich minority oversampling).

Only torch, numpy and the standard library are imported.
"""

from .boosted_augment import BoostedRandAugment, boosted_augment_params, boosted_magnitude
from .class_aware import ClassAwareSampler
from .cmo import CMOBatch, cmo_mix
from .samplers import (ClassBalancedSampler, MinorityWeightedSampler, ProgressivelyBalancedSampler,
                       SquareRootSampler)
from .subsets import class_counts, long_tailed_counts, long_tailed_indices

__all__ = [
    "class_counts",
    "long_tailed_counts",
    "long_tailed_indices",
    "ClassBalancedSampler",
    "SquareRootSampler",
    "ProgressivelyBalancedSampler",
    "MinorityWeightedSampler",
    "ClassAwareSampler",
    "BoostedRandAugment",
    "boosted_augment_params",
    "boosted_magnitude",
    "CMOBatch",
    "cmo_mix",
]
