"""Thin base class for loss modules: holds ``reduction`` and validates it once."""

from __future__ import annotations

from torch import nn

from ._reduction import bare_weight_error, rejects_weight
from ._validation import check_reduction

__all__ = ["Loss"]


class Loss(nn.Module):
    """Base of tailwise's loss modules (like ``torch.nn.modules.loss._Loss``).

    A bare ``weight=`` keyword, in the constructor or in ``forward``, raises a ``TypeError``
    naming ``class_weight`` and ``sample_weight`` (see :mod:`tailwise._reduction`).
    """

    def __new__(cls, *args, **kwargs):
        if "weight" in kwargs:
            raise bare_weight_error(cls.__name__)
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "_tailwise_rejects_weight", False):
            cls.forward = rejects_weight(forward)

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
