"""Functional forms of the regression losses."""

from .balanced_l1 import balanced_l1_loss
from .basic import l1_loss, mse_loss, smooth_l1_loss
from .bmc import bmc_loss
from .bni import bni_loss
from .gai import gai_loss

__all__ = ["l1_loss", "mse_loss", "smooth_l1_loss", "bmc_loss", "gai_loss", "bni_loss", "balanced_l1_loss"]
