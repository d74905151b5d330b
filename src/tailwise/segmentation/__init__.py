"""Segmentation losses: Dice, Tversky, Focal Tversky, Dice+CE and CeCo's neural-collapse regulariser."""

from . import functional  # noqa: F401
from .dice import DiceLoss
from .dice_ce import DiceCELoss
from .generalized_dice import GeneralizedDiceLoss
from .neural_collapse import NeuralCollapseLoss, simplex_etf
from .tversky import FocalTverskyLoss, TverskyLoss

__all__ = ["DiceLoss", "TverskyLoss", "FocalTverskyLoss", "DiceCELoss", "NeuralCollapseLoss", "simplex_etf",
           "GeneralizedDiceLoss"]
