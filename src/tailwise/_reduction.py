"""The one reduction helper every loss uses (``mean`` / ``sum`` / ``none`` + per-sample weights)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ._validation import check_reduction, check_weight

__all__ = ["reduce_loss"]


def reduce_loss(loss: Tensor, reduction: str = "mean", weight: Optional[Tensor] = None) -> Tensor:
    """Apply optional per-element ``weight`` then reduce.

    * ``"none"``: the weighted, unreduced loss (same shape as ``loss``).
    * ``"sum"``: sum of weighted elements.
    * ``"mean"``: mean of weighted elements over the number of elements (not over the sum of
      weights, so a weight of 2 counts a sample twice). An empty loss gives ``0`` that still has a
      ``grad_fn`` when ``loss`` requires grad, so ``loss.backward()`` works on an empty batch.
    """
    check_reduction(reduction)
    weight = check_weight(weight, loss.shape)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.numel() == 0:
        # sum() of an empty tensor is a 0 that keeps the autograd graph
        return loss.sum()
    return loss.mean()
