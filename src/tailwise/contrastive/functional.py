"""Functional forms of the contrastive losses."""

from .bcl import bcl_loss
from .byol import byol_loss
from .dcl import dcl_loss, dclw_loss
from .info_nce import info_nce_loss
from .paco import paco_loss
from .rescom import rescom_loss
from .supcon import supcon_loss
from .tsc import tsc_loss

__all__ = ["info_nce_loss", "supcon_loss", "dcl_loss", "dclw_loss", "paco_loss", "bcl_loss", "byol_loss", "tsc_loss",
           "rescom_loss"]

from .boosted import boosted_cl_loss, momentum_weights  # noqa: E402

__all__ += ["boosted_cl_loss", "momentum_weights"]

from .propos import prototype_scattering_loss, propos_loss  # noqa: E402

__all__ += ["propos_loss", "prototype_scattering_loss"]

from .cp2 import cp2_loss  # noqa: E402

__all__ += ["cp2_loss"]

from .ntxent import ntxent_loss  # noqa: E402

__all__ += ["ntxent_loss"]
