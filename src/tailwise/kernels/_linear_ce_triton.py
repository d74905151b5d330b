"""Triton path of op ``linear_ce``: cuBLAS matmuls in torch, the ``softmax_ce`` kernel per chunk.

The kernel reads each chunk's logits in their own dtype (bf16 included), accumulates in float32
and writes the gradient with respect to the logits back into the same buffer, so a chunk costs
one logits buffer and nothing else of size ``(chunk, C)``. Imported only when it is about to run.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ._softmax_ce_triton import softmax_ce_rows_triton
from .linear_ce import _apply

__all__ = ["linear_ce_triton"]


def _triton_chunk(logits: Tensor, y: Tensor, offset, class_weight, gamma, eps, ignore_index, want_grad):
    loss, _, _ = softmax_ce_rows_triton(logits, y, offset, None, class_weight, gamma, eps, ignore_index,
                                        grad_into=logits if want_grad else None)
    return loss, (logits if want_grad else None)


def linear_ce_triton(input: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None,
                     offset: Optional[Tensor] = None, class_weight: Optional[Tensor] = None, gamma: float = 0.0,
                     label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean",
                     chunk_size: Optional[int] = None) -> Tensor:
    """Op ``linear_ce`` with the Triton ``softmax_ce`` kernel on each chunk (see ``linear_ce``)."""
    if gamma > 0 and label_smoothing > 0:
        raise ValueError("label_smoothing is not defined for the focal form (gamma > 0)")
    return _apply(_triton_chunk, input, weight, bias, target.contiguous(), offset, class_weight, gamma,
                  label_smoothing, ignore_index, reduction, chunk_size)
