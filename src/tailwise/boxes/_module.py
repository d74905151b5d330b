"""Shared plumbing of the box losses: argument checks and the module base class."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .._base import Loss
from .._validation import check_positive
from ._geometry import BOX_FORMATS, DEFAULT_EPS, _check_format

__all__ = ["BoxLoss", "check_eps"]


def check_eps(eps) -> float:
    return check_positive(eps, "eps")


class BoxLoss(Loss):
    """Base of the box-regression modules: ``box_format``, ``eps``, ``validate`` and ``reduction``."""

    _fn = None  # the functional form, set by subclasses

    def __init__(self, box_format: str = "xyxy", eps: float = DEFAULT_EPS, reduction: str = "mean",
                 validate: bool = True) -> None:
        super().__init__(reduction)
        self.box_format = _check_format(box_format)
        self.eps = check_eps(eps)
        self.validate = bool(validate)

    def _kwargs(self) -> dict:
        return {}

    def forward(self, input: Tensor, target: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return type(self)._fn(input, target, box_format=self.box_format, eps=self.eps,
                              reduction=self.reduction, sample_weight=sample_weight, validate=self.validate,
                              **self._kwargs())

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._kwargs().items())
        return (f"box_format={self.box_format!r}, eps={self.eps}{extra}, reduction={self.reduction!r}, "
                f"validate={self.validate}")


assert BOX_FORMATS  # re-exported for subclasses' docstrings
