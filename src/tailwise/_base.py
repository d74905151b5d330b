"""Thin base class for loss modules: holds ``reduction`` and validates it once."""

from __future__ import annotations

import inspect

from torch import nn

from ._reduction import bare_weight_error, rejects_weight
from ._validation import check_reduction

__all__ = ["Loss"]


class Loss(nn.Module):
    """Base of tailwise's loss modules (like ``torch.nn.modules.loss._Loss``).

    A bare ``weight=`` keyword, in the constructor or in ``forward``, raises a ``TypeError``
    naming ``class_weight`` and ``sample_weight`` (see :mod:`tailwise._reduction`).
    """

    # A loss whose ``weight`` is something else (e.g. LinearCrossEntropyLoss's classifier matrix,
    # named like F.linear's) declares it in its signature and is left alone.
    _init_takes_weight = False

    def __new__(cls, *args, **kwargs):
        if "weight" in kwargs and not cls._init_takes_weight:
            raise bare_weight_error(cls.__name__)
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls._init_takes_weight = "weight" in inspect.signature(cls.__dict__["__init__"]).parameters
        forward = cls.__dict__.get("forward")
        if (forward is not None and not getattr(forward, "_tailwise_rejects_weight", False)
                and "weight" not in inspect.signature(forward).parameters):
            cls.forward = rejects_weight(forward)

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
