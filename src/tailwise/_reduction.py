"""The one reduction helper every loss uses (``mean`` / ``sum`` / ``none`` + per-sample weights),
and the guard that turns an ambiguous ``weight=`` keyword into a clear ``TypeError``.

Weights have two unambiguous names everywhere in tailwise:

* ``sample_weight``: per-sample (per-element) multipliers broadcastable to the unreduced loss
  (scikit-learn's name). ``"mean"`` divides by the number of elements, not by the weights' sum,
  unless a loss documents otherwise.
* ``class_weight``: one weight per class ``(C,)`` (torch's ``weight=``). For cross-entropy-like
  losses ``"mean"`` divides by the sum of the targets' class weights, as
  :func:`torch.nn.functional.cross_entropy` does.

A bare ``weight=`` means per-class in torch but per-sample in mmdet-style code, so tailwise
refuses it (:func:`reject_weight_kwarg`) instead of guessing.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, TypeVar

from torch import Tensor

from ._validation import check_reduction, check_weight

__all__ = ["reduce_loss", "reject_weight_kwarg", "bare_weight_error", "rejects_weight"]

F = TypeVar("F", bound=Callable[..., Any])


def bare_weight_error(where: str) -> TypeError:
    """The ``TypeError`` raised when ``weight=`` is passed to ``where`` (a function or class name)."""
    return TypeError(
        f"{where}() got weight=, which is ambiguous (torch's weight= is per-class, mmdet's per-sample). "
        "Pass class_weight= for per-class weights of shape (C,) (where the loss supports them) or "
        "sample_weight= for per-sample weights broadcastable to the unreduced loss.")


def reject_weight_kwarg(kwargs: Mapping[str, Any], where: str) -> None:
    """Raise :func:`bare_weight_error` when ``kwargs`` holds a ``weight`` key."""
    if "weight" in kwargs:
        raise bare_weight_error(where)


def rejects_weight(fn: F) -> F:
    """Decorator: ``fn(..., weight=...)`` raises the ``TypeError`` naming ``class_weight`` and
    ``sample_weight`` instead of Python's bare "unexpected keyword argument"."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "weight" in kwargs:
            raise bare_weight_error(getattr(fn, "__qualname__", getattr(fn, "__name__", "loss")))
        return fn(*args, **kwargs)

    wrapper._tailwise_rejects_weight = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def reduce_loss(loss: Tensor, reduction: str = "mean", sample_weight: Optional[Tensor] = None) -> Tensor:
    """Apply optional per-element ``sample_weight`` then reduce.

    * ``"none"``: the weighted, unreduced loss (same shape as ``loss``).
    * ``"sum"``: sum of weighted elements.
    * ``"mean"``: mean of weighted elements over the number of elements (not over the sum of
      weights, so a weight of 2 counts a sample twice, as mmdet's ``weight_reduce_loss``). An
      empty loss gives ``0`` that still has a ``grad_fn`` when ``loss`` requires grad, so
      ``loss.backward()`` works on an empty batch.

    Example:
        >>> import torch
        >>> reduce_loss(torch.tensor([1.0, 3.0]), "mean", sample_weight=torch.tensor([2.0, 0.0]))
        tensor(1.)
    """
    check_reduction(reduction)
    sample_weight = check_weight(sample_weight, loss.shape, "sample_weight")
    if sample_weight is not None:
        loss = loss * sample_weight.to(loss.dtype)
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.numel() == 0:
        # sum() of an empty tensor is a 0 that keeps the autograd graph
        return loss.sum()
    return loss.mean()
