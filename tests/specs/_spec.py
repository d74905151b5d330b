"""The shape of one loss's declared sample inputs and capabilities."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import torch


@dataclasses.dataclass
class LossSpec:
    """How to call one registry loss on sample inputs.

    ``make(n, device, dtype, generator)`` returns ``(args, kwargs)`` for the *call* (functional
    and module forward take the same positional tensors): ``n`` is the batch size (0 for the
    empty batch), floating tensors are created with ``dtype`` on ``device`` and those that a
    model would produce (logits, predictions, features, boxes) have ``requires_grad=True``.
    ``functional`` is the ``tailwise.functional`` function; ``module_kwargs`` build the module
    with ``tailwise.build_loss(name, **module_kwargs)``; ``functional_kwargs`` are the extra
    keyword arguments that make the functional equal to that module (e.g. ``class_counts``).
    """

    make: Callable[[int, torch.device, torch.dtype, torch.Generator], Tuple[tuple, Dict[str, Any]]]
    functional: Optional[Callable] = None
    module_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    functional_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    stateful: bool = False            # buffers / running statistics updated in forward
    needs_class_counts: bool = False
    pairwise: bool = False            # batch-coupled (in-batch negatives, ranking, BMC)
    min_batch: int = 1                # smallest non-empty batch the loss accepts
    empty_batch: bool = True          # n=0 is valid and gives 0 with a grad_fn
    reductions: Tuple[str, ...] = ("mean", "sum", "none")
    bf16: bool = True                 # runs under bf16 autocast
    compile_fullgraph: bool = True
    name: str = ""
