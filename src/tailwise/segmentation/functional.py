"""Functional forms of the segmentation losses."""

from .dice import dice_loss
from .dice_ce import dice_ce_loss
from .neural_collapse import neural_collapse_loss, simplex_etf
from .tversky import focal_tversky_loss, tversky_loss

__all__ = ["dice_loss", "tversky_loss", "focal_tversky_loss", "dice_ce_loss", "neural_collapse_loss",
           "simplex_etf"]

from .generalized_dice import generalized_dice_loss  # noqa: E402

__all__ += ["generalized_dice_loss"]
