"""Thin base class for loss modules: holds ``reduction`` and validates it once."""

from __future__ import annotations

from torch import nn

from ._validation import check_reduction

__all__ = ["Loss"]


class Loss(nn.Module):
    """Base of tailwise's loss modules (like ``torch.nn.modules.loss._Loss``)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
