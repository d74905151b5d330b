"""Regression losses: L1 / MSE / smooth L1 and Balanced MSE (BMC, GAI, BNI) for imbalanced labels.

Balanced MSE: Ren et al., "Balanced MSE for Imbalanced Visual Regression", CVPR 2022
(arXiv 2203.16427, github jiawei-ren/BalancedMSE). See docs/regression.md.
"""

from . import functional  # noqa: F401
from .balanced_l1 import BalancedL1Loss
from .basic import L1Loss, MSELoss, SmoothL1Loss
from .bmc import BMCLoss
from .bni import BNILoss, label_bins
from .gai import GAILoss
from .gmm import GMMFit, fit_gmm

__all__ = ["L1Loss", "MSELoss", "SmoothL1Loss", "BMCLoss", "GAILoss", "BNILoss", "BalancedL1Loss",
           "fit_gmm", "GMMFit", "label_bins"]
